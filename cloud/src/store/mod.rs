//! Where `edge-alerts` keeps what it consumed: one small trait, [`Store`], and two backends with
//! the same schema and the same SQL — [`sqlite::SqliteStore`] (embedded, one file) and
//! [`postgres::PostgresStore`] (shared by several instances).
//!
//! # Exactly once
//! Every message with a key ([`Message::key`]) is applied in one transaction that first inserts
//! its key into `seen`. A redelivery finds the key there and changes nothing
//! ([`Applied::Duplicate`]); two instances racing on the same message both try the insert, and
//! the database's unique key lets exactly one of them apply it.
//!
//! # Gateways kept apart
//! A key is unique only within its gateway (two gateways' devices may share names, so their
//! events share ids): `seen` is keyed by `(gateway, key)`, and devices and history by
//! `(gateway, device)`. Alerts are keyed by id alone, which is safe because the consumer
//! accepts an alert only with an id of its own gateway ([`edge_schema::is_alert_id_of`]).
//! A store written by a release that keyed `seen` by the key alone keeps that table as
//! `seen_unscoped` and still counts its keys as seen, so nothing consumed before the upgrade is
//! applied again when the broker redelivers it.
//!
//! # Alerts out of order
//! A `resolved` may arrive before its `firing` (redelivery after a reconnect, two instances).
//! Each transition fills its own columns (`fired_at`, `value` / `resolved_at`,
//! `resolved_value`), so the alert ends up the same whatever the order; an alert is firing while
//! it has no `resolved_at`.
//!
//! # Notifications: an outbox
//! An alert transition that a webhook route wants is written to `outbox`, one row per route, in
//! the same transaction that applies it: a transition stored is a transition that will be
//! notified, even if the process dies right after. Notifiers (one per instance) claim due rows
//! by moving their `due_at` past a lease, so two instances never post the same row at once.
//!
//! # History
//! Every event's readings are also kept in `history`, for the dashboard's charts, until
//! [`Store::prune`] drops those older than the retention.

pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;

use crate::message::{AlertState, Message};

/// A message to apply, with the webhook routes that want it (alert transitions only).
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The message.
    pub message: Message,
    /// The routes to notify if it is new.
    pub notify: Vec<String>,
}

/// What applying a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It was new: its change is stored (notify about it).
    New,
    /// It was seen before: nothing changed.
    Duplicate,
}

/// An alert with its lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `{gateway}:alert:{n}`.
    pub id: String,
    /// The gateway that raised it.
    pub gateway: String,
    /// The rule.
    pub rule: String,
    /// The device.
    pub device: String,
    /// `info`, `warning` or `critical`, when known.
    pub severity: Option<String>,
    /// Firing (no `resolved_at` yet) or resolved.
    pub state: AlertState,
    /// When it fired (ms since the epoch), once the `firing` message is in.
    pub fired_at: Option<i64>,
    /// The value that fired it.
    pub value: Option<f64>,
    /// The event that fired it.
    pub event: Option<String>,
    /// When it resolved.
    pub resolved_at: Option<i64>,
    /// The value that resolved it.
    pub resolved_value: Option<f64>,
    /// The rule's labels.
    pub labels: BTreeMap<String, String>,
    /// Who acknowledged it, and when.
    pub acknowledged: Option<(String, i64)>,
}

/// An alert row as both backends read it (the columns of [`sql::ALERTS`], in order); what the
/// columns mean — firing until `resolved_at` is set, labels as JSON — is decided here, once.
pub(crate) struct AlertColumns {
    pub(crate) id: String,
    pub(crate) gateway: String,
    pub(crate) rule: String,
    pub(crate) device: String,
    pub(crate) severity: Option<String>,
    pub(crate) fired_at: Option<i64>,
    pub(crate) value: Option<f64>,
    pub(crate) event: Option<String>,
    pub(crate) resolved_at: Option<i64>,
    pub(crate) resolved_value: Option<f64>,
    pub(crate) labels: String,
    pub(crate) acked_by: Option<String>,
    pub(crate) acked_at: Option<i64>,
}

impl From<AlertColumns> for Alert {
    fn from(row: AlertColumns) -> Self {
        Self {
            state: if row.resolved_at.is_some() {
                AlertState::Resolved
            } else {
                AlertState::Firing
            },
            id: row.id,
            gateway: row.gateway,
            rule: row.rule,
            device: row.device,
            severity: row.severity,
            fired_at: row.fired_at,
            value: row.value,
            event: row.event,
            resolved_at: row.resolved_at,
            resolved_value: row.resolved_value,
            labels: from_json(&row.labels),
            acknowledged: row.acked_by.zip(row.acked_at),
        }
    }
}

/// An alert's acknowledgement, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledgement {
    /// Who acknowledged it.
    pub by: String,
    /// When (ms since the epoch).
    pub at: i64,
    /// Whether this request made it (`false`: someone had already acknowledged the alert).
    pub new: bool,
}

/// A device, as last heard of.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// Its gateway.
    pub gateway: String,
    /// Its id.
    pub device: String,
    /// The receive time of its latest event (ms since the epoch).
    pub last_seen: i64,
    /// The readings of its latest event.
    pub readings: BTreeMap<String, f64>,
}

/// A gateway and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Its id.
    pub gateway: String,
    /// Online (its retained status), or offline (its last will, or a clean stop).
    pub online: bool,
    /// Since when, as this service saw it (ms since the epoch).
    pub since: i64,
}

/// A device's readings at one time, for a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// When the gateway received them (ms since the epoch).
    pub at: i64,
    /// The readings.
    pub readings: BTreeMap<String, f64>,
}

/// A webhook delivery to make: one alert transition for one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The transition's key (`{alert id}#{state}`).
    pub key: String,
    /// The route's name.
    pub route: String,
    /// The alert transition, as the gateway sent it (JSON).
    pub payload: String,
    /// Delivery attempts so far, this one included.
    pub attempts: i32,
}

/// Which alerts to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// Only firing or only resolved ones.
    pub state: Option<AlertState>,
    /// Only this severity.
    pub severity: Option<String>,
    /// Only this gateway's.
    pub gateway: Option<String>,
    /// At most this many (all when `None`).
    pub limit: Option<u32>,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("postgres: {}", describe_postgres(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The store's worker is gone.
    #[error("the store stopped")]
    Stopped,
    /// The service could not be set up around the store.
    #[error("{0}")]
    Setup(String),
}

impl StoreError {
    /// Whether storing the same message again can never succeed: the data itself is refused
    /// (PostgreSQL classes 22 "data exception" and 23 "integrity constraint"; SQLite
    /// constraint, size and type errors). Anything else — a lost connection, a busy or full
    /// disk — may pass on a retry.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Postgres(error) => error
                .code()
                .and_then(|code| code.code().get(..2))
                .is_some_and(|class| matches!(class, "22" | "23")),
            Self::Sqlite(rusqlite::Error::SqliteFailure(error, _)) => matches!(
                error.code,
                rusqlite::ErrorCode::ConstraintViolation
                    | rusqlite::ErrorCode::TooBig
                    | rusqlite::ErrorCode::TypeMismatch
            ),
            Self::Sqlite(rusqlite::Error::ToSqlConversionFailure(_)) => true,
            Self::Sqlite(_) | Self::Stopped | Self::Setup(_) => false,
        }
    }
}

/// The server's own message when there is one ("db error" alone says little), or the cause
/// ("error performing TLS handshake" alone does not say that the certificate was refused).
fn describe_postgres(error: &tokio_postgres::Error) -> String {
    match (error.as_db_error(), std::error::Error::source(error)) {
        (Some(db), _) => format!("{}: {}", db.code().code(), db.message()),
        (None, Some(cause)) => format!("{error}: {cause}"),
        (None, None) => error.to_string(),
    }
}

/// What `edge-alerts` needs from storage.
pub trait Store: Send + Sync + 'static {
    /// Applies `message` (received at `now_ms`) exactly once. When it is a new alert
    /// transition, a notification for each route in `notify` is queued with it.
    fn apply(
        &self,
        message: &Message,
        now_ms: i64,
        notify: &[String],
    ) -> impl Future<Output = Result<Applied, StoreError>> + Send {
        let batch = [Pending {
            message: message.clone(),
            notify: notify.to_vec(),
        }];
        async move {
            let applied = self.apply_all(&batch, now_ms).await?;
            Ok(applied.first().copied().unwrap_or(Applied::Duplicate))
        }
    }

    /// Applies a batch of messages in one transaction, each exactly once, in order; one
    /// [`Applied`] per message. All or nothing: on an error none is stored.
    fn apply_all(
        &self,
        batch: &[Pending],
        now_ms: i64,
    ) -> impl Future<Output = Result<Vec<Applied>, StoreError>> + Send;

    /// Alerts matching `filter`: firing ones first, newest first within each state.
    fn alerts(
        &self,
        filter: &AlertFilter,
    ) -> impl Future<Output = Result<Vec<Alert>, StoreError>> + Send;

    /// Records that `by` acknowledged alert `id` at `at_ms`, unless someone did before: an
    /// alert keeps its first acknowledgement. Returns the alert's acknowledgement as stored,
    /// `None` if there is no such alert.
    fn acknowledge(
        &self,
        id: &str,
        by: &str,
        at_ms: i64,
    ) -> impl Future<Output = Result<Option<Acknowledgement>, StoreError>> + Send;

    /// Every device, by gateway and id.
    fn devices(&self) -> impl Future<Output = Result<Vec<Device>, StoreError>> + Send;

    /// Every gateway, by id.
    fn gateways(&self) -> impl Future<Output = Result<Vec<Gateway>, StoreError>> + Send;

    /// A device's latest `limit` readings, oldest first.
    fn history(
        &self,
        gateway: &str,
        device: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Reading>, StoreError>> + Send;

    /// Drops the history older than `before_ms`; returns how many readings went.
    fn prune(&self, before_ms: i64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Claims up to `limit` notifications due at `now_ms` for this instance until
    /// `lease_until_ms`, counting the attempt.
    fn claim_notifications(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Notification>, StoreError>> + Send;

    /// The notification is delivered (or given up on): it leaves the outbox.
    fn notification_done(
        &self,
        key: &str,
        route: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The notification failed: try again at `due_at_ms`.
    fn notification_retry(
        &self,
        key: &str,
        route: &str,
        due_at_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The schema, in SQL both backends take.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS seen (
    gateway TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (gateway, key)
);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    gateway TEXT NOT NULL,
    rule TEXT NOT NULL,
    device TEXT NOT NULL,
    severity TEXT,
    fired_at BIGINT,
    value DOUBLE PRECISION,
    event TEXT,
    resolved_at BIGINT,
    resolved_value DOUBLE PRECISION,
    labels TEXT NOT NULL,
    acked_by TEXT,
    acked_at BIGINT
);
CREATE TABLE IF NOT EXISTS devices (
    gateway TEXT NOT NULL,
    device TEXT NOT NULL,
    last_seen BIGINT NOT NULL,
    readings TEXT NOT NULL,
    PRIMARY KEY (gateway, device)
);
CREATE TABLE IF NOT EXISTS gateways (
    gateway TEXT PRIMARY KEY,
    online BOOLEAN NOT NULL,
    since BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    gateway TEXT NOT NULL,
    device TEXT NOT NULL,
    at BIGINT NOT NULL,
    readings TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_device ON history (gateway, device, at);
CREATE INDEX IF NOT EXISTS history_by_time ON history (at);
CREATE TABLE IF NOT EXISTS outbox (
    key TEXT NOT NULL,
    route TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at BIGINT NOT NULL,
    PRIMARY KEY (key, route)
);
CREATE INDEX IF NOT EXISTS outbox_by_due ON outbox (due_at);
";

/// Statements shared by both backends. `$n` placeholders work in both, but SQLite numbers them
/// by first appearance, not by `n`: each statement uses them in increasing order.
pub(crate) mod sql {
    pub(crate) const SEEN: &str =
        "INSERT INTO seen (gateway, key) VALUES ($1, $2) ON CONFLICT DO NOTHING";
    /// Whether a release that did not scope keys by gateway saw `key` (see the module's doc).
    pub(crate) const SEEN_UNSCOPED: &str = "SELECT 1 FROM seen_unscoped WHERE key = $1";
    /// Moves an unscoped `seen` table aside, with its primary key's index (PostgreSQL names
    /// indexes per schema, and the new table's would clash).
    pub(crate) const SET_ASIDE_UNSCOPED: &str = "ALTER TABLE seen RENAME TO seen_unscoped";
    pub(crate) const DEVICE: &str = "INSERT INTO devices (gateway, device, last_seen, readings)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (gateway, device) DO UPDATE
        SET last_seen = excluded.last_seen, readings = excluded.readings
        WHERE excluded.last_seen >= devices.last_seen";
    pub(crate) const FIRING: &str = "INSERT INTO alerts
        (id, gateway, rule, device, severity, fired_at, value, event, labels)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (id) DO UPDATE
        SET fired_at = excluded.fired_at, value = excluded.value, event = excluded.event,
            severity = COALESCE(excluded.severity, alerts.severity), labels = excluded.labels";
    pub(crate) const RESOLVED: &str = "INSERT INTO alerts
        (id, gateway, rule, device, severity, resolved_at, resolved_value, labels)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (id) DO UPDATE
        SET resolved_at = excluded.resolved_at, resolved_value = excluded.resolved_value,
            severity = COALESCE(alerts.severity, excluded.severity)";
    pub(crate) const STATUS: &str = "INSERT INTO gateways (gateway, online, since)
        VALUES ($1, $2, $3)
        ON CONFLICT (gateway) DO UPDATE SET online = excluded.online, since = excluded.since
        WHERE gateways.online <> excluded.online";
    pub(crate) const ACK: &str = "UPDATE alerts SET acked_by = $1, acked_at = $2
        WHERE id = $3 AND acked_by IS NULL";
    pub(crate) const ACKED: &str = "SELECT acked_by, acked_at FROM alerts WHERE id = $1";
    pub(crate) const ALERTS: &str = "SELECT id, gateway, rule, device, severity, fired_at, value,
            event, resolved_at, resolved_value, labels, acked_by, acked_at
        FROM alerts
        WHERE ($1 = '' OR ($1 = 'firing') = (resolved_at IS NULL))
          AND ($2 = '' OR severity = $2)
          AND ($3 = '' OR gateway = $3)
        ORDER BY (resolved_at IS NULL) DESC, COALESCE(fired_at, resolved_at) DESC, id
        LIMIT $4";
    pub(crate) const DEVICES: &str =
        "SELECT gateway, device, last_seen, readings FROM devices ORDER BY gateway, device";
    pub(crate) const GATEWAYS: &str =
        "SELECT gateway, online, since FROM gateways ORDER BY gateway";
    pub(crate) const RECORD: &str =
        "INSERT INTO history (gateway, device, at, readings) VALUES ($1, $2, $3, $4)";
    pub(crate) const HISTORY: &str = "SELECT at, readings FROM history
        WHERE gateway = $1 AND device = $2 ORDER BY at DESC LIMIT $3";
    pub(crate) const PRUNE: &str = "DELETE FROM history WHERE at < $1";
    pub(crate) const QUEUE: &str = "INSERT INTO outbox (key, route, payload, due_at)
        VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
    /// Moves due rows' `due_at` to the lease's end. The outer `due_at <= $2` is checked again
    /// on a row another instance claimed meanwhile (PostgreSQL re-reads it), so no row is
    /// claimed twice.
    pub(crate) const CLAIM: &str = "UPDATE outbox SET due_at = $1, attempts = attempts + 1
        WHERE due_at <= $2 AND (key, route) IN
            (SELECT key, route FROM outbox WHERE due_at <= $2 ORDER BY due_at LIMIT $3)
        RETURNING key, route, payload, attempts";
    pub(crate) const DELIVERED: &str = "DELETE FROM outbox WHERE key = $1 AND route = $2";
    pub(crate) const RETRY: &str = "UPDATE outbox SET due_at = $1 WHERE key = $2 AND route = $3";
}

/// The filter's parameters for [`sql::ALERTS`]: empty strings mean "any".
pub(crate) fn filter_params(filter: &AlertFilter) -> ([String; 3], i64) {
    (
        [
            filter
                .state
                .map_or_else(String::new, |state| state.as_str().to_owned()),
            filter.severity.clone().unwrap_or_default(),
            filter.gateway.clone().unwrap_or_default(),
        ],
        filter.limit.map_or(i64::MAX, i64::from),
    )
}

/// The outbox rows a newly applied `message` queues: one per route, alert transitions only.
pub(crate) fn notifications(message: &Message, notify: &[String]) -> Vec<(String, String, String)> {
    match (message, message.key()) {
        (Message::Alert(alert), Some(key)) if !notify.is_empty() => {
            let payload = to_json(alert);
            notify
                .iter()
                .map(|route| (key.clone(), route.clone(), payload.clone()))
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Labels and readings are kept as JSON text.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}
