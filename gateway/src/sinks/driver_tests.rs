//! The delivery driver against a fake adapter, with paused time: what reaches the broker, when,
//! and what the journal keeps, for confirmations out of order, rejections, a stall and a lost
//! connection. The journal is a real SQLite file.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::destination::{
    Confirmation, Connection, Destination, DestinationError, Outgoing, Rejection, RejectionKind,
};
use super::driver::{DeliverySettings, Driver};
use crate::admin::Metrics;
use crate::config::{Synchronous, WhenFull};
use crate::journal::{DestinationRoute, Journal, JournalHandle, JournalOptions, Lane, Record};

/// The test's end of one connection: what the driver offered, and where to answer.
struct Link {
    offers: mpsc::UnboundedReceiver<Outgoing>,
    replies: mpsc::UnboundedSender<Result<Confirmation, DestinationError>>,
}

impl Link {
    /// The next `count` rows offered, by id.
    async fn offered(&mut self, count: usize) -> Vec<Outgoing> {
        let mut offered = Vec::new();
        while offered.len() < count {
            offered.push(next(&mut self.offers, "an offer").await);
        }
        offered
    }

    fn confirm(&self, message: &Outgoing) {
        let _ = self.replies.send(Ok(Confirmation::Confirmed(message.tag)));
    }

    fn reject(&self, message: &Outgoing, kind: RejectionKind) {
        let rejection = Rejection {
            kind,
            reason: "refused by the fake".into(),
        };
        let _ = self
            .replies
            .send(Ok(Confirmation::Rejected(message.tag, rejection)));
    }
}

struct Fake {
    links: mpsc::UnboundedSender<Link>,
}

struct FakeConnection {
    offers: mpsc::UnboundedSender<Outgoing>,
    replies: mpsc::UnboundedReceiver<Result<Confirmation, DestinationError>>,
}

impl Destination for Fake {
    type Connection = FakeConnection;

    fn describe(&self) -> String {
        "fake://broker".into()
    }

    async fn connect(&mut self) -> Result<FakeConnection, DestinationError> {
        let (offers, offered) = mpsc::unbounded_channel();
        let (replies_tx, replies) = mpsc::unbounded_channel();
        self.links
            .send(Link {
                offers: offered,
                replies: replies_tx,
            })
            .map_err(|_| DestinationError::transient("the test is gone"))?;
        Ok(FakeConnection { offers, replies })
    }
}

impl Connection for FakeConnection {
    fn offer(&mut self, message: Outgoing) -> Result<(), DestinationError> {
        self.offers
            .send(message)
            .map_err(|_| DestinationError::transient("the test closed the connection"))
    }

    async fn next(&mut self) -> Result<Confirmation, DestinationError> {
        match self.replies.recv().await {
            Some(reply) => reply,
            None => Err(DestinationError::transient(
                "the test dropped the connection",
            )),
        }
    }

    async fn close(self, _grace: Duration) -> Vec<Confirmation> {
        Vec::new()
    }
}

struct Bench {
    _dir: tempfile::TempDir,
    journal: Option<Journal>,
    handle: JournalHandle,
    metrics: Arc<Metrics>,
    links: mpsc::UnboundedReceiver<Link>,
    stop: watch::Sender<bool>,
    driver: tokio::task::JoinHandle<()>,
}

impl Bench {
    /// A journal holding `rows` events, and a driver delivering them to the fake.
    async fn start(rows: usize, window: usize, ack_timeout: Duration) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = JournalOptions {
            path: dir.path().join("journal.db"),
            max_size: 64 << 20,
            max_age: Duration::from_secs(3600),
            when_full: WhenFull::DropOldest,
            synchronous: Synchronous::Normal,
            commit_interval: Duration::ZERO,
            destinations: vec![DestinationRoute::all("fake")],
        };
        let (journal, report) = Journal::start(options).expect("journal");
        let handle = journal.handle();
        let records = (0..rows)
            .map(|n| Record {
                device: format!("d{}", n % 3),
                received_at_ms: 1,
                payload: format!("event {n}").into_bytes(),
            })
            .collect();
        handle.append_and_wait(records).await.expect("append");
        let metrics = Arc::new(Metrics::new(Arc::clone(handle.stats()), &[]));
        let (links_tx, links) = mpsc::unbounded_channel();
        let settings = DeliverySettings {
            index: 0,
            route: DestinationRoute::all("fake"),
            window,
            ack_timeout,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(1),
        };
        let driver = Driver::new(
            Fake { links: links_tx },
            settings,
            handle.clone(),
            Arc::clone(&metrics.uplinks()[0]),
            report.positions[0],
        )
        .expect("driver");
        let (stop, stopped) = watch::channel(false);
        let driver = tokio::spawn(driver.run(stopped));
        Self {
            _dir: dir,
            journal: Some(journal),
            handle,
            metrics,
            links,
            stop,
            driver,
        }
    }

    async fn link(&mut self) -> Link {
        next(&mut self.links, "a connection").await
    }

    /// Waits until the journal holds `rows` rows.
    async fn journal_rows(&self, rows: u64) {
        let started = std::time::Instant::now();
        while started.elapsed() < GIVE_UP {
            if self.handle.stats().rows() == rows {
                return;
            }
            tokio::time::sleep(STEP).await;
        }
        panic!(
            "the journal holds {} rows, not {rows}",
            self.handle.stats().rows()
        );
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = self.driver.await;
        if let Some(journal) = self.journal.take() {
            journal.close().await;
        }
    }
}

fn ids(messages: &[Outgoing]) -> Vec<i64> {
    messages.iter().map(|message| message.row.id).collect()
}

/// An ack timeout that does not come into play.
const PATIENT: Duration = Duration::from_secs(3600);
/// How long (real time) a test waits for the driver before it fails.
const GIVE_UP: Duration = Duration::from_secs(30);
/// Virtual time passed per look at a channel: coarse enough that waiting out an `ack_timeout`
/// of 30 s takes a few thousand looks, not tens of thousands, on a busy machine.
const STEP: Duration = Duration::from_millis(10);

/// The next item of `channel`. Time is paused, and the driver waits on the journal's threads
/// too, which the runtime cannot see: the test lets virtual time pass [`STEP`] at a time (a
/// single long timeout would be reached at once), for at most [`GIVE_UP`] of real time.
async fn next<T>(channel: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    let started = std::time::Instant::now();
    loop {
        match channel.try_recv() {
            Ok(item) => return item,
            Err(mpsc::error::TryRecvError::Disconnected) => panic!("no more: {what}"),
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        assert!(started.elapsed() < GIVE_UP, "waited in vain for {what}");
        tokio::time::sleep(STEP).await;
    }
}

#[tokio::test(start_paused = true)]
async fn confirmations_out_of_order_release_rows_only_as_a_contiguous_prefix() {
    let mut bench = Bench::start(3, 8, PATIENT).await;
    let mut link = bench.link().await;
    let sent = link.offered(3).await;
    assert_eq!(ids(&sent), [1, 2, 3]);
    link.confirm(&sent[2]);
    link.confirm(&sent[1]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(bench.handle.stats().rows(), 3, "row 1 holds the others");
    link.confirm(&sent[0]);
    bench.journal_rows(0).await;
    assert_eq!(bench.metrics.uplinks()[0].confirmed(), 3);
    bench.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_permanent_rejection_is_dead_lettered_and_passed_over() {
    let mut bench = Bench::start(2, 8, PATIENT).await;
    let mut link = bench.link().await;
    let sent = link.offered(2).await;
    link.reject(&sent[0], RejectionKind::Permanent);
    link.confirm(&sent[1]);
    bench.journal_rows(0).await;
    // The letter is committed with, or before, the position that passes over its row.
    let inspection = crate::journal::inspect(bench.handle.path(), 10).expect("inspect");
    assert_eq!(inspection.dead_letters.len(), 1, "kept, not dropped");
    let letter = &inspection.dead_letters[0];
    assert_eq!(letter.reason, "refused_by_destination");
    assert_eq!(letter.detail, "refused by the fake");
    assert_eq!(letter.payload, b"event 0");
    bench.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_retryable_rejection_starts_over_and_resends_what_was_not_confirmed_in_order() {
    let mut bench = Bench::start(4, 8, PATIENT).await;
    let mut link = bench.link().await;
    let sent = link.offered(4).await;
    link.confirm(&sent[1]);
    link.reject(&sent[0], RejectionKind::Retryable);
    let mut again = bench.link().await;
    let resent = again.offered(3).await;
    assert_eq!(
        ids(&resent),
        [1, 3, 4],
        "row 2 was confirmed; the rest in order"
    );
    for message in &resent {
        again.confirm(message);
    }
    bench.journal_rows(0).await;
    let uplink = &bench.metrics.uplinks()[0];
    assert!(uplink.connected());
    bench.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stall_drops_the_connection_after_ack_timeout_and_resends() {
    let timeout = Duration::from_secs(30);
    let mut bench = Bench::start(2, 8, timeout).await;
    let mut link = bench.link().await;
    let sent = link.offered(2).await;
    let offered_at = tokio::time::Instant::now();
    // The broker says nothing: the driver gives up on the connection after ack_timeout.
    let mut again = bench.link().await;
    assert!(
        offered_at.elapsed() >= timeout,
        "not before ack_timeout: {:?}",
        offered_at.elapsed()
    );
    let uplink = Arc::clone(&bench.metrics.uplinks()[0]);
    assert!(uplink.stalled(), "readyz says stalled until a confirmation");
    let resent = again.offered(2).await;
    assert_eq!(ids(&resent), ids(&sent));
    again.confirm(&resent[0]);
    again.confirm(&resent[1]);
    bench.journal_rows(0).await;
    assert!(!uplink.stalled());
    let text = bench.metrics.render(0);
    assert!(
        text.contains("edge_uplink_stalls_total{uplink=\"fake\"} 1\n"),
        "{text}"
    );
    bench.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_disconnect_with_a_full_window_resends_everything_unconfirmed() {
    let mut bench = Bench::start(10, 4, PATIENT).await;
    let mut link = bench.link().await;
    let sent = link.offered(4).await;
    assert_eq!(ids(&sent), [1, 2, 3, 4]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        link.offers.try_recv().is_err(),
        "nothing beyond the window while nothing is confirmed"
    );
    let _ = link
        .replies
        .send(Err(DestinationError::transient("connection reset")));
    let mut again = bench.link().await;
    let mut delivered = Vec::new();
    while delivered.len() < 10 {
        let message = again.offered(1).await.remove(0);
        delivered.push(message.row.id);
        again.confirm(&message);
    }
    assert_eq!(delivered, (1..=10).collect::<Vec<_>>());
    bench.journal_rows(0).await;
    bench.stop().await;
}

#[tokio::test(start_paused = true)]
async fn alerts_go_out_before_events() {
    let mut bench = Bench::start(5, 8, PATIENT).await;
    // An alert committed after the events still goes first once the driver reads it.
    let mut link = bench.link().await;
    let events = link.offered(5).await;
    bench
        .handle
        .append_alert(crate::journal::AlertRecord {
            rule: "hot".into(),
            device: "d0".into(),
            alert: 1,
            firing: true,
            at_ms: 1,
            payload: b"alert 1".to_vec(),
        })
        .await
        .expect("alert");
    let alert = link.offered(1).await.remove(0);
    assert_eq!(alert.lane, Lane::Alerts);
    for message in events.iter().chain([&alert]) {
        link.confirm(message);
    }
    bench.journal_rows(0).await;
    bench.stop().await;
}
