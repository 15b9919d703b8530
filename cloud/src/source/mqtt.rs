//! The MQTT source: a subscription to what gateways publish on the cloud broker, with a
//! persistent session, and PUBACK only after the commit (manual acknowledgements).
//!
//! Several instances share the work through an MQTT shared subscription (`$share/{group}/…`,
//! which Mosquitto offers to MQTT 3.1.1 clients too). The gateways' retained status is
//! subscribed without sharing: retained messages are not sent to shared subscriptions, and every
//! instance may apply a status (the store ignores repeats).
//!
//! MQTT has no way to hand a message back: one the store cannot take is held (the pipeline
//! retries it) and, at a stop, left unacknowledged for the broker to deliver again after a
//! reconnect.

use std::sync::Arc;
use std::time::Duration;

use edge_schema::Address;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::{mpsc, watch};

use super::config::MqttSourceConfig;
use crate::consumer::{Delivery, Outcome, Settle, Started};

/// Settles MQTT deliveries: PUBACK for what is done with; nothing for what is not.
#[derive(Debug)]
pub struct MqttSettler {
    client: AsyncClient,
}

impl Settle for MqttSettler {
    type Handle = rumqttc::Publish;

    fn gives_back(&self) -> bool {
        false
    }

    async fn settle(&mut self, settled: Vec<(rumqttc::Publish, Outcome)>, _: Duration) {
        for (publish, outcome) in settled {
            // A message the store failed to take is not acknowledged: the broker delivers it
            // again after a reconnect.
            if outcome != Outcome::NotStored
                && let Err(error) = self.client.ack(&publish).await
            {
                tracing::warn!(%error, "failed to acknowledge a message");
            }
        }
    }

    async fn close(self) {
        let _ = self.client.try_disconnect();
    }
}

/// Connects (and reconnects, in its own task) to the broker of `config` and subscribes; over
/// TLS with `tls` (for `mqtts://`).
pub fn start(
    config: MqttSourceConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    _shutdown: watch::Receiver<bool>,
) -> Started<MqttSettler> {
    let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
    options.set_keep_alive(Duration::from_secs(30));
    // A persistent session: what arrives while this instance is away waits for it.
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_max_packet_size(1 << 20, 1 << 20);
    if let Some((user, password)) = &config.credentials {
        options.set_credentials(user, password);
    }
    if let Some(tls) = tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    let (client, mut event_loop) = AsyncClient::new(options, 1024);
    let shared = |filter: String| match &config.group {
        Some(group) => format!("$share/{group}/{filter}"),
        None => filter,
    };
    let prefix = config.prefix.clone();
    let filters = vec![
        shared(format!("{prefix}/+/alerts")),
        shared(format!("{prefix}/+/devices/+/events")),
        shared(format!("{prefix}/+/events")),
        format!("{prefix}/+/status"),
    ];
    // The event loop is polled by a task of its own, so that acknowledging (which waits for room
    // in the client's queue) can never hold up the polling that empties that queue. Unbounded,
    // so the poller never waits on the pipeline (which may be waiting on the poller to make
    // room for its acks); the broker's in-flight window (at most that many unacknowledged
    // publishes per client) bounds it in practice.
    let (deliveries, incoming) = mpsc::unbounded_channel();
    let task = {
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
                        let origin = publish.topic.clone();
                        let delivery = Delivery {
                            address: Address::from_mqtt_topic(&prefix, &origin)
                                .map(Address::into_owned),
                            origin,
                            payload: publish.payload.clone(),
                            handle: publish,
                        };
                        if deliveries.send(delivery).is_err() {
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
    Started {
        incoming,
        settler: MqttSettler { client },
        task,
    }
}
