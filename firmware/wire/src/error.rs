//! The one error type of the wire format.

use core::fmt;

/// Why an event could not be encoded, decoded or validated.
///
/// Small and `Copy` so that firmware can return it without allocating; variants that concern one
/// reading carry its index so that a receiver can name the reading in its own message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The output buffer cannot hold the encoded event.
    BufferTooSmall,
    /// The input ends before the event is complete.
    Truncated,
    /// The input is not well-formed CBOR, or a value has the wrong type.
    Malformed {
        /// Byte offset of the offending item in the input.
        offset: usize,
        /// What was expected there, e.g. "expected text for `device`".
        reason: &'static str,
    },
    /// Bytes follow the end of the event.
    TrailingBytes {
        /// Byte offset of the first extra byte.
        offset: usize,
    },
    /// A required field is absent.
    MissingField(&'static str),
    /// A field appears more than once.
    DuplicateField(&'static str),
    /// The event has more than [`MAX_READINGS`](crate::MAX_READINGS) readings.
    TooManyReadings,
    /// The device id is not 1–64 characters of `[A-Za-z0-9._-]`.
    InvalidDevice,
    /// A reading name is empty, longer than 64 bytes, or holds a control character.
    InvalidReadingName {
        /// Index of the reading.
        index: usize,
    },
    /// A reading value is NaN or infinite.
    NonFiniteReading {
        /// Index of the reading.
        index: usize,
    },
    /// A reading name appears more than once.
    DuplicateReading {
        /// Index of the second occurrence.
        index: usize,
    },
    /// The kind is empty, longer than 64 bytes, or holds a control character.
    InvalidKind,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall => f.write_str("buffer too small for the encoded event"),
            Self::Truncated => f.write_str("input ends before the event is complete"),
            Self::Malformed { offset, reason } => {
                write!(f, "malformed cbor at byte {offset}: {reason}")
            }
            Self::TrailingBytes { offset } => {
                write!(f, "unexpected bytes after the event at byte {offset}")
            }
            Self::MissingField(field) => write!(f, "missing field `{field}`"),
            Self::DuplicateField(field) => write!(f, "duplicate field `{field}`"),
            Self::TooManyReadings => {
                write!(f, "more than {} readings", crate::MAX_READINGS)
            }
            Self::InvalidDevice => {
                f.write_str("device id is not 1 to 64 characters of [A-Za-z0-9._-]")
            }
            Self::InvalidReadingName { index } => {
                write!(
                    f,
                    "reading {index} has a name that is not 1 to 64 bytes of printable text"
                )
            }
            Self::NonFiniteReading { index } => write!(f, "reading {index} is not a finite number"),
            Self::DuplicateReading { index } => {
                write!(f, "reading {index} repeats the name of an earlier reading")
            }
            Self::InvalidKind => f.write_str("kind is not 1 to 64 bytes of printable text"),
        }
    }
}

impl core::error::Error for WireError {}
