//! The journal: a bounded, durable store-and-forward queue in SQLite.
//!
//! Accepted events are appended here before anything is sent upstream, and a row leaves the
//! journal only when every destination it is routed to has confirmed it (or when a bound forces
//! it out, which is counted). The write path ([`writer`], [`store`], [`batch`]), the read path
//! ([`tail`] for the rows committed last, in memory; [`reader`] and [`read`] for the rest) and the
//! confirmation path (confirmations go back through the writer) are separate, as in Vector's disk
//! buffer.
//!
//! # Invariants
//! 1. One thread owns the write connection; every change happens in a transaction that it
//!    commits (`synchronous = FULL` syncs the WAL on each commit). Many appends and
//!    confirmations share one transaction (group commit), so durability does not cost a sync
//!    per event.
//! 2. Each lane ([`Lane`]: alerts, events) is a table whose row ids grow with arrival order, so
//!    reading a lane in id order keeps per-device order.
//! 3. Each destination has a position per lane: every row up to it is confirmed by that
//!    destination (or not routed to it). A row is deleted only once every destination that
//!    takes its lane has passed it, or when `max_size` / `max_age` force it out; each forced
//!    removal is counted by reason, in total and for each destination that had not confirmed it.
//!    Rows therefore always leave from the head of a lane.
//! 4. The journal's files (database and WAL) stay under `max_size` plus a small, documented
//!    slack (see `docs/durability.md`).
//! 5. A journal that cannot be read is moved aside and a fresh one started: the gateway never
//!    refuses to start because of its own journal. The loss is logged at ERROR and counted. A
//!    journal written by an earlier release is migrated in one transaction ([`schema`]).
//!
//! # On-disk format
//! `journal.db` (SQLite, WAL mode, `PRAGMA user_version` = schema version) holds these tables:
//! - `events(id INTEGER PRIMARY KEY, device TEXT, received_at INTEGER, payload BLOB)`: the
//!   events lane. The payload is the uplink message, encoded once on ingest; `received_at` is in
//!   ms since the Unix epoch.
//! - `alerts(id, device, received_at, payload)`: the alerts lane, the same shape.
//! - `positions(destination TEXT, lane TEXT, confirmed INTEGER)`: per uplink name and lane, the
//!   highest row id that uplink has confirmed, with everything before it, where the deletes do
//!   not tell it: a destination confirmed no further than the rows that left the lane starts
//!   after them, whatever its row says (written when the name first starts, it may lag).
//! - `dead_letters(id, received_at, source, topic, reason, detail, payload)`: rejected input,
//!   and rows a destination refused for good; kept for inspection, bounded in count.
//! - `alert_state(rule, device, alert)`: the alerts firing now, so they go on after a restart.
//! - `meta(key, value)`: `last_alert`, the last alert number handed out; `journal`, the journal's
//!   number, drawn at random when it is created (0 for a journal of the first release), part of
//!   every alert id so that a replaced journal never repeats one.

mod batch;
mod error;
mod eviction;
mod read;
mod reader;
mod record;
pub(crate) mod schema;
mod stats;
mod store;
mod tail;
mod writer;

#[cfg(test)]
mod tests;

pub use batch::Confirm;
pub use error::JournalError;
pub use read::{
    DestinationBacklog, Inspection, JournalSummary, StoredDeadLetter, inspect, summarize,
};
pub use reader::JournalReader;
pub use record::{
    AlertRecord, DeadLetter, DestinationRoute, FiringAlert, Lane, Record, StoredEvent,
};
pub use stats::{DestinationStats, DropReason, JournalStats};
pub use store::{JournalOptions, OpenReport};
pub use writer::{AppendError, AppendPermit, Commit, CommitFailed, Journal, JournalHandle};
