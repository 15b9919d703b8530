//! The interface the device samples through: one measurement on demand.

use super::{Measurement, SensorError};

/// A sensor that measures on demand and names what it measured.
///
/// Object safe, so that sensors of different types sit in one `[&mut dyn Sensor; N]`.
pub trait Sensor {
    /// Takes one measurement and returns its readings, e.g. `temp_c` and `rh`.
    ///
    /// Blocks for the bus transfers and the chip's conversion time, at most tens of milliseconds
    /// for the drivers of this crate.
    fn measure(&mut self) -> Result<Measurement, SensorError>;
}

impl<S: Sensor + ?Sized> Sensor for &mut S {
    fn measure(&mut self) -> Result<Measurement, SensorError> {
        S::measure(self)
    }
}
