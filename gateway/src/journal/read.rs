//! Reading the journal: the rows of a lane for a sink, and what `edge-gateway journal stats` and
//! `journal inspect` show. Readers never write, and are safe while the gateway runs (WAL readers
//! never block the writer, nor the writer them).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::error::JournalError;
use super::record::{DestinationRoute, Lane, StoredEvent};
use super::store::wal_path;

/// What `edge-gateway journal stats` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalSummary {
    /// Event rows held.
    pub rows: u64,
    /// Alert rows held.
    pub alerts: u64,
    /// Size of the database and WAL files.
    pub file_bytes: u64,
    /// Arrival time of the oldest event row.
    pub oldest_received_at_ms: Option<i64>,
    /// Event rows per device, most first.
    pub per_device: Vec<(String, u64)>,
    /// Dead letters kept.
    pub dead_letters: u64,
    /// What each configured destination has not confirmed yet.
    pub destinations: Vec<DestinationBacklog>,
}

/// One destination's backlog, as `journal stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationBacklog {
    /// The uplink's name.
    pub name: String,
    /// Event rows routed to it and not confirmed.
    pub events: u64,
    /// Alert rows routed to it and not confirmed.
    pub alerts: u64,
    /// Arrival time of its oldest unconfirmed event.
    pub oldest_received_at_ms: Option<i64>,
}

/// Reads the journal's figures without writing to it; safe while the gateway runs. `routes` are
/// the configured destinations, whose backlogs are counted.
pub fn summarize(path: &Path, routes: &[DestinationRoute]) -> Result<JournalSummary, JournalError> {
    let conn = open_for_reading(path)?;
    let fail = |source| JournalError::Sqlite {
        action: "read",
        path: path.to_path_buf(),
        source,
    };
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
        .map_err(fail)?
        .into_iter()
        .map(|(device, count)| (device, u64::try_from(count).unwrap_or(0)))
        .collect::<Vec<_>>();
    let rows = per_device.iter().map(|(_, count)| count).sum();
    let count = |query: &str| -> Result<u64, JournalError> {
        let count: i64 = conn.query_row(query, [], |row| row.get(0)).map_err(fail)?;
        Ok(u64::try_from(count).unwrap_or(0))
    };
    let alerts = count("SELECT count(*) FROM alerts")?;
    let dead_letters = count("SELECT count(*) FROM dead_letters")?;
    let oldest_received_at_ms = oldest_after(&conn, 0).map_err(fail)?;
    let mut destinations = Vec::with_capacity(routes.len());
    for route in routes {
        let position = |lane: Lane| -> Result<i64, rusqlite::Error> {
            conn.query_row(
                "SELECT confirmed FROM positions WHERE destination = ?1 AND lane = ?2",
                params![route.name, lane.as_str()],
                |row| row.get(0),
            )
            .optional()
            .map(|confirmed| confirmed.unwrap_or(0))
        };
        let backlog = |lane: Lane| -> Result<u64, rusqlite::Error> {
            if !route.takes_lane(lane) {
                return Ok(0);
            }
            // Device patterns are globs of `*` and `?` over `[A-Za-z0-9._-]`: SQLite's GLOB
            // reads them the same way.
            let pattern = route
                .devices
                .as_ref()
                .map_or("*", |pattern| pattern.as_str());
            let count: i64 = conn.query_row(
                &format!(
                    "SELECT count(*) FROM {} WHERE id > ?1 AND device GLOB ?2",
                    lane.table()
                ),
                params![position(lane)?, pattern],
                |row| row.get(0),
            )?;
            Ok(u64::try_from(count).unwrap_or(0))
        };
        let events = backlog(Lane::Events).map_err(fail)?;
        destinations.push(DestinationBacklog {
            name: route.name.clone(),
            events,
            alerts: backlog(Lane::Alerts).map_err(fail)?,
            oldest_received_at_ms: if events > 0 {
                oldest_after(&conn, position(Lane::Events).map_err(fail)?).map_err(fail)?
            } else {
                None
            },
        });
    }
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .map_err(fail)?;
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .map_err(fail)?;
    let wal = std::fs::metadata(wal_path(path))
        .map(|meta| meta.len())
        .unwrap_or(0);
    Ok(JournalSummary {
        rows,
        alerts,
        file_bytes: u64::try_from(pages * page_size).unwrap_or(0) + wal,
        oldest_received_at_ms,
        per_device,
        dead_letters,
        destinations,
    })
}

/// Arrival time of the first event row after `after`.
pub(crate) fn oldest_after(conn: &Connection, after: i64) -> Result<Option<i64>, rusqlite::Error> {
    conn.prepare_cached("SELECT received_at FROM events WHERE id > ?1 ORDER BY id LIMIT 1")?
        .query_row([after], |row| row.get(0))
        .optional()
}

/// A dead letter as read back from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeadLetter {
    /// When it arrived, in ms since the Unix epoch.
    pub received_at_ms: i64,
    /// Which source it came from (`uplink` for what a destination refused).
    pub source: String,
    /// The MQTT topic or serial port (for what a destination refused: `{uplink}/{lane}/{device}`).
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
    /// The oldest buffered alerts, oldest first.
    pub alerts: Vec<StoredEvent>,
    /// The oldest buffered events, oldest first.
    pub events: Vec<StoredEvent>,
    /// The latest dead letters, newest first.
    pub dead_letters: Vec<StoredDeadLetter>,
}

/// Reads the oldest `limit` alerts and events and the newest `limit` dead letters; safe while the
/// gateway runs.
pub fn inspect(path: &Path, limit: usize) -> Result<Inspection, JournalError> {
    let conn = open_for_reading(path)?;
    let fail = |source| JournalError::Sqlite {
        action: "read",
        path: path.to_path_buf(),
        source,
    };
    let alerts = read_lane(&conn, Lane::Alerts, 0, limit).map_err(fail)?;
    let events = read_lane(&conn, Lane::Events, 0, limit).map_err(fail)?;
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
        alerts,
        events,
        dead_letters,
    })
}

fn open_for_reading(path: &Path) -> Result<Connection, JournalError> {
    if !path.exists() {
        return Err(JournalError::Missing(path.to_path_buf()));
    }
    let fail = |source| JournalError::Sqlite {
        action: "open",
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
    Ok(conn)
}

/// Up to `limit` rows of `lane` with ids greater than `after`, in id order.
pub(crate) fn read_lane(
    conn: &Connection,
    lane: Lane,
    after: i64,
    limit: usize,
) -> Result<Vec<StoredEvent>, rusqlite::Error> {
    let query = match lane {
        Lane::Alerts => {
            "SELECT id, device, received_at, payload FROM alerts WHERE id > ?1 ORDER BY id LIMIT ?2"
        }
        Lane::Events => {
            "SELECT id, device, received_at, payload FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"
        }
    };
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
