//! The consumer: subscribes to what gateways publish on the cloud broker, applies each message
//! to the store, and acknowledges it (PUBACK) only once the store has it — so a message is lost
//! neither by a crash of this service nor by a store failure; the broker redelivers, and the
//! store's keys make the redelivery a no-op.
//!
//! Several instances share the work through an MQTT shared subscription (`$share/{group}/…`,
//! which Mosquitto offers to MQTT 3.1.1 clients too). The gateways' retained status is
//! subscribed without sharing: retained messages are not sent to shared subscriptions, and every
//! instance may apply a status (the store ignores repeats).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{Notify, broadcast, watch};

use crate::live::Change;
use crate::message::{Message, interpret};
use crate::notify::Routes;
use crate::store::{Applied, Pending, Store, StoreError};

/// Where to consume from.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Cloud broker host.
    pub host: String,
    /// Cloud broker port.
    pub port: u16,
    /// The gateways' `topic_prefix`.
    pub prefix: String,
    /// Share the subscription with other instances in this group.
    pub group: Option<String>,
    /// MQTT client id (unique per instance).
    pub client_id: String,
}

/// What the consumer has done.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Messages applied for the first time.
    pub applied: AtomicU64,
    /// Redeliveries and repeats that changed nothing.
    pub duplicates: AtomicU64,
    /// Messages not understood (counted, skipped, acknowledged).
    pub refused: AtomicU64,
    /// Failed attempts to store a message that are retried (a lost connection, a busy disk).
    pub store_errors: AtomicU64,
    /// Messages the store refuses for their data (counted in `refused` too), skipped.
    pub store_rejected: AtomicU64,
}

/// Where what the consumer stored goes next.
#[derive(Debug, Clone)]
pub struct Outlets {
    /// Each newly stored message, for the dashboards.
    pub changes: broadcast::Sender<Change>,
    /// The webhook routes: a new alert transition queues a notification for each that wants it.
    pub routes: Arc<Routes>,
    /// Wakes the notifier when something was queued.
    pub queued: Arc<Notify>,
}

/// Consumes until `shutdown` turns true.
pub async fn run<S: Store>(
    config: ConsumerConfig,
    store: Arc<S>,
    stats: Arc<ConsumerStats>,
    outlets: Outlets,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
    options.set_keep_alive(Duration::from_secs(30));
    // A persistent session: what arrives while this instance is away waits for it.
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut event_loop) = AsyncClient::new(options, 1024);
    let shared = |filter: String| match &config.group {
        Some(group) => format!("$share/{group}/{filter}"),
        None => filter,
    };
    let prefix = &config.prefix;
    let filters = vec![
        shared(format!("{prefix}/+/alerts")),
        shared(format!("{prefix}/+/devices/+/events")),
        format!("{prefix}/+/status"),
    ];
    // The event loop is polled by a task of its own, so that acknowledging (which waits for room
    // in the client's queue) can never hold up the polling that empties that queue.
    // Unbounded, so the poller never waits on the consumer (which may be waiting on the
    // poller to make room for its acks); the broker's in-flight window (at most that many
    // unacknowledged publishes per client) bounds it in practice.
    let (publishes, mut incoming) = tokio::sync::mpsc::unbounded_channel::<rumqttc::Publish>();
    let poller = {
        let client = client.clone();
        let broker = format!("{}:{}", config.host, config.port);
        tokio::spawn(async move {
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for filter in &filters {
                            let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                        }
                        tracing::info!(broker, "consuming");
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        if publishes.send(publish).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "cloud broker connection lost; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
    };
    loop {
        let first = tokio::select! {
            publish = incoming.recv() => match publish {
                Some(publish) => publish,
                None => break,
            },
            _ = shutdown.changed() => break,
        };
        // What else has arrived goes into the same transaction: one commit for many messages.
        let mut publishes = vec![first];
        while publishes.len() < BATCH {
            match incoming.try_recv() {
                Ok(publish) => publishes.push(publish),
                Err(_) => break,
            }
        }
        let stored = apply(
            &config,
            &*store,
            &stats,
            &outlets,
            &publishes,
            &mut shutdown,
        )
        .await;
        for (publish, stored) in publishes.iter().zip(stored) {
            // A message the store failed to take is not acknowledged: the broker delivers it
            // again after a reconnect.
            if stored && let Err(error) = client.ack(publish).await {
                tracing::warn!(%error, "failed to acknowledge a message");
            }
        }
    }
    let _ = client.try_disconnect();
    poller.abort();
}

/// Messages applied in one transaction at most.
const BATCH: usize = 256;

/// Applies `publishes` to the store, in one transaction when it can; says for each whether it
/// is done with (stored, a repeat, refused) and may be acknowledged.
///
/// A message the store cannot take now (a lost connection, a busy or full disk) is retried
/// here, with backoff, until it is stored or `shutdown` turns true: nothing after it is
/// acknowledged meanwhile, and nothing is lost. A message the store refuses for its data —
/// which no retry can change — is counted as refused (`store_rejected`), logged with its topic
/// and acknowledged, so that it cannot block the subscription.
async fn apply<S: Store>(
    config: &ConsumerConfig,
    store: &S,
    stats: &ConsumerStats,
    outlets: &Outlets,
    publishes: &[rumqttc::Publish],
    shutdown: &mut watch::Receiver<bool>,
) -> Vec<bool> {
    let mut done = vec![true; publishes.len()];
    let mut pending = Vec::with_capacity(publishes.len());
    let mut slots = Vec::with_capacity(publishes.len());
    for (slot, publish) in publishes.iter().enumerate() {
        match interpret(&config.prefix, &publish.topic, &publish.payload) {
            Ok(message) => {
                let notify = match &message {
                    Message::Alert(alert) => outlets.routes.matching(alert),
                    _ => Vec::new(),
                };
                pending.push(Pending { message, notify });
                slots.push(slot);
            }
            Err(refused) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(reason = refused.reason(), "skipped a message: {refused}");
            }
        }
    }
    if pending.is_empty() {
        return done;
    }
    let now = now_ms();
    let outcomes: Vec<Result<Applied, StoreError>> = match store.apply_all(&pending, now).await {
        Ok(applied) => applied.into_iter().map(Ok).collect(),
        Err(error) if pending.len() > 1 => {
            // One message the store refuses (or a deadlock with another instance) must not
            // hold up the rest: one at a time.
            tracing::warn!(%error, "a batch failed to store; storing its messages one by one");
            let mut outcomes = Vec::with_capacity(pending.len());
            for Pending { message, notify } in &pending {
                outcomes.push(store.apply(message, now, notify).await);
            }
            outcomes
        }
        Err(error) => vec![Err(error)],
    };
    let mut backoff = Backoff::default();
    for ((Pending { message, notify }, slot), mut outcome) in
        pending.into_iter().zip(slots).zip(outcomes)
    {
        let topic = &publishes[slot].topic;
        loop {
            match outcome {
                Ok(Applied::New) => {
                    stats.applied.fetch_add(1, Ordering::Relaxed);
                    if !notify.is_empty() {
                        outlets.queued.notify_one();
                    }
                    let _ = outlets.changes.send(Change::Stored { message, at: now });
                }
                Ok(Applied::Duplicate) => {
                    stats.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) if error.is_permanent() => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    stats.store_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%error, topic, "the store refuses this message; skipped");
                }
                Err(error) => {
                    stats.store_errors.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff.next();
                    tracing::error!(%error, topic, retry_in = ?wait, "failed to store a message; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => {}
                    }
                    if *shutdown.borrow() {
                        // Not acknowledged: the broker delivers it again to the next run.
                        done[slot] = false;
                        break;
                    }
                    outcome = store.apply(&message, now_ms(), &notify).await;
                    continue;
                }
            }
            break;
        }
    }
    done
}

/// Waits between retries of a failing store: doubling from 100 ms to 5 s.
#[derive(Debug)]
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_millis(100))
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        wait
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rumqttc::Publish;

    use super::*;
    use crate::store::AlertFilter;
    use crate::store::sqlite::SqliteStore;

    fn config() -> ConsumerConfig {
        ConsumerConfig {
            host: "127.0.0.1".into(),
            port: 1,
            prefix: "edge".into(),
            group: None,
            client_id: "test".into(),
        }
    }

    fn outlets(routes: &str) -> (Outlets, broadcast::Receiver<Change>) {
        let (changes, watching) = broadcast::channel(64);
        let outlets = Outlets {
            changes,
            routes: Arc::new(Routes::parse(routes).unwrap()),
            queued: Arc::new(Notify::new()),
        };
        (outlets, watching)
    }

    fn alert(state: &str, at: i64) -> Publish {
        Publish::new(
            "edge/gw/alerts",
            QoS::AtLeastOnce,
            format!(
                r#"{{"id":"gw:alert:1","gateway":"gw","rule":"hot","device":"d1","state":"{state}","severity":"critical","at":{at},"value":36.0,"event":"d1:1:5","labels":{{}}}}"#
            ),
        )
    }

    fn event(seq: u32) -> Publish {
        Publish::new(
            "edge/gw/devices/d1/events",
            QoS::AtLeastOnce,
            format!(
                r#"{{"id":"d1:1:{seq}","gateway":"gw","device":"d1","boot":1,"seq":{seq},"received_at":{seq},"readings":{{"temp_c":20.5}}}}"#
            ),
        )
    }

    #[tokio::test]
    async fn redeliveries_disorder_and_garbage_in_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("a.db")).unwrap();
        let stats = ConsumerStats::default();
        let (outlets, mut watching) =
            outlets("[[route]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/\"\n");
        let batch = [
            alert("resolved", 2000), // before its firing
            event(1),
            event(1), // redelivered
            Publish::new("edge/gw/alerts", QoS::AtLeastOnce, "not json"),
            Publish::new("edge/gw/unknown", QoS::AtLeastOnce, "{}"),
            alert("firing", 1000),
            alert("firing", 1000), // redelivered
        ];
        let (_stop, mut running) = watch::channel(false);
        let done = apply(&config(), &store, &stats, &outlets, &batch, &mut running).await;
        assert_eq!(done, [true; 7], "everything handled is acknowledged");
        assert_eq!(stats.applied.load(Ordering::Relaxed), 3);
        assert_eq!(stats.duplicates.load(Ordering::Relaxed), 2);
        assert_eq!(stats.refused.load(Ordering::Relaxed), 2);
        let alerts = store.alerts(&AlertFilter::default()).await.unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].state, alerts[0].fired_at, alerts[0].resolved_at),
            (crate::AlertState::Resolved, Some(1000), Some(2000))
        );
        // Each new message was announced once, in order.
        let mut announced = Vec::new();
        while let Ok(Change::Stored { message, .. }) = watching.try_recv() {
            announced.push(message.key().unwrap());
        }
        assert_eq!(
            announced,
            ["gw:alert:1#resolved", "d1:1:1", "gw:alert:1#firing"]
        );
        // Both transitions were queued for the route, once.
        let queued = store.claim_notifications(i64::MAX - 1, i64::MAX, 10).await;
        assert_eq!(queued.unwrap().len(), 2);

        // The whole batch again, as after a reconnect: nothing new.
        let done = apply(&config(), &store, &stats, &outlets, &batch, &mut running).await;
        assert_eq!(done, [true; 7]);
        assert_eq!(stats.applied.load(Ordering::Relaxed), 3);
        assert!(watching.try_recv().is_err());
    }

    fn event_of(device: &str, seq: u32) -> Publish {
        Publish::new(
            format!("edge/gw/devices/{device}/events"),
            QoS::AtLeastOnce,
            format!(
                r#"{{"id":"{device}:1:{seq}","gateway":"gw","device":"{device}","boot":1,"seq":{seq},"received_at":{seq},"readings":{{"temp_c":20.5}}}}"#
            ),
        )
    }

    #[tokio::test]
    async fn a_message_the_store_refuses_for_its_data_is_skipped_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = SqliteStore::open(&path).unwrap();
        // The store refuses one device's events, as a constraint would.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON history WHEN NEW.device = 'bad'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        let stats = ConsumerStats::default();
        let (outlets, _watching) = outlets("");
        let (_stop, mut running) = watch::channel(false);
        let done = apply(
            &config(),
            &store,
            &stats,
            &outlets,
            &[alert("firing", 1000), event_of("bad", 1), event(2)],
            &mut running,
        )
        .await;
        assert_eq!(
            done, [true; 3],
            "refused data cannot block the subscription"
        );
        assert_eq!(stats.store_rejected.load(Ordering::Relaxed), 1);
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
        assert_eq!(stats.applied.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_store_outage_is_waited_out_and_nothing_is_acknowledged_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = SqliteStore::open(&path).unwrap();
        // The devices table goes missing (an outage), then comes back.
        let outside = rusqlite::Connection::open(&path).unwrap();
        outside
            .execute_batch("ALTER TABLE devices RENAME TO devices_away")
            .unwrap();
        let stats = Arc::new(ConsumerStats::default());
        let (outlets, _watching) = outlets("");
        let (_stop, mut running) = watch::channel(false);
        let restore = {
            let stats = Arc::clone(&stats);
            tokio::spawn(async move {
                while stats.store_errors.load(Ordering::Relaxed) < 2 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                outside
                    .execute_batch("ALTER TABLE devices_away RENAME TO devices")
                    .unwrap();
            })
        };
        let done = apply(
            &config(),
            &store,
            &stats,
            &outlets,
            &[alert("firing", 1000), event(1), alert("resolved", 2000)],
            &mut running,
        )
        .await;
        restore.await.unwrap();
        assert_eq!(done, [true; 3]);
        assert!(stats.store_errors.load(Ordering::Relaxed) >= 2);
        assert_eq!(
            stats.applied.load(Ordering::Relaxed),
            3,
            "the event too, once back"
        );
        assert_eq!(store.devices().await.unwrap().len(), 1);

        // Stopping while the store is still out: the message stays unacknowledged.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("ALTER TABLE devices RENAME TO devices_away")
            .unwrap();
        let (stop, mut running) = watch::channel(false);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = stop.send(true);
        });
        let done = apply(
            &config(),
            &store,
            &stats,
            &outlets,
            &[event(3), alert("firing", 5000)],
            &mut running,
        )
        .await;
        stopper.await.unwrap();
        assert_eq!(done, [false, true]);
    }
}
