//! Sinks: where journaled rows go. Every destination plugs into one seam: a protocol adapter
//! ([`destination`]) driven by the generic delivery driver ([`driver`]), which reads the journal
//! in order per lane and confirms rows to it only once the destination has confirmed them.
//! Several destinations run at once ([`uplinks`]), each with its own delivery position.

pub mod amqp;
mod delivery;
pub mod destination;
pub mod driver;
#[cfg(test)]
mod driver_tests;
pub mod error;
pub mod eventbridge;
pub mod kafka;
pub mod mqtt;
pub mod nats;
mod pipeline;
mod tls;
pub mod uplinks;

pub use error::SinkError;

/// The key a backbone de-duplicates or labels a row's message by: an event's id, or an alert
/// transition's `{id}#{state}` (firing and resolved share the alert's id; JetStream would take
/// the second for a repeat of the first).
pub(crate) fn message_key(lane: crate::journal::Lane, payload: &[u8]) -> Option<String> {
    match lane {
        crate::journal::Lane::Alerts => edge_schema::alert_key(payload),
        crate::journal::Lane::Events => edge_schema::message_id(payload).map(Into::into),
    }
}
