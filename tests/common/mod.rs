//! The end-to-end harness: the real `edge-gateway` binary, real brokers (Mosquitto, or rumqttd
//! in this process), real MQTT clients, temp dirs and ephemeral ports on 127.0.0.1.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Polls `condition` every 50 ms until it holds or `timeout` passes; panics with `what` then.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A command running `program`, a binary built with the tests: directly, or through the
/// emulator named by `EDGE_TEST_RUNNER` when the tests are built for another architecture
/// (`scripts/test-pi.sh` sets `qemu-aarch64-static`). The kernel cannot run a foreign binary
/// itself where no binfmt_misc handler is registered, so the harness names the emulator.
pub fn built_program(program: impl AsRef<OsStr>) -> Command {
    match std::env::var_os("EDGE_TEST_RUNNER").filter(|runner| !runner.is_empty()) {
        Some(runner) => {
            let mut command = Command::new(runner);
            command.arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A command running the `edge-gateway` binary built with the tests.
pub fn edge_gateway() -> Command {
    built_program(env!("CARGO_BIN_EXE_edge-gateway"))
}

/// The LM3S6965 firmware image: `$EDGE_FIRMWARE_ELF`, or where `scripts/firmware.sh` builds it.
pub fn firmware_image() -> PathBuf {
    let image = std::env::var_os("EDGE_FIRMWARE_ELF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(
                "../firmware/boards/lm3s6965-qemu/target/thumbv7m-none-eabi/release/edge-board-lm3s6965",
            )
        });
    assert!(
        image.is_file(),
        "{} is missing: build it with scripts/firmware.sh (scripts/test.sh does)",
        image.display()
    );
    image
}

/// An unused TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("no free port")
}

/// Journal settings of a test gateway.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    pub max_size: String,
    pub when_full: &'static str,
    pub synchronous: &'static str,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self {
            max_size: "256MiB".into(),
            when_full: "drop_oldest",
            synchronous: "full",
        }
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
    /// section and `local_broker_extra` to its `[local_broker]` section (TOML lines), and starts
    /// the gateway.
    pub fn start_with(
        uplink_url: &str,
        uplink_extra: &str,
        local_broker_extra: &str,
        journal: JournalSettings,
    ) -> Self {
        let mut gateway = Self::prepare(uplink_url, uplink_extra, local_broker_extra, journal);
        gateway.spawn();
        gateway
    }

    /// [`Gateway::start_with`] without starting the process: only the config and its directory.
    pub fn prepare(
        uplink_url: &str,
        uplink_extra: &str,
        local_broker_extra: &str,
        journal: JournalSettings,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let device_port = free_port();
        let admin_port = free_port();
        let uplink_port = uplink_url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or(0);
        let config_path = dir.path().join("gateway.toml");
        let config = format!(
            r#"[gateway]
id = "test-gw"
data_dir = "{data}"

[local_broker]
listen = "127.0.0.1:{device_port}"
{local_broker_extra}
[uplink]
url = "{uplink_url}"
topic_prefix = "edge"
reconnect_min = "50ms"
reconnect_max = "500ms"
{uplink_extra}
[journal]
max_size = "{max_size}"
when_full = "{when_full}"
synchronous = "{synchronous}"

[admin]
listen = "127.0.0.1:{admin_port}"
"#,
            data = dir.path().join("data").display(),
            max_size = journal.max_size,
            when_full = journal.when_full,
            synchronous = journal.synchronous,
        );
        std::fs::write(&config_path, config).expect("write config");
        Self {
            dir,
            config_path,
            device_port,
            admin_port,
            uplink_port,
            child: None,
            runs: 0,
            env: Vec::new(),
        }
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.path().join("data").join("journal.db")
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

/// The value of `series` in a Prometheus text exposition. A family name without labels that
/// only has labelled series (e.g. `edge_uplink_connected`, labelled by uplink) gives their sum.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    let exact = text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    });
    if exact.is_some() || series.contains('{') {
        return exact;
    }
    let labelled: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(series)?.strip_prefix('{')?;
            rest.rsplit_once(' ')?.1.trim().parse().ok()
        })
        .collect();
    (!labelled.is_empty()).then(|| labelled.iter().sum())
}

pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// A minimal HTTP/1.0 GET: (status, body).
pub fn http_get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    http(address, "GET", path)
}

/// An empty-bodied `POST`.
pub fn http_post(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    http(address, "POST", path)
}

/// A GET with a bearer token.
pub fn http_get_with_token(address: SocketAddr, path: &str, token: &str) -> Option<(u16, String)> {
    request(
        address,
        "GET",
        path,
        &format!("Authorization: Bearer {token}\r\n"),
    )
}

fn http(address: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    request(address, method, path, "")
}

fn request(address: SocketAddr, method: &str, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{headers}Content-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())?;
    Some((status, body))
}

/// A Mosquitto broker of the test's own, on an ephemeral port, with persistence so that a
/// subscriber's session (and queued messages) survive a restart.
#[derive(Debug)]
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = format!(
            // `user root`: started as root, Mosquitto would otherwise drop to a user that cannot
            // write the persistence file in our temp dir, and sessions would not survive a restart.
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             max_queued_messages 0\nmax_inflight_messages 0\nautosave_interval 1\n",
            dir.path().display()
        );
        Self::launch(dir, port, &config)
    }

    /// A broker whose `port` is a plain listener allowing anonymous clients (for the cloud
    /// [`Subscriber`]), followed by `extra`: more listeners with settings of their own
    /// (`per_listener_settings` is on). It keeps root privileges when started as root, so that
    /// it can read the test's password and certificate files.
    pub fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = format!(
            "user root\nper_listener_settings true\nmax_queued_messages 0\nmax_inflight_messages 0\n\
             listener {port} 127.0.0.1\nallow_anonymous true\n{extra}\n"
        );
        Self::launch(dir, port, &config)
    }

    /// Writes `config` into `dir` and starts the broker listening on `port`.
    fn launch(dir: tempfile::TempDir, port: u16, config: &str) -> Self {
        std::fs::write(dir.path().join("mosquitto.conf"), config).expect("write mosquitto.conf");
        let mut broker = Self {
            port,
            dir,
            child: None,
        };
        broker.resume();
        broker
    }

    /// What the broker logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Starts the broker (again) on the same port.
    pub fn resume(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).expect("log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto)");
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_until("mosquitto to listen", Duration::from_secs(10), || {
            TcpStream::connect(address).is_ok()
        });
    }

    /// Stops the broker cleanly (it saves its sessions).
    pub fn pause(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An event as the cloud received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub topic: String,
    pub id: String,
    pub device: String,
    pub boot: u64,
    pub seq: u64,
    pub body: serde_json::Value,
    /// Position in arrival order, counting alerts too.
    pub order: usize,
}

/// An alert as the cloud received it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedAlert {
    pub body: serde_json::Value,
    /// Position in arrival order, counting events too.
    pub order: usize,
}

/// Everything a cloud subscriber received, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Inbox {
    messages: Arc<Mutex<Vec<Received>>>,
    statuses: Arc<Mutex<Vec<String>>>,
    alerts: Arc<Mutex<Vec<ReceivedAlert>>>,
    arrivals: Arc<std::sync::atomic::AtomicUsize>,
}

impl Inbox {
    fn push(&self, topic: &str, payload: &[u8]) {
        if topic.ends_with("/status") {
            self.statuses
                .lock()
                .expect("lock")
                .push(String::from_utf8_lossy(payload).into_owned());
            return;
        }
        let body: serde_json::Value =
            serde_json::from_slice(payload).expect("the cloud receives JSON");
        let order = self
            .arrivals
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if topic.ends_with("/alerts") {
            self.alerts
                .lock()
                .expect("lock")
                .push(ReceivedAlert { body, order });
            return;
        }
        let received = Received {
            order,
            topic: topic.to_owned(),
            id: body["id"].as_str().expect("id").to_owned(),
            device: body["device"].as_str().expect("device").to_owned(),
            boot: body["boot"].as_u64().expect("boot"),
            seq: body["seq"].as_u64().expect("seq"),
            body,
        };
        self.messages.lock().expect("lock").push(received);
    }

    /// The alerts received, in arrival order.
    pub fn alerts(&self) -> Vec<ReceivedAlert> {
        self.alerts.lock().expect("lock").clone()
    }

    pub fn all(&self) -> Vec<Received> {
        self.messages.lock().expect("lock").clone()
    }

    pub fn statuses(&self) -> Vec<String> {
        self.statuses.lock().expect("lock").clone()
    }

    /// Distinct ids received.
    pub fn unique(&self) -> usize {
        let messages = self.messages.lock().expect("lock");
        messages
            .iter()
            .map(|m| m.id.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Checks what the cloud got: duplicates share their id *and* content; after dropping
    /// duplicates, every device's events are in order. Returns the seqs per device.
    pub fn check_order_and_duplicates(&self) -> BTreeMap<String, Vec<u64>> {
        self.check_order(true)
    }

    /// Like [`Inbox::check_order_and_duplicates`], for events a device sent twice (a serial
    /// device resending after a gateway restart): a duplicate may then differ from the original
    /// in `received_at` only.
    pub fn check_order_and_resent_duplicates(&self) -> BTreeMap<String, Vec<u64>> {
        self.check_order(false)
    }

    fn check_order(&self, identical: bool) -> BTreeMap<String, Vec<u64>> {
        let messages = self.all();
        let mut first: HashMap<&str, &Received> = HashMap::new();
        let mut per_device: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for message in &messages {
            match first.get(message.id.as_str()) {
                Some(original) => {
                    let (mut first_body, mut again) = (original.body.clone(), message.body.clone());
                    if !identical {
                        first_body["received_at"] = serde_json::Value::Null;
                        again["received_at"] = serde_json::Value::Null;
                    }
                    assert_eq!(
                        first_body, again,
                        "a duplicate must be identical to the original"
                    );
                }
                None => {
                    first.insert(&message.id, message);
                    assert_eq!(
                        message.topic,
                        format!("edge/test-gw/devices/{}/events", message.device)
                    );
                    assert_eq!(
                        message.id,
                        format!("{}:{}:{}", message.device, message.boot, message.seq)
                    );
                    per_device
                        .entry(message.device.clone())
                        .or_default()
                        .push(message.seq);
                }
            }
        }
        for (device, seqs) in &per_device {
            assert!(
                seqs.windows(2).all(|pair| pair[0] < pair[1]),
                "events of {device} out of order: {seqs:?}"
            );
        }
        per_device
    }
}

/// A cloud-side subscriber over MQTT (to Mosquitto), with a persistent session.
pub struct Subscriber {
    pub inbox: Inbox,
    runtime: tokio::runtime::Runtime,
}

impl Subscriber {
    pub fn connect(port: u16) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let inbox = Inbox::default();
        let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
        {
            let inbox = inbox.clone();
            runtime.spawn(async move {
                let mut options =
                    MqttOptions::new(format!("cloud-{}", free_port()), "127.0.0.1", port);
                options
                    .set_clean_session(false)
                    .set_keep_alive(Duration::from_secs(30))
                    .set_max_packet_size(1 << 20, 1 << 20)
                    .set_inflight(1000);
                let (client, mut event_loop) = AsyncClient::new(options, 100);
                let mut subscribed_tx = Some(subscribed_tx);
                loop {
                    match event_loop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            if !ack.session_present {
                                let _ = client.try_subscribe("edge/#", QoS::AtLeastOnce);
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(tx) = subscribed_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            inbox.push(&publish.topic, &publish.payload)
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            });
        }
        subscribed
            .recv_timeout(Duration::from_secs(10))
            .expect("cloud subscriber did not subscribe");
        Self { inbox, runtime }
    }
}

/// Publishes `per_device` JSON events from each of `devices` simulated devices (QoS 1) to the
/// gateway, and returns once the gateway's broker acknowledged all of them.
pub fn publish_events(device_port: u16, devices: usize, per_device: u32) -> u64 {
    publish_events_paced(device_port, devices, per_device, Duration::from_micros(100))
}

/// [`publish_events`] with each device waiting `interval` between events.
pub fn publish_events_paced(
    device_port: u16,
    devices: usize,
    per_device: u32,
    interval: Duration,
) -> u64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let tasks: Vec<_> = (0..devices)
            .map(|index| {
                let config = edge_sim::mqtt::DeviceConfig {
                    name: format!("dev-{index:03}"),
                    index,
                    host: "127.0.0.1".into(),
                    port: device_port,
                    interval,
                    count: Some(per_device),
                    format: if index % 2 == 0 {
                        edge_sim::mqtt::Format::Json
                    } else {
                        edge_sim::mqtt::Format::Cbor
                    },
                    boot: 1,
                };
                tokio::spawn(edge_sim::mqtt::run_device(config, stopped.clone()))
            })
            .collect();
        let mut acked = 0;
        for task in tasks {
            acked += task.await.expect("device task");
        }
        acked
    })
}

/// Publishes raw payloads to topics with one client (QoS 1), waiting for each PUBACK.
pub fn publish_raw(device_port: u16, messages: &[(String, Vec<u8>)]) {
    if let Err(error) = try_publish_raw_as(device_port, None, messages) {
        panic!("raw publisher failed: {error}");
    }
}

/// Publishes raw payloads at QoS 1 as a device logging in with `credentials` (user, password),
/// waiting for each PUBACK. An error if the connection fails or is refused before all are acked.
pub fn try_publish_raw_as(
    device_port: u16,
    credentials: Option<(&str, &str)>,
    messages: &[(String, Vec<u8>)],
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut options =
            MqttOptions::new(format!("raw-{}", free_port()), "127.0.0.1", device_port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        let (client, mut event_loop) = AsyncClient::new(options, messages.len() + 10);
        for (topic, payload) in messages {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("queue publish");
        }
        let mut acked = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while acked < messages.len() {
            match tokio::time::timeout_at(deadline, event_loop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack))))
                    if ack.code != rumqttc::ConnectReturnCode::Success =>
                {
                    return Err(format!("refused: {:?}", ack.code));
                }
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(format!("connection failed: {error}")),
                Err(_) => {
                    return Err(format!(
                        "timed out with {acked} of {} acked",
                        messages.len()
                    ));
                }
            }
        }
        Ok(())
    })
}

pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

/// A "cloud" rumqttd broker in this process; a link subscriber fills the inbox.
pub struct RumqttdCloud {
    pub port: u16,
    pub inbox: Inbox,
    runtime: tokio::runtime::Runtime,
}

impl RumqttdCloud {
    pub fn start() -> Self {
        let port = free_port();
        let (mut link_tx, mut link_rx) = edge_gateway::cloud_broker::start_cloud_broker(
            SocketAddr::from(([127, 0, 0, 1], port)),
        )
        .expect("start rumqttd");
        link_tx.try_subscribe("edge/#").expect("subscribe");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let inbox = Inbox::default();
        {
            let inbox = inbox.clone();
            runtime.spawn(async move {
                let _keep = link_tx;
                loop {
                    match link_rx.next().await {
                        Ok(Some(rumqttd::Notification::Forward(forward))) => inbox.push(
                            &String::from_utf8_lossy(&forward.publish.topic),
                            &forward.publish.payload,
                        ),
                        Ok(Some(rumqttd::Notification::Unschedule)) => {
                            if link_rx.wake().await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
        }
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until("rumqttd to listen", Duration::from_secs(10), || {
            TcpStream::connect(address).is_ok()
        });
        Self {
            port,
            inbox,
            runtime,
        }
    }
}

/// A fleet of simulated devices publishing in the background; tracks how many events each
/// device's broker acknowledged (PUBACKs come in order, so `k` acks mean seqs `0..k`).
pub struct Fleet {
    pub acked: Vec<Arc<std::sync::atomic::AtomicU64>>,
    stop: tokio::sync::watch::Sender<bool>,
    runtime: tokio::runtime::Runtime,
}

impl Fleet {
    /// `devices` devices publishing JSON every `interval` until stopped.
    pub fn start(device_port: u16, devices: usize, interval: Duration) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let acked: Vec<Arc<AtomicU64>> =
            (0..devices).map(|_| Arc::new(AtomicU64::new(0))).collect();
        for (index, counter) in acked.iter().enumerate() {
            let counter = Arc::clone(counter);
            let mut stopped = stopped.clone();
            runtime.spawn(async move {
                let name = format!("dev-{index:03}");
                let mut options =
                    MqttOptions::new(format!("fleet-{name}"), "127.0.0.1", device_port);
                options.set_clean_session(true);
                let (client, mut event_loop) = AsyncClient::new(options, 1000);
                let poller = tokio::spawn(async move {
                    loop {
                        match event_loop.poll().await {
                            Ok(Event::Incoming(Packet::PubAck(_))) => {
                                counter.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(_) => {}
                            // the broker is gone: stop (a reconnect would resend with new acks)
                            Err(_) => return,
                        }
                    }
                });
                let mut ticker = tokio::time::interval(interval);
                for seq in 0u32.. {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = stopped.changed() => break,
                    }
                    let body = format!(
                        r#"{{"device":"{name}","boot":1,"seq":{seq},"readings":{{"n":{seq}}}}}"#
                    );
                    if client
                        .try_publish(
                            format!("devices/{name}/events"),
                            QoS::AtLeastOnce,
                            false,
                            body,
                        )
                        .is_err()
                    {
                        break;
                    }
                    if poller.is_finished() {
                        break;
                    }
                }
                poller.abort();
            });
        }
        Self {
            acked,
            stop,
            runtime,
        }
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Acknowledged events per device, in device order.
    pub fn acked(&self) -> Vec<u64> {
        self.acked
            .iter()
            .map(|counter| counter.load(std::sync::atomic::Ordering::SeqCst))
            .collect()
    }
}

/// A pseudo-terminal standing in for a serial device: the test holds the master side, and the
/// gateway opens the slave side through a symlink that survives "unplugging". The master is
/// opened close-on-exec, so that no gateway started meanwhile keeps it open.
pub struct Pty {
    pub link: PathBuf,
    master: Option<std::fs::File>,
    decoder: Box<edge_wire::link::FrameDecoder<{ edge_wire::link::MAX_FRAME_LEN }>>,
}

impl Pty {
    /// A new pty, reachable at `dir/name`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut pty = Self {
            link: dir.join(name),
            master: None,
            decoder: Box::new(edge_wire::link::FrameDecoder::new()),
        };
        pty.plug();
        pty
    }

    /// Creates a fresh pty pair in raw mode and points the link at its slave side.
    pub fn plug(&mut self) {
        let pair = edge_sim::serial::create_pty(Some(&self.link)).expect("create a pty");
        self.master = Some(pair.master);
    }

    /// Closes the master side and removes the link, as when a USB adapter is pulled out.
    pub fn unplug(&mut self) {
        self.master = None;
        let _ = std::fs::remove_file(&self.link);
    }

    pub fn write(&mut self, mut bytes: &[u8]) {
        let master = self.master.as_mut().expect("pty plugged in");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !bytes.is_empty() {
            match master.write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "pty write stalled");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => panic!("write to pty: {error}"),
            }
        }
    }

    /// Reads frames from the gateway until `condition` holds for the acks seen so far, or
    /// `timeout`. Returns every ack received.
    pub fn read_acks_until(
        &mut self,
        timeout: Duration,
        mut condition: impl FnMut(&[edge_wire::link::Ack]) -> bool,
    ) -> Vec<edge_wire::link::Ack> {
        let master = self.master.as_mut().expect("pty plugged in");
        let deadline = Instant::now() + timeout;
        let mut acks = Vec::new();
        let mut buf = [0u8; 512];
        while !condition(&acks) && Instant::now() < deadline {
            let n = match master.read(&mut buf) {
                Ok(n) if n > 0 => n,
                Ok(_) => break,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(_) => break,
            };
            let mut input = &buf[..n];
            while let Some(result) = self.decoder.decode(&mut input) {
                if let Ok(edge_wire::link::Message::Ack(ack)) = result {
                    acks.push(ack);
                }
            }
        }
        acks
    }
}

/// Frames of the serial link, for tests that speak it byte by byte.
pub mod frames {
    use edge_wire::Readings;
    use edge_wire::link::{Hello, MAX_FRAME_LEN, Message, Sample, encode_frame};

    pub fn encode(message: &Message<'_>) -> Vec<u8> {
        let mut scratch = vec![0u8; MAX_FRAME_LEN];
        let mut out = vec![0u8; MAX_FRAME_LEN * 2];
        let len = encode_frame(message, &mut scratch, &mut out).expect("encode frame");
        out.truncate(len);
        out
    }

    pub fn hello(device: &str, boot: u32, oldest_seq: u32) -> Vec<u8> {
        encode(&Message::Hello(Hello {
            device,
            boot,
            firmware_version: "test-1.0",
            oldest_seq,
        }))
    }

    /// A sample with one reading, `n = seq`.
    pub fn sample(boot: u32, seq: u32) -> Vec<u8> {
        sample_with(boot, seq, f64::from(seq))
    }

    pub fn sample_with(boot: u32, seq: u32, value: f64) -> Vec<u8> {
        let mut readings = Readings::new();
        readings.push("n", value).expect("reading");
        encode(&Message::Sample(Sample {
            boot,
            seq,
            ts: None,
            kind: None,
            readings,
        }))
    }
}
