//! What the `edge-alerts` end-to-end tests share: a Mosquitto of their own, the real binary,
//! an MQTT publisher that waits for every PUBACK, and a small HTTP client.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free port")
}

pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn mosquitto(dir: &std::path::Path) -> (Running, u16) {
    let port = free_port();
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"),
    )
    .expect("write config");
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (apt-get install mosquitto)");
    wait_until("mosquitto", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (Running(child), port)
}

pub fn edge_alerts(port: u16, args: &[&str], log: &std::path::Path) -> Running {
    let port = port.to_string();
    let mut all = vec!["--port", &port];
    all.extend_from_slice(args);
    edge_alerts_with(&all, log)
}

/// Starts `edge-alerts` with `args` alone (which say where it consumes from).
pub fn edge_alerts_with(args: &[&str], log: &std::path::Path) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_edge-alerts"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("spawn edge-alerts");
    Running(child)
}

/// Runs `work` on the SQLite store at `path`, on a runtime of its own.
pub fn query<T>(
    path: &std::path::Path,
    work: impl AsyncFnOnce(&edge_alerts::store::sqlite::SqliteStore) -> T,
) -> T {
    let store = edge_alerts::store::sqlite::SqliteStore::open(path).expect("open store");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(work(&store))
}

/// Publishes `messages` (topic, payload) at QoS 1 and waits for every PUBACK.
pub fn publish(port: u16, messages: &[(String, Vec<u8>)]) {
    publish_as(port, None, messages);
}

/// Publishes `messages` like [`publish`], logged in as `login` (user, password) when given.
pub fn publish_as(port: u16, login: Option<(&str, &str)>, messages: &[(String, Vec<u8>)]) {
    if let Err(error) = try_publish_as(port, login, messages) {
        panic!("publisher failed: {error}");
    }
}

/// Publishes `messages` like [`publish_as`]; `Err` if the broker closes the connection (as
/// Mosquitto does to a publish its access control denies) before acknowledging them all.
pub fn try_publish_as(
    port: u16,
    login: Option<(&str, &str)>,
    messages: &[(String, Vec<u8>)],
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut options = MqttOptions::new(format!("gw-{}", free_port()), "127.0.0.1", port);
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        let (client, mut event_loop) = AsyncClient::new(options, messages.len() + 10);
        for (topic, payload) in messages {
            // Gateways retain their status.
            let retain = topic.ends_with("/status");
            client
                .publish(topic, QoS::AtLeastOnce, retain, payload.clone())
                .await
                .expect("queue");
        }
        let mut acked = 0;
        while acked < messages.len() {
            match tokio::time::timeout(Duration::from_secs(20), event_loop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                Ok(Ok(_)) => {}
                other => return Err(format!("{other:?}")),
            }
        }
        Ok(())
    })
}

pub fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the API");
    let auth = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of counter `name` in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

/// Starts `edge-alerts` serving its API on a port of its own with token `s3cret`; returns the
/// process and the API port.
pub fn edge_alerts_with_api(
    port: u16,
    args: &[&str],
    dir: &std::path::Path,
    name: &str,
) -> (Running, u16) {
    let port = port.to_string();
    let mut all = vec!["--port", &port];
    all.extend_from_slice(args);
    edge_alerts_serving(&all, dir, name)
}

/// Starts `edge-alerts` with `args` alone (which say where it consumes from), serving its API
/// on a port of its own with token `s3cret`; returns the process and the API port.
pub fn edge_alerts_serving(args: &[&str], dir: &std::path::Path, name: &str) -> (Running, u16) {
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret\n").expect("write token");
    let api_port = free_port();
    let listen = format!("127.0.0.1:{api_port}");
    let mut all = vec![
        "--listen",
        &listen,
        "--token-file",
        token_file.to_str().expect("utf-8 path"),
    ];
    all.extend_from_slice(args);
    let service = edge_alerts_with(&all, &dir.join(format!("{name}.log")));
    wait_until("the API", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", api_port)).is_ok()
    });
    (service, api_port)
}

/// Publishes gateway `gateway`'s retained status on the broker at `port` and waits until the
/// consumer serving its API on `api_port` has taken it: from then on it holds its subscription,
/// and what is published next reaches it (a message published before would go to nobody).
pub fn announce_and_wait_subscribed(port: u16, api_port: u16, gateway: &str) {
    publish(
        port,
        &[(format!("edge/{gateway}/status"), b"online".to_vec())],
    );
    wait_until("the consumer to subscribe", Duration::from_secs(20), || {
        let counters = consumer_counters(api_port);
        counters.applied + counters.duplicates >= 1
    });
}

/// What an `edge-alerts` consumer has done, from its `/metrics` on `api_port`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerCounters {
    pub applied: u64,
    pub duplicates: u64,
    pub refused: u64,
}

pub fn consumer_counters(api_port: u16) -> ConsumerCounters {
    let (_, text) = http_get(api_port, "/metrics", Some("s3cret"));
    ConsumerCounters {
        applied: metric(&text, "edge_alerts_messages_applied_total").unwrap_or(0),
        duplicates: metric(&text, "edge_alerts_messages_duplicate_total").unwrap_or(0),
        refused: metric(&text, "edge_alerts_messages_refused_total").unwrap_or(0),
    }
}

/// The machine's PostgreSQL (127.0.0.1:5432, trust, database `test`).
pub const POSTGRES: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// A PostgreSQL schema of the test's own, dropped with this value.
pub struct PostgresSchema {
    pub name: String,
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl PostgresSchema {
    pub fn new(label: &str) -> Self {
        let name = format!("edge_alerts_{label}_{:08x}", rand::random::<u32>());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (client, connection) = runtime
            .block_on(tokio_postgres::connect(POSTGRES, tokio_postgres::NoTls))
            .expect("PostgreSQL on 127.0.0.1:5432");
        runtime.spawn(connection);
        Self {
            name,
            runtime,
            client,
        }
    }

    /// `SELECT count(*) FROM {table}`, or -1 while the table does not exist.
    pub fn count(&self, table: &str) -> i64 {
        self.count_where(table, "true")
    }

    /// `SELECT count(*) FROM {table} WHERE {condition}`, or -1 while the table does not exist.
    pub fn count_where(&self, table: &str, condition: &str) -> i64 {
        let sql = format!(
            "SELECT count(*) FROM \"{}\".{table} WHERE {condition}",
            self.name
        );
        self.runtime
            .block_on(self.client.query_one(&sql, &[]))
            .map(|row| row.get(0))
            .unwrap_or(-1)
    }
}

impl Drop for PostgresSchema {
    fn drop(&mut self) {
        let drop = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        let _ = self.runtime.block_on(self.client.batch_execute(&drop));
    }
}

/// Sends `signal` (`STOP`, `KILL` …) to the process.
pub fn signal(process: &Running, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), process.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`),
/// killed with its driver when dropped.
pub struct Browser {
    pub client: fantoccini::Client,
    driver: Running,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
    }
}

impl Browser {
    /// Starts `chromedriver` on a port of its own and opens a session in headless Chromium.
    pub async fn start() -> Self {
        let port = free_port();
        // Its own process group: the browsers it starts go with it, even when a test fails
        // before closing its session.
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium chromium-driver)");
        let driver = Running(driver);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--window-size=1280,1000",
                ],
            }),
        );
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
        Self { client, driver }
    }

    /// Logs in to the dashboard at `base` as `name`, and waits for its live stream.
    pub async fn log_in(&self, base: &str, name: &str, token: &str) {
        use fantoccini::Locator;
        self.client.goto(base).await.expect("open the dashboard");
        self.client
            .find(Locator::Id("login-name"))
            .await
            .expect("the login form")
            .send_keys(name)
            .await
            .expect("type");
        self.client
            .find(Locator::Id("login-token"))
            .await
            .expect("the token field")
            .send_keys(token)
            .await
            .expect("type");
        self.client
            .find(Locator::Id("login-submit"))
            .await
            .expect("the button")
            .click()
            .await
            .expect("click");
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#live[data-state=\"open\"]"))
            .await
            .expect("the dashboard, live");
    }
}
