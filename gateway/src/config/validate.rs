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
    AdminConfig, Config, DeviceUser, GatewayConfig, JournalConfig, LocalBrokerConfig, SerialConfig,
    Synchronous, UplinkConfig, UplinkUrl, WhenFull,
};
use super::raw::{
    Integer, RawAdmin, RawConfig, RawGateway, RawJournal, RawLocalBroker, RawSerial, RawUplink,
    Text,
};
use super::units::{parse_duration, parse_size};
use super::url::parse_uplink_url;

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

/// Checks everything in `raw`; returns the configuration, or every problem found.
pub(super) fn validate(raw: &RawConfig) -> Result<Config, Vec<Issue>> {
    let mut check = Checker::default();
    let gateway = check.gateway(raw);
    let local_broker = check.local_broker(&raw.local_broker);
    let serial = check.serial(&raw.serial);
    let uplink = check.uplink(raw, &gateway.id);
    let journal = check.journal(&raw.journal);
    let admin = check.admin(&raw.admin);
    if check.issues.is_empty() {
        Ok(Config {
            gateway,
            local_broker,
            serial,
            uplink,
            journal,
            admin,
        })
    } else {
        Err(check.issues)
    }
}

/// Collects issues while checking section by section.
#[derive(Debug, Default)]
struct Checker {
    issues: Vec<Issue>,
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
        GatewayConfig { id, data_dir }
    }

    fn local_broker(&mut self, raw: &RawLocalBroker) -> LocalBrokerConfig {
        let default = LocalBrokerConfig::default();
        let listen = self.address(raw.listen.as_ref(), "local_broker.listen", default.listen);
        let mut users: Vec<DeviceUser> = Vec::new();
        for (index, user) in raw.users.iter().enumerate() {
            let at = user.span().start;
            let user = user.get_ref();
            let key = format!("local_broker.users[{index}]");
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
                                 `local_broker.users[{first}]`",
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
            users.push(DeviceUser {
                name,
                password_file,
            });
        }
        let max_connections = self.integer(
            raw.max_connections.as_ref(),
            "local_broker.max_connections",
            default.max_connections,
            1..=U32_MAX,
        );
        LocalBrokerConfig {
            listen,
            users,
            max_connections,
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

    fn uplink(&mut self, raw: &RawConfig, gateway_id: &str) -> UplinkConfig {
        let placeholder = UplinkUrl {
            tls: false,
            host: String::new(),
            port: 0,
        };
        let empty = RawUplink::default();
        let section = raw.uplink.as_ref();
        let uplink = section.map_or(&empty, |section| section.get_ref());
        let url = match &uplink.url {
            None => {
                self.missing(
                    "uplink.url",
                    section.map_or(0, |section| section.span().start),
                );
                placeholder
            }
            Some(url) => parse_uplink_url(url.get_ref()).unwrap_or_else(|reason| {
                self.report(
                    url,
                    format!("invalid url `{}` for `uplink.url`: {reason}", url.get_ref()),
                );
                placeholder
            }),
        };
        let mut config = UplinkConfig::new(url, gateway_id);

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
                self.invalid(prefix, "uplink.topic_prefix", reason.to_owned());
            }
            config.topic_prefix = text.clone();
        }
        if let Some(client_id) = &uplink.client_id {
            if client_id.get_ref().is_empty() {
                self.invalid(
                    client_id,
                    "uplink.client_id",
                    "must not be empty".to_owned(),
                );
            }
            config.client_id = client_id.get_ref().clone();
        }
        if let Some(username) = &uplink.username {
            if username.get_ref().is_empty() {
                self.invalid(username, "uplink.username", "must not be empty".to_owned());
            }
            config.username = Some(username.get_ref().clone());
        }

        config.ca_file = self.optional_path(uplink.ca_file.as_ref(), "uplink.ca_file");
        config.client_cert_file =
            self.optional_path(uplink.client_cert_file.as_ref(), "uplink.client_cert_file");
        config.client_key_file =
            self.optional_path(uplink.client_key_file.as_ref(), "uplink.client_key_file");
        config.password_file =
            self.optional_path(uplink.password_file.as_ref(), "uplink.password_file");

        // Only complain about TLS files when the URL itself is fine and says mqtt://.
        let plain = uplink
            .url
            .as_ref()
            .is_some_and(|url| parse_uplink_url(url.get_ref()).is_ok_and(|url| !url.tls));
        for (file, key) in [
            (&uplink.ca_file, "uplink.ca_file"),
            (&uplink.client_cert_file, "uplink.client_cert_file"),
            (&uplink.client_key_file, "uplink.client_key_file"),
        ] {
            if let (Some(file), true) = (file, plain) {
                self.report(file, format!("`{key}` needs an mqtts:// url"));
            }
        }
        match (&uplink.client_cert_file, &uplink.client_key_file) {
            (Some(cert), None) => self.report(
                cert,
                "`uplink.client_cert_file` needs `uplink.client_key_file`".to_owned(),
            ),
            (None, Some(key)) => self.report(
                key,
                "`uplink.client_key_file` needs `uplink.client_cert_file`".to_owned(),
            ),
            _ => {}
        }
        if let (Some(file), None) = (&uplink.password_file, &uplink.username) {
            self.report(
                file,
                "`uplink.password_file` needs `uplink.username`".to_owned(),
            );
        }

        if let Some(text) = &uplink.keep_alive {
            let keep_alive = self.duration(Some(text), "uplink.keep_alive", config.keep_alive);
            if keep_alive < MIN_KEEP_ALIVE || keep_alive > MAX_KEEP_ALIVE {
                self.invalid(
                    text,
                    "uplink.keep_alive",
                    "must be from 5s to 65535s".to_owned(),
                );
            } else if keep_alive.subsec_nanos() != 0 {
                self.invalid(
                    text,
                    "uplink.keep_alive",
                    "must be whole seconds".to_owned(),
                );
            }
            config.keep_alive = keep_alive;
        }
        config.max_inflight = self.integer(
            uplink.max_inflight.as_ref(),
            "uplink.max_inflight",
            config.max_inflight,
            1..=i64::from(u16::MAX),
        );
        config.reconnect_min = self.duration(
            uplink.reconnect_min.as_ref(),
            "uplink.reconnect_min",
            config.reconnect_min,
        );
        if let Some(text) = &uplink.reconnect_min
            && config.reconnect_min.is_zero()
        {
            self.invalid(
                text,
                "uplink.reconnect_min",
                "must be above zero".to_owned(),
            );
        }
        config.reconnect_max = self.duration(
            uplink.reconnect_max.as_ref(),
            "uplink.reconnect_max",
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
                    "`uplink.reconnect_max` ({:?}) must be at least `uplink.reconnect_min` ({:?})",
                    config.reconnect_max, config.reconnect_min
                ),
            );
        }
        config
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
        JournalConfig {
            max_size,
            max_age,
            when_full,
            synchronous,
        }
    }

    fn admin(&mut self, raw: &RawAdmin) -> AdminConfig {
        let default = AdminConfig::default();
        AdminConfig {
            listen: self.address(raw.listen.as_ref(), "admin.listen", default.listen),
        }
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
