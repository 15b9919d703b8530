//! Why a payload was refused: a stable reason for metrics and a message for people.

use std::fmt;

/// Why a payload was rejected. [`RejectReason::as_str`] gives the stable metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`](super::MAX_PAYLOAD_BYTES).
    Oversized,
    /// The payload looks like JSON but is not valid JSON, or not the event's shape.
    InvalidJson,
    /// The payload is not a well-formed `edge-wire` CBOR event.
    InvalidCbor,
    /// The payload parsed, but breaks a content rule (device id, readings, kind).
    InvalidEvent,
    /// The device named by the topic is not the device named in the payload.
    DeviceMismatch,
    /// The topic is not `devices/{device}/events` with a valid device id.
    InvalidTopic,
    /// The connection's login may not speak for the device the topic names.
    NotAuthorized,
}

impl RejectReason {
    /// Every reason, so that metrics can be registered at zero before the first rejection.
    pub const ALL: [Self; 7] = [
        Self::Oversized,
        Self::InvalidJson,
        Self::InvalidCbor,
        Self::InvalidEvent,
        Self::DeviceMismatch,
        Self::InvalidTopic,
        Self::NotAuthorized,
    ];

    /// The stable, snake_case metric label of this reason.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::InvalidJson => "invalid_json",
            Self::InvalidCbor => "invalid_cbor",
            Self::InvalidEvent => "invalid_event",
            Self::DeviceMismatch => "device_mismatch",
            Self::InvalidTopic => "invalid_topic",
            Self::NotAuthorized => "not_authorized",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused payload: the reason to count, and a lowercase message saying what was wrong and
/// where, e.g. "reading `temp_c` is not a finite number".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Rejection {
    /// What kind of problem it was.
    pub reason: RejectReason,
    /// What exactly was wrong, for logs and the dead-letter record.
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Up to 64 characters of untrusted `text`, with control characters escaped, for a message.
pub(super) fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out: String = text
        .chars()
        .take(MAX_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable_and_distinct() {
        let labels: Vec<_> = RejectReason::ALL.iter().map(RejectReason::as_str).collect();
        assert_eq!(
            labels,
            [
                "oversized",
                "invalid_json",
                "invalid_cbor",
                "invalid_event",
                "device_mismatch",
                "invalid_topic",
                "not_authorized"
            ]
        );
    }

    #[test]
    fn display_is_the_detail() {
        let rejection = Rejection::new(
            RejectReason::InvalidEvent,
            "reading `t` is not a finite number",
        );
        assert_eq!(rejection.to_string(), "reading `t` is not a finite number");
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt("a\nb"), "a\\nb");
        assert_eq!(excerpt(&"x".repeat(65)), format!("{}…", "x".repeat(64)));
        assert_eq!(excerpt(&"x".repeat(64)), "x".repeat(64));
    }
}
