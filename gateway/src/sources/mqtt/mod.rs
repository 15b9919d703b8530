//! The MQTT source: an embedded rumqttd broker that devices publish to on
//! `devices/{device}/events`, and an in-process link that reads what they publish.
//!
//! The broker acknowledges a QoS 1 publish (PUBACK) when its router has it in memory, before the
//! gateway has journaled it: a crash in between loses what the router held. That window is
//! measured and bounded in `docs/durability.md`; serial devices, which are acked only after the
//! journal commit, do not have it.

mod broker;
mod source;

pub use broker::{BrokerError, start_broker};
pub use source::MqttSource;
