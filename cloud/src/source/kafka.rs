//! The Kafka source: a consumer group that the instances share, reading the topics the
//! gateways' Kafka uplinks write (events, alerts, status).
//!
//! A gateway produces each event and alert keyed by its device, with the headers `id` and
//! `gateway`; status is keyed by the gateway. This source:
//!
//! 1. joins the group (`--group`, default `edge-alerts`) and subscribes to the three topics;
//!    the group coordinator splits their partitions between the instances, and moves them when
//!    one joins, leaves or stops heart-beating (`session.timeout.ms` 10 s);
//! 2. reads the address of each record from its topic, its `gateway` header and its key, so
//!    that the pipeline checks it against the payload as on every backbone;
//! 3. commits a partition's offset only after the store transaction that holds every record
//!    before it (offsets are never stored automatically); a record the store could not take is
//!    held by the pipeline and retried, and nothing after it is committed meanwhile;
//! 4. takes at most [`WINDOW`] records that are not settled yet: the topics may hold millions.
//!
//! A record consumed but not committed when an instance dies, or when its partition moves, is
//! read again by the partition's next owner; the store's keys make that harmless.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use edge_schema::Address;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{Semaphore, mpsc, watch};

use super::config::KafkaSourceConfig;
use crate::consumer::{Backoff, Delivery, Outcome, Settle, Started};

/// Records received and not yet settled, at most, per instance.
pub const WINDOW: usize = 1024;

/// Where a record came from: what its commit names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaHandle {
    topic: String,
    partition: i32,
    offset: i64,
}

/// Commits settled records' offsets, and frees their room in the window.
pub struct KafkaSettler {
    consumer: Option<Arc<StreamConsumer<Context>>>,
    window: Arc<Semaphore>,
}

impl std::fmt::Debug for KafkaSettler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettler").finish_non_exhaustive()
    }
}

/// The offsets to commit for `settled` (in the order received): per partition, the one after
/// the last record settled before any that was not stored.
fn commits(settled: &[(KafkaHandle, Outcome)]) -> BTreeMap<(String, i32), i64> {
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut blocked: Vec<(String, i32)> = Vec::new();
    for (handle, outcome) in settled {
        let partition = (handle.topic.clone(), handle.partition);
        if blocked.contains(&partition) {
            continue;
        }
        if *outcome == Outcome::NotStored {
            blocked.push(partition);
            continue;
        }
        let offset = next.entry(partition).or_insert(handle.offset + 1);
        *offset = (*offset).max(handle.offset + 1);
    }
    next
}

impl Settle for KafkaSettler {
    type Handle = KafkaHandle;

    fn gives_back(&self) -> bool {
        // A record cannot be handed back alone: the pipeline holds it and retries.
        false
    }

    async fn settle(&mut self, settled: Vec<(KafkaHandle, Outcome)>, _: Duration) {
        let done = settled
            .iter()
            .filter(|(_, outcome)| *outcome != Outcome::NotStored)
            .count();
        self.window.add_permits(done);
        let Some(consumer) = &self.consumer else {
            return;
        };
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in commits(&settled) {
            if let Err(error) = list.add_partition_offset(&topic, partition, Offset::Offset(offset))
            {
                tracing::warn!(%error, topic, partition, "failed to name an offset to commit");
            }
        }
        if list.count() == 0 {
            return;
        }
        // Asynchronous: a commit that is lost (the partition moved meanwhile) makes the next
        // owner read those records again, which the store absorbs.
        if let Err(error) = consumer.commit(&list, CommitMode::Async) {
            tracing::debug!(%error, "failed to commit offsets; the records will be read again");
        }
    }

    async fn close(self) {}
}

/// The consumer's settings.
fn client_config(config: &KafkaSourceConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("client.id", "edge-alerts")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "3000");
    let protocol = match (config.tls, config.sasl.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    client.set("security.protocol", protocol);
    if let Some(path) = &config.ca_file {
        client.set("ssl.ca.location", path.display().to_string());
    }
    if let Some((mechanism, user, password)) = &config.sasl {
        client
            .set("sasl.mechanism", mechanism)
            .set("sasl.username", user)
            .set("sasl.password", password);
    }
    client
}

/// Joins the group and consumes `config`'s topics, in a task of its own.
pub fn start(config: KafkaSourceConfig, shutdown: watch::Receiver<bool>) -> Started<KafkaSettler> {
    let (deliveries, incoming) = mpsc::unbounded_channel();
    let window = Arc::new(Semaphore::new(WINDOW));
    let consumer = client_config(&config)
        .create_with_context::<_, StreamConsumer<Context>>(Context)
        .and_then(|consumer| {
            let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
            consumer.subscribe(&topics).map(|()| Arc::new(consumer))
        });
    match consumer {
        Ok(consumer) => {
            let task = tokio::spawn(receive(
                Arc::clone(&consumer),
                config,
                deliveries,
                Arc::clone(&window),
                shutdown,
            ));
            Started {
                incoming,
                settler: KafkaSettler {
                    consumer: Some(consumer),
                    window,
                },
                task,
            }
        }
        Err(error) => {
            tracing::error!(%error, "failed to set up the Kafka consumer");
            drop(deliveries);
            Started {
                incoming,
                settler: KafkaSettler {
                    consumer: None,
                    window,
                },
                task: tokio::spawn(async {}),
            }
        }
    }
}

async fn receive(
    consumer: Arc<StreamConsumer<Context>>,
    config: KafkaSourceConfig,
    deliveries: mpsc::UnboundedSender<Delivery<KafkaHandle>>,
    window: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    tracing::info!(
        brokers = config.brokers,
        group = config.group,
        topics = ?config.topics,
        "consuming"
    );
    loop {
        let room = tokio::select! {
            room = Arc::clone(&window).acquire_owned() => room,
            _ = shutdown.changed() => return,
        };
        let Ok(room) = room else { return };
        let received = tokio::select! {
            received = consumer.recv() => received,
            _ = shutdown.changed() => return,
        };
        match received {
            Ok(record) => {
                backoff.reset();
                room.forget();
                let delivery = delivery(&config, &record);
                if deliveries.send(delivery).is_err() {
                    return;
                }
            }
            Err(error) => {
                drop(room);
                let wait = backoff.next();
                tracing::warn!(%error, retry_in = ?wait, "not consuming from Kafka");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// A record as the pipeline takes it: its address from its topic, `gateway` header and key.
fn delivery(config: &KafkaSourceConfig, record: &impl Message) -> Delivery<KafkaHandle> {
    let topic = record.topic();
    let key = record
        .key()
        .and_then(|key| std::str::from_utf8(key).ok())
        .filter(|key| !key.is_empty());
    let gateway = record.headers().and_then(|headers| {
        headers
            .iter()
            .find(|header| header.key == "gateway")
            .and_then(|header| header.value)
            .and_then(|value| std::str::from_utf8(value).ok())
            .filter(|gateway| !gateway.is_empty())
    });
    let [events, alerts, status] = &config.topics;
    let address = gateway.and_then(|gateway| {
        if topic == events {
            key.map(|device| Address::events(gateway, device).into_owned())
        } else if topic == alerts {
            Some(Address::alerts(gateway).into_owned())
        } else if topic == status {
            Some(Address::status(gateway).into_owned())
        } else {
            None
        }
    });
    Delivery {
        origin: format!(
            "{topic}[{}]@{} gateway {} key {}",
            record.partition(),
            record.offset(),
            gateway.unwrap_or("(none)"),
            key.unwrap_or("(none)")
        ),
        address,
        payload: bytes::Bytes::copy_from_slice(record.payload().unwrap_or_default()),
        handle: KafkaHandle {
            topic: topic.to_owned(),
            partition: record.partition(),
            offset: record.offset(),
        },
    }
}

/// Hears librdkafka: its log and errors go to ours; partitions assigned are logged.
#[derive(Debug)]
pub struct Context;

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => tracing::debug!(facility, "librdkafka: {message}"),
            _ => tracing::trace!(facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, "librdkafka: {reason}");
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(partitions = partitions.count(), "Kafka partitions assigned");
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(partitions = partitions.count(), "Kafka partitions revoked");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "Kafka rebalance failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(topic: &str, partition: i32, offset: i64) -> KafkaHandle {
        KafkaHandle {
            topic: topic.into(),
            partition,
            offset,
        }
    }

    #[test]
    fn a_partition_is_committed_up_to_its_first_record_not_stored() {
        let settled = vec![
            (handle("events", 0, 7), Outcome::Stored),
            (handle("events", 1, 3), Outcome::Refused),
            (handle("events", 0, 8), Outcome::Stored),
            (handle("alerts", 0, 2), Outcome::NotStored),
            (handle("events", 1, 4), Outcome::NotStored),
            (handle("alerts", 0, 3), Outcome::Stored),
            (handle("events", 1, 5), Outcome::Stored),
        ];
        let commits = commits(&settled);
        assert_eq!(
            commits.into_iter().collect::<Vec<_>>(),
            [(("events".to_owned(), 0), 9), (("events".to_owned(), 1), 4),],
            "after a record not stored, nothing of its partition is committed"
        );
    }

    #[test]
    fn offsets_are_never_committed_or_stored_by_librdkafka() {
        let config = client_config(&KafkaSourceConfig {
            brokers: "k1:9092".into(),
            tls: true,
            ca_file: Some("/ca.pem".into()),
            sasl: Some(("SCRAM-SHA-256".into(), "alerts".into(), "secret".into())),
            group: "edge-alerts".into(),
            topics: ["e".into(), "a".into(), "s".into()],
        });
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(config.get("ssl.ca.location"), Some("/ca.pem"));
    }
}
