//! One suite, both backends: SQLite in a temp dir, PostgreSQL on the machine's server
//! (127.0.0.1:5432, database `test`), each test in a schema of its own that it drops after.

use std::collections::BTreeMap;

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::*;
use crate::message::{AlertMessage, EventMessage};

const POSTGRES: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

fn event(device: &str, seq: u32, at: i64, temp: f64) -> Message {
    Message::Event(EventMessage {
        id: format!("{device}:1:{seq}"),
        gateway: "gw".into(),
        device: device.into(),
        boot: 1,
        seq,
        received_at: at,
        ts: None,
        readings: BTreeMap::from([("temp_c".to_owned(), temp)]),
        kind: None,
    })
}

fn alert(n: u32, state: AlertState, at: i64, value: f64, severity: &str) -> Message {
    Message::Alert(AlertMessage {
        id: format!("gw:alert:{n}"),
        gateway: "gw".into(),
        rule: "hot".into(),
        device: format!("d{n}"),
        state,
        severity: Some(severity.into()),
        at,
        value: Some(value),
        event: Some(format!("d{n}:1:1")),
        labels: Some(BTreeMap::from([("zone".to_owned(), "north".to_owned())])),
    })
}

/// The whole contract, against any backend.
async fn suite(store: impl Store) {
    // Events: stored once, whatever the redeliveries; the latest readings win.
    assert_eq!(
        store
            .apply(&event("d1", 1, 100, 20.0), 0, &[])
            .await
            .expect("apply"),
        Applied::New
    );
    assert_eq!(
        store
            .apply(&event("d1", 1, 100, 20.0), 0, &[])
            .await
            .expect("apply"),
        Applied::Duplicate
    );
    store
        .apply(&event("d1", 3, 300, 23.0), 0, &[])
        .await
        .expect("apply");
    // An older event delivered late does not roll the device back.
    store
        .apply(&event("d1", 2, 200, 21.0), 0, &[])
        .await
        .expect("apply");
    let devices = store.devices().await.expect("devices");
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].last_seen, 300);
    assert_eq!(devices[0].readings.get("temp_c"), Some(&23.0));

    // Alerts: fire, redelivered fire, resolve.
    assert_eq!(
        store
            .apply(
                &alert(1, AlertState::Firing, 1000, 36.0, "critical"),
                0,
                &[]
            )
            .await
            .expect("apply"),
        Applied::New
    );
    assert_eq!(
        store
            .apply(
                &alert(1, AlertState::Firing, 1000, 36.0, "critical"),
                0,
                &[]
            )
            .await
            .expect("apply"),
        Applied::Duplicate
    );
    store
        .apply(&alert(2, AlertState::Firing, 2000, 40.0, "warning"), 0, &[])
        .await
        .expect("apply");
    store
        .apply(
            &alert(1, AlertState::Resolved, 3000, 32.0, "critical"),
            0,
            &[],
        )
        .await
        .expect("apply");
    // Out of order: alert 3 resolves before it fires; it ends up as if in order.
    store
        .apply(
            &alert(3, AlertState::Resolved, 5000, 30.0, "critical"),
            0,
            &[],
        )
        .await
        .expect("apply");
    store
        .apply(
            &alert(3, AlertState::Firing, 4000, 37.0, "critical"),
            0,
            &[],
        )
        .await
        .expect("apply");

    let all = store.alerts(&AlertFilter::default()).await.expect("alerts");
    let order: Vec<(&str, AlertState)> = all
        .iter()
        .map(|alert| (alert.id.as_str(), alert.state))
        .collect();
    assert_eq!(
        order,
        [
            ("gw:alert:2", AlertState::Firing),
            ("gw:alert:3", AlertState::Resolved),
            ("gw:alert:1", AlertState::Resolved),
        ],
        "firing first, then newest first"
    );
    let three = &all[1];
    assert_eq!((three.fired_at, three.value), (Some(4000), Some(37.0)));
    assert_eq!(
        (three.resolved_at, three.resolved_value),
        (Some(5000), Some(30.0))
    );
    assert_eq!(three.labels.get("zone").map(String::as_str), Some("north"));
    assert_eq!(three.event.as_deref(), Some("d3:1:1"));

    let firing = store
        .alerts(&AlertFilter {
            state: Some(AlertState::Firing),
            ..AlertFilter::default()
        })
        .await
        .expect("alerts");
    assert_eq!(firing.len(), 1);
    let critical = store
        .alerts(&AlertFilter {
            severity: Some("critical".into()),
            ..AlertFilter::default()
        })
        .await
        .expect("alerts");
    assert_eq!(critical.len(), 2);
    let other_gateway = store
        .alerts(&AlertFilter {
            gateway: Some("elsewhere".into()),
            ..AlertFilter::default()
        })
        .await
        .expect("alerts");
    assert!(other_gateway.is_empty());

    // Acknowledgement: the first one stays, and a later one is told so.
    assert_eq!(
        store
            .acknowledge("gw:alert:2", "ana", 6000)
            .await
            .expect("ack"),
        Some(Acknowledgement {
            by: "ana".into(),
            at: 6000,
            new: true
        })
    );
    assert_eq!(
        store
            .acknowledge("gw:alert:2", "ben", 7000)
            .await
            .expect("ack"),
        Some(Acknowledgement {
            by: "ana".into(),
            at: 6000,
            new: false
        })
    );
    assert_eq!(
        store
            .acknowledge("gw:alert:99", "ana", 6000)
            .await
            .expect("ack"),
        None
    );
    let two = store.alerts(&AlertFilter::default()).await.expect("alerts");
    assert_eq!(two[0].acknowledged, Some(("ana".to_owned(), 6000)));

    // Gateways: the retained status and the last will.
    let online = Message::Status {
        gateway: "gw".into(),
        online: true,
    };
    let offline = Message::Status {
        gateway: "gw".into(),
        online: false,
    };
    assert_eq!(
        store.apply(&online, 10, &[]).await.expect("apply"),
        Applied::New
    );
    assert_eq!(
        store.apply(&online, 20, &[]).await.expect("apply"),
        Applied::Duplicate
    );
    assert_eq!(
        store.apply(&offline, 30, &[]).await.expect("apply"),
        Applied::New
    );
    assert_eq!(
        store.gateways().await.expect("gateways"),
        [Gateway {
            gateway: "gw".into(),
            online: false,
            since: 30
        }]
    );

    // A limit keeps the firing ones first.
    let limited = store
        .alerts(&AlertFilter {
            limit: Some(1),
            ..AlertFilter::default()
        })
        .await
        .expect("alerts");
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].id, "gw:alert:2");

    history(&store).await;
    outbox(&store).await;
    batches(&store).await;
    gateways_apart(&store).await;
}

/// The same event id from two gateways is two events: one gateway cannot shadow another's.
async fn gateways_apart(store: &impl Store) {
    let from = |gateway: &str| {
        let Message::Event(mut event) = event("shared", 1, 7000, 19.0) else {
            unreachable!("an event");
        };
        event.gateway = gateway.into();
        Message::Event(event)
    };
    for gateway in ["gw-a", "gw-b"] {
        assert_eq!(
            store.apply(&from(gateway), 0, &[]).await.expect("apply"),
            Applied::New,
            "{gateway}"
        );
        assert_eq!(
            store.apply(&from(gateway), 0, &[]).await.expect("apply"),
            Applied::Duplicate,
            "{gateway}"
        );
    }
    let shared: Vec<String> = store
        .devices()
        .await
        .expect("devices")
        .into_iter()
        .filter(|device| device.device == "shared")
        .map(|device| device.gateway)
        .collect();
    assert_eq!(shared, ["gw-a", "gw-b"]);
}

/// A store written before keys were scoped by gateway: what it saw stays seen, and event `seq`
/// of `d1`, new, is stored once.
async fn after_an_upgrade(store: &impl Store, seq: u32) {
    assert_eq!(
        store
            .apply(&event("d1", 1, 100, 20.0), 0, &[])
            .await
            .expect("apply"),
        Applied::Duplicate,
        "seen before the upgrade"
    );
    assert_eq!(
        store
            .apply(&event("d1", seq, 200, 20.0), 0, &[])
            .await
            .expect("apply"),
        Applied::New
    );
    assert_eq!(
        store
            .apply(&event("d1", seq, 200, 20.0), 0, &[])
            .await
            .expect("apply"),
        Applied::Duplicate
    );
}

/// The tables as a release that did not scope keys by gateway left them.
const UNSCOPED: &str = "CREATE TABLE seen (key TEXT PRIMARY KEY);
    INSERT INTO seen (key) VALUES ('d1:1:1');";

/// A batch is applied in order, each message once, repeats within it included.
async fn batches(store: &impl Store) {
    let pending = |message: Message| Pending {
        message,
        notify: Vec::new(),
    };
    let status = |online| Message::Status {
        gateway: "gw-b".into(),
        online,
    };
    let applied = store
        .apply_all(
            &[
                pending(event("b1", 1, 10, 1.0)),
                pending(status(true)),
                pending(event("b1", 1, 10, 1.0)),
                pending(event("b1", 2, 20, 2.0)),
                pending(status(false)),
                pending(alert(8, AlertState::Firing, 30, 50.0, "info")),
            ],
            500,
        )
        .await
        .expect("apply_all");
    assert_eq!(
        applied,
        [
            Applied::New,
            Applied::New,
            Applied::Duplicate,
            Applied::New,
            Applied::New,
            Applied::New
        ]
    );
    let gateways = store.gateways().await.expect("gateways");
    let gateway = gateways.iter().find(|g| g.gateway == "gw-b").expect("gw-b");
    assert!(!gateway.online, "the later status wins");
    assert_eq!(
        store.history("gw", "b1", 10).await.expect("history").len(),
        2
    );
}

/// Every event's readings are kept for charts, oldest first, until pruned.
async fn history(store: &impl Store) {
    let history = store.history("gw", "d1", 10).await.expect("history");
    let points: Vec<(i64, f64)> = history
        .iter()
        .map(|reading| (reading.at, reading.readings["temp_c"]))
        .collect();
    // The redelivery of 100 is not recorded twice; the late 200 takes its place in time.
    assert_eq!(points, [(100, 20.0), (200, 21.0), (300, 23.0)]);
    let latest = store.history("gw", "d1", 2).await.expect("history");
    assert_eq!(latest.first().map(|reading| reading.at), Some(200));
    assert!(
        store
            .history("gw", "nobody", 10)
            .await
            .expect("history")
            .is_empty()
    );
    assert_eq!(store.prune(250).await.expect("prune"), 2);
    assert_eq!(
        store.history("gw", "d1", 10).await.expect("history").len(),
        1
    );
}

/// A new alert transition queues one notification per route, claimed by one notifier at a
/// time, retried when due, gone when delivered.
async fn outbox(store: &impl Store) {
    let routes = ["ops".to_owned(), "pager".to_owned()];
    let firing = alert(7, AlertState::Firing, 9000, 41.0, "critical");
    assert_eq!(
        store.apply(&firing, 100, &routes).await.expect("apply"),
        Applied::New
    );
    // A redelivery queues nothing more; an event queues nothing at all.
    store.apply(&firing, 150, &routes).await.expect("apply");
    store
        .apply(&event("d7", 1, 9000, 41.0), 150, &routes)
        .await
        .expect("apply");
    assert!(
        store
            .claim_notifications(99, 10_000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "not due before it was queued"
    );
    let mut claimed = store
        .claim_notifications(200, 10_000, 10)
        .await
        .expect("claim");
    claimed.sort_by(|a, b| a.route.cmp(&b.route));
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    assert_eq!(claimed[0].key, "gw:alert:7#firing");
    assert_eq!(claimed[0].route, "ops");
    assert_eq!(claimed[1].route, "pager");
    assert_eq!(claimed[0].attempts, 1);
    let payload: AlertMessage = serde_json::from_str(&claimed[0].payload).expect("payload");
    assert_eq!(payload.value, Some(41.0));
    // Leased: nobody else gets them until the lease ends.
    assert!(
        store
            .claim_notifications(5_000, 20_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    store
        .notification_done("gw:alert:7#firing", "ops")
        .await
        .expect("done");
    store
        .notification_retry("gw:alert:7#firing", "pager", 6_000)
        .await
        .expect("retry");
    let again = store
        .claim_notifications(6_000, 20_000, 10)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].route.as_str(), again[0].attempts), ("pager", 2));
    store
        .notification_done("gw:alert:7#firing", "pager")
        .await
        .expect("done");
    assert!(
        store
            .claim_notifications(i64::MAX - 1, i64::MAX, 10)
            .await
            .expect("claim")
            .is_empty()
    );
}

#[tokio::test]
async fn sqlite_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("alerts.db")).expect("open");
    suite(store).await;
    // What was stored survives a reopen.
    let store = SqliteStore::open(&dir.path().join("alerts.db")).expect("reopen");
    assert_eq!(
        store
            .alerts(&AlertFilter::default())
            .await
            .expect("alerts")
            .len(),
        5,
        "alerts 1, 2, 3, 7 and 8"
    );
}

#[tokio::test]
async fn sqlite_keeps_what_it_saw_before_keys_were_scoped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("alerts.db");
    rusqlite::Connection::open(&path)
        .and_then(|conn| conn.execute_batch(UNSCOPED))
        .expect("an unscoped store");
    after_an_upgrade(&SqliteStore::open(&path).expect("open"), 2).await;
    after_an_upgrade(&SqliteStore::open(&path).expect("reopen"), 3).await;
}

#[tokio::test]
async fn postgres_keeps_what_it_saw_before_keys_were_scoped() {
    let schema = format!("edge_alerts_test_{}", rand::random::<u32>());
    let (client, connection) = tokio_postgres::connect(POSTGRES, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\"; {UNSCOPED}"
        ))
        .await
        .expect("an unscoped store");
    for seq in [2, 3] {
        let store = PostgresStore::connect(POSTGRES, Some(&schema), None)
            .await
            .expect("open");
        after_an_upgrade(&store, seq).await;
    }
    drop_schema(&schema).await;
}

/// A store in a fresh schema; the schema is dropped when the returned guard's test ends.
async fn postgres_store() -> (PostgresStore, String) {
    let schema = format!("edge_alerts_test_{}", rand::random::<u32>());
    let store = PostgresStore::connect(POSTGRES, Some(&schema), None)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (user postgres, database test)");
    (store, schema)
}

async fn drop_schema(schema: &str) {
    if let Ok((client, connection)) = tokio_postgres::connect(POSTGRES, tokio_postgres::NoTls).await
    {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await;
    }
}

#[tokio::test]
async fn postgres_keeps_the_contract() {
    let (store, schema) = postgres_store().await;
    suite(store).await;
    drop_schema(&schema).await;
}

#[tokio::test]
async fn postgres_reconnects_after_the_server_drops_the_connection() {
    let schema = format!("edge_alerts_test_{}", rand::random::<u32>());
    let store = PostgresStore::connect(
        &format!("{POSTGRES} application_name={schema}"),
        Some(&schema),
        None,
    )
    .await
    .expect("connect");
    assert_eq!(
        store
            .apply(&event("d1", 1, 100, 20.0), 0, &[])
            .await
            .expect("apply"),
        Applied::New
    );
    let (admin, connection) = tokio_postgres::connect(POSTGRES, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let backends = || async {
        admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&schema],
            )
            .await
            .expect("pg_stat_activity")
            .iter()
            .map(|row| row.get::<_, i32>(0))
            .collect::<Vec<_>>()
    };
    let before = backends().await;
    assert_eq!(before.len(), 1, "the store holds one connection");
    // The server ends the store's session, as a restart or a failover would.
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&before[0]])
        .await
        .expect("terminate");

    // The operation that meets the closed connection fails as an outage (the consumer retries
    // it; it is never dropped as refused data); the next one reconnects.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut failures = 0;
    loop {
        match store.apply(&event("d1", 2, 200, 21.0), 0, &[]).await {
            Ok(applied) => {
                assert_eq!(applied, Applied::New);
                break;
            }
            Err(error) => {
                assert!(
                    !error.is_permanent(),
                    "a lost connection is not refused data: {error}"
                );
                failures += 1;
                assert!(
                    std::time::Instant::now() < deadline,
                    "no reconnection: {error}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    assert!(failures <= 1, "{failures} operations failed after the drop");
    let after = backends().await;
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "a new session");
    // In the same schema as before: what was stored before the drop is there.
    assert_eq!(
        store
            .apply(&event("d1", 1, 100, 20.0), 0, &[])
            .await
            .expect("apply"),
        Applied::Duplicate
    );
    drop_schema(&schema).await;
}

#[tokio::test]
async fn two_postgres_instances_store_each_message_exactly_once() {
    let (first, schema) = postgres_store().await;
    let second = PostgresStore::connect(POSTGRES, Some(&schema), None)
        .await
        .expect("connect");
    let messages: Vec<Message> = (0..200)
        .map(|seq| event("d", seq, i64::from(seq), 1.0))
        .collect();
    // Both instances get every message (a redelivery storm), concurrently.
    let (a, b) = tokio::join!(
        async {
            let mut new = 0;
            for message in &messages {
                if first.apply(message, 0, &[]).await.expect("apply") == Applied::New {
                    new += 1;
                }
            }
            new
        },
        async {
            let mut new = 0;
            for message in messages.iter().rev() {
                if second.apply(message, 0, &[]).await.expect("apply") == Applied::New {
                    new += 1;
                }
            }
            new
        }
    );
    assert_eq!(a + b, 200, "each message applied exactly once across both");
    drop_schema(&schema).await;
}
