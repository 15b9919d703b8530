//! A fleet of simulated devices, each with its own MQTT connection, publishing benchmark events
//! at QoS 1 to a device broker (the gateway, or a Mosquitto bridge).
//!
//! Each MQTT connection's event loop is polled by a task of its own and never inside a
//! `select!`: a poll future dropped half-way abandons a connection attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::payload::{device_name, event_payload, now_us};

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
