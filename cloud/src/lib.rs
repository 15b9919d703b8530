//! `edge-alerts`: the cloud end of Edge Gateway. It consumes what gateways publish (events,
//! alerts, status) from the cloud broker (MQTT, NATS JetStream or AMQP), stores each message
//! once whatever the broker redelivers, and keeps alerts with their lifecycle, gateways with
//! their status, and devices with their latest readings.
//!
//! - [`message`]: what a gateway's message means (sans-IO), over `edge-schema`'s types and
//!   addresses; unknown shapes are refused with a reason, never a panic.
//! - [`api`]: the JSON API over the store, behind a bearer token.
//! - [`consumer`]: the pipeline that applies each message to the store and acknowledges it
//!   only once stored, alone or as one of a group sharing the work.
//! - [`source`]: where messages come from — MQTT, NATS JetStream or AMQP (RabbitMQ) — each
//!   receiving and settling in its own way.
//! - [`live`]: the changes the dashboard hears of, as server-sent events.
//! - [`session`]: the dashboard's sessions and the throttle on failed logins.
//! - [`notify`]: webhook routes and the notifier that posts each alert transition once.
//! - [`tls`]: the trust roots that brokers' and PostgreSQL's certificates are checked against.
//! - [`store`]: one small trait, [`store::Store`], with two backends: SQLite (embedded, one
//!   file) and PostgreSQL (shared by several instances).

pub mod api;
pub mod consumer;
pub mod live;
pub mod message;
pub mod notify;
pub mod session;
pub mod source;
pub mod store;
pub mod tls;

pub use message::{AlertMessage, AlertState, EventMessage, Message, Refused};
pub use store::{Applied, Store};
