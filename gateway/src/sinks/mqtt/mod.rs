//! The cloud MQTT sink: publishes journaled events at QoS 1 with rumqttc and deletes a row only
//! after the broker's PUBACK for it.
//!
//! The protocol bookkeeping (which packet id carries which row) is a sans-IO state machine in
//! [`state`]; [`sink`] is the I/O loop around it and [`tls`] builds the TLS client settings.

mod sink;
mod state;
mod tls;

pub use sink::{MqttSink, SinkError};
