//! End to end: the real `edge-alerts` binary consuming from a Mosquitto of the test's own, with
//! messages published as gateways publish them, redeliveries and garbage included.

mod common;

use std::time::Duration;

use common::*;
use edge_alerts::AlertState;
use edge_alerts::store::{AlertFilter, Store};

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
    // A gateway's batch: events 50 to 59 in one message, 55 twice (one batch resent in part).
    let batch: Vec<String> = (50..60)
        .chain([55])
        .map(|seq| String::from_utf8(event(seq).1).expect("utf-8"))
        .collect();
    messages.push((
        "edge/gw/events".into(),
        format!("[{}]", batch.join(",")).into_bytes(),
    ));
    messages.push(("edge/gw/events".into(), b"[1,2]".to_vec()));
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
                .map(|devices| devices.first().is_some_and(|device| device.last_seen == 59))
                .unwrap_or(false)
        })
    });
    assert_eq!(devices.len(), 1);
    let seen: i64 = rusqlite::Connection::open(&db)
        .expect("open")
        .query_row("SELECT count(*) FROM seen", [], |row| row.get(0))
        .expect("count");
    assert_eq!(seen, 62, "60 events and 2 alert transitions, each once");

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

/// The counters `edge-alerts` serves on its API at `api_port`.
fn counters(api_port: u16) -> (u64, u64) {
    let (_, text) = http_get(api_port, "/metrics", Some("s3cret"));
    (
        metric(&text, "edge_alerts_messages_applied_total").unwrap_or(0),
        metric(&text, "edge_alerts_messages_duplicate_total").unwrap_or(0),
    )
}

#[test]
fn two_instances_sharing_a_subscription_store_each_message_once_and_split_the_load() {
    const POSTGRES: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, port) = mosquitto(dir.path());
    let schema = format!("edge_alerts_scale_{}", rand::random::<u32>());
    let instances: Vec<(Running, u16)> = (0..2)
        .map(|n| {
            edge_alerts_with_api(
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
                dir.path(),
                &format!("edge-alerts-{n}"),
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
    // Each instance subscribes to the (unshared) retained status last: once both have taken
    // it — one applied it, the other found it a repeat — both hold the shared subscription.
    publish(port, &[("edge/gw/status".into(), b"online".to_vec())]);
    wait_until("both instances subscribed", Duration::from_secs(20), || {
        instances.iter().all(|(_, api)| {
            let (applied, duplicates) = counters(*api);
            applied + duplicates >= 1
        })
    });

    // 10 000 events, a tenth of them delivered twice.
    let mut messages: Vec<(String, Vec<u8>)> = (0..10_000).map(event).collect();
    messages.extend((0..1_000).map(|seq| event(seq * 10)));
    publish(port, &messages);
    // Every delivery handled: 11 000 events plus the status, once per instance.
    wait_until("every delivery handled", Duration::from_secs(90), || {
        let handled: u64 = instances
            .iter()
            .map(|(_, api)| {
                let (applied, duplicates) = counters(*api);
                applied + duplicates
            })
            .sum();
        handled >= 11_002
    });
    let split: Vec<(u64, u64)> = instances.iter().map(|(_, api)| counters(*api)).collect();
    let stored = count("seen");
    let logs: Vec<String> = (0..2)
        .map(|n| {
            std::fs::read_to_string(dir.path().join(format!("edge-alerts-{n}.log")))
                .unwrap_or_default()
        })
        .collect();
    drop(instances);
    let _ = runtime.block_on(client.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE")));
    assert_eq!(stored, 10_000, "each event stored once\n{logs:?}");
    let applied: u64 = split.iter().map(|(applied, _)| applied).sum();
    assert_eq!(applied, 10_001, "10 000 events and one status: {split:?}");
    // The broker shares the deliveries out between the two; neither sits idle.
    for (n, (applied, duplicates)) in split.iter().enumerate() {
        assert!(
            applied + duplicates >= 2_000,
            "instance {n} handled only {applied} + {duplicates} of 11 002: {split:?}"
        );
    }
}

/// A webhook receiver that fails its first `failures` requests with 503, then records each
/// request it accepts.
fn webhook(
    failures: usize,
) -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let accepted = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(AtomicUsize::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let (kept, counted) = (Arc::clone(&accepted), Arc::clone(&requests));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(move |body: String| {
                    let (kept, counted) = (Arc::clone(&kept), Arc::clone(&counted));
                    async move {
                        if counted.fetch_add(1, Ordering::SeqCst) < failures {
                            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        kept.lock().expect("lock").push(body);
                        axum::http::StatusCode::OK
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app).await;
        });
    });
    (port, accepted, requests)
}

#[test]
fn each_alert_transition_is_posted_once_to_the_routes_that_want_it() {
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, port) = mosquitto(dir.path());
    let (hook_port, accepted, requests) = webhook(3);
    let config = dir.path().join("edge-alerts.toml");
    std::fs::write(
        &config,
        format!(
            "retry_base_ms = 50\n\n[[route]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\nseverity = [\"critical\"]\n"
        ),
    )
    .expect("write config");
    let db = dir.path().join("alerts.db");
    let (_service, api) = edge_alerts_with_api(
        port,
        &[
            "--sqlite",
            db.to_str().expect("utf-8 path"),
            "--config",
            config.to_str().expect("utf-8 path"),
        ],
        dir.path(),
        "edge-alerts",
    );
    announce_and_wait_subscribed(port, api, "gw");

    let warning = (
        "edge/gw/alerts".to_owned(),
        br#"{"id":"gw:alert:2","gateway":"gw","rule":"damp","device":"d2","state":"firing","severity":"warning","at":1500,"value":80.0,"event":"d2:1:1","labels":{}}"#.to_vec(),
    );
    publish(
        port,
        &[
            alert("firing", 1000),
            alert("firing", 1000), // a redelivery
            warning,               // no route wants warnings
            alert("resolved", 2000),
            alert("resolved", 2000),
        ],
    );
    // Delivered, retried through the webhook's failures, and the outbox empty: nothing more
    // can be posted.
    wait_until(
        "both transitions delivered",
        Duration::from_secs(30),
        || {
            let (_, text) = http_get(api, "/metrics", Some("s3cret"));
            metric(&text, "edge_alerts_notifications_sent_total") == Some(2)
                && rusqlite::Connection::open(&db)
                    .and_then(|conn| {
                        conn.query_row("SELECT count(*) FROM outbox", [], |row| {
                            row.get::<_, i64>(0)
                        })
                    })
                    .is_ok_and(|left| left == 0)
        },
    );
    let (_, text) = http_get(api, "/metrics", Some("s3cret"));
    assert_eq!(
        metric(&text, "edge_alerts_notifications_retried_total"),
        Some(3)
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        5,
        "3 failures, then one post per transition"
    );
    let bodies = accepted.lock().expect("lock").clone();
    let texts: Vec<String> = bodies
        .iter()
        .map(|body| {
            let message: serde_json::Value = serde_json::from_str(body).expect("JSON body");
            message["text"].as_str().expect("Slack text").to_owned()
        })
        .collect();
    assert_eq!(
        texts
            .iter()
            .filter(|text| text.starts_with("[FIRING] critical: hot on d1 at gw"))
            .count(),
        1,
        "{texts:?}"
    );
    assert_eq!(
        texts
            .iter()
            .filter(|text| text.starts_with("[RESOLVED]"))
            .count(),
        1,
        "{texts:?}"
    );
}

#[test]
fn a_bad_configuration_is_refused_with_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("edge-alerts.toml");
    std::fs::write(
        &config,
        "[[route]]\nname = \"ops\"\nurl = \"http://x/\"\ncolour = \"red\"\n",
    )
    .expect("write config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_edge-alerts"))
        .args(["--config", config.to_str().expect("utf-8 path")])
        .output()
        .expect("run edge-alerts");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("edge-alerts.toml")
            && stderr.contains("line 4")
            && stderr.contains("colour"),
        "{stderr}"
    );
}
