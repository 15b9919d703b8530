//! The journal's SQLite operations, synchronous and without threads: the writer thread drives
//! them, and tests drive them directly.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::error::JournalError;
use super::record::{
    AlertRecord, DeadLetter, FiringAlert, ROW_OVERHEAD, Record, StoredEvent, row_cost,
};
use super::stats::DropReason;
use crate::config::{Synchronous, WhenFull};

const SCHEMA_VERSION: i64 = 1;
/// Most undelivered alerts kept; past it the oldest give way.
pub(crate) const MAX_ALERT_ROWS: i64 = 10_000;
/// What the schema's fixed pages take, set aside before rows get their share of `max_size`.
const SCHEMA_PAGES_BYTES: u64 = 8 * 4096;
/// Alerts are rows of `events` with negative ids from here up: in id order they come before every
/// event (the priority lane), and among themselves in the order they were raised.
pub(crate) const ALERT_ROW_BASE: i64 = -(1 << 62);
const PAGE_SIZE: u64 = 4096;
/// Rows removed per eviction step, at least: evicting one row per append would cost a query per
/// event when the journal sits full.
const EVICTION_CHUNK_DIVISOR: u64 = 64;
/// WAL bytes one appended row costs, generously (see [`Budget::rows_per_transaction`]).
const WAL_BYTES_PER_ROW: u64 = 1024;

/// How the journal is bounded and synced.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The database file.
    pub path: PathBuf,
    /// Upper bound of the database and WAL files together.
    pub max_size: u64,
    /// Rows older than this are dropped (counted as `expired`).
    pub max_age: Duration,
    /// What to do with a new row when the journal is full.
    pub when_full: WhenFull,
    /// SQLite's `synchronous` setting.
    pub synchronous: Synchronous,
}

/// Space the journal's files may use, split by purpose. All of it adds up to `max_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// Bytes of WAL before a checkpoint and truncation.
    pub(crate) wal: u64,
    /// Bytes kept for dead letters.
    pub(crate) dead_letters: u64,
    /// Accounted bytes of event rows (see [`Record::cost`]).
    pub(crate) rows: u64,
}

impl Budget {
    pub(crate) fn for_max_size(max_size: u64) -> Self {
        let wal = (max_size / 8)
            .clamp(32 * 1024, 16 * 1024 * 1024)
            .min(max_size / 4);
        let dead_letters = (max_size / 16).min(2 * 1024 * 1024);
        // The schema's fixed pages (header, the small tables and their indexes; a few pages of
        // 4 KiB), then B-tree pages are not filled to the last byte and interior pages cost a
        // little too: leave 15 % of the rest to SQLite.
        let rows = max_size.saturating_sub(wal + dead_letters + SCHEMA_PAGES_BYTES) * 85 / 100;
        Self {
            wal,
            dead_letters,
            rows,
        }
    }

    /// Most rows one transaction may append. Every page a transaction touches is written to the
    /// WAL before a checkpoint can copy it back: half the WAL budget is the autocheckpoint
    /// threshold, the other half is for the transaction that crosses it. A row costs about
    /// [`WAL_BYTES_PER_ROW`] of WAL (its bytes, b-tree page overhead, the eviction it causes).
    pub(crate) fn rows_per_transaction(self) -> usize {
        usize::try_from(self.wal / 2 / WAL_BYTES_PER_ROW).unwrap_or(usize::MAX)
    }

    fn dead_letter_rows(self) -> u64 {
        (self.dead_letters / (DeadLetter::MAX_PAYLOAD as u64 + 512)).clamp(8, 1000)
    }
}

/// What opening the journal found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Rows found in the journal, to be sent again.
    pub recovered_rows: u64,
    /// Where a corrupt journal was moved, if it was.
    pub moved_aside: Option<PathBuf>,
    /// The last alert number handed out.
    pub last_alert: u64,
    /// Alerts that were firing.
    pub firing_alerts: Vec<FiringAlert>,
}

/// What one transaction did.
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    /// What became of each append that was not deferred, in order.
    pub(crate) results: Vec<AppendResult>,
    /// Appends not taken because the journal is full and `when_full = "block"`: they must be
    /// offered again, in order, once acks have made room.
    pub(crate) deferred: Vec<Record>,
    /// Rows deleted because a sink acknowledged them.
    pub(crate) acked: u64,
    /// Rows removed without an ack, by reason.
    pub(crate) dropped: Vec<(DropReason, u64)>,
    /// Alerts stored.
    pub(crate) alerts: usize,
}

/// What became of one appended record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendResult {
    /// Stored under this row id.
    Stored(i64),
    /// Refused: the journal is full and `when_full = "drop_newest"`, or the row alone is larger
    /// than the journal may hold.
    Refused,
}

/// One transaction's worth of work.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) appends: Vec<Record>,
    pub(crate) alerts: Vec<AlertRecord>,
    pub(crate) acks: Vec<i64>,
    pub(crate) dead_letters: Vec<DeadLetter>,
    /// Whether to look for rows older than `max_age` in this transaction.
    pub(crate) expire: bool,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.appends.is_empty()
            && self.alerts.is_empty()
            && self.acks.is_empty()
            && self.dead_letters.is_empty()
            && !self.expire
    }
}

/// The journal database, opened for writing.
#[derive(Debug)]
pub(crate) struct Store {
    conn: Connection,
    options: JournalOptions,
    budget: Budget,
    next_id: i64,
    next_alert_row: i64,
    rows: u64,
    row_bytes: u64,
    /// Whether commits currently sync (`synchronous = FULL` in effect).
    syncing: bool,
}

impl Store {
    /// Opens the journal, creating it if needed. A journal SQLite cannot read is moved aside and
    /// a fresh one started: the report says so.
    pub(crate) fn open(options: JournalOptions) -> Result<(Self, OpenReport), JournalError> {
        if let Some(dir) = options
            .path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::DataDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        match Self::open_existing(options.clone()) {
            Ok(store) => {
                let (last_alert, firing_alerts) = store.alert_state()?;
                let report = OpenReport {
                    recovered_rows: store.rows,
                    moved_aside: None,
                    last_alert,
                    firing_alerts,
                };
                Ok((store, report))
            }
            Err(error) if error.is_corruption() => {
                let moved_to = move_aside(&options.path)?;
                let store = Self::open_existing(options)?;
                let report = OpenReport {
                    recovered_rows: 0,
                    moved_aside: Some(moved_to),
                    last_alert: 0,
                    firing_alerts: Vec::new(),
                };
                Ok((store, report))
            }
            Err(error) => Err(error),
        }
    }

    fn open_existing(options: JournalOptions) -> Result<Self, JournalError> {
        let path = options.path.clone();
        let fail = |action: &'static str| {
            let path = path.clone();
            move |source| JournalError::Sqlite {
                action,
                path,
                source,
            }
        };
        let conn = Connection::open(&options.path).map_err(fail("open"))?;
        let budget = Budget::for_max_size(options.max_size);
        let synchronous = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        let wal_pages = (budget.wal / 2 / PAGE_SIZE).max(4);
        conn.execute_batch(&format!(
            "PRAGMA page_size = {PAGE_SIZE};
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = {synchronous};
             PRAGMA wal_autocheckpoint = {wal_pages};
             PRAGMA journal_size_limit = {wal};
             PRAGMA cache_size = -2000;
             PRAGMA busy_timeout = 5000;",
            wal = budget.wal,
        ))
        .map_err(fail("configure"))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(fail("read schema of"))?;
        if version == 0 {
            conn.execute_batch(&format!(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS events (
                     id INTEGER PRIMARY KEY,
                     device TEXT NOT NULL,
                     received_at INTEGER NOT NULL,
                     payload BLOB NOT NULL
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
                 PRAGMA user_version = {SCHEMA_VERSION};
                 COMMIT;"
            ))
            .map_err(fail("create schema in"))?;
        }
        // Tables added after the first release: created in journals that predate them.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS alert_state (
                 rule TEXT NOT NULL,
                 device TEXT NOT NULL,
                 alert INTEGER NOT NULL,
                 PRIMARY KEY (rule, device)
             );
             CREATE TABLE IF NOT EXISTS meta (
                 key TEXT PRIMARY KEY,
                 value INTEGER NOT NULL
             );",
        )
        .map_err(fail("create schema in"))?;
        // Reading every row's size walks the whole table: a damaged page shows up here, at start,
        // rather than in the middle of forwarding.
        let (rows, row_bytes, max_id): (i64, i64, i64) = conn
            .query_row(
                "SELECT count(*), coalesce(sum(length(device) + length(payload)), 0),
                        coalesce(max(id), 0)
                 FROM events",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(fail("scan"))?;
        let max_id = max_id.max(0);
        let next_alert_row: i64 = conn
            .query_row(
                "SELECT coalesce(max(id) + 1, ?1) FROM events WHERE id < 0",
                [ALERT_ROW_BASE],
                |row| row.get(0),
            )
            .map_err(fail("scan"))?;
        let _dead_letters: i64 = conn
            .query_row("SELECT count(*) FROM dead_letters", [], |row| row.get(0))
            .map_err(fail("scan"))?;
        let rows = u64::try_from(rows).unwrap_or(0);
        let row_bytes = u64::try_from(row_bytes).unwrap_or(0) + rows * super::record::ROW_OVERHEAD;
        let syncing = options.synchronous == Synchronous::Full;
        Ok(Self {
            conn,
            options,
            budget,
            next_id: max_id + 1,
            next_alert_row,
            rows,
            row_bytes,
            syncing,
        })
    }

    /// The last alert number, and the alerts that were firing.
    fn alert_state(&self) -> Result<(u64, Vec<FiringAlert>), JournalError> {
        let fail = |source| JournalError::Sqlite {
            action: "read alert state from",
            path: self.options.path.clone(),
            source,
        };
        let last: i64 = self
            .conn
            .query_row(
                "SELECT coalesce(max(value), 0) FROM meta WHERE key = 'last_alert'",
                [],
                |row| row.get(0),
            )
            .map_err(fail)?;
        let mut statement = self
            .conn
            .prepare("SELECT rule, device, alert FROM alert_state ORDER BY alert")
            .map_err(fail)?;
        let firing = statement
            .query_map([], |row| {
                Ok(FiringAlert {
                    rule: row.get(0)?,
                    device: row.get(1)?,
                    alert: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(fail)?;
        Ok((u64::try_from(last).unwrap_or(0), firing))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.options.path
    }

    /// The id the next appended row gets.
    pub(crate) fn next_id(&self) -> i64 {
        self.next_id
    }

    /// Makes ids continue from `next_id` (after a journal was replaced while running, so that a
    /// sink's read position stays valid).
    pub(crate) fn continue_ids_from(&mut self, next_id: i64) {
        self.next_id = self.next_id.max(next_id);
    }

    pub(crate) fn options(&self) -> &JournalOptions {
        &self.options
    }

    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Accounted bytes of the event rows.
    #[cfg(test)]
    pub(crate) fn row_bytes(&self) -> u64 {
        self.row_bytes
    }

    pub(crate) fn budget(&self) -> Budget {
        self.budget
    }

    /// Applies one batch in one transaction. On error nothing of the batch is applied (SQLite
    /// rolls the transaction back) and the in-memory accounting is left as it was.
    pub(crate) fn apply(
        &mut self,
        batch: Batch,
        now_ms: i64,
    ) -> Result<BatchOutcome, JournalError> {
        let saved = (self.next_id, self.rows, self.row_bytes);
        let result = self.apply_inner(batch, now_ms);
        if result.is_err() {
            (self.next_id, self.rows, self.row_bytes) = saved;
        }
        result
    }

    fn apply_inner(&mut self, batch: Batch, now_ms: i64) -> Result<BatchOutcome, JournalError> {
        let mut outcome = BatchOutcome::default();
        // Only what is added must reach the disk before the commit returns. A transaction that
        // only deletes (acks, expiry) may be lost in a power cut: the rows come back and are sent
        // again, which at-least-once allows. Skipping its sync halves the syncs while draining.
        let must_sync =
            !batch.appends.is_empty() || !batch.alerts.is_empty() || !batch.dead_letters.is_empty();
        if self.options.synchronous == Synchronous::Full && must_sync != self.syncing {
            let mode = if must_sync { "FULL" } else { "NORMAL" };
            self.conn
                .execute_batch(&format!("PRAGMA synchronous = {mode}"))
                .map_err(|source| JournalError::Sqlite {
                    action: "configure",
                    path: self.options.path.clone(),
                    source,
                })?;
            self.syncing = must_sync;
        }
        let tx = self
            .conn
            .transaction()
            .map_err(|source| JournalError::Sqlite {
                action: "begin a transaction in",
                path: self.options.path.clone(),
                source,
            })?;
        let path = self.options.path.clone();
        let fail = |action: &'static str| {
            let path = path.clone();
            move |source| JournalError::Sqlite {
                action,
                path,
                source,
            }
        };

        if !batch.acks.is_empty() {
            let mut delete = tx
                .prepare_cached(
                    "DELETE FROM events WHERE id = ?1 RETURNING length(device), length(payload)",
                )
                .map_err(fail("delete from"))?;
            for id in &batch.acks {
                let deleted: Option<(i64, i64)> = delete
                    .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
                    .map_err(fail("delete from"))?;
                if let Some((device_len, payload_len)) = deleted {
                    self.rows -= 1;
                    self.row_bytes = self
                        .row_bytes
                        .saturating_sub(row_cost(device_len, payload_len));
                    outcome.acked += 1;
                }
            }
        }

        if batch.expire && !self.options.max_age.is_zero() {
            let max_age_ms = i64::try_from(self.options.max_age.as_millis()).unwrap_or(i64::MAX);
            let cutoff = now_ms.saturating_sub(max_age_ms);
            let expired = evict_head(
                &tx,
                &mut self.rows,
                &mut self.row_bytes,
                Evict::OlderThan(cutoff),
            )
            .map_err(fail("expire rows in"))?;
            if expired > 0 {
                outcome.dropped.push((DropReason::Expired, expired));
            }
        }

        if !batch.appends.is_empty() {
            let mut evicted = 0;
            let mut refused = 0;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (id, device, received_at, payload) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(fail("append to"))?;
            let mut appends = batch.appends.into_iter();
            while let Some(record) = appends.next() {
                let cost = record.cost();
                if self.row_bytes + cost > self.budget.rows {
                    match self.options.when_full {
                        WhenFull::DropOldest if cost <= self.budget.rows => {
                            let need = self.row_bytes + cost - self.budget.rows;
                            let chunk = self.budget.rows / EVICTION_CHUNK_DIVISOR;
                            evicted += evict_head(
                                &tx,
                                &mut self.rows,
                                &mut self.row_bytes,
                                Evict::Bytes(need.max(chunk)),
                            )
                            .map_err(fail("evict rows from"))?;
                        }
                        WhenFull::Block if cost <= self.budget.rows => {
                            outcome.deferred.push(record);
                            outcome.deferred.extend(appends.by_ref());
                            break;
                        }
                        // drop_newest, or a row that could never fit
                        _ => {
                            outcome.results.push(AppendResult::Refused);
                            refused += 1;
                            continue;
                        }
                    }
                }
                let id = self.next_id;
                insert
                    .execute(params![
                        id,
                        record.device,
                        record.received_at_ms,
                        record.payload
                    ])
                    .map_err(fail("append to"))?;
                self.next_id += 1;
                self.rows += 1;
                self.row_bytes += cost;
                outcome.results.push(AppendResult::Stored(id));
            }
            if evicted > 0 {
                outcome.dropped.push((DropReason::EvictedOldest, evicted));
            }
            if refused > 0 {
                outcome.dropped.push((DropReason::RejectedNewest, refused));
            }
        }

        if !batch.alerts.is_empty() {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (id, device, received_at, payload) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(fail("append alert to"))?;
            let mut fire = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO alert_state (rule, device, alert) VALUES (?1, ?2, ?3)",
                )
                .map_err(fail("record alert state in"))?;
            let mut resolve = tx
                .prepare_cached("DELETE FROM alert_state WHERE rule = ?1 AND device = ?2")
                .map_err(fail("record alert state in"))?;
            let mut last_alert = 0;
            // Alerts are few and matter most: they are never evicted, and always stored.
            for alert in &batch.alerts {
                let id = self.next_alert_row;
                insert
                    .execute(params![id, alert.device, alert.at_ms, alert.payload])
                    .map_err(fail("append alert to"))?;
                self.next_alert_row += 1;
                self.rows += 1;
                self.row_bytes += (alert.device.len() + alert.payload.len()) as u64 + ROW_OVERHEAD;
                let number = i64::try_from(alert.alert).unwrap_or(i64::MAX);
                if alert.firing {
                    fire.execute(params![alert.rule, alert.device, number])
                        .map_err(fail("record alert state in"))?;
                } else {
                    resolve
                        .execute(params![alert.rule, alert.device])
                        .map_err(fail("record alert state in"))?;
                }
                last_alert = last_alert.max(number);
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('last_alert', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                [last_alert],
            )
            .map_err(fail("record alert state in"))?;
            outcome.alerts = batch.alerts.len();
            // A flapping rule must not fill the journal: past MAX_ALERT_ROWS undelivered alerts,
            // the oldest give way (counted as evicted).
            let held: i64 = tx
                .query_row("SELECT count(*) FROM events WHERE id < 0", [], |row| {
                    row.get(0)
                })
                .map_err(fail("count alerts in"))?;
            let excess = held - MAX_ALERT_ROWS;
            if excess > 0 {
                let mut evict = tx
                    .prepare_cached(
                        "DELETE FROM events WHERE id IN
                             (SELECT id FROM events WHERE id < 0 ORDER BY id LIMIT ?1)
                         RETURNING length(device), length(payload)",
                    )
                    .map_err(fail("evict alerts from"))?;
                let removed = evict
                    .query_map([excess], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
                    })
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(fail("evict alerts from"))?;
                for (device_len, payload_len) in &removed {
                    self.rows -= 1;
                    self.row_bytes = self
                        .row_bytes
                        .saturating_sub(row_cost(*device_len, *payload_len));
                }
                outcome
                    .dropped
                    .push((DropReason::EvictedOldest, removed.len() as u64));
            }
        }

        if !batch.dead_letters.is_empty() {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO dead_letters (received_at, source, topic, reason, detail, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(fail("record dead letter in"))?;
            for letter in &batch.dead_letters {
                let payload = &letter.payload[..letter.payload.len().min(DeadLetter::MAX_PAYLOAD)];
                insert
                    .execute(params![
                        letter.received_at_ms,
                        letter.source,
                        letter.topic,
                        letter.reason,
                        letter.detail,
                        payload
                    ])
                    .map_err(fail("record dead letter in"))?;
            }
            drop(insert);
            tx.execute(
                "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?1",
                [self.budget.dead_letter_rows() as i64],
            )
            .map_err(fail("prune dead letters in"))?;
        }

        tx.commit().map_err(fail("commit to"))?;
        Ok(outcome)
    }

    /// Size of the database and its WAL on disk.
    pub(crate) fn file_bytes(&self) -> u64 {
        let pages: i64 = self
            .conn
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .unwrap_or(0);
        let wal = std::fs::metadata(wal_path(&self.options.path))
            .map(|meta| meta.len())
            .unwrap_or(0);
        u64::try_from(pages).unwrap_or(0) * PAGE_SIZE + wal
    }

    /// Arrival time of the oldest row.
    pub(crate) fn oldest_received_at_ms(&self) -> Option<i64> {
        self.conn
            .query_row(
                "SELECT received_at FROM events WHERE id > 0 ORDER BY id LIMIT 1",
                [],
                |row| row.get(0),
            )
            .optional()
            .ok()
            .flatten()
    }

    /// Moves the WAL's content into the database and truncates the WAL (on shutdown, and now and
    /// then when idle, so the WAL does not sit at its high-water mark on flash).
    pub(crate) fn checkpoint(&self) {
        if let Err(error) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::debug!(%error, "journal checkpoint did not complete");
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Evict {
    /// Remove head rows until this many accounted bytes are gone.
    Bytes(u64),
    /// Remove head rows that arrived before this time (ms since the epoch).
    OlderThan(i64),
}

/// Removes rows from the head of the queue (lowest ids first). Returns how many.
fn evict_head(
    tx: &rusqlite::Transaction<'_>,
    rows: &mut u64,
    row_bytes: &mut u64,
    evict: Evict,
) -> Result<u64, rusqlite::Error> {
    const STEP: i64 = 512;
    let mut removed = 0;
    let mut freed = 0;
    let mut select = tx.prepare_cached(
        "SELECT id, received_at, length(device), length(payload) FROM events
         WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    // Alerts (negative ids) are never evicted or expired.
    let mut after = 0;
    let mut last_removed = None;
    'scan: loop {
        let head = select
            .query_map(params![after, STEP], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let exhausted = head.len() < STEP as usize;
        for (id, received_at, device_len, payload_len) in head {
            let take = match evict {
                Evict::Bytes(need) => freed < need,
                Evict::OlderThan(cutoff) => received_at < cutoff,
            };
            if !take {
                break 'scan;
            }
            freed += row_cost(device_len, payload_len);
            removed += 1;
            last_removed = Some(id);
            after = id;
        }
        if exhausted {
            break;
        }
    }
    if let Some(last) = last_removed {
        tx.prepare_cached("DELETE FROM events WHERE id > 0 AND id <= ?1")?
            .execute([last])?;
        *rows -= removed;
        *row_bytes = row_bytes.saturating_sub(freed);
    }
    Ok(removed)
}

pub(crate) fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn shm_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-shm");
    PathBuf::from(name)
}

/// Renames a corrupt journal (and its WAL) to `journal.db.corrupt-<ms since epoch>`, keeping it
/// for forensics, and removes its shared-memory index.
fn move_aside(path: &Path) -> Result<PathBuf, JournalError> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis())
        .unwrap_or(0);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{stamp}"));
    let target = PathBuf::from(name);
    let fail = |source| JournalError::MoveAside {
        path: path.to_path_buf(),
        source,
    };
    std::fs::rename(path, &target).map_err(fail)?;
    let wal = wal_path(path);
    if wal.exists() {
        std::fs::rename(&wal, wal_path(&target)).map_err(fail)?;
    }
    let shm = shm_path(path);
    if shm.exists() {
        std::fs::remove_file(&shm).map_err(fail)?;
    }
    Ok(target)
}

/// What `edge-gateway journal stats` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalSummary {
    /// Rows waiting to be sent.
    pub rows: u64,
    /// Size of the database and WAL files.
    pub file_bytes: u64,
    /// Arrival time of the oldest row.
    pub oldest_received_at_ms: Option<i64>,
    /// Rows per device, most first.
    pub per_device: Vec<(String, u64)>,
    /// Dead letters kept.
    pub dead_letters: u64,
}

/// Reads the journal's figures without writing to it; safe while the gateway runs.
pub fn summarize(path: &Path) -> Result<JournalSummary, JournalError> {
    if !path.exists() {
        return Err(JournalError::Missing(path.to_path_buf()));
    }
    let fail = |action: &'static str| {
        move |source| JournalError::Sqlite {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail("open"))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(fail("open"))?;
    let per_device = conn
        .prepare(
            "SELECT device, count(*) FROM events GROUP BY device ORDER BY count(*) DESC, device",
        )
        .and_then(|mut statement| {
            statement
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(fail("read"))?
        .into_iter()
        .map(|(device, count)| (device, u64::try_from(count).unwrap_or(0)))
        .collect::<Vec<_>>();
    let rows = per_device.iter().map(|(_, count)| count).sum();
    let oldest_received_at_ms = conn
        .query_row(
            "SELECT received_at FROM events WHERE id > 0 ORDER BY id LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(fail("read"))?;
    let dead_letters: i64 = conn
        .query_row("SELECT count(*) FROM dead_letters", [], |row| row.get(0))
        .map_err(fail("read"))?;
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .map_err(fail("read"))?;
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .map_err(fail("read"))?;
    let wal = std::fs::metadata(wal_path(path))
        .map(|meta| meta.len())
        .unwrap_or(0);
    Ok(JournalSummary {
        rows,
        file_bytes: u64::try_from(pages * page_size).unwrap_or(0) + wal,
        oldest_received_at_ms,
        per_device,
        dead_letters: u64::try_from(dead_letters).unwrap_or(0),
    })
}

/// A dead letter as read back from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeadLetter {
    /// When it arrived, in ms since the Unix epoch.
    pub received_at_ms: i64,
    /// Which source it came from.
    pub source: String,
    /// The MQTT topic or serial port.
    pub topic: String,
    /// The rejection reason.
    pub reason: String,
    /// A human-readable explanation.
    pub detail: String,
    /// The offending bytes (truncated).
    pub payload: Vec<u8>,
}

/// What `edge-gateway journal inspect` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The oldest buffered events, oldest first.
    pub events: Vec<StoredEvent>,
    /// The latest dead letters, newest first.
    pub dead_letters: Vec<StoredDeadLetter>,
}

/// Reads the oldest `limit` events and the newest `limit` dead letters; safe while the gateway
/// runs.
pub fn inspect(path: &Path, limit: usize) -> Result<Inspection, JournalError> {
    if !path.exists() {
        return Err(JournalError::Missing(path.to_path_buf()));
    }
    let fail = |source| JournalError::Sqlite {
        action: "read",
        path: path.to_path_buf(),
        source,
    };
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(fail)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
    let events = read_events(&conn, i64::MIN, limit).map_err(fail)?;
    let dead_letters = conn
        .prepare(
            "SELECT received_at, source, topic, reason, detail, payload FROM dead_letters
             ORDER BY id DESC LIMIT ?1",
        )
        .and_then(|mut statement| {
            statement
                .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                    Ok(StoredDeadLetter {
                        received_at_ms: row.get(0)?,
                        source: row.get(1)?,
                        topic: row.get(2)?,
                        reason: row.get(3)?,
                        detail: row.get(4)?,
                        payload: row.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(fail)?;
    Ok(Inspection {
        events,
        dead_letters,
    })
}

/// Up to `limit` alerts (the priority lane) with row ids greater than `after`, in id order.
pub(crate) fn read_alerts(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<StoredEvent>, rusqlite::Error> {
    read_rows(
        conn,
        "SELECT id, device, received_at, payload FROM events
         WHERE id < 0 AND id > ?1 ORDER BY id LIMIT ?2",
        after,
        limit,
    )
}

/// Up to `limit` events with ids greater than `after`, in id order.
pub(crate) fn read_events(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<StoredEvent>, rusqlite::Error> {
    read_rows(
        conn,
        "SELECT id, device, received_at, payload FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
        after,
        limit,
    )
}

fn read_rows(
    conn: &Connection,
    query: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<StoredEvent>, rusqlite::Error> {
    let mut statement = conn.prepare_cached(query)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement.query_map(params![after, limit], |row| {
        Ok(StoredEvent {
            id: row.get(0)?,
            device: row.get(1)?,
            received_at_ms: row.get(2)?,
            payload: row.get(3)?,
        })
    })?;
    rows.collect()
}
