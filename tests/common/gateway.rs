//! The gateway under test: its configuration (a typed builder), its process, its admin API.

use super::*;

/// Journal settings of a test gateway.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    pub max_size: String,
    pub max_age: String,
    pub when_full: &'static str,
    pub synchronous: &'static str,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self {
            max_size: "256MiB".into(),
            max_age: "7d".into(),
            when_full: "drop_oldest",
            synchronous: "full",
        }
    }
}

/// What a test gateway is configured with.
#[derive(Debug, Clone, Default)]
pub struct GatewaySetup {
    /// Its destinations, as `[[uplink]]` tables.
    pub uplinks: Vec<Uplink>,
    /// Write the one uplink as the single `[uplink]` table of the first release.
    pub single_uplink_table: bool,
    /// TOML lines added to `[devices]`.
    pub devices_extra: String,
    pub journal: JournalSettings,
    /// TOML written at the end (e.g. `[[rule]]` tables).
    pub extra: String,
}

impl GatewaySetup {
    /// A gateway with these uplinks and the default journal.
    pub fn with(uplinks: impl IntoIterator<Item = Uplink>) -> Self {
        Self {
            uplinks: uplinks.into_iter().collect(),
            ..Self::default()
        }
    }
}

/// One `[[uplink]]` of a test gateway: its url and settings (TOML values, written as they are).
#[derive(Debug, Clone)]
pub struct Uplink {
    pub url: String,
    pub settings: Vec<(String, String)>,
    /// Raw TOML lines, for what a test writes by hand.
    pub extra: String,
}

impl Uplink {
    fn quick(url: String) -> Self {
        Self {
            url,
            settings: vec![
                ("reconnect_min".into(), "\"50ms\"".into()),
                ("reconnect_max".into(), "\"500ms\"".into()),
            ],
            extra: String::new(),
        }
    }

    /// An MQTT uplink to `127.0.0.1:port`, topics under `edge`.
    pub fn mqtt(port: u16) -> Self {
        Self::quick(format!("mqtt://127.0.0.1:{port}")).set("topic_prefix", "edge")
    }

    /// A NATS JetStream uplink to `127.0.0.1:port`, into `stream`, subjects under `prefix`.
    pub fn nats(port: u16, stream: &str, prefix: &str) -> Self {
        Self::quick(format!("nats://127.0.0.1:{port}"))
            .set("stream", stream)
            .set("subject_prefix", prefix)
    }

    /// An AMQP uplink to `127.0.0.1:port` (RabbitMQ's default login, guest), into `exchange`.
    pub fn amqp(port: u16, exchange: &str) -> Self {
        Self::quick(format!("amqp://127.0.0.1:{port}")).set("exchange", exchange)
    }

    /// A Kafka uplink to the `bootstrap` brokers (`host:port,…`), into the topics of
    /// [`KafkaTopics::named`]`(prefix)`.
    pub fn kafka(bootstrap: &str, prefix: &str) -> Self {
        let brokers: Vec<String> = bootstrap
            .split(',')
            .map(|broker| format!("{broker:?}"))
            .collect();
        let topics = KafkaTopics::named(prefix);
        Self::quick(String::new())
            .set("type", "kafka")
            .set_toml("brokers", &format!("[{}]", brokers.join(", ")))
            .set("topic", &topics.events)
            .set("alerts_topic", &topics.alerts)
            .set("status_topic", &topics.status)
    }

    /// An EventBridge uplink to `bus` through the endpoint at `127.0.0.1:port` (moto, or a
    /// proxy in front of it). The gateway needs AWS credentials in its environment: see
    /// [`Gateway::with_aws_credentials`].
    pub fn eventbridge(port: u16, bus: &str) -> Self {
        Self::quick(String::new())
            .set("type", "eventbridge")
            .set("event_bus", bus)
            .set("region", "us-east-1")
            .set("endpoint", &format!("http://127.0.0.1:{port}"))
    }

    /// Sets a string setting.
    pub fn set(self, key: &str, value: &str) -> Self {
        self.set_toml(key, &format!("{value:?}"))
    }

    /// Sets a setting to a TOML value written as it is (a number, an array).
    pub fn set_toml(mut self, key: &str, value: &str) -> Self {
        self.settings.retain(|(other, _)| other != key);
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The broker port of its url.
    pub fn port(&self) -> u16 {
        self.url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|port| port.split('/').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or(0)
    }

    fn render(&self) -> String {
        let mut out = String::new();
        if !self.url.is_empty() {
            out.push_str(&format!("url = {:?}\n", self.url));
        }
        for (key, value) in &self.settings {
            out.push_str(&format!("{key} = {value}\n"));
        }
        out.push_str(&self.extra);
        out.push('\n');
        out
    }
}

/// A gateway process and everything it needs on disk.
#[derive(Debug)]
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub device_port: u16,
    pub admin_port: u16,
    pub uplink_port: u16,
    child: Option<Child>,
    runs: usize,
    env: Vec<(String, String)>,
}

impl Gateway {
    /// Writes a config forwarding to `uplink_port` and starts the gateway.
    pub fn start(uplink_port: u16, journal: JournalSettings) -> Self {
        Self::start_with(&format!("mqtt://127.0.0.1:{uplink_port}"), "", "", journal)
    }

    /// Writes a config forwarding to `uplink_url`, with `uplink_extra` added to its `[uplink]`
    /// section and `devices_extra` to its `[devices]` section (TOML lines), and starts
    /// the gateway.
    pub fn start_with(
        uplink_url: &str,
        uplink_extra: &str,
        devices_extra: &str,
        journal: JournalSettings,
    ) -> Self {
        let mut gateway = Self::prepare(uplink_url, uplink_extra, devices_extra, journal);
        gateway.spawn();
        gateway
    }

    /// [`Gateway::start_with`] without starting the process: only the config and its directory.
    /// The uplink is written as the single `[uplink]` table of the first release.
    pub fn prepare(
        uplink_url: &str,
        uplink_extra: &str,
        devices_extra: &str,
        journal: JournalSettings,
    ) -> Self {
        let uplink = Uplink {
            url: uplink_url.to_owned(),
            settings: vec![
                ("topic_prefix".into(), "\"edge\"".into()),
                ("reconnect_min".into(), "\"50ms\"".into()),
                ("reconnect_max".into(), "\"500ms\"".into()),
            ],
            extra: uplink_extra.to_owned(),
        };
        let uplink_port = uplink.port();
        let mut gateway = Self::prepare_with(GatewaySetup {
            uplinks: vec![uplink],
            single_uplink_table: true,
            devices_extra: devices_extra.to_owned(),
            journal,
            extra: String::new(),
        });
        gateway.uplink_port = uplink_port;
        gateway
    }

    /// Writes the configuration `setup` describes, in a directory of its own; does not start.
    pub fn prepare_with(setup: GatewaySetup) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let device_port = free_port();
        let admin_port = free_port();
        let config_path = dir.path().join("gateway.toml");
        let journal = &setup.journal;
        let mut config = format!(
            r#"[gateway]
id = "test-gw"
data_dir = "{data}"

[devices]
listen = "127.0.0.1:{device_port}"
{devices_extra}
[journal]
max_size = "{max_size}"
max_age = "{max_age}"
when_full = "{when_full}"
synchronous = "{synchronous}"

[admin]
listen = "127.0.0.1:{admin_port}"
"#,
            data = dir.path().join("data").display(),
            devices_extra = setup.devices_extra,
            max_size = journal.max_size,
            max_age = journal.max_age,
            when_full = journal.when_full,
            synchronous = journal.synchronous,
        );
        for uplink in &setup.uplinks {
            config.push_str(if setup.single_uplink_table {
                "\n[uplink]\n"
            } else {
                "\n[[uplink]]\n"
            });
            config.push_str(&uplink.render());
        }
        config.push_str(&setup.extra);
        std::fs::write(&config_path, config).expect("write config");
        Self {
            dir,
            config_path,
            device_port,
            admin_port,
            uplink_port: setup.uplinks.first().map_or(0, Uplink::port),
            child: None,
            runs: 0,
            env: Vec::new(),
        }
    }

    /// Writes the configuration `setup` describes and starts the gateway.
    pub fn start_setup(setup: GatewaySetup) -> Self {
        let mut gateway = Self::prepare_with(setup);
        gateway.spawn();
        gateway
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.path().join("data").join("journal.db")
    }

    /// What `edge-gateway journal {command} --config …` prints for this gateway's journal
    /// (`stats`, `inspect`); panics if it fails.
    pub fn journal_command(&self, command: &str) -> String {
        let output = edge_gateway()
            .args(["journal", command, "--config"])
            .arg(&self.config_path)
            .output()
            .expect("run edge-gateway journal");
        assert!(
            output.status.success(),
            "journal {command} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn log(&self) -> String {
        (1..=self.runs)
            .map(|run| {
                std::fs::read_to_string(self.dir.path().join(format!("gateway-{run}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sets an environment variable for the gateway processes started from now on.
    pub fn set_env(&mut self, key: &str, value: impl Into<String>) {
        self.env.push((key.to_owned(), value.into()));
    }

    /// Prepares a gateway with `setup` and AWS credentials in its environment (moto takes any),
    /// and starts it.
    pub fn with_aws_credentials(setup: GatewaySetup) -> Self {
        let mut gateway = Self::prepare_with(setup);
        gateway.set_env("AWS_ACCESS_KEY_ID", "testing");
        gateway.set_env("AWS_SECRET_ACCESS_KEY", "testing");
        // Nothing of the machine's own AWS set-up may be read.
        gateway.set_env("AWS_CONFIG_FILE", "/dev/null");
        gateway.set_env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        gateway.set_env("AWS_EC2_METADATA_DISABLED", "true");
        gateway.spawn();
        gateway
    }

    /// Starts (again) the gateway process and waits for its admin server and device broker.
    ///
    /// The ports come from [`free_port`], which cannot reserve them: if another process took one
    /// meanwhile and the gateway cannot listen, the config gets fresh ports and the gateway is
    /// started again (at most twice).
    pub fn spawn(&mut self) {
        for attempt in 0.. {
            match self.try_spawn() {
                Ok(()) => return,
                Err(log) if attempt < 2 && log.contains("failed to listen") => self.new_ports(),
                Err(log) => panic!("gateway exited early:\n{log}"),
            }
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "gateway already running");
        self.runs += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("gateway-{}.log", self.runs)))
            .expect("log");
        let child = edge_gateway()
            .args(["run", "--config"])
            .arg(&self.config_path)
            .env("EDGE_LOG", "info,rumqttd=warn,rumqttc=warn")
            // Not systemd's of a test run under it: a test that wants them sets its own.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn edge-gateway");
        self.child = Some(child);
        let admin = SocketAddr::from(([127, 0, 0, 1], self.admin_port));
        let devices = SocketAddr::from(([127, 0, 0, 1], self.device_port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("exit status {status}\n{}", self.log()));
            }
            if http_get(admin, "/healthz").is_some_and(|(status, _)| status == 200)
                && TcpStream::connect(devices).is_ok()
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not start in 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Moves the device and admin listeners to fresh ports.
    fn new_ports(&mut self) {
        let (device_port, admin_port) = (free_port(), free_port());
        let config = std::fs::read_to_string(&self.config_path).expect("read config");
        let config = config
            .replace(
                &format!("127.0.0.1:{}\"", self.device_port),
                &format!("127.0.0.1:{device_port}\""),
            )
            .replace(
                &format!("127.0.0.1:{}\"", self.admin_port),
                &format!("127.0.0.1:{admin_port}\""),
            );
        std::fs::write(&self.config_path, config).expect("write config");
        self.device_port = device_port;
        self.admin_port = admin_port;
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("gateway not running");
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("gateway did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the running gateway.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn admin(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    pub fn metrics(&self) -> String {
        http_get(self.admin(), "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The value of one series, e.g. `edge_journal_rows` or
    /// `edge_events_rejected_total{reason="invalid_json"}`.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series).unwrap_or(f64::NAN)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}
