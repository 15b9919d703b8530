//! The journal database, opened for writing: opening (and recovering) it, where each
//! destination stands, and applying a [write batch](super::batch) in one transaction.
//! Synchronous and without threads: the writer thread drives it, and tests drive it directly.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension};

use super::batch::{Accounting, Batch, BatchOutcome, keep_dead_letters};
use super::error::JournalError;
use super::eviction::{Budget, Evict, evict_head};
use super::read::oldest_after;
use super::record::{DestinationRoute, FiringAlert, Lane, ROW_OVERHEAD};
use super::schema::{self, Prepared, SchemaError};
use super::stats::DropReason;
use crate::config::{Synchronous, WhenFull};

/// Most undelivered alerts kept; past it the oldest give way.
pub(crate) const MAX_ALERT_ROWS: i64 = 10_000;
const PAGE_SIZE: u64 = 4096;

/// How the journal is bounded and synced, and whom it holds rows for.
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
    /// Commits come at most this often (zero: as soon as work arrives); see the writer.
    pub commit_interval: Duration,
    /// The destinations, in configuration order (their index is how sinks name them).
    pub destinations: Vec<DestinationRoute>,
}

/// What opening the journal found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Rows found in the journal, to be sent again.
    pub recovered_rows: u64,
    /// Where a corrupt journal was moved, if it was.
    pub moved_aside: Option<PathBuf>,
    /// The schema version the journal was migrated from, if it was.
    pub migrated_from: Option<i64>,
    /// Destinations that had positions in the journal and are no longer configured: what they
    /// had not confirmed is no longer held for them.
    pub forgotten_destinations: Vec<String>,
    /// Each configured destination's positions (`[alerts, events]`, see [`Lane::index`]): where
    /// its delivery starts.
    pub positions: Vec<[i64; 2]>,
    /// The journal's number, random, drawn when the journal was created: part of every alert
    /// id ([`edge_schema::alert_id`]), so that a replaced journal never repeats one. 0 for a
    /// journal created by the first release, whose alert ids keep their form.
    pub journal: u32,
    /// The last alert number handed out.
    pub last_alert: u64,
    /// Alerts that were firing.
    pub firing_alerts: Vec<FiringAlert>,
}

/// Where a destination stands in each lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Position {
    /// Per lane ([`Lane::index`]): rows with ids up to here are confirmed.
    pub(crate) confirmed: [i64; 2],
}

/// The journal database, opened for writing.
#[derive(Debug)]
pub(crate) struct Store {
    conn: Connection,
    options: JournalOptions,
    budget: Budget,
    /// Per lane: the id the next row gets.
    next_id: [i64; 2],
    /// Per lane: rows with ids up to here are gone.
    deleted_through: [i64; 2],
    positions: Vec<Position>,
    rows: u64,
    alert_rows: u64,
    row_bytes: u64,
    /// Whether commits currently sync (`synchronous = FULL` in effect).
    syncing: bool,
    /// Positions moved in memory and not written yet (with a commit window only, see
    /// [`SAVE_POSITIONS_EVERY`]).
    positions_unsaved: bool,
    /// When positions were last written.
    positions_saved_at: Instant,
}

/// With a commit window, how often moved positions are written. The deletes they allow are
/// committed at once (the rows leave the journal's only page at a steady rate, which is the
/// cheapest layout); the positions table is another page per commit, written this often
/// instead. A position on disk may lag, never lead: a crash meanwhile sends those rows again.
const SAVE_POSITIONS_EVERY: Duration = Duration::from_secs(30);

/// Gives each destination that has none a row in `positions`, at its current position.
fn register_destinations(
    conn: &mut Connection,
    destinations: &[DestinationRoute],
    positions: &[Position],
) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    {
        let mut known = tx.prepare(
            "INSERT INTO positions (destination, lane, confirmed) VALUES (?1, ?2, ?3)
             ON CONFLICT (destination, lane) DO NOTHING",
        )?;
        for (route, position) in destinations.iter().zip(positions) {
            for lane in Lane::ALL {
                known.execute(rusqlite::params![
                    route.name,
                    lane.as_str(),
                    position.confirmed[lane.index()]
                ])?;
            }
        }
    }
    tx.commit()
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
            Ok((store, mut report)) => {
                (report.last_alert, report.firing_alerts) = store.alert_state()?;
                report.recovered_rows = store.rows;
                report.positions = store
                    .positions
                    .iter()
                    .map(|position| position.confirmed)
                    .collect();
                Ok((store, report))
            }
            Err(error) if error.is_corruption() => {
                let moved_to = move_aside(&options.path)?;
                let (store, mut report) = Self::open_existing(options)?;
                report.moved_aside = Some(moved_to);
                report.positions = store
                    .positions
                    .iter()
                    .map(|position| position.confirmed)
                    .collect();
                Ok((store, report))
            }
            Err(error) => Err(error),
        }
    }

    fn open_existing(options: JournalOptions) -> Result<(Self, OpenReport), JournalError> {
        let path = options.path.clone();
        let fail = |action: &'static str| {
            let path = path.clone();
            move |source| JournalError::Sqlite {
                action,
                path,
                source,
            }
        };
        let mut conn = Connection::open(&options.path).map_err(fail("open"))?;
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
        let mut report = OpenReport::default();
        let prepared = schema::prepare(&mut conn);
        match prepared {
            Ok(Prepared::Created | Prepared::Current) => {}
            Ok(Prepared::MigratedFrom(version)) => report.migrated_from = Some(version),
            Err(SchemaError::Sqlite(source)) => {
                return Err(fail("prepare the schema of")(source));
            }
            Err(SchemaError::TooNew(version)) => {
                return Err(JournalError::TooNew { path, version });
            }
        }
        report.journal = journal_number(&conn, matches!(prepared, Ok(Prepared::Created)))
            .map_err(fail("record the number of"))?;
        // Reading every row's size walks the whole table: a damaged page shows up here, at start,
        // rather than in the middle of forwarding.
        let scan = |table: &str| -> Result<(u64, u64, i64, i64), rusqlite::Error> {
            let (rows, bytes, min_id, max_id): (i64, i64, i64, i64) = conn.query_row(
                &format!(
                    "SELECT count(*), coalesce(sum(length(device) + length(payload)), 0),
                            coalesce(min(id), 1), coalesce(max(id), 0)
                     FROM {table}"
                ),
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )?;
            let rows = u64::try_from(rows).unwrap_or(0);
            Ok((rows, u64::try_from(bytes).unwrap_or(0), min_id, max_id))
        };
        let (event_rows, event_bytes, first_event, last_event) =
            scan("events").map_err(fail("scan"))?;
        let (alert_rows, alert_bytes, first_alert, last_alert) =
            scan("alerts").map_err(fail("scan"))?;
        let _dead_letters: i64 = conn
            .query_row("SELECT count(*) FROM dead_letters", [], |row| row.get(0))
            .map_err(fail("scan"))?;

        // Positions of destinations no longer configured are forgotten: nothing is held for
        // them any more. A destination without a position starts at the journal's head: it gets
        // everything the journal still holds.
        let stored: Vec<(String, String, i64)> = conn
            .prepare("SELECT destination, lane, confirmed FROM positions")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect()
            })
            .map_err(fail("read positions from"))?;
        let mut positions = vec![Position::default(); options.destinations.len()];
        // Ids never go back, even when every row is gone: a position past them would pass over
        // the new rows.
        let mut highest = [last_alert, last_event];
        for (name, lane, confirmed) in stored {
            let lane = match lane.as_str() {
                "alerts" => Lane::Alerts,
                _ => Lane::Events,
            };
            highest[lane.index()] = highest[lane.index()].max(confirmed);
            match options
                .destinations
                .iter()
                .position(|route| route.name == name)
            {
                Some(index) => positions[index].confirmed[lane.index()] = confirmed,
                None if !report.forgotten_destinations.contains(&name) => {
                    report.forgotten_destinations.push(name);
                }
                None => {}
            }
        }
        if !report.forgotten_destinations.is_empty() {
            let mut forget = conn
                .prepare("DELETE FROM positions WHERE destination = ?1")
                .map_err(fail("forget positions in"))?;
            for name in &report.forgotten_destinations {
                forget
                    .execute([name])
                    .map_err(fail("forget positions in"))?;
            }
        }
        let syncing = options.synchronous == Synchronous::Full;
        let rows = event_rows + alert_rows;
        let deleted_through = [
            if alert_rows == 0 {
                highest[0]
            } else {
                first_alert - 1
            },
            if event_rows == 0 {
                highest[1]
            } else {
                first_event - 1
            },
        ];
        // Every destination has confirmed what has left the journal: positions are written
        // only past that (`batch::save_positions`), and one on disk may lag.
        for position in &mut positions {
            for lane in Lane::ALL {
                let confirmed = &mut position.confirmed[lane.index()];
                *confirmed = (*confirmed).max(deleted_through[lane.index()]);
            }
        }
        // Each configured name has a row from its first start on, even when the deletes tell
        // its position from then on: so that the start after it is renamed or removed knows
        // the journal held rows for it (the warning above). Only that warning depends on it, so
        // a journal that cannot take the row now (a full disk) still opens.
        if let Err(error) = register_destinations(&mut conn, &options.destinations, &positions) {
            tracing::warn!(
                error = %error,
                path = %path.display(),
                "could not record the configured uplinks' names in the journal; renaming or removing one before they are recorded will not be warned about"
            );
        }
        let store = Self {
            conn,
            options,
            budget,
            next_id: [highest[0] + 1, highest[1] + 1],
            deleted_through,
            positions,
            rows,
            alert_rows,
            row_bytes: event_bytes + alert_bytes + rows * ROW_OVERHEAD,
            syncing,
            positions_unsaved: false,
            positions_saved_at: Instant::now(),
        };
        Ok((store, report))
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

    /// Per lane, the id the next row gets.
    pub(crate) fn next_ids(&self) -> [i64; 2] {
        self.next_id
    }

    /// Per lane: rows with ids up to here are gone.
    pub(crate) fn deleted_through(&self) -> [i64; 2] {
        self.deleted_through
    }

    /// Makes ids continue from `next_ids` (after a journal was replaced while running, so that
    /// sinks' read positions stay valid).
    pub(crate) fn continue_ids_from(&mut self, next_ids: [i64; 2]) {
        for lane in Lane::ALL {
            let index = lane.index();
            self.next_id[index] = self.next_id[index].max(next_ids[index]);
            self.deleted_through[index] = self.deleted_through[index].max(next_ids[index] - 1);
        }
    }

    pub(crate) fn options(&self) -> &JournalOptions {
        &self.options
    }

    /// Rows held, in both lanes.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Accounted bytes of the rows.
    #[cfg(test)]
    pub(crate) fn row_bytes(&self) -> u64 {
        self.row_bytes
    }

    pub(crate) fn budget(&self) -> Budget {
        self.budget
    }

    /// Rows of `lane` a destination has neither confirmed nor passed over: the rows after its
    /// position that are still held (ids grow by one per row and leave from the head, so this is
    /// a difference of ids; rows of devices not routed to it count until it reads past them).
    pub(crate) fn backlog(&self, destination: usize, lane: Lane) -> u64 {
        let Some(position) = self.positions.get(destination) else {
            return 0;
        };
        let index = lane.index();
        let after = position.confirmed[index].max(self.deleted_through[index]);
        let held = match lane {
            Lane::Alerts => self.alert_rows,
            Lane::Events => self.rows - self.alert_rows,
        };
        u64::try_from(self.next_id[index] - 1 - after)
            .unwrap_or(0)
            .min(held)
    }

    /// Arrival time of the oldest event a destination has not confirmed.
    pub(crate) fn oldest_unconfirmed_ms(&self, destination: usize) -> Option<i64> {
        let index = Lane::Events.index();
        let after =
            self.positions.get(destination)?.confirmed[index].max(self.deleted_through[index]);
        oldest_after(&self.conn, after).ok().flatten()
    }

    /// Applies one batch in one transaction. On error nothing of the batch is applied (SQLite
    /// rolls the transaction back) and the in-memory accounting is left as it was.
    pub(crate) fn apply(
        &mut self,
        batch: Batch,
        now_ms: i64,
    ) -> Result<BatchOutcome, JournalError> {
        let saved = (
            self.next_id,
            self.deleted_through,
            self.positions.clone(),
            self.rows,
            self.alert_rows,
            self.row_bytes,
        );
        let result = self.apply_inner(batch, now_ms);
        if result.is_err() {
            (
                self.next_id,
                self.deleted_through,
                self.positions,
                self.rows,
                self.alert_rows,
                self.row_bytes,
            ) = saved;
        }
        result
    }

    fn apply_inner(&mut self, batch: Batch, now_ms: i64) -> Result<BatchOutcome, JournalError> {
        let mut outcome = BatchOutcome::default();
        // Only what is added must reach the disk before the commit returns. A transaction that
        // only deletes (confirmations, expiry) may be lost in a power cut: the rows come back and
        // are sent again, which at-least-once allows. Skipping its sync halves the syncs while
        // draining.
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
        let path = self.options.path.clone();
        let fail = |action: &'static str| {
            let path = path.clone();
            move |source| JournalError::Sqlite {
                action,
                path,
                source,
            }
        };
        let tx = self
            .conn
            .transaction()
            .map_err(fail("begin a transaction in"))?;
        let mut state = Accounting {
            options: &self.options,
            budget: self.budget,
            next_id: &mut self.next_id,
            deleted_through: &mut self.deleted_through,
            positions: &mut self.positions,
            rows: &mut self.rows,
            alert_rows: &mut self.alert_rows,
            row_bytes: &mut self.row_bytes,
        };
        let save_positions = self.options.commit_interval.is_zero()
            || self.positions_saved_at.elapsed() >= SAVE_POSITIONS_EVERY;
        let moved = state
            .confirm(&tx, &batch.confirms, save_positions, &mut outcome)
            .map_err(fail("record confirmations in"))?;
        if save_positions && self.positions_unsaved {
            super::batch::save_positions(
                &tx,
                state.options,
                state.positions,
                state.deleted_through,
            )
            .map_err(fail("record confirmations in"))?;
        }
        if batch.expire && !self.options.max_age.is_zero() {
            let max_age_ms = i64::try_from(self.options.max_age.as_millis()).unwrap_or(i64::MAX);
            let cutoff = now_ms.saturating_sub(max_age_ms);
            let expired =
                evict_head(&tx, Evict::OlderThan(cutoff)).map_err(fail("expire rows in"))?;
            state.forget(Lane::Events, &expired, DropReason::Expired, &mut outcome);
        }
        if !batch.appends.is_empty() {
            state
                .append(&tx, batch.appends, &mut outcome)
                .map_err(fail("append to"))?;
        }
        if !batch.alerts.is_empty() {
            state
                .append_alerts(&tx, &batch.alerts, &mut outcome)
                .map_err(fail("append alerts to"))?;
        }
        if !batch.dead_letters.is_empty() {
            keep_dead_letters(&tx, &batch.dead_letters, self.budget.dead_letter_rows())
                .map_err(fail("record dead letters in"))?;
        }
        tx.commit().map_err(fail("commit to"))?;
        if save_positions {
            if moved || self.positions_unsaved {
                self.positions_saved_at = Instant::now();
            }
            self.positions_unsaved = false;
        } else if moved {
            self.positions_unsaved = true;
        }
        Ok(outcome)
    }

    /// Writes positions that moved and are not written yet (at shutdown).
    pub(crate) fn save_positions(&mut self) -> Result<(), JournalError> {
        if !self.positions_unsaved {
            return Ok(());
        }
        let fail = |source| JournalError::Sqlite {
            action: "record confirmations in",
            path: self.options.path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(fail)?;
        super::batch::save_positions(&tx, &self.options, &self.positions, &self.deleted_through)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
        self.positions_unsaved = false;
        self.positions_saved_at = Instant::now();
        Ok(())
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

    /// Arrival time of the oldest event row.
    pub(crate) fn oldest_received_at_ms(&self) -> Option<i64> {
        oldest_after(&self.conn, 0).ok().flatten()
    }

    /// Moves the WAL's content into the database and truncates the WAL (on shutdown, and now and
    /// then when idle, so the WAL does not sit at its high-water mark on flash).
    pub(crate) fn checkpoint(&self) {
        if let Err(error) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::debug!(%error, "journal checkpoint did not complete");
        }
    }
}

/// The journal's number from `meta`; drawn (never 0) for a journal just created, 0 for one an
/// earlier release created, and kept from then on.
fn journal_number(conn: &Connection, created: bool) -> Result<u32, rusqlite::Error> {
    let kept: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'journal'", [], |row| {
            row.get(0)
        })
        .optional()?;
    if let Some(number) = kept {
        return Ok(u32::try_from(number).unwrap_or(0));
    }
    let number = if created {
        rand::random_range(1..=u32::MAX)
    } else {
        0
    };
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('journal', ?1)",
        [i64::from(number)],
    )?;
    Ok(number)
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
