//! The device event and its content rules.

use crate::{MAX_DEVICE_LEN, MAX_KIND_LEN, MAX_READING_NAME_LEN, Readings, WireError};

/// One sensor event as a device sends it, borrowing its strings from the decoded buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// Device id: 1–64 characters of `[A-Za-z0-9._-]`.
    pub device: &'a str,
    /// Boot counter: a new value each time the device starts.
    pub boot: u32,
    /// Sequence number within a boot, +1 per event.
    pub seq: u32,
    /// Device time of the event, in milliseconds since the Unix epoch, if the device knows it.
    pub ts: Option<u64>,
    /// Optional free-form category of the event, e.g. `"periodic"` or `"alarm"`.
    pub kind: Option<&'a str>,
    /// The measured values.
    pub readings: Readings<'a>,
}

impl Event<'_> {
    /// Checks the content rules: a valid device id, reading names of 1–64 bytes without control
    /// characters, finite values, no reading name twice, and a kind like a reading name.
    ///
    /// The first broken rule is returned, in that order.
    pub fn validate(&self) -> Result<(), WireError> {
        if !is_valid_device_id(self.device) {
            return Err(WireError::InvalidDevice);
        }
        let readings = self.readings.as_slice();
        for (index, &(name, value)) in readings.iter().enumerate() {
            if !is_valid_label(name, MAX_READING_NAME_LEN) {
                return Err(WireError::InvalidReadingName { index });
            }
            if !value.is_finite() {
                return Err(WireError::NonFiniteReading { index });
            }
            // At most 32 readings: a quadratic scan is cheaper than any set here.
            if readings[..index]
                .iter()
                .any(|&(earlier, _)| earlier == name)
            {
                return Err(WireError::DuplicateReading { index });
            }
        }
        if let Some(kind) = self.kind
            && !is_valid_label(kind, MAX_KIND_LEN)
        {
            return Err(WireError::InvalidKind);
        }
        Ok(())
    }
}

/// Whether `id` is a valid device id: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn is_valid_device_id(id: &str) -> bool {
    (1..=MAX_DEVICE_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// 1 to `max` bytes of UTF-8 without control characters.
fn is_valid_label(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len()) && !text.chars().any(char::is_control)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn event<'a>(device: &'a str, readings: &[(&'a str, f64)]) -> Event<'a> {
        Event {
            device,
            boot: 1,
            seq: 2,
            ts: None,
            kind: None,
            readings: Readings::try_from(readings).unwrap(),
        }
    }

    #[test]
    fn device_ids() {
        assert!(is_valid_device_id("greenhouse-3"));
        assert!(is_valid_device_id("A.b_c-9"));
        assert!(is_valid_device_id(&"d".repeat(64)));
        assert!(!is_valid_device_id(""));
        assert!(!is_valid_device_id(&"d".repeat(65)));
        assert!(!is_valid_device_id("a b"));
        assert!(!is_valid_device_id("a/b"));
        assert!(!is_valid_device_id("é"));
    }

    #[test]
    fn valid_event_passes() {
        let mut ok = event("greenhouse-3", &[("temp_c", 21.5), ("rh", 40.2)]);
        ok.kind = Some("periodic");
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(event("d", &[]).validate(), Ok(()));
    }

    #[test]
    fn each_rule_is_enforced() {
        assert_eq!(event("a b", &[]).validate(), Err(WireError::InvalidDevice));
        assert_eq!(
            event("d", &[("ok", 1.0), ("", 1.0)]).validate(),
            Err(WireError::InvalidReadingName { index: 1 })
        );
        let long = "n".repeat(65);
        assert_eq!(
            event("d", &[(&long, 1.0)]).validate(),
            Err(WireError::InvalidReadingName { index: 0 })
        );
        assert_eq!(
            event("d", &[("bad\nname", 1.0)]).validate(),
            Err(WireError::InvalidReadingName { index: 0 })
        );
        assert_eq!(
            event("d", &[("t", f64::NAN)]).validate(),
            Err(WireError::NonFiniteReading { index: 0 })
        );
        assert_eq!(
            event("d", &[("t", 1.0), ("u", f64::INFINITY)]).validate(),
            Err(WireError::NonFiniteReading { index: 1 })
        );
        assert_eq!(
            event("d", &[("t", 1.0), ("u", 2.0), ("t", 3.0)]).validate(),
            Err(WireError::DuplicateReading { index: 2 })
        );
        let mut bad_kind = event("d", &[]);
        bad_kind.kind = Some("");
        assert_eq!(bad_kind.validate(), Err(WireError::InvalidKind));
    }
}
