//! The shared backend: PostgreSQL, for several `edge-alerts` instances consuming one shared
//! subscription. The database's unique keys make each message stored exactly once.
//!
//! With `sslmode=require` in the connection string the connection is TLS (rustls), and the
//! server's certificate is checked against `--ca-file` (or the system's trust roots) and its
//! name against the host: stricter than libpq's `require`, which checks neither. Without it the
//! connection is plain.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement, Transaction};

use super::{
    Acknowledgement, Alert, AlertColumns, AlertFilter, Applied, Device, Gateway, Notification,
    Pending, Reading, SCHEMA, Store, StoreError, filter_params, from_json, notifications, sql,
    to_json,
};
use crate::message::{AlertState, Message};

/// The advisory lock that serialises schema creation between instances.
const SCHEMA_LOCK: i64 = 0x0edc_a1e7;

/// A store in a PostgreSQL database.
#[derive(Debug)]
pub struct PostgresStore {
    config: String,
    schema: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    connection: Mutex<Connection>,
}

/// One connection and the statements prepared on it.
#[derive(Debug)]
struct Connection {
    client: Client,
    statements: Statements,
}

impl Connection {
    async fn open(
        config: &str,
        schema: Option<&str>,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Self, StoreError> {
        let parsed: tokio_postgres::Config = config.parse()?;
        let client = if parsed.get_ssl_mode() == SslMode::Require {
            let tls = match tls {
                Some(tls) => Arc::clone(tls),
                None => crate::tls::client_config(None)
                    .map_err(|error| StoreError::Setup(error.to_string()))?,
            };
            let tls =
                tokio_postgres_rustls::MakeRustlsConnect::new(rustls::ClientConfig::clone(&tls));
            let (client, connection) = parsed.connect(tls).await?;
            tokio::spawn(connection);
            client
        } else {
            let (client, connection) = parsed.connect(NoTls).await?;
            tokio::spawn(connection);
            client
        };
        // Instances starting together would race creating the same schema and tables: one at
        // a time, under an advisory lock.
        client
            .batch_execute(&format!("SELECT pg_advisory_lock({SCHEMA_LOCK})"))
            .await?;
        let created = async {
            if let Some(schema) = schema {
                let schema = schema.replace('"', "");
                client
                    .batch_execute(&format!(
                        "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET search_path TO \"{schema}\";"
                    ))
                    .await?;
            }
            let columns = client
                .query(
                    "SELECT column_name::text FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = 'seen'",
                    &[],
                )
                .await?;
            let column = |row: &Row| row.get::<_, String>(0);
            if !columns.is_empty() && !columns.iter().any(|row| column(row) == "gateway") {
                client
                    .batch_execute(&format!(
                        "{}; ALTER INDEX IF EXISTS seen_pkey RENAME TO seen_unscoped_pkey;",
                        sql::SET_ASIDE_UNSCOPED
                    ))
                    .await?;
            }
            client.batch_execute(SCHEMA).await?;
            let unscoped = client
                .query_one(
                    "SELECT count(*) > 0 FROM information_schema.tables
                     WHERE table_schema = current_schema() AND table_name = 'seen_unscoped'",
                    &[],
                )
                .await?;
            Ok::<bool, tokio_postgres::Error>(unscoped.get(0))
        }
        .await;
        client
            .batch_execute(&format!("SELECT pg_advisory_unlock({SCHEMA_LOCK})"))
            .await?;
        let unscoped = created?;
        let statements = Statements::prepare(&client, unscoped).await?;
        Ok(Self { client, statements })
    }
}

impl PostgresStore {
    /// Connects with `config` (e.g. `host=127.0.0.1 user=postgres dbname=alerts`) and creates
    /// the schema if needed, in `schema` when given (it is created too). With `sslmode=require`
    /// the server's certificate is checked against `tls`'s roots (the system's when `None`).
    pub async fn connect(
        config: &str,
        schema: Option<&str>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, StoreError> {
        let connection = Connection::open(config, schema, tls.as_ref()).await?;
        Ok(Self {
            config: config.to_owned(),
            schema: schema.map(str::to_owned),
            tls,
            connection: Mutex::new(connection),
        })
    }

    /// The connection, opened again first if the server closed it (a restart, a failover):
    /// the operation that finds it closed fails, the next one reconnects.
    async fn connection(&self) -> Result<tokio::sync::MutexGuard<'_, Connection>, StoreError> {
        let mut connection = self.connection.lock().await;
        if connection.client.is_closed() {
            tracing::warn!("the PostgreSQL connection closed; reconnecting");
            *connection =
                Connection::open(&self.config, self.schema.as_deref(), self.tls.as_ref()).await?;
        }
        Ok(connection)
    }
}

fn alert(row: &Row) -> Alert {
    Alert::from(AlertColumns {
        id: row.get(0),
        gateway: row.get(1),
        rule: row.get(2),
        device: row.get(3),
        severity: row.get(4),
        fired_at: row.get(5),
        value: row.get(6),
        event: row.get(7),
        resolved_at: row.get(8),
        resolved_value: row.get(9),
        labels: row.get(10),
        acked_by: row.get(11),
        acked_at: row.get(12),
    })
}

/// The statements `apply` runs, prepared once per connection.
#[derive(Debug)]
struct Statements {
    seen: Statement,
    /// Set when the store was written by a release that did not scope keys by gateway.
    seen_unscoped: Option<Statement>,
    record: Statement,
    device: Statement,
    firing: Statement,
    resolved: Statement,
    status: Statement,
    queue: Statement,
}

impl Statements {
    async fn prepare(client: &Client, unscoped: bool) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            seen: client.prepare(sql::SEEN).await?,
            seen_unscoped: if unscoped {
                Some(client.prepare(sql::SEEN_UNSCOPED).await?)
            } else {
                None
            },
            record: client.prepare(sql::RECORD).await?,
            device: client.prepare(sql::DEVICE).await?,
            firing: client.prepare(sql::FIRING).await?,
            resolved: client.prepare(sql::RESOLVED).await?,
            status: client.prepare(sql::STATUS).await?,
            queue: client.prepare(sql::QUEUE).await?,
        })
    }
}

/// Applies one message inside the batch's transaction.
async fn apply_one(
    tx: &Transaction<'_>,
    statements: &Statements,
    pending: &Pending,
    now_ms: i64,
) -> Result<Applied, StoreError> {
    let Pending { message, notify } = pending;
    let key = message.key();
    if let Some(key) = &key {
        let gateway = message.gateway();
        if tx.execute(&statements.seen, &[&gateway, key]).await? == 0 {
            return Ok(Applied::Duplicate);
        }
        if let Some(unscoped) = &statements.seen_unscoped
            && !tx.query(unscoped, &[key]).await?.is_empty()
        {
            return Ok(Applied::Duplicate);
        }
    }
    let changed = match message {
        Message::Event(event) => {
            let readings = to_json(&event.readings);
            let row: [&(dyn ToSql + Sync); 4] =
                [&event.gateway, &event.device, &event.received_at, &readings];
            let (_, changed) = futures_util::future::try_join(
                tx.execute(&statements.record, &row),
                tx.execute(&statements.device, &row),
            )
            .await?;
            changed
        }
        Message::Alert(alert) => {
            let labels = to_json(&alert.labels.clone().unwrap_or_default());
            match alert.state {
                AlertState::Firing => {
                    tx.execute(
                        &statements.firing,
                        &[
                            &alert.id,
                            &alert.gateway,
                            &alert.rule,
                            &alert.device,
                            &alert.severity,
                            &alert.at,
                            &alert.value,
                            &alert.event,
                            &labels,
                        ],
                    )
                    .await?
                }
                AlertState::Resolved => {
                    tx.execute(
                        &statements.resolved,
                        &[
                            &alert.id,
                            &alert.gateway,
                            &alert.rule,
                            &alert.device,
                            &alert.severity,
                            &alert.at,
                            &alert.value,
                            &labels,
                        ],
                    )
                    .await?
                }
            }
        }
        Message::Status { gateway, online } => {
            tx.execute(&statements.status, &[gateway, online, &now_ms])
                .await?
        }
    };
    for (key, route, payload) in notifications(message, notify) {
        tx.execute(&statements.queue, &[&key, &route, &payload, &now_ms])
            .await?;
    }
    Ok(if changed > 0 || key.is_some() {
        Applied::New
    } else {
        Applied::Duplicate
    })
}

impl Store for PostgresStore {
    async fn apply_all(&self, batch: &[Pending], now_ms: i64) -> Result<Vec<Applied>, StoreError> {
        let mut connection = self.connection().await?;
        let Connection { client, statements } = &mut *connection;
        let statements = &*statements;
        let tx = client.transaction().await?;
        // Statements of different messages are pipelined on the one connection (each message's
        // own run in order); statuses go one after another, the latest last.
        let applied = {
            let tx = &tx;
            let concurrent = batch.iter().map(|pending| async move {
                if matches!(pending.message, Message::Status { .. }) {
                    return Ok(None);
                }
                apply_one(tx, statements, pending, now_ms).await.map(Some)
            });
            let mut applied = futures_util::future::try_join_all(concurrent).await?;
            for (slot, pending) in applied.iter_mut().zip(batch) {
                if slot.is_none() {
                    *slot = Some(apply_one(tx, statements, pending, now_ms).await?);
                }
            }
            applied
                .into_iter()
                .map(|applied| applied.unwrap_or(Applied::Duplicate))
                .collect()
        };
        tx.commit().await?;
        Ok(applied)
    }

    async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
        let (params, limit) = filter_params(filter);
        let connection = self.connection().await?;
        let client = &connection.client;
        let rows = client
            .query(sql::ALERTS, &[&params[0], &params[1], &params[2], &limit])
            .await?;
        Ok(rows.iter().map(alert).collect())
    }

    async fn acknowledge(
        &self,
        id: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<Option<Acknowledgement>, StoreError> {
        let connection = self.connection().await?;
        let client = &connection.client;
        let new = client.execute(sql::ACK, &[&by, &at_ms, &id]).await? > 0;
        let row = client.query_opt(sql::ACKED, &[&id]).await?;
        Ok(row.and_then(|row| {
            let by: Option<String> = row.get(0);
            let at: Option<i64> = row.get(1);
            Some(Acknowledgement {
                by: by?,
                at: at?,
                new,
            })
        }))
    }

    async fn devices(&self) -> Result<Vec<Device>, StoreError> {
        let connection = self.connection().await?;
        let client = &connection.client;
        let rows = client.query(sql::DEVICES, &[]).await?;
        Ok(rows
            .iter()
            .map(|row| Device {
                gateway: row.get(0),
                device: row.get(1),
                last_seen: row.get(2),
                readings: from_json(&row.get::<_, String>(3)),
            })
            .collect())
    }

    async fn gateways(&self) -> Result<Vec<Gateway>, StoreError> {
        let connection = self.connection().await?;
        let client = &connection.client;
        let rows = client.query(sql::GATEWAYS, &[]).await?;
        Ok(rows
            .iter()
            .map(|row| Gateway {
                gateway: row.get(0),
                online: row.get(1),
                since: row.get(2),
            })
            .collect())
    }

    async fn history(
        &self,
        gateway: &str,
        device: &str,
        limit: u32,
    ) -> Result<Vec<Reading>, StoreError> {
        let connection = self.connection().await?;
        let client = &connection.client;
        let rows = client
            .query(sql::HISTORY, &[&gateway, &device, &i64::from(limit)])
            .await?;
        Ok(rows
            .iter()
            .rev()
            .map(|row| Reading {
                at: row.get(0),
                readings: from_json(&row.get::<_, String>(1)),
            })
            .collect())
    }

    async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        let connection = self.connection().await?;
        let client = &connection.client;
        Ok(client.execute(sql::PRUNE, &[&before_ms]).await?)
    }

    async fn claim_notifications(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let connection = self.connection().await?;
        let client = &connection.client;
        let rows = client
            .query(sql::CLAIM, &[&lease_until_ms, &now_ms, &i64::from(limit)])
            .await?;
        Ok(rows
            .iter()
            .map(|row| Notification {
                key: row.get(0),
                route: row.get(1),
                payload: row.get(2),
                attempts: row.get(3),
            })
            .collect())
    }

    async fn notification_done(&self, key: &str, route: &str) -> Result<(), StoreError> {
        let connection = self.connection().await?;
        let client = &connection.client;
        client.execute(sql::DELIVERED, &[&key, &route]).await?;
        Ok(())
    }

    async fn notification_retry(
        &self,
        key: &str,
        route: &str,
        due_at_ms: i64,
    ) -> Result<(), StoreError> {
        let connection = self.connection().await?;
        let client = &connection.client;
        client
            .execute(sql::RETRY, &[&due_at_ms, &key, &route])
            .await?;
        Ok(())
    }
}
