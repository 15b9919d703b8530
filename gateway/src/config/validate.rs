//! Turns the file as written ([`RawConfig`]) into a [`Config`] that cannot be invalid.
//!
//! Pure: no file is opened here (password and certificate files are read by the components that
//! use them). Every problem is collected, not just the first, so one run of `check-config` shows
//! everything to fix; a bad value is replaced by its default only so that checking can go on, and
//! any problem means no `Config` is returned.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{Issue, UnitError};
use super::model::{
    AdminConfig, Batch, Config, DeviceTls, DeviceUser, DevicesConfig, GatewayConfig, JournalConfig,
    Lanes, MAX_WORKER_THREADS, SaslMechanism, SerialConfig, Synchronous, UplinkConfig, UplinkType,
    UplinkUrl, WhenFull,
};
use super::raw::{
    Integer, Number, RawAdmin, RawBatch, RawConfig, RawDevices, RawGateway, RawJournal, RawRule,
    RawSerial, RawUplink, RawUplinks, Text,
};
use super::units::{parse_duration, parse_size};
use super::url::{parse_broker, parse_uplink_url};
use crate::rules::{Aggregate, Bounds, Condition, DevicePattern, Rule, Severity, Window};

/// Longest gateway id.
const MAX_GATEWAY_ID_LEN: usize = 64;
/// Shortest uplink keep-alive: below this the cloud broker sees spurious disconnects on slow
/// links.
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// MQTT carries the keep-alive as 16-bit seconds.
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(65_535);
/// Upper bound of counts that are `u32` or `usize`: `usize` is 32 bits on some Raspberry Pis.
const U32_MAX: i64 = u32::MAX as i64;
/// Smallest journal: a few pages of SQLite plus room for events.
const MIN_JOURNAL_SIZE: u64 = 64 << 10;
/// The longest `journal.commit_interval`: a device waits that long for its acknowledgement.
const MAX_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// Checks everything in `raw`; returns the configuration with what deserves a warning (it works,
/// but should change), or every problem found.
pub(super) fn validate(raw: &RawConfig) -> Result<(Config, Vec<Issue>), Vec<Issue>> {
    let mut check = Checker::default();
    let gateway = check.gateway(raw);
    let devices = check.devices(raw);
    let serial = check.serial(&raw.serial);
    let uplinks = check.uplinks(raw, &gateway.id);
    let journal = check.journal(&raw.journal);
    let admin = check.admin(&raw.admin);
    let rules = check.rules(&raw.rule);
    if check.issues.is_empty() {
        let config = Config {
            gateway,
            devices,
            serial,
            uplinks,
            journal,
            admin,
            rules,
            warnings: Vec::new(),
        };
        Ok((config, check.warnings))
    } else {
        Err(check.issues)
    }
}

/// Collects issues while checking section by section.
#[derive(Debug, Default)]
struct Checker {
    issues: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl Checker {
    fn report(&mut self, value: &Text, message: String) {
        self.issues.push(Issue::new(value.span().start, message));
    }

    fn gateway(&mut self, raw: &RawConfig) -> GatewayConfig {
        let default = GatewayConfig::new("");
        let section = raw.gateway.as_ref();
        let gateway = section.map(|section| section.get_ref());
        let id = match gateway.and_then(|gateway| gateway.id.as_ref()) {
            None => {
                self.missing(
                    "gateway.id",
                    section.map_or(0, |section| section.span().start),
                );
                String::new()
            }
            Some(id) => {
                let valid = (1..=MAX_GATEWAY_ID_LEN).contains(&id.get_ref().len())
                    && id
                        .get_ref()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
                if !valid {
                    self.invalid(
                        id,
                        "gateway.id",
                        "expected 1 to 64 of A-Z a-z 0-9 . _ -".to_owned(),
                    );
                }
                id.get_ref().clone()
            }
        };
        let data_dir = gateway
            .and_then(|gateway: &RawGateway| gateway.data_dir.as_ref())
            .map_or(default.data_dir, |dir| self.path(dir, "gateway.data_dir"));
        let worker_threads = self.integer(
            gateway.and_then(|gateway: &RawGateway| gateway.worker_threads.as_ref()),
            "gateway.worker_threads",
            default.worker_threads,
            1..=MAX_WORKER_THREADS as i64,
        );
        GatewayConfig {
            id,
            data_dir,
            worker_threads,
        }
    }

    /// `[devices]`, or `[local_broker]` as the first release called it (with a warning).
    fn devices(&mut self, raw: &RawConfig) -> DevicesConfig {
        let (table, section) = match (&raw.devices, &raw.local_broker) {
            (Some(devices), Some(old)) => {
                self.issues.push(Issue::new(
                    old.span().start,
                    "`[local_broker]` and `[devices]` are the same table: keep `[devices]` only",
                ));
                ("devices", Some(devices))
            }
            (Some(devices), None) => ("devices", Some(devices)),
            (None, Some(old)) => {
                self.warnings.push(Issue::new(
                    old.span().start,
                    "`[local_broker]` is deprecated: rename the table `[devices]` (same keys)",
                ));
                ("local_broker", Some(old))
            }
            (None, None) => ("devices", None),
        };
        let empty = RawDevices::default();
        let raw = section.map_or(&empty, |section| section.get_ref());
        let default = DevicesConfig::default();
        let listen = self.address(
            raw.listen.as_ref(),
            &format!("{table}.listen"),
            default.listen,
        );
        let mut users: Vec<DeviceUser> = Vec::new();
        for (index, user) in raw.users.iter().enumerate() {
            let at = user.span().start;
            let user = user.get_ref();
            let key = format!("{table}.users[{index}]");
            let name = match &user.name {
                None => {
                    self.missing(&format!("{key}.name"), at);
                    String::new()
                }
                Some(name) => {
                    let name_key = format!("{key}.name");
                    if name.get_ref().is_empty() {
                        self.invalid(name, &name_key, "must not be empty".to_owned());
                    } else if let Some(first) =
                        users.iter().position(|other| other.name == *name.get_ref())
                    {
                        self.report(
                            name,
                            format!(
                                "duplicate user `{}` in `{name_key}`: already in \
                                 `{table}.users[{first}]`",
                                name.get_ref()
                            ),
                        );
                    }
                    name.get_ref().clone()
                }
            };
            let password_file = match &user.password_file {
                None => {
                    self.missing(&format!("{key}.password_file"), at);
                    PathBuf::new()
                }
                Some(file) => self.path(file, &format!("{key}.password_file")),
            };
            let devices = match &user.devices {
                // By default a login speaks for the device of its own name.
                None => match (DevicePattern::new(&name), &user.name) {
                    (Some(own), _) => vec![own],
                    (None, Some(text)) if !name.is_empty() => {
                        self.report(
                            text,
                            format!(
                                "user `{name}` in `{key}.name` is not a device id, so it speaks \
                                 for no device: list the devices it may speak for in \
                                 `{key}.devices`"
                            ),
                        );
                        Vec::new()
                    }
                    _ => Vec::new(),
                },
                Some(list) => {
                    if list.get_ref().is_empty() {
                        self.issues.push(Issue::new(
                            list.span().start,
                            format!("`{key}.devices` must name at least one device id or glob"),
                        ));
                    }
                    let mut patterns = Vec::new();
                    for (at, pattern) in list.get_ref().iter().enumerate() {
                        match DevicePattern::new(pattern.get_ref()) {
                            Some(pattern) => patterns.push(pattern),
                            None => self.invalid(
                                pattern,
                                &format!("{key}.devices[{at}]"),
                                "expected a device id or a glob of A-Z a-z 0-9 . _ - * ?, 1 to \
                                 64 long"
                                    .to_owned(),
                            ),
                        }
                    }
                    patterns
                }
            };
            users.push(DeviceUser {
                name,
                password_file,
                devices,
            });
        }
        let max_connections = self.integer(
            raw.max_connections.as_ref(),
            &format!("{table}.max_connections"),
            default.max_connections,
            1..=U32_MAX,
        );
        let allow_anonymous = raw
            .allow_anonymous
            .as_ref()
            .is_some_and(|allow| *allow.get_ref());
        let tls = raw.tls.as_ref().map(|tls| {
            let at = tls.span().start;
            let tls = tls.get_ref();
            let key = format!("{table}.tls");
            let mut required = |value: Option<&Text>, name: &str| match value {
                Some(value) => self.path(value, &format!("{key}.{name}")),
                None => {
                    self.missing(&format!("{key}.{name}"), at);
                    PathBuf::new()
                }
            };
            let cert_file = required(tls.cert_file.as_ref(), "cert_file");
            let key_file = required(tls.key_file.as_ref(), "key_file");
            DeviceTls {
                cert_file,
                key_file,
                client_ca_file: self.optional_path(
                    tls.client_ca_file.as_ref(),
                    &format!("{key}.client_ca_file"),
                ),
            }
        });
        let certificates = tls.as_ref().is_some_and(|tls| tls.client_ca_file.is_some());
        // No open door by default: anyone who can reach the port could speak for any device.
        if users.is_empty() && !certificates && !allow_anonymous && !listen.ip().is_loopback() {
            let at = raw
                .listen
                .as_ref()
                .map(|listen| listen.span().start)
                .or_else(|| section.map(|section| section.span().start))
                .unwrap_or(0);
            self.issues.push(Issue::new(
                at,
                format!(
                    "`{table}.listen` is {listen}, beyond this machine, and no device logs in: \
                     add `{table}.users` or `{table}.tls.client_ca_file`, listen on 127.0.0.1, \
                     or set \
                     `{table}.allow_anonymous = true` to let anyone on the network publish as \
                     any device"
                ),
            ));
        }
        DevicesConfig {
            listen,
            users,
            max_connections,
            allow_anonymous,
            tls,
        }
    }

    fn serial(&mut self, raw: &[toml::Spanned<RawSerial>]) -> Vec<SerialConfig> {
        let mut ports: Vec<SerialConfig> = Vec::new();
        for (index, serial) in raw.iter().enumerate() {
            let at = serial.span().start;
            let serial = serial.get_ref();
            let key = format!("serial[{index}]");
            let port = match &serial.port {
                None => {
                    self.missing(&format!("{key}.port"), at);
                    PathBuf::new()
                }
                Some(port) => {
                    let path = self.path(port, &format!("{key}.port"));
                    if let Some(first) = ports
                        .iter()
                        .position(|other| !path.as_os_str().is_empty() && other.port == path)
                    {
                        self.report(
                            port,
                            format!(
                                "duplicate port `{}` in `{key}.port`: already in `serial[{first}]`",
                                port.get_ref()
                            ),
                        );
                    }
                    path
                }
            };
            let default = SerialConfig::new(port);
            let baud = self.integer(
                serial.baud.as_ref(),
                &format!("{key}.baud"),
                default.baud,
                1..=U32_MAX,
            );
            ports.push(SerialConfig { baud, ..default });
        }
        ports
    }

    fn uplinks(&mut self, raw: &RawConfig, gateway_id: &str) -> Vec<UplinkConfig> {
        let uplinks = match raw.uplink.as_ref() {
            None => {
                self.missing("uplink.url", 0);
                return Vec::new();
            }
            Some(section) => match section.get_ref() {
                RawUplinks::One(uplink) => {
                    vec![self.uplink(uplink, section.span().start, "uplink", gateway_id)]
                }
                RawUplinks::Many(uplinks) if uplinks.is_empty() => {
                    self.missing("uplink.url", section.span().start);
                    Vec::new()
                }
                RawUplinks::Many(uplinks) => uplinks
                    .iter()
                    .enumerate()
                    .map(|(index, uplink)| {
                        let key = format!("uplink[{index}]");
                        self.uplink(uplink.get_ref(), uplink.span().start, &key, gateway_id)
                    })
                    .collect(),
            },
        };
        // Names key delivery positions and metrics: they must be unique.
        let entries: Vec<&RawUplink> = match raw.uplink.as_ref().map(|section| section.get_ref()) {
            Some(RawUplinks::One(uplink)) => vec![uplink],
            Some(RawUplinks::Many(uplinks)) => {
                uplinks.iter().map(|uplink| uplink.get_ref()).collect()
            }
            None => Vec::new(),
        };
        // An uplink whose url is unreadable has a placeholder type, hence a placeholder name:
        // it is reported for its url, not as a duplicate.
        let named = |index: usize| {
            entries.get(index).is_some_and(|entry| {
                entry.name.is_some()
                    || entry.kind.as_ref().is_some_and(|kind| {
                        matches!(kind.get_ref().as_str(), "kafka" | "eventbridge")
                    })
                    || entry
                        .url
                        .as_ref()
                        .is_some_and(|url| parse_uplink_url(url.get_ref()).is_ok())
            })
        };
        for (index, uplink) in uplinks.iter().enumerate() {
            if !named(index) {
                continue;
            }
            if let Some(first) = uplinks[..index]
                .iter()
                .enumerate()
                .position(|(other_index, other)| named(other_index) && other.name == uplink.name)
            {
                let at = entries
                    .get(index)
                    .and_then(|entry| {
                        entry
                            .name
                            .as_ref()
                            .or(entry.url.as_ref())
                            .or(entry.kind.as_ref())
                    })
                    .map_or(0, |text| text.span().start);
                self.issues.push(Issue::new(
                    at,
                    format!(
                        "duplicate uplink name `{}` in `uplink[{index}]`: already in `uplink[{first}]`; \
                         give each uplink its own `name`",
                        uplink.name
                    ),
                ));
            }
        }
        uplinks
    }

    /// The `url` of an uplink that has one, and its type: `type`, or the url's.
    fn uplink_url(
        &mut self,
        uplink: &RawUplink,
        at: usize,
        key: &str,
        declared: Option<UplinkType>,
    ) -> (UplinkUrl, UplinkType) {
        let placeholder = UplinkUrl {
            kind: UplinkType::Mqtt,
            tls: false,
            host: String::new(),
            port: 0,
            vhost: None,
        };
        let url = match &uplink.url {
            None => {
                self.missing(&format!("{key}.url"), at);
                placeholder
            }
            Some(url) => parse_uplink_url(url.get_ref()).unwrap_or_else(|reason| {
                self.report(
                    url,
                    format!("invalid url `{}` for `{key}.url`: {reason}", url.get_ref()),
                );
                placeholder
            }),
        };
        let url_ok = uplink
            .url
            .as_ref()
            .is_some_and(|url| parse_uplink_url(url.get_ref()).is_ok());
        let kind = match (&uplink.kind, declared) {
            (Some(text), Some(kind)) => {
                if url_ok && kind != url.kind {
                    self.report(
                        text,
                        format!(
                            "`{key}.type` is `{}` but its url's scheme `{}` is for {}",
                            kind.as_str(),
                            url.scheme(),
                            url.kind.as_str()
                        ),
                    );
                }
                kind
            }
            _ => url.kind,
        };
        (url, kind)
    }

    /// The place-holder url of an eventbridge uplink; `url` is refused.
    fn no_url(&mut self, uplink: &RawUplink, key: &str) -> UplinkUrl {
        if let Some(url) = &uplink.url {
            self.report(
                url,
                format!(
                    "`{key}.url` is not a setting of eventbridge uplinks: name the bus in \
                     `{key}.event_bus`, the region in `{key}.region`, and a private endpoint, if \
                     any, in `{key}.endpoint`"
                ),
            );
        }
        UplinkUrl {
            kind: UplinkType::EventBridge,
            tls: true,
            host: String::new(),
            port: 443,
            vhost: None,
        }
    }

    /// The `brokers` of a kafka uplink, the first as its url; `url` is refused.
    fn kafka_brokers(&mut self, uplink: &RawUplink, at: usize, key: &str) -> UplinkUrl {
        if let Some(url) = &uplink.url {
            self.report(
                url,
                format!(
                    "`{key}.url` is not a setting of kafka uplinks: list the bootstrap brokers in \
                     `{key}.brokers`, e.g. brokers = [\"kafka-1:9092\"]"
                ),
            );
        }
        let tls = uplink.tls.as_ref().is_some_and(|tls| *tls.get_ref());
        let mut first = UplinkUrl {
            kind: UplinkType::Kafka,
            tls,
            host: String::new(),
            port: 9092,
            vhost: None,
        };
        match &uplink.brokers {
            None => self.missing(&format!("{key}.brokers"), at),
            Some(brokers) if brokers.get_ref().is_empty() => self.issues.push(Issue::new(
                brokers.span().start,
                format!("`{key}.brokers` must name at least one broker, e.g. \"kafka-1:9092\""),
            )),
            Some(brokers) => {
                for (index, broker) in brokers.get_ref().iter().enumerate() {
                    match parse_broker(broker.get_ref(), tls) {
                        Ok(url) if index == 0 => first = url,
                        Ok(_) => {}
                        Err(reason) => self.report(
                            broker,
                            format!(
                                "invalid broker `{}` in `{key}.brokers`: {reason}",
                                broker.get_ref()
                            ),
                        ),
                    }
                }
            }
        }
        first
    }

    /// The settings only eventbridge uplinks have.
    fn eventbridge_settings(&mut self, uplink: &RawUplink, key: &str, config: &mut UplinkConfig) {
        if let Some(bus) = &uplink.event_bus {
            let text = bus.get_ref();
            let name_ok = (1..=256).contains(&text.len())
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
            let arn_ok = text.starts_with("arn:") && text.contains(":event-bus/");
            if !(name_ok || arn_ok) {
                self.invalid(
                    bus,
                    &format!("{key}.event_bus"),
                    "expected a bus name (1 to 256 of A-Z a-z 0-9 . _ - /) or its ARN".to_owned(),
                );
            }
            config.event_bus = text.clone();
        }
        if let Some(region) = &uplink.region {
            let text = region.get_ref();
            let valid = !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                self.invalid(
                    region,
                    &format!("{key}.region"),
                    "expected an AWS region, e.g. eu-west-1".to_owned(),
                );
            }
            config.region = Some(text.clone());
        }
        if let Some(endpoint) = &uplink.endpoint {
            let text = endpoint.get_ref();
            let rest = text
                .strip_prefix("https://")
                .or_else(|| text.strip_prefix("http://"));
            let valid = rest.is_some_and(|rest| {
                let authority = rest.trim_end_matches('/');
                !authority.is_empty() && !authority.contains(['/', '@', '?', '#', ' '])
            });
            if !valid {
                self.invalid(
                    endpoint,
                    &format!("{key}.endpoint"),
                    "expected http://host[:port] or https://host[:port]".to_owned(),
                );
            }
            config.endpoint = Some(text.trim_end_matches('/').to_owned());
        }
        for (value, name) in [
            (&uplink.username, "username"),
            (&uplink.password_file, "password_file"),
            (&uplink.ca_file, "ca_file"),
        ] {
            if let Some(value) = value {
                self.report(
                    value,
                    format!(
                        "`{key}.{name}` is not a setting of eventbridge uplinks: credentials come \
                         from the AWS standard chain (environment, profile, instance role)"
                    ),
                );
            }
        }
    }

    /// The settings only kafka uplinks have; returns the brokers.
    fn kafka_settings(
        &mut self,
        uplink: &RawUplink,
        key: &str,
        config: &mut UplinkConfig,
    ) -> Vec<UplinkUrl> {
        let brokers = uplink
            .brokers
            .as_ref()
            .map(|brokers| {
                brokers
                    .get_ref()
                    .iter()
                    .filter_map(|broker| parse_broker(broker.get_ref(), config.url.tls).ok())
                    .collect()
            })
            .unwrap_or_default();
        for (value, name, target) in [
            (&uplink.topic, "topic", &mut config.topic),
            (
                &uplink.alerts_topic,
                "alerts_topic",
                &mut config.alerts_topic,
            ),
            (
                &uplink.status_topic,
                "status_topic",
                &mut config.status_topic,
            ),
        ] {
            let Some(value) = value else { continue };
            let text = value.get_ref();
            let valid = (1..=249).contains(&text.len())
                && text != "."
                && text != ".."
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid {
                self.invalid(
                    value,
                    &format!("{key}.{name}"),
                    "expected a Kafka topic name: 1 to 249 of A-Z a-z 0-9 . _ -".to_owned(),
                );
            }
            *target = text.clone();
        }
        config.sasl_mechanism = uplink.sasl_mechanism.as_ref().map(|text| {
            self.choice(
                Some(text),
                &format!("{key}.sasl_mechanism"),
                &[
                    ("PLAIN", SaslMechanism::Plain),
                    ("SCRAM-SHA-256", SaslMechanism::ScramSha256),
                    ("SCRAM-SHA-512", SaslMechanism::ScramSha512),
                ],
                SaslMechanism::Plain,
            )
        });
        match (&uplink.username, &uplink.sasl_mechanism) {
            (Some(user), None) => self.report(
                user,
                format!(
                    "`{key}.username` needs `{key}.sasl_mechanism`: PLAIN, SCRAM-SHA-256 or \
                     SCRAM-SHA-512"
                ),
            ),
            (None, Some(mechanism)) => self.report(
                mechanism,
                format!("`{key}.sasl_mechanism` needs `{key}.username` and `{key}.password_file`"),
            ),
            _ => {}
        }
        config.max_message_bytes = self.integer(
            uplink.max_message_bytes.as_ref(),
            &format!("{key}.max_message_bytes"),
            config.max_message_bytes,
            1_000..=100_000_000,
        );
        brokers
    }

    fn uplink(
        &mut self,
        uplink: &RawUplink,
        at: usize,
        key: &str,
        gateway_id: &str,
    ) -> UplinkConfig {
        let declared = uplink.kind.as_ref().map(|text| {
            self.choice(
                Some(text),
                &format!("{key}.type"),
                &[
                    ("mqtt", UplinkType::Mqtt),
                    ("nats", UplinkType::Nats),
                    ("amqp", UplinkType::Amqp),
                    ("kafka", UplinkType::Kafka),
                    ("eventbridge", UplinkType::EventBridge),
                ],
                UplinkType::Mqtt,
            )
        });
        let (url, kind) = if declared == Some(UplinkType::Kafka) {
            (self.kafka_brokers(uplink, at, key), UplinkType::Kafka)
        } else if declared == Some(UplinkType::EventBridge) {
            (self.no_url(uplink, key), UplinkType::EventBridge)
        } else {
            self.uplink_url(uplink, at, key, declared)
        };
        let mut config = UplinkConfig::new(url, gateway_id);
        config.kind = kind;
        config.name = kind.as_str().to_owned();
        if let Some(name) = &uplink.name {
            let valid = (1..=64).contains(&name.get_ref().len())
                && name
                    .get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid {
                self.invalid(
                    name,
                    &format!("{key}.name"),
                    "expected 1 to 64 of A-Z a-z 0-9 . _ -".to_owned(),
                );
            }
            config.name = name.get_ref().clone();
        }
        if let Some(lanes) = &uplink.lanes {
            let mut chosen = Lanes {
                events: false,
                alerts: false,
                status: false,
            };
            for lane in lanes.get_ref() {
                match lane.get_ref().as_str() {
                    "events" => chosen.events = true,
                    "alerts" => chosen.alerts = true,
                    "status" => chosen.status = true,
                    other => self.report(
                        lane,
                        format!(
                            "invalid value `{other}` for `{key}.lanes`: expected events, alerts or status"
                        ),
                    ),
                }
            }
            if lanes.get_ref().is_empty() {
                self.issues.push(Issue::new(
                    lanes.span().start,
                    format!("`{key}.lanes` must name at least one of events, alerts, status"),
                ));
            }
            config.lanes = chosen;
        }
        if let Some(devices) = &uplink.devices {
            match DevicePattern::new(devices.get_ref()) {
                Some(pattern) => config.devices = Some(pattern),
                None => self.invalid(
                    devices,
                    &format!("{key}.devices"),
                    "expected a device id or a glob of A-Z a-z 0-9 . _ - * ?, 1 to 64 long"
                        .to_owned(),
                ),
            }
        }
        config.ack_timeout = self.duration(
            uplink.ack_timeout.as_ref(),
            &format!("{key}.ack_timeout"),
            config.ack_timeout,
        );
        if let Some(text) = &uplink.ack_timeout
            && config.ack_timeout.is_zero()
        {
            self.invalid(
                text,
                &format!("{key}.ack_timeout"),
                "must be above zero".to_owned(),
            );
        }

        // Keys that belong to one protocol only.
        let only = |kind_of_key: UplinkType| kind_of_key == kind;
        let protocol_keys: [(&Option<Text>, &str, UplinkType); 16] = [
            (&uplink.topic_prefix, "topic_prefix", UplinkType::Mqtt),
            (&uplink.client_id, "client_id", UplinkType::Mqtt),
            (&uplink.keep_alive, "keep_alive", UplinkType::Mqtt),
            (
                &uplink.client_cert_file,
                "client_cert_file",
                UplinkType::Mqtt,
            ),
            (&uplink.client_key_file, "client_key_file", UplinkType::Mqtt),
            (&uplink.subject_prefix, "subject_prefix", UplinkType::Nats),
            (&uplink.stream, "stream", UplinkType::Nats),
            (&uplink.token_file, "token_file", UplinkType::Nats),
            (&uplink.exchange, "exchange", UplinkType::Amqp),
            (&uplink.topic, "topic", UplinkType::Kafka),
            (&uplink.alerts_topic, "alerts_topic", UplinkType::Kafka),
            (&uplink.status_topic, "status_topic", UplinkType::Kafka),
            (&uplink.sasl_mechanism, "sasl_mechanism", UplinkType::Kafka),
            (&uplink.event_bus, "event_bus", UplinkType::EventBridge),
            (&uplink.region, "region", UplinkType::EventBridge),
            (&uplink.endpoint, "endpoint", UplinkType::EventBridge),
        ];
        for (value, name, owner) in protocol_keys {
            if let Some(value) = value
                && !only(owner)
            {
                self.report(
                    value,
                    format!(
                        "`{key}.{name}` is a setting of {} uplinks, and this one is {}",
                        owner.as_str(),
                        kind.as_str()
                    ),
                );
            }
        }
        if let Some(value) = &uplink.credentials_file
            && kind != UplinkType::Nats
        {
            self.report(
                value,
                format!(
                    "`{key}.credentials_file` is a setting of nats uplinks, and this one is {}",
                    kind.as_str()
                ),
            );
        }

        if kind == UplinkType::EventBridge {
            self.eventbridge_settings(uplink, key, &mut config);
        }
        if kind == UplinkType::Kafka {
            config.brokers = self.kafka_settings(uplink, key, &mut config);
        } else {
            let not_kafka = |name: &str| {
                format!(
                    "`{key}.{name}` is a setting of kafka uplinks, and this one is {}",
                    kind.as_str()
                )
            };
            if let Some(brokers) = &uplink.brokers {
                self.issues
                    .push(Issue::new(brokers.span().start, not_kafka("brokers")));
            }
            if let Some(tls) = &uplink.tls {
                self.issues.push(Issue::new(
                    tls.span().start,
                    format!(
                        "{}: the url's scheme says whether TLS is used",
                        not_kafka("tls")
                    ),
                ));
            }
            if let Some(max) = &uplink.max_message_bytes {
                self.issues
                    .push(Issue::new(max.span().start, not_kafka("max_message_bytes")));
            }
        }
        if let Some(prefix) = &uplink.topic_prefix {
            let text = prefix.get_ref();
            let reason = if text.is_empty() {
                Some("must not be empty")
            } else if text.contains(['+', '#']) {
                Some("must not contain the wildcards + or #")
            } else if text.starts_with('/') || text.ends_with('/') {
                Some("must not start or end with /")
            } else if text.contains('\0') {
                Some("must not contain a nul character")
            } else {
                None
            };
            if let Some(reason) = reason {
                self.invalid(prefix, &format!("{key}.topic_prefix"), reason.to_owned());
            }
            config.topic_prefix = text.clone();
        }
        if let Some(prefix) = &uplink.subject_prefix {
            let text = prefix.get_ref();
            let valid = !text.is_empty()
                && text.split('.').all(|token| {
                    !token.is_empty()
                        && token
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
                });
            if !valid {
                self.invalid(
                    prefix,
                    &format!("{key}.subject_prefix"),
                    "expected tokens of A-Z a-z 0-9 _ - separated by dots".to_owned(),
                );
            }
            config.subject_prefix = text.clone();
        }
        if let Some(stream) = &uplink.stream {
            let text = stream.get_ref();
            let valid = (1..=255).contains(&text.len())
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
            if !valid {
                self.invalid(
                    stream,
                    &format!("{key}.stream"),
                    "expected 1 to 255 of A-Z a-z 0-9 _ -".to_owned(),
                );
            }
            config.stream = text.clone();
        }
        if let Some(exchange) = &uplink.exchange {
            let text = exchange.get_ref();
            let valid = (1..=255).contains(&text.len())
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
            if !valid {
                self.invalid(
                    exchange,
                    &format!("{key}.exchange"),
                    "expected 1 to 255 of A-Z a-z 0-9 _ - . :".to_owned(),
                );
            }
            config.exchange = text.clone();
        }
        if let Some(client_id) = &uplink.client_id {
            if client_id.get_ref().is_empty() {
                self.invalid(
                    client_id,
                    &format!("{key}.client_id"),
                    "must not be empty".to_owned(),
                );
            }
            config.client_id = client_id.get_ref().clone();
        }
        if let Some(username) = &uplink.username {
            if username.get_ref().is_empty() {
                self.invalid(
                    username,
                    &format!("{key}.username"),
                    "must not be empty".to_owned(),
                );
            }
            config.username = Some(username.get_ref().clone());
        }

        config.ca_file = self.optional_path(uplink.ca_file.as_ref(), &format!("{key}.ca_file"));
        config.client_cert_file = self.optional_path(
            uplink.client_cert_file.as_ref(),
            &format!("{key}.client_cert_file"),
        );
        config.client_key_file = self.optional_path(
            uplink.client_key_file.as_ref(),
            &format!("{key}.client_key_file"),
        );
        config.password_file = self.optional_path(
            uplink.password_file.as_ref(),
            &format!("{key}.password_file"),
        );
        config.token_file =
            self.optional_path(uplink.token_file.as_ref(), &format!("{key}.token_file"));
        config.credentials_file = self.optional_path(
            uplink.credentials_file.as_ref(),
            &format!("{key}.credentials_file"),
        );

        // Only complain about TLS files when the URL itself is fine and says plain text.
        let plain = uplink
            .url
            .as_ref()
            .and_then(|url| parse_uplink_url(url.get_ref()).ok())
            .filter(|url| !url.tls && kind.takes_url());
        if let Some(plain) = &plain {
            let secure = match plain.kind {
                UplinkType::Mqtt => "an mqtts",
                UplinkType::Nats => "a tls",
                UplinkType::Amqp => "an amqps",
                UplinkType::Kafka | UplinkType::EventBridge => "a tls",
            };
            for (file, name) in [
                (&uplink.ca_file, "ca_file"),
                (&uplink.client_cert_file, "client_cert_file"),
                (&uplink.client_key_file, "client_key_file"),
            ] {
                if let Some(file) = file {
                    self.report(file, format!("`{key}.{name}` needs {secure}:// url"));
                }
            }
        }
        if kind == UplinkType::Kafka
            && !config.url.tls
            && let Some(file) = &uplink.ca_file
        {
            self.report(file, format!("`{key}.ca_file` needs `{key}.tls = true`"));
        }
        match (&uplink.client_cert_file, &uplink.client_key_file) {
            (Some(cert), None) => self.report(
                cert,
                format!("`{key}.client_cert_file` needs `{key}.client_key_file`"),
            ),
            (None, Some(file)) => self.report(
                file,
                format!("`{key}.client_key_file` needs `{key}.client_cert_file`"),
            ),
            _ => {}
        }
        if let (Some(file), None) = (&uplink.password_file, &uplink.username) {
            self.report(
                file,
                format!("`{key}.password_file` needs `{key}.username`"),
            );
        }
        let logins = [
            uplink.username.as_ref(),
            uplink.token_file.as_ref(),
            uplink.credentials_file.as_ref(),
        ];
        if logins.iter().filter(|login| login.is_some()).count() > 1
            && let Some(second) = logins.iter().flatten().nth(1)
        {
            self.report(
                second,
                format!("`{key}`: use one of username, token_file and credentials_file"),
            );
        }

        if let Some(text) = &uplink.keep_alive {
            let keep_alive =
                self.duration(Some(text), &format!("{key}.keep_alive"), config.keep_alive);
            if keep_alive < MIN_KEEP_ALIVE || keep_alive > MAX_KEEP_ALIVE {
                self.invalid(
                    text,
                    &format!("{key}.keep_alive"),
                    "must be from 5s to 65535s".to_owned(),
                );
            } else if keep_alive.subsec_nanos() != 0 {
                self.invalid(
                    text,
                    &format!("{key}.keep_alive"),
                    "must be whole seconds".to_owned(),
                );
            }
            config.keep_alive = keep_alive;
        }
        config.max_inflight = self.integer(
            uplink.max_inflight.as_ref(),
            &format!("{key}.max_inflight"),
            config.max_inflight,
            1..=i64::from(u16::MAX),
        );
        config.reconnect_min = self.duration(
            uplink.reconnect_min.as_ref(),
            &format!("{key}.reconnect_min"),
            config.reconnect_min,
        );
        if let Some(text) = &uplink.reconnect_min
            && config.reconnect_min.is_zero()
        {
            self.invalid(
                text,
                &format!("{key}.reconnect_min"),
                "must be above zero".to_owned(),
            );
        }
        config.reconnect_max = self.duration(
            uplink.reconnect_max.as_ref(),
            &format!("{key}.reconnect_max"),
            config.reconnect_max,
        );
        if config.reconnect_max < config.reconnect_min
            && let Some(text) = uplink
                .reconnect_max
                .as_ref()
                .or(uplink.reconnect_min.as_ref())
        {
            self.report(
                text,
                format!(
                    "`{key}.reconnect_max` ({:?}) must be at least `{key}.reconnect_min` ({:?})",
                    config.reconnect_max, config.reconnect_min
                ),
            );
        }
        if let Some(batch) = &uplink.batch {
            config.batch = self.batch(batch, key, kind);
        }
        config
    }

    /// An uplink's `batch`: on for mqtt (JSON arrays) and kafka (the producer's own batches).
    fn batch(
        &mut self,
        raw: &toml::Spanned<RawBatch>,
        key: &str,
        kind: UplinkType,
    ) -> Option<Batch> {
        let key = format!("{key}.batch");
        let reason = match kind {
            UplinkType::Mqtt | UplinkType::Kafka => None,
            UplinkType::EventBridge => {
                Some("eventbridge uplinks always send up to 10 events per PutEvents call")
            }
            UplinkType::Nats | UplinkType::Amqp => {
                Some("only mqtt and kafka uplinks batch; each event is its own message here")
            }
        };
        if let Some(reason) = reason {
            self.issues.push(Issue::new(
                raw.span().start,
                format!(
                    "`{key}` is not a setting of {} uplinks: {reason}",
                    kind.as_str()
                ),
            ));
            return None;
        }
        let raw = raw.get_ref();
        let default = Batch::default();
        let max_events = self.integer(
            raw.max_events.as_ref(),
            &format!("{key}.max_events"),
            default.max_events,
            1..=10_000,
        );
        let mut max_bytes = default.max_bytes;
        if let Some(text) = &raw.max_bytes {
            match parse_size(text.get_ref()) {
                Ok(size) if (1024..=u64::from(Batch::MAX_BYTES)).contains(&size) => {
                    max_bytes = u32::try_from(size).unwrap_or(Batch::MAX_BYTES);
                }
                Ok(_) => self.invalid(
                    text,
                    &format!("{key}.max_bytes"),
                    "must be from 1KiB to 240KiB".to_owned(),
                ),
                Err(error) => self.bad_unit(text, "size", &format!("{key}.max_bytes"), &error),
            }
        }
        let max_delay = self.duration(
            raw.max_delay.as_ref(),
            &format!("{key}.max_delay"),
            default.max_delay,
        );
        if let Some(text) = &raw.max_delay
            && max_delay > Duration::from_secs(1)
        {
            self.invalid(
                text,
                &format!("{key}.max_delay"),
                "must be at most 1s".to_owned(),
            );
        }
        Some(Batch {
            max_events,
            max_bytes,
            max_delay,
        })
    }

    fn journal(&mut self, raw: &RawJournal) -> JournalConfig {
        let default = JournalConfig::default();
        let mut max_size = default.max_size;
        if let Some(text) = &raw.max_size {
            match parse_size(text.get_ref()) {
                Ok(size) if size < MIN_JOURNAL_SIZE => {
                    self.invalid(
                        text,
                        "journal.max_size",
                        "must be at least 64KiB".to_owned(),
                    );
                }
                Ok(size) => max_size = size,
                Err(error) => self.bad_unit(text, "size", "journal.max_size", &error),
            }
        }
        let max_age = self.duration(raw.max_age.as_ref(), "journal.max_age", default.max_age);
        if let Some(text) = &raw.max_age
            && max_age.is_zero()
        {
            self.invalid(text, "journal.max_age", "must be above zero".to_owned());
        }
        let when_full = self.choice(
            raw.when_full.as_ref(),
            "journal.when_full",
            &[
                ("drop_oldest", WhenFull::DropOldest),
                ("drop_newest", WhenFull::DropNewest),
                ("block", WhenFull::Block),
            ],
            default.when_full,
        );
        let synchronous = self.choice(
            raw.synchronous.as_ref(),
            "journal.synchronous",
            &[("full", Synchronous::Full), ("normal", Synchronous::Normal)],
            default.synchronous,
        );
        let commit_interval = self.duration(
            raw.commit_interval.as_ref(),
            "journal.commit_interval",
            default.commit_interval,
        );
        if let Some(text) = &raw.commit_interval
            && commit_interval > MAX_COMMIT_INTERVAL
        {
            self.invalid(
                text,
                "journal.commit_interval",
                "must be at most 5s: devices wait that long for their acknowledgements".to_owned(),
            );
        }
        JournalConfig {
            max_size,
            max_age,
            when_full,
            synchronous,
            commit_interval,
        }
    }

    fn admin(&mut self, raw: &RawAdmin) -> AdminConfig {
        let default = AdminConfig::default();
        AdminConfig {
            listen: self.address(raw.listen.as_ref(), "admin.listen", default.listen),
        }
    }

    fn rules(&mut self, raw: &[toml::Spanned<RawRule>]) -> Vec<Rule> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for (index, spanned) in raw.iter().enumerate() {
            let key = format!("rule[{index}]");
            if let Some(name) = &spanned.get_ref().name {
                if let Some(first) = names.iter().position(|known| *known == name.get_ref()) {
                    self.invalid(
                        name,
                        &format!("{key}.name"),
                        format!("already the name of `rule[{first}]`; rule names must be unique"),
                    );
                }
                names.push(name.get_ref());
            }
            if let Some(rule) = self.rule(spanned.get_ref(), &key, spanned.span().start) {
                rules.push(rule);
            }
        }
        rules
    }

    /// One rule; `None` if it has problems (they are reported).
    fn rule(&mut self, raw: &RawRule, key: &str, at: usize) -> Option<Rule> {
        let before = self.issues.len();
        let name = match &raw.name {
            None => {
                self.missing(&format!("{key}.name"), at);
                String::new()
            }
            Some(name) => {
                if name.get_ref().trim().is_empty() || name.get_ref().chars().any(char::is_control)
                {
                    self.invalid(
                        name,
                        &format!("{key}.name"),
                        "expected printable text".to_owned(),
                    );
                }
                name.get_ref().clone()
            }
        };
        let devices = match &raw.devices {
            None => DevicePattern::new("*"),
            Some(pattern) => {
                let devices = DevicePattern::new(pattern.get_ref());
                if devices.is_none() {
                    self.invalid(
                        pattern,
                        &format!("{key}.devices"),
                        "expected a device id or a glob of A-Z a-z 0-9 . _ - with * and ?"
                            .to_owned(),
                    );
                }
                devices
            }
        };
        let reading = raw.reading.as_ref().map(|reading| {
            let text = reading.get_ref();
            if text.is_empty() || text.len() > 64 || text.chars().any(char::is_control) {
                self.invalid(
                    reading,
                    &format!("{key}.reading"),
                    "expected a reading name of 1 to 64 printable characters".to_owned(),
                );
            }
            text.clone()
        });
        let positive = |check: &mut Self, value: Option<&Text>, field: &str| -> Option<Duration> {
            let value = value?;
            let reported = check.issues.len();
            let duration = check.duration(Some(value), &format!("{key}.{field}"), Duration::ZERO);
            if duration.is_zero() && check.issues.len() == reported {
                check.invalid(
                    value,
                    &format!("{key}.{field}"),
                    "must be longer than zero".to_owned(),
                );
            }
            Some(duration)
        };
        let hold = self.duration(raw.hold.as_ref(), &format!("{key}.for"), Duration::ZERO);
        let cooldown = self.duration(
            raw.cooldown.as_ref(),
            &format!("{key}.cooldown"),
            Duration::ZERO,
        );
        let severity = self.choice(
            raw.severity.as_ref(),
            &format!("{key}.severity"),
            &Severity::ALL.map(|(severity, name)| (name, severity)),
            Severity::Warning,
        );
        let labels = raw
            .labels
            .as_ref()
            .map(|labels| {
                if labels.get_ref().keys().any(|name| name.is_empty()) {
                    self.issues.push(Issue::new(
                        labels.span().start,
                        format!("invalid `{key}.labels`: label names must not be empty"),
                    ));
                }
                labels.get_ref().clone()
            })
            .unwrap_or_default();

        let threshold = raw.above.is_some() || raw.below.is_some();
        let condition = match (&raw.silent_for, threshold) {
            (Some(silent_for), true) => {
                self.invalid(
                    silent_for,
                    &format!("{key}.silent_for"),
                    "a rule has one condition: silent_for, or above/below, not both".to_owned(),
                );
                None
            }
            (Some(silent_for), false) => {
                for (value, field) in [
                    (&raw.window, "window"),
                    (&raw.aggregate, "aggregate"),
                    (&raw.hold, "for"),
                ] {
                    if let Some(value) = value {
                        self.invalid(
                            value,
                            &format!("{key}.{field}"),
                            "only for above/below rules".to_owned(),
                        );
                    }
                }
                positive(self, Some(silent_for), "silent_for").map(|after| Condition::Silent {
                    reading: reading.clone(),
                    after,
                })
            }
            (None, true) => {
                if reading.is_none() {
                    self.missing(&format!("{key}.reading"), at);
                }
                let bounds = self.bounds(raw, key);
                let window = match (&raw.window, &raw.aggregate) {
                    (None, None) => None,
                    (Some(window), None) => {
                        self.invalid(
                            window,
                            &format!("{key}.window"),
                            "needs an `aggregate`: avg, min, max, count or rate".to_owned(),
                        );
                        None
                    }
                    (None, Some(aggregate)) => {
                        self.invalid(
                            aggregate,
                            &format!("{key}.aggregate"),
                            "needs a `window`, e.g. \"5m\"".to_owned(),
                        );
                        None
                    }
                    (Some(window), Some(_)) => {
                        let over = positive(self, Some(window), "window");
                        let aggregate = self.choice(
                            raw.aggregate.as_ref(),
                            &format!("{key}.aggregate"),
                            &Aggregate::ALL.map(|(aggregate, name)| (name, aggregate)),
                            Aggregate::Avg,
                        );
                        over.map(|over| Window { over, aggregate })
                    }
                };
                bounds.map(|bounds| Condition::Threshold {
                    reading: reading.clone().unwrap_or_default(),
                    window,
                    bounds,
                })
            }
            (None, false) => {
                self.issues.push(Issue::new(
                    at,
                    format!("`{key}` has no condition: give it `above`, `below` or `silent_for`"),
                ));
                None
            }
        };
        if self.issues.len() > before {
            return None;
        }
        Some(Rule {
            name,
            devices: devices?,
            condition: condition?,
            hold,
            severity,
            cooldown,
            labels,
        })
    }

    /// The thresholds of a rule with `above` and/or `below`, with their clear levels.
    fn bounds(&mut self, raw: &RawRule, key: &str) -> Option<Bounds> {
        let before = self.issues.len();
        let finite = |check: &mut Self, value: Option<&Number>, field: &str| -> Option<f64> {
            let value = value?;
            let number = *value.get_ref();
            if !number.is_finite() {
                check.issues.push(Issue::new(
                    value.span().start,
                    format!(
                        "invalid value `{number}` for `{key}.{field}`: must be a finite number"
                    ),
                ));
            }
            Some(number)
        };
        let above = finite(self, raw.above.as_ref(), "above");
        let below = finite(self, raw.below.as_ref(), "below");
        let clear_below = finite(self, raw.clear_below.as_ref(), "clear_below");
        let clear_above = finite(self, raw.clear_above.as_ref(), "clear_above");
        let mut report = |value: &Number, message: String| {
            self.issues.push(Issue::new(value.span().start, message));
        };
        if let Some(value) = &raw.clear_below {
            match above {
                None => report(value, format!("`{key}.clear_below` goes with `above`")),
                Some(above) if *value.get_ref() > above => report(
                    value,
                    format!(
                        "invalid value `{}` for `{key}.clear_below`: must not be above `above` ({above})",
                        value.get_ref()
                    ),
                ),
                Some(_) => {}
            }
        }
        if let Some(value) = &raw.clear_above {
            match below {
                None => report(value, format!("`{key}.clear_above` goes with `below`")),
                Some(below) if *value.get_ref() < below => report(
                    value,
                    format!(
                        "invalid value `{}` for `{key}.clear_above`: must not be below `below` ({below})",
                        value.get_ref()
                    ),
                ),
                Some(_) => {}
            }
        }
        if let (Some(above), Some(below)) = (above, below) {
            let (clear_high, clear_low) =
                (clear_below.unwrap_or(above), clear_above.unwrap_or(below));
            if clear_low >= clear_high
                && let Some(value) = raw.clear_above.as_ref().or(raw.clear_below.as_ref())
            {
                report(
                    value,
                    format!(
                        "`{key}.clear_above` ({clear_low}) must be under `{key}.clear_below` ({clear_high}): otherwise the alert never clears"
                    ),
                );
            }
        }
        if let (Some(above), Some(below), Some(value)) = (above, below, &raw.below)
            && below >= above
        {
            report(
                value,
                format!(
                    "invalid value `{below}` for `{key}.below`: must be under `above` ({above}); together they fire outside [below, above]"
                ),
            );
        }
        if self.issues.len() > before {
            return None;
        }
        Some(Bounds {
            above,
            clear_below: clear_below.or(above).unwrap_or(f64::INFINITY),
            below,
            clear_above: clear_above.or(below).unwrap_or(f64::NEG_INFINITY),
        })
    }

    fn missing(&mut self, key: &str, at: usize) {
        self.issues
            .push(Issue::new(at, format!("missing key `{key}`")));
    }

    fn invalid(&mut self, value: &Text, key: &str, reason: String) {
        let message = format!("invalid value `{}` for `{key}`: {reason}", value.get_ref());
        self.report(value, message);
    }

    fn bad_unit(&mut self, value: &Text, what: &str, key: &str, error: &UnitError) {
        let message = format!("invalid {what} `{}` for `{key}`: {error}", value.get_ref());
        self.report(value, message);
    }

    fn duration(&mut self, value: Option<&Text>, key: &str, default: Duration) -> Duration {
        let Some(value) = value else {
            return default;
        };
        parse_duration(value.get_ref()).unwrap_or_else(|error| {
            self.bad_unit(value, "duration", key, &error);
            default
        })
    }

    fn address(&mut self, value: Option<&Text>, key: &str, default: SocketAddr) -> SocketAddr {
        let Some(value) = value else {
            return default;
        };
        value.get_ref().parse().unwrap_or_else(|_| {
            let message = format!(
                "invalid address `{}` for `{key}`: expected ip:port, e.g. {default}",
                value.get_ref()
            );
            self.report(value, message);
            default
        })
    }

    /// An integer in `range`, which must fit in `T`.
    fn integer<T: TryFrom<i64>>(
        &mut self,
        value: Option<&Integer>,
        key: &str,
        default: T,
        range: RangeInclusive<i64>,
    ) -> T {
        let Some(value) = value else {
            return default;
        };
        let number = *value.get_ref();
        match T::try_from(number) {
            Ok(converted) if range.contains(&number) => converted,
            _ => {
                self.issues.push(Issue::new(
                    value.span().start,
                    format!(
                        "invalid value `{number}` for `{key}`: must be from {} to {}",
                        range.start(),
                        range.end()
                    ),
                ));
                default
            }
        }
    }

    fn path(&mut self, value: &Text, key: &str) -> PathBuf {
        if value.get_ref().is_empty() {
            self.invalid(value, key, "must not be empty".to_owned());
        }
        PathBuf::from(value.get_ref())
    }

    fn optional_path(&mut self, value: Option<&Text>, key: &str) -> Option<PathBuf> {
        value.map(|value| self.path(value, key))
    }

    fn choice<T: Copy>(
        &mut self,
        value: Option<&Text>,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(value) = value else {
            return default;
        };
        if let Some((_, choice)) = options.iter().find(|(name, _)| name == value.get_ref()) {
            return *choice;
        }
        let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
        let expected = match names.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        self.invalid(value, key, format!("expected {expected}"));
        default
    }
}
