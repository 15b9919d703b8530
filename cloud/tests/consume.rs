//! End to end: the real `edge-alerts` binary consuming from a Mosquitto of the test's own, with
//! messages published as gateways publish them, redeliveries and garbage included.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edge_alerts::AlertState;
use edge_alerts::store::sqlite::SqliteStore;
use edge_alerts::store::{AlertFilter, Store};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free port")
}

fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
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
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto(dir: &std::path::Path) -> (Running, u16) {
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

fn edge_alerts(port: u16, args: &[&str], log: &std::path::Path) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_edge-alerts"))
        .args(["--port", &port.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("spawn edge-alerts");
    Running(child)
}

/// Publishes `messages` (topic, payload) at QoS 1 and waits for every PUBACK.
fn publish(port: u16, messages: &[(String, Vec<u8>)]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let options = MqttOptions::new(format!("gw-{}", free_port()), "127.0.0.1", port);
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
                other => panic!("publisher failed: {other:?}"),
            }
        }
    });
}

fn event(seq: u32) -> (String, Vec<u8>) {
    (
        "edge/gw/devices/d1/events".into(),
        format!(
            r#"{{"id":"d1:1:{seq}","gateway":"gw","device":"d1","boot":1,"seq":{seq},"received_at":{seq},"readings":{{"temp_c":{seq}}}}}"#
        )
        .into_bytes(),
    )
}

fn alert(state: &str, at: i64) -> (String, Vec<u8>) {
    (
        "edge/gw/alerts".into(),
        format!(
            r#"{{"id":"gw:alert:1","gateway":"gw","rule":"hot","device":"d1","state":"{state}","severity":"critical","at":{at},"value":36.0,"event":"d1:1:5","labels":{{}}}}"#
        )
        .into_bytes(),
    )
}

fn query<T>(path: &std::path::Path, work: impl AsyncFnOnce(&SqliteStore) -> T) -> T {
    let store = SqliteStore::open(path).expect("open store");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(work(&store))
}

#[test]
fn messages_are_stored_once_whatever_the_redeliveries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, port) = mosquitto(dir.path());
    let db = dir.path().join("alerts.db");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").expect("write token");
    let api_port = free_port();
    let listen = format!("127.0.0.1:{api_port}");
    let _service = edge_alerts(
        port,
        &[
            "--sqlite",
            db.to_str().expect("utf-8 path"),
            "--listen",
            &listen,
            "--token-file",
            token_file.to_str().expect("utf-8 path"),
        ],
        &dir.path().join("edge-alerts.log"),
    );
    // Let it subscribe: its status subscription sees this retained message once it does.
    publish(port, &[("edge/gw/status".into(), b"online".to_vec())]);
    wait_until("the consumer to subscribe", Duration::from_secs(10), || {
        query(&db, async |store| {
            store.gateways().await.map(|g| g.len()).unwrap_or(0)
        }) == 1
    });

    let mut messages: Vec<(String, Vec<u8>)> = (0..50).map(event).collect();
    messages.extend((0..50).map(event)); // every event delivered twice
    messages.push(alert("resolved", 2000)); // out of order: resolved before firing
    messages.push(alert("firing", 1000));
    messages.push(alert("firing", 1000));
    messages.push(("edge/gw/alerts".into(), b"garbage".to_vec()));
    messages.push(("somewhere/else".into(), b"{}".to_vec()));
    publish(port, &messages);

    wait_until("the alert in the store", Duration::from_secs(20), || {
        query(&db, async |store| {
            store
                .alerts(&AlertFilter::default())
                .await
                .map(|alerts| alerts.first().is_some_and(|alert| alert.fired_at.is_some()))
                .unwrap_or(false)
        })
    });
    let (alerts, devices) = query(&db, async |store| {
        (
            store.alerts(&AlertFilter::default()).await.expect("alerts"),
            store.devices().await.expect("devices"),
        )
    });
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].state, AlertState::Resolved);
    assert_eq!(
        (alerts[0].fired_at, alerts[0].resolved_at),
        (Some(1000), Some(2000))
    );
    wait_until("every event in", Duration::from_secs(20), || {
        query(&db, async |store| {
            store
                .devices()
                .await
                .map(|devices| devices.first().is_some_and(|device| device.last_seen == 49))
                .unwrap_or(false)
        })
    });
    assert_eq!(devices.len(), 1);
    let seen: i64 = rusqlite::Connection::open(&db)
        .expect("open")
        .query_row("SELECT count(*) FROM seen", [], |row| row.get(0))
        .expect("count");
    assert_eq!(seen, 52, "50 events and 2 alert transitions, each once");

    // The API serves what was stored, to holders of the token only.
    let (status, body) = http_get(api_port, "/api/alerts", Some("s3cret"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""id":"gw:alert:1""#) && body.contains(r#""state":"resolved""#),
        "{body}"
    );
    assert_eq!(http_get(api_port, "/api/alerts", None).0, 401);
    assert_eq!(http_get(api_port, "/healthz", None).0, 200);
}

fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
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

#[test]
fn two_instances_sharing_a_subscription_store_each_message_once() {
    const POSTGRES: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, port) = mosquitto(dir.path());
    let schema = format!("edge_alerts_scale_{}", rand::random::<u32>());
    let instances: Vec<Running> = (0..2)
        .map(|n| {
            edge_alerts(
                port,
                &[
                    "--postgres",
                    POSTGRES,
                    "--schema",
                    &schema,
                    "--group",
                    "alerts",
                    "--client-id",
                    &format!("edge-alerts-{n}"),
                ],
                &dir.path().join(format!("edge-alerts-{n}.log")),
            )
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (client, connection) = runtime
        .block_on(tokio_postgres::connect(POSTGRES, tokio_postgres::NoTls))
        .expect("PostgreSQL on 127.0.0.1:5432");
    runtime.spawn(connection);
    let count = |table: &str| -> i64 {
        runtime
            .block_on(client.query_one(&format!("SELECT count(*) FROM \"{schema}\".{table}"), &[]))
            .map(|row| row.get(0))
            .unwrap_or(-1)
    };
    // Both instances subscribed: each has applied the retained status (a repeat for one of them).
    publish(port, &[("edge/gw/status".into(), b"online".to_vec())]);
    wait_until("both instances up", Duration::from_secs(20), || {
        count("gateways") == 1
    });
    std::thread::sleep(Duration::from_millis(500));

    // 10 000 events, a tenth of them twice.
    let mut messages: Vec<(String, Vec<u8>)> = (0..10_000).map(event).collect();
    messages.extend((0..1_000).map(|seq| event(seq * 10)));
    publish(port, &messages);
    wait_until("every event stored", Duration::from_secs(60), || {
        count("seen") == 10_000
    });
    // Nothing more arrives later.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count("seen"), 10_000);
    let logs: Vec<String> = (0..2)
        .map(|n| {
            std::fs::read_to_string(dir.path().join(format!("edge-alerts-{n}.log")))
                .unwrap_or_default()
        })
        .collect();
    drop(instances);
    let _ = runtime.block_on(client.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE")));
    assert!(
        logs.iter().all(|log| log.contains("consuming")),
        "both instances consumed:\n{logs:?}"
    );
}
