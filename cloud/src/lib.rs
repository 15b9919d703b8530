//! `edge-alerts`: the cloud end of Edge Gateway. It consumes what gateways publish (events,
//! alerts, status) from the cloud broker, stores each message once whatever the broker
//! redelivers, and keeps alerts with their lifecycle, gateways with their status, and devices
//! with their latest readings.
//!
//! - [`message`]: what a gateway's MQTT message means (sans-IO); unknown shapes are refused
//!   with a reason, never a panic.
//! - [`store`]: one small trait, [`store::Store`], with two backends: SQLite (embedded, one
//!   file) and PostgreSQL (shared by several instances).

pub mod message;
pub mod store;

pub use message::{AlertMessage, AlertState, EventMessage, Message, Refused};
pub use store::{Applied, Store};
