//! The Edge Gateway device core: what runs on a sensor node between its I2C sensors and the
//! serial line to the gateway.
//!
//! It measures sensors on a schedule, keeps every event in an outbox until the gateway
//! acknowledges it (the gateway acks only after its journal commit), and retransmits when acks
//! stop coming, over the serial link protocol of [`edge_wire::link`].
//!
//! # Layers
//! chip/PAC → HAL → drivers over embedded-hal 1.0 → this core. It names no chip: a board gives it
//! an `I2c` bus and a `DelayNs` for the sensors, an `embedded-io` serial port, a [`Clock`] and a
//! [`BootId`] source.
//!
//! - [`sensor`]: the [`Sensor`] trait, a TMP105 driver, and the SHT4x through the `sht4x` crate.
//! - [`schedule`]: when each sensor is due.
//! - [`outbox`]: events kept until acknowledged; the oldest dropped, and counted, when full.
//! - [`link`]: the device end of the serial protocol, as a sans-IO state machine and a thin poll
//!   over the serial port.
//! - [`device`]: the three together in one poll.
//! - [`clock`], [`boot`]: what the board provides.
//!
//! `#![no_std]` and no allocation: every buffer has a size fixed at compile time, and a device's
//! whole state is one value the board can keep in a `static`.
//!
//! # Why the `sht4x` crate
//! Three existing drivers for common humidity sensors build against embedded-hal 1.0 without
//! `std`: `sht4x` 0.2, `embedded-sht3x` 0.2 and `bme280` 0.5. This crate uses `sht4x`:
//! - Its release holds all of its repository's work, and its blocking and async drivers are
//!   separate types (`Sht4x`, `Sht4xAsync`). `embedded-sht3x`'s `async` feature *replaces* its
//!   blocking API, so one crate in the build turning it on breaks every blocking user; `bme280`'s
//!   last release predates fixes merged since.
//! - Its only I2C helper is Sensirion's own `sensirion-i2c`; its words are CRC-checked, with the
//!   CRC failure a distinct error. The other two pull a proc-macro stack (`maybe-async-cfg`) into
//!   every build, and `embedded-sht3x` calls `unwrap` in its conversion code.
//! - It talks in separate write and read transfers, never a repeated START, so it also works on
//!   controllers that lack one, like the Stellaris I2C that QEMU emulates.
//!
//! Its cost is the `fixed` crate, for its fixed-point results, converted to `f64` here.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod boot;
pub mod clock;
pub mod device;
pub mod link;
pub mod outbox;
pub mod schedule;
pub mod sensor;
#[cfg(test)]
mod testing;

pub use boot::BootId;
pub use clock::{Clock, Instant};
pub use device::Device;
pub use link::{Link, LinkConfig, LinkCounters};
pub use outbox::{Outbox, OutboxEvent};
pub use schedule::Scheduler;
pub use sensor::{Measurement, Reading, Sensor, SensorError};
