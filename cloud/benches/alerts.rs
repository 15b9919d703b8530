//! `cargo bench -p edge-alerts --bench alerts`: what `edge-alerts` sustains, measured against a
//! reference in the same run.
//!
//! 1. **Consume and store**: a backlog of events waits on a Mosquitto of the bench's own (the
//!    consumer's persistent session, as after an outage); the time to drain it, as messages per
//!    second, for `edge-alerts` storing in SQLite and in PostgreSQL, against a bare MQTT client
//!    that acknowledges each message as it arrives and stores nothing (what the broker and the
//!    client library allow at all).
//! 2. **Broker to browser**: alerts published to the broker one at a time while headless
//!    Chromium shows the dashboard; the time from the publish to the alert's row in the page,
//!    seen by a `MutationObserver` (target: p99 ≤ 250 ms).
//!
//! Options (environment): `EDGE_BENCH_EVENTS` (default 20 000), `EDGE_BENCH_ALERTS` (200),
//! `EDGE_BENCH_RUNS` (3; the median run is reported).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const POSTGRES: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn events(run: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|seq| {
            let device = format!("d{}", seq % 50);
            (
                format!("edge/gw/devices/{device}/events"),
                format!(
                    r#"{{"id":"{device}:{run}:{seq}","gateway":"gw","device":"{device}","boot":{run},"seq":{seq},"received_at":{seq},"readings":{{"temp_c":21.5,"rh":40.2}}}}"#
                )
                .into_bytes(),
            )
        })
        .collect()
}

/// The bare reference: subscribes with a persistent session, acknowledges each publish as it
/// arrives. `Some(n)`: drain `n` messages and return how long that took.
fn bare_consumer(port: u16, drain: Option<usize>) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut options = MqttOptions::new("bench-bare", "127.0.0.1", port);
        options.set_clean_session(false);
        options.set_manual_acks(true);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut event_loop) = AsyncClient::new(options, 1024);
        let started = Instant::now();
        let mut received = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), event_loop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    let _ = client.try_subscribe("edge/+/devices/+/events", QoS::AtLeastOnce);
                }
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) if drain.is_none() => {
                    return started.elapsed();
                }
                Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                    let _ = client.try_ack(&publish);
                    received += 1;
                    if Some(received) == drain {
                        // Let the last acknowledgements go out.
                        let elapsed = started.elapsed();
                        let _ = client.try_disconnect();
                        while let Ok(Ok(_)) =
                            tokio::time::timeout(Duration::from_secs(1), event_loop.poll()).await
                        {
                        }
                        return elapsed;
                    }
                }
                Ok(Ok(_)) => {}
                other => panic!("the bare consumer failed: {other:?}"),
            }
        }
    })
}

/// `edge-alerts` with `store_args`: one start to create its session, then each run drains a
/// backlog of `count` events published while it was away.
fn edge_alerts_drain(
    dir: &std::path::Path,
    port: u16,
    store_args: &[&str],
    run: usize,
    count: usize,
) -> Duration {
    let name = format!("bench-{run}");
    let mut args = vec!["--client-id", "bench-alerts"];
    args.extend_from_slice(store_args);
    {
        // Subscribe once, then go away.
        let (_service, api) = edge_alerts_with_api(port, &args, dir, &name);
        publish(port, &[("edge/gw/status".into(), b"online".to_vec())]);
        wait_until("the consumer subscribed", Duration::from_secs(20), || {
            let (_, text) = http_get(api, "/metrics", Some("s3cret"));
            metric(&text, "edge_alerts_messages_applied_total").unwrap_or(0)
                + metric(&text, "edge_alerts_messages_duplicate_total").unwrap_or(0)
                >= 1
        });
    }
    publish(port, &events(run, count));
    let started = Instant::now();
    let (_service, api) = edge_alerts_with_api(port, &args, dir, &name);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (_, text) = http_get(api, "/metrics", Some("s3cret"));
        // The retained status is applied again (a repeat) on each start.
        let handled = metric(&text, "edge_alerts_messages_applied_total").unwrap_or(0);
        if handled >= count as u64 {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "edge-alerts did not drain the backlog"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn throughput(count: usize, runs: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, port) = mosquitto(dir.path());

    let mut bare = Vec::new();
    bare_consumer(port, None);
    for run in 0..runs {
        publish(port, &events(run, count));
        bare.push(bare_consumer(port, Some(count)));
    }
    let bare = median(bare);

    let sqlite_dir = tempfile::tempdir().expect("tempdir");
    let db = sqlite_dir.path().join("alerts.db");
    let sqlite: Vec<Duration> = (0..runs)
        .map(|run| {
            edge_alerts_drain(
                dir.path(),
                port,
                &["--sqlite", db.to_str().expect("utf-8 path")],
                100 + run,
                count,
            )
        })
        .collect();
    let sqlite = median(sqlite);

    let schema = format!("edge_alerts_bench_{}", std::process::id());
    let postgres: Vec<Duration> = (0..runs)
        .map(|run| {
            edge_alerts_drain(
                dir.path(),
                port,
                &["--postgres", POSTGRES, "--schema", &schema],
                200 + run,
                count,
            )
        })
        .collect();
    let postgres = median(postgres);
    drop_schema(&schema);

    println!("consume and store {count} queued events (median of {runs} runs):");
    println!("| consumer | time | messages/s | vs bare |");
    println!("|---|---|---|---|");
    for (name, elapsed) in [
        ("bare MQTT client, acks on receipt, stores nothing", bare),
        ("edge-alerts, SQLite", sqlite),
        ("edge-alerts, PostgreSQL", postgres),
    ] {
        println!(
            "| {name} | {:.2} s | {:.0} | {:.2} |",
            elapsed.as_secs_f64(),
            rate(count, elapsed),
            rate(count, elapsed) / rate(count, bare)
        );
    }
}

fn drop_schema(schema: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if let Ok((client, connection)) =
            tokio_postgres::connect(POSTGRES, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await;
        }
    });
}

/// Records when each alert row first appears in the page (ms since the epoch).
const OBSERVE: &str = r#"
window.__appeared = {};
const seen = (node) => {
  if (node.nodeType !== 1) return;
  const rows = node.matches('[data-alert-id]') ? [node] : node.querySelectorAll('[data-alert-id]');
  for (const row of rows) {
    const id = row.getAttribute('data-alert-id');
    if (!(id in window.__appeared)) window.__appeared[id] = Date.now();
  }
};
new MutationObserver((mutations) => {
  for (const m of mutations) for (const node of m.addedNodes) seen(node);
}).observe(document.body, { childList: true, subtree: true });
return null;
"#;

fn latency(alerts: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, port) = mosquitto(dir.path());
    let db = dir.path().join("alerts.db");
    let (_service, api) = edge_alerts_with_api(
        port,
        &["--sqlite", db.to_str().expect("utf-8 path")],
        dir.path(),
        "edge-alerts",
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut latencies: Vec<f64> = runtime.block_on(async {
        let browser = Browser::start().await;
        browser
            .log_in(&format!("http://127.0.0.1:{api}/"), "bench", "s3cret")
            .await;
        browser
            .client
            .execute(OBSERVE, vec![])
            .await
            .expect("install the observer");

        let options = MqttOptions::new("bench-gateway", "127.0.0.1", port);
        let (client, mut event_loop) = AsyncClient::new(options, 64);
        let poller = tokio::spawn(async move { while event_loop.poll().await.is_ok() {} });
        let mut sent = Vec::with_capacity(alerts);
        for n in 0..alerts {
            let at = edge_alerts::consumer::now_ms();
            let payload = format!(
                r#"{{"id":"gw:alert:{n}","gateway":"gw","rule":"hot","device":"d{n}","state":"firing","severity":"critical","at":{at},"value":36.5,"event":"d{n}:1:1","labels":{{}}}}"#
            );
            client
                .publish("edge/gw/alerts", QoS::AtLeastOnce, false, payload)
                .await
                .expect("publish");
            sent.push(at);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let last = format!("gw:alert:{}", alerts - 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        let appeared = loop {
            let appeared = browser
                .client
                .execute("return window.__appeared;", vec![])
                .await
                .expect("read the observer");
            if appeared.get(&last).is_some() || Instant::now() > deadline {
                break appeared;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        poller.abort();
        browser.client.clone().close().await.expect("close");
        sent.iter()
            .enumerate()
            .map(|(n, at)| {
                let shown = appeared
                    .get(format!("gw:alert:{n}"))
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or_else(|| panic!("alert {n} never appeared"));
                shown - *at as f64
            })
            .collect()
    });
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!();
    println!("broker to browser, {alerts} alerts one every 25 ms (publish → row in the page):");
    println!("| p50 | p90 | p99 | max | target p99 |");
    println!("|---|---|---|---|---|");
    println!(
        "| {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | ≤ 250 ms |",
        at(0.5),
        at(0.9),
        at(0.99),
        latencies[latencies.len() - 1]
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a test run of benches (`cargo test --benches`) does not.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let count = setting("EDGE_BENCH_EVENTS", 20_000);
    let runs = setting("EDGE_BENCH_RUNS", 3).max(1);
    throughput(count, runs);
    latency(setting("EDGE_BENCH_ALERTS", 200).max(1));
}
