//! The AMQP source (RabbitMQ): a durable queue, named by the group and shared by its
//! instances, bound to the gateways' topic exchange.
//!
//! Gateways publish persistent messages to a durable topic exchange with routing keys
//! `{gateway}.devices.{device}.events`, `{gateway}.alerts` and `{gateway}.status` (ids
//! escaped, see [`edge_schema::address`]). This source:
//!
//! 1. connects, declares the exchange (durable, topic) if missing, the durable queue, and binds
//!    it with [`AMQP_BINDINGS`] — the same declarations from every instance, so the start order
//!    does not matter;
//! 2. consumes with manual acknowledgements and a bounded prefetch ([`PREFETCH`]); the broker
//!    hands each message to one of the group's instances;
//! 3. settles each delivery after the pipeline's commit: an ack (one `multiple` ack for a
//!    batch that is all done), a nack with requeue when the store failed; a message not
//!    understood is acked (a requeue would only bring it back);
//! 4. on any failure (the broker gone, the channel closed) connects again with a backoff.
//!
//! Deliveries unacknowledged when a connection ends (this instance killed, a network cut) go
//! back to the queue at once, for another instance or the next connection; the store's keys make
//! the redelivery harmless.

use std::time::Duration;

use edge_schema::Address;
use edge_schema::address::AMQP_BINDINGS;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Acker, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{mpsc, watch};

use super::config::{AmqpSourceConfig, redact};
use crate::consumer::{Backoff, Delivery, Outcome, Settle, Started};

/// Deliveries unacknowledged at once per instance, at most.
pub const PREFETCH: u16 = 256;

/// Why the source stopped consuming; it connects again after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum AmqpSourceError {
    /// The broker refused or dropped something: the connection, a declaration, the consumer.
    #[error("failed to {doing} on {broker}")]
    Broker {
        /// What was being done.
        doing: &'static str,
        /// The broker, without credentials.
        broker: String,
        /// Why.
        #[source]
        source: lapin::Error,
    },
    /// The broker ended the consumer (the queue was deleted, the connection closed).
    #[error("the broker ended the consumer on queue `{0}`")]
    Ended(String),
    /// The CA file cannot be used.
    #[error("failed to read the CA certificates")]
    Tls(#[source] crate::tls::TlsError),
}

/// What identifies a delivery: its acker, and the connection it came on.
#[derive(Debug)]
pub struct AmqpHandle {
    acker: Acker,
    connection: u64,
}

/// Settles AMQP deliveries: ack, or nack with requeue.
#[derive(Debug, Default)]
pub struct AmqpSettler;

impl Settle for AmqpSettler {
    type Handle = AmqpHandle;

    fn gives_back(&self) -> bool {
        true
    }

    async fn settle(&mut self, settled: Vec<(AmqpHandle, Outcome)>, _: Duration) {
        let Some(connection) = settled.last().map(|(handle, _)| handle.connection) else {
            return;
        };
        if settled.iter().all(|(handle, outcome)| {
            handle.connection == connection && *outcome != Outcome::NotStored
        }) {
            // The pipeline settles in the order received: every earlier delivery on this
            // channel is settled already, so one ack covers the batch.
            if let Some((handle, _)) = settled.last() {
                ack(&handle.acker, true).await;
            }
            return;
        }
        for (handle, outcome) in settled {
            match outcome {
                Outcome::Stored | Outcome::Refused => ack(&handle.acker, false).await,
                Outcome::NotStored => {
                    let requeue = BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    };
                    if let Err(error) = handle.acker.nack(requeue).await {
                        tracing::debug!(%error, "failed to give a message back; the broker requeues it");
                    }
                }
            }
        }
    }

    async fn close(self) {}
}

async fn ack(acker: &Acker, multiple: bool) {
    // A channel that is gone has had its deliveries requeued by the broker: they come again,
    // and the store ignores them.
    if let Err(error) = acker.ack(BasicAckOptions { multiple }).await {
        tracing::warn!(%error, "failed to acknowledge a message");
    }
}

/// Connects to the broker of `config` and consumes, connecting again with a backoff whatever
/// fails, in a task of its own.
pub fn start(config: AmqpSourceConfig, shutdown: watch::Receiver<bool>) -> Started<AmqpSettler> {
    let (deliveries, incoming) = mpsc::unbounded_channel();
    let task = tokio::spawn(receive(config, deliveries, shutdown));
    Started {
        incoming,
        settler: AmqpSettler,
        task,
    }
}

async fn receive(
    config: AmqpSourceConfig,
    deliveries: mpsc::UnboundedSender<Delivery<AmqpHandle>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    for connection in 0.. {
        let error = match session(&config, connection, &deliveries, &mut backoff).await {
            Ok(()) => return,
            Err(error) => error,
        };
        let wait = backoff.next();
        tracing::warn!(
            error = &error as &dyn std::error::Error,
            retry_in = ?wait,
            "not consuming from AMQP"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One connection: declare, consume, pass deliveries on until it ends. `Ok` when the pipeline
/// is gone (nothing more to do).
async fn session(
    config: &AmqpSourceConfig,
    generation: u64,
    deliveries: &mpsc::UnboundedSender<Delivery<AmqpHandle>>,
    backoff: &mut Backoff,
) -> Result<(), AmqpSourceError> {
    let broker = redact(&config.uri);
    let failed = |doing| {
        let broker = broker.clone();
        move |source| AmqpSourceError::Broker {
            doing,
            broker,
            source,
        }
    };
    let properties = ConnectionProperties::default().with_connection_name("edge-alerts".into());
    // The CA file's certificates are added to the system's roots (lapin's rustls set-up).
    let connection = match &config.ca_file {
        Some(path) => {
            let chain = crate::tls::ca_chain(path).map_err(AmqpSourceError::Tls)?;
            let runtime = lapin::runtime::default_runtime().map_err(failed("start a runtime"))?;
            let tls = lapin::tcp::OwnedTLSConfig {
                identity: None,
                cert_chain: Some(chain),
            };
            Connection::connect_with_config(&config.uri, properties, tls, runtime).await
        }
        None => Connection::connect(&config.uri, properties).await,
    }
    .map_err(failed("connect"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(failed("open a channel"))?;
    channel
        .exchange_declare(
            config.exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(failed("declare the exchange"))?;
    channel
        .queue_declare(
            config.queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(failed("declare the queue"))?;
    for pattern in AMQP_BINDINGS {
        channel
            .queue_bind(
                config.queue.as_str().into(),
                config.exchange.as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(failed("bind the queue"))?;
    }
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .map_err(failed("set the prefetch"))?;
    let tag = format!("edge-alerts-{}-{generation}", std::process::id());
    let mut consumer = channel
        .basic_consume(
            config.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(failed("consume"))?;
    tracing::info!(
        broker,
        exchange = config.exchange,
        queue = config.queue,
        "consuming"
    );
    backoff.reset();
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.map_err(failed("receive"))?;
        let origin = delivery.routing_key.to_string();
        let delivery = Delivery {
            address: Address::from_amqp_routing_key(&origin).map(Address::into_owned),
            origin,
            payload: delivery.data.into(),
            handle: AmqpHandle {
                acker: delivery.acker,
                connection: generation,
            },
        };
        if deliveries.send(delivery).is_err() {
            return Ok(());
        }
    }
    // Kept open until here: closing the channel would requeue what the pipeline still holds.
    drop(channel);
    drop(connection);
    Err(AmqpSourceError::Ended(config.queue.clone()))
}
