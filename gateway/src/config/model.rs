//! The validated configuration: every value here has been checked, so the rest of the gateway
//! uses it without re-checking. Field docs are the reference; `docs/configuration.md` mirrors them.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Default `[gateway] data_dir`.
const DEFAULT_DATA_DIR: &str = "/var/lib/edge-gateway";
/// `gateway.worker_threads` by default.
const DEFAULT_WORKER_THREADS: usize = 1;
/// The most `gateway.worker_threads` allowed.
pub(super) const MAX_WORKER_THREADS: usize = 64;
/// Default `[uplink] topic_prefix`.
const DEFAULT_TOPIC_PREFIX: &str = "edge";

/// The whole gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[gateway]`: who this gateway is and where it keeps its state.
    pub gateway: GatewayConfig,
    /// `[devices]` (`[local_broker]` in the first release): the MQTT endpoint devices publish to.
    pub devices: DevicesConfig,
    /// `[[serial]]`: serial ports devices are attached to; none by default.
    pub serial: Vec<SerialConfig>,
    /// `[[uplink]]` (or a single `[uplink]`): the destinations events and alerts are forwarded
    /// to, at least one; names unique.
    pub uplinks: Vec<UplinkConfig>,
    /// `[journal]`: the SQLite journal that holds events until the uplink acknowledges them.
    pub journal: JournalConfig,
    /// `[admin]`: the admin HTTP surface (health, metrics).
    pub admin: AdminConfig,
    /// `[[rule]]`: alert rules, evaluated on every event; none by default.
    pub rules: Vec<crate::rules::Rule>,
    /// What works but should change (a deprecated name, say), each as `file:line:col: warning:
    /// message`: `check-config` prints them and the gateway logs them at start.
    pub warnings: Vec<String>,
}

impl Config {
    /// A configuration with the two required values and every other value at its default.
    pub fn new(gateway_id: impl Into<String>, uplink_url: UplinkUrl) -> Self {
        let gateway = GatewayConfig::new(gateway_id);
        let uplink = UplinkConfig::new(uplink_url, &gateway.id);
        Self {
            gateway,
            devices: DevicesConfig::default(),
            serial: Vec::new(),
            uplinks: vec![uplink],
            journal: JournalConfig::default(),
            admin: AdminConfig::default(),
            rules: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Where the journal database lives: `{data_dir}/journal.db`.
    pub fn journal_path(&self) -> PathBuf {
        self.gateway.data_dir.join("journal.db")
    }

    /// The destinations as the journal knows them, in order.
    pub fn destination_routes(&self) -> Vec<crate::journal::DestinationRoute> {
        self.uplinks.iter().map(UplinkConfig::route).collect()
    }
}

/// `[gateway]`.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `id` (required): 1 to 64 of `A-Z a-z 0-9 . _ -`; names this gateway in uplink topics and
    /// in the default uplink client id.
    pub id: String,
    /// `data_dir` (default `/var/lib/edge-gateway`): holds `journal.db`.
    pub data_dir: PathBuf,
    /// `worker_threads` (1 to 64, default 1): threads that carry the network: device
    /// connections, uplinks, the admin server. The journal's writer and reader and the rule
    /// engine have threads of their own besides. One thread wakes least per event (about a
    /// sixth less CPU per event than two at a steady 1 000 events/s, see docs/benchmarks.md);
    /// more forward more at saturation.
    pub worker_threads: usize,
}

impl GatewayConfig {
    /// A gateway called `id` with the default data directory.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            worker_threads: DEFAULT_WORKER_THREADS,
        }
    }
}

/// `[devices]`: the MQTT endpoint devices connect to.
#[derive(Debug, Clone)]
pub struct DevicesConfig {
    /// `listen` (default `0.0.0.0:1883`): `ip:port` to accept device connections on.
    pub listen: SocketAddr,
    /// `users` (default none): device logins, names unique. With none, devices connect without
    /// a login and may publish as any device: allowed only on a loopback address, or with
    /// `allow_anonymous = true`.
    pub users: Vec<DeviceUser>,
    /// `max_connections` (default 1000, at least 1): device connections accepted at once.
    pub max_connections: usize,
    /// `allow_anonymous` (default false): whether devices may connect without a login while
    /// listening beyond loopback. Says out loud that anyone who reaches the port may publish as
    /// any device; the gateway logs a warning at start.
    pub allow_anonymous: bool,
    /// `tls` (default none): TLS on the device endpoint.
    pub tls: Option<DeviceTls>,
}

/// `devices.tls = { cert_file, key_file, client_ca_file }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTls {
    /// `cert_file` (required): the gateway's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// `key_file` (required): its private key (PEM).
    pub key_file: PathBuf,
    /// `client_ca_file` (optional): CA certificates (PEM) that devices' client certificates must
    /// chain to. With it every device presents a certificate, and the certificate's name is its
    /// login.
    pub client_ca_file: Option<PathBuf>,
}

impl DevicesConfig {
    /// Whether devices connect without a login (and may speak for any device): no users, and
    /// no client certificates.
    pub fn anonymous(&self) -> bool {
        self.users.is_empty()
            && self
                .tls
                .as_ref()
                .is_none_or(|tls| tls.client_ca_file.is_none())
    }
}

impl Default for DevicesConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 1883)),
            users: Vec::new(),
            max_connections: 1000,
            allow_anonymous: false,
            tls: None,
        }
    }
}

/// One device login: `{ name = "...", password_file = "...", devices = ["..."] }`.
#[derive(Debug, Clone)]
pub struct DeviceUser {
    /// `name` (required): the MQTT username.
    pub name: String,
    /// `password_file` (required): a file holding the password, so that it stays out of the
    /// configuration; read at start-up.
    pub password_file: PathBuf,
    /// `devices` (default: the login's own name): the devices this login may publish for, ids or
    /// globs. A publish for any other device is refused.
    pub devices: Vec<crate::rules::DevicePattern>,
}

/// One `[[serial]]` port.
#[derive(Debug, Clone)]
pub struct SerialConfig {
    /// `port` (required): the device path, preferably `/dev/serial/by-id/...`, which survives
    /// re-plugging; each port at most once.
    pub port: PathBuf,
    /// `baud` (default 115200, at least 1).
    pub baud: u32,
}

impl SerialConfig {
    /// `port` at the default baud rate.
    pub fn new(port: impl Into<PathBuf>) -> Self {
        Self {
            port: port.into(),
            baud: 115_200,
        }
    }
}

/// Which protocol an uplink speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkType {
    /// `mqtt`: MQTT 3.1.1 at QoS 1, confirmed by PUBACK.
    Mqtt,
    /// `nats`: NATS JetStream, confirmed by the stream's PubAck.
    Nats,
    /// `amqp`: AMQP 0-9-1 (RabbitMQ), confirmed by publisher confirms.
    Amqp,
    /// `kafka`: Apache Kafka, confirmed by the idempotent producer's delivery reports.
    Kafka,
    /// `eventbridge`: AWS EventBridge, confirmed by each entry's result in `PutEvents`.
    EventBridge,
}

impl UplinkType {
    /// The name in configuration (`type`), and the default uplink name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mqtt => "mqtt",
            Self::Nats => "nats",
            Self::Amqp => "amqp",
            Self::Kafka => "kafka",
            Self::EventBridge => "eventbridge",
        }
    }

    /// Whether the destination is given by `url` (Kafka takes a list of `brokers`, EventBridge
    /// an `event_bus` and a `region`).
    pub fn takes_url(self) -> bool {
        !matches!(self, Self::Kafka | Self::EventBridge)
    }
}

/// `sasl_mechanism` (kafka): how a Kafka login is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN`: the password itself (use it with TLS).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The name in configuration, which is Kafka's.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `lanes`: what an uplink carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lanes {
    /// `events`: device events.
    pub events: bool,
    /// `alerts`: alert transitions.
    pub alerts: bool,
    /// `status`: the gateway's `online` / `offline`.
    pub status: bool,
}

impl Default for Lanes {
    fn default() -> Self {
        Self {
            events: true,
            alerts: true,
            status: true,
        }
    }
}

/// One `[[uplink]]` (or the single `[uplink]`): a destination.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// `name` (default: the type, e.g. `mqtt`): names the uplink in metrics (`uplink` label) and
    /// logs, and keys its delivery position in the journal; 1 to 64 of `A-Z a-z 0-9 . _ -`,
    /// unique. Renaming an uplink makes it a new destination, which gets again what the journal
    /// holds.
    pub name: String,
    /// `type` (default: from the url's scheme): `mqtt`, `nats`, `amqp` or `kafka` (which has no
    /// url: it must be given).
    pub kind: UplinkType,
    /// `url` (required but for kafka): `mqtt://host[:port]` (1883), `mqtts://` (TLS, 8883);
    /// `nats://host[:port]` (4222), `tls://` (TLS, 4222); `amqp://host[:port][/vhost]` (5672),
    /// `amqps://` (TLS, 5671). For kafka: the first of `brokers`, with `tls`.
    pub url: UplinkUrl,
    /// `brokers` (kafka, required): the bootstrap brokers, `host[:port]` (9092), at least one.
    /// `tls = true` (kafka, default false) connects to them over TLS (`url.tls`).
    pub brokers: Vec<UplinkUrl>,
    /// `topic` (kafka, default `edge.events`): the topic of device events.
    pub topic: String,
    /// `alerts_topic` (kafka, default `edge.alerts`): the topic of alert transitions.
    pub alerts_topic: String,
    /// `status_topic` (kafka, default `edge.status`): the topic of the gateway's status.
    pub status_topic: String,
    /// `sasl_mechanism` (kafka): `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; required with
    /// `username`.
    pub sasl_mechanism: Option<SaslMechanism>,
    /// `max_message_bytes` (kafka, default 1000000, 1000 to 100000000): a record larger than
    /// this is refused for good (dead-lettered); set it to the topics' `max.message.bytes`.
    pub max_message_bytes: u32,
    /// `event_bus` (eventbridge, default `default`): the event bus, by name or ARN.
    pub event_bus: String,
    /// `region` (eventbridge, default: the standard chain's, e.g. `AWS_REGION`): the AWS region.
    pub region: Option<String>,
    /// `endpoint` (eventbridge, default: the region's): an `http://` or `https://` URL of a
    /// local or private endpoint.
    pub endpoint: Option<String>,
    /// `lanes` (default all): any of `events`, `alerts`, `status`.
    pub lanes: Lanes,
    /// `devices` (default all): a glob (`*`, `?`) of the device ids whose events and alerts
    /// this uplink takes.
    pub devices: Option<crate::rules::DevicePattern>,
    /// `ack_timeout` (default `30s`, above zero): when nothing in flight is confirmed for this
    /// long, the connection is dropped and the messages sent again.
    pub ack_timeout: Duration,
    /// `topic_prefix` (mqtt, default `edge`): events go to `{topic_prefix}/{gateway.id}/...`;
    /// not empty, no `+` or `#`, no leading or trailing `/`.
    pub topic_prefix: String,
    /// `subject_prefix` (nats, default `edge`): subjects are `{subject_prefix}.{gateway.id}...`;
    /// tokens of `A-Z a-z 0-9 _ -` separated by dots.
    pub subject_prefix: String,
    /// `stream` (nats, default `EDGE`): the JetStream stream; created with subjects
    /// `{subject_prefix}.>` if missing.
    pub stream: String,
    /// `exchange` (amqp, default `edge`): the durable topic exchange; declared if missing.
    pub exchange: String,
    /// `client_id` (mqtt, default `edge-gateway-{gateway.id}`): the MQTT client id; not empty.
    pub client_id: String,
    /// `token_file` (nats): a file holding a NATS token.
    pub token_file: Option<PathBuf>,
    /// `credentials_file` (nats): a NATS `.creds` file (JWT and nkey seed).
    pub credentials_file: Option<PathBuf>,
    /// `ca_file` (default: the system roots): PEM certificates to trust; TLS urls only.
    pub ca_file: Option<PathBuf>,
    /// `client_cert_file`: PEM client certificate for mutual TLS; `mqtts` only, together with
    /// `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// `client_key_file`: PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// `username` (default none): the login; not empty.
    pub username: Option<String>,
    /// `password_file`: a file holding the password; only with `username`.
    pub password_file: Option<PathBuf>,
    /// `keep_alive` (mqtt, default `30s`, from 5s to 65535s in whole seconds): MQTT keep-alive.
    pub keep_alive: Duration,
    /// `max_inflight` (default 256, 1 to 65535): messages awaiting their confirmation at once.
    pub max_inflight: u16,
    /// `reconnect_min` (default `100ms`, above zero): first delay before reconnecting; doubles
    /// on each failure.
    pub reconnect_min: Duration,
    /// `reconnect_max` (default `30s`, at least `reconnect_min`): the longest reconnect delay.
    pub reconnect_max: Duration,
    /// `batch = { max_events, max_bytes, max_delay }` (mqtt and kafka; default off): many events
    /// per message. Any of the keys turns it on; the others take their defaults.
    pub batch: Option<Batch>,
}

/// An uplink's `batch`: how many events one message may carry, and how long the first may wait
/// for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// `max_events` (default 100, 1 to 10000): events in one message at most.
    pub max_events: u32,
    /// `max_bytes` (default `64KiB`, from `1KiB` to `240KiB`): the events of one message, in
    /// bytes at most; an event larger than this goes alone.
    pub max_bytes: u32,
    /// `max_delay` (default `5ms`, at most `1s`): how long a batch that is not full may wait
    /// for more events while an earlier message is still unconfirmed; with nothing unconfirmed
    /// it goes at once.
    pub max_delay: Duration,
}

impl Batch {
    /// The largest `max_bytes`: an MQTT packet of the uplink is at most 256 KiB, topic
    /// included.
    pub const MAX_BYTES: u32 = 240 * 1024;
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            max_events: 100,
            max_bytes: 64 * 1024,
            max_delay: Duration::from_millis(5),
        }
    }
}

impl UplinkConfig {
    /// Where the uplink goes, for logs: its url, for kafka its brokers, for eventbridge its
    /// bus and region.
    pub fn endpoint(&self) -> String {
        match self.kind {
            UplinkType::EventBridge => format!(
                "eventbridge://{}/{}",
                self.endpoint
                    .as_deref()
                    .or(self.region.as_deref())
                    .unwrap_or("(region from the environment)"),
                self.event_bus
            ),
            UplinkType::Kafka => {
                let brokers: Vec<String> = self.brokers.iter().map(UplinkUrl::authority).collect();
                format!("{}://{}", self.url.scheme(), brokers.join(","))
            }
            _ => self.url.to_string(),
        }
    }

    /// The destination as the journal knows it.
    pub fn route(&self) -> crate::journal::DestinationRoute {
        crate::journal::DestinationRoute {
            name: self.name.clone(),
            alerts: self.lanes.alerts,
            events: self.lanes.events,
            devices: self.devices.clone(),
        }
    }

    /// The uplink to `url` with every optional value at its default; the client id is derived
    /// from `gateway_id`.
    pub fn new(url: UplinkUrl, gateway_id: &str) -> Self {
        Self {
            name: url.kind.as_str().to_owned(),
            kind: url.kind,
            brokers: vec![url.clone()],
            url,
            topic: "edge.events".to_owned(),
            alerts_topic: "edge.alerts".to_owned(),
            status_topic: "edge.status".to_owned(),
            sasl_mechanism: None,
            max_message_bytes: 1_000_000,
            event_bus: "default".to_owned(),
            region: None,
            endpoint: None,
            lanes: Lanes::default(),
            devices: None,
            ack_timeout: Duration::from_secs(30),
            topic_prefix: DEFAULT_TOPIC_PREFIX.to_owned(),
            subject_prefix: DEFAULT_TOPIC_PREFIX.to_owned(),
            stream: "EDGE".to_owned(),
            exchange: DEFAULT_TOPIC_PREFIX.to_owned(),
            client_id: format!("edge-gateway-{gateway_id}"),
            token_file: None,
            credentials_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            username: None,
            password_file: None,
            keep_alive: Duration::from_secs(30),
            max_inflight: 256,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(30),
            batch: None,
        }
    }

    /// Rows in flight at most: `max_inflight` messages; when an MQTT uplink batches, each of up
    /// to `batch.max_events` rows, but no more than [`Self::MAX_BATCHED_WINDOW`] rows in all (a
    /// Kafka producer batches records, each still its own message).
    pub fn window(&self) -> usize {
        let messages = usize::from(self.max_inflight.max(1));
        match (self.kind, self.batch) {
            (UplinkType::Mqtt, Some(batch)) => messages
                .saturating_mul(batch.max_events.max(1) as usize)
                .min(Self::MAX_BATCHED_WINDOW.max(messages)),
            _ => messages,
        }
    }

    /// Rows in flight at most on a batching MQTT uplink (unless `max_inflight` is larger): what
    /// the gateway holds in memory for it stays a few megabytes, and 40 full batches of 100 in
    /// flight keep a link busy.
    pub const MAX_BATCHED_WINDOW: usize = 4096;
}

/// A parsed uplink URL. `Display` gives it back with the port spelled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkUrl {
    /// The protocol its scheme names.
    pub kind: UplinkType,
    /// `true` for `mqtts://`, `tls://`, `amqps://`.
    pub tls: bool,
    /// A host name or IP address; an IPv6 address without its brackets.
    pub host: String,
    /// The port, the scheme's default if the URL named none.
    pub port: u16,
    /// The AMQP virtual host, decoded (`amqp://host/%2f` is `/`); `None` for the default.
    pub vhost: Option<String>,
}

impl UplinkUrl {
    /// The scheme as written in configuration.
    pub fn scheme(&self) -> &'static str {
        match (self.kind, self.tls) {
            (UplinkType::Mqtt, false) => "mqtt",
            (UplinkType::Mqtt, true) => "mqtts",
            (UplinkType::Nats, false) => "nats",
            (UplinkType::Nats, true) => "tls",
            (UplinkType::Amqp, false) => "amqp",
            (UplinkType::Amqp, true) => "amqps",
            (UplinkType::Kafka, false) => "kafka",
            (UplinkType::Kafka, true) => "kafka+tls",
            (UplinkType::EventBridge, _) => "eventbridge",
        }
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for UplinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme(), self.authority())?;
        if let Some(vhost) = &self.vhost {
            write!(f, "/{}", super::url::encode_vhost(vhost))?;
        }
        Ok(())
    }
}

/// `[journal]`: the durable buffer between devices and the uplink.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// `max_size` (default `512MiB`, at least `64KiB`): the journal never grows past this;
    /// `when_full` says what gives.
    pub max_size: u64,
    /// `max_age` (default `7d`, above zero): events older than this are dropped unsent.
    pub max_age: Duration,
    /// `when_full` (default `drop_oldest`).
    pub when_full: WhenFull,
    /// `synchronous` (default `full`).
    pub synchronous: Synchronous,
    /// `commit_interval` (default `0s`, at most `5s`): commits come at most this often, each
    /// taking everything that arrived meanwhile (fewer syncs and fewer bytes on flash, at the
    /// cost of acknowledgements that wait up to this long). Alerts do not wait.
    pub commit_interval: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            max_size: 512 << 20,
            max_age: Duration::from_secs(7 * 24 * 3600),
            when_full: WhenFull::default(),
            synchronous: Synchronous::default(),
            commit_interval: Duration::ZERO,
        }
    }
}

/// What to do with a new event when the journal is at `max_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// `drop_oldest`: evict the oldest events to make room; the newest data survives.
    #[default]
    DropOldest,
    /// `drop_newest`: refuse the new event; what is already buffered survives.
    DropNewest,
    /// `block`: hold the sources back (devices see their publishes stall) until there is room.
    Block,
}

/// SQLite `synchronous` mode of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `full`: every commit is synced to disk before devices are acked; survives power loss.
    #[default]
    Full,
    /// `normal`: synced at checkpoints; survives a crash of the process but the last commits
    /// may be lost on power loss. Fewer writes to flash.
    Normal,
}

/// `[admin]`: the admin HTTP surface.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `listen` (default `127.0.0.1:9100`): `ip:port` of the admin HTTP server.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9100)),
        }
    }
}
