//! The configuration file as written: serde structs mirroring the TOML, before any checking.
//!
//! Every key is optional here, even the required ones, and values that need checking beyond their
//! TOML type (durations, sizes, addresses, names, integers with a range) keep their text and
//! span, so that `validate` can report *all* missing and bad values at once, each at its place.
//! Unknown keys are not refused by serde (that would stop at the first one): they are collected
//! by `serde_ignored` in `load`.

use serde::Deserialize;
use toml::Spanned;

/// A string value and where it is.
pub(super) type Text = Spanned<String>;
/// An integer value and where it is; ranges are checked by `validate`.
pub(super) type Integer = Spanned<i64>;

/// The whole document.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub(super) struct RawConfig {
    pub(super) gateway: Option<Spanned<RawGateway>>,
    pub(super) devices: Option<Spanned<RawDevices>>,
    /// The first release's name for `[devices]`, still read.
    pub(super) local_broker: Option<Spanned<RawDevices>>,
    pub(super) serial: Vec<Spanned<RawSerial>>,
    pub(super) uplink: Option<Spanned<RawUplinks>>,
    pub(super) journal: RawJournal,
    pub(super) admin: RawAdmin,
    pub(super) rule: Vec<Spanned<RawRule>>,
}

/// A number value and where it is.
pub(super) type Number = Spanned<f64>;

/// One `[[rule]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub(super) struct RawRule {
    pub(super) name: Option<Text>,
    pub(super) devices: Option<Text>,
    pub(super) reading: Option<Text>,
    pub(super) above: Option<Number>,
    pub(super) clear_below: Option<Number>,
    pub(super) below: Option<Number>,
    pub(super) clear_above: Option<Number>,
    #[serde(rename = "for")]
    pub(super) hold: Option<Text>,
    pub(super) window: Option<Text>,
    pub(super) aggregate: Option<Text>,
    pub(super) silent_for: Option<Text>,
    pub(super) severity: Option<Text>,
    pub(super) cooldown: Option<Text>,
    pub(super) labels: Option<Spanned<std::collections::BTreeMap<String, String>>>,
}

/// `[gateway]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub(super) struct RawGateway {
    pub(super) id: Option<Text>,
    pub(super) data_dir: Option<Text>,
    pub(super) worker_threads: Option<Integer>,
}

/// `[devices]` (or `[local_broker]`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub(super) struct RawDevices {
    pub(super) listen: Option<Text>,
    pub(super) users: Vec<Spanned<RawDeviceUser>>,
    pub(super) max_connections: Option<Integer>,
    pub(super) allow_anonymous: Option<Spanned<bool>>,
    pub(super) tls: Option<Spanned<RawDeviceTls>>,
}

/// `devices.tls`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub(super) struct RawDeviceTls {
    pub(super) cert_file: Option<Text>,
    pub(super) key_file: Option<Text>,
    pub(super) client_ca_file: Option<Text>,
}

/// One entry of `devices.users`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub(super) struct RawDeviceUser {
    pub(super) name: Option<Text>,
    pub(super) password_file: Option<Text>,
    pub(super) devices: Option<Spanned<Vec<Text>>>,
}

/// One `[[serial]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub(super) struct RawSerial {
    pub(super) port: Option<Text>,
    pub(super) baud: Option<Integer>,
}

/// `[uplink]` (one destination, as the first release wrote it) or `[[uplink]]` (several).
#[derive(Debug)]
pub(super) enum RawUplinks {
    /// A single `[uplink]` table.
    One(Box<RawUplink>),
    /// `[[uplink]]` tables.
    Many(Vec<Spanned<RawUplink>>),
}

impl<'de> Deserialize<'de> for RawUplinks {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawUplinks;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a table ([uplink]) or an array of tables ([[uplink]])")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawUplinks, A::Error> {
                RawUplink::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|uplink| RawUplinks::One(Box::new(uplink)))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawUplinks, A::Error> {
                let mut uplinks = Vec::new();
                while let Some(uplink) = seq.next_element()? {
                    uplinks.push(uplink);
                }
                Ok(RawUplinks::Many(uplinks))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// One `[[uplink]]`, or `[uplink]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub(super) struct RawUplink {
    pub(super) name: Option<Text>,
    #[serde(rename = "type")]
    pub(super) kind: Option<Text>,
    pub(super) url: Option<Text>,
    pub(super) lanes: Option<Spanned<Vec<Text>>>,
    pub(super) devices: Option<Text>,
    pub(super) ack_timeout: Option<Text>,
    pub(super) subject_prefix: Option<Text>,
    pub(super) stream: Option<Text>,
    pub(super) exchange: Option<Text>,
    pub(super) brokers: Option<Spanned<Vec<Text>>>,
    pub(super) tls: Option<Spanned<bool>>,
    pub(super) topic: Option<Text>,
    pub(super) alerts_topic: Option<Text>,
    pub(super) status_topic: Option<Text>,
    pub(super) sasl_mechanism: Option<Text>,
    pub(super) max_message_bytes: Option<Integer>,
    pub(super) event_bus: Option<Text>,
    pub(super) region: Option<Text>,
    pub(super) endpoint: Option<Text>,
    pub(super) token_file: Option<Text>,
    pub(super) credentials_file: Option<Text>,
    pub(super) topic_prefix: Option<Text>,
    pub(super) client_id: Option<Text>,
    pub(super) ca_file: Option<Text>,
    pub(super) client_cert_file: Option<Text>,
    pub(super) client_key_file: Option<Text>,
    pub(super) username: Option<Text>,
    pub(super) password_file: Option<Text>,
    pub(super) keep_alive: Option<Text>,
    pub(super) max_inflight: Option<Integer>,
    pub(super) reconnect_min: Option<Text>,
    pub(super) reconnect_max: Option<Text>,
    pub(super) batch: Option<Spanned<RawBatch>>,
}

/// An uplink's `batch = { ... }`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub(super) struct RawBatch {
    pub(super) max_events: Option<Integer>,
    pub(super) max_bytes: Option<Text>,
    pub(super) max_delay: Option<Text>,
}

/// `[journal]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub(super) struct RawJournal {
    pub(super) max_size: Option<Text>,
    pub(super) max_age: Option<Text>,
    pub(super) when_full: Option<Text>,
    pub(super) synchronous: Option<Text>,
    pub(super) commit_interval: Option<Text>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a table")]
pub(super) struct RawAdmin {
    pub(super) listen: Option<Text>,
}
