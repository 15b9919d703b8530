//! The Kafka adapter (rdkafka, librdkafka bundled).
//!
//! 1. A connection is one producer. Connecting fetches the cluster's metadata: the brokers must
//!    answer, and each topic the uplink writes must exist (the gateway does not create topics:
//!    their partitions and retention are the operator's choice). `online` goes to the status
//!    topic, keyed by the gateway, if the uplink takes the status lane; its delivery report is
//!    awaited.
//! 2. Offering hands the row to the connection's [publisher task](crate::sinks::pipeline),
//!    which gives it to librdkafka at once (`send_result` does not wait) and awaits its delivery
//!    report. librdkafka's queue has room for twice the window; should it still be full (reports
//!    served but not yet freed), the task waits a millisecond at a time for room, up to 5 s.
//! 3. librdkafka retries what the brokers refuse for a while (leader changes, a broker down)
//!    by itself, without ever expiring a record (`message.timeout.ms = 0`). A delivery report
//!    with an error is therefore final for that attempt: too large or malformed is permanent
//!    (dead-lettered), anything else (no such topic, not authorised, a fatal producer error)
//!    is retryable, and the driver starts over after a backoff.
//! 4. When librdkafka reports every broker down, or a fatal error of the idempotent producer,
//!    the connection ends at once: the driver reconnects rather than wait for reports that may
//!    never come.
//! 5. Closing waits for the reports still due (they confirm what was delivered), says
//!    `offline`, and flushes. Dropping a producer purges what it still holds; the driver sends
//!    it again on the next connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::UplinkConfig;
use crate::journal::Lane;
use crate::sinks::destination::{
    Confirmation, Connection, Destination, DestinationError, Outgoing, Rejection, RejectionKind,
};
use crate::sinks::error::{SinkError, read_secret};
use crate::sinks::pipeline::{Pipeline, Publish, Published};

/// How long the first metadata request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How many milliseconds a record waits, at most, for room in a full producer queue before the
/// connection is given up.
const QUEUE_FULL_WAITS: u32 = 5_000;

/// An Apache Kafka cluster as a destination.
pub struct KafkaDestination {
    config: ClientConfig,
    describe: String,
    gateway: String,
    events_topic: Option<String>,
    alerts_topic: Option<String>,
    status_topic: Option<String>,
    window: usize,
    ack_timeout: Duration,
}

impl std::fmt::Debug for KafkaDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client configuration holds the password.
        f.debug_struct("KafkaDestination")
            .field("describe", &self.describe)
            .finish_non_exhaustive()
    }
}

impl KafkaDestination {
    /// Prepares the destination: reads the password now, so a bad path fails at start.
    pub fn new(uplink: &UplinkConfig, gateway_id: &str) -> Result<Self, SinkError> {
        let password = match &uplink.password_file {
            Some(path) => Some(read_secret(path)?),
            None => None,
        };
        if let Some(path) = &uplink.ca_file {
            crate::sinks::tls::read_ca_pem(path)?;
        }
        let config = client_config(uplink, gateway_id, password.as_deref());
        Ok(Self {
            config,
            describe: format!("{} topic {}", uplink.endpoint(), uplink.topic),
            gateway: gateway_id.to_owned(),
            events_topic: uplink.lanes.events.then(|| uplink.topic.clone()),
            alerts_topic: uplink.lanes.alerts.then(|| uplink.alerts_topic.clone()),
            status_topic: uplink.lanes.status.then(|| uplink.status_topic.clone()),
            window: usize::from(uplink.max_inflight.max(1)),
            ack_timeout: uplink.ack_timeout,
        })
    }
}

/// The producer's settings: what makes delivery safe is here, and tested.
fn client_config(uplink: &UplinkConfig, gateway_id: &str, password: Option<&str>) -> ClientConfig {
    let brokers: Vec<String> = uplink
        .brokers
        .iter()
        .map(crate::config::UplinkUrl::authority)
        .collect();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers.join(","))
        .set("client.id", format!("edge-gateway-{gateway_id}"))
        // Exactly once per partition and in order, even when librdkafka retries.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Never expire a record: the journal is the buffer, the ack timeout is in charge.
        .set("message.timeout.ms", "0")
        .set("message.max.bytes", uplink.max_message_bytes.to_string())
        // The driver keeps at most a window in flight, plus the status message; a record whose
        // delivery report was served still counts until librdkafka frees it, so the queue has
        // room for twice that (a full queue makes the publisher wait, see below).
        .set(
            "queue.buffering.max.messages",
            (2 * usize::from(uplink.max_inflight.max(1)) + 64).to_string(),
        )
        .set("socket.connection.setup.timeout.ms", "10000")
        .set("log_level", "6");
    if let Some(batch) = uplink.batch {
        // The producer batches records per partition by itself; `batch` tunes it. Each record
        // is still its own message with its own delivery report.
        config
            .set("batch.num.messages", batch.max_events.to_string())
            .set("batch.size", batch.max_bytes.to_string())
            .set("linger.ms", batch.max_delay.as_millis().to_string());
    }
    let protocol = match (uplink.url.tls, uplink.sasl_mechanism.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    config.set("security.protocol", protocol);
    if let Some(path) = &uplink.ca_file {
        config.set("ssl.ca.location", path.display().to_string());
    }
    if let Some(mechanism) = uplink.sasl_mechanism {
        config.set("sasl.mechanism", mechanism.as_str());
        if let Some(user) = &uplink.username {
            config.set("sasl.username", user);
        }
        config.set("sasl.password", password.unwrap_or_default());
    }
    config
}

impl Destination for KafkaDestination {
    type Connection = KafkaConnection;

    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn connect(&mut self) -> Result<KafkaConnection, DestinationError> {
        let (events, trouble) = mpsc::unbounded_channel();
        let last_error = Arc::new(Mutex::new(None));
        let context = Context {
            events,
            last_error: Arc::clone(&last_error),
        };
        let producer: FutureProducer<Context> =
            self.config.create_with_context(context).map_err(|error| {
                DestinationError::misconfigured(format!(
                    "failed to set up the Kafka producer: {error}"
                ))
            })?;
        let producer = Arc::new(producer);
        let topics: Vec<String> = [&self.events_topic, &self.alerts_topic, &self.status_topic]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let checking = producer.clone();
        let checked =
            tokio::task::spawn_blocking(move || check_topics(&checking, &topics, &last_error))
                .await;
        let checked = match checked {
            Ok(checked) => checked,
            Err(error) => Err(DestinationError::transient(format!(
                "failed to check the topics: {error}"
            ))),
        };
        if let Err(error) = checked {
            drop(close_producer(producer, Duration::ZERO));
            return Err(error);
        }
        if let Some(topic) = &self.status_topic
            && let Err(error) =
                publish_status(&producer, topic, &self.gateway, "online", self.ack_timeout).await
        {
            drop(close_producer(producer, Duration::ZERO));
            return Err(error);
        }
        let pipeline = Pipeline::start(
            Publisher {
                producer: producer.clone(),
                gateway: self.gateway.clone(),
                events_topic: self.events_topic.clone(),
                alerts_topic: self.alerts_topic.clone(),
            },
            self.window,
        );
        Ok(KafkaConnection {
            producer: Some(producer),
            pipeline,
            trouble,
            gateway: self.gateway.clone(),
            status_topic: self.status_topic.clone(),
        })
    }
}

/// Asks the cluster for its metadata: it must answer, and know every topic we write.
fn check_topics(
    producer: &FutureProducer<Context>,
    topics: &[String],
    last_error: &Mutex<Option<String>>,
) -> Result<(), DestinationError> {
    let metadata = producer
        .client()
        .fetch_metadata(None, Timeout::After(METADATA_TIMEOUT))
        .map_err(|error| {
            let cause = last_error
                .lock()
                .ok()
                .and_then(|last| last.clone())
                .map(|cause| format!(" ({cause})"))
                .unwrap_or_default();
            DestinationError::transient(format!("failed to reach the brokers: {error}{cause}"))
        })?;
    for topic in topics {
        let found = metadata.topics().iter().find(|known| known.name() == topic);
        match found {
            Some(known) if known.error().is_none() && !known.partitions().is_empty() => {}
            Some(known) if known.error().is_some() => {
                let code = known.error().map(RDKafkaErrorCode::from);
                return Err(DestinationError::misconfigured(format!(
                    "topic `{topic}` cannot be written: {}",
                    code.map_or_else(String::new, |code| code.to_string())
                )));
            }
            _ => {
                return Err(DestinationError::misconfigured(format!(
                    "topic `{topic}` does not exist on the cluster: create it (its partitions \
                     spread the devices; see docs/configuration.md)"
                )));
            }
        }
    }
    Ok(())
}

/// Produces a status and awaits its delivery report.
async fn publish_status(
    producer: &FutureProducer<Context>,
    topic: &str,
    gateway: &str,
    status: &'static str,
    timeout: Duration,
) -> Result<(), DestinationError> {
    let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
        key: "gateway",
        value: Some(gateway),
    });
    let record = FutureRecord::to(topic)
        .key(gateway)
        .payload(status)
        .headers(headers);
    let delivery = producer.send_result(record).map_err(|(error, _)| {
        DestinationError::transient(format!("failed to publish status: {error}"))
    })?;
    match tokio::time::timeout(timeout, delivery).await {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err((error, _)))) => Err(DestinationError::transient(format!(
            "status was not delivered: {error}"
        ))),
        Ok(Err(_)) => Err(DestinationError::transient(
            "status was not delivered: the producer closed",
        )),
        Err(_) => Err(DestinationError::transient(format!(
            "status was not delivered within {timeout:?}"
        ))),
    }
}

/// Flushes for at most `grace` and destroys the producer, off the async threads: librdkafka's
/// destroy waits for its own threads. The publisher task, stopped, lets go of its handle
/// shortly; this waits for that (up to a second) so that the destroy happens here.
fn close_producer(producer: Arc<FutureProducer<Context>>, grace: Duration) -> JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        if !grace.is_zero() {
            let _ = producer.flush(Timeout::After(grace));
        }
        let mut producer = producer;
        for _ in 0..100 {
            match Arc::try_unwrap(producer) {
                Ok(last) => {
                    drop(last);
                    return;
                }
                Err(shared) => {
                    producer = shared;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    })
}

/// A live Kafka producer.
pub struct KafkaConnection {
    producer: Option<Arc<FutureProducer<Context>>>,
    pipeline: Pipeline,
    trouble: mpsc::UnboundedReceiver<String>,
    gateway: String,
    status_topic: Option<String>,
}

impl std::fmt::Debug for KafkaConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConnection").finish_non_exhaustive()
    }
}

impl Drop for KafkaConnection {
    fn drop(&mut self) {
        if let Some(producer) = self.producer.take() {
            // The pipeline holds a clone: abort it first so that this is the last.
            self.pipeline.stop();
            drop(close_producer(producer, Duration::ZERO));
        }
    }
}

impl Connection for KafkaConnection {
    fn offer(&mut self, message: Outgoing) -> Result<(), DestinationError> {
        self.pipeline.offer(message)
    }

    async fn next(&mut self) -> Result<Confirmation, DestinationError> {
        tokio::select! {
            confirmation = self.pipeline.next() => confirmation,
            Some(trouble) = self.trouble.recv() => Err(DestinationError::transient(trouble)),
        }
    }

    async fn close(mut self, grace: Duration) -> Vec<Confirmation> {
        let deadline = tokio::time::Instant::now() + grace;
        let confirmed = self.pipeline.drain(grace).await;
        if let (Some(topic), Some(producer)) = (self.status_topic.take(), &self.producer) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let _ = publish_status(producer, &topic, &self.gateway, "offline", left).await;
        }
        if let Some(producer) = self.producer.take() {
            self.pipeline.stop();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let _ = close_producer(producer, left).await;
        }
        confirmed
    }
}

/// Produces each row to its lane's topic; its delivery report confirms it.
struct Publisher {
    producer: Arc<FutureProducer<Context>>,
    gateway: String,
    events_topic: Option<String>,
    alerts_topic: Option<String>,
}

impl Publish for Publisher {
    async fn publish(&self, message: Outgoing) -> Published {
        let tag = message.tag;
        let topic = match message.lane {
            Lane::Events => self.events_topic.as_deref(),
            Lane::Alerts => self.alerts_topic.as_deref(),
        };
        let Some(topic) = topic else {
            // The driver routes only the lanes the uplink takes.
            return Published::Settled(Ok(Confirmation::Rejected(
                tag,
                Rejection {
                    kind: RejectionKind::Permanent,
                    reason: "this uplink takes no such lane".to_owned(),
                },
            )));
        };
        let id = crate::sinks::message_key(message.lane, &message.row.payload);
        let mut headers = OwnedHeaders::new_with_capacity(2);
        if let Some(id) = &id {
            headers = headers.insert(Header {
                key: "id",
                value: Some(id.as_str()),
            });
        }
        headers = headers.insert(Header {
            key: "gateway",
            value: Some(self.gateway.as_str()),
        });
        let mut record = FutureRecord::to(topic)
            .key(message.row.device.as_str())
            .payload(message.row.payload.as_slice())
            .headers(headers);
        // A full queue is back-pressure, not a failure: wait for librdkafka to free room.
        let mut waited = 0;
        let sent = loop {
            match self.producer.send_result(record) {
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if waited < QUEUE_FULL_WAITS =>
                {
                    record = back;
                    waited += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                sent => break sent,
            }
        };
        match sent {
            Ok(delivery) => Published::Sent(Box::pin(async move {
                match delivery.await {
                    Ok(Ok(_)) => Ok(Confirmation::Confirmed(tag)),
                    Ok(Err((error, _))) => Ok(Confirmation::Rejected(tag, rejection(&error))),
                    Err(_) => Err(DestinationError::transient("the producer closed")),
                }
            })),
            Err((error, _)) if is_permanent(&error) => {
                Published::Settled(Ok(Confirmation::Rejected(tag, rejection(&error))))
            }
            Err((error, _)) => Published::Settled(Err(DestinationError::transient(format!(
                "failed to produce: {error}"
            )))),
        }
    }
}

/// Whether librdkafka or the broker refuses the record itself, so that sending it again
/// cannot succeed.
fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// What a failed delivery report means.
fn rejection(error: &KafkaError) -> Rejection {
    Rejection {
        kind: if is_permanent(error) {
            RejectionKind::Permanent
        } else {
            RejectionKind::Retryable
        },
        reason: error.to_string(),
    }
}

/// Hears librdkafka: its log goes to ours, and a loss of every broker or a fatal error ends
/// the connection.
struct Context {
    events: mpsc::UnboundedSender<String>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                tracing::debug!(facility, "librdkafka: {message}");
            }
            _ => tracing::trace!(facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let text = format!("{error}: {reason}");
        tracing::debug!("librdkafka: {text}");
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(reason.to_owned());
        }
        let ends = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::Fatal)
        );
        if ends {
            let _ = self.events.send(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SaslMechanism, UplinkType, UplinkUrl};

    fn uplink() -> UplinkConfig {
        let url = UplinkUrl {
            kind: UplinkType::Kafka,
            tls: false,
            host: "kafka-1".into(),
            port: 9092,
            vhost: None,
        };
        let mut uplink = UplinkConfig::new(url.clone(), "gw-1");
        uplink.brokers = vec![
            url,
            UplinkUrl {
                kind: UplinkType::Kafka,
                tls: false,
                host: "::1".into(),
                port: 9093,
                vhost: None,
            },
        ];
        uplink
    }

    #[test]
    fn the_producer_is_idempotent_and_never_expires_a_record() {
        let config = client_config(&uplink(), "gw-1", None);
        assert_eq!(
            config.get("bootstrap.servers"),
            Some("kafka-1:9092,[::1]:9093")
        );
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("message.timeout.ms"), Some("0"));
        assert_eq!(config.get("message.max.bytes"), Some("1000000"));
        assert_eq!(
            config.get("queue.buffering.max.messages"),
            Some("576"),
            "room for twice the window: reports served are freed a little later"
        );
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
        assert_eq!(config.get("sasl.mechanism"), None);
        assert_eq!(config.get("linger.ms"), None, "librdkafka's own default");
    }

    #[test]
    fn batch_tunes_the_producers_own_batches() {
        let mut batched = uplink();
        batched.batch = Some(crate::config::Batch {
            max_events: 500,
            max_bytes: 128 * 1024,
            max_delay: std::time::Duration::from_millis(20),
        });
        let config = client_config(&batched, "gw-1", None);
        assert_eq!(config.get("batch.num.messages"), Some("500"));
        assert_eq!(config.get("batch.size"), Some("131072"));
        assert_eq!(config.get("linger.ms"), Some("20"));
        assert_eq!(batched.window(), 256, "records are counted one by one");
    }

    #[test]
    fn tls_and_sasl_map_to_the_security_protocol() {
        let mut tls = uplink();
        tls.url.tls = true;
        tls.ca_file = Some("/etc/edge/ca.pem".into());
        let config = client_config(&tls, "gw-1", None);
        assert_eq!(config.get("security.protocol"), Some("ssl"));
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/edge/ca.pem"));

        let mut sasl = tls;
        sasl.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        sasl.username = Some("site-a".into());
        let config = client_config(&sasl, "gw-1", Some("secret"));
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("site-a"));
        assert_eq!(config.get("sasl.password"), Some("secret"));

        sasl.url.tls = false;
        sasl.sasl_mechanism = Some(SaslMechanism::Plain);
        let config = client_config(&sasl, "gw-1", Some("secret"));
        assert_eq!(config.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(config.get("sasl.mechanism"), Some("PLAIN"));
    }

    #[test]
    fn only_a_record_the_broker_can_never_take_is_refused_for_good() {
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(rejection(&too_large).kind, RejectionKind::Permanent);
        let invalid = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord);
        assert_eq!(rejection(&invalid).kind, RejectionKind::Permanent);
        for code in [
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::Fatal,
            RDKafkaErrorCode::PurgeQueue,
        ] {
            let error = KafkaError::MessageProduction(code);
            assert_eq!(rejection(&error).kind, RejectionKind::Retryable, "{code:?}");
        }
    }
}
