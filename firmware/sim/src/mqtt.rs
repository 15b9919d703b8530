//! Simulated devices that publish over MQTT.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;

use crate::signal::Signal;

/// How a device encodes its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// JSON, as a device with a text stack would send.
    #[default]
    Json,
    /// The `edge-wire` CBOR encoding, as the firmware sends.
    Cbor,
}

/// One simulated device.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Its id (`devices/{name}/events`).
    pub name: String,
    /// Its position in the fleet (shapes its signal).
    pub index: usize,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Time between events.
    pub interval: Duration,
    /// Stop after this many events (`None`: until told to stop).
    pub count: Option<u32>,
    /// Payload encoding.
    pub format: Format,
    /// Boot counter sent with each event.
    pub boot: u32,
}

/// The payload of event `seq`.
pub fn payload(config: &DeviceConfig, signal: &mut Signal, seq: u32) -> Vec<u8> {
    let (temp, rh) = signal.sample(seq);
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0);
    match config.format {
        Format::Json => format!(
            r#"{{"device":"{}","boot":{},"seq":{seq},"ts":{ts},"readings":{{"temp_c":{temp},"rh":{rh}}}}}"#,
            config.name, config.boot
        )
        .into_bytes(),
        Format::Cbor => {
            let mut readings = edge_wire::Readings::new();
            let _ = readings.push("temp_c", temp);
            let _ = readings.push("rh", rh);
            let event = edge_wire::Event {
                device: &config.name,
                boot: config.boot,
                seq,
                ts: Some(ts),
                kind: None,
                readings,
            };
            let mut buffer = [0u8; 512];
            match edge_wire::encode_event(&event, &mut buffer) {
                Ok(len) => buffer[..len].to_vec(),
                Err(_) => Vec::new(),
            }
        }
    }
}

/// Runs one device until it has sent `count` events (each acknowledged by the broker) or
/// `stop` turns true. Returns how many events the broker acknowledged.
pub async fn run_device(config: DeviceConfig, mut stop: watch::Receiver<bool>) -> u64 {
    let mut options = MqttOptions::new(format!("sim-{}", config.name), &config.host, config.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false);
    let (client, mut event_loop) = AsyncClient::new(options, 64);
    // The event loop gets a task of its own: a poll dropped half-way (say, by losing a select!
    // race) abandons a connection attempt.
    let (acked_tx, mut acked) = watch::channel(0u64);
    let name = config.name.clone();
    let poller = tokio::spawn(async move {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked_tx.send_modify(|acked| *acked += 1),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(device = %name, %error, "device connection failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    let topic = format!("devices/{}/events", config.name);
    let mut signal = Signal::new(config.index);
    let mut ticker = tokio::time::interval(config.interval.max(Duration::from_micros(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u32;
    loop {
        if config.count.is_some_and(|count| seq >= count) {
            // all sent: wait for the broker to acknowledge them
            let count = config.count.map(u64::from).unwrap_or(0);
            tokio::select! {
                _ = acked.wait_for(|acked| *acked >= count) => {}
                _ = stop.changed() => {}
            }
            break;
        }
        tokio::select! {
            _ = ticker.tick() => {
                let body = payload(&config, &mut signal, seq);
                if client.publish(&topic, QoS::AtLeastOnce, false, body).await.is_err() {
                    break;
                }
                seq += 1;
            }
            _ = stop.changed() => break,
        }
    }
    let _ = client.disconnect().await;
    poller.abort();
    *acked.borrow()
}
