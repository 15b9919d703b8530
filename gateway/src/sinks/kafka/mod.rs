//! The Apache Kafka destination: an idempotent producer (`enable.idempotence`, `acks=all`)
//! writes each row to its lane's topic, keyed by its device (per-device order holds within
//! its partition), with the row's id and the gateway in headers; a row is confirmed by its
//! delivery report, and by nothing else.
//!
//! librdkafka never gives up on a record behind the journal's back (`message.timeout.ms = 0`):
//! the journal is the buffer, and the delivery driver's ack timeout decides when a connection
//! that confirms nothing is abandoned.

mod destination;

pub use destination::{KafkaConnection, KafkaDestination};
