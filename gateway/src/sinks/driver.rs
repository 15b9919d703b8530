//! The delivery driver: the one I/O loop that carries a destination's share of the journal to
//! it, whatever its protocol.
//!
//! # Delivery
//! 1. Each lane is read in id order from the destination's position: from the journal's tail in
//!    memory while the destination keeps up, else on a read connection of the driver's own;
//!    alerts are read and offered before events.
//! 2. While connected and the in-flight window has room, rows are offered to the connection
//!    without waiting ([`Connection::offer`]).
//! 3. Each confirmation settles its row; the position (every row confirmed up to it) is handed
//!    to the journal every [`CONFIRM_FLUSH_INTERVAL`], which deletes the rows every destination
//!    has. Each hand-over wakes the journal's writer; the writer lets confirmations wait for
//!    the next append anyway (up to its `CONFIRM_LINGER`), so handing them over more often
//!    would only cost wake-ups.
//! 4. A row refused for good is kept as a dead letter with the reason, counted, and passed over.
//!    A row refused for now starts the connection over after a backoff.
//! 5. When nothing in flight is confirmed for `ack_timeout`, the connection is stalled: counted,
//!    logged, dropped, and everything unconfirmed is sent again on a new one; `/readyz` says so
//!    until a confirmation comes.
//! 6. When a connection fails, everything it had not confirmed is read again and offered again
//!    on the next one, in id order, after a backoff with jitter: per-device order holds, and a
//!    duplicate carries the same id as the original.
//! 7. On shutdown, the connection is closed gracefully (status `offline`, confirmations still
//!    due awaited briefly) and the last position is handed to the journal.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::delivery::{Delivery, Settled};
use super::destination::{Connection, Destination, DestinationError};
use crate::admin::UplinkStats;
use crate::backoff::Backoff;
use crate::journal::{
    Confirm, DeadLetter, DestinationRoute, JournalError, JournalHandle, JournalReader, Lane,
    StoredEvent,
};

/// How often positions are handed to the journal, at most.
const CONFIRM_FLUSH_INTERVAL: Duration = Duration::from_millis(25);
/// How long a graceful shutdown waits for confirmations still due.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Rows read from the journal at a time, at most.
const READ_LIMIT: usize = 1024;

/// What the driver needs to know about its destination, besides the adapter.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// The destination's index among the journal's destinations.
    pub index: usize,
    /// Its name and what is routed to it.
    pub route: DestinationRoute,
    /// Messages in flight at most.
    pub window: usize,
    /// How long nothing in flight may go unconfirmed before the connection counts as stalled.
    pub ack_timeout: Duration,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
}

/// Carries one destination's rows from the journal to its adapter.
#[derive(Debug)]
pub struct Driver<D> {
    destination: D,
    settings: DeliverySettings,
    journal: JournalHandle,
    reader: JournalReader,
    stats: Arc<UplinkStats>,
    start: [i64; 2],
}

type PendingRead =
    Pin<Box<dyn Future<Output = (i64, Result<Vec<StoredEvent>, JournalError>)> + Send>>;

/// Why a connection ended.
enum End {
    Shutdown,
    Lost {
        error: DestinationError,
        /// Whether it had been up (then the backoff starts over).
        /// Whether the connection was worth keeping: it confirmed something, or lived at least
        /// `reconnect_max`. Only then does the backoff start over; a broker that takes the
        /// connection and refuses (or never confirms) every message is retried ever more slowly.
        healthy: bool,
    },
}

impl<D: Destination> Driver<D> {
    /// A driver starting at `start`, the destination's positions (`[alerts, events]`) as the
    /// journal kept them.
    pub fn new(
        destination: D,
        settings: DeliverySettings,
        journal: JournalHandle,
        stats: Arc<UplinkStats>,
        start: [i64; 2],
    ) -> Result<Self, JournalError> {
        let reader = JournalReader::open(journal.path())?;
        Ok(Self {
            destination,
            settings,
            journal,
            reader,
            stats,
            start,
        })
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let name = self.settings.route.name.clone();
        let target = self.destination.describe();
        let mut delivery = Delivery::new(
            self.settings.route.clone(),
            self.settings.window,
            self.start,
        );
        let mut backoff = Backoff::new(self.settings.reconnect_min, self.settings.reconnect_max);
        let mut failures = 0u32;
        loop {
            let connected = tokio::select! {
                connected = self.destination.connect() => connected,
                _ = shutdown.changed() => return,
            };
            let end = match connected {
                Ok(mut connection) => {
                    self.stats.set_connected(true);
                    tracing::info!(uplink = %name, to = %target, "uplink connected");
                    delivery.restart(Instant::now());
                    let connected_at = Instant::now();
                    let confirmed = self.stats.confirmed();
                    let mut end = self
                        .serve(&mut connection, &mut delivery, &mut shutdown)
                        .await;
                    if let End::Lost { healthy, .. } = &mut end {
                        *healthy = self.stats.confirmed() > confirmed
                            || connected_at.elapsed() >= self.settings.reconnect_max;
                    }
                    self.stats.set_connected(false);
                    if let End::Shutdown = end {
                        for confirmation in connection.close(SHUTDOWN_GRACE).await {
                            self.settle(&mut delivery, confirmation).await;
                        }
                        self.flush(&mut delivery);
                        return;
                    }
                    end
                }
                Err(error) => End::Lost {
                    error,
                    healthy: false,
                },
            };
            self.flush(&mut delivery);
            let End::Lost { error, healthy } = end else {
                return;
            };
            if healthy {
                backoff.reset();
                failures = 0;
            }
            failures += 1;
            // The first failure of a streak is news; the rest of the streak is noise.
            if failures == 1 && error.misconfigured {
                tracing::error!(uplink = %name, to = %target, %error, "uplink cannot be used as configured; retrying; events stay in the journal");
            } else if failures == 1 {
                tracing::warn!(uplink = %name, to = %target, %error, "uplink connection lost; events stay in the journal");
            } else {
                tracing::debug!(uplink = %name, to = %target, %error, failures, "uplink reconnect failed");
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One connection, from connect to loss (or shutdown).
    async fn serve(
        &self,
        connection: &mut D::Connection,
        delivery: &mut Delivery,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let mut reads: [Option<PendingRead>; 2] = [None, None];
        let mut committed = [
            self.journal.committed(Lane::Alerts),
            self.journal.committed(Lane::Events),
        ];
        let mut writer_gone = false;
        let stall = tokio::time::sleep(self.settings.ack_timeout);
        tokio::pin!(stall);
        let mut armed_at: Option<Instant> = None;
        let mut flush = tokio::time::interval(CONFIRM_FLUSH_INTERVAL);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lost = |message: String| End::Lost {
            error: DestinationError::transient(message),
            healthy: false,
        };
        let limit = self.settings.window.clamp(64, READ_LIMIT);
        loop {
            // Offer and read until the window is full or the journal has nothing more: rows
            // just committed come from the journal's tail in memory at once, the rest from
            // the database on the reader's thread.
            loop {
                let now = Instant::now();
                while let Some(message) = delivery.next_message(now) {
                    if let Err(error) = connection.offer(message) {
                        return lost(error.message);
                    }
                    self.stats.add_published(1);
                }
                let mut read_now = false;
                for lane in Lane::ALL {
                    // Events wait while alerts are being read: the priority lane goes first.
                    let alerts_busy = lane == Lane::Events && reads[Lane::Alerts.index()].is_some();
                    if reads[lane.index()].is_some() || alerts_busy {
                        continue;
                    }
                    let Some(after) = delivery.read_from(lane) else {
                        continue;
                    };
                    if let Some(rows) = self.journal.read_recent(lane, after, limit) {
                        delivery.on_read(lane, after, rows);
                        read_now = true;
                    } else {
                        let reader = self.reader.clone();
                        reads[lane.index()] = Some(Box::pin(async move {
                            (after, reader.read(lane, after, limit).await)
                        }));
                    }
                }
                if !read_now {
                    break;
                }
            }
            if let Err(error) = connection.offered() {
                return lost(error.message);
            }
            // The stall timer is armed at the deadline it last saw and only moved when it fires
            // early (progress came meanwhile): not re-armed for every confirmation.
            let stall_at = delivery.stall_deadline(self.settings.ack_timeout);
            match (stall_at, armed_at) {
                (Some(deadline), None) => {
                    stall.as_mut().reset(deadline);
                    armed_at = Some(deadline);
                }
                (None, Some(_)) => armed_at = None,
                _ => {}
            }
            let positions_moved = delivery.positions_moved();
            let [alert_read, event_read] = &mut reads;
            let [alerts_committed, events_committed] = &mut committed;
            tokio::select! {
                confirmation = connection.next() => match confirmation {
                    Ok(confirmation) => {
                        if let Some(retry) = self.settle(delivery, confirmation).await {
                            return lost(format!("the broker refused a message for now: {retry}"));
                        }
                    }
                    Err(error) => return lost(error.message),
                },
                (after, result) = poll_read(alert_read), if alert_read.is_some() => {
                    *alert_read = None;
                    self.on_read(delivery, Lane::Alerts, after, result);
                }
                (after, result) = poll_read(event_read), if event_read.is_some() => {
                    *event_read = None;
                    self.on_read(delivery, Lane::Events, after, result);
                }
                changed = alerts_committed.changed(), if delivery.takes_lane(Lane::Alerts) && delivery.caught_up(Lane::Alerts) && !writer_gone => {
                    match changed {
                        Ok(()) => delivery.on_committed(Lane::Alerts),
                        // The writer is gone: nothing new will come.
                        Err(_) => writer_gone = true,
                    }
                }
                changed = events_committed.changed(), if delivery.takes_lane(Lane::Events) && delivery.caught_up(Lane::Events) && !writer_gone => {
                    match changed {
                        Ok(()) => delivery.on_committed(Lane::Events),
                        Err(_) => writer_gone = true,
                    }
                }
                _ = flush.tick(), if positions_moved => self.flush(delivery),
                () = stall.as_mut(), if armed_at.is_some() => {
                    let now = Instant::now();
                    match delivery.stall_deadline(self.settings.ack_timeout) {
                        Some(deadline) if deadline > now => {
                            stall.as_mut().reset(deadline);
                            armed_at = Some(deadline);
                            continue;
                        }
                        Some(_) => {}
                        None => {
                            armed_at = None;
                            continue;
                        }
                    }
                    self.stats.record_stall();
                    tracing::warn!(
                        uplink = %self.settings.route.name,
                        in_flight = delivery.in_flight(),
                        ack_timeout = ?self.settings.ack_timeout,
                        "uplink stalled: nothing in flight was confirmed within ack_timeout; reconnecting and sending it again"
                    );
                    return lost(format!("no confirmation within ack_timeout ({:?})", self.settings.ack_timeout));
                }
                _ = shutdown.changed() => return End::Shutdown,
            }
        }
    }

    fn on_read(
        &self,
        delivery: &mut Delivery,
        lane: Lane,
        after: i64,
        result: Result<Vec<StoredEvent>, JournalError>,
    ) {
        match result {
            Ok(rows) => delivery.on_read(lane, after, rows),
            Err(error) => {
                // Try again when something new is committed.
                tracing::error!(uplink = %self.settings.route.name, %error, "failed to read the journal");
                delivery.on_read(lane, after, Vec::new());
            }
        }
    }

    /// Applies a confirmation; returns the reason when the row must be sent again later.
    async fn settle(
        &self,
        delivery: &mut Delivery,
        confirmation: super::destination::Confirmation,
    ) -> Option<String> {
        match delivery.on_confirmation(confirmation, Instant::now()) {
            Settled::Confirmed { latency } => {
                self.stats.add_confirmed(1);
                self.stats.ack_latency.observe(latency);
                self.stats.clear_stall();
                None
            }
            Settled::Refused {
                lane,
                id,
                rejection,
            } => {
                self.stats.add_rejected(true);
                self.stats.clear_stall();
                self.dead_letter(lane, id, &rejection.reason).await;
                None
            }
            Settled::Retry(rejection) => {
                self.stats.add_rejected(false);
                Some(rejection.reason)
            }
            Settled::Unknown => None,
        }
    }

    /// Keeps a row the destination refused for good, before its position passes over it.
    async fn dead_letter(&self, lane: Lane, id: i64, reason: &str) {
        let name = &self.settings.route.name;
        let rows = match self.journal.read_recent(lane, id - 1, 1) {
            Some(rows) => Ok(rows),
            None => self.reader.read(lane, id - 1, 1).await,
        };
        let row = rows
            .ok()
            .and_then(|rows| rows.into_iter().find(|row| row.id == id));
        tracing::warn!(uplink = %name, lane = lane.as_str(), row = id, %reason, "the uplink refused a message for good: kept as a dead letter");
        let (device, received_at_ms, payload) = row.map_or((String::new(), 0, Vec::new()), |row| {
            (row.device, row.received_at_ms, row.payload)
        });
        let letter = DeadLetter {
            received_at_ms,
            source: "uplink",
            topic: format!("{name}/{}/{device}", lane.as_str()),
            reason: "refused_by_destination",
            detail: reason.to_owned(),
            payload,
        };
        if let Err(error) = self.journal.refused(letter) {
            tracing::error!(uplink = %name, %error, "failed to keep a refused message as a dead letter");
        }
    }

    fn flush(&self, delivery: &mut Delivery) {
        for (lane, through) in delivery.take_positions() {
            let confirm = Confirm {
                destination: self.settings.index,
                lane,
                through,
            };
            if let Err(error) = self.journal.confirm(confirm) {
                tracing::error!(uplink = %self.settings.route.name, %error, "failed to record delivered events; they will be sent again");
            }
        }
    }
}

async fn poll_read(
    read: &mut Option<PendingRead>,
) -> (i64, Result<Vec<StoredEvent>, JournalError>) {
    match read.as_mut() {
        Some(read) => read.await,
        None => std::future::pending().await,
    }
}
