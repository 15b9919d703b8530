//! What a gateway's message means, from its address and payload. The messages themselves, and
//! where each goes on each backbone, are `edge-schema`'s (the contracts in
//! `docs/wire-protocol.md` and `docs/rules.md`); this adds the consumer's judgement: a payload
//! must be the shape its address promises and name the gateway (and device) its address names.
//!
//! | lane | payload |
//! |---|---|
//! | events of `{device}` | JSON event: `id`, `gateway`, `device`, `boot`, `seq`, `received_at`, `readings`, optional `ts`, `kind` |
//! | alerts | JSON alert: `id`, `gateway`, `rule`, `device`, `state`, `severity`, `at`, `value`, `event`, `labels` |
//! | status | `online` or `offline` (retained on MQTT; `offline` is the last will) |

use edge_schema::Lane;
pub use edge_schema::{Address, AlertMessage, AlertState, EventMessage, GatewayStatus, Message};

/// Why a message was not understood: counted by reason, logged, skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The topic (subject, routing key) is not one a gateway publishes on.
    #[error("unknown address `{0}`")]
    Topic(String),
    /// The payload is not the shape its address promises.
    #[error("{what} on `{address}` is not understood: {detail}")]
    Payload {
        /// Events, alert or status.
        what: &'static str,
        /// The topic, subject or routing key.
        address: String,
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

/// Understands the message on MQTT `topic`. `prefix` is the gateways' `topic_prefix`.
pub fn interpret(prefix: &str, topic: &str, payload: &[u8]) -> Result<Message, Refused> {
    let address =
        Address::from_mqtt_topic(prefix, topic).ok_or_else(|| Refused::Topic(topic.to_owned()))?;
    understand(&address, topic, payload)
}

/// Understands `payload`, which came to `address`; `origin` is that address as the backbone
/// spelled it (a topic, subject or routing key), for the refusals.
pub fn understand(address: &Address<'_>, origin: &str, payload: &[u8]) -> Result<Message, Refused> {
    let gateway = &*address.gateway;
    let bad = |what: &'static str, detail: String| Refused::Payload {
        what,
        address: origin.to_owned(),
        detail,
    };
    match &address.lane {
        Lane::Alerts => {
            let alert: AlertMessage = serde_json::from_slice(payload)
                .map_err(|error| bad("an alert", error.to_string()))?;
            if alert.gateway != gateway {
                return Err(bad(
                    "an alert",
                    format!("its gateway is `{}`", alert.gateway),
                ));
            }
            // Alerts are stored by id: one whose id is not its gateway's could take over, or
            // shadow, another gateway's alert.
            if !edge_schema::is_alert_id_of(&alert.id, gateway) {
                return Err(bad(
                    "an alert",
                    format!(
                        "its id `{}` is not an alert id of gateway `{gateway}`",
                        alert.id
                    ),
                ));
            }
            Ok(Message::Alert(alert))
        }
        Lane::Status => match GatewayStatus::from_payload(payload) {
            Ok(status) => Ok(Message::Status {
                gateway: gateway.to_owned(),
                online: status == GatewayStatus::Online,
            }),
            Err(error) => Err(bad("a status", error.to_string())),
        },
        Lane::Events { device } => {
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
    fn an_address_from_any_backbone_is_held_to_its_payload() {
        let payload = br#"{"id":"d.1:1:2","gateway":"gw.1","device":"d.1","boot":1,"seq":2,"received_at":5,"readings":{}}"#;
        let subject = "edge.gw%2E1.devices.d%2E1.events";
        let address = Address::from_nats_subject("edge", subject).unwrap();
        let event = understand(&address, subject, payload).unwrap();
        assert_eq!(event.gateway(), "gw.1");
        // The same payload on another device's lane is refused.
        let elsewhere = Address::events("gw.1", "d.2");
        let refused = understand(&elsewhere, "gw%2E1.devices.d%2E2.events", payload).unwrap_err();
        assert_eq!(refused.reason(), "bad_payload");
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
                "edge/gw/alerts",
                br#"{"id":"gw-2:alert:3","gateway":"gw","rule":"hot","device":"d-1","state":"resolved","at":7}"#,
                "bad_payload",
            ),
            (
                "edge/gw/devices/d/events",
                br#"{"id":"e:1:1","gateway":"gw","device":"e","boot":1,"seq":1,"received_at":1,"readings":{}}"#,
                "bad_payload",
            ),
        ] {
            let refused = interpret("edge", topic, payload).unwrap_err();
            assert_eq!(refused.reason(), reason, "{topic}: {refused}");
        }
    }
}
