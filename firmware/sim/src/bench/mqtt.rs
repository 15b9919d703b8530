//! The consumer on the cloud MQTT broker: subscribes at QoS 1 and tallies what arrives.
//!
//! Its event loop is polled by a task of its own and never inside a `select!`: a poll future
//! dropped half-way abandons a connection attempt.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::inbox::Consumer;
use super::payload::now_us;

/// How to subscribe.
#[derive(Debug, Clone)]
pub struct MqttConsumerConfig {
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

/// Connects and returns once the subscription is acknowledged (or, for a resumed session, once
/// connected).
pub async fn consume(config: MqttConsumerConfig) -> anyhow::Result<Consumer> {
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
    let consumer = Consumer::new("mqtt", config.boot);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    {
        let consumer = consumer.clone();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        consumer.record(&publish.payload);
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
    Ok(consumer)
}
