//! Sinks: where journaled rows go. Every destination plugs into one seam: a protocol adapter
//! ([`destination`]) driven by the generic delivery driver ([`driver`]), which reads the journal
//! in order per lane and confirms rows to it only once the destination has confirmed them.
//! Several destinations run at once ([`uplinks`]), each with its own delivery position.

mod delivery;
pub mod destination;
pub mod driver;
pub mod error;
pub mod mqtt;
pub mod nats;
mod tls;
pub mod uplinks;

pub use error::SinkError;
