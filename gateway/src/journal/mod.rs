//! The journal: a bounded, durable store-and-forward queue in SQLite.
//!
//! Accepted events are appended here before anything is sent upstream, and a row leaves the
//! journal only when a sink confirms it (or when a bound forces it out, which is counted). The
//! write path ([`writer`]), the read path ([`reader`]) and the ack path (acks go back through the
//! writer) are separate, as in Vector's disk buffer.
//!
//! # Invariants
//! 1. One thread owns the write connection; every change happens in a transaction that it
//!    commits (`synchronous = FULL` syncs the WAL on each commit). Many appends and acks share one
//!    transaction (group commit), so durability does not cost a sync per event.
//! 2. Row ids grow with arrival order, so reading rows in id order keeps per-device order.
//! 3. A row is deleted only when a sink acknowledged it, or when `max_size` / `max_age` force it
//!    out; each forced removal is counted by reason in [`JournalStats`].
//! 4. The journal's files (database and WAL) stay under `max_size` plus a small, documented
//!    slack (see `docs/durability.md`).
//! 5. A journal that cannot be read is moved aside and a fresh one started: the gateway never
//!    refuses to start because of its own journal. The loss is logged at ERROR and counted.
//!
//! # On-disk format
//! `journal.db` (SQLite, WAL mode) holds two tables:
//! - `events(id INTEGER PRIMARY KEY, device TEXT, received_at INTEGER, payload BLOB)`: the payload
//!   is the uplink message, encoded once on ingest; `received_at` is in ms since the Unix epoch.
//! - `dead_letters(id, received_at, source, topic, reason, detail, payload)`: rejected input,
//!   kept for inspection, bounded in count.

mod error;
mod reader;
mod record;
mod stats;
mod store;
mod writer;

#[cfg(test)]
mod tests;

pub use error::JournalError;
pub use reader::JournalReader;
pub use record::{AlertRecord, DeadLetter, FiringAlert, Record, StoredEvent};
pub use stats::{DropReason, JournalStats};
pub use store::{
    Inspection, JournalOptions, JournalSummary, OpenReport, StoredDeadLetter, inspect, summarize,
};
pub use writer::{AppendError, AppendPermit, Commit, CommitFailed, Journal, JournalHandle};
