//! The NATS JetStream destination: publishes each row to its subject with `Nats-Msg-Id` = its
//! id; a row is confirmed by the stream's PubAck (a PubAck marked duplicate confirms too).
//! Core NATS publishes, which no one acknowledges, are never used.
//!
//! [`destination`] is the adapter; [`stream`] checks (or creates) the stream that must store our
//! subjects.

mod destination;
mod stream;

pub use destination::{NatsConnection, NatsDestination};
