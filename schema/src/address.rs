//! Where a gateway's message goes on each backbone, and back: from an MQTT topic, a NATS
//! subject or an AMQP routing key to the gateway and the lane (events of a device, alerts,
//! status).
//!
//! # On-wire format
//!
//! | lane | MQTT topic | NATS subject | AMQP routing key |
//! |---|---|---|---|
//! | events | `{prefix}/{gateway}/devices/{device}/events` | `{subject_prefix}.{gateway}.devices.{device}.events` | `{gateway}.devices.{device}.events` |
//! | alerts | `{prefix}/{gateway}/alerts` | `{subject_prefix}.{gateway}.alerts` | `{gateway}.alerts` |
//! | status | `{prefix}/{gateway}/status` | `{subject_prefix}.{gateway}.status` | `{gateway}.status` |
//! | batches of events | `{prefix}/{gateway}/events` | `{subject_prefix}.{gateway}.events` | `{gateway}.events` |
//!
//! A batch is a JSON array of event messages of one gateway, any of its devices, in the order
//! the gateway journaled them (`docs/wire-protocol.md`).
//!
//! On AMQP the exchange (a topic exchange) takes the place of the prefix.
//!
//! Gateway and device ids are made of `[A-Za-z0-9._-]`. In MQTT topics they appear as they
//! are. A `.` separates NATS tokens and AMQP words, so in subjects and routing keys every byte
//! of an id outside `[A-Za-z0-9_-]` is written `%XX`, two uppercase hex digits:
//! `greenhouse.3` → `greenhouse%2E3`. `%` is never part of an id, so the rule is reversible;
//! [`decode_id`] refuses any other spelling (a lowercase or short escape, an escape of a byte
//! that needs none, a byte that needed one), so an id has exactly one spelling.
//!
//! # Invariants
//! - For every id `x` (any string, in fact): `decode_id(&encode_id(x)) == x`.
//! - Every address parses back from the form it renders to, on every backbone.
//! - The parsers return `None` for anything that is not one of ours: another prefix, another
//!   shape, an empty id, a malformed escape.

use std::borrow::Cow;

use crate::error::SchemaError;

/// What a message is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lane<'a> {
    /// A device's events.
    Events {
        /// The device.
        device: Cow<'a, str>,
    },
    /// The gateway's alert transitions.
    Alerts,
    /// The gateway's status.
    Status,
    /// A batch of the gateway's events (of any of its devices).
    Batch,
}

/// A message's destination: its gateway and its lane.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address<'a> {
    /// The gateway.
    pub gateway: Cow<'a, str>,
    /// What the message is about.
    pub lane: Lane<'a>,
}

/// The AMQP binding patterns that cover every lane of every gateway.
pub const AMQP_BINDINGS: [&str; 4] = ["*.devices.*.events", "*.alerts", "*.status", "*.events"];

/// The NATS subject filter that covers every lane of every gateway under `subject_prefix`.
pub fn nats_filter(subject_prefix: &str) -> String {
    format!("{subject_prefix}.>")
}

impl<'a> Address<'a> {
    /// Where `device`'s events from `gateway` go.
    pub fn events(gateway: &'a str, device: &'a str) -> Self {
        Self {
            gateway: Cow::Borrowed(gateway),
            lane: Lane::Events {
                device: Cow::Borrowed(device),
            },
        }
    }

    /// Where `gateway`'s alert transitions go.
    pub fn alerts(gateway: &'a str) -> Self {
        Self {
            gateway: Cow::Borrowed(gateway),
            lane: Lane::Alerts,
        }
    }

    /// Where `gateway`'s status goes.
    pub fn status(gateway: &'a str) -> Self {
        Self {
            gateway: Cow::Borrowed(gateway),
            lane: Lane::Status,
        }
    }

    /// Where batches of `gateway`'s events go.
    pub fn batch(gateway: &'a str) -> Self {
        Self {
            gateway: Cow::Borrowed(gateway),
            lane: Lane::Batch,
        }
    }

    /// The device, for the events lane.
    pub fn device(&self) -> Option<&str> {
        match &self.lane {
            Lane::Events { device } => Some(device),
            Lane::Alerts | Lane::Status | Lane::Batch => None,
        }
    }

    /// The same address, owning its ids.
    pub fn into_owned(self) -> Address<'static> {
        Address {
            gateway: Cow::Owned(self.gateway.into_owned()),
            lane: match self.lane {
                Lane::Events { device } => Lane::Events {
                    device: Cow::Owned(device.into_owned()),
                },
                Lane::Alerts => Lane::Alerts,
                Lane::Status => Lane::Status,
                Lane::Batch => Lane::Batch,
            },
        }
    }

    /// The MQTT topic under `prefix` (the gateways' `topic_prefix`); ids as they are.
    pub fn mqtt_topic(&self, prefix: &str) -> String {
        let gateway = &self.gateway;
        match &self.lane {
            Lane::Events { device } => format!("{prefix}/{gateway}/devices/{device}/events"),
            Lane::Alerts => format!("{prefix}/{gateway}/alerts"),
            Lane::Status => format!("{prefix}/{gateway}/status"),
            Lane::Batch => format!("{prefix}/{gateway}/events"),
        }
    }

    /// The NATS subject under `subject_prefix`; ids escaped.
    pub fn nats_subject(&self, subject_prefix: &str) -> String {
        format!("{subject_prefix}.{}", self.amqp_routing_key())
    }

    /// The AMQP routing key (the exchange stands for the prefix); ids escaped.
    pub fn amqp_routing_key(&self) -> String {
        let gateway = encode_id(&self.gateway);
        match &self.lane {
            Lane::Events { device } => {
                format!("{gateway}.devices.{}.events", encode_id(device))
            }
            Lane::Alerts => format!("{gateway}.alerts"),
            Lane::Status => format!("{gateway}.status"),
            Lane::Batch => format!("{gateway}.events"),
        }
    }

    /// The address of an MQTT `topic` under `prefix`, if it is one of ours.
    pub fn from_mqtt_topic(prefix: &str, topic: &'a str) -> Option<Self> {
        let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
        let mut levels = rest.split('/');
        let gateway = levels.next().filter(|gateway| !gateway.is_empty())?;
        let lane = match (levels.next()?, levels.next(), levels.next(), levels.next()) {
            ("alerts", None, None, None) => Lane::Alerts,
            ("status", None, None, None) => Lane::Status,
            ("events", None, None, None) => Lane::Batch,
            ("devices", Some(device), Some("events"), None) if !device.is_empty() => Lane::Events {
                device: Cow::Borrowed(device),
            },
            _ => return None,
        };
        Some(Self {
            gateway: Cow::Borrowed(gateway),
            lane,
        })
    }

    /// The address of a NATS `subject` under `subject_prefix`, if it is one of ours.
    pub fn from_nats_subject(subject_prefix: &str, subject: &'a str) -> Option<Self> {
        let key = subject.strip_prefix(subject_prefix)?.strip_prefix('.')?;
        Self::from_amqp_routing_key(key)
    }

    /// The address of an AMQP routing key, if it is one of ours.
    pub fn from_amqp_routing_key(key: &'a str) -> Option<Self> {
        let mut words = key.split('.');
        let gateway = decode_id(words.next()?).ok()?;
        let lane = match (words.next()?, words.next(), words.next(), words.next()) {
            ("alerts", None, None, None) => Lane::Alerts,
            ("status", None, None, None) => Lane::Status,
            ("events", None, None, None) => Lane::Batch,
            ("devices", Some(device), Some("events"), None) => Lane::Events {
                device: decode_id(device).ok()?,
            },
            _ => return None,
        };
        Some(Self { gateway, lane })
    }
}

/// Whether `byte` stands for itself in a subject token or a routing-key word.
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

/// An id as it is written in a NATS subject or an AMQP routing key: every byte outside
/// `[A-Za-z0-9_-]` as `%XX`. Borrowed when nothing needs escaping (the usual case).
pub fn encode_id(id: &str) -> Cow<'_, str> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if id.bytes().all(is_plain) {
        return Cow::Borrowed(id);
    }
    let mut out = String::with_capacity(id.len() + 8);
    for byte in id.bytes() {
        if is_plain(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    Cow::Owned(out)
}

/// The id that [`encode_id`] wrote as `token`. Refuses an empty token, a `%` not followed by
/// two uppercase hex digits, an escape of a byte that stands for itself, a byte that should
/// have been escaped, and bytes that are not UTF-8 once unescaped.
pub fn decode_id(token: &str) -> Result<Cow<'_, str>, SchemaError> {
    if token.is_empty() {
        return Err(SchemaError::EmptyId);
    }
    let bytes = token.as_bytes();
    if bytes.iter().all(|&byte| is_plain(byte)) {
        return Ok(Cow::Borrowed(token));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        if is_plain(byte) {
            out.push(byte);
            at += 1;
        } else if byte == b'%' {
            let escaped = match (bytes.get(at + 1), bytes.get(at + 2)) {
                (Some(&high), Some(&low)) => upper_hex(high)
                    .zip(upper_hex(low))
                    .map(|(high, low)| high << 4 | low)
                    .filter(|&escaped| !is_plain(escaped)),
                _ => None,
            };
            let escaped = escaped.ok_or_else(|| SchemaError::MalformedEscape {
                token: token.to_owned(),
                at,
            })?;
            out.push(escaped);
            at += 3;
        } else {
            return Err(SchemaError::Unescaped {
                token: token.to_owned(),
                at,
            });
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| SchemaError::NotUtf8 {
            token: token.to_owned(),
        })
}

/// The value of an uppercase hex digit.
fn upper_hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn all_lanes<'a>(gateway: &'a str, device: &'a str) -> [Address<'a>; 4] {
        [
            Address::events(gateway, device),
            Address::alerts(gateway),
            Address::status(gateway),
            Address::batch(gateway),
        ]
    }

    #[test]
    fn addresses_are_as_documented() {
        let [events, alerts, status, batch] = all_lanes("greenhouse.pi", "greenhouse.3");
        assert_eq!(batch.mqtt_topic("edge"), "edge/greenhouse.pi/events");
        assert_eq!(batch.nats_subject("edge"), "edge.greenhouse%2Epi.events");
        assert_eq!(batch.amqp_routing_key(), "greenhouse%2Epi.events");
        assert_eq!(
            events.mqtt_topic("edge"),
            "edge/greenhouse.pi/devices/greenhouse.3/events"
        );
        assert_eq!(
            alerts.mqtt_topic("site/edge"),
            "site/edge/greenhouse.pi/alerts"
        );
        assert_eq!(status.mqtt_topic("edge"), "edge/greenhouse.pi/status");
        assert_eq!(
            events.nats_subject("edge"),
            "edge.greenhouse%2Epi.devices.greenhouse%2E3.events"
        );
        assert_eq!(
            alerts.nats_subject("acme.edge"),
            "acme.edge.greenhouse%2Epi.alerts"
        );
        assert_eq!(status.nats_subject("edge"), "edge.greenhouse%2Epi.status");
        assert_eq!(
            events.amqp_routing_key(),
            "greenhouse%2Epi.devices.greenhouse%2E3.events"
        );
        assert_eq!(alerts.amqp_routing_key(), "greenhouse%2Epi.alerts");
        assert_eq!(status.amqp_routing_key(), "greenhouse%2Epi.status");
        assert_eq!(nats_filter("edge"), "edge.>");
    }

    #[test]
    fn ids_with_dots_round_trip_on_every_backbone() {
        for (gateway, device) in [
            ("gw", "d"),
            ("greenhouse.pi", "greenhouse.3"),
            ("a.b.c", "...-_x"),
            ("GW_1-2", "dev.9"),
        ] {
            for address in all_lanes(gateway, device) {
                let topic = address.mqtt_topic("edge");
                assert_eq!(
                    Address::from_mqtt_topic("edge", &topic),
                    Some(address.clone())
                );
                let subject = address.nats_subject("acme.edge");
                assert_eq!(
                    Address::from_nats_subject("acme.edge", &subject),
                    Some(address.clone())
                );
                let key = address.amqp_routing_key();
                assert_eq!(Address::from_amqp_routing_key(&key), Some(address.clone()));
            }
        }
    }

    #[test]
    fn encoding_escapes_exactly_the_bytes_that_need_it() {
        assert_eq!(encode_id("greenhouse.3"), "greenhouse%2E3");
        assert!(matches!(
            encode_id("plain_id-9"),
            Cow::Borrowed("plain_id-9")
        ));
        assert_eq!(encode_id("a%b*>#é"), "a%25b%2A%3E%23%C3%A9");
        assert_eq!(decode_id("greenhouse%2E3").unwrap(), "greenhouse.3");
        assert_eq!(decode_id("a%25b%2A%3E%23%C3%A9").unwrap(), "a%b*>#é");
    }

    #[test]
    fn malformed_ids_are_refused() {
        for (token, expected) in [
            ("", SchemaError::EmptyId),
            (
                "gw%2e3",
                SchemaError::MalformedEscape {
                    token: "gw%2e3".into(),
                    at: 2,
                },
            ),
            (
                "gw%2",
                SchemaError::MalformedEscape {
                    token: "gw%2".into(),
                    at: 2,
                },
            ),
            (
                "%",
                SchemaError::MalformedEscape {
                    token: "%".into(),
                    at: 0,
                },
            ),
            (
                "g%ZZ",
                SchemaError::MalformedEscape {
                    token: "g%ZZ".into(),
                    at: 1,
                },
            ),
            // `A` needs no escape: `%41` would be a second spelling of `A`.
            (
                "%41",
                SchemaError::MalformedEscape {
                    token: "%41".into(),
                    at: 0,
                },
            ),
            (
                "gw.3",
                SchemaError::Unescaped {
                    token: "gw.3".into(),
                    at: 2,
                },
            ),
            (
                "*",
                SchemaError::Unescaped {
                    token: "*".into(),
                    at: 0,
                },
            ),
            (
                "é",
                SchemaError::Unescaped {
                    token: "é".into(),
                    at: 0,
                },
            ),
            (
                "%C3",
                SchemaError::NotUtf8 {
                    token: "%C3".into(),
                },
            ),
        ] {
            assert_eq!(decode_id(token), Err(expected), "{token}");
        }
    }

    #[test]
    fn what_is_not_ours_is_not_parsed() {
        for topic in [
            "other/gw/alerts",
            "edge/gw",
            "edge//alerts",
            "edge/gw/something",
            "edge/gw/alerts/more",
            "edge/gw/devices/d/events/more",
            "edge/gw/devices//events",
            "edge/gw/devices/d/readings",
            "edgy/gw/alerts",
            "edge",
        ] {
            assert_eq!(Address::from_mqtt_topic("edge", topic), None, "{topic}");
        }
        for subject in [
            "other.gw.alerts",
            "edge.gw",
            "edge..alerts",
            "edge.gw.something",
            "edge.gw.alerts.more",
            "edge.gw.devices.d.events.more",
            "edge.gw.devices..events",
            "edge.gw%2e1.alerts",
            "edge.gw%2.alerts",
            "edge.gw.devices.d%ZZ.events",
            "edge.*.alerts",
            "edgy.gw.alerts",
            "edge",
        ] {
            assert_eq!(
                Address::from_nats_subject("edge", subject),
                None,
                "{subject}"
            );
        }
        for key in [
            "gw",
            ".alerts",
            "gw.other",
            "gw.devices.d",
            "gw.devices.d.events.x",
            "gw%zz.status",
            "",
        ] {
            assert_eq!(Address::from_amqp_routing_key(key), None, "{key}");
        }
    }

    #[test]
    fn the_amqp_bindings_cover_every_lane() {
        // `*` is one word: each rendered key matches exactly one binding, whatever its ids.
        fn matches(pattern: &str, key: &str) -> bool {
            let (pattern, key): (Vec<_>, Vec<_>) =
                (pattern.split('.').collect(), key.split('.').collect());
            pattern.len() == key.len() && pattern.iter().zip(&key).all(|(p, k)| *p == "*" || p == k)
        }
        for address in all_lanes("gw.1", "dev.2") {
            let key = address.amqp_routing_key();
            let bound = AMQP_BINDINGS
                .iter()
                .filter(|pattern| matches(pattern, &key));
            assert_eq!(bound.count(), 1, "{key}");
        }
    }

    fn id() -> impl Strategy<Value = String> {
        prop_oneof!["[A-Za-z0-9._-]{1,24}", ".+"]
    }

    proptest! {
        #[test]
        fn any_id_round_trips(id in any::<String>()) {
            let encoded = encode_id(&id);
            prop_assert!(encoded.bytes().all(|byte| is_plain(byte) || byte == b'%'));
            prop_assert!(!encoded.contains('.'));
            if id.is_empty() {
                prop_assert_eq!(decode_id(&encoded), Err(SchemaError::EmptyId));
            } else {
                prop_assert_eq!(decode_id(&encoded).unwrap(), id.as_str());
            }
        }

        #[test]
        fn any_address_round_trips(gateway in id(), device in id()) {
            for address in all_lanes(&gateway, &device) {
                let subject = address.nats_subject("edge");
                prop_assert_eq!(
                    Address::from_nats_subject("edge", &subject),
                    Some(address.clone())
                );
                let key = address.amqp_routing_key();
                prop_assert_eq!(Address::from_amqp_routing_key(&key), Some(address.clone()));
                // MQTT ids appear as they are: round trip for the ids the contract allows.
                if !gateway.contains(['/', '+', '#']) && !device.contains(['/', '+', '#']) {
                    let topic = address.mqtt_topic("edge");
                    prop_assert_eq!(Address::from_mqtt_topic("edge", &topic), Some(address));
                }
            }
        }

        #[test]
        fn decoding_never_panics_and_decoded_ids_encode_back(token in "[A-Za-z0-9%._*>#-]{0,12}") {
            if let Ok(id) = decode_id(&token) {
                prop_assert_eq!(encode_id(&id), token.as_str());
            }
        }
    }
}
