//! Kafka for the tests: librdkafka's mock cluster, an in-process broker that speaks the real
//! protocol on loopback and can take its brokers down or slow them, and a reader that consumes
//! the gateway's topics into an [`Inbox`].

use super::*;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// The three topics of a gateway's Kafka uplink.
#[derive(Debug, Clone)]
pub struct KafkaTopics {
    pub events: String,
    pub alerts: String,
    pub status: String,
}

impl KafkaTopics {
    /// `{prefix}.events`, `{prefix}.alerts`, `{prefix}.status`.
    pub fn named(prefix: &str) -> Self {
        Self {
            events: format!("{prefix}.events"),
            alerts: format!("{prefix}.alerts"),
            status: format!("{prefix}.status"),
        }
    }

    pub fn all(&self) -> [&str; 3] {
        [&self.events, &self.alerts, &self.status]
    }
}

/// A mock Kafka cluster of `brokers` brokers (ids 1 to `brokers`), on ephemeral ports.
pub struct KafkaCluster {
    cluster: MockCluster<'static, DefaultProducerContext>,
    pub bootstrap: String,
    brokers: i32,
}

impl KafkaCluster {
    pub fn start(brokers: i32) -> Self {
        let cluster = MockCluster::new(brokers).expect("mock Kafka cluster");
        let bootstrap = cluster.bootstrap_servers();
        Self {
            cluster,
            bootstrap,
            brokers,
        }
    }

    /// Creates the topics a gateway writes, with `partitions` each (replicated on every broker,
    /// up to three).
    pub fn create_topics(&self, topics: &KafkaTopics, partitions: i32) {
        for topic in topics.all() {
            self.cluster
                .create_topic(topic, partitions, self.brokers.min(3))
                .expect("create topic");
        }
    }

    /// Takes every broker down: connections close, new ones are refused.
    pub fn all_down(&self) {
        for broker in 1..=self.brokers {
            self.cluster.broker_down(broker).expect("broker down");
        }
    }

    /// Brings every broker back.
    pub fn all_up(&self) {
        for broker in 1..=self.brokers {
            self.cluster.broker_up(broker).expect("broker up");
        }
    }

    /// Delays every broker's responses by `delay` (a broker that takes records and does not
    /// answer).
    pub fn slow(&self, delay: Duration) {
        for broker in 1..=self.brokers {
            self.cluster
                .broker_round_trip_time(broker, delay)
                .expect("round trip time");
        }
    }
}

/// What a reader found wrong with the records' keys and headers.
#[derive(Debug, Default, Clone)]
pub struct KafkaRecordChecks {
    /// Records whose key, `id` header or `gateway` header disagree with their payload.
    pub mismatches: Arc<Mutex<Vec<String>>>,
}

/// Consumes the gateway's topics from the start, in a group of its own, into an inbox.
pub struct KafkaReader {
    pub inbox: Inbox,
    pub checks: KafkaRecordChecks,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KafkaReader {
    pub fn start(bootstrap: &str, topics: &KafkaTopics, gateway: &str) -> Self {
        let inbox = Inbox::default();
        let checks = KafkaRecordChecks::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", unique_name("reader"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        consumer.subscribe(&topics.all()).expect("subscribe");
        let thread = {
            let (inbox, checks, stop) = (inbox.clone(), checks.clone(), Arc::clone(&stop));
            let (topics, gateway) = (topics.clone(), gateway.to_owned());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Some(Ok(record)) = consumer.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    let key = record
                        .key()
                        .map(|key| String::from_utf8_lossy(key).into_owned())
                        .unwrap_or_default();
                    let payload = record.payload().unwrap_or_default();
                    let header = |name: &str| {
                        record.headers().and_then(|headers| {
                            headers
                                .iter()
                                .find(|header| header.key == name)
                                .and_then(|header| header.value)
                                .map(|value| String::from_utf8_lossy(value).into_owned())
                        })
                    };
                    let topic = record.topic();
                    let lane = if topic == topics.events {
                        format!("devices/{key}/events")
                    } else if topic == topics.alerts {
                        "alerts".to_owned()
                    } else {
                        "status".to_owned()
                    };
                    let mut wrong = Vec::new();
                    if header("gateway").as_deref() != Some(gateway.as_str()) {
                        wrong.push("gateway header");
                    }
                    if topic == topics.events {
                        let body: serde_json::Value =
                            serde_json::from_slice(payload).unwrap_or_default();
                        if body["device"].as_str() != Some(key.as_str()) {
                            wrong.push("key");
                        }
                        if header("id").as_deref() != body["id"].as_str() {
                            wrong.push("id header");
                        }
                    } else if topic == topics.status && key != gateway {
                        wrong.push("status key");
                    }
                    if !wrong.is_empty() {
                        checks
                            .mismatches
                            .lock()
                            .expect("lock")
                            .push(format!("{topic} key {key}: {wrong:?}"));
                    }
                    inbox.push(&format!("edge/{gateway}/{lane}"), payload);
                }
            })
        };
        Self {
            inbox,
            checks,
            stop,
            thread: Some(thread),
        }
    }

    /// Records whose key or headers were wrong.
    pub fn mismatches(&self) -> Vec<String> {
        self.checks.mismatches.lock().expect("lock").clone()
    }
}

impl Drop for KafkaReader {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
