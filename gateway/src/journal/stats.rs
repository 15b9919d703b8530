use super::record::Lane;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Why the journal removed a row that no sink acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `when_full = "drop_oldest"` evicted the oldest row to make room.
    EvictedOldest,
    /// `when_full = "drop_newest"` refused a new row.
    RejectedNewest,
    /// The row was older than `max_age`.
    Expired,
    /// The journal file was unreadable and moved aside: its rows are lost to this gateway.
    Corrupt,
    /// SQLite failed to store the row (disk full, I/O error).
    WriteFailed,
    /// No destination takes the row (its device matches no uplink's `devices`).
    Unrouted,
}

impl DropReason {
    /// Every reason, in metric order.
    pub const ALL: [DropReason; 6] = [
        DropReason::EvictedOldest,
        DropReason::RejectedNewest,
        DropReason::Expired,
        DropReason::Corrupt,
        DropReason::WriteFailed,
        DropReason::Unrouted,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::EvictedOldest => "evicted_oldest",
            DropReason::RejectedNewest => "rejected_newest",
            DropReason::Expired => "expired",
            DropReason::Corrupt => "corrupt",
            DropReason::WriteFailed => "write_failed",
            DropReason::Unrouted => "unrouted",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Live figures of one destination's share of the journal.
#[derive(Debug)]
pub struct DestinationStats {
    name: String,
    backlog: [AtomicU64; 2],
    oldest_unconfirmed_ms: AtomicI64,
    dropped: [AtomicU64; 6],
}

impl DestinationStats {
    fn new(name: String) -> Self {
        Self {
            name,
            backlog: Default::default(),
            oldest_unconfirmed_ms: AtomicI64::new(0),
            dropped: Default::default(),
        }
    }

    /// The uplink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Rows of `lane` it has not confirmed (see `Store::backlog`).
    pub fn backlog(&self, lane: Lane) -> u64 {
        self.backlog[lane.index()].load(Ordering::Relaxed)
    }

    /// Arrival time of the oldest event it has not confirmed.
    pub fn oldest_unconfirmed_ms(&self) -> Option<i64> {
        match self.oldest_unconfirmed_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(at),
        }
    }

    /// Rows removed before it confirmed them, for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn add_dropped(&self, reason: DropReason, count: u64) {
        self.dropped[reason.index()].fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn set_levels(&self, backlog: [u64; 2], oldest_unconfirmed_ms: Option<i64>) {
        for (slot, value) in self.backlog.iter().zip(backlog) {
            slot.store(value, Ordering::Relaxed);
        }
        self.oldest_unconfirmed_ms
            .store(oldest_unconfirmed_ms.unwrap_or(0), Ordering::Relaxed);
    }
}

/// Live figures of the journal, updated by the writer after each commit, read by `/metrics`.
#[derive(Debug, Default)]
pub struct JournalStats {
    rows: AtomicU64,
    file_bytes: AtomicU64,
    oldest_received_at_ms: AtomicI64,
    dropped: [AtomicU64; 6],
    commits: AtomicU64,
    appended: AtomicU64,
    corruptions: AtomicU64,
    writable: AtomicBool,
    destinations: Vec<DestinationStats>,
}

impl JournalStats {
    /// Figures for the named destinations, in order.
    pub fn new(destinations: impl IntoIterator<Item = String>) -> Self {
        Self {
            destinations: destinations
                .into_iter()
                .map(DestinationStats::new)
                .collect(),
            ..Self::default()
        }
    }

    /// Each destination's figures, in configuration order.
    pub fn destinations(&self) -> &[DestinationStats] {
        &self.destinations
    }

    /// Rows waiting to be sent.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Size of the journal's files on disk (database and WAL).
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes.load(Ordering::Relaxed)
    }

    /// Arrival time of the oldest row, if any.
    pub fn oldest_received_at_ms(&self) -> Option<i64> {
        match self.oldest_received_at_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(at),
        }
    }

    /// Rows removed without an ack, for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }

    /// Transactions committed since start.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Rows committed since start.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Journals found corrupt and moved aside since start.
    pub fn corruptions(&self) -> u64 {
        self.corruptions.load(Ordering::Relaxed)
    }

    /// Whether the last commit succeeded.
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    pub(crate) fn add_dropped(&self, reason: DropReason, count: u64) {
        if count > 0 {
            self.dropped[reason.index()].fetch_add(count, Ordering::Relaxed);
        }
    }

    pub(crate) fn add_appended(&self, count: u64) {
        self.appended.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn record_corruption(&self) {
        self.corruptions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_commit(&self, ok: bool) {
        if ok {
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        self.writable.store(ok, Ordering::Relaxed);
    }

    pub(crate) fn set_levels(
        &self,
        rows: u64,
        file_bytes: u64,
        oldest_received_at_ms: Option<i64>,
    ) {
        self.rows.store(rows, Ordering::Relaxed);
        self.file_bytes.store(file_bytes, Ordering::Relaxed);
        self.oldest_received_at_ms
            .store(oldest_received_at_ms.unwrap_or(0), Ordering::Relaxed);
    }
}
