//! The JSON payload sent to the cloud for each event:
//! `{"id":"dev:7:42","gateway":"gw","device":"dev","boot":7,"seq":42,"ts":1764230400000,
//! "received_at":1764230400123,"readings":{"temp_c":21.5},"kind":"x"}`.
//!
//! The encoder itself is `edge-schema`'s ([`edge_schema::encode_event`]), shared with the
//! consumers that parse it into [`edge_schema::EventMessage`]; this is the gateway's door to
//! it, from a [`DeviceEvent`].

use edge_schema::{EventFields, encode_event};

use super::event::DeviceEvent;

/// Renders `event`, as received by `gateway` at `received_at_ms` (ms since the Unix epoch), as
/// the uplink JSON object. `ts` and `kind` are omitted when absent; readings keep their order.
pub fn encode_uplink(event: &DeviceEvent, gateway: &str, received_at_ms: u64) -> Vec<u8> {
    encode_event(&EventFields {
        gateway,
        device: &event.device,
        boot: event.boot,
        seq: event.seq,
        ts: event.ts,
        received_at: received_at_ms,
        readings: &event.readings,
        kind: event.kind.as_deref(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use edge_schema::EventMessage;

    use super::*;

    fn sample() -> DeviceEvent {
        DeviceEvent {
            device: "dev".to_owned(),
            boot: 7,
            seq: 42,
            ts: Some(1_764_230_400_000),
            kind: Some("x".to_owned()),
            readings: vec![("temp_c".to_owned(), 21.5), ("rh".to_owned(), 40.2)],
        }
    }

    #[test]
    fn matches_the_documented_shape_byte_for_byte() {
        let json = encode_uplink(&sample(), "gw", 1_764_230_400_123);
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"id":"dev:7:42","gateway":"gw","device":"dev","boot":7,"seq":42,"ts":1764230400000,"received_at":1764230400123,"readings":{"temp_c":21.5,"rh":40.2},"kind":"x"}"#
        );
    }

    #[test]
    fn every_field_reaches_the_cloud_type() {
        let event = DeviceEvent {
            ts: None,
            kind: None,
            ..sample()
        };
        let parsed: EventMessage =
            serde_json::from_slice(&encode_uplink(&event, "greenhouse.pi", 5)).unwrap();
        assert_eq!(parsed.id, event.id());
        assert_eq!(
            (parsed.gateway.as_str(), parsed.device.as_str()),
            ("greenhouse.pi", "dev")
        );
        assert_eq!((parsed.boot, parsed.seq, parsed.received_at), (7, 42, 5));
        assert_eq!((parsed.ts, parsed.kind), (None, None));
        assert_eq!(
            parsed.readings.into_iter().collect::<Vec<_>>(),
            [("rh".to_owned(), 40.2), ("temp_c".to_owned(), 21.5)]
        );
    }
}
