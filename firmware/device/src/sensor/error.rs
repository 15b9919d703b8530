//! Why a measurement failed.

use core::fmt;

use embedded_hal::i2c;

/// Why a sensor could not deliver a measurement.
///
/// Small and `Copy`, with the bus error reduced to embedded-hal's [`i2c::ErrorKind`], so that it
/// is the same type for every bus implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SensorError {
    /// The I2C transfer failed: no acknowledge, arbitration lost, a bus error.
    Bus(i2c::ErrorKind),
    /// The sensor answered, but its data failed the checksum that came with it.
    Checksum,
    /// The driver reported a failure this crate does not know how to classify.
    Other,
}

impl SensorError {
    /// The error of a failed I2C transfer.
    pub fn bus<E: i2c::Error>(error: E) -> Self {
        Self::Bus(error.kind())
    }
}

impl fmt::Display for SensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bus(kind) => write!(f, "i2c transfer to the sensor failed: {kind}"),
            Self::Checksum => f.write_str("sensor data failed its checksum"),
            Self::Other => f.write_str("sensor driver failed"),
        }
    }
}

impl core::error::Error for SensorError {}
