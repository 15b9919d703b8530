//! CBOR payloads: the `edge-wire` encoding, decoded zero-copy, validated, then copied out.

use edge_wire::WireError;

use super::event::DeviceEvent;
use super::rejection::{RejectReason, Rejection};
use super::validate::{too_many_readings, validate_event};

/// Decodes and validates an `edge-wire` CBOR event.
pub(super) fn decode_cbor(payload: &[u8]) -> Result<DeviceEvent, Rejection> {
    let event = edge_wire::decode_event(payload).map_err(describe)?;
    // Validate the borrowed event first, so that a bad payload costs no allocation.
    validate_event(&event)?;
    Ok(DeviceEvent::from(&event))
}

fn describe(err: WireError) -> Rejection {
    let detail = match err {
        WireError::Malformed { offset, reason } => {
            format!("invalid cbor at byte {offset}: {reason}")
        }
        WireError::TrailingBytes { offset } => {
            format!("invalid cbor at byte {offset}: unexpected bytes after the event")
        }
        WireError::Truncated => {
            "invalid cbor: payload ends before the event is complete".to_owned()
        }
        WireError::TooManyReadings => return too_many_readings(),
        other => format!("invalid cbor: {other}"),
    };
    Rejection::new(RejectReason::InvalidCbor, detail)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Rejection {
        decode_cbor(bytes).unwrap_err()
    }

    #[test]
    fn describes_structural_errors() {
        let rejection = decode(&[0xa1, 0x00]);
        assert_eq!(rejection.reason, RejectReason::InvalidCbor);
        assert_eq!(
            rejection.detail,
            "invalid cbor: payload ends before the event is complete"
        );
        assert_eq!(
            decode(&[0x80]).detail,
            "invalid cbor at byte 0: expected a map of event fields"
        );
        assert_eq!(
            decode(&[0xa0]).detail,
            "invalid cbor: missing field `device`"
        );
    }
}
