//! The source `edge-alerts` consumes from, as given on the command line (`--source URL` and
//! the options of its backbone), validated into a [`SourceConfig`] that cannot be invalid.
//!
//! | URL | backbone |
//! |---|---|
//! | `mqtt://[user:pass@]host:port`, `mqtts://…` (TLS) | MQTT (what `--host`/`--port` say when `--source` is not given) |
//! | `nats://[user:pass@]host:port`, `tls://…` (TLS) | NATS JetStream |
//! | `amqp://user:pass@host:port/vhost`, `amqps://…` (TLS) | AMQP 0.9.1 (RabbitMQ); the vhost URL-encoded (`%2f` for `/`), optional |
//! | `kafka://[user:pass@]host:port[,host:port…]`, `kafka+tls://…` (TLS) | Apache Kafka; a login is SASL with `--sasl-mechanism` |
//!
//! Credentials in a URL are percent-decoded (`%40` for `@`). Over TLS the broker's certificate
//! is checked against `--ca-file`, or the system's trust roots ([`crate::tls`]; for Kafka,
//! librdkafka's OpenSSL).

use std::path::PathBuf;
use std::time::Duration;

/// The group that shares the work when none is named (NATS durable consumer, AMQP queue).
pub const DEFAULT_GROUP: &str = "edge-alerts";

/// Why the source given on the command line cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The URL's scheme is none of `mqtt`, `mqtts`, `nats`, `tls`, `amqp`, `amqps`, `kafka`,
    /// `kafka+tls`.
    #[error(
        "failed to read source `{0}`: expected mqtt://, mqtts://, nats://, tls://, amqp://, amqps://, kafka:// or kafka+tls://"
    )]
    Scheme(String),
    /// The URL has no host, or a port that is not a number.
    #[error("failed to read source `{0}`: expected host:port")]
    Address(String),
    /// A percent-escape in the user name or password is malformed.
    #[error("failed to read source `{0}`: malformed %-escape in the credentials")]
    Credentials(String),
    /// A duration option is not a number with a unit (`ms`, `s`, `m`, `h`).
    #[error("failed to read duration `{0}`: expected e.g. 500ms, 30s, 5m")]
    Duration(String),
    /// An option that must not be empty is.
    #[error("--{0} must not be empty")]
    Empty(&'static str),
    /// A Kafka login without its SASL mechanism, or a mechanism Kafka does not have.
    #[error(
        "failed to read source `{0}`: a Kafka login needs --sasl-mechanism PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )]
    Sasl(String),
}

/// The options beside the URL; each backbone takes the ones it needs.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// MQTT: the gateways' `topic_prefix`.
    pub prefix: String,
    /// NATS: the gateways' subject prefix.
    pub subject_prefix: String,
    /// NATS: the JetStream stream.
    pub stream: String,
    /// NATS: how long a delivery may stay unacknowledged before it is delivered again.
    pub ack_wait: Duration,
    /// AMQP: the topic exchange the gateways publish to.
    pub exchange: String,
    /// The group: MQTT shared subscription (none: not shared), NATS durable consumer, AMQP
    /// queue (both [`DEFAULT_GROUP`] when none).
    pub group: Option<String>,
    /// MQTT: the client id, unique per instance.
    pub client_id: String,
    /// The CA certificates that a TLS broker's certificate is checked against (none: the
    /// system's).
    pub ca_file: Option<PathBuf>,
    /// Kafka: the topics of events, alerts and status, as the gateways' uplink names them.
    pub kafka_topics: [String; 3],
    /// Kafka: the SASL mechanism of the URL's login.
    pub sasl_mechanism: Option<String>,
}

/// Where to consume from, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// An MQTT broker.
    Mqtt(MqttSourceConfig),
    /// A NATS server with JetStream.
    Nats(NatsSourceConfig),
    /// An AMQP 0.9.1 broker.
    Amqp(AmqpSourceConfig),
    /// An Apache Kafka cluster.
    Kafka(KafkaSourceConfig),
}

/// An Apache Kafka source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSourceConfig {
    /// The bootstrap brokers, `host:port,…`.
    pub brokers: String,
    /// `kafka+tls://`: TLS, checked against `ca_file` (or the system's roots).
    pub tls: bool,
    /// The CA certificates for TLS.
    pub ca_file: Option<PathBuf>,
    /// The SASL login and its mechanism, when the URL has a login.
    pub sasl: Option<(String, String, String)>,
    /// The consumer group the instances share.
    pub group: String,
    /// The topics of events, alerts and status.
    pub topics: [String; 3],
}

/// An MQTT source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSourceConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The gateways' `topic_prefix`.
    pub prefix: String,
    /// Share the subscription with other instances in this group.
    pub group: Option<String>,
    /// MQTT client id (unique per instance).
    pub client_id: String,
    /// User name and password, when the URL has them.
    pub credentials: Option<(String, String)>,
    /// `mqtts://`: TLS, checked against `ca_file` (or the system's roots).
    pub tls: bool,
    /// The CA certificates for TLS.
    pub ca_file: Option<PathBuf>,
}

/// A NATS JetStream source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSourceConfig {
    /// `nats://host:port`, without credentials.
    pub server: String,
    /// User name and password, when the URL has them.
    pub credentials: Option<(String, String)>,
    /// The stream (created if missing, with subjects `{subject_prefix}.>`).
    pub stream: String,
    /// The gateways' subject prefix.
    pub subject_prefix: String,
    /// The durable consumer's name, shared by the instances of the group.
    pub durable: String,
    /// How long a delivery may stay unacknowledged before the server delivers it again.
    pub ack_wait: Duration,
    /// The CA certificates for `tls://`.
    pub ca_file: Option<PathBuf>,
}

/// An AMQP source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpSourceConfig {
    /// `amqp://user:pass@host:port/vhost`, as lapin takes it.
    pub uri: String,
    /// The topic exchange (declared if missing: durable).
    pub exchange: String,
    /// The durable queue, shared by the instances of the group.
    pub queue: String,
    /// The CA certificates for `amqps://` (added to the system's roots).
    pub ca_file: Option<PathBuf>,
}

impl SourceConfig {
    /// The configuration for `url` with `options`.
    pub fn from_url(url: &str, options: &SourceOptions) -> Result<Self, SourceError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| SourceError::Scheme(redact(url)))?;
        let group = || {
            options
                .group
                .clone()
                .unwrap_or_else(|| DEFAULT_GROUP.to_owned())
        };
        let non_empty = |value: &str, name: &'static str| {
            if value.is_empty() {
                Err(SourceError::Empty(name))
            } else {
                Ok(())
            }
        };
        non_empty(&group(), "group")?;
        let ca_file = options.ca_file.clone();
        match scheme {
            "mqtt" | "mqtts" => {
                let (credentials, address) = credentials(url, rest.trim_end_matches('/'))?;
                let (host, port) =
                    host_port(address).ok_or_else(|| SourceError::Address(redact(url)))?;
                non_empty(&options.prefix, "prefix")?;
                let tls = scheme == "mqtts";
                Ok(Self::Mqtt(MqttSourceConfig {
                    host,
                    port: port.unwrap_or(if tls { 8883 } else { 1883 }),
                    prefix: options.prefix.clone(),
                    group: options.group.clone(),
                    client_id: options.client_id.clone(),
                    credentials,
                    tls,
                    ca_file,
                }))
            }
            "nats" | "tls" => {
                let (credentials, address) = credentials(url, rest.trim_end_matches('/'))?;
                let (host, port) =
                    host_port(address).ok_or_else(|| SourceError::Address(redact(url)))?;
                non_empty(&options.stream, "stream")?;
                non_empty(&options.subject_prefix, "subject-prefix")?;
                Ok(Self::Nats(NatsSourceConfig {
                    server: format!("{scheme}://{host}:{}", port.unwrap_or(4222)),
                    credentials,
                    stream: options.stream.clone(),
                    subject_prefix: options.subject_prefix.clone(),
                    durable: group(),
                    ack_wait: options.ack_wait,
                    ca_file,
                }))
            }
            "amqp" | "amqps" => {
                let address = rest.split_once('/').map_or(rest, |(address, _)| address);
                let address = address
                    .rsplit_once('@')
                    .map_or(address, |(_, address)| address);
                host_port(address).ok_or_else(|| SourceError::Address(redact(url)))?;
                non_empty(&options.exchange, "exchange")?;
                Ok(Self::Amqp(AmqpSourceConfig {
                    uri: url.to_owned(),
                    exchange: options.exchange.clone(),
                    queue: group(),
                    ca_file,
                }))
            }
            "kafka" | "kafka+tls" => {
                let (credentials, addresses) = credentials(url, rest.trim_end_matches('/'))?;
                let mut brokers = Vec::new();
                for address in addresses.split(',') {
                    let (host, port) =
                        host_port(address).ok_or_else(|| SourceError::Address(redact(url)))?;
                    brokers.push(format!("{host}:{}", port.unwrap_or(9092)));
                }
                for topic in &options.kafka_topics {
                    non_empty(topic, "topic")?;
                }
                let sasl = match (credentials, &options.sasl_mechanism) {
                    (None, _) => None,
                    (Some((user, password)), Some(mechanism))
                        if ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
                            .contains(&mechanism.as_str()) =>
                    {
                        Some((mechanism.clone(), user, password))
                    }
                    (Some(_), _) => return Err(SourceError::Sasl(redact(url))),
                };
                Ok(Self::Kafka(KafkaSourceConfig {
                    brokers: brokers.join(","),
                    tls: scheme == "kafka+tls",
                    ca_file,
                    sasl,
                    group: group(),
                    topics: options.kafka_topics.clone(),
                }))
            }
            _ => Err(SourceError::Scheme(redact(url))),
        }
    }

    /// Whether the broker is reached over TLS (`mqtts://`, `tls://`, `amqps://`).
    pub fn uses_tls(&self) -> bool {
        match self {
            Self::Mqtt(mqtt) => mqtt.tls,
            Self::Nats(nats) => nats.server.starts_with("tls://"),
            Self::Amqp(amqp) => amqp.uri.starts_with("amqps://"),
            Self::Kafka(kafka) => kafka.tls,
        }
    }

    /// The broker, for the logs: without credentials.
    pub fn broker(&self) -> String {
        match self {
            Self::Mqtt(mqtt) => format!(
                "{}://{}:{}",
                if mqtt.tls { "mqtts" } else { "mqtt" },
                mqtt.host,
                mqtt.port
            ),
            Self::Nats(nats) => nats.server.clone(),
            Self::Amqp(amqp) => redact(&amqp.uri),
            Self::Kafka(kafka) => format!(
                "{}://{}",
                if kafka.tls { "kafka+tls" } else { "kafka" },
                kafka.brokers
            ),
        }
    }
}

/// A user name and password.
type Login = (String, String);

/// The credentials before the `@` of an authority (`user:pass@host:port`), percent-decoded,
/// and the address after it.
fn credentials<'a>(url: &str, authority: &'a str) -> Result<(Option<Login>, &'a str), SourceError> {
    match authority.rsplit_once('@') {
        Some((credentials, address)) => {
            let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
            let decode = |text: &str| {
                percent_decode(text).ok_or_else(|| SourceError::Credentials(redact(url)))
            };
            Ok((Some((decode(user)?, decode(password)?)), address))
        }
        None => Ok((None, authority)),
    }
}

/// `host[:port]`, the host non-empty (an IPv6 address in brackets).
fn host_port(address: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = match address.rsplit_once(':') {
        // `host:4222` or `[::1]:4222`; a bare IPv6 address has colons but no port.
        Some((host, port)) if host.ends_with(']') || !host.contains(':') => {
            (host, Some(port.parse().ok()?))
        }
        _ => (address, None),
    };
    if host.is_empty() || host.contains(['/', '@', '?', '#']) {
        return None;
    }
    Some((host.to_owned(), port))
}

/// `%XX` escapes decoded; `None` for a malformed one or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        if byte == b'%' {
            let hex = text.get(at + 1..at + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(byte);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, None), |(a, p)| (a, Some(p)));
    let authority = match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{credentials}@{host}"),
        },
        None => authority.to_owned(),
    };
    match path {
        Some(path) => format!("{scheme}://{authority}/{path}"),
        None => format!("{scheme}://{authority}"),
    }
}

/// A duration as people write it: `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, SourceError> {
    let bad = || SourceError::Duration(text.to_owned());
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    if duration.is_zero() {
        return Err(bad());
    }
    Ok(duration)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn options() -> SourceOptions {
        SourceOptions {
            prefix: "edge".into(),
            subject_prefix: "edge".into(),
            stream: "EDGE".into(),
            ack_wait: Duration::from_secs(30),
            exchange: "edge".into(),
            group: None,
            client_id: "edge-alerts".into(),
            ca_file: None,
            kafka_topics: [
                "edge.events".into(),
                "edge.alerts".into(),
                "edge.status".into(),
            ],
            sasl_mechanism: None,
        }
    }

    #[test]
    fn each_backbone_is_read_from_its_url() {
        assert_eq!(
            SourceConfig::from_url("mqtt://broker.example.com:1884", &options()).unwrap(),
            SourceConfig::Mqtt(MqttSourceConfig {
                host: "broker.example.com".into(),
                port: 1884,
                prefix: "edge".into(),
                group: None,
                client_id: "edge-alerts".into(),
                credentials: None,
                tls: false,
                ca_file: None,
            })
        );
        let with_ca = SourceOptions {
            ca_file: Some("/etc/edge/ca.pem".into()),
            ..options()
        };
        assert_eq!(
            SourceConfig::from_url("mqtts://alerts:s%3Acret@broker.example.com", &with_ca).unwrap(),
            SourceConfig::Mqtt(MqttSourceConfig {
                host: "broker.example.com".into(),
                port: 8883,
                prefix: "edge".into(),
                group: None,
                client_id: "edge-alerts".into(),
                credentials: Some(("alerts".into(), "s:cret".into())),
                tls: true,
                ca_file: Some("/etc/edge/ca.pem".into()),
            })
        );
        assert_eq!(
            SourceConfig::from_url("nats://alerts:p%40ss:w@127.0.0.1:4222", &options()).unwrap(),
            SourceConfig::Nats(NatsSourceConfig {
                server: "nats://127.0.0.1:4222".into(),
                credentials: Some(("alerts".into(), "p@ss:w".into())),
                stream: "EDGE".into(),
                subject_prefix: "edge".into(),
                durable: "edge-alerts".into(),
                ack_wait: Duration::from_secs(30),
                ca_file: None,
            })
        );
        let grouped = SourceOptions {
            group: Some("alerts".into()),
            ..options()
        };
        let SourceConfig::Nats(nats) = SourceConfig::from_url("nats://nats", &grouped).unwrap()
        else {
            panic!("not NATS");
        };
        assert_eq!(
            (nats.server.as_str(), nats.durable.as_str()),
            ("nats://nats:4222", "alerts")
        );
        assert_eq!(
            SourceConfig::from_url("amqp://guest:guest@127.0.0.1:5672/%2f", &grouped).unwrap(),
            SourceConfig::Amqp(AmqpSourceConfig {
                uri: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
                exchange: "edge".into(),
                queue: "alerts".into(),
                ca_file: None,
            })
        );
        assert!(SourceConfig::from_url("amqp://rabbit", &options()).is_ok());
    }

    #[test]
    fn bad_sources_are_refused_without_showing_the_password() {
        for (url, expected) in [
            (
                "pulsar://k:6650",
                SourceError::Scheme("pulsar://k:6650".into()),
            ),
            (
                "127.0.0.1:1883",
                SourceError::Scheme("127.0.0.1:1883".into()),
            ),
            ("mqtt://:1883", SourceError::Address("mqtt://:1883".into())),
            (
                "mqtt://host:port",
                SourceError::Address("mqtt://host:port".into()),
            ),
            (
                "nats://u:secret@:4222",
                SourceError::Address("nats://u:***@:4222".into()),
            ),
            (
                "mqtt://u:secret@:1883",
                SourceError::Address("mqtt://u:***@:1883".into()),
            ),
            (
                "nats://u:se%zzt@h:4222",
                SourceError::Credentials("nats://u:***@h:4222".into()),
            ),
            (
                "amqp://u:secret@/vhost",
                SourceError::Address("amqp://u:***@/vhost".into()),
            ),
        ] {
            let error = SourceConfig::from_url(url, &options()).unwrap_err();
            assert_eq!(error, expected, "{url}");
            assert!(!error.to_string().contains("secret"), "{error}");
        }
        let nameless = SourceOptions {
            group: Some(String::new()),
            ..options()
        };
        assert_eq!(
            SourceConfig::from_url("nats://n:4222", &nameless),
            Err(SourceError::Empty("group"))
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        for bad in ["", "30", "s", "0s", "1.5s", "-1s", "3 s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kafka_is_read_from_its_brokers_with_a_sasl_login() {
        assert_eq!(
            SourceConfig::from_url("kafka://k1:9093,[::1],k3", &options()).unwrap(),
            SourceConfig::Kafka(KafkaSourceConfig {
                brokers: "k1:9093,[::1]:9092,k3:9092".into(),
                tls: false,
                ca_file: None,
                sasl: None,
                group: "edge-alerts".into(),
                topics: [
                    "edge.events".into(),
                    "edge.alerts".into(),
                    "edge.status".into()
                ],
            })
        );
        let mut with_login = options();
        with_login.sasl_mechanism = Some("SCRAM-SHA-512".into());
        with_login.group = Some("alerting".into());
        let Ok(SourceConfig::Kafka(kafka)) =
            SourceConfig::from_url("kafka+tls://alerts:p%40ss@k1:9093", &with_login)
        else {
            panic!("a kafka source");
        };
        assert!(kafka.tls);
        assert_eq!(kafka.group, "alerting");
        assert_eq!(
            kafka.sasl,
            Some(("SCRAM-SHA-512".into(), "alerts".into(), "p@ss".into()))
        );
        assert_eq!(
            SourceConfig::Kafka(kafka).broker(),
            "kafka+tls://k1:9093",
            "the log shows no password"
        );
        let refused = SourceConfig::from_url("kafka://alerts:secret@k1", &options());
        assert_eq!(
            refused,
            Err(SourceError::Sasl("kafka://alerts:***@k1".into()))
        );
        assert!(matches!(
            SourceConfig::from_url("kafka://k1:x", &options()),
            Err(SourceError::Address(_))
        ));
    }
}
