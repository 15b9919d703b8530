//! The write path: one thread owns the write connection and commits appends, acks and dead
//! letters in groups.
//!
//! # Group commit
//! The thread waits for the first piece of work, then takes everything else already queued (up
//! to [`MAX_BATCH_ROWS`]) and applies it in one transaction. Under light load an event is
//! committed as soon as it arrives; under heavy load the batches grow while a commit's sync is
//! under way, so the cost of a sync is shared by many events.
//!
//! # Commit window
//! With `commit_interval` (flash storage: every sync programs pages of the card), a commit comes
//! at most once per interval: work that arrives sooner after the last commit waits for the rest
//! of the interval, and everything that arrives meanwhile shares the commit. Nothing is
//! acknowledged before the commit that holds it, so a device waits up to the interval for its
//! acknowledgement. Alerts, a shutdown and a full batch end the wait at once.
//!
//! # Confirmations ride along
//! Confirmations only delete rows, which may be lost in a power cut (the rows are sent again),
//! so they need no commit of their own: work that is only confirmations waits up to
//! [`CONFIRM_LINGER`] for an append to share its commit. While devices send, every commit
//! carries both; while a backlog drains with nothing arriving, confirmations are committed a few
//! times a second instead of every few milliseconds.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};

use super::batch::{AppendResult, Batch, Confirm};
use super::error::JournalError;
use super::record::Lane;
use super::record::StoredEvent;
use super::record::{AlertRecord, DeadLetter, Record};
use super::stats::{DropReason, JournalStats};
use super::store::{JournalOptions, OpenReport, Store};
use super::tail::Tail;

/// Most rows applied in one transaction.
pub(crate) const MAX_BATCH_ROWS: usize = 4096;
/// Append requests queued before senders wait. Each device connection hands over what it read
/// in one request (at most a few hundred events), so this bounds the events held in memory
/// between the sources and the writer while letting one commit take the work of many devices.
const APPEND_QUEUE: usize = 32;
/// Alert transitions queued before the rule engine waits.
const ALERT_QUEUE: usize = 256;
/// How often rows past `max_age` are looked for.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);
/// How long work that is only confirmations waits for an append to commit with.
pub(crate) const CONFIRM_LINGER: Duration = Duration::from_millis(100);

enum AppendRequest {
    Records {
        records: Vec<Record>,
        done: Option<oneshot::Sender<Vec<Option<i64>>>>,
    },
    DeadLetter(DeadLetter),
}

enum Control {
    Confirm(Confirm),
    /// A row a destination refused for good, kept as a dead letter in the same transaction as
    /// the confirmation that passes over it.
    Refused(DeadLetter),
    /// Answered as soon as the writer takes it: the writer is back in its loop, not stuck in a
    /// commit.
    Heartbeat(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Room for one append request in the writer's queue.
#[derive(Debug)]
pub struct AppendPermit<'a> {
    permit: mpsc::Permit<'a, AppendRequest>,
}

impl AppendPermit<'_> {
    /// Hands `records` to the writer. The returned [`Commit`] resolves once they are committed.
    pub fn submit(self, records: Vec<Record>) -> Commit {
        let (done, committed) = oneshot::channel();
        self.permit.send(AppendRequest::Records {
            records,
            done: Some(done),
        });
        Commit { committed }
    }
}

/// The outcome of one append request, once its records are committed: one entry per record, its
/// row id or `None` if the journal refused it (full with `drop_newest`); [`CommitFailed`] if the
/// records are not stored (their transaction failed, or the writer stopped).
#[derive(Debug)]
#[must_use = "a commit does nothing unless awaited"]
pub struct Commit {
    committed: oneshot::Receiver<Vec<Option<i64>>>,
}

impl std::future::Future for Commit {
    type Output = Result<Vec<Option<i64>>, CommitFailed>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.committed)
            .poll(cx)
            .map(|result| result.map_err(|_| CommitFailed))
    }
}

/// Records of an append request were not stored.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the journal did not store these records (commit failed or writer stopped)")]
pub struct CommitFailed;

/// A hand-off that failed because the writer has stopped; the records come back.
#[derive(Debug, thiserror::Error)]
#[error("journal writer has stopped")]
pub struct AppendError(pub Vec<Record>);

/// The running journal: owns the writer thread.
#[derive(Debug)]
pub struct Journal {
    handle: JournalHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A cheap, cloneable handle to append to and ack rows of the journal.
#[derive(Clone)]
pub struct JournalHandle {
    appends: mpsc::Sender<AppendRequest>,
    alerts: mpsc::Sender<AlertRecord>,
    controls: mpsc::UnboundedSender<Control>,
    stats: Arc<JournalStats>,
    /// Per lane ([`Lane::index`]): the highest row id committed.
    committed: [watch::Receiver<i64>; 2],
    /// The rows committed last.
    tail: Arc<Tail>,
    path: std::path::PathBuf,
}

impl std::fmt::Debug for JournalHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalHandle")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (or recovers) the journal and starts its writer thread.
    pub fn start(options: JournalOptions) -> Result<(Self, OpenReport), JournalError> {
        Self::start_lingering(options, CONFIRM_LINGER)
    }

    /// [`Journal::start`] with confirmations alone waiting up to `confirm_linger` for an
    /// append (tests use a wait no machine is slow enough to run out of).
    pub(crate) fn start_lingering(
        options: JournalOptions,
        confirm_linger: Duration,
    ) -> Result<(Self, OpenReport), JournalError> {
        let stats = Arc::new(JournalStats::new(
            options.destinations.iter().map(|route| route.name.clone()),
        ));
        let (store, report) = Store::open(options)?;
        if let Some(moved_to) = &report.moved_aside {
            stats.record_corruption();
            tracing::error!(
                journal = %store.path().display(),
                moved_to = %moved_to.display(),
                "journal was unreadable: moved it aside and started an empty one; events it held are lost"
            );
        }
        if let Some(version) = report.migrated_from {
            tracing::info!(
                journal = %store.path().display(),
                from = version,
                rows = store.rows(),
                "journal migrated to the current schema; every destination gets what it holds"
            );
        }
        for name in &report.forgotten_destinations {
            tracing::warn!(
                destination = %name,
                "the journal held rows for an uplink that is no longer configured: no longer held for it"
            );
        }
        update_levels(&store, &stats);
        stats.record_commit(true);
        let (appends, append_rx) = mpsc::channel(APPEND_QUEUE);
        let (alerts, alert_rx) = mpsc::channel(ALERT_QUEUE);
        let (controls, control_rx) = mpsc::unbounded_channel();
        let next_ids = store.next_ids();
        let (committed_tx, committed) = watch::channel(next_ids[Lane::Events.index()] - 1);
        let (alerts_committed_tx, alerts_committed) =
            watch::channel(next_ids[Lane::Alerts.index()] - 1);
        let path = store.path().to_path_buf();
        let tail = Arc::new(Tail::new(next_ids.map(|next| next - 1)));
        let writer = Writer {
            commit_interval: store.options().commit_interval,
            confirm_linger,
            last_write: None,
            store,
            stats: Arc::clone(&stats),
            committed: [alerts_committed_tx, committed_tx],
            tail: Arc::clone(&tail),
            appends: append_rx,
            alerts: alert_rx,
            controls: control_rx,
        };
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| JournalError::DataDir {
                path: path.clone(),
                source,
            })?;
        let handle = JournalHandle {
            appends,
            alerts,
            controls,
            stats,
            committed: [alerts_committed, committed],
            tail,
            path,
        };
        Ok((
            Self {
                handle,
                thread: Some(thread),
            },
            report,
        ))
    }

    /// A handle for sources and sinks.
    pub fn handle(&self) -> JournalHandle {
        self.handle.clone()
    }

    /// Commits whatever is queued, checkpoints the WAL and stops the writer thread.
    pub async fn close(mut self) {
        let (done, finished) = oneshot::channel();
        if self.handle.controls.send(Control::Shutdown(done)).is_ok() {
            let _ = finished.await;
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl JournalHandle {
    /// Queues records for the next commit. Returns once they are queued, not committed: sources
    /// that must confirm durability use [`JournalHandle::append_and_wait`].
    pub async fn append(&self, records: Vec<Record>) -> Result<(), AppendError> {
        self.appends
            .send(AppendRequest::Records {
                records,
                done: None,
            })
            .await
            .map_err(|error| match error.0 {
                AppendRequest::Records { records, .. } => AppendError(records),
                AppendRequest::DeadLetter(_) => AppendError(Vec::new()),
            })
    }

    /// Appends records and waits until they are committed. The result has one entry per record:
    /// its row id, or `None` if the journal refused it (full with `drop_newest`). An error means
    /// the records are not stored: the writer has stopped, or their commit failed.
    pub async fn append_and_wait(
        &self,
        records: Vec<Record>,
    ) -> Result<Vec<Option<i64>>, AppendError> {
        let permit = self.reserve().await.map_err(|_| AppendError(Vec::new()))?;
        permit
            .submit(records)
            .await
            .map_err(|_| AppendError(Vec::new()))
    }

    /// Waits for room in the writer's queue. Cancelling the wait gives up the place in line and
    /// nothing else, so sources can wait for room and for other work at once.
    pub async fn reserve(&self) -> Result<AppendPermit<'_>, JournalError> {
        self.appends
            .reserve()
            .await
            .map(|permit| AppendPermit { permit })
            .map_err(|_| JournalError::WriterStopped)
    }

    /// Journals an alert transition in the priority lane (in the next commit). Alerts have a
    /// queue of their own that the writer always takes from, even while `when_full = "block"`
    /// holds events back.
    pub async fn append_alert(&self, alert: AlertRecord) -> Result<(), JournalError> {
        self.alerts
            .send(alert)
            .await
            .map_err(|_| JournalError::WriterStopped)
    }

    /// Keeps a rejected input for inspection.
    ///
    /// Never waits: when the writer's queue is full (a flood of bad input, or a full journal
    /// under `when_full = "block"`), the letter is given up and an error returned, so that bad
    /// input can never hold up a source.
    pub fn dead_letter(&self, letter: DeadLetter) -> Result<(), JournalError> {
        self.appends
            .try_send(AppendRequest::DeadLetter(letter))
            .map_err(|_| JournalError::WriterStopped)
    }

    /// Records that a destination has every row of a lane up to `through` (in the next
    /// commit). The rows leave the journal once every destination routed to them has them.
    pub fn confirm(&self, confirm: Confirm) -> Result<(), JournalError> {
        self.controls
            .send(Control::Confirm(confirm))
            .map_err(|_| JournalError::WriterStopped)
    }

    /// Keeps a row that a destination refused for good as a dead letter. Unlike
    /// [`JournalHandle::dead_letter`] this never gives the letter up: it is committed with, or
    /// before, the confirmation that passes over the row.
    pub fn refused(&self, letter: DeadLetter) -> Result<(), JournalError> {
        self.controls
            .send(Control::Refused(letter))
            .map_err(|_| JournalError::WriterStopped)
    }

    /// Resolves once the writer thread has come round to this request: after the commit it is
    /// in, if any. A writer stuck in a commit (a storage device that stopped answering, a lock
    /// held by another process) does not answer, which is what the systemd watchdog checks. An
    /// error if the writer has stopped.
    pub async fn heartbeat(&self) -> Result<(), JournalError> {
        let (answer, answered) = oneshot::channel();
        self.controls
            .send(Control::Heartbeat(answer))
            .map_err(|_| JournalError::WriterStopped)?;
        answered.await.map_err(|_| JournalError::WriterStopped)
    }

    /// Append requests waiting for the writer to take them.
    #[cfg(test)]
    pub(crate) fn queued_appends(&self) -> usize {
        APPEND_QUEUE - self.appends.capacity()
    }

    /// The highest row id of `lane` committed so far; changes after each commit that appended
    /// rows to it.
    pub fn committed(&self, lane: Lane) -> watch::Receiver<i64> {
        self.committed[lane.index()].clone()
    }

    /// Up to `limit` rows of `lane` with ids above `after`, in id order, from the rows committed
    /// last, kept in memory; `None` when some of them are only on disk, to be read with a
    /// [`super::JournalReader`]. A destination that keeps up reads here and never touches the
    /// database.
    pub fn read_recent(&self, lane: Lane, after: i64, limit: usize) -> Option<Vec<StoredEvent>> {
        self.tail.read(lane, after, limit)
    }

    /// Live figures.
    pub fn stats(&self) -> &Arc<JournalStats> {
        &self.stats
    }

    /// The journal file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

struct Writer {
    /// See the module's docs; zero commits as soon as work arrives.
    commit_interval: Duration,
    /// How long work that is only confirmations waits for an append ([`CONFIRM_LINGER`]).
    confirm_linger: Duration,
    /// When the last commit that wrote something began.
    last_write: Option<Instant>,
    store: Store,
    stats: Arc<JournalStats>,
    committed: [watch::Sender<i64>; 2],
    tail: Arc<Tail>,
    appends: mpsc::Receiver<AppendRequest>,
    alerts: mpsc::Receiver<AlertRecord>,
    controls: mpsc::UnboundedReceiver<Control>,
}

/// Who is waiting for how many of the queued records.
struct Waiter {
    remaining: usize,
    ids: Vec<Option<i64>>,
    done: Option<oneshot::Sender<Vec<Option<i64>>>>,
}

impl Writer {
    fn run(mut self) {
        // The writer's own single-threaded runtime: it only waits on channels; SQLite work blocks
        // this thread and no other.
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "failed to start the journal writer");
                return;
            }
        };
        runtime.block_on(self.serve());
    }

    async fn serve(&mut self) {
        let mut pending: VecDeque<Record> = VecDeque::new();
        let mut waiters: VecDeque<Waiter> = VecDeque::new();
        let mut appends_open = true;
        let mut alerts_open = true;
        let mut ticker = tokio::time::interval(EXPIRY_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_expiry = Instant::now();
        let mut shutdown: Option<Shutdown> = None;

        loop {
            let mut batch = Batch::default();
            // Records deferred by `when_full = "block"` go first, and nothing new is taken until
            // they are in: that is what makes the senders wait.
            let blocked = !pending.is_empty();
            // Take work until there is something to commit; with a commit window, go on taking
            // until the window ends (see the module's docs).
            let mut window: Option<Instant> = None;
            let mut started: Option<Instant> = None;
            loop {
                let window_over = async move {
                    match window {
                        Some(until) => tokio::time::sleep_until(until.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    control = self.controls.recv() => match control {
                        Some(control) => take_control(control, &mut batch, &mut shutdown),
                        // Every handle is gone: nobody can append or ack any more.
                        None => shutdown = Some(Shutdown(None)),
                    },
                    request = self.appends.recv(), if appends_open && !blocked => match request {
                        Some(request) => take_append(request, &mut batch, &mut pending, &mut waiters),
                        None => appends_open = false,
                    },
                    alert = self.alerts.recv(), if alerts_open => match alert {
                        Some(alert) => batch.alerts.push(alert),
                        None => alerts_open = false,
                    },
                    _ = ticker.tick(), if window.is_none() => {}
                    () = window_over => break,
                }
                while batch.confirms.len() + pending.len() + batch.dead_letters.len()
                    < MAX_BATCH_ROWS
                {
                    if let Ok(control) = self.controls.try_recv() {
                        take_control(control, &mut batch, &mut shutdown);
                        continue;
                    }
                    if let Ok(alert) = self.alerts.try_recv() {
                        batch.alerts.push(alert);
                        continue;
                    }
                    if !appends_open || !pending.is_empty() && blocked {
                        break;
                    }
                    match self.appends.try_recv() {
                        Ok(request) => take_append(request, &mut batch, &mut pending, &mut waiters),
                        Err(_) => break,
                    }
                }
                let started = *started.get_or_insert_with(Instant::now);
                window = self.window_end(&batch, &pending, shutdown.is_some(), started);
                if window.is_none() {
                    break;
                }
            }
            if shutdown.is_some() {
                // Take everything still queued, then stop.
                self.appends.close();
                while let Ok(request) = self.appends.try_recv() {
                    take_append(request, &mut batch, &mut pending, &mut waiters);
                }
                self.alerts.close();
                while let Ok(alert) = self.alerts.try_recv() {
                    batch.alerts.push(alert);
                }
            }
            if last_expiry.elapsed() >= EXPIRY_INTERVAL {
                batch.expire = true;
                last_expiry = Instant::now();
            }
            // Large batches are committed in slices that keep the WAL within its budget.
            let rows_per_transaction = self
                .store
                .budget()
                .rows_per_transaction()
                .clamp(16, MAX_BATCH_ROWS);
            loop {
                let take = pending.len().min(rows_per_transaction);
                batch.appends = pending.drain(..take).collect();
                if batch.is_empty() {
                    break;
                }
                let deferred = self.commit(std::mem::take(&mut batch), &mut waiters);
                if !deferred.is_empty() {
                    // Full under `block`: these go first once acks have made room.
                    for record in deferred.into_iter().rev() {
                        pending.push_front(record);
                    }
                    break;
                }
                if pending.is_empty() {
                    break;
                }
            }
            if let Some(Shutdown(done)) = shutdown.take() {
                if !pending.is_empty() {
                    tracing::warn!(
                        rows = pending.len(),
                        "journal full at shutdown: events held back by when_full = \"block\" were not stored"
                    );
                }
                if let Err(error) = self.store.save_positions() {
                    tracing::error!(error = %error_chain(&error), "failed to record the last confirmations; those events will be sent again");
                }
                self.store.checkpoint();
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    }

    /// Until when the commit of `batch` and `pending`, whose first work came at `started`,
    /// waits for more work: `None` to commit now (nothing that writes, an alert, a shutdown, a
    /// full batch, or else no commit window and no confirmations waiting for an append, or the
    /// wait already past).
    fn window_end(
        &self,
        batch: &Batch,
        pending: &VecDeque<Record>,
        shutting_down: bool,
        started: Instant,
    ) -> Option<Instant> {
        let adds = !pending.is_empty() || !batch.dead_letters.is_empty();
        let writes = adds || !batch.confirms.is_empty();
        let full =
            batch.confirms.len() + pending.len() + batch.dead_letters.len() >= MAX_BATCH_ROWS;
        if !writes || !batch.alerts.is_empty() || shutting_down || full {
            return None;
        }
        let window = (!self.commit_interval.is_zero())
            .then(|| self.last_write.map(|last| last + self.commit_interval))
            .flatten();
        let linger = (!adds).then_some(started + self.confirm_linger);
        let until = window.into_iter().chain(linger).max()?;
        (until > Instant::now()).then_some(until)
    }

    /// Commits one batch; returns the appends deferred by `when_full = "block"`.
    fn commit(&mut self, batch: Batch, waiters: &mut VecDeque<Waiter>) -> Vec<Record> {
        if !batch.appends.is_empty()
            || !batch.confirms.is_empty()
            || !batch.alerts.is_empty()
            || !batch.dead_letters.is_empty()
        {
            self.last_write = Some(Instant::now());
        }
        let appended = batch.appends.len();
        let now_ms = now_ms();
        let mut outcome = match self.store.apply(batch, now_ms) {
            Ok(outcome) => outcome,
            Err(error) => {
                self.stats.record_commit(false);
                tracing::error!(error = %error_chain(&error), rows = appended, "journal commit failed; the batch is lost");
                if error.is_corruption() {
                    self.recover_from_corruption();
                }
                self.stats
                    .add_dropped(DropReason::WriteFailed, appended as u64);
                fail(waiters, appended);
                return Vec::new();
            }
        };
        self.stats.record_commit(true);
        let stored = outcome
            .results
            .iter()
            .filter(|result| matches!(result, AppendResult::Stored(_)))
            .count();
        self.stats.add_appended(stored as u64);
        for (reason, count) in &outcome.dropped {
            self.stats.add_dropped(*reason, *count);
        }
        for (destination, reason, count) in &outcome.dropped_for {
            if let Some(stats) = self.stats.destinations().get(*destination) {
                stats.add_dropped(*reason, *count);
            }
        }
        update_levels(&self.store, &self.stats);
        let highest = outcome
            .results
            .iter()
            .rev()
            .find_map(|result| match result {
                AppendResult::Stored(id) => Some(*id),
                AppendResult::Refused | AppendResult::Unrouted => None,
            });
        // The rows go to the tail before anyone hears of them.
        let deleted_through = self.store.deleted_through();
        for lane in Lane::ALL {
            let rows = std::mem::take(&mut outcome.stored[lane.index()]);
            self.tail
                .committed(lane, rows, deleted_through[lane.index()]);
        }
        if let Some(highest) = highest {
            self.committed[Lane::Events.index()].send_replace(highest);
        }
        if let Some(highest) = outcome.last_alert_row {
            self.committed[Lane::Alerts.index()].send_replace(highest);
        }
        // Waiters hear last: whoever is told "committed" finds the figures already updated.
        let results = outcome.results.iter().map(|result| match result {
            AppendResult::Stored(id) => Some(*id),
            AppendResult::Refused | AppendResult::Unrouted => None,
        });
        settle(waiters, results);
        outcome.deferred
    }

    fn recover_from_corruption(&mut self) {
        let lost = self.store.rows();
        let next_ids = self.store.next_ids();
        let options = self.store.options().clone();
        let lost_for: Vec<u64> = (0..options.destinations.len())
            .map(|index| {
                self.store.backlog(index, Lane::Alerts) + self.store.backlog(index, Lane::Events)
            })
            .collect();
        match Store::open(options) {
            Ok((mut store, report)) => {
                store.continue_ids_from(next_ids);
                self.tail.reset(store.next_ids().map(|next| next - 1));
                self.stats.record_corruption();
                self.stats.add_dropped(DropReason::Corrupt, lost);
                for (stats, lost) in self.stats.destinations().iter().zip(lost_for) {
                    stats.add_dropped(DropReason::Corrupt, lost);
                }
                tracing::error!(
                    lost_rows = lost,
                    moved_to = ?report.moved_aside,
                    "journal became unreadable: moved it aside and started an empty one"
                );
                self.store = store;
            }
            Err(error) => {
                tracing::error!(error = %error_chain(&error), "failed to recover the journal");
            }
        }
    }
}

/// A request to stop, and who to tell when stopped.
struct Shutdown(Option<oneshot::Sender<()>>);

fn take_control(control: Control, batch: &mut Batch, shutdown: &mut Option<Shutdown>) {
    match control {
        Control::Confirm(confirm) => batch.confirms.push(confirm),
        Control::Refused(letter) => batch.dead_letters.push(letter),
        Control::Heartbeat(answer) => {
            // The asker may have given up waiting.
            let _ = answer.send(());
        }
        Control::Shutdown(done) => *shutdown = Some(Shutdown(Some(done))),
    }
}

fn take_append(
    request: AppendRequest,
    batch: &mut Batch,
    pending: &mut VecDeque<Record>,
    waiters: &mut VecDeque<Waiter>,
) {
    match request {
        AppendRequest::Records { records, done } => {
            waiters.push_back(Waiter {
                remaining: records.len(),
                ids: Vec::with_capacity(if done.is_some() { records.len() } else { 0 }),
                done,
            });
            pending.extend(records);
        }
        AppendRequest::DeadLetter(letter) => batch.dead_letters.push(letter),
    }
}

/// Hands each committed (or refused) record's fate to whoever waits for it, in order.
fn settle(waiters: &mut VecDeque<Waiter>, results: impl Iterator<Item = Option<i64>>) {
    for result in results {
        while waiters.front().is_some_and(|waiter| waiter.remaining == 0) {
            finish(waiters);
        }
        let Some(waiter) = waiters.front_mut() else {
            break;
        };
        waiter.remaining -= 1;
        if waiter.done.is_some() {
            waiter.ids.push(result);
        }
    }
    while waiters.front().is_some_and(|waiter| waiter.remaining == 0) {
        finish(waiters);
    }
}

/// Tells whoever waits for the next `count` records that they were not stored: their senders
/// are dropped, so a source that withholds its acknowledgement until the commit never gives it.
fn fail(waiters: &mut VecDeque<Waiter>, mut count: usize) {
    while count > 0 {
        while waiters.front().is_some_and(|waiter| waiter.remaining == 0) {
            finish(waiters);
        }
        let Some(waiter) = waiters.front_mut() else {
            return;
        };
        let taken = waiter.remaining.min(count);
        waiter.remaining -= taken;
        count -= taken;
        waiter.done = None;
    }
    while waiters.front().is_some_and(|waiter| waiter.remaining == 0) {
        finish(waiters);
    }
}

fn finish(waiters: &mut VecDeque<Waiter>) {
    if let Some(waiter) = waiters.pop_front()
        && let Some(done) = waiter.done
    {
        let _ = done.send(waiter.ids);
    }
}

/// Publishes the journal's levels, in total and per destination.
fn update_levels(store: &Store, stats: &JournalStats) {
    stats.set_levels(
        store.rows(),
        store.file_bytes(),
        store.oldest_received_at_ms(),
    );
    for (index, destination) in stats.destinations().iter().enumerate() {
        let backlog = [
            store.backlog(index, Lane::Alerts),
            store.backlog(index, Lane::Events),
        ];
        let oldest = if backlog[Lane::Events.index()] > 0 {
            store.oldest_unconfirmed_ms(index)
        } else {
            None
        };
        destination.set_levels(backlog, oldest);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An error with its causes, for logs.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(records: usize) -> (Waiter, oneshot::Receiver<Vec<Option<i64>>>) {
        let (done, receiver) = oneshot::channel();
        let waiter = Waiter {
            remaining: records,
            ids: Vec::new(),
            done: Some(done),
        };
        (waiter, receiver)
    }

    #[test]
    fn a_failed_commit_fails_exactly_the_requests_it_touched() {
        let (first, mut first_rx) = waiter(2);
        let (second, mut second_rx) = waiter(3);
        let (third, mut third_rx) = waiter(1);
        let mut waiters = VecDeque::from([first, second, third]);
        // The first request and one record of the second commit; the next transaction, with
        // the rest of the second, fails; the third commits.
        settle(&mut waiters, [Some(1), Some(2), Some(3)].into_iter());
        fail(&mut waiters, 2);
        settle(&mut waiters, [None].into_iter());
        assert_eq!(first_rx.try_recv().ok(), Some(vec![Some(1), Some(2)]));
        assert!(
            matches!(
                second_rx.try_recv(),
                Err(oneshot::error::TryRecvError::Closed)
            ),
            "partly stored means not stored: its source must not acknowledge"
        );
        assert_eq!(
            third_rx.try_recv().ok(),
            Some(vec![None]),
            "refused, not failed"
        );
        assert!(waiters.is_empty());
    }
}
