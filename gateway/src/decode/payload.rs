//! The entry point for a device's MQTT payload: size limit, format detection, decoding and
//! validation, and the check that the payload speaks for the device of its topic.

use super::cbor::decode_cbor;
use super::event::DeviceEvent;
use super::json::decode_json;
use super::rejection::{RejectReason, Rejection, excerpt};

/// Largest accepted payload, in bytes; larger payloads are rejected before any parsing.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Decodes and validates the payload published on `devices/{topic_device}/events`.
///
/// Steps, each of which can reject:
/// 1. more than [`MAX_PAYLOAD_BYTES`] → `oversized`;
/// 2. first non-whitespace byte `{` → JSON (`invalid_json`), anything else → `edge-wire` CBOR
///    (`invalid_cbor`); no valid CBOR event starts with `{` or a whitespace byte, so this is
///    unambiguous;
/// 3. the content rules of [`edge_wire::Event::validate`] → `invalid_event`;
/// 4. the payload's device must be `topic_device` → `device_mismatch`.
pub fn decode_payload(topic_device: &str, payload: &[u8]) -> Result<DeviceEvent, Rejection> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Rejection::new(
            RejectReason::Oversized,
            format!(
                "payload of {} bytes is larger than the limit of {MAX_PAYLOAD_BYTES} bytes",
                payload.len()
            ),
        ));
    }
    let is_json = payload
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'{');
    let event = if is_json {
        decode_json(payload)?
    } else {
        decode_cbor(payload)?
    };
    if event.device != topic_device {
        return Err(Rejection::new(
            RejectReason::DeviceMismatch,
            format!(
                "topic device `{}` does not match payload device `{}`",
                excerpt(topic_device),
                excerpt(&event.device)
            ),
        ));
    }
    Ok(event)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use edge_wire::{Event, Readings, encode_event};

    use super::*;

    fn wire_event(device: &str) -> Vec<u8> {
        let event = Event {
            device,
            boot: 7,
            seq: 42,
            ts: Some(1_764_230_400_000),
            kind: None,
            readings: Readings::try_from(&[("temp_c", 21.5), ("rh", 40.2)][..]).unwrap(),
        };
        let mut buf = [0u8; 256];
        let len = encode_event(&event, &mut buf).unwrap();
        buf[..len].to_vec()
    }

    /// A CBOR event whose single reading `t` is the raw value bytes given.
    fn cbor_with_raw_reading(value: &[u8]) -> Vec<u8> {
        // {0: "d", 1: 0, 2: 0, 4: {"t": value}}
        let mut bytes = vec![
            0xa4, 0x00, 0x61, b'd', 0x01, 0x00, 0x02, 0x00, 0x04, 0xa1, 0x61, b't',
        ];
        bytes.extend_from_slice(value);
        bytes
    }

    fn reason(topic_device: &str, payload: &[u8]) -> RejectReason {
        decode_payload(topic_device, payload).unwrap_err().reason
    }

    #[test]
    fn json_and_cbor_give_the_same_event() {
        let json = br#" {"device":"greenhouse-3","boot":7,"seq":42,"ts":1764230400000,
            "readings":{"temp_c":21.5,"rh":40.2}}"#;
        let from_json = decode_payload("greenhouse-3", json).unwrap();
        let from_cbor = decode_payload("greenhouse-3", &wire_event("greenhouse-3")).unwrap();
        assert_eq!(from_json, from_cbor);
        assert_eq!(from_cbor.id(), "greenhouse-3:7:42");
    }

    #[test]
    fn cbor_floats_of_every_width_are_accepted() {
        // f16 0x3e00 = 1.5; f32 0x41ac0000 = 21.5; f64; and a plain integer.
        let cases: [(&[u8], f64); 4] = [
            (&[0xf9, 0x3e, 0x00], 1.5),
            (&[0xfa, 0x41, 0xac, 0x00, 0x00], 21.5),
            (&[0xfb, 0x40, 0x35, 0x80, 0, 0, 0, 0, 0], 21.5),
            (&[0x38, 0x27], -40.0),
        ];
        for (raw, expected) in cases {
            let event = decode_payload("d", &cbor_with_raw_reading(raw)).unwrap();
            assert_eq!(event.readings, [("t".to_owned(), expected)], "{raw:x?}");
        }
    }

    #[test]
    fn every_reason() {
        let oversized = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(reason("d", &oversized), RejectReason::Oversized);
        assert_eq!(
            decode_payload("d", &oversized).unwrap_err().detail,
            "payload of 65537 bytes is larger than the limit of 65536 bytes"
        );
        assert_eq!(reason("d", b"\r\n {\"device\":"), RejectReason::InvalidJson);
        assert_eq!(reason("d", b""), RejectReason::InvalidCbor);
        assert_eq!(reason("d", b"[1,2]"), RejectReason::InvalidCbor);
        // NaN as f16.
        let nan = decode_payload("d", &cbor_with_raw_reading(&[0xf9, 0x7e, 0x00])).unwrap_err();
        assert_eq!(nan.reason, RejectReason::InvalidEvent);
        assert_eq!(nan.detail, "reading `t` is not a finite number");
        let mismatch = decode_payload("a", &wire_event("b")).unwrap_err();
        assert_eq!(mismatch.reason, RejectReason::DeviceMismatch);
        assert_eq!(
            mismatch.detail,
            "topic device `a` does not match payload device `b`"
        );
        let json_mismatch = br#"{"device":"b","seq":1,"readings":{}}"#;
        assert_eq!(reason("a", json_mismatch), RejectReason::DeviceMismatch);
    }

    #[test]
    fn a_payload_at_the_limit_is_parsed() {
        let mut payload = br#"{"device":"d","seq":1,"readings":{}}"#.to_vec();
        payload.resize(MAX_PAYLOAD_BYTES, b' ');
        assert_eq!(decode_payload("d", &payload).unwrap().seq, 1);
    }
}
