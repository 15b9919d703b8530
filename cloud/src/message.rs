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
//! | batches of events | a JSON array of events of the gateway, any of its devices |

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

/// Events in one batch at most: a gateway's MQTT uplink sends at most 10 000; more is refused
/// whole rather than held in memory.
pub const MAX_BATCH_EVENTS: usize = 10_000;

/// Understands every message `payload` holds, which came to `address`: one, or each event of a
/// batch. A batch that is not a JSON array (or holds more than [`MAX_BATCH_EVENTS`]) is refused
/// whole; an element that is not an event of the address's gateway is refused alone, saying
/// which, and the others are understood. `origin` is the address as the backbone spelled it (a
/// topic, subject or routing key), for the refusals.
pub fn understand_all(
    address: &Address<'_>,
    origin: &str,
    payload: &[u8],
) -> Vec<Result<Message, Refused>> {
    if address.lane != Lane::Batch {
        return vec![understand(address, origin, payload)];
    }
    let bad = |detail: String| Refused::Payload {
        what: "a batch",
        address: origin.to_owned(),
        detail,
    };
    let items: Vec<&serde_json::value::RawValue> = match serde_json::from_slice(payload) {
        Ok(items) => items,
        Err(error) => return vec![Err(bad(format!("not a JSON array: {error}")))],
    };
    if items.is_empty() {
        return vec![Err(bad("it holds no event".to_owned()))];
    }
    if items.len() > MAX_BATCH_EVENTS {
        return vec![Err(bad(format!(
            "it holds {} events, more than {MAX_BATCH_EVENTS}",
            items.len()
        )))];
    }
    items
        .into_iter()
        .enumerate()
        .map(|(at, item)| {
            event(&address.gateway, None, item.get().as_bytes()).map_err(|detail| {
                bad(format!(
                    "its element {at} is not an event of the gateway: {detail}"
                ))
            })
        })
        .collect()
}

/// An event of `gateway` (and of `device`, when the address names one), or what is wrong.
fn event(gateway: &str, device: Option<&str>, payload: &[u8]) -> Result<Message, String> {
    let event: EventMessage = serde_json::from_slice(payload).map_err(|error| error.to_string())?;
    if event.gateway != gateway || device.is_some_and(|device| event.device != device) {
        return Err(format!(
            "it names gateway `{}` and device `{}`",
            event.gateway, event.device
        ));
    }
    Ok(Message::Event(event))
}

/// Understands `payload`, one message, which came to `address`; `origin` is that address as the
/// backbone spelled it (a topic, subject or routing key), for the refusals. A batch is
/// [`understand_all`]'s.
pub fn understand(address: &Address<'_>, origin: &str, payload: &[u8]) -> Result<Message, Refused> {
    let gateway = &*address.gateway;
    let bad = |what: &'static str, detail: String| Refused::Payload {
        what,
        address: origin.to_owned(),
        detail,
    };
    match &address.lane {
        Lane::Batch => Err(bad(
            "a batch",
            "it holds several messages, and one was expected".to_owned(),
        )),
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
            event(gateway, Some(device), payload).map_err(|detail| bad("an event", detail))
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
    fn a_batch_gives_each_of_its_events_and_refuses_only_the_bad_ones() {
        let address = Address::batch("gw-1");
        let payload = br#"[
            {"id":"d-1:1:2","gateway":"gw-1","device":"d-1","boot":1,"seq":2,"received_at":5,"readings":{"t":21.5}},
            {"id":"d-2:1:9","gateway":"gw-1","device":"d-2","boot":1,"seq":9,"received_at":6,"readings":{}},
            {"id":"d-3:1:1","gateway":"gw-2","device":"d-3","boot":1,"seq":1,"received_at":7,"readings":{}},
            {"nonsense":true}
        ]"#;
        let understood = understand_all(&address, "edge/gw-1/events", payload);
        assert_eq!(understood.len(), 4);
        let keys: Vec<Option<String>> = understood
            .iter()
            .map(|message| message.as_ref().ok().and_then(Message::key))
            .collect();
        assert_eq!(
            keys,
            [Some("d-1:1:2".into()), Some("d-2:1:9".into()), None, None]
        );
        // Another gateway's event in this gateway's batch is refused, and says which element.
        let refused = understood[2].as_ref().unwrap_err().to_string();
        assert!(
            refused.contains("element 2") && refused.contains("gw-2"),
            "{refused}"
        );
        assert!(understood[3].is_err());
    }

    #[test]
    fn a_batch_that_is_not_an_array_of_events_is_refused_whole() {
        let address = Address::batch("gw-1");
        for payload in [&b"{}"[..], b"[]", b"[1,", b"not json"] {
            let understood = understand_all(&address, "edge/gw-1/events", payload);
            assert_eq!(understood.len(), 1, "{payload:?}");
            assert_eq!(understood[0].as_ref().unwrap_err().reason(), "bad_payload");
        }
        let huge = format!("[{}0]", "0,".repeat(MAX_BATCH_EVENTS));
        let understood = understand_all(&address, "edge/gw-1/events", huge.as_bytes());
        assert_eq!(understood.len(), 1, "refused whole, not element by element");
        // A single message where a batch's address is: refused, not misread.
        assert!(understand(&address, "edge/gw-1/events", b"[]").is_err());
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
