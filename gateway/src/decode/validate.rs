//! The content rules, shared by both payload formats: `edge-wire` owns the rules, this file only
//! turns a broken rule into a message that names the offending value.

use edge_wire::{MAX_KIND_LEN, MAX_READING_NAME_LEN, MAX_READINGS, Readings, WireError};

use super::event::DeviceEvent;
use super::rejection::{RejectReason, Rejection, excerpt};

/// Checks a wire event against the content rules of [`edge_wire::Event::validate`], with an
/// `invalid_event` rejection that names the offending device, reading or kind.
pub fn validate_event(event: &edge_wire::Event<'_>) -> Result<(), Rejection> {
    event.validate().map_err(|err| describe(event, err))
}

/// Checks an owned event against the same rules, through a borrowed wire view of it.
pub(super) fn validate_owned(event: &DeviceEvent) -> Result<(), Rejection> {
    let mut readings = Readings::new();
    for (name, value) in &event.readings {
        readings
            .push(name, *value)
            .map_err(|_| too_many_readings())?;
    }
    validate_event(&edge_wire::Event {
        device: &event.device,
        boot: event.boot,
        seq: event.seq,
        ts: event.ts,
        kind: event.kind.as_deref(),
        readings,
    })
}

pub(super) fn too_many_readings() -> Rejection {
    Rejection::new(
        RejectReason::InvalidEvent,
        format!("event has more than {MAX_READINGS} readings"),
    )
}

fn describe(event: &edge_wire::Event<'_>, err: WireError) -> Rejection {
    let name = |index: usize| {
        let name = event
            .readings
            .as_slice()
            .get(index)
            .map_or("", |&(name, _)| name);
        excerpt(name)
    };
    let detail = match err {
        WireError::InvalidDevice => format!(
            "device id `{}` is not 1 to 64 characters of [A-Za-z0-9._-]",
            excerpt(event.device)
        ),
        WireError::InvalidReadingName { index } => format!(
            "reading name `{}` is not 1 to {MAX_READING_NAME_LEN} bytes without control characters",
            name(index)
        ),
        WireError::NonFiniteReading { index } => {
            format!("reading `{}` is not a finite number", name(index))
        }
        WireError::DuplicateReading { index } => {
            format!("reading `{}` appears more than once", name(index))
        }
        WireError::InvalidKind => format!(
            "kind `{}` is not 1 to {MAX_KIND_LEN} bytes without control characters",
            excerpt(event.kind.unwrap_or_default())
        ),
        WireError::TooManyReadings => return too_many_readings(),
        other => other.to_string(),
    };
    Rejection::new(RejectReason::InvalidEvent, detail)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn owned(device: &str, readings: &[(&str, f64)]) -> DeviceEvent {
        DeviceEvent {
            device: device.to_owned(),
            boot: 0,
            seq: 0,
            ts: None,
            kind: None,
            readings: readings
                .iter()
                .map(|&(name, value)| (name.to_owned(), value))
                .collect(),
        }
    }

    fn detail(event: &DeviceEvent) -> String {
        let rejection = validate_owned(event).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::InvalidEvent);
        rejection.detail
    }

    #[test]
    fn valid_events_pass() {
        assert_eq!(validate_owned(&owned("d", &[("t", 1.0)])), Ok(()));
    }

    #[test]
    fn messages_name_the_offender() {
        assert_eq!(
            detail(&owned("a b", &[])),
            "device id `a b` is not 1 to 64 characters of [A-Za-z0-9._-]"
        );
        assert_eq!(
            detail(&owned("d", &[("ok", 1.0), ("temp_c", f64::NAN)])),
            "reading `temp_c` is not a finite number"
        );
        assert_eq!(
            detail(&owned("d", &[("t", 1.0), ("t", 2.0)])),
            "reading `t` appears more than once"
        );
        assert_eq!(
            detail(&owned("d", &[("bad\u{7}", 1.0)])),
            "reading name `bad\\u{7}` is not 1 to 64 bytes without control characters"
        );
        let mut kind = owned("d", &[]);
        kind.kind = Some(String::new());
        assert_eq!(
            detail(&kind),
            "kind `` is not 1 to 64 bytes without control characters"
        );
        let names: Vec<String> = (0..=MAX_READINGS).map(|i| format!("r{i}")).collect();
        let pairs: Vec<(&str, f64)> = names.iter().map(|name| (name.as_str(), 1.0)).collect();
        assert_eq!(
            detail(&owned("d", &pairs)),
            "event has more than 32 readings"
        );
    }
}
