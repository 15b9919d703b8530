//! Device simulator: virtual devices that publish events the way real firmware does.
//!
//! [`mqtt`] runs a fleet of devices, each with its own MQTT connection, publishing to
//! `devices/{device}/events` at QoS 1 in JSON or in the `edge-wire` CBOR encoding. [`signal`]
//! makes readings that look like a greenhouse: a slow daily swing, noise, and on some devices a
//! heat spike that crosses alert thresholds. [`bench`](mod@bench) is the load generator, the
//! measuring consumers and the bare broker clients of `edge-bench`. [`serial_device`] runs
//! devices on the real device core (`edge-device`) over serial lines ([`serial`]: pty pairs, a
//! noisy line, a UART's line rate).

pub mod bench;
pub mod mqtt;
pub mod serial;
pub mod serial_device;
pub mod signal;
