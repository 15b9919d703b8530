//! What a gateway's message means, from its topic and payload (the contracts in
//! `docs/wire-protocol.md`):
//!
//! | topic | payload |
//! |---|---|
//! | `{prefix}/{gateway}/devices/{device}/events` | JSON event: `id`, `gateway`, `device`, `boot`, `seq`, `received_at`, `readings`, optional `ts` |
//! | `{prefix}/{gateway}/alerts` | JSON alert: `id`, `gateway`, `rule`, `device`, `state`, `severity`, `at`, `value`, `event`, `labels` |
//! | `{prefix}/{gateway}/status` | `online` or `offline` (retained; `offline` is the last will) |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
}

/// A device event as the gateway forwards it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct EventMessage {
    /// `{device}:{boot}:{seq}`.
    pub id: String,
    /// The gateway that forwarded it.
    pub gateway: String,
    /// The device.
    pub device: String,
    /// When the gateway received it, in ms since the Unix epoch.
    pub received_at: i64,
    /// The device's own time, if it has one.
    #[serde(default)]
    pub ts: Option<i64>,
    /// Its readings.
    pub readings: BTreeMap<String, f64>,
}

/// An alert transition as the gateway raises it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AlertMessage {
    /// `{gateway}:alert:{n}`, the same for an episode's `firing` and `resolved`.
    pub id: String,
    /// The gateway.
    pub gateway: String,
    /// The rule's name.
    pub rule: String,
    /// The device.
    pub device: String,
    /// `firing` or `resolved`.
    pub state: AlertState,
    /// `info`, `warning` or `critical` (absent for a rule removed before its alert resolved).
    #[serde(default)]
    pub severity: Option<String>,
    /// When, in ms since the Unix epoch.
    pub at: i64,
    /// The value that decided it.
    #[serde(default)]
    pub value: Option<f64>,
    /// The event that decided it.
    #[serde(default)]
    pub event: Option<String>,
    /// The rule's labels.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The two states an alert message reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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

/// Why a message was not understood: counted by reason, logged, skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The topic is not one a gateway publishes.
    #[error("unknown topic `{0}`")]
    Topic(String),
    /// The payload is not the shape its topic promises.
    #[error("{what} on `{topic}` is not understood: {detail}")]
    Payload {
        /// Events, alert or status.
        what: &'static str,
        /// The topic.
        topic: String,
        /// What is wrong.
        detail: String,
    },
}

impl Refused {
    /// A stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Topic(_) => "unknown_topic",
            Self::Payload { .. } => "bad_payload",
        }
    }
}

/// Understands the message on `topic`. `prefix` is the gateways' `topic_prefix`.
pub fn interpret(prefix: &str, topic: &str, payload: &[u8]) -> Result<Message, Refused> {
    let unknown = || Refused::Topic(topic.to_owned());
    let rest = topic
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(unknown)?;
    let (gateway, what) = rest.split_once('/').ok_or_else(unknown)?;
    if gateway.is_empty() {
        return Err(unknown());
    }
    let bad = |what: &'static str, detail: String| Refused::Payload {
        what,
        topic: topic.to_owned(),
        detail,
    };
    match what.split('/').collect::<Vec<_>>().as_slice() {
        ["alerts"] => {
            let alert: AlertMessage = serde_json::from_slice(payload)
                .map_err(|error| bad("an alert", error.to_string()))?;
            if alert.gateway != gateway {
                return Err(bad(
                    "an alert",
                    format!("its gateway is `{}`", alert.gateway),
                ));
            }
            Ok(Message::Alert(alert))
        }
        ["status"] => match payload {
            b"online" => Ok(Message::Status {
                gateway: gateway.to_owned(),
                online: true,
            }),
            b"offline" => Ok(Message::Status {
                gateway: gateway.to_owned(),
                online: false,
            }),
            _ => Err(bad("a status", "expected `online` or `offline`".to_owned())),
        },
        ["devices", device, "events"] => {
            let event: EventMessage = serde_json::from_slice(payload)
                .map_err(|error| bad("an event", error.to_string()))?;
            if event.device != *device || event.gateway != gateway {
                return Err(bad(
                    "an event",
                    format!(
                        "it names gateway `{}` and device `{}`",
                        event.gateway, event.device
                    ),
                ));
            }
            Ok(Message::Event(event))
        }
        _ => Err(unknown()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_message_is_understood() {
        let event = interpret(
            "edge",
            "edge/gw-1/devices/d-1/events",
            br#"{"id":"d-1:1:2","gateway":"gw-1","device":"d-1","boot":1,"seq":2,"received_at":5,"readings":{"t":21.5}}"#,
        )
        .unwrap();
        assert_eq!(event.key().as_deref(), Some("d-1:1:2"));
        let alert = interpret(
            "edge",
            "edge/gw-1/alerts",
            br#"{"id":"gw-1:alert:3","gateway":"gw-1","rule":"hot","device":"d-1","state":"firing","severity":"critical","at":7,"value":36.0,"event":"d-1:1:2","labels":{"zone":"n"}}"#,
        )
        .unwrap();
        assert_eq!(alert.key().as_deref(), Some("gw-1:alert:3#firing"));
        assert_eq!(
            interpret("edge", "edge/gw-1/status", b"offline").unwrap(),
            Message::Status {
                gateway: "gw-1".into(),
                online: false
            }
        );
    }

    #[test]
    fn unknown_shapes_are_refused_with_a_reason() {
        for (topic, payload, reason) in [
            ("other/gw/alerts", &b"{}"[..], "unknown_topic"),
            ("edge/gw/something", b"{}", "unknown_topic"),
            ("edge//alerts", b"{}", "unknown_topic"),
            ("edge/gw/alerts", b"not json", "bad_payload"),
            ("edge/gw/alerts", br#"{"id":"x"}"#, "bad_payload"),
            ("edge/gw/status", b"maybe", "bad_payload"),
            (
                "edge/gw/devices/d/events",
                br#"{"id":"e:1:1","gateway":"gw","device":"e","received_at":1,"readings":{}}"#,
                "bad_payload",
            ),
        ] {
            let refused = interpret("edge", topic, payload).unwrap_err();
            assert_eq!(refused.reason(), reason, "{topic}: {refused}");
        }
    }
}
