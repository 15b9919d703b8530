//! The JSON payload sent to the cloud for each event:
//! `{"id":"dev:7:42","gateway":"gw","device":"dev","boot":7,"seq":42,"ts":1764230400000,
//! "received_at":1764230400123,"readings":{"temp_c":21.5},"kind":"x"}`.
//!
//! Written by hand into one pre-sized buffer: this runs for every event, and a generic
//! serialiser (or an intermediate `serde_json::Value`) would cost allocations and dispatch for
//! a fixed shape. Every write here is infallible, so the function cannot fail or panic.

use std::fmt::{self, Write as _};

use super::event::DeviceEvent;

/// Renders `event`, as received by `gateway` at `received_at_ms` (ms since the Unix epoch), as
/// the uplink JSON object. `ts` and `kind` are omitted when absent; readings keep their order.
pub fn encode_uplink(event: &DeviceEvent, gateway: &str, received_at_ms: u64) -> Vec<u8> {
    let readings_len: usize = event.readings.iter().map(|(name, _)| name.len() + 28).sum();
    let kind_len = event.kind.as_ref().map_or(0, |kind| kind.len() + 10);
    let mut out =
        Vec::with_capacity(160 + 2 * event.device.len() + gateway.len() + readings_len + kind_len);
    out.extend_from_slice(b"{\"id\":\"");
    push_escaped(&mut out, &event.device);
    out.push(b':');
    push_u64(&mut out, event.boot.into());
    out.push(b':');
    push_u64(&mut out, event.seq.into());
    out.extend_from_slice(b"\",\"gateway\":");
    push_string(&mut out, gateway);
    out.extend_from_slice(b",\"device\":");
    push_string(&mut out, &event.device);
    out.extend_from_slice(b",\"boot\":");
    push_u64(&mut out, event.boot.into());
    out.extend_from_slice(b",\"seq\":");
    push_u64(&mut out, event.seq.into());
    if let Some(ts) = event.ts {
        out.extend_from_slice(b",\"ts\":");
        push_u64(&mut out, ts);
    }
    out.extend_from_slice(b",\"received_at\":");
    push_u64(&mut out, received_at_ms);
    out.extend_from_slice(b",\"readings\":{");
    for (index, (name, value)) in event.readings.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        push_string(&mut out, name);
        out.push(b':');
        push_f64(&mut out, *value);
    }
    out.push(b'}');
    if let Some(kind) = &event.kind {
        out.extend_from_slice(b",\"kind\":");
        push_string(&mut out, kind);
    }
    out.push(b'}');
    out
}

fn push_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    push_escaped(out, text);
    out.push(b'"');
}

/// JSON string escaping (RFC 8259 §7): `"`, `\` and control characters; everything else,
/// including non-ASCII UTF-8, is copied in runs.
fn push_escaped(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index]);
        out.extend_from_slice(escape);
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Rust's `Debug` form of an `f64` is the shortest text that parses back to the same value, with
/// an exponent for very large or small magnitudes ("21.5", "1e-7", "1.5e300"): for a finite value
/// it is always a valid JSON number. Validated events hold only finite values; anything else
/// becomes `null` rather than invalid JSON.
fn push_f64(out: &mut Vec<u8>, value: f64) {
    let mut text = FloatText::default();
    if value.is_finite() && write!(text, "{value:?}").is_ok() {
        out.extend_from_slice(text.as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A stack buffer for one formatted `f64` (at most 24 bytes: sign, 17 digits, point, exponent).
#[derive(Default)]
struct FloatText {
    bytes: [u8; 32],
    len: usize,
}

impl FloatText {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Write for FloatText {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn sample() -> DeviceEvent {
        DeviceEvent {
            device: "dev".to_owned(),
            boot: 7,
            seq: 42,
            ts: Some(1_764_230_400_000),
            kind: Some("x".to_owned()),
            readings: vec![("temp_c".to_owned(), 21.5)],
        }
    }

    #[test]
    fn matches_the_documented_shape_byte_for_byte() {
        let json = encode_uplink(&sample(), "gw", 1_764_230_400_123);
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"id":"dev:7:42","gateway":"gw","device":"dev","boot":7,"seq":42,"ts":1764230400000,"received_at":1764230400123,"readings":{"temp_c":21.5},"kind":"x"}"#
        );
    }

    #[test]
    fn absent_fields_are_omitted_and_order_is_kept() {
        let event = DeviceEvent {
            ts: None,
            kind: None,
            readings: vec![
                ("z".to_owned(), 1.0),
                ("a".to_owned(), -0.25),
                ("m".to_owned(), 1e-7),
            ],
            ..sample()
        };
        let json = String::from_utf8(encode_uplink(&event, "gw", 0)).unwrap();
        assert_eq!(
            json,
            r#"{"id":"dev:7:42","gateway":"gw","device":"dev","boot":7,"seq":42,"received_at":0,"readings":{"z":1.0,"a":-0.25,"m":1e-7}}"#
        );
    }

    #[test]
    fn roundtrips_through_serde_json() {
        let event = DeviceEvent {
            boot: u32::MAX,
            seq: 0,
            ts: Some(u64::MAX),
            kind: Some("quote \" back\\slash \u{1} tab\t é 🌱".to_owned()),
            readings: vec![
                ("a\"b".to_owned(), f64::MAX),
                ("tiny".to_owned(), f64::MIN_POSITIVE),
                ("neg".to_owned(), -123_456.789),
                ("\u{1f}ctl".to_owned(), 0.1),
            ],
            ..sample()
        };
        let parsed: Value = serde_json::from_slice(&encode_uplink(&event, "gw \"1\"", 5)).unwrap();
        assert_eq!(
            parsed,
            json!({
                "id": "dev:4294967295:0",
                "gateway": "gw \"1\"",
                "device": "dev",
                "boot": u32::MAX,
                "seq": 0,
                "ts": u64::MAX,
                "received_at": 5,
                "readings": {
                    "a\"b": f64::MAX,
                    "tiny": f64::MIN_POSITIVE,
                    "neg": -123_456.789,
                    "\u{1f}ctl": 0.1,
                },
                "kind": "quote \" back\\slash \u{1} tab\t é 🌱",
            })
        );
    }

    #[test]
    fn non_finite_values_become_null() {
        let event = DeviceEvent {
            readings: vec![("t".to_owned(), f64::NAN)],
            ..sample()
        };
        let parsed: Value = serde_json::from_slice(&encode_uplink(&event, "gw", 0)).unwrap();
        assert_eq!(parsed["readings"]["t"], Value::Null);
    }

    #[test]
    fn subnormal_readings_survive_the_round_trip_exactly() {
        for value in [
            -2.36780252381645e-309,
            5e-324,
            f64::MIN_POSITIVE,
            1.7976931348623157e308,
        ] {
            let event = DeviceEvent {
                readings: vec![("t".into(), value)],
                ..sample()
            };
            let parsed: Value = serde_json::from_slice(&encode_uplink(&event, "gw", 0)).unwrap();
            assert_eq!(parsed["readings"]["t"].as_f64(), Some(value));
        }
    }

    proptest! {
        #[test]
        fn every_event_gives_json_that_parses_back(
            device in "\\PC{0,70}",
            kind in proptest::option::of(any::<String>()),
            readings in proptest::collection::vec((any::<String>(), any::<f64>().prop_filter("finite", |v| v.is_finite())), 0..8),
            boot in any::<u32>(),
            seq in any::<u32>(),
            received_at in any::<u64>(),
        ) {
            let event = DeviceEvent { device, boot, seq, ts: None, kind, readings };
            let json = encode_uplink(&event, "gw", received_at);
            let parsed: Value = serde_json::from_slice(&json).unwrap();
            let id = event.id();
            prop_assert_eq!(parsed["id"].as_str(), Some(id.as_str()));
            prop_assert_eq!(parsed["device"].as_str(), Some(event.device.as_str()));
            prop_assert_eq!(parsed["kind"].as_str(), event.kind.as_deref());
            prop_assert_eq!(parsed["received_at"].as_u64(), Some(received_at));
            for (name, _) in &event.readings {
                // Duplicated names keep the last value in serde_json's map. Parsing is exact
                // (`float_roundtrip`), subnormal values included.
                let last = event.readings.iter().rev().find(|(n, _)| n == name).map(|(_, v)| *v);
                let parsed = parsed["readings"][name.as_str()].as_f64();
                prop_assert_eq!(parsed, last);
            }
        }

        #[test]
        fn floats_are_written_exactly(value in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
            let mut out = Vec::new();
            push_f64(&mut out, value);
            let text = std::str::from_utf8(&out).unwrap();
            prop_assert_eq!(text.parse::<f64>().ok(), Some(value));
            // A JSON number: no "inf", no leading "+", no bare "." at either end.
            prop_assert!(serde_json::from_str::<f64>(text).is_ok(), "{}", text);
        }
    }
}
