//! Load generation for benchmarks: a fleet of publishing devices and a cloud-side subscriber
//! that measures what arrives.
//!
//! Every event carries one reading, `sent_us`: the time the device handed it to its MQTT client,
//! in microseconds since the Unix epoch (an `f64` holds such a number exactly). The subscriber
//! subtracts it from its own receive time, so latency is measured end to end (device client →
//! device broker → forwarder → cloud broker → consumer) on one clock.
//!
//! The subscriber understands both what the gateway sends (`{"id":…,"device":…,"boot":…,"seq":…,
//! "readings":{"sent_us":…}}`) and the device payload a bridge forwards unchanged: it only looks
//! for the `device`, `boot`, `seq` and `sent_us` fields, which both have.
//!
//! Each MQTT connection's event loop is polled by a task of its own and never inside a
//! `select!`: a poll future dropped half-way abandons a connection attempt.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}

/// The name of device `index` of a fleet.
pub fn device_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index}")
}

/// The JSON payload of one benchmark event.
pub fn event_payload(device: &str, boot: u32, seq: u32, sent_us: u64) -> String {
    format!(
        r#"{{"device":"{device}","boot":{boot},"seq":{seq},"readings":{{"sent_us":{sent_us}}}}}"#
    )
}

/// What the subscriber reads out of a received message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Device index (the numeric suffix of the device name) and seq, packed: unique per event.
    pub key: u64,
    /// The event's boot.
    pub boot: u32,
    /// When the device sent it, µs since the epoch.
    pub sent_us: f64,
}

/// Reads a benchmark event out of `payload`; `None` for anything else (the gateway's status
/// message, say).
pub fn parse_arrival(payload: &[u8]) -> Option<Arrival> {
    let text = std::str::from_utf8(payload).ok()?;
    let device = string_field(text, "device")?;
    let index: u64 = device.rsplit('-').next()?.parse().ok()?;
    let seq: u64 = number_field(text, "seq")?.parse().ok()?;
    let boot: u32 = number_field(text, "boot")?.parse().ok()?;
    let sent_us: f64 = number_field(text, "sent_us")?.parse().ok()?;
    Some(Arrival {
        key: (index << 32) | seq,
        boot,
        sent_us,
    })
}

/// The text of string field `name` (no escapes: the benchmark's names need none).
fn string_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let length = text[start..].find('"')?;
    Some(&text[start..start + length])
}

/// The text of number field `name`.
fn number_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = &text[start..];
    let length = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')))
        .unwrap_or(rest.len());
    Some(&rest[..length])
}

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Device broker host.
    pub host: String,
    /// Device broker port.
    pub port: u16,
    /// Number of devices, each with its own connection.
    pub devices: usize,
    /// Device name prefix.
    pub prefix: String,
    /// Boot sent with every event: tells this run's events from older ones.
    pub boot: u32,
}

/// How a fleet sends.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the broker acknowledges (at most `inflight` unacknowledged per device).
    Flat,
    /// Each device sends one event every `interval`; device `i` starts `i × interval / devices`
    /// late, so the fleet's events are spread evenly.
    Every(Duration),
}

/// What a fleet did.
#[derive(Debug, Clone, Copy)]
pub struct FleetReport {
    /// Events handed to the clients.
    pub sent: u64,
    /// Events the broker acknowledged.
    pub acked: u64,
    /// From the first send to the last acknowledgement (or the deadline).
    pub elapsed: Duration,
}

/// Connects every device, then sends `per_device` events from each, and returns when the broker
/// acknowledged them all or `deadline` passed.
pub async fn run_fleet(
    config: &FleetConfig,
    per_device: u32,
    pace: Pace,
    deadline: Duration,
) -> anyhow::Result<FleetReport> {
    let acked = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::with_capacity(config.devices);
    let mut connected = Vec::with_capacity(config.devices);
    for index in 0..config.devices {
        let name = device_name(&config.prefix, index);
        let mut options = MqttOptions::new(format!("bench-{name}"), &config.host, config.port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_inflight(100);
        let (client, mut event_loop) = AsyncClient::new(options, 100);
        let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
        let acked = Arc::clone(&acked);
        tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    // Ends with the client (the publisher is done) or a broker that went away;
                    // a reconnect would resend with acks counted twice.
                    Err(_) => return,
                }
            }
        });
        clients.push((name, client));
        connected.push(connected_rx);
    }
    for ready in connected {
        tokio::time::timeout(Duration::from_secs(20), ready)
            .await
            .map_err(|_| anyhow::anyhow!("a device did not connect within 20 s"))?
            .map_err(|_| anyhow::anyhow!("a device's connection failed"))?;
    }

    let started = Instant::now();
    let devices = config.devices as u32;
    let publishers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(index, (name, client))| {
            let sent = Arc::clone(&sent);
            let boot = config.boot;
            tokio::spawn(async move {
                let topic = format!("devices/{name}/events");
                let mut ticker = match pace {
                    Pace::Flat => None,
                    Pace::Every(interval) => {
                        let offset = interval * index as u32 / devices.max(1);
                        let mut ticker = tokio::time::interval_at(
                            tokio::time::Instant::now() + offset,
                            interval,
                        );
                        // Keep the rate: a late tick is made up, not skipped.
                        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                        Some(ticker)
                    }
                };
                for seq in 0..per_device {
                    if let Some(ticker) = ticker.as_mut() {
                        ticker.tick().await;
                    }
                    let body = event_payload(&name, boot, seq, now_us());
                    if client
                        .publish(&topic, QoS::AtLeastOnce, false, body)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                client
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(publishers.len());
    for publisher in publishers {
        clients.push(publisher.await?);
    }
    let total = u64::from(per_device) * config.devices as u64;
    let give_up = started + deadline;
    while acked.load(Ordering::Relaxed) < total && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    for client in clients {
        let _ = client.disconnect().await;
    }
    Ok(FleetReport {
        sent: sent.load(Ordering::Relaxed),
        acked: acked.load(Ordering::Relaxed),
        elapsed,
    })
}

/// What the cloud subscriber has seen of one run (one boot).
#[derive(Debug, Default)]
pub struct Inbox {
    /// Distinct events received.
    seen: HashSet<u64>,
    /// Messages of this run received, duplicates included.
    received: u64,
    /// Latency of each first arrival, µs.
    latencies_us: Vec<f64>,
    /// Receive time of the first and of the latest new event.
    first_at: Option<Instant>,
    last_at: Option<Instant>,
}

impl Inbox {
    /// Distinct events received.
    pub fn distinct(&self) -> u64 {
        self.seen.len() as u64
    }

    /// Messages received, duplicates included.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// From the first to the latest new event.
    pub fn span(&self) -> Duration {
        match (self.first_at, self.last_at) {
            (Some(first), Some(last)) => last - first,
            _ => Duration::ZERO,
        }
    }

    /// When the latest new event arrived.
    pub fn last_at(&self) -> Option<Instant> {
        self.last_at
    }

    /// Latencies of first arrivals in µs, sorted.
    pub fn sorted_latencies(&self) -> Vec<f64> {
        let mut latencies = self.latencies_us.clone();
        latencies.sort_by(f64::total_cmp);
        latencies
    }
}

/// A subscriber on the cloud broker.
#[derive(Debug)]
pub struct CloudSubscriber {
    inbox: Arc<Mutex<Inbox>>,
}

/// How to subscribe.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// Cloud broker host.
    pub host: String,
    /// Cloud broker port.
    pub port: u16,
    /// Topic filter: `edge/#` behind the gateway, `devices/#` behind a bridge.
    pub filter: String,
    /// Count only events of this boot.
    pub boot: u32,
    /// A fixed client id with a persistent session (it survives a broker restart, so nothing
    /// published while this client reconnects is lost); `None`: a clean session.
    pub session: Option<String>,
}

impl CloudSubscriber {
    /// Connects and returns once the subscription is acknowledged (or, for a resumed session,
    /// once connected).
    pub async fn start(config: SubscriberConfig) -> anyhow::Result<Self> {
        let client_id = config
            .session
            .clone()
            .unwrap_or_else(|| format!("bench-cloud-{}-{}", std::process::id(), now_us()));
        let mut options = MqttOptions::new(client_id, &config.host, config.port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(config.session.is_none())
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut event_loop) = AsyncClient::new(options, 100);
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        {
            let inbox = Arc::clone(&inbox);
            tokio::spawn(async move {
                let mut ready_tx = Some(ready_tx);
                loop {
                    match event_loop.poll().await {
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            let received_us = now_us() as f64;
                            let at = Instant::now();
                            let Some(arrival) = parse_arrival(&publish.payload) else {
                                continue;
                            };
                            if arrival.boot != config.boot {
                                continue;
                            }
                            let mut inbox = inbox.lock().unwrap_or_else(|e| e.into_inner());
                            inbox.received += 1;
                            if inbox.seen.insert(arrival.key) {
                                inbox.latencies_us.push(received_us - arrival.sent_us);
                                inbox.first_at.get_or_insert(at);
                                inbox.last_at = Some(at);
                            }
                        }
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            if ack.session_present {
                                if let Some(tx) = ready_tx.take() {
                                    let _ = tx.send(());
                                }
                            } else {
                                let _ = client.try_subscribe(&config.filter, QoS::AtLeastOnce);
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(_) => {}
                        // The broker may be down on purpose (backlog runs): keep trying.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            });
        }
        tokio::time::timeout(Duration::from_secs(20), ready_rx)
            .await
            .map_err(|_| anyhow::anyhow!("the cloud subscriber did not subscribe within 20 s"))?
            .map_err(|_| anyhow::anyhow!("the cloud subscriber stopped"))?;
        Ok(Self { inbox })
    }

    /// Waits until `expected` distinct events arrived, or no new one arrived for `idle` (after
    /// the first one; before it, for `first_within`).
    pub async fn wait_for(&self, expected: u64, first_within: Duration, idle: Duration) {
        let started = Instant::now();
        loop {
            let (distinct, last_at) = {
                let inbox = self.lock();
                (inbox.distinct(), inbox.last_at())
            };
            if distinct >= expected {
                return;
            }
            let quiet_since = last_at.unwrap_or(started);
            let limit = if last_at.is_some() {
                idle
            } else {
                first_within
            };
            if quiet_since.elapsed() > limit {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The inbox, locked.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The value at quantile `q` (0 to 1) of sorted `values` (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_device_payload() {
        let payload = event_payload("bench-17", 9, 42, 1_764_230_400_123_456);
        let arrival = parse_arrival(payload.as_bytes()).expect("arrival");
        assert_eq!(arrival.key, (17 << 32) | 42);
        assert_eq!(arrival.boot, 9);
        assert_eq!(arrival.sent_us, 1_764_230_400_123_456.0);
    }

    #[test]
    fn reads_the_gateway_uplink_with_an_exponent() {
        let payload = br#"{"id":"bench-3:9:5","gateway":"bench-gw","device":"bench-3","boot":9,"seq":5,"received_at":1764230400124,"readings":{"sent_us":1.764230400123456e15}}"#;
        let arrival = parse_arrival(payload).expect("arrival");
        assert_eq!(arrival.key, (3 << 32) | 5);
        assert_eq!(arrival.sent_us, 1_764_230_400_123_456.0);
    }

    #[test]
    fn ignores_other_messages() {
        assert_eq!(parse_arrival(b"online"), None);
        assert_eq!(parse_arrival(br#"{"device":"x","seq":1}"#), None);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), 50.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&values, 1.0), 100.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
