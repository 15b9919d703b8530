//! The consumer: takes what gateways publish from a source (MQTT, NATS JetStream, AMQP or Kafka, see
//! [`crate::source`]), applies each message to the store, and settles it with the broker only
//! once the store has it — so a message is lost neither by a crash of this service nor by a
//! store failure; the broker delivers it again, and the store's keys make the redelivery a
//! no-op.
//!
//! The pipeline is the same for every source; a source only receives [`Delivery`]s and
//! settles them ([`Settle`]):
//!
//! 1. Receive a delivery, and whatever else has arrived (up to [`BATCH`] deliveries and
//!    [`BATCH_BYTES`] of payload).
//! 2. Interpret each: its address (topic, subject, routing key) and payload must agree
//!    ([`crate::message::understand`]). What is not understood is counted as refused, logged
//!    at a limited rate, and settled as [`Outcome::Refused`] so that it does not come back.
//! 3. Apply the understood ones to the store in one transaction (one at a time if the batch
//!    fails), and wait for the commit.
//! 4. Only then settle each: [`Outcome::Stored`] (acknowledge), or [`Outcome::NotStored`] when
//!    the store could not take it: a source that can give a message back (NATS nak with a
//!    delay, AMQP nack with requeue) does so, and the pipeline waits (backing off) before it
//!    takes more; an MQTT source cannot, so the pipeline holds the message and retries it until
//!    it is stored, acknowledging nothing after it meanwhile.
//! 5. Tell the dashboards and the notifier about what was new.
//!
//! # Invariants
//! - No delivery is acknowledged before the transaction that holds it has committed.
//! - A delivery the store did not take is never acknowledged: it is given back, held, or (at a
//!   stop) left to the broker, which delivers it again.
//! - The same message applied twice changes nothing (the store's `seen` keys).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use edge_schema::Address;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::live::Change;
use crate::message::{Message, Refused, understand_all};
use crate::notify::Routes;
use crate::source::config::SourceConfig;
use crate::source::{amqp, kafka, mqtt, nats};
use crate::store::{Applied, Pending, Store, StoreError};

/// Deliveries applied in one transaction at most.
pub const BATCH: usize = 256;
/// Payload bytes taken into one transaction, at most (past the first delivery): a gateway's
/// batch carries up to 10 000 events, so counting deliveries alone would let 256 of them put
/// millions of events in memory at once.
pub const BATCH_BYTES: usize = 1 << 20;

/// What the consumer has done.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Messages applied for the first time.
    pub applied: AtomicU64,
    /// Redeliveries and repeats that changed nothing.
    pub duplicates: AtomicU64,
    /// Messages not understood (counted, skipped, acknowledged).
    pub refused: AtomicU64,
    /// Failed attempts to store a message, retried or given back to the broker (a lost
    /// connection, a busy disk).
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

/// One message as a source received it.
#[derive(Debug)]
pub struct Delivery<H> {
    /// Its address as the backbone spells it (topic, subject, routing key), for the logs.
    pub origin: String,
    /// Its address understood, or `None` when it is not one a gateway publishes on.
    pub address: Option<Address<'static>>,
    /// The payload.
    pub payload: Bytes,
    /// What the source needs to settle it.
    pub handle: H,
}

/// How a delivery ended, for the source to settle it with its broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed to the store, now or before (a duplicate): acknowledge.
    Stored,
    /// Not understood, or refused by the store for its data: no redelivery can change that;
    /// acknowledge (or terminate) so that it does not come back.
    Refused,
    /// The store could not take it: do not acknowledge; give it back if the backbone can.
    NotStored,
}

impl Outcome {
    /// How a delivery of several messages (a batch) ends, from how two of them ended: not
    /// stored if either was not (it must come again), else stored if either was.
    fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::NotStored, _) | (_, Self::NotStored) => Self::NotStored,
            (Self::Stored, _) | (_, Self::Stored) => Self::Stored,
            (Self::Refused, Self::Refused) => Self::Refused,
        }
    }
}

/// How a source settles deliveries with its broker.
pub trait Settle: Send {
    /// What identifies a delivery to the broker.
    type Handle: Send + 'static;

    /// Whether a delivery the store did not take can be handed back to the broker for a later
    /// delivery (NATS, AMQP). If not (MQTT), the pipeline holds it and retries until stored.
    fn gives_back(&self) -> bool;

    /// Settles each delivery by its outcome, in order. `retry_after` is how long the broker
    /// should wait before delivering a [`Outcome::NotStored`] one again.
    fn settle(
        &mut self,
        settled: Vec<(Self::Handle, Outcome)>,
        retry_after: Duration,
    ) -> impl Future<Output = ()> + Send;

    /// Ends the session with the broker politely, where that means something.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// A running source: its deliveries, how to settle them, and the task that receives them.
#[derive(Debug)]
pub struct Started<A: Settle> {
    /// The deliveries, in the order received. Unbounded, so that receiving never waits on
    /// the pipeline (which may be waiting on the receiver to settle); each broker's window
    /// of unacknowledged deliveries (MQTT in-flight, NATS `max_ack_pending`, AMQP prefetch)
    /// bounds it.
    pub incoming: mpsc::UnboundedReceiver<Delivery<A::Handle>>,
    /// How to settle them.
    pub settler: A,
    /// The task receiving them (connecting and reconnecting).
    pub task: JoinHandle<()>,
}

/// Consumes from `config`'s source until `shutdown` turns true; `tls` is the client
/// configuration for a source over TLS ([`SourceConfig::uses_tls`]).
pub async fn run<S: Store>(
    config: SourceConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    store: Arc<S>,
    stats: Arc<ConsumerStats>,
    outlets: Outlets,
    shutdown: watch::Receiver<bool>,
) {
    tracing::info!(broker = config.broker(), "starting the consumer");
    match config {
        SourceConfig::Mqtt(config) => {
            let started = mqtt::start(config, tls, shutdown.clone());
            consume(started, &*store, &stats, &outlets, shutdown).await;
        }
        SourceConfig::Nats(config) => {
            let started = nats::start(config, tls, shutdown.clone());
            consume(started, &*store, &stats, &outlets, shutdown).await;
        }
        SourceConfig::Amqp(config) => {
            let started = amqp::start(config, shutdown.clone());
            consume(started, &*store, &stats, &outlets, shutdown).await;
        }
        SourceConfig::Kafka(config) => {
            let started = kafka::start(config, shutdown.clone());
            consume(started, &*store, &stats, &outlets, shutdown).await;
        }
    }
}

/// The pipeline (see the module docs), over any source, until `shutdown` turns true or the
/// source ends.
pub async fn consume<S: Store, A: Settle>(
    started: Started<A>,
    store: &S,
    stats: &ConsumerStats,
    outlets: &Outlets,
    mut shutdown: watch::Receiver<bool>,
) {
    let Started {
        mut incoming,
        mut settler,
        task,
    } = started;
    let hold = !settler.gives_back();
    let mut refusals = RefusalLog::default();
    // A delivery received but left for the next transaction (it would have passed BATCH_BYTES).
    let mut held: Option<Delivery<A::Handle>> = None;
    let mut backoff = Backoff::default();
    loop {
        let first = match held.take() {
            Some(delivery) => delivery,
            None => tokio::select! {
                delivery = incoming.recv() => match delivery {
                    Some(delivery) => delivery,
                    None => break,
                },
                _ = shutdown.changed() => break,
            },
        };
        // What else has arrived goes into the same transaction: one commit for many messages,
        // up to BATCH deliveries and BATCH_BYTES of payload.
        let (batch, next) = take_batch(first, &mut incoming);
        held = next;
        let outcomes = apply(
            store,
            stats,
            outlets,
            &batch,
            hold,
            &mut refusals,
            &mut shutdown,
        )
        .await;
        let failed = outcomes.contains(&Outcome::NotStored);
        let retry_after = if failed {
            backoff.next()
        } else {
            backoff.reset();
            Duration::ZERO
        };
        let settled = batch
            .into_iter()
            .map(|delivery| delivery.handle)
            .zip(outcomes)
            .collect();
        settler.settle(settled, retry_after).await;
        if failed && !*shutdown.borrow() {
            // The store is failing: what comes next would most likely fail too.
            tokio::select! {
                _ = tokio::time::sleep(retry_after) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    // What was received but not handled goes back to the broker (where the backbone can).
    incoming.close();
    let mut left: Vec<_> = held
        .into_iter()
        .map(|delivery| (delivery.handle, Outcome::NotStored))
        .collect();
    while let Ok(delivery) = incoming.try_recv() {
        left.push((delivery.handle, Outcome::NotStored));
    }
    if !left.is_empty() {
        settler.settle(left, Duration::ZERO).await;
    }
    settler.close().await;
    task.abort();
}

/// `first` and whatever else has already arrived, up to [`BATCH`] deliveries and [`BATCH_BYTES`]
/// of payload (the first is always taken); the delivery that would have passed the bytes is
/// given back, to start the next transaction.
fn take_batch<H>(
    first: Delivery<H>,
    incoming: &mut mpsc::UnboundedReceiver<Delivery<H>>,
) -> (Vec<Delivery<H>>, Option<Delivery<H>>) {
    let mut bytes = first.payload.len();
    let mut batch = vec![first];
    while batch.len() < BATCH {
        let Ok(delivery) = incoming.try_recv() else {
            break;
        };
        bytes += delivery.payload.len();
        if bytes > BATCH_BYTES {
            return (batch, Some(delivery));
        }
        batch.push(delivery);
    }
    (batch, None)
}

/// Applies `batch` to the store, in one transaction when it can; says for each delivery how it
/// ended.
///
/// A message the store cannot take now (a lost connection, a busy or full disk) is
/// [`Outcome::NotStored`] when `hold` is false. When `hold` is true it is retried here, with
/// backoff, until it is stored or `shutdown` turns true: nothing after it is settled meanwhile,
/// and nothing is lost. A message the store refuses for its data — which no retry can change —
/// is counted as refused (`store_rejected`), logged with its address and settled as
/// [`Outcome::Refused`], so that it cannot block the source.
async fn apply<S: Store, H>(
    store: &S,
    stats: &ConsumerStats,
    outlets: &Outlets,
    batch: &[Delivery<H>],
    hold: bool,
    refusals: &mut RefusalLog,
    shutdown: &mut watch::Receiver<bool>,
) -> Vec<Outcome> {
    let mut outcomes = vec![Outcome::Refused; batch.len()];
    let mut pending = Vec::with_capacity(batch.len());
    let mut slots = Vec::with_capacity(batch.len());
    for (slot, delivery) in batch.iter().enumerate() {
        // One message, or each event of a gateway's batch: the delivery is settled once all
        // of them are.
        let understood = match &delivery.address {
            Some(address) => understand_all(address, &delivery.origin, &delivery.payload),
            None => vec![Err(Refused::Topic(delivery.origin.clone()))],
        };
        for understood in understood {
            match understood {
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
                    refusals.log(&refused);
                }
            }
        }
    }
    if pending.is_empty() {
        return outcomes;
    }
    let now = now_ms();
    let results: Vec<Result<Applied, StoreError>> = match store.apply_all(&pending, now).await {
        Ok(applied) => applied.into_iter().map(Ok).collect(),
        Err(error) if pending.len() > 1 => {
            // One message the store refuses (or a deadlock with another instance) must not
            // hold up the rest: one at a time.
            tracing::warn!(%error, "a batch failed to store; storing its messages one by one");
            let mut results = Vec::with_capacity(pending.len());
            for Pending { message, notify } in &pending {
                results.push(store.apply(message, now, notify).await);
            }
            results
        }
        Err(error) => vec![Err(error)],
    };
    let mut backoff = Backoff::default();
    for ((Pending { message, notify }, slot), mut result) in
        pending.into_iter().zip(slots).zip(results)
    {
        let origin = &batch[slot].origin;
        let outcome = loop {
            match result {
                Ok(Applied::New) => {
                    stats.applied.fetch_add(1, Ordering::Relaxed);
                    if !notify.is_empty() {
                        outlets.queued.notify_one();
                    }
                    let _ = outlets.changes.send(Change::Stored { message, at: now });
                    break Outcome::Stored;
                }
                Ok(Applied::Duplicate) => {
                    stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    break Outcome::Stored;
                }
                Err(error) if error.is_permanent() => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    stats.store_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%error, origin, "the store refuses this message; skipped");
                    break Outcome::Refused;
                }
                Err(error) if !hold => {
                    stats.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%error, origin, "failed to store a message; giving it back");
                    break Outcome::NotStored;
                }
                Err(error) => {
                    stats.store_errors.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff.next();
                    tracing::error!(%error, origin, retry_in = ?wait, "failed to store a message; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => {}
                    }
                    if *shutdown.borrow() {
                        // Not acknowledged: the broker delivers it again to the next run.
                        break Outcome::NotStored;
                    }
                    result = store.apply(&message, now_ms(), &notify).await;
                }
            }
        };
        outcomes[slot] = outcomes[slot].and(outcome);
    }
    outcomes
}

/// Logs refused messages at most once a second, saying how many went unlogged in between: a
/// gateway sending garbage at full speed must not flood the log.
#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    const EVERY: Duration = Duration::from_secs(1);

    fn log(&mut self, refused: &Refused) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + Self::EVERY) {
            self.unlogged += 1;
            return;
        }
        self.last = Some(now);
        let unlogged = std::mem::take(&mut self.unlogged);
        tracing::warn!(
            reason = refused.reason(),
            unlogged,
            "skipped a message: {refused}"
        );
    }
}

/// Waits between retries of a failing store: doubling from 100 ms to 5 s.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Self::FIRST)
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    /// The wait before the next attempt.
    pub(crate) fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        wait
    }

    /// The store works again.
    pub(crate) fn reset(&mut self) {
        self.0 = Self::FIRST;
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
    use super::*;
    use crate::store::AlertFilter;
    use crate::store::sqlite::SqliteStore;

    fn outlets(routes: &str) -> (Outlets, broadcast::Receiver<Change>) {
        let (changes, watching) = broadcast::channel(64);
        let outlets = Outlets {
            changes,
            routes: Arc::new(Routes::parse(routes).unwrap()),
            queued: Arc::new(Notify::new()),
        };
        (outlets, watching)
    }

    /// A delivery as the MQTT source makes it; the handle numbers it.
    fn delivery(topic: &str, payload: impl Into<Bytes>) -> Delivery<usize> {
        Delivery {
            origin: topic.to_owned(),
            address: Address::from_mqtt_topic("edge", topic).map(Address::into_owned),
            payload: payload.into(),
            handle: 0,
        }
    }

    fn alert(state: &str, at: i64) -> Delivery<usize> {
        delivery(
            "edge/gw/alerts",
            format!(
                r#"{{"id":"gw:alert:1","gateway":"gw","rule":"hot","device":"d1","state":"{state}","severity":"critical","at":{at},"value":36.0,"event":"d1:1:5","labels":{{}}}}"#
            ),
        )
    }

    fn event_of(device: &str, seq: u32) -> Delivery<usize> {
        delivery(
            &format!("edge/gw/devices/{device}/events"),
            format!(
                r#"{{"id":"{device}:1:{seq}","gateway":"gw","device":"{device}","boot":1,"seq":{seq},"received_at":{seq},"readings":{{"temp_c":20.5}}}}"#
            ),
        )
    }

    fn event(seq: u32) -> Delivery<usize> {
        event_of("d1", seq)
    }

    async fn apply_all<S: Store>(
        store: &S,
        stats: &ConsumerStats,
        outlets: &Outlets,
        batch: &[Delivery<usize>],
        hold: bool,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Vec<Outcome> {
        let mut refusals = RefusalLog::default();
        apply(store, stats, outlets, batch, hold, &mut refusals, shutdown).await
    }

    use Outcome::{NotStored, Refused as Skipped, Stored};

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
            delivery("edge/gw/alerts", "not json"),
            delivery("edge/gw/unknown", "{}"),
            alert("firing", 1000),
            alert("firing", 1000), // redelivered
        ];
        let (_stop, mut running) = watch::channel(false);
        let outcomes = apply_all(&store, &stats, &outlets, &batch, true, &mut running).await;
        assert_eq!(
            outcomes,
            [Stored, Stored, Stored, Skipped, Skipped, Stored, Stored],
            "everything handled is settled"
        );
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
        let outcomes = apply_all(&store, &stats, &outlets, &batch, true, &mut running).await;
        assert_eq!(outcomes.iter().filter(|o| **o == Stored).count(), 5);
        assert_eq!(stats.applied.load(Ordering::Relaxed), 3);
        assert!(watching.try_recv().is_err());
    }

    /// A gateway's batch of events of `devices` (`device:seq`), as its MQTT uplink sends it.
    fn batch_of(events: &[(&str, u32)]) -> Delivery<usize> {
        let items: Vec<String> = events
            .iter()
            .map(|(device, seq)| {
                format!(
                    r#"{{"id":"{device}:1:{seq}","gateway":"gw","device":"{device}","boot":1,"seq":{seq},"received_at":{seq},"readings":{{"temp_c":20.5}}}}"#
                )
            })
            .collect();
        delivery("edge/gw/events", format!("[{}]", items.join(",")))
    }

    #[tokio::test]
    async fn a_batch_is_stored_event_by_event_and_settled_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("a.db")).unwrap();
        let stats = ConsumerStats::default();
        let (outlets, mut watching) = outlets("");
        let batch = [
            batch_of(&[("d1", 1), ("d2", 1), ("d1", 2)]),
            event(2), // also in the batch: a duplicate
            delivery("edge/gw/events", r#"[{"id":"x"}]"#),
            batch_of(&[("d3", 1)]),
        ];
        let (_stop, mut running) = watch::channel(false);
        let outcomes = apply_all(&store, &stats, &outlets, &batch, true, &mut running).await;
        assert_eq!(outcomes, [Stored, Stored, Skipped, Stored]);
        assert_eq!(stats.applied.load(Ordering::Relaxed), 4);
        assert_eq!(stats.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
        let mut announced = Vec::new();
        while let Ok(Change::Stored { message, .. }) = watching.try_recv() {
            announced.push(message.key().unwrap());
        }
        assert_eq!(announced, ["d1:1:1", "d2:1:1", "d1:1:2", "d3:1:1"]);
    }

    #[test]
    fn a_transaction_takes_at_most_batch_deliveries_and_batch_bytes() {
        let (tx, mut incoming) = mpsc::unbounded_channel();
        let sized = |bytes: usize| delivery("edge/gw/events", vec![b' '; bytes]);
        // Deliveries of 300 KiB: three fit in 1 MiB, the fourth starts the next transaction.
        for _ in 0..5 {
            tx.send(sized(300 << 10)).unwrap();
        }
        let first = incoming.try_recv().unwrap();
        let (batch, held) = take_batch(first, &mut incoming);
        assert_eq!(batch.len(), 3);
        let (batch, held) = take_batch(held.expect("the fourth is held"), &mut incoming);
        assert_eq!((batch.len(), held.is_none()), (2, true));
        // A delivery larger than the budget still goes, alone.
        tx.send(sized(2 << 20)).unwrap();
        tx.send(sized(10)).unwrap();
        let first = incoming.try_recv().unwrap();
        let (batch, held) = take_batch(first, &mut incoming);
        assert_eq!((batch.len(), held.is_some()), (1, true));
        // Small deliveries stop at BATCH.
        for _ in 0..BATCH + 10 {
            tx.send(sized(10)).unwrap();
        }
        let (batch, held) = take_batch(held.unwrap(), &mut incoming);
        assert_eq!((batch.len(), held.is_none()), (BATCH, true));
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
        for hold in [true, false] {
            let outcomes = apply_all(
                &store,
                &stats,
                &outlets,
                &[alert("firing", 1000), event_of("bad", 1), event(2)],
                hold,
                &mut running,
            )
            .await;
            assert_eq!(
                outcomes,
                [Stored, Skipped, Stored],
                "refused data cannot block the source"
            );
        }
        assert_eq!(stats.store_rejected.load(Ordering::Relaxed), 2);
        assert_eq!(stats.refused.load(Ordering::Relaxed), 2);
        assert_eq!(stats.applied.load(Ordering::Relaxed), 2);
        assert_eq!(stats.duplicates.load(Ordering::Relaxed), 2);
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
        let outcomes = apply_all(
            &store,
            &stats,
            &outlets,
            &[alert("firing", 1000), event(1), alert("resolved", 2000)],
            true,
            &mut running,
        )
        .await;
        restore.await.unwrap();
        assert_eq!(outcomes, [Stored; 3]);
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
        let outcomes = apply_all(
            &store,
            &stats,
            &outlets,
            &[event(3), alert("firing", 5000)],
            true,
            &mut running,
        )
        .await;
        stopper.await.unwrap();
        assert_eq!(outcomes, [NotStored, Stored]);
    }

    #[tokio::test]
    async fn a_source_that_gives_back_gets_what_the_store_failed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = SqliteStore::open(&path).unwrap();
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("ALTER TABLE devices RENAME TO devices_away")
            .unwrap();
        let stats = ConsumerStats::default();
        let (outlets, _watching) = outlets("");
        // Never stops: giving back must not wait for the store.
        let (_stop, mut running) = watch::channel(false);
        let outcomes = apply_all(
            &store,
            &stats,
            &outlets,
            &[
                event(1),
                alert("firing", 1000),
                delivery("edge/gw/alerts", "garbage"),
                event(2),
            ],
            false,
            &mut running,
        )
        .await;
        assert_eq!(outcomes, [NotStored, Stored, Skipped, NotStored]);
        assert_eq!(stats.store_errors.load(Ordering::Relaxed), 2);
    }

    /// A source that reports how it settled each delivery.
    #[derive(Debug)]
    struct Recorded {
        gives_back: bool,
        settled: mpsc::UnboundedSender<(usize, Outcome, Duration)>,
    }

    impl Settle for Recorded {
        type Handle = usize;

        fn gives_back(&self) -> bool {
            self.gives_back
        }

        async fn settle(&mut self, settled: Vec<(usize, Outcome)>, retry_after: Duration) {
            for (handle, outcome) in settled {
                let _ = self.settled.send((handle, outcome, retry_after));
            }
        }

        async fn close(self) {}
    }

    #[tokio::test]
    async fn the_pipeline_settles_after_the_commit_and_backs_off_while_the_store_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = SqliteStore::open(&path).unwrap();
        let stats = ConsumerStats::default();
        let (outlets, _watching) = outlets("");
        let (sender, incoming) = mpsc::unbounded_channel();
        let (settled, mut settling) = mpsc::unbounded_channel();
        let settler = Recorded {
            gives_back: true,
            settled,
        };
        let (stop, stopped) = watch::channel(false);
        let numbered = |handle, delivery: Delivery<usize>| Delivery { handle, ..delivery };
        let pipeline = {
            let started = Started {
                incoming,
                settler,
                task: tokio::spawn(async {}),
            };
            async move { consume(started, &store, &stats, &outlets, stopped).await }
        };
        let driver = async {
            let mut next = async || {
                tokio::time::timeout(Duration::from_secs(10), settling.recv())
                    .await
                    .expect("a delivery settled within 10 s")
                    .expect("the pipeline runs")
            };
            sender.send(numbered(0, event(1))).unwrap();
            assert_eq!(next().await, (0, Stored, Duration::ZERO));
            sender
                .send(numbered(1, delivery("other/topic", "{}")))
                .unwrap();
            assert_eq!(next().await, (1, Skipped, Duration::ZERO));
            // The store fails: the delivery is given back, with a delay that grows.
            let outage = rusqlite::Connection::open(&path).unwrap();
            outage
                .execute_batch("ALTER TABLE devices RENAME TO devices_away")
                .unwrap();
            sender.send(numbered(2, event(2))).unwrap();
            assert_eq!(next().await, (2, NotStored, Duration::from_millis(100)));
            sender.send(numbered(3, event(2))).unwrap();
            assert_eq!(next().await, (3, NotStored, Duration::from_millis(200)));
            outage
                .execute_batch("ALTER TABLE devices_away RENAME TO devices")
                .unwrap();
            sender.send(numbered(4, event(2))).unwrap();
            assert_eq!(next().await, (4, Stored, Duration::ZERO));
            // Stopping with a delivery received: it is stored, or given back.
            sender.send(numbered(5, event(3))).unwrap();
            let _ = stop.send(true);
            let (handle, outcome, _) = next().await;
            assert!(handle == 5 && outcome != Skipped, "{outcome:?}");
        };
        tokio::join!(pipeline, driver);
    }
}
