//! Load generation for benchmarks: a fleet of publishing devices ([`fleet`]), consumers at the far
//! end that measure what arrives ([`inbox`]; on MQTT in [`mqtt`], on NATS JetStream in `nats`, on
//! RabbitMQ in `amqp`, on Kafka in `kafka`), and a bare client of each broker ([`bare`]) that publishes the gateway's
//! messages with the gateway's guarantee, as the reference the gateway is measured against.
//!
//! Latency is end to end on one clock: every event carries the time it was handed to the first
//! client ([`payload`]), and the consumer subtracts it from its own receive time.
//!
//! The NATS, AMQP and Kafka clients are behind the `nats`, `amqp` and `kafka` features.

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod bare;
pub mod fleet;
pub mod inbox;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
pub mod payload;

pub use fleet::{FleetConfig, FleetReport, Pace, run_fleet};
pub use inbox::{Consumer, Inbox, quantile};
pub use payload::{Arrival, device_name, event_payload, now_us, parse_arrival};
