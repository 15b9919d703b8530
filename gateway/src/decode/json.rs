//! JSON payloads: `{"device":"greenhouse-3","boot":7,"seq":42,"ts":…,"readings":{…},"kind":…}`.
//!
//! Parsed straight into owned fields (no intermediate `serde_json::Value`). Unknown fields are
//! ignored, `boot` defaults to 0, and readings keep the order of the document.

use std::fmt;

use edge_wire::MAX_READINGS;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::event::DeviceEvent;
use super::rejection::{RejectReason, Rejection};
use super::validate::{too_many_readings, validate_owned};

/// Parses and validates a JSON event.
pub(super) fn decode_json(payload: &[u8]) -> Result<DeviceEvent, Rejection> {
    let parsed: JsonEvent = serde_json::from_slice(payload).map_err(describe)?;
    if parsed.readings.overflow {
        return Err(too_many_readings());
    }
    let event = DeviceEvent {
        device: parsed.device,
        boot: parsed.boot,
        seq: parsed.seq,
        ts: parsed.ts,
        kind: parsed.kind,
        readings: parsed.readings.items,
    };
    validate_owned(&event)?;
    Ok(event)
}

/// "invalid json at line 1 column 17: expected value".
fn describe(err: serde_json::Error) -> Rejection {
    let (line, column) = (err.line(), err.column());
    let message = err.to_string();
    let detail = if line == 0 {
        format!("invalid json: {message}")
    } else {
        // serde_json appends the position to its message; it is moved to the front instead.
        let suffix = format!(" at line {line} column {column}");
        let message = message.strip_suffix(&suffix).unwrap_or(&message);
        format!("invalid json at line {line} column {column}: {message}")
    };
    Rejection::new(RejectReason::InvalidJson, detail)
}

#[derive(Deserialize)]
struct JsonEvent {
    device: String,
    #[serde(default)]
    boot: u32,
    seq: u32,
    #[serde(default)]
    ts: Option<u64>,
    readings: JsonReadings,
    #[serde(default)]
    kind: Option<String>,
}

/// The readings object in document order, duplicates included (validation rejects them). Past
/// [`MAX_READINGS`] entries are only counted, so a large object costs no memory.
struct JsonReadings {
    items: Vec<(String, f64)>,
    overflow: bool,
}

impl<'de> Deserialize<'de> for JsonReadings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ReadingsVisitor)
    }
}

struct ReadingsVisitor;

impl<'de> Visitor<'de> for ReadingsVisitor {
    type Value = JsonReadings;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of reading names to numbers")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonReadings, A::Error> {
        let mut items = Vec::with_capacity(map.size_hint().unwrap_or(0).min(MAX_READINGS));
        let mut overflow = false;
        while let Some(name) = map.next_key::<String>()? {
            if items.len() == MAX_READINGS {
                overflow = true;
                map.next_value::<IgnoredAny>()?;
            } else {
                let value = map.next_value_seed(ReadingValue { name: &name })?;
                items.push((name, value));
            }
        }
        Ok(JsonReadings { items, overflow })
    }
}

/// One reading value: any JSON number, named in the error when it is something else.
struct ReadingValue<'n> {
    name: &'n str,
}

impl<'de> DeserializeSeed<'de> for ReadingValue<'_> {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for ReadingValue<'_> {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a number for reading `{}`", self.name)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<f64, E> {
        Ok(value as f64)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<f64, E> {
        Ok(value as f64)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<f64, E> {
        Ok(value)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reject(json: &str) -> Rejection {
        decode_json(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn parses_the_documented_example() {
        let event = decode_json(
            br#"{"device":"greenhouse-3","boot":7,"seq":42,"ts":1764230400000,
                "readings":{"temp_c":21.5,"rh":40.2},"kind":"periodic"}"#,
        )
        .unwrap();
        assert_eq!(event.id(), "greenhouse-3:7:42");
        assert_eq!(event.ts, Some(1_764_230_400_000));
        assert_eq!(event.kind.as_deref(), Some("periodic"));
        assert_eq!(
            event.readings,
            [("temp_c".to_owned(), 21.5), ("rh".to_owned(), 40.2)]
        );
    }

    #[test]
    fn optional_fields_default_and_unknown_fields_are_ignored() {
        let event = decode_json(
            br#"{"fw":"1.2.3","seq":1,"extra":{"nested":[1,2,{"x":null}]},"device":"d",
                "readings":{"n":-3,"big":18446744073709551615,"e":1e3},"ts":null}"#,
        )
        .unwrap();
        assert_eq!((event.boot, event.ts, event.kind), (0, None, None));
        assert_eq!(
            event.readings,
            [
                ("n".to_owned(), -3.0),
                ("big".to_owned(), u64::MAX as f64),
                ("e".to_owned(), 1000.0)
            ]
        );
    }

    #[test]
    fn syntax_errors_say_where() {
        let rejection = reject(r#"{"device":"d","seq":}"#);
        assert_eq!(rejection.reason, RejectReason::InvalidJson);
        assert_eq!(
            rejection.detail,
            "invalid json at line 1 column 21: expected value"
        );
        assert_eq!(
            reject(r#"{"device":"d","seq":1,"readings":{}} x"#).detail,
            "invalid json at line 1 column 38: trailing characters"
        );
    }

    #[test]
    fn shape_errors_are_invalid_json() {
        let cases = [
            (r#"{"device":"d","readings":{}}"#, "missing field `seq`"),
            (r#"{"device":"d","seq":1}"#, "missing field `readings`"),
            (
                r#"{"device":"d","seq":4294967296,"readings":{}}"#,
                "expected u32",
            ),
            (
                r#"{"device":"d","boot":-1,"seq":1,"readings":{}}"#,
                "expected u32",
            ),
            (r#"{"device":"d","seq":1.5,"readings":{}}"#, "expected u32"),
            (
                r#"{"device":"d","seq":1,"seq":2,"readings":{}}"#,
                "duplicate field `seq`",
            ),
            (
                r#"{"device":"d","seq":1,"readings":[]}"#,
                "expected an object of reading names",
            ),
            (
                r#"{"device":"d","seq":1,"readings":{"temp_c":"hot"}}"#,
                r#"invalid type: string "hot", expected a number for reading `temp_c`"#,
            ),
            (
                r#"{"device":"d","seq":1,"readings":{"t":1e400}}"#,
                "number out of range",
            ),
        ];
        for (json, needle) in cases {
            let rejection = reject(json);
            assert_eq!(rejection.reason, RejectReason::InvalidJson, "{json}");
            assert!(
                rejection.detail.contains(needle),
                "{json}: {}",
                rejection.detail
            );
        }
    }

    #[test]
    fn content_errors_are_invalid_event() {
        let duplicate = reject(r#"{"device":"d","seq":1,"readings":{"t":1,"t":2}}"#);
        assert_eq!(duplicate.reason, RejectReason::InvalidEvent);
        assert_eq!(duplicate.detail, "reading `t` appears more than once");

        let pairs: Vec<String> = (0..=MAX_READINGS)
            .map(|i| format!(r#""r{i}":{i}"#))
            .collect();
        let many = format!(
            r#"{{"device":"d","seq":1,"readings":{{{}}}}}"#,
            pairs.join(",")
        );
        let rejection = reject(&many);
        assert_eq!(rejection.reason, RejectReason::InvalidEvent);
        assert_eq!(rejection.detail, "event has more than 32 readings");

        let exactly = (0..MAX_READINGS)
            .map(|i| format!(r#""r{i}":{i}"#))
            .collect::<Vec<_>>();
        let full = format!(
            r#"{{"device":"d","seq":1,"readings":{{{}}}}}"#,
            exactly.join(",")
        );
        assert_eq!(
            decode_json(full.as_bytes()).unwrap().readings.len(),
            MAX_READINGS
        );

        assert_eq!(
            reject(r#"{"device":"bad id","seq":1,"readings":{}}"#).reason,
            RejectReason::InvalidEvent
        );
    }
}
