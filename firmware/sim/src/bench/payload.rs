//! The benchmark event: what a device sends, and what a consumer reads back out of whatever
//! reaches it.
//!
//! Every event carries one reading, `sent_us`: the time the device handed it to its MQTT client,
//! in microseconds since the Unix epoch (an `f64` holds such a number exactly). A consumer
//! subtracts it from its own receive time, so latency is measured end to end on one clock.
//!
//! [`parse_arrival`] understands both what the gateway sends (`{"id":…,"device":…,"boot":…,
//! "seq":…,"readings":{"sent_us":…}}`, on any backbone) and the device payload a bridge forwards
//! unchanged: it only looks for the `device`, `boot`, `seq` and `sent_us` fields, which both have.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}

/// The name of device `index` of a fleet.
pub fn device_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index}")
}

/// The JSON payload of one benchmark event.
pub fn event_payload(device: &str, boot: u32, seq: u32, sent_us: u64) -> String {
    format!(
        r#"{{"device":"{device}","boot":{boot},"seq":{seq},"readings":{{"sent_us":{sent_us}}}}}"#
    )
}

/// What the subscriber reads out of a received message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Device index (the numeric suffix of the device name) and seq, packed: unique per event.
    pub key: u64,
    /// The event's boot.
    pub boot: u32,
    /// When the device sent it, µs since the epoch.
    pub sent_us: f64,
}

/// Reads a benchmark event out of `payload`; `None` for anything else (the gateway's status
/// message, say).
pub fn parse_arrival(payload: &[u8]) -> Option<Arrival> {
    let text = std::str::from_utf8(payload).ok()?;
    let device = string_field(text, "device")?;
    let index: u64 = device.rsplit('-').next()?.parse().ok()?;
    let seq: u64 = number_field(text, "seq")?.parse().ok()?;
    let boot: u32 = number_field(text, "boot")?.parse().ok()?;
    let sent_us: f64 = number_field(text, "sent_us")?.parse().ok()?;
    Some(Arrival {
        key: (index << 32) | seq,
        boot,
        sent_us,
    })
}

/// The text of string field `name` (no escapes: the benchmark's names need none).
fn string_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let length = text[start..].find('"')?;
    Some(&text[start..start + length])
}

/// The text of number field `name`.
fn number_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = &text[start..];
    let length = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')))
        .unwrap_or(rest.len());
    Some(&rest[..length])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_device_payload() {
        let payload = event_payload("bench-17", 9, 42, 1_764_230_400_123_456);
        let arrival = parse_arrival(payload.as_bytes()).expect("arrival");
        assert_eq!(arrival.key, (17 << 32) | 42);
        assert_eq!(arrival.boot, 9);
        assert_eq!(arrival.sent_us, 1_764_230_400_123_456.0);
    }

    #[test]
    fn reads_the_gateway_uplink_with_an_exponent() {
        let payload = br#"{"id":"bench-3:9:5","gateway":"bench-gw","device":"bench-3","boot":9,"seq":5,"received_at":1764230400124,"readings":{"sent_us":1.764230400123456e15}}"#;
        let arrival = parse_arrival(payload).expect("arrival");
        assert_eq!(arrival.key, (3 << 32) | 5);
        assert_eq!(arrival.sent_us, 1_764_230_400_123_456.0);
    }

    #[test]
    fn ignores_other_messages() {
        assert_eq!(parse_arrival(b"online"), None);
        assert_eq!(parse_arrival(br#"{"device":"x","seq":1}"#), None);
    }
}
