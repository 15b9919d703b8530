//! The embedded backend: one SQLite file (WAL), written from blocking threads.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Acknowledgement, Alert, AlertColumns, AlertFilter, Applied, Device, Gateway, Notification,
    Pending, Reading, SCHEMA, Store, StoreError, filter_params, from_json, notifications, sql,
    to_json,
};
use crate::message::{AlertState, Message};

/// A store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// The store was written by a release that did not scope keys by gateway.
    unscoped: bool,
}

impl SqliteStore {
    /// Opens (or creates) the store at `path`. Every commit is synced (`synchronous = FULL`):
    /// a message is acknowledged to the broker after its commit, so the commit must survive a
    /// power cut. Batches keep that to one sync per batch.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )?;
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('seen')")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        if !columns.is_empty() && !columns.iter().any(|column| column == "gateway") {
            conn.execute_batch(sql::SET_ASIDE_UNSCOPED)?;
        }
        conn.execute_batch(SCHEMA)?;
        let unscoped = conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'seen_unscoped'",
            [],
            |row| row.get(0),
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            unscoped,
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().map_err(|_| StoreError::Stopped)?;
            work(&mut conn)
        })
        .await
        .map_err(|_| StoreError::Stopped)?
    }
}

/// Applies one message inside the batch's transaction.
fn apply_one(
    tx: &rusqlite::Transaction<'_>,
    pending: &Pending,
    now_ms: i64,
    unscoped: bool,
) -> Result<Applied, StoreError> {
    let Pending { message, notify } = pending;
    let key = message.key();
    if let Some(key) = &key
        && (tx
            .prepare_cached(sql::SEEN)?
            .execute(params![message.gateway(), key])?
            == 0
            || unscoped
                && tx
                    .prepare_cached(sql::SEEN_UNSCOPED)?
                    .exists(params![key])?)
    {
        return Ok(Applied::Duplicate);
    }
    let changed = match message {
        Message::Event(event) => {
            let readings = to_json(&event.readings);
            tx.prepare_cached(sql::RECORD)?.execute(params![
                event.gateway,
                event.device,
                event.received_at,
                readings
            ])?;
            tx.prepare_cached(sql::DEVICE)?.execute(params![
                event.gateway,
                event.device,
                event.received_at,
                readings
            ])?
        }
        Message::Alert(alert) => {
            let labels = to_json(&alert.labels.clone().unwrap_or_default());
            match alert.state {
                AlertState::Firing => tx.prepare_cached(sql::FIRING)?.execute(params![
                    alert.id,
                    alert.gateway,
                    alert.rule,
                    alert.device,
                    alert.severity,
                    alert.at,
                    alert.value,
                    alert.event,
                    labels
                ])?,
                AlertState::Resolved => tx.prepare_cached(sql::RESOLVED)?.execute(params![
                    alert.id,
                    alert.gateway,
                    alert.rule,
                    alert.device,
                    alert.severity,
                    alert.at,
                    alert.value,
                    labels
                ])?,
            }
        }
        Message::Status { gateway, online } => tx
            .prepare_cached(sql::STATUS)?
            .execute(params![gateway, online, now_ms])?,
    };
    for (key, route, payload) in notifications(message, notify) {
        tx.prepare_cached(sql::QUEUE)?
            .execute(params![key, route, payload, now_ms])?;
    }
    // A keyless message (status) that changed nothing is a repeat.
    Ok(if changed > 0 || key.is_some() {
        Applied::New
    } else {
        Applied::Duplicate
    })
}

impl Store for SqliteStore {
    async fn apply_all(&self, batch: &[Pending], now_ms: i64) -> Result<Vec<Applied>, StoreError> {
        let batch = batch.to_vec();
        let unscoped = self.unscoped;
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let applied = batch
                .iter()
                .map(|pending| apply_one(&tx, pending, now_ms, unscoped))
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            Ok(applied)
        })
        .await
    }

    async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
        let (params, limit) = filter_params(filter);
        self.with(move |conn| {
            let mut statement = conn.prepare_cached(sql::ALERTS)?;
            let query = params![params[0], params[1], params[2], limit];
            let rows = statement.query_map(query, |row| {
                Ok(Alert::from(AlertColumns {
                    id: row.get(0)?,
                    gateway: row.get(1)?,
                    rule: row.get(2)?,
                    device: row.get(3)?,
                    severity: row.get(4)?,
                    fired_at: row.get(5)?,
                    value: row.get(6)?,
                    event: row.get(7)?,
                    resolved_at: row.get(8)?,
                    resolved_value: row.get(9)?,
                    labels: row.get(10)?,
                    acked_by: row.get(11)?,
                    acked_at: row.get(12)?,
                }))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn acknowledge(
        &self,
        id: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<Option<Acknowledgement>, StoreError> {
        let (id, by) = (id.to_owned(), by.to_owned());
        self.with(move |conn| {
            let new = conn.execute(sql::ACK, params![by, at_ms, id])? > 0;
            let stored: Option<(Option<String>, Option<i64>)> = conn
                .query_row(sql::ACKED, [id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            Ok(stored.and_then(|(by, at)| {
                Some(Acknowledgement {
                    by: by?,
                    at: at?,
                    new,
                })
            }))
        })
        .await
    }

    async fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.with(|conn| {
            let mut statement = conn.prepare_cached(sql::DEVICES)?;
            let rows = statement.query_map([], |row| {
                Ok(Device {
                    gateway: row.get(0)?,
                    device: row.get(1)?,
                    last_seen: row.get(2)?,
                    readings: from_json(&row.get::<_, String>(3)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn gateways(&self) -> Result<Vec<Gateway>, StoreError> {
        self.with(|conn| {
            let mut statement = conn.prepare_cached(sql::GATEWAYS)?;
            let rows = statement.query_map([], |row| {
                Ok(Gateway {
                    gateway: row.get(0)?,
                    online: row.get(1)?,
                    since: row.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn history(
        &self,
        gateway: &str,
        device: &str,
        limit: u32,
    ) -> Result<Vec<Reading>, StoreError> {
        let (gateway, device) = (gateway.to_owned(), device.to_owned());
        self.with(move |conn| {
            let mut statement = conn.prepare_cached(sql::HISTORY)?;
            let rows = statement.query_map(params![gateway, device, i64::from(limit)], |row| {
                Ok(Reading {
                    at: row.get(0)?,
                    readings: from_json(&row.get::<_, String>(1)?),
                })
            })?;
            let mut readings = rows.collect::<Result<Vec<_>, _>>()?;
            readings.reverse();
            Ok(readings)
        })
        .await
    }

    async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.with(move |conn| Ok(conn.execute(sql::PRUNE, [before_ms])? as u64))
            .await
    }

    async fn claim_notifications(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        self.with(move |conn| {
            let mut statement = conn.prepare_cached(sql::CLAIM)?;
            let rows =
                statement.query_map(params![lease_until_ms, now_ms, i64::from(limit)], |row| {
                    Ok(Notification {
                        key: row.get(0)?,
                        route: row.get(1)?,
                        payload: row.get(2)?,
                        attempts: row.get(3)?,
                    })
                })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn notification_done(&self, key: &str, route: &str) -> Result<(), StoreError> {
        let (key, route) = (key.to_owned(), route.to_owned());
        self.with(move |conn| {
            conn.execute(sql::DELIVERED, params![key, route])?;
            Ok(())
        })
        .await
    }

    async fn notification_retry(
        &self,
        key: &str,
        route: &str,
        due_at_ms: i64,
    ) -> Result<(), StoreError> {
        let (key, route) = (key.to_owned(), route.to_owned());
        self.with(move |conn| {
            conn.execute(sql::RETRY, params![due_at_ms, key, route])?;
            Ok(())
        })
        .await
    }
}
