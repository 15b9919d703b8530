//! The MQTT source: the endpoint devices publish to on `devices/{device}/events` (MQTT 3.1.1,
//! QoS 0, 1 or 2).
//!
//! The gateway speaks the device side of MQTT itself rather than embedding a general broker, so
//! that an acknowledgement means what a device needs it to mean: a PUBACK is sent only after the
//! journal has **committed** the event. A crash at any moment therefore loses no acknowledged
//! event (the device still holds, and resends, what was not acknowledged), and when devices
//! publish faster than the journal commits they are slowed down instead of having events dropped
//! behind their backs. See `docs/durability.md`.
//!
//! - [`listener`]: the TCP listener, the connection cap, device logins, client-id takeover.
//! - [`session`]: one connection, from the TLS handshake and CONNECT to close.
//! - [`tls`]: TLS on the endpoint, device logins by client certificate, reloading the files.

mod listener;
mod session;
mod tls;

pub use listener::{DeviceListener, ListenerError};
pub use tls::{DeviceTls, DeviceTlsError};
