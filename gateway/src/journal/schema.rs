//! The journal's tables, and the migrations that bring a journal written by an earlier release to
//! the current schema.
//!
//! # Versions (`PRAGMA user_version`)
//! - 0: an empty file; the current schema is created.
//! - 1: the first release. Alerts were rows of `events` with negative ids (from `-2^62` up), and
//!   an acknowledgement deleted its row: there was one destination. Migrated to 2 by moving the
//!   alerts, in order, into `alerts`; the rows left in the journal were not confirmed, so every
//!   destination gets them (no positions are written).
//! - 2: lanes are tables (`events`, `alerts`), and each destination's delivery position is kept
//!   in `positions`.
//!
//! A migration runs in one transaction: a crash half-way leaves the journal at its old version,
//! and the next start migrates it again.

use rusqlite::Connection;

/// The schema this release writes.
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// Where version 1 kept alerts: rows of `events` with ids from here up.
const V1_ALERT_ROW_BASE: i64 = -(1 << 62);

/// The current schema, for a new journal.
const CREATE: &str = "
    CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS alerts (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS positions (
        destination TEXT NOT NULL,
        lane TEXT NOT NULL,
        confirmed INTEGER NOT NULL,
        PRIMARY KEY (destination, lane)
    );
    CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY,
        received_at INTEGER NOT NULL,
        source TEXT NOT NULL,
        topic TEXT NOT NULL,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS alert_state (
        rule TEXT NOT NULL,
        device TEXT NOT NULL,
        alert INTEGER NOT NULL,
        PRIMARY KEY (rule, device)
    );
    CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
";

/// What preparing the schema did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prepared {
    /// The journal is new: its tables were just created.
    Created,
    /// The journal was already at the current version.
    Current,
    /// The journal was migrated from this version.
    MigratedFrom(i64),
}

/// Why the schema could not be prepared.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SchemaError {
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The journal was written by a later release: opening it could lose what it holds.
    #[error(
        "the journal has schema version {0}, newer than this release's {SCHEMA_VERSION}: \
         upgrade edge-gateway, or move the journal aside"
    )]
    TooNew(i64),
}

/// Creates the schema in a new journal, or migrates an older one to the current version.
pub(crate) fn prepare(conn: &mut Connection) -> Result<Prepared, SchemaError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    match version {
        SCHEMA_VERSION => {
            // Tables added within a version are created if missing.
            conn.execute_batch(CREATE)?;
            Ok(Prepared::Current)
        }
        0 => {
            let tx = conn.transaction()?;
            // A file from version 1 that never had its version set does not exist: version 1
            // set it in the transaction that created its tables.
            tx.execute_batch(CREATE)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
            Ok(Prepared::Created)
        }
        1 => {
            let tx = conn.transaction()?;
            tx.execute_batch(CREATE)?;
            tx.execute(
                "INSERT INTO alerts (device, received_at, payload)
                 SELECT device, received_at, payload FROM events WHERE id < 0 AND id >= ?1
                 ORDER BY id",
                [V1_ALERT_ROW_BASE],
            )?;
            tx.execute("DELETE FROM events WHERE id < 0", [])?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
            Ok(Prepared::MigratedFrom(1))
        }
        newer => Err(SchemaError::TooNew(newer)),
    }
}
