//! The gateway's encoder of the event JSON:
//! `{"id":"dev:7:42","gateway":"gw","device":"dev","boot":7,"seq":42,"ts":1764230400000,
//! "received_at":1764230400123,"readings":{"temp_c":21.5},"kind":"x"}`.
//!
//! Written by hand into one pre-sized buffer: this runs for every event, and a generic
//! serialiser (or an intermediate `serde_json::Value`) would cost allocations and dispatch for
//! a fixed shape. Every write here is infallible, so the function cannot fail or panic.
//!
//! # On-wire format
//! Fields in the order of `docs/wire-protocol.md`; `ts` and `kind` omitted when absent;
//! readings in the order given (the device's); strings escaped per RFC 8259 §7; each reading
//! as the shortest decimal text that parses back to the same `f64`. The output parses into
//! [`crate::EventMessage`] with every field equal (the tests below hold it to that).

use std::fmt::{self, Write as _};

/// The fields of one event, borrowed from whatever holds them.
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a> {
    /// The gateway that received it.
    pub gateway: &'a str,
    /// The device.
    pub device: &'a str,
    /// The device's boot counter.
    pub boot: u32,
    /// The sequence number within the boot.
    pub seq: u32,
    /// The device's own time, if it sent one.
    pub ts: Option<u64>,
    /// When the gateway received it, in ms since the Unix epoch.
    pub received_at: u64,
    /// Name → value, in the device's order. Values should be finite: a non-finite one is
    /// written `null` rather than invalid JSON.
    pub readings: &'a [(String, f64)],
    /// The event's kind, if the device sent one.
    pub kind: Option<&'a str>,
}

/// Renders `event` as the uplink JSON object.
pub fn encode_event(event: &EventFields<'_>) -> Vec<u8> {
    let readings_len: usize = event.readings.iter().map(|(name, _)| name.len() + 28).sum();
    let kind_len = event.kind.map_or(0, |kind| kind.len() + 10);
    let mut out = Vec::with_capacity(
        160 + 2 * event.device.len() + event.gateway.len() + readings_len + kind_len,
    );
    out.extend_from_slice(b"{\"id\":\"");
    push_escaped(&mut out, event.device);
    out.push(b':');
    push_u64(&mut out, event.boot.into());
    out.push(b':');
    push_u64(&mut out, event.seq.into());
    out.extend_from_slice(b"\",\"gateway\":");
    push_string(&mut out, event.gateway);
    out.extend_from_slice(b",\"device\":");
    push_string(&mut out, event.device);
    out.extend_from_slice(b",\"boot\":");
    push_u64(&mut out, event.boot.into());
    out.extend_from_slice(b",\"seq\":");
    push_u64(&mut out, event.seq.into());
    if let Some(ts) = event.ts {
        out.extend_from_slice(b",\"ts\":");
        push_u64(&mut out, ts);
    }
    out.extend_from_slice(b",\"received_at\":");
    push_u64(&mut out, event.received_at);
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
    if let Some(kind) = event.kind {
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
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::message::EventMessage;

    fn readings(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), *value))
            .collect()
    }

    fn sample(readings: &[(String, f64)]) -> EventFields<'_> {
        EventFields {
            gateway: "gw",
            device: "dev",
            boot: 7,
            seq: 42,
            ts: Some(1_764_230_400_000),
            received_at: 1_764_230_400_123,
            readings,
            kind: Some("x"),
        }
    }

    #[test]
    fn matches_the_documented_shape_byte_for_byte() {
        let readings = readings(&[("temp_c", 21.5)]);
        assert_eq!(
            String::from_utf8(encode_event(&sample(&readings))).unwrap(),
            r#"{"id":"dev:7:42","gateway":"gw","device":"dev","boot":7,"seq":42,"ts":1764230400000,"received_at":1764230400123,"readings":{"temp_c":21.5},"kind":"x"}"#
        );
    }

    #[test]
    fn absent_fields_are_omitted_and_order_is_kept() {
        let readings = readings(&[("z", 1.0), ("a", -0.25), ("m", 1e-7)]);
        let event = EventFields {
            ts: None,
            kind: None,
            received_at: 0,
            ..sample(&readings)
        };
        assert_eq!(
            String::from_utf8(encode_event(&event)).unwrap(),
            r#"{"id":"dev:7:42","gateway":"gw","device":"dev","boot":7,"seq":42,"received_at":0,"readings":{"z":1.0,"a":-0.25,"m":1e-7}}"#
        );
    }

    #[test]
    fn extremes_parse_back_exactly() {
        let readings = readings(&[
            ("a\"b", f64::MAX),
            ("tiny", f64::MIN_POSITIVE),
            ("subnormal", 5e-324),
            ("neg subnormal", -2.36780252381645e-309),
            ("neg", -123_456.789),
            ("\u{1f}ctl", 0.1),
        ]);
        let event = EventFields {
            gateway: "gw \"1\"",
            boot: u32::MAX,
            seq: 0,
            ts: Some(u64::MAX),
            kind: Some("quote \" back\\slash \u{1} tab\t é 🌱"),
            ..sample(&readings)
        };
        let parsed: EventMessage = serde_json::from_slice(&encode_event(&event)).unwrap();
        assert_eq!(parsed.id, "dev:4294967295:0");
        assert_eq!(parsed.gateway, "gw \"1\"");
        assert_eq!(parsed.ts, Some(u64::MAX));
        assert_eq!(parsed.kind.as_deref(), event.kind);
        let expected: BTreeMap<String, f64> = readings.iter().cloned().collect();
        assert_eq!(parsed.readings, expected);
    }

    #[test]
    fn non_finite_values_become_null() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let readings = readings(&[("t", value)]);
            let parsed: Value = serde_json::from_slice(&encode_event(&sample(&readings))).unwrap();
            assert_eq!(parsed["readings"]["t"], Value::Null);
        }
    }

    /// Names and ids with quotes, backslashes, control characters and non-ASCII text.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[\"\\\\\u{0}-\u{1f}\u{7f}é🌱a-z:.]{0,24}",]
    }

    /// Finite floats, the extremes (subnormal, huge) over-represented.
    fn finite() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>().prop_filter("finite", |value| value.is_finite()),
            prop::num::f64::SUBNORMAL | prop::num::f64::POSITIVE | prop::num::f64::NEGATIVE,
            Just(f64::MAX),
            Just(f64::MIN),
            Just(-0.0),
        ]
        .prop_filter("finite", |value| value.is_finite())
    }

    proptest! {
        #[test]
        fn the_output_parses_into_the_event_type_with_every_field_equal(
            gateway in text(),
            device in text(),
            boot in any::<u32>(),
            seq in any::<u32>(),
            ts in proptest::option::of(any::<u64>()),
            received_at in 0..=i64::MAX,
            readings in proptest::collection::btree_map(text(), finite(), 0..8),
            kind in proptest::option::of(text()),
        ) {
            let pairs: Vec<(String, f64)> = readings.clone().into_iter().collect();
            let fields = EventFields {
                gateway: &gateway,
                device: &device,
                boot,
                seq,
                ts,
                received_at: received_at.unsigned_abs(),
                readings: &pairs,
                kind: kind.as_deref(),
            };
            let json = encode_event(&fields);
            let parsed: EventMessage = serde_json::from_slice(&json).unwrap();
            let expected = EventMessage {
                id: format!("{device}:{boot}:{seq}"),
                gateway: gateway.clone(),
                device: device.clone(),
                boot,
                seq,
                ts,
                received_at,
                readings,
                kind: kind.clone(),
            };
            // Bit for bit: `-0.0 == 0.0` would hide a lost sign.
            for (name, value) in &expected.readings {
                prop_assert_eq!(parsed.readings[name].to_bits(), value.to_bits());
            }
            prop_assert_eq!(&parsed, &expected);
        }

        #[test]
        fn floats_are_written_exactly(value in finite()) {
            let mut out = Vec::new();
            push_f64(&mut out, value);
            let text = std::str::from_utf8(&out).unwrap();
            prop_assert_eq!(text.parse::<f64>().map(f64::to_bits).ok(), Some(value.to_bits()));
            // A JSON number: no "inf", no leading "+", no bare "." at either end.
            prop_assert!(serde_json::from_str::<f64>(text).is_ok(), "{}", text);
        }
    }
}
