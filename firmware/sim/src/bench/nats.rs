//! NATS JetStream at the far end: a consumer that tallies what the stream delivers, and the bare
//! publisher that awaits every PubAck.
//!
//! Both make sure the stream exists as the gateway would create it (subjects
//! `{subject_prefix}.>`, file storage), so the start order does not matter. The consumer is an
//! ordered pull consumer (ephemeral, no acks, flow-controlled by the client) that delivers only
//! what the stream stores after it was created: the lightest way to read a stream in order, the
//! same for the gateway's messages and the bare publisher's.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures_util::StreamExt;

use super::bare::{Confirm, Publisher};
use super::inbox::Consumer;

/// How long a PubAck may take (the gateway's default `ack_timeout`).
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the stream is.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:port`.
    pub url: String,
    /// The stream.
    pub stream: String,
    /// The subjects' prefix: the stream stores `{subject_prefix}.>`.
    pub subject_prefix: String,
}

async fn connect(config: &NatsConfig, window: usize) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .name(format!("edge-bench-{}", std::process::id()))
        .connect(config.url.as_str())
        .await
        .map_err(|error| anyhow::anyhow!("failed to connect to {}: {error}", config.url))?;
    // As the gateway builds its context: the client's own limit of publishes awaiting a PubAck
    // must not be below the window.
    let context = jetstream::context::ContextBuilder::new()
        .timeout(ACK_TIMEOUT)
        .max_ack_inflight(window + 2)
        .build(client);
    context
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![edge_schema::address::nats_filter(&config.subject_prefix)],
            storage: stream::StorageType::File,
            ..stream::Config::default()
        })
        .await
        .map_err(|error| {
            anyhow::anyhow!("failed to find or create stream {}: {error}", config.stream)
        })?;
    Ok(context)
}

/// Starts consuming what the stream stores from now on; counts the events of `boot`.
pub async fn consume(config: &NatsConfig, boot: u32) -> anyhow::Result<Consumer> {
    let context = connect(config, 1).await?;
    let stream = context
        .get_stream(&config.stream)
        .await
        .map_err(|error| anyhow::anyhow!("failed to look up stream {}: {error}", config.stream))?;
    let ordered = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: edge_schema::address::nats_filter(&config.subject_prefix),
            deliver_policy: consumer::DeliverPolicy::New,
            ..consumer::pull::OrderedConfig::default()
        })
        .await
        .map_err(|error| {
            anyhow::anyhow!("failed to create a consumer on {}: {error}", config.stream)
        })?;
    let mut messages = ordered
        .messages()
        .await
        .map_err(|error| anyhow::anyhow!("failed to pull from {}: {error}", config.stream))?;
    let tally = Consumer::new("nats", boot);
    {
        let tally = tally.clone();
        tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                match message {
                    Ok(message) => tally.record(&message.payload),
                    // The ordered consumer recreates itself after a gap: keep reading.
                    Err(error) => eprintln!("nats consumer: {error}"),
                }
            }
        });
    }
    Ok(tally)
}

/// A JetStream publisher that awaits the PubAck of every message.
#[derive(Debug)]
pub struct NatsPublisher {
    context: jetstream::Context,
    gateway: String,
    subject_prefix: String,
}

impl NatsPublisher {
    /// Connects, for messages of gateway `gateway` and at most `window` awaiting a PubAck.
    pub async fn connect(
        config: &NatsConfig,
        gateway: &str,
        window: usize,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            context: connect(config, window).await?,
            gateway: gateway.to_owned(),
            subject_prefix: config.subject_prefix.clone(),
        })
    }
}

impl Publisher for NatsPublisher {
    async fn publish(
        &mut self,
        device: &str,
        id: String,
        payload: Vec<u8>,
    ) -> anyhow::Result<Confirm> {
        let subject =
            edge_schema::Address::events(&self.gateway, device).nats_subject(&self.subject_prefix);
        let message = PublishMessage::build()
            .message_id(id)
            .payload(bytes::Bytes::from(payload));
        let ack = self
            .context
            .send_publish(subject, message)
            .await
            .map_err(|error| anyhow::anyhow!("failed to publish: {error}"))?;
        Ok(Box::pin(async move {
            ack.await
                .map(|_| ())
                .map_err(|error| anyhow::anyhow!("no PubAck: {error}"))
        }))
    }
}
