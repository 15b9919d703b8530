//! Kafka at the far end: a consumer that tallies what a topic receives, the bare producer with
//! the gateway's settings, and librdkafka's mock cluster served on loopback for both.
//!
//! The consumer takes its partitions by hand, each from its high watermark at the start, so it
//! counts exactly what is produced after it is ready, with no group to join.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::bare::{Confirm, Publisher};
use super::inbox::Consumer;

/// How long metadata and watermark requests may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where the topic is.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// The bootstrap brokers, `host:port,…`.
    pub brokers: String,
    /// The events topic.
    pub topic: String,
}

/// Starts consuming what `config`'s topic receives from now on; counts the events of `boot`.
pub async fn consume(config: &KafkaConfig, boot: u32) -> anyhow::Result<Consumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", format!("edge-bench-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        // librdkafka's mock brokers answer a fetch only when its wait is over, not when data
        // comes: the default 500 ms would be the latency measured.
        .set("fetch.wait.max.ms", "1")
        .create()?;
    let consumer = std::sync::Arc::new(consumer);
    let assigning = std::sync::Arc::clone(&consumer);
    let topic = config.topic.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let metadata = assigning.fetch_metadata(Some(&topic), TIMEOUT)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|known| known.partitions().iter().map(|partition| partition.id()))
            .collect();
        anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions");
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            let (_, high) = assigning.fetch_watermarks(&topic, partition, TIMEOUT)?;
            list.add_partition_offset(&topic, partition, Offset::Offset(high))?;
        }
        assigning.assign(&list)?;
        Ok(())
    })
    .await??;
    let tally = Consumer::new("kafka", boot);
    {
        let tally = tally.clone();
        tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(record) => tally.record(record.payload().unwrap_or_default()),
                    Err(error) => eprintln!("kafka consumer: {error}"),
                }
            }
        });
    }
    Ok(tally)
}

/// A producer with the gateway's settings (idempotent, `acks=all`, no expiry) that awaits
/// every delivery report.
pub struct KafkaPublisher {
    producer: FutureProducer,
    topic: String,
    gateway: String,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// A producer for messages of gateway `gateway`, at most `window` awaiting their report.
    pub fn connect(config: &KafkaConfig, gateway: &str, window: usize) -> anyhow::Result<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "0")
            .set(
                "queue.buffering.max.messages",
                (2 * window + 64).to_string(),
            )
            .create()?;
        Ok(Self {
            producer,
            topic: config.topic.clone(),
            gateway: gateway.to_owned(),
        })
    }
}

impl Publisher for KafkaPublisher {
    async fn publish(
        &mut self,
        device: &str,
        id: String,
        payload: Vec<u8>,
    ) -> anyhow::Result<Confirm> {
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: "id",
                value: Some(id.as_str()),
            })
            .insert(Header {
                key: "gateway",
                value: Some(self.gateway.as_str()),
            });
        let mut record = FutureRecord::to(&self.topic)
            .key(device)
            .payload(&payload)
            .headers(headers);
        // As the gateway does: a full queue is waited out.
        let delivery = loop {
            match self.producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((error, _)) => anyhow::bail!("failed to produce: {error}"),
            }
        };
        Ok(Box::pin(async move {
            match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => Err(anyhow::anyhow!("not delivered: {error}")),
                Err(_) => Err(anyhow::anyhow!("the producer closed")),
            }
        }))
    }
}

/// Serves a mock cluster of `brokers` brokers with `topics` of `partitions` each until this
/// process ends; prints `bootstrap=host:port,…` on stdout once it listens.
pub fn serve_mock_cluster(brokers: i32, topics: &[String], partitions: i32) -> anyhow::Result<()> {
    let cluster = rdkafka::mocking::MockCluster::new(brokers)?;
    for topic in topics {
        cluster.create_topic(topic, partitions, brokers.min(3))?;
    }
    println!("bootstrap={}", cluster.bootstrap_servers());
    // Lives until killed: the cluster's brokers run on librdkafka's threads.
    loop {
        std::thread::park();
    }
}
