//! Devices publishing to the gateway over MQTT.

use super::*;

/// Publishes `per_device` JSON events from each of `devices` simulated devices (QoS 1) to the
/// gateway, and returns once the gateway's broker acknowledged all of them.
pub fn publish_events(device_port: u16, devices: usize, per_device: u32) -> u64 {
    publish_events_paced(device_port, devices, per_device, Duration::from_micros(100))
}

/// [`publish_events`] with each device waiting `interval` between events.
pub fn publish_events_paced(
    device_port: u16,
    devices: usize,
    per_device: u32,
    interval: Duration,
) -> u64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let tasks: Vec<_> = (0..devices)
            .map(|index| {
                let config = edge_sim::mqtt::DeviceConfig {
                    name: format!("dev-{index:03}"),
                    index,
                    host: "127.0.0.1".into(),
                    port: device_port,
                    interval,
                    count: Some(per_device),
                    format: if index % 2 == 0 {
                        edge_sim::mqtt::Format::Json
                    } else {
                        edge_sim::mqtt::Format::Cbor
                    },
                    boot: 1,
                };
                tokio::spawn(edge_sim::mqtt::run_device(config, stopped.clone()))
            })
            .collect();
        let mut acked = 0;
        for task in tasks {
            acked += task.await.expect("device task");
        }
        acked
    })
}

/// Publishes raw payloads to topics with one client (QoS 1), waiting for each PUBACK.
pub fn publish_raw(device_port: u16, messages: &[(String, Vec<u8>)]) {
    if let Err(error) = try_publish_raw_as(device_port, None, messages) {
        panic!("raw publisher failed: {error}");
    }
}

/// Publishes raw payloads at QoS 1 as a device logging in with `credentials` (user, password),
/// waiting for each PUBACK. An error if the connection fails or is refused before all are acked.
pub fn try_publish_raw_as(
    device_port: u16,
    credentials: Option<(&str, &str)>,
    messages: &[(String, Vec<u8>)],
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut options =
            MqttOptions::new(format!("raw-{}", free_port()), "127.0.0.1", device_port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        let (client, mut event_loop) = AsyncClient::new(options, messages.len() + 10);
        for (topic, payload) in messages {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("queue publish");
        }
        let mut acked = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while acked < messages.len() {
            match tokio::time::timeout_at(deadline, event_loop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack))))
                    if ack.code != rumqttc::ConnectReturnCode::Success =>
                {
                    return Err(format!("refused: {:?}", ack.code));
                }
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(format!("connection failed: {error}")),
                Err(_) => {
                    return Err(format!(
                        "timed out with {acked} of {} acked",
                        messages.len()
                    ));
                }
            }
        }
        Ok(())
    })
}

/// A fleet of simulated devices publishing in the background; tracks how many events each
/// device's broker acknowledged (PUBACKs come in order, so `k` acks mean seqs `0..k`).
pub struct Fleet {
    pub acked: Vec<Arc<std::sync::atomic::AtomicU64>>,
    stop: tokio::sync::watch::Sender<bool>,
    runtime: tokio::runtime::Runtime,
}

impl Fleet {
    /// `devices` devices publishing JSON every `interval` until stopped.
    pub fn start(device_port: u16, devices: usize, interval: Duration) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let acked: Vec<Arc<AtomicU64>> =
            (0..devices).map(|_| Arc::new(AtomicU64::new(0))).collect();
        for (index, counter) in acked.iter().enumerate() {
            let counter = Arc::clone(counter);
            let mut stopped = stopped.clone();
            runtime.spawn(async move {
                let name = format!("dev-{index:03}");
                let mut options =
                    MqttOptions::new(format!("fleet-{name}"), "127.0.0.1", device_port);
                options.set_clean_session(true);
                let (client, mut event_loop) = AsyncClient::new(options, 1000);
                let poller = tokio::spawn(async move {
                    loop {
                        match event_loop.poll().await {
                            Ok(Event::Incoming(Packet::PubAck(_))) => {
                                counter.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(_) => {}
                            // the broker is gone: stop (a reconnect would resend with new acks)
                            Err(_) => return,
                        }
                    }
                });
                let mut ticker = tokio::time::interval(interval);
                for seq in 0u32.. {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = stopped.changed() => break,
                    }
                    let body = format!(
                        r#"{{"device":"{name}","boot":1,"seq":{seq},"readings":{{"n":{seq}}}}}"#
                    );
                    if client
                        .try_publish(
                            format!("devices/{name}/events"),
                            QoS::AtLeastOnce,
                            false,
                            body,
                        )
                        .is_err()
                    {
                        break;
                    }
                    if poller.is_finished() {
                        break;
                    }
                }
                poller.abort();
            });
        }
        Self {
            acked,
            stop,
            runtime,
        }
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Acknowledged events per device, in device order.
    pub fn acked(&self) -> Vec<u64> {
        self.acked
            .iter()
            .map(|counter| counter.load(std::sync::atomic::Ordering::SeqCst))
            .collect()
    }
}
