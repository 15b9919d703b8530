//! The consumer: subscribes to what gateways publish on the cloud broker, applies each message
//! to the store, and acknowledges it (PUBACK) only once the store has it — so a message is lost
//! neither by a crash of this service nor by a store failure; the broker redelivers, and the
//! store's keys make the redelivery a no-op.
//!
//! Several instances share the work through an MQTT shared subscription (`$share/{group}/…`,
//! which Mosquitto offers to MQTT 3.1.1 clients too). The gateways' retained status is
//! subscribed without sharing: retained messages are not sent to shared subscriptions, and every
//! instance may apply a status (the store ignores repeats).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{Notify, broadcast, watch};

use crate::live::Change;
use crate::message::{Message, interpret};
use crate::notify::Routes;
use crate::store::{Applied, Store};

/// Where to consume from.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Cloud broker host.
    pub host: String,
    /// Cloud broker port.
    pub port: u16,
    /// The gateways' `topic_prefix`.
    pub prefix: String,
    /// Share the subscription with other instances in this group.
    pub group: Option<String>,
    /// MQTT client id (unique per instance).
    pub client_id: String,
}

/// What the consumer has done.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Messages applied for the first time.
    pub applied: AtomicU64,
    /// Redeliveries and repeats that changed nothing.
    pub duplicates: AtomicU64,
    /// Messages not understood (counted, skipped, acknowledged).
    pub refused: AtomicU64,
    /// Store failures (the message is not acknowledged, so the broker delivers it again).
    pub store_errors: AtomicU64,
}

/// Where what the consumer stored goes next.
#[derive(Debug, Clone)]
pub struct Outlets {
    /// Each newly stored message, for the dashboards.
    pub changes: broadcast::Sender<Change>,
    /// The webhook routes: a new alert transition queues a notification for each that wants it.
    pub routes: Arc<Routes>,
    /// Wakes the notifier when something was queued.
    pub queued: Arc<Notify>,
}

/// Consumes until `shutdown` turns true.
pub async fn run<S: Store>(
    config: ConsumerConfig,
    store: Arc<S>,
    stats: Arc<ConsumerStats>,
    outlets: Outlets,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
    options.set_keep_alive(Duration::from_secs(30));
    // A persistent session: what arrives while this instance is away waits for it.
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut event_loop) = AsyncClient::new(options, 1024);
    let shared = |filter: String| match &config.group {
        Some(group) => format!("$share/{group}/{filter}"),
        None => filter,
    };
    let prefix = &config.prefix;
    let filters = vec![
        shared(format!("{prefix}/+/alerts")),
        shared(format!("{prefix}/+/devices/+/events")),
        format!("{prefix}/+/status"),
    ];
    // The event loop is polled by a task of its own, so that acknowledging (which waits for room
    // in the client's queue) can never hold up the polling that empties that queue.
    // Unbounded, so the poller never waits on the consumer (which may be waiting on the
    // poller to make room for its acks); the broker's in-flight window (at most that many
    // unacknowledged publishes per client) bounds it in practice.
    let (publishes, mut incoming) = tokio::sync::mpsc::unbounded_channel::<rumqttc::Publish>();
    let poller = {
        let client = client.clone();
        let broker = format!("{}:{}", config.host, config.port);
        tokio::spawn(async move {
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for filter in &filters {
                            let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                        }
                        tracing::info!(broker, "consuming");
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        if publishes.send(publish).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "cloud broker connection lost; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
    };
    loop {
        let publish = tokio::select! {
            publish = incoming.recv() => match publish {
                Some(publish) => publish,
                None => break,
            },
            _ = shutdown.changed() => break,
        };
        match interpret(&config.prefix, &publish.topic, &publish.payload) {
            Ok(message) => {
                let notify = match &message {
                    Message::Alert(alert) => outlets.routes.matching(alert),
                    _ => Vec::new(),
                };
                let now = now_ms();
                match store.apply(&message, now, &notify).await {
                    Ok(Applied::New) => {
                        stats.applied.fetch_add(1, Ordering::Relaxed);
                        if !notify.is_empty() {
                            outlets.queued.notify_one();
                        }
                        let _ = outlets.changes.send(Change::Stored { message, at: now });
                    }
                    Ok(Applied::Duplicate) => {
                        stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        stats.store_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(%error, topic = publish.topic, "failed to store a message; it stays unacknowledged");
                        // Not acknowledged: the broker delivers it again after a reconnect.
                        continue;
                    }
                }
            }
            Err(refused) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(reason = refused.reason(), "skipped a message: {refused}");
            }
        }
        if let Err(error) = client.ack(&publish).await {
            tracing::warn!(%error, "failed to acknowledge a message");
        }
    }
    let _ = client.try_disconnect();
    poller.abort();
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
