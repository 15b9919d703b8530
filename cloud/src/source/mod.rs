//! Where `edge-alerts` takes gateway messages from: one backbone per run, chosen by
//! `--source URL`. Each source only receives and settles (acknowledges, gives back); what a
//! message means, storing it and telling the dashboards is the shared pipeline of
//! [`crate::consumer`], the same for all four.
//!
//! - [`config`]: the source URL and its options, validated into a [`config::SourceConfig`].
//! - [`mqtt`]: an MQTT subscription, shared by a group (`$share/{group}/…`); PUBACK after the
//!   commit; a message the store cannot take is held until it can.
//! - [`nats`]: a durable JetStream pull consumer that the instances of a group share; ack
//!   after the commit, nak with a delay when the store fails, term for what is not ours.
//! - [`amqp`]: a durable queue on a topic exchange that the instances of a group share; ack
//!   after the commit, nack (requeue) when the store fails; reconnects with backoff.
//! - [`kafka`]: a consumer group over the gateways' topics; a partition's offset is committed
//!   after the commit of every record before it; a record the store cannot take is held.

pub mod amqp;
pub mod config;
pub mod kafka;
pub mod mqtt;
pub mod nats;
