//! RabbitMQ at the far end: a consumer on a durable queue bound to the gateway's exchange, the
//! bare publisher with publisher confirms, and the clean-up of what the benchmark declared.
//!
//! Everything is declared as the gateway and `edge-alerts` declare it: a durable topic exchange,
//! a durable (classic) queue bound with [`edge_schema::address::AMQP_BINDINGS`]. The consumer
//! takes deliveries without acknowledgements (`no_ack`), the lightest way to empty the queue,
//! the same for the gateway's messages and the bare publisher's. Messages are persistent and
//! mandatory, so a confirm means the broker routed the message to a durable queue and took
//! responsibility for it.

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::bare::{Confirm, Publisher};
use super::inbox::Consumer;

/// Delivery mode 2: the broker writes the message to disk in a durable queue.
const PERSISTENT: u8 = 2;

/// Where the exchange is.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `amqp://host:port[/vhost]`; without credentials, RabbitMQ's `guest` login.
    pub url: String,
    /// The durable topic exchange the gateway publishes to.
    pub exchange: String,
}

async fn open(config: &AmqpConfig) -> anyhow::Result<(Connection, Channel)> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("edge-bench-{}", std::process::id()).into());
    let connection = Connection::connect(&config.url, properties)
        .await
        .map_err(|error| anyhow::anyhow!("failed to connect to {}: {error}", config.url))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|error| anyhow::anyhow!("failed to open a channel: {error}"))?;
    channel
        .exchange_declare(
            config.exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|error| {
            anyhow::anyhow!("failed to declare exchange {}: {error}", config.exchange)
        })?;
    Ok((connection, channel))
}

/// Declares `queue` (durable), binds it to the exchange and consumes from it; counts the events
/// of `boot`. Delete the queue with [`delete`] when done.
pub async fn consume(config: &AmqpConfig, queue: &str, boot: u32) -> anyhow::Result<Consumer> {
    let (connection, channel) = open(config).await?;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|error| anyhow::anyhow!("failed to declare queue {queue}: {error}"))?;
    for pattern in edge_schema::address::AMQP_BINDINGS {
        channel
            .queue_bind(
                queue.into(),
                config.exchange.as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| anyhow::anyhow!("failed to bind queue {queue}: {error}"))?;
    }
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            format!("edge-bench-{}", std::process::id()).as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|error| anyhow::anyhow!("failed to consume from {queue}: {error}"))?;
    let tally = Consumer::new("amqp", boot);
    {
        let tally = tally.clone();
        tokio::spawn(async move {
            // Kept here: the consumer lives as long as its connection.
            let _open = (connection, channel);
            while let Some(delivery) = deliveries.next().await {
                match delivery {
                    Ok(delivery) => tally.record(&delivery.data),
                    Err(error) => {
                        eprintln!("amqp consumer: {error}");
                        return;
                    }
                }
            }
        });
    }
    Ok(tally)
}

/// Deletes `queues` and, with `exchange`, the exchange; what does not exist is passed over.
pub async fn delete(config: &AmqpConfig, queues: &[String], exchange: bool) -> anyhow::Result<()> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("edge-bench-{}", std::process::id()).into());
    let connection = Connection::connect(&config.url, properties)
        .await
        .map_err(|error| anyhow::anyhow!("failed to connect to {}: {error}", config.url))?;
    // A channel per deletion: a deletion the broker refuses closes its channel.
    for queue in queues {
        let channel = connection.create_channel().await?;
        if let Err(error) = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
        {
            eprintln!("amqp: queue {queue} not deleted: {error}");
        }
    }
    if exchange {
        let channel = connection.create_channel().await?;
        if let Err(error) = channel
            .exchange_delete(
                config.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
        {
            eprintln!("amqp: exchange {} not deleted: {error}", config.exchange);
        }
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// An AMQP publisher with publisher confirms: persistent, mandatory messages.
pub struct AmqpPublisher {
    _connection: Connection,
    channel: Channel,
    exchange: String,
    gateway: String,
}

impl std::fmt::Debug for AmqpPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpPublisher")
            .field("exchange", &self.exchange)
            .finish_non_exhaustive()
    }
}

impl AmqpPublisher {
    /// Connects and turns on publisher confirms, for messages of gateway `gateway`.
    pub async fn connect(config: &AmqpConfig, gateway: &str) -> anyhow::Result<Self> {
        let (connection, channel) = open(config).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|error| anyhow::anyhow!("failed to turn on publisher confirms: {error}"))?;
        Ok(Self {
            _connection: connection,
            channel,
            exchange: config.exchange.clone(),
            gateway: gateway.to_owned(),
        })
    }
}

impl Publisher for AmqpPublisher {
    async fn publish(
        &mut self,
        device: &str,
        id: String,
        payload: Vec<u8>,
    ) -> anyhow::Result<Confirm> {
        let key = edge_schema::Address::events(&self.gateway, device).amqp_routing_key();
        // The gateway's properties: persistent, JSON, the event's id.
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into())
            .with_message_id(id.into());
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &payload,
                properties,
            )
            .await
            .map_err(|error| anyhow::anyhow!("failed to publish: {error}"))?;
        Ok(Box::pin(async move {
            match confirm.await {
                Ok(lapin::Confirmation::Ack(None)) => Ok(()),
                Ok(lapin::Confirmation::Ack(Some(returned))) => Err(anyhow::anyhow!(
                    "returned: {} {}",
                    returned.reply_code,
                    returned.reply_text
                )),
                Ok(lapin::Confirmation::Nack(_)) => Err(anyhow::anyhow!("nacked")),
                Ok(lapin::Confirmation::NotRequested) => {
                    Err(anyhow::anyhow!("the channel is not in confirm mode"))
                }
                Err(error) => Err(anyhow::anyhow!("confirm failed: {error}")),
            }
        }))
    }
}
