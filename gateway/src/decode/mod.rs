//! Decode and validate: turns a device's MQTT payload into a [`DeviceEvent`], or a [`Rejection`]
//! with a stable reason for the metrics and a message for the dead-letter log; and renders the
//! uplink JSON that the cloud receives.
//!
//! A payload is JSON when its first non-whitespace byte is `{`, and otherwise the CBOR encoding
//! of `edge-wire`. Both formats go through the same content rules ([`edge_wire::Event::validate`]),
//! so a device is held to the same contract whichever it speaks. The full specification is in
//! `docs/wire-protocol.md`.

mod cbor;
mod event;
mod json;
mod payload;
mod rejection;
mod topic;
mod uplink;
mod validate;

pub use event::DeviceEvent;
pub use payload::{MAX_PAYLOAD_BYTES, decode_payload};
pub use rejection::{RejectReason, Rejection};
pub use topic::device_from_topic;
pub use uplink::encode_uplink;
pub use validate::validate_event;
