//! What a link needs to know: who the device is, and how patient to be.

use core::fmt;
use core::time::Duration;

/// The settings of a [`Link`](super::Link); [`Link::new`](super::Link::new) checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig<'a> {
    /// Device id: 1–64 characters of `[A-Za-z0-9._-]`.
    pub device: &'a str,
    /// Firmware version, free text of at most 64 bytes, sent in every `Hello`.
    pub firmware_version: &'a str,
    /// How long unacknowledged events wait for an ack before the link sends `Hello` and all of
    /// them again. Longer than the gateway's commit time plus a round trip; 2 s by default.
    pub retransmit_timeout: Duration,
    /// Most frames one poll writes (at least 1 is used): bounds how long a poll blocks on the
    /// port. 8 by default, 0.03 s at 115 200 baud for typical events.
    pub max_frames_per_poll: usize,
    /// Most bytes one poll reads: a gateway or a noisy line that never stops sending cannot keep
    /// the device from its other work. 256 by default.
    pub max_read_per_poll: usize,
}

impl<'a> LinkConfig<'a> {
    /// The defaults, for this device and firmware version.
    pub const fn new(device: &'a str, firmware_version: &'a str) -> Self {
        Self {
            device,
            firmware_version,
            retransmit_timeout: Duration::from_secs(2),
            max_frames_per_poll: 8,
            max_read_per_poll: 256,
        }
    }
}

/// Why a [`LinkConfig`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The device id is not 1–64 characters of `[A-Za-z0-9._-]`.
    InvalidDevice,
    /// The firmware version is longer than 64 bytes.
    FirmwareVersionTooLong,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidDevice => {
                f.write_str("device id is not 1 to 64 characters of [A-Za-z0-9._-]")
            }
            Self::FirmwareVersionTooLong => f.write_str("firmware version is longer than 64 bytes"),
        }
    }
}

impl core::error::Error for ConfigError {}
