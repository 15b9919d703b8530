//! The I/O loop of the cloud MQTT sink.
//!
//! # Delivery
//! 1. One task polls the rumqttc event loop and publishes with `try_publish`, so it never waits
//!    on the client. The event loop is wrapped in a stream that keeps an unfinished poll alive
//!    across `select!` iterations: a poll future dropped half-way can abandon a connection
//!    attempt.
//! 2. While connected and the in-flight window has room, it hands the next journal rows (read in
//!    id order) to the client at QoS 1 and records them in the [`InflightWindow`].
//! 3. Each PUBACK releases its row; released rows are acked to the journal in small batches,
//!    which deletes them in its next commit.
//! 4. When the connection fails, the client and all its state are dropped. Reading restarts at
//!    the lowest row still in flight, on a fresh connection, after a backoff with jitter. Rows
//!    are therefore sent again in id order: per-device order holds, and a duplicate carries the
//!    same `id` as the original.
//! 5. On start, every row in the journal is sent (again).

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::watch;

use super::state::{InflightMessage, InflightWindow};
use super::tls;
use crate::admin::Metrics;
use crate::backoff::Backoff;
use crate::config::UplinkConfig;
use crate::journal::{JournalError, JournalHandle, JournalReader, StoredEvent};

/// How often delivered rows are acked to the journal.
const ACK_FLUSH_INTERVAL: Duration = Duration::from_millis(5);
/// Largest MQTT packet the uplink sends or accepts.
const MAX_PACKET_SIZE: usize = 256 * 1024;
/// How long a graceful shutdown waits for outstanding acks.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Errors of the MQTT sink's setup.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A TLS file could not be used.
    #[error("failed to set up TLS from {path}: {message}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The password file could not be read.
    #[error("failed to read uplink password file {path}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Forwards journaled events to the cloud broker.
#[derive(Debug)]
pub struct MqttSink {
    options: MqttOptions,
    window: usize,
    topic_prefix: String,
    status_topic: String,
    reconnect_min: Duration,
    reconnect_max: Duration,
    journal: JournalHandle,
    reader: JournalReader,
    metrics: Arc<Metrics>,
}

impl MqttSink {
    /// Prepares the sink: reads credentials and TLS files now, so a bad path fails at start.
    pub fn new(
        uplink: &UplinkConfig,
        gateway_id: &str,
        journal: JournalHandle,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SinkError> {
        let topic_prefix = format!("{}/{gateway_id}", uplink.topic_prefix);
        let status_topic = format!("{topic_prefix}/status");
        let window = usize::from(uplink.max_inflight.max(1));
        let mut options = MqttOptions::new(&uplink.client_id, &uplink.url.host, uplink.url.port);
        options
            .set_keep_alive(uplink.keep_alive)
            .set_clean_session(true)
            .set_inflight(uplink.max_inflight.max(1))
            .set_request_channel_capacity(window + 16)
            .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE)
            .set_last_will(LastWill::new(
                &status_topic,
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(username) = &uplink.username {
            let password = match &uplink.password_file {
                Some(path) => read_secret(path)?,
                None => String::new(),
            };
            options.set_credentials(username, password);
        }
        if uplink.url.tls {
            let config = tls::client_config(uplink)?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        let reader = JournalReader::open(journal.path())?;
        Ok(Self {
            options,
            window,
            topic_prefix,
            status_topic,
            reconnect_min: uplink.reconnect_min,
            reconnect_max: uplink.reconnect_max,
            journal,
            reader,
            metrics,
        })
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.reconnect_min, self.reconnect_max);
        // Rows with ids up to here have been read into this process; reading goes on after it.
        let mut read_position = 0;
        let mut failures = 0u32;
        loop {
            let outcome = self.connection(&mut read_position, &mut shutdown).await;
            self.metrics.set_uplink_connected(false);
            match outcome {
                ConnectionEnd::Shutdown => return,
                ConnectionEnd::Lost {
                    error,
                    was_connected,
                } => {
                    if was_connected {
                        backoff.reset();
                        failures = 0;
                    }
                    failures += 1;
                    // The first failure of a streak is news; the rest of the streak is noise.
                    if failures == 1 {
                        tracing::warn!(broker = %self.broker(), %error, "uplink connection lost; events stay in the journal");
                    } else {
                        tracing::debug!(broker = %self.broker(), %error, failures, "uplink reconnect failed");
                    }
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    fn broker(&self) -> String {
        let (host, port) = self.options.broker_address();
        format!("{host}:{port}")
    }

    fn topic_for(&self, event: &StoredEvent) -> String {
        if event.id < 0 {
            // The priority lane: alerts.
            format!("{}/alerts", self.topic_prefix)
        } else {
            format!("{}/devices/{}/events", self.topic_prefix, event.device)
        }
    }

    /// One connection, from connect to loss (or shutdown).
    async fn connection(
        &self,
        read_position: &mut i64,
        shutdown: &mut watch::Receiver<bool>,
    ) -> ConnectionEnd {
        let (client, event_loop) = AsyncClient::new(self.options.clone(), self.window + 16);
        let mut events = event_stream(event_loop);
        let mut window = InflightWindow::new(self.window);
        let mut buffer: VecDeque<StoredEvent> = VecDeque::new();
        // The priority lane: every alert still in the journal is read at the start of each
        // connection, and new ones as they are committed; they go out before any event.
        let mut alert_buffer: VecDeque<StoredEvent> = VecDeque::new();
        let mut alert_position = i64::MIN;
        let mut alerts_due = true;
        let mut alert_read: Option<PendingRead> = None;
        let mut alerts_committed = self.journal.alerts_committed();
        let mut alerts_open = true;
        let mut delivered: Vec<i64> = Vec::new();
        let mut connected = false;
        let mut caught_up = false;
        let mut committed = self.journal.committed();
        let mut read: Option<PendingRead> = None;
        let mut flush = tokio::time::interval(ACK_FLUSH_INTERVAL);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let end = 'connection: loop {
            if connected {
                while window.has_room() {
                    let Some(event) = alert_buffer.pop_front().or_else(|| buffer.pop_front())
                    else {
                        break;
                    };
                    let topic = self.topic_for(&event);
                    match client.try_publish(topic, QoS::AtLeastOnce, false, event.payload) {
                        Ok(()) => {
                            window.handed_over(InflightMessage::Row {
                                id: event.id,
                                published_at: Instant::now(),
                            });
                            self.metrics.add_published(1);
                        }
                        Err(error) => {
                            // The queue is sized above the window, so this means the event loop
                            // is gone. Keep the row's place so reading restarts at it.
                            let lane = if event.id < 0 {
                                &mut alert_buffer
                            } else {
                                &mut buffer
                            };
                            lane.push_front(StoredEvent {
                                payload: Vec::new(),
                                ..event
                            });
                            break 'connection ConnectionEnd::lost(
                                format!("failed to queue a publish: {error}"),
                                true,
                            );
                        }
                    }
                }
                if alert_read.is_none() && alerts_due {
                    alerts_due = false;
                    let reader = self.reader.clone();
                    let after = alert_position;
                    alert_read = Some(Box::pin(async move {
                        reader.read_alerts_after(after, ALERT_READ_LIMIT).await
                    }));
                }
                // Events wait while alerts are being read: the priority lane goes first.
                if read.is_none()
                    && !caught_up
                    && buffer.len() < self.window
                    && alert_read.is_none()
                    && !alerts_due
                {
                    let reader = self.reader.clone();
                    let after = buffer.back().map_or(*read_position, |event| event.id);
                    let limit = self.window.clamp(64, 1024);
                    read = Some(Box::pin(
                        async move { reader.read_after(after, limit).await },
                    ));
                }
            }
            tokio::select! {
                event = events.next() => match event.unwrap_or(Err(PollError::Stopped)) {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if ack.code != rumqttc::ConnectReturnCode::Success {
                            break ConnectionEnd::lost(format!("broker refused the connection: {:?}", ack.code), false);
                        }
                        connected = true;
                        self.metrics.set_uplink_connected(true);
                        tracing::info!(broker = %self.broker(), "uplink connected");
                        if client.try_publish(&self.status_topic, QoS::AtLeastOnce, true, "online").is_ok() {
                            window.handed_over(InflightMessage::Status);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => match window.on_puback(ack.pkid) {
                        Ok(InflightMessage::Row { id, published_at }) => {
                            self.metrics.uplink_ack_latency.observe(published_at.elapsed());
                            self.metrics.add_acked(1);
                            delivered.push(id);
                        }
                        Ok(InflightMessage::Status) => {}
                        Err(error) => tracing::warn!(%error, "uplink bookkeeping"),
                    },
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Err(error) = window.on_outgoing_publish(pkid) {
                            // Our view of the connection is wrong: start it over rather than
                            // ack the wrong rows.
                            break ConnectionEnd::lost(error.to_string(), connected);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => break ConnectionEnd::lost(error.to_string(), connected),
                },
                result = async {
                    match read.as_mut() {
                        Some(pending_read) => pending_read.await,
                        None => std::future::pending().await,
                    }
                }, if read.is_some() => {
                    read = None;
                    match result {
                        Ok(rows) => {
                            caught_up = rows.is_empty();
                            if let Some(last) = rows.last() {
                                *read_position = (*read_position).max(last.id);
                            }
                            buffer.extend(rows);
                        }
                        Err(error) => {
                            tracing::error!(%error, "failed to read the journal");
                            caught_up = true;
                        }
                    }
                }
                result = async {
                    match alert_read.as_mut() {
                        Some(pending_read) => pending_read.await,
                        None => std::future::pending().await,
                    }
                }, if alert_read.is_some() => {
                    alert_read = None;
                    match result {
                        Ok(rows) => {
                            alerts_due = rows.len() == ALERT_READ_LIMIT;
                            if let Some(last) = rows.last() {
                                alert_position = last.id;
                            }
                            alert_buffer.extend(rows);
                        }
                        Err(error) => tracing::error!(%error, "failed to read alerts from the journal"),
                    }
                }
                changed = alerts_committed.changed(), if alerts_open => {
                    match changed {
                        Ok(()) => alerts_due = true,
                        // The writer is gone: nothing new will come.
                        Err(_) => alerts_open = false,
                    }
                }
                changed = committed.changed(), if caught_up => {
                    if changed.is_ok() {
                        caught_up = false;
                    }
                }
                _ = flush.tick(), if !delivered.is_empty() => {
                    self.ack(&mut delivered);
                }
                _ = shutdown.changed() => {
                    self.shut_down(&client, &mut events, &mut window, &mut delivered).await;
                    break ConnectionEnd::Shutdown;
                }
            }
        };
        self.ack(&mut delivered);
        // Whatever was in flight or read ahead goes again on the next connection, in order.
        // (Alerts are read again from the start of their lane by every connection.)
        let restart = window
            .lowest_row()
            .into_iter()
            .chain(buffer.front().map(|event| event.id))
            .filter(|id| *id > 0)
            .min();
        if let Some(lowest) = restart {
            *read_position = lowest - 1;
        }
        end
    }

    fn ack(&self, delivered: &mut Vec<i64>) {
        if delivered.is_empty() {
            return;
        }
        if let Err(error) = self.journal.ack(std::mem::take(delivered)) {
            tracing::error!(%error, "failed to ack delivered events; they will be sent again");
        }
    }

    /// Publishes the retained `offline` status, waits a little for outstanding acks, disconnects.
    async fn shut_down(
        &self,
        client: &AsyncClient,
        events: &mut EventStream,
        window: &mut InflightWindow,
        delivered: &mut Vec<i64>,
    ) {
        if !self.metrics.uplink_connected() {
            return;
        }
        if client
            .try_publish(&self.status_topic, QoS::AtLeastOnce, true, "offline")
            .is_ok()
        {
            window.handed_over(InflightMessage::Status);
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while window.len() > 0 {
            match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(Some(Ok(Event::Incoming(Packet::PubAck(ack))))) => {
                    if let Ok(InflightMessage::Row { id, .. }) = window.on_puback(ack.pkid) {
                        self.metrics.add_acked(1);
                        delivered.push(id);
                    }
                }
                Ok(Some(Ok(Event::Outgoing(Outgoing::Publish(pkid))))) => {
                    let _ = window.on_outgoing_publish(pkid);
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) | Err(_) => break,
            }
        }
        self.ack(delivered);
        let _ = client.try_disconnect();
        // The poller ends when the disconnect has gone out (the event loop reports it as an error).
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, events.next()).await {}
    }
}

type PollResult = Result<Event, PollError>;

/// A read of the journal under way.
/// Alerts read from the journal at a time.
const ALERT_READ_LIMIT: usize = 256;

type PendingRead = Pin<Box<dyn Future<Output = Result<Vec<StoredEvent>, JournalError>> + Send>>;

/// Why a connection's event stream ended.
#[derive(Debug, thiserror::Error)]
enum PollError {
    /// The connection failed.
    #[error(transparent)]
    Connection(#[from] rumqttc::ConnectionError),
    /// The connection's event stream ended.
    #[error("event loop stopped")]
    Stopped,
}

/// The events of one connection.
type EventStream = Pin<Box<dyn Stream<Item = PollResult> + Send>>;

/// The event loop as a stream: polling it through `next()` is cancel-safe, because an unfinished
/// poll stays inside the stream. The stream ends after the first error: the connection is over.
fn event_stream(event_loop: rumqttc::EventLoop) -> EventStream {
    Box::pin(futures_util::stream::unfold(
        Some(event_loop),
        |state| async move {
            let mut event_loop = state?;
            let event = event_loop.poll().await.map_err(PollError::from);
            let next = event.is_ok().then_some(event_loop);
            Some((event, next))
        },
    ))
}

enum ConnectionEnd {
    Shutdown,
    Lost { error: String, was_connected: bool },
}

impl ConnectionEnd {
    fn lost(error: String, was_connected: bool) -> Self {
        Self::Lost {
            error,
            was_connected,
        }
    }
}

fn read_secret(path: &std::path::Path) -> Result<String, SinkError> {
    std::fs::read_to_string(path)
        .map(|secret| secret.trim_end_matches(['\r', '\n']).to_owned())
        .map_err(|source| SinkError::PasswordFile {
            path: path.to_path_buf(),
            source,
        })
}
