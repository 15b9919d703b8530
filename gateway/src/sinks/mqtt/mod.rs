//! The MQTT destination: publishes journaled rows at QoS 1 with rumqttc; a row is confirmed by
//! the broker's PUBACK for it.
//!
//! Which packet id carries which row is a sans-IO state machine in [`state`]; [`destination`]
//! is the adapter the [delivery driver](crate::sinks::driver) drives.

mod destination;
mod state;

pub use destination::{MqttConnection, MqttDestination};
