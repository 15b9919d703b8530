//! Sensors: the [`Sensor`] trait the device samples, the [`Measurement`] it returns, and two I2C
//! drivers over embedded-hal 1.0.
//!
//! - [`Tmp105`]: the TI TMP105 temperature sensor (and its register-compatible relatives), written
//!   here; it is the sensor QEMU emulates.
//! - [`Sht4xSensor`]: the Sensirion SHT4x temperature and humidity sensor, through the `sht4x`
//!   crate (see the crate docs for why that one).
//!
//! A driver takes an `I2c` bus (shared buses come from `embedded-hal-bus`) and, when the chip
//! needs a conversion time, a `DelayNs`. Errors are the small [`SensorError`], mapped to
//! embedded-hal's `ErrorKind`, so that any mix of drivers fits one `&mut dyn Sensor` array.

mod driver;
mod error;
mod measurement;
pub mod sht4x;
pub mod tmp105;

pub use driver::Sensor;
pub use error::SensorError;
pub use measurement::{MAX_EVENT_READINGS, Measurement, Reading};
pub use sht4x::Sht4xSensor;
pub use tmp105::Tmp105;
