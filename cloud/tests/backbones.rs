//! End to end on NATS JetStream, RabbitMQ (the machine's, on 127.0.0.1:4222 and :5672) and
//! Kafka (librdkafka's mock cluster in this process): the real `edge-alerts` binary, two
//! instances of one group on one PostgreSQL schema, fed exactly as a gateway feeds them —
//! JetStream publishes with `Nats-Msg-Id`, awaiting each PubAck; persistent, mandatory AMQP
//! publishes with `message_id`, awaiting each confirm; Kafka records keyed by device with the
//! `id` and `gateway` headers, from an idempotent producer, awaiting each delivery report.
//!
//! Each test has its own stream and subject prefix, or exchange and queue, and its own schema,
//! all removed at the end (also when it fails).
//!
//! 1. Thousands of events from many devices (ids with dots, escaped in subjects and routing
//!    keys), alerts firing and resolved, a status, and two messages that are not ours: each
//!    stored once, the two refused, both instances at work.
//! 2. One instance frozen, then killed with SIGKILL, while the broker has handed it messages it
//!    never acknowledged: the other takes them over, and nothing is lost.

mod common;

use std::time::Duration;

use common::*;
use edge_schema::{Address, AlertMessage, AlertState, EventFields, encode_event};

/// A message as a gateway sends it: where, its id for the backbone, its payload.
struct Outgoing {
    address: Address<'static>,
    /// `Nats-Msg-Id` / AMQP `message_id`: what makes a message unique, as the store sees it
    /// (an event's id; an alert's id and state, since `firing` and `resolved` share the id).
    id: Option<String>,
    payload: Vec<u8>,
}

const GATEWAY: &str = "site.gw-1";
const DEVICES: u32 = 40;
const EVENTS_PER_DEVICE: u32 = 75;
const ALERTS: u32 = 50;
/// Events and alert transitions in one round.
const PER_ROUND: i64 = (DEVICES * EVENTS_PER_DEVICE + 2 * ALERTS) as i64;

/// One round of a gateway's traffic (its devices in boot `round`): every alert fires, then the
/// events, then every alert resolves.
fn round(round: u32) -> Vec<Outgoing> {
    let alert = |n: u32, state: AlertState| {
        let message = AlertMessage {
            id: format!("{GATEWAY}:alert:{}", round * 1000 + n),
            gateway: GATEWAY.into(),
            rule: "too hot".into(),
            device: format!("greenhouse.{}", n % DEVICES),
            state,
            severity: Some("critical".into()),
            at: i64::from(round * 1_000_000 + n),
            value: Some(36.5),
            event: None,
            labels: None,
        };
        Outgoing {
            address: Address::alerts(GATEWAY),
            id: Some(format!("{}#{}", message.id, state.as_str())),
            payload: serde_json::to_vec(&message).expect("alert JSON"),
        }
    };
    let mut messages: Vec<Outgoing> = (0..ALERTS).map(|n| alert(n, AlertState::Firing)).collect();
    for seq in 0..EVENTS_PER_DEVICE {
        for device in 0..DEVICES {
            let device = format!("greenhouse.{device}");
            let readings = [("temp_c".to_owned(), 20.0 + f64::from(seq) / 10.0)];
            let payload = encode_event(&EventFields {
                gateway: GATEWAY,
                device: &device,
                boot: round,
                seq,
                ts: None,
                received_at: u64::from(seq) + 1,
                readings: &readings,
                kind: None,
            });
            messages.push(Outgoing {
                id: Some(format!("{device}:{round}:{seq}")),
                address: Address::events(GATEWAY, &device).into_owned(),
                payload,
            });
        }
    }
    messages.extend((0..ALERTS).map(|n| alert(n, AlertState::Resolved)));
    messages
}

/// What the scenario needs from a backbone.
trait Backbone {
    /// The `edge-alerts` arguments that consume from it.
    fn args(&self) -> Vec<String>;
    /// Publishes as a gateway does, waiting for the broker to confirm each message. Raw
    /// subjects / routing keys (relative to the prefix) may be given for messages that are not
    /// ours.
    fn publish(&self, messages: &[Outgoing], foreign: &[(&str, &[u8])]);
    /// Whether `count` instances are consuming; `logs` are theirs.
    fn consumers(&self, count: usize, logs: &[String]) -> bool;
    /// How many deliveries the broker has made so far, redeliveries included, if it says.
    fn deliveries(&self) -> Option<u64>;
}

/// The scenario of the module docs, on `backbone`.
fn two_instances_share_the_work_and_survive_a_kill(backbone: &impl Backbone, label: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = PostgresSchema::new(label);
    let args = backbone.args();
    let mut instances: Vec<(Running, u16)> = (0..2)
        .map(|n| {
            let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
            all.extend(["--postgres", POSTGRES, "--schema", &schema.name]);
            edge_alerts_serving(&all, dir.path(), &format!("edge-alerts-{n}"))
        })
        .collect();
    let each_log = || {
        (0..2)
            .map(|n| {
                let log = dir.path().join(format!("edge-alerts-{n}.log"));
                std::fs::read_to_string(log).unwrap_or_default()
            })
            .collect::<Vec<_>>()
    };
    let logs = || each_log().join("\n----\n");
    wait_until("both instances consuming", Duration::from_secs(30), || {
        backbone.consumers(2, &each_log())
    });

    // 1. Both at work, each message stored once.
    let mut first = round(1);
    first.push(Outgoing {
        address: Address::status(GATEWAY),
        id: None,
        payload: b"online".to_vec(),
    });
    backbone.publish(
        &first,
        &[
            ("site%2Egw-1.alerts", b"{not json"),
            // Matches the bindings, but its gateway id is malformed: not ours.
            ("site%2egw-1.alerts", b"{}"),
        ],
    );
    wait_until("the first round stored", Duration::from_secs(60), || {
        schema.count("seen") == PER_ROUND && schema.count("gateways") == 1
    });
    let counters: Vec<ConsumerCounters> = instances
        .iter()
        .map(|(_, api)| consumer_counters(*api))
        .collect();
    let applied: u64 = counters.iter().map(|c| c.applied).sum();
    assert_eq!(
        applied,
        PER_ROUND as u64 + 1,
        "each event and transition, and the status, applied once: {counters:?}\n{}",
        logs()
    );
    wait_until(
        "the two foreign messages refused",
        Duration::from_secs(10),
        || {
            instances
                .iter()
                .map(|(_, api)| consumer_counters(*api).refused)
                .sum::<u64>()
                == 2
        },
    );
    for (n, counter) in counters.iter().enumerate() {
        assert!(
            counter.applied + counter.duplicates > 0,
            "instance {n} did nothing: {counters:?}"
        );
    }
    assert_eq!(schema.count("alerts"), i64::from(ALERTS));
    assert_eq!(
        schema.count_where("alerts", "fired_at IS NOT NULL AND resolved_at IS NOT NULL"),
        i64::from(ALERTS),
        "every alert fired and resolved"
    );
    assert_eq!(
        schema.count("devices"),
        i64::from(DEVICES),
        "devices with dots in their ids, each known under its own id"
    );
    assert_eq!(
        schema.count_where("devices", "device LIKE 'greenhouse.%'"),
        i64::from(DEVICES)
    );

    // 2. Instance 0 frozen: the broker hands it messages it cannot acknowledge; instance 1
    //    takes the rest. Then instance 0 is killed: its messages go to instance 1 (AMQP: when
    //    its connection drops; NATS: when their ack wait has passed).
    let delivered_before = backbone.deliveries();
    signal(&instances[0].0, "STOP");
    backbone.publish(&round(2), &[]);
    let (mut frozen, _) = instances.remove(0);
    signal(&frozen, "KILL");
    let _ = frozen.0.wait();
    wait_until(
        "everything stored after the kill",
        Duration::from_secs(60),
        || schema.count("seen") == 2 * PER_ROUND,
    );
    assert_eq!(
        schema.count_where("alerts", "fired_at IS NOT NULL AND resolved_at IS NOT NULL"),
        i64::from(2 * ALERTS),
        "every alert of both rounds fired and resolved\n{}",
        logs()
    );
    if let (Some(before), Some(after)) = (delivered_before, backbone.deliveries()) {
        assert!(
            after - before > PER_ROUND as u64,
            "some of the second round was delivered twice: {before} then {after}"
        );
    }
    drop(instances);
}

#[test]
fn nats_jetstream_two_instances_share_the_work_and_survive_a_kill() {
    let nats = nats::Nats::new();
    two_instances_share_the_work_and_survive_a_kill(&nats, "nats");
}

#[test]
fn rabbitmq_two_instances_share_the_work_and_survive_a_kill() {
    let amqp = amqp::Amqp::new();
    two_instances_share_the_work_and_survive_a_kill(&amqp, "amqp");
}

#[test]
fn kafka_two_instances_share_the_work_and_survive_a_kill() {
    let kafka = kafka::Kafka::new();
    two_instances_share_the_work_and_survive_a_kill(&kafka, "kafka");
}

mod kafka {
    use std::time::Duration;

    use rdkafka::ClientConfig;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};

    use super::{Backbone, Outgoing};

    const TOPICS: [&str; 3] = ["edge.events", "edge.alerts", "edge.status"];

    /// A mock cluster of three brokers with the gateways' topics, four partitions each.
    pub(super) struct Kafka {
        runtime: tokio::runtime::Runtime,
        _cluster: MockCluster<'static, DefaultProducerContext>,
        bootstrap: String,
        producer: FutureProducer,
    }

    impl Kafka {
        pub(super) fn new() -> Self {
            let cluster = MockCluster::new(3).expect("mock Kafka cluster");
            for topic in TOPICS {
                cluster.create_topic(topic, 4, 3).expect("create topic");
            }
            let bootstrap = cluster.bootstrap_servers();
            let producer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("enable.idempotence", "true")
                .set("message.timeout.ms", "0")
                .create()
                .expect("producer");
            Self {
                runtime: tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime"),
                _cluster: cluster,
                bootstrap,
                producer,
            }
        }
    }

    impl Backbone for Kafka {
        fn args(&self) -> Vec<String> {
            vec![
                "--source".into(),
                format!("kafka://{}", self.bootstrap),
                "--group".into(),
                "alerts".into(),
            ]
        }

        fn publish(&self, messages: &[Outgoing], foreign: &[(&str, &[u8])]) {
            self.runtime.block_on(async {
                let mut reports = Vec::new();
                for message in messages {
                    let gateway = message.address.gateway.to_string();
                    let (topic, key) = match &message.address.lane {
                        edge_schema::Lane::Events { device } => (TOPICS[0], device.to_string()),
                        edge_schema::Lane::Alerts => {
                            let alert: serde_json::Value =
                                serde_json::from_slice(&message.payload).expect("alert JSON");
                            (TOPICS[1], alert["device"].as_str().unwrap_or("").to_owned())
                        }
                        edge_schema::Lane::Status => (TOPICS[2], gateway.clone()),
                        // The NATS uplink sends no batches.
                        edge_schema::Lane::Batch => continue,
                    };
                    let mut headers = OwnedHeaders::new().insert(Header {
                        key: "gateway",
                        value: Some(&gateway),
                    });
                    if let Some(id) = &message.id {
                        headers = headers.insert(Header {
                            key: "id",
                            value: Some(id),
                        });
                    }
                    let record = FutureRecord::to(topic)
                        .key(&key)
                        .payload(&message.payload)
                        .headers(headers);
                    reports.push(self.producer.send_result(record).expect("produce"));
                }
                // Not ours: a routing key's gateway as the header, on the alerts topic.
                for (raw, payload) in foreign {
                    let gateway = raw.split('.').next().unwrap_or("");
                    let headers = OwnedHeaders::new().insert(Header {
                        key: "gateway",
                        value: Some(gateway),
                    });
                    let record = FutureRecord::to(TOPICS[1])
                        .key(gateway)
                        .payload(*payload)
                        .headers(headers);
                    reports.push(self.producer.send_result(record).expect("produce"));
                }
                for report in reports {
                    tokio::time::timeout(Duration::from_secs(30), report)
                        .await
                        .expect("a delivery report")
                        .expect("delivered")
                        .expect("delivered");
                }
            });
        }

        /// Each instance's last rebalance gave it partitions.
        fn consumers(&self, count: usize, logs: &[String]) -> bool {
            logs.len() == count
                && logs.iter().all(|log| {
                    log.lines()
                        .rfind(|line| line.contains("Kafka partitions"))
                        .is_some_and(|line| {
                            line.contains("assigned") && !line.contains("partitions=0")
                        })
                })
        }

        fn deliveries(&self) -> Option<u64> {
            None
        }
    }
}

mod nats {
    use async_nats::HeaderMap;
    use async_nats::jetstream::{self, stream};

    use super::{Backbone, Outgoing};

    const SERVER: &str = "127.0.0.1:4222";
    const GROUP: &str = "alerts";

    /// A stream and subject prefix of the test's own, the stream deleted when dropped.
    pub(super) struct Nats {
        runtime: tokio::runtime::Runtime,
        jetstream: jetstream::Context,
        stream: String,
        prefix: String,
    }

    impl Nats {
        /// Creates the stream as the gateway does: subjects `{prefix}.>`, file storage.
        pub(super) fn new() -> Self {
            let tag = format!("{:08x}", rand::random::<u32>());
            let (stream, prefix) = (format!("EDGE_TEST_{tag}"), format!("edge-test-{tag}"));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let jetstream = runtime.block_on(async {
                let client = async_nats::connect(SERVER)
                    .await
                    .expect("NATS on 127.0.0.1:4222");
                let jetstream = jetstream::new(client);
                jetstream
                    .get_or_create_stream(stream::Config {
                        name: stream.clone(),
                        subjects: vec![format!("{prefix}.>")],
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .expect("create the stream (is JetStream enabled?)");
                jetstream
            });
            Self {
                runtime,
                jetstream,
                stream,
                prefix,
            }
        }

        fn consumer(&self) -> Option<async_nats::jetstream::consumer::Info> {
            self.runtime.block_on(async {
                let stream = self.jetstream.get_stream(&self.stream).await.ok()?;
                stream.consumer_info(GROUP).await.ok()
            })
        }
    }

    impl Backbone for Nats {
        fn args(&self) -> Vec<String> {
            [
                "--source",
                &format!("nats://{SERVER}"),
                "--stream",
                &self.stream,
                "--subject-prefix",
                &self.prefix,
                "--group",
                GROUP,
                "--ack-wait",
                "3s",
            ]
            .map(str::to_owned)
            .to_vec()
        }

        fn publish(&self, messages: &[Outgoing], foreign: &[(&str, &[u8])]) {
            self.runtime.block_on(async {
                let mut acks = Vec::with_capacity(messages.len() + foreign.len());
                let all = messages
                    .iter()
                    .map(|m| {
                        (
                            m.address.nats_subject(&self.prefix),
                            m.id.as_deref(),
                            &m.payload[..],
                        )
                    })
                    .chain(foreign.iter().map(|(subject, payload)| {
                        (format!("{}.{subject}", self.prefix), None, *payload)
                    }));
                for (subject, id, payload) in all {
                    let mut headers = HeaderMap::new();
                    if let Some(id) = id {
                        headers.insert("Nats-Msg-Id", id);
                    }
                    let ack = self
                        .jetstream
                        .publish_with_headers(subject, headers, payload.to_vec().into())
                        .await
                        .expect("publish");
                    acks.push(ack);
                }
                for ack in acks {
                    let ack = ack.await.expect("PubAck");
                    assert!(!ack.duplicate, "every message is new to the stream");
                }
            });
        }

        fn consumers(&self, count: usize, _: &[String]) -> bool {
            self.consumer()
                .is_some_and(|info| info.num_waiting >= count)
        }

        fn deliveries(&self) -> Option<u64> {
            self.consumer().map(|info| info.delivered.consumer_sequence)
        }
    }

    impl Drop for Nats {
        fn drop(&mut self) {
            let _ = self
                .runtime
                .block_on(self.jetstream.delete_stream(&self.stream));
        }
    }
}

mod amqp {
    use lapin::options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

    use super::{Backbone, Outgoing};

    const URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

    /// An exchange and queue of the test's own, both deleted when dropped.
    pub(super) struct Amqp {
        runtime: tokio::runtime::Runtime,
        connection: Connection,
        channel: Channel,
        exchange: String,
        queue: String,
    }

    impl Amqp {
        /// Declares the exchange as the gateway does: durable, topic; publishes with confirms.
        pub(super) fn new() -> Self {
            let tag = format!("{:08x}", rand::random::<u32>());
            let (exchange, queue) = (
                format!("edge-test-{tag}"),
                format!("edge-alerts-test-{tag}"),
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let (connection, channel) = runtime.block_on(async {
                let connection = Connection::connect(URI, ConnectionProperties::default())
                    .await
                    .expect("RabbitMQ on 127.0.0.1:5672");
                let channel = connection.create_channel().await.expect("channel");
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirms");
                channel
                    .exchange_declare(
                        exchange.as_str().into(),
                        ExchangeKind::Topic,
                        ExchangeDeclareOptions {
                            durable: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .expect("declare the exchange");
                (connection, channel)
            });
            Self {
                runtime,
                connection,
                channel,
                exchange,
                queue,
            }
        }
    }

    impl Backbone for Amqp {
        fn args(&self) -> Vec<String> {
            [
                "--source",
                URI,
                "--exchange",
                &self.exchange,
                "--group",
                &self.queue,
            ]
            .map(str::to_owned)
            .to_vec()
        }

        fn publish(&self, messages: &[Outgoing], foreign: &[(&str, &[u8])]) {
            self.runtime.block_on(async {
                let all = messages
                    .iter()
                    .map(|m| {
                        (
                            m.address.amqp_routing_key(),
                            m.id.as_deref(),
                            &m.payload[..],
                        )
                    })
                    .chain(
                        foreign
                            .iter()
                            .map(|(key, payload)| ((*key).to_owned(), None, *payload)),
                    );
                let mut confirms = Vec::with_capacity(messages.len() + foreign.len());
                for (key, id, payload) in all {
                    let mut properties = BasicProperties::default().with_delivery_mode(2);
                    if let Some(id) = id {
                        properties = properties.with_message_id(id.into());
                    }
                    let confirm = self
                        .channel
                        .basic_publish(
                            self.exchange.as_str().into(),
                            key.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..Default::default()
                            },
                            payload,
                            properties,
                        )
                        .await
                        .expect("publish");
                    confirms.push(confirm);
                }
                for confirm in confirms {
                    let confirmation = confirm.await.expect("confirm");
                    assert!(confirmation.is_ack(), "{confirmation:?}");
                    assert!(
                        confirmation.take_message().is_none(),
                        "routed to the consumers' queue"
                    );
                }
            });
        }

        fn consumers(&self, count: usize, _: &[String]) -> bool {
            self.runtime.block_on(async {
                // A passive declaration of a queue not yet there closes its channel: one of
                // its own each time.
                let Ok(channel) = self.connection.create_channel().await else {
                    return false;
                };
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                let declared = channel
                    .queue_declare(self.queue.as_str().into(), passive, FieldTable::default())
                    .await;
                let _ = channel.close(200, "OK".into()).await;
                declared.is_ok_and(|queue| queue.consumer_count() as usize >= count)
            })
        }

        fn deliveries(&self) -> Option<u64> {
            // AMQP does not say: the final count has to do.
            None
        }
    }

    impl Drop for Amqp {
        fn drop(&mut self) {
            self.runtime.block_on(async {
                let _ = self
                    .channel
                    .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
                let _ = self
                    .channel
                    .exchange_delete(
                        self.exchange.as_str().into(),
                        ExchangeDeleteOptions::default(),
                    )
                    .await;
                let _ = self.connection.close(200, "OK".into()).await;
            });
        }
    }
}
