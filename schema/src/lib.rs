//! `edge-schema`: what an Edge Gateway sends to the cloud, defined once for the gateway that
//! writes it and the consumers (`edge-alerts`) that read it.
//!
//! - [`message`]: the three messages — a device event, an alert transition, the gateway's
//!   status — as serde types, with their JSON exactly as `docs/wire-protocol.md` and
//!   `docs/rules.md` specify it.
//! - [`encode`]: the gateway's fast, allocation-lean encoder of the event JSON (it runs for
//!   every event); its output parses into [`EventMessage`] field for field.
//! - [`address`]: where each message goes on each backbone (MQTT topic, NATS subject, AMQP
//!   routing key), and back from an address to the gateway and what the message is about.
//! - [`error`]: why an address, an id or a status is not understood.
//! - [`message_id`]: a message's id, read cheaply from its JSON; [`alert_id`]: how an alert's id
//!   is made.

pub mod address;
pub mod encode;
pub mod error;
mod id;
pub mod message;

pub use address::{Address, Lane};
pub use encode::{EventFields, encode_event};
pub use error::SchemaError;
pub use id::{alert_id, alert_key, is_alert_id_of, message_id};
pub use message::{AlertMessage, AlertState, EventMessage, GatewayStatus, Message};
