//! The messages a gateway sends to the cloud, as serde types.
//!
//! # On-wire format
//! The same payloads travel on every backbone (MQTT, NATS, AMQP); only the address differs
//! (see [`crate::address`]). The contract is `docs/wire-protocol.md` (events, status) and
//! `docs/rules.md` (alerts):
//!
//! | lane | payload |
//! |---|---|
//! | events | JSON [`EventMessage`]: `id`, `gateway`, `device`, `boot`, `seq`, optional `ts`, `received_at`, `readings`, optional `kind` |
//! | alerts | JSON [`AlertMessage`]: `id`, `gateway`, `rule`, `device`, `state`, `severity`, `at`, `value`, `event`, `labels` (the optional ones written as `null` when absent) |
//! | status | [`GatewayStatus`]: the bytes `online` or `offline` (not JSON) |
//!
//! Serialising a type gives its wire form (fields in the documented order); parsing ignores
//! fields it does not know, as the contract asks of consumers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::SchemaError;

/// A gateway's message, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A device event.
    Event(EventMessage),
    /// An alert transition.
    Alert(AlertMessage),
    /// A gateway's status.
    Status {
        /// The gateway.
        gateway: String,
        /// `online`, or `offline` (its last will).
        online: bool,
    },
}

impl Message {
    /// The key that makes a message unique: what a redelivery repeats. Events by their id;
    /// alert transitions by alert id and state (`firing` and `resolved` are two messages);
    /// status is not deduplicated (the latest wins).
    pub fn key(&self) -> Option<String> {
        match self {
            Self::Event(event) => Some(event.id.clone()),
            Self::Alert(alert) => Some(format!("{}#{}", alert.id, alert.state.as_str())),
            Self::Status { .. } => None,
        }
    }

    /// The gateway that sent it.
    pub fn gateway(&self) -> &str {
        match self {
            Self::Event(event) => &event.gateway,
            Self::Alert(alert) => &alert.gateway,
            Self::Status { gateway, .. } => gateway,
        }
    }
}

/// A device event as the gateway forwards it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct EventMessage {
    /// `{device}:{boot}:{seq}`: consumers treat two messages with the same id as one event.
    pub id: String,
    /// The gateway that forwarded it.
    pub gateway: String,
    /// The device.
    pub device: String,
    /// The device's boot counter, as received.
    pub boot: u32,
    /// The event's sequence number within the boot, as received.
    pub seq: u32,
    /// The device's own time, if it sent one (absent from the JSON otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
    /// When the gateway received it, in ms since the Unix epoch.
    pub received_at: i64,
    /// Its readings, name → value. (The JSON keeps the device's order; a map does not.)
    pub readings: BTreeMap<String, f64>,
    /// The event's kind, if the device sent one (absent from the JSON otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// An alert transition as the gateway raises it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AlertMessage {
    /// `{gateway}:alert:{journal}:{n}` ([`crate::alert_id`]), the same for an episode's `firing`
    /// and `resolved`.
    pub id: String,
    /// The gateway.
    pub gateway: String,
    /// The rule's name.
    pub rule: String,
    /// The device.
    pub device: String,
    /// `firing` or `resolved`.
    pub state: AlertState,
    /// `info`, `warning` or `critical` (`null` for a rule removed before its alert resolved).
    #[serde(default)]
    pub severity: Option<String>,
    /// When, in ms since the Unix epoch.
    pub at: i64,
    /// The value that decided it (`null` for silence).
    #[serde(default)]
    pub value: Option<f64>,
    /// The event that decided it (`null` for silence).
    #[serde(default)]
    pub event: Option<String>,
    /// The rule's labels (`null` for a rule removed before its alert resolved).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The two states an alert message reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The alert started.
    Firing,
    /// The alert ended.
    Resolved,
}

impl AlertState {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// A gateway's status: `online` (published, retained on MQTT, on every connect) or `offline`
/// (on a clean stop, and its MQTT last will).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayStatus {
    /// The gateway is connected.
    Online,
    /// The gateway stopped, or lost its connection.
    Offline,
}

impl GatewayStatus {
    /// The payload: `online` or `offline`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
        }
    }

    /// Reads a status payload: exactly `online` or `offline`.
    pub fn from_payload(payload: &[u8]) -> Result<Self, SchemaError> {
        match payload {
            b"online" => Ok(Self::Online),
            b"offline" => Ok(Self::Offline),
            _ => Err(SchemaError::Status),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// JSON → type → JSON gives the same JSON, byte for byte.
    fn round_trips<T: Serialize + for<'de> Deserialize<'de>>(json: &str) -> T {
        let parsed: T = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), json);
        parsed
    }

    #[test]
    fn the_documented_event_round_trips() {
        // docs/wire-protocol.md, readings in name order (a map keeps no other).
        let event: EventMessage = round_trips(
            r#"{"id":"greenhouse-3:7:42","gateway":"greenhouse-pi","device":"greenhouse-3","boot":7,"seq":42,"ts":1764230400000,"received_at":1764230400123,"readings":{"rh":40.2,"temp_c":21.5},"kind":"periodic"}"#,
        );
        assert_eq!(event.readings["temp_c"], 21.5);
        assert_eq!(event.kind.as_deref(), Some("periodic"));
        // Without the optional fields: absent, not null.
        let bare: EventMessage = round_trips(
            r#"{"id":"d:1:2","gateway":"gw","device":"d","boot":1,"seq":2,"received_at":5,"readings":{}}"#,
        );
        assert_eq!((bare.ts, bare.kind), (None, None));
    }

    #[test]
    fn the_documented_alert_round_trips() {
        let alert: AlertMessage = round_trips(
            r#"{"id":"greenhouse-pi:alert:17","gateway":"greenhouse-pi","rule":"greenhouse too hot","device":"greenhouse-3","state":"firing","severity":"critical","at":1795773930000,"value":37.2,"event":"greenhouse-3:7:1042","labels":{"team":"growers"}}"#,
        );
        assert_eq!(alert.state, AlertState::Firing);
        // Silence, under a rule since removed: the optional fields are written as null.
        let silent: AlertMessage = round_trips(
            r#"{"id":"gw:alert:2","gateway":"gw","rule":"quiet","device":"d","state":"resolved","severity":null,"at":9,"value":null,"event":null,"labels":null}"#,
        );
        assert_eq!(silent.state, AlertState::Resolved);
        assert_eq!(
            Message::Alert(silent).key().as_deref(),
            Some("gw:alert:2#resolved")
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_ones_refused() {
        let event: EventMessage = serde_json::from_str(
            r#"{"id":"d:1:2","gateway":"gw","device":"d","boot":1,"seq":2,"received_at":5,"readings":{"t":1.5},"future":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(event.readings["t"], 1.5);
        for missing in [
            r#"{"id":"d:1:2","gateway":"gw","device":"d","seq":2,"received_at":5,"readings":{}}"#,
            r#"{"id":"d:1:2","gateway":"gw","device":"d","boot":1,"seq":2,"readings":{}}"#,
            r#"{"id":"d:1:2","gateway":"gw","device":"d","boot":1,"seq":2,"received_at":5,"readings":{"t":null}}"#,
        ] {
            assert!(
                serde_json::from_str::<EventMessage>(missing).is_err(),
                "{missing}"
            );
        }
        assert!(
            serde_json::from_str::<AlertMessage>(
                r#"{"id":"x","gateway":"gw","rule":"r","device":"d","state":"pending","at":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn the_status_payload_round_trips() {
        for status in [GatewayStatus::Online, GatewayStatus::Offline] {
            assert_eq!(
                GatewayStatus::from_payload(status.as_str().as_bytes()),
                Ok(status)
            );
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, Value::from(status.as_str()));
        }
        for bad in [&b"Online"[..], b"online\n", b"", b"\"online\""] {
            assert_eq!(GatewayStatus::from_payload(bad), Err(SchemaError::Status));
        }
    }
}
