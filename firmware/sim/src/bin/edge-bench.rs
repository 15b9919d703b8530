//! `edge-bench`: drives a forwarder (the gateway, or a Mosquitto bridge) with simulated devices
//! and measures what consumers at the far end receive: on the cloud MQTT broker, on a NATS
//! JetStream stream, on a RabbitMQ queue, on a Kafka topic (the last three with the `nats`,
//! `amqp` and `kafka` features). The `bare-*` commands publish the gateway's messages straight to
//! NATS, RabbitMQ or Kafka with the gateway's guarantee, as the reference the gateway is
//! measured against; `kafka-cluster` serves librdkafka's mock cluster on loopback.
//!
//! Every result is printed as one line, `result name=… value=… unit=…`, for scripts to read
//! (`scripts/bench.sh`, `scripts/bench-uplinks.sh`); a consumer's results end in `via=mqtt`,
//! `via=nats`, `via=amqp` or `via=kafka`. Everything else goes to stderr.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use edge_sim::bench::mqtt::MqttConsumerConfig;
use edge_sim::bench::{Consumer, FleetConfig, Pace, now_us, quantile, run_fleet};

/// What to do when the binary was built without a backbone's feature.
#[cfg(not(all(feature = "nats", feature = "amqp", feature = "kafka")))]
const NOT_BUILT: &str = "edge-bench was built without this backbone: \
                         cargo build --release -p edge-sim --features nats,amqp,kafka --bin edge-bench";

/// Load generator and measuring subscriber for forwarding benchmarks.
#[derive(Debug, Parser)]
#[command(name = "edge-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish as fast as the device broker acknowledges; report the rate at the consumers.
    Saturate {
        #[command(flatten)]
        devices: DeviceArgs,
        #[command(flatten)]
        cloud: CloudArgs,
        /// Events in total, spread evenly over the devices.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
    },
    /// Publish at a fixed total rate; report the latency percentiles at the consumers.
    Latency {
        #[command(flatten)]
        devices: DeviceArgs,
        #[command(flatten)]
        cloud: CloudArgs,
        /// Events per second, all devices together.
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        /// How long to publish.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// `saturate` without the gateway: one bare client publishes the gateway's messages to the
    /// NATS stream or the AMQP exchange (whichever is given), awaiting each confirmation with at
    /// most `--window` in flight.
    BareSaturate {
        #[command(flatten)]
        bare: BareArgs,
        #[command(flatten)]
        cloud: CloudArgs,
        /// Events in total.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
    },
    /// `latency` without the gateway: the bare client publishes at a fixed rate.
    BareLatency {
        #[command(flatten)]
        bare: BareArgs,
        #[command(flatten)]
        cloud: CloudArgs,
        /// Events per second.
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        /// How long to publish.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Delete AMQP queues and the exchange a benchmark declared.
    AmqpDelete {
        /// The broker.
        #[arg(long, default_value = "amqp://127.0.0.1:5672")]
        amqp_url: String,
        /// The exchange to delete.
        #[arg(long)]
        exchange: String,
        /// A queue to delete (repeatable).
        #[arg(long)]
        queue: Vec<String>,
    },
    /// Publish only (nobody listens at the cloud): builds a backlog in the forwarder.
    Fill {
        #[command(flatten)]
        devices: DeviceArgs,
        /// Events in total, spread evenly over the devices.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Events per second, all devices together (default: as fast as the broker acks).
        #[arg(long)]
        rate: Option<u64>,
    },
    /// Subscribe only (on the cloud MQTT broker), and time the arrival of `events` distinct
    /// events of `--boot`.
    ///
    /// Prints `ready` once subscribed. With `--session`, the subscription survives a restart of
    /// the cloud broker, so the subscriber can be started before the broker is stopped.
    Drain {
        #[command(flatten)]
        cloud: CloudArgs,
        /// Distinct events to wait for.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// The boot the events were published with (`fill --boot`).
        #[arg(long)]
        boot: u32,
        /// Client id of a persistent session.
        #[arg(long)]
        session: Option<String>,
        /// Seconds to wait for the first event.
        #[arg(long, default_value_t = 3600)]
        first_within: u64,
    },
    /// One serial device (the device core) on a pty at `--link`, writing no faster than a UART
    /// at `--baud`, with its outbox kept full: reports the events/s the gateway acknowledged,
    /// against the line's theoretical frame rate.
    Serial {
        /// Where to create the pty (the gateway's `[[serial]] port`).
        #[arg(long)]
        link: std::path::PathBuf,
        /// The line rate to hold the device to (8N1: baud / 10 bytes per second).
        #[arg(long, default_value_t = 115_200)]
        baud: u32,
        /// Events to send.
        #[arg(long, default_value_t = 5_000)]
        events: u32,
        /// Seconds to wait for the gateway to open the port.
        #[arg(long, default_value_t = 30)]
        connect_within: u64,
    },
    /// Print the encoded sizes of a typical event: as a serial frame, as MQTT CBOR, as JSON.
    Sizes,
    /// Print an unused TCP port on 127.0.0.1.
    FreePort,
    /// Serve librdkafka's mock Kafka cluster on 127.0.0.1 until killed; prints
    /// `bootstrap=host:port,…` once it listens.
    KafkaCluster {
        /// Brokers in the cluster.
        #[arg(long, default_value_t = 3)]
        brokers: i32,
        /// Topics to create, comma-separated.
        #[arg(long)]
        topics: String,
        /// Partitions of each topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
    },
}

#[derive(Debug, Args)]
struct DeviceArgs {
    /// Device broker host.
    #[arg(long, default_value = "127.0.0.1")]
    device_host: String,
    /// Device broker port.
    #[arg(long)]
    device_port: u16,
    /// Simulated devices, each with its own MQTT connection.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Device name prefix (names are `{prefix}-{index}`).
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Boot sent with every event (default: derived from the clock, so runs do not mix).
    #[arg(long)]
    boot: Option<u32>,
}

#[derive(Debug, Args)]
struct BareArgs {
    /// The gateway id the messages name, as in the gateway's `[gateway] id`.
    #[arg(long, default_value = "bench-gw")]
    gateway: String,
    /// Device names the events are spread over.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Device name prefix (names are `{prefix}-{index}`).
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Boot sent with every event (default: derived from the clock, so runs do not mix).
    #[arg(long)]
    boot: Option<u32>,
    /// Publishes awaiting their confirmation at most: the gateway's `max_inflight`.
    #[arg(long, default_value_t = 256)]
    window: usize,
}

/// Where the consumers are: any of the cloud MQTT broker, a NATS stream, a RabbitMQ exchange
/// (one consumer on each given).
#[derive(Debug, Args)]
struct CloudArgs {
    /// Cloud MQTT broker host.
    #[arg(long, default_value = "127.0.0.1")]
    cloud_host: String,
    /// Cloud MQTT broker port: consume there.
    #[arg(long)]
    cloud_port: Option<u16>,
    /// Topic filter on the cloud broker: `edge/#` behind the gateway, `devices/#` behind a
    /// bridge.
    #[arg(long, default_value = "edge/#")]
    filter: String,
    /// NATS server (`nats://host:port`): consume from the JetStream stream `--stream` there.
    #[arg(long)]
    nats_url: Option<String>,
    /// The JetStream stream (created with subjects `{subject-prefix}.>` if missing).
    #[arg(long, default_value = "EDGE")]
    stream: String,
    /// The uplink's `subject_prefix`.
    #[arg(long, default_value = "edge")]
    subject_prefix: String,
    /// RabbitMQ (`amqp://host:port`): consume from `--queue`, bound to `--exchange`, there.
    #[arg(long)]
    amqp_url: Option<String>,
    /// The uplink's `exchange` (durable, topic; declared if missing).
    #[arg(long, default_value = "edge")]
    exchange: String,
    /// The durable queue to declare, bind and consume from; deleted at the end (default:
    /// `edge-bench-{pid}`).
    #[arg(long)]
    queue: Option<String>,
    /// Kafka bootstrap brokers (`host:port,…`): consume from `--kafka-topic` there.
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// The uplink's events `topic`.
    #[arg(long, default_value = "edge.events")]
    kafka_topic: String,
}

impl DeviceArgs {
    fn fleet(&self) -> FleetConfig {
        FleetConfig {
            host: self.device_host.clone(),
            port: self.device_port,
            devices: self.devices.max(1),
            prefix: self.prefix.clone(),
            boot: self.boot.unwrap_or_else(clock_boot),
        }
    }
}

impl CloudArgs {
    fn mqtt(&self, boot: u32, session: Option<String>) -> anyhow::Result<MqttConsumerConfig> {
        let Some(port) = self.cloud_port else {
            bail!("--cloud-port is required");
        };
        Ok(MqttConsumerConfig {
            host: self.cloud_host.clone(),
            port,
            filter: self.filter.clone(),
            boot,
            session,
        })
    }

    fn queue(&self) -> String {
        self.queue
            .clone()
            .unwrap_or_else(|| format!("edge-bench-{}", std::process::id()))
    }

    /// Starts a consumer on every backbone given; returns once each is ready to count.
    async fn consumers(&self, boot: u32) -> anyhow::Result<Consumers> {
        let mut consumers = Vec::new();
        if self.cloud_port.is_some() {
            consumers.push(edge_sim::bench::mqtt::consume(self.mqtt(boot, None)?).await?);
        }
        if let Some(url) = &self.nats_url {
            consumers.push(nats_consumer(self, url, boot).await?);
        }
        if let Some(url) = &self.amqp_url {
            consumers.push(amqp_consumer(self, url, boot).await?);
        }
        if let Some(brokers) = &self.kafka_brokers {
            consumers.push(kafka_consumer(self, brokers, boot).await?);
        }
        if consumers.is_empty() {
            bail!("no consumer: give --cloud-port, --nats-url, --amqp-url or --kafka-brokers");
        }
        Ok(Consumers {
            consumers,
            amqp_queue: self
                .amqp_url
                .as_ref()
                .map(|url| (url.clone(), self.queue())),
            exchange: self.exchange.clone(),
        })
    }
}

/// The consumers of one command.
struct Consumers {
    consumers: Vec<Consumer>,
    /// The AMQP queue declared for the run, deleted at the end.
    amqp_queue: Option<(String, String)>,
    exchange: String,
}

impl Consumers {
    /// Waits until each consumer has `events` distinct events, or none came for a while.
    async fn wait_for(&self, events: u64) {
        for consumer in &self.consumers {
            consumer
                .wait_for(events, Duration::from_secs(60), Duration::from_secs(30))
                .await;
        }
    }

    /// Deletes the AMQP queue, if any.
    async fn finish(self) -> anyhow::Result<()> {
        match self.amqp_queue {
            Some((url, queue)) => amqp_delete(&url, &self.exchange, &[queue], false).await,
            None => Ok(()),
        }
    }
}

#[cfg(feature = "nats")]
fn nats_config(cloud: &CloudArgs, url: &str) -> edge_sim::bench::nats::NatsConfig {
    edge_sim::bench::nats::NatsConfig {
        url: url.to_owned(),
        stream: cloud.stream.clone(),
        subject_prefix: cloud.subject_prefix.clone(),
    }
}

#[cfg(feature = "nats")]
async fn nats_consumer(cloud: &CloudArgs, url: &str, boot: u32) -> anyhow::Result<Consumer> {
    edge_sim::bench::nats::consume(&nats_config(cloud, url), boot).await
}

#[cfg(not(feature = "nats"))]
async fn nats_consumer(_: &CloudArgs, _: &str, _: u32) -> anyhow::Result<Consumer> {
    bail!(NOT_BUILT)
}

#[cfg(feature = "amqp")]
fn amqp_config(url: &str, exchange: &str) -> edge_sim::bench::amqp::AmqpConfig {
    edge_sim::bench::amqp::AmqpConfig {
        url: url.to_owned(),
        exchange: exchange.to_owned(),
    }
}

#[cfg(feature = "amqp")]
async fn amqp_consumer(cloud: &CloudArgs, url: &str, boot: u32) -> anyhow::Result<Consumer> {
    let config = amqp_config(url, &cloud.exchange);
    edge_sim::bench::amqp::consume(&config, &cloud.queue(), boot).await
}

#[cfg(not(feature = "amqp"))]
async fn amqp_consumer(_: &CloudArgs, _: &str, _: u32) -> anyhow::Result<Consumer> {
    bail!(NOT_BUILT)
}

#[cfg(feature = "amqp")]
async fn amqp_delete(
    url: &str,
    exchange: &str,
    queues: &[String],
    with_exchange: bool,
) -> anyhow::Result<()> {
    edge_sim::bench::amqp::delete(&amqp_config(url, exchange), queues, with_exchange).await
}

#[cfg(not(feature = "amqp"))]
async fn amqp_delete(_: &str, _: &str, _: &[String], _: bool) -> anyhow::Result<()> {
    bail!(NOT_BUILT)
}

#[cfg(feature = "kafka")]
fn kafka_config(cloud: &CloudArgs, brokers: &str) -> edge_sim::bench::kafka::KafkaConfig {
    edge_sim::bench::kafka::KafkaConfig {
        brokers: brokers.to_owned(),
        topic: cloud.kafka_topic.clone(),
    }
}

#[cfg(feature = "kafka")]
async fn kafka_consumer(cloud: &CloudArgs, brokers: &str, boot: u32) -> anyhow::Result<Consumer> {
    edge_sim::bench::kafka::consume(&kafka_config(cloud, brokers), boot).await
}

#[cfg(not(feature = "kafka"))]
async fn kafka_consumer(_: &CloudArgs, _: &str, _: u32) -> anyhow::Result<Consumer> {
    bail!(NOT_BUILT)
}

#[cfg(feature = "kafka")]
async fn bare_kafka(
    cloud: &CloudArgs,
    brokers: &str,
    plan: &edge_sim::bench::bare::BarePlan,
) -> anyhow::Result<edge_sim::bench::bare::BareReport> {
    use edge_sim::bench::kafka::KafkaPublisher;
    let config = kafka_config(cloud, brokers);
    let mut publisher = KafkaPublisher::connect(&config, &plan.gateway, plan.window)?;
    edge_sim::bench::bare::run(&mut publisher, plan).await
}

#[cfg(not(feature = "kafka"))]
async fn bare_kafka(
    _: &CloudArgs,
    _: &str,
    _: &edge_sim::bench::bare::BarePlan,
) -> anyhow::Result<edge_sim::bench::bare::BareReport> {
    bail!(NOT_BUILT)
}

#[cfg(feature = "kafka")]
fn kafka_cluster(brokers: i32, topics: &str, partitions: i32) -> anyhow::Result<()> {
    let topics: Vec<String> = topics.split(',').map(str::to_owned).collect();
    edge_sim::bench::kafka::serve_mock_cluster(brokers, &topics, partitions)
}

#[cfg(not(feature = "kafka"))]
fn kafka_cluster(_: i32, _: &str, _: i32) -> anyhow::Result<()> {
    bail!(NOT_BUILT)
}

/// A boot number that differs between runs a second apart.
fn clock_boot() -> u32 {
    (now_us() / 1_000_000) as u32
}

fn result(name: &str, value: impl std::fmt::Display, unit: &str) {
    println!("result name={name} value={value} unit={unit}");
}

/// A result of one consumer.
fn result_via(name: &str, value: impl std::fmt::Display, unit: &str, via: &str) {
    println!("result name={name} value={value} unit={unit} via={via}");
}

/// The interval between one device's events for a fleet total of `rate` events per second.
fn paced_interval(devices: usize, rate: u64) -> Duration {
    Duration::from_secs_f64(devices.max(1) as f64 / rate.max(1) as f64)
}

fn per_device(events: u64, devices: usize) -> anyhow::Result<u32> {
    let devices = devices.max(1) as u64;
    if !events.is_multiple_of(devices) {
        bail!("--events {events} must be a multiple of --devices {devices}");
    }
    u32::try_from(events / devices).context("too many events per device")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Saturate {
            devices,
            cloud,
            events,
        } => saturate(&devices, &cloud, events).await,
        Command::Latency {
            devices,
            cloud,
            rate,
            seconds,
        } => latency(&devices, &cloud, rate, seconds).await,
        Command::BareSaturate {
            bare,
            cloud,
            events,
        } => bare_run(&bare, &cloud, events, None).await,
        Command::BareLatency {
            bare,
            cloud,
            rate,
            seconds,
        } => bare_run(&bare, &cloud, rate * seconds, Some(rate)).await,
        Command::AmqpDelete {
            amqp_url,
            exchange,
            queue,
        } => amqp_delete(&amqp_url, &exchange, &queue, true).await,
        Command::Fill {
            devices,
            events,
            rate,
        } => fill(&devices, events, rate).await,
        Command::Drain {
            cloud,
            events,
            boot,
            session,
            first_within,
        } => drain(&cloud, events, boot, session, first_within).await,
        Command::Serial {
            link,
            baud,
            events,
            connect_within,
        } => serial(&link, baud, events, Duration::from_secs(connect_within)),
        Command::Sizes => {
            sizes();
            Ok(())
        }
        Command::KafkaCluster {
            brokers,
            topics,
            partitions,
        } => kafka_cluster(brokers, &topics, partitions),
        Command::FreePort => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", listener.local_addr()?.port());
            Ok(())
        }
    }
}

async fn saturate(devices: &DeviceArgs, cloud: &CloudArgs, events: u64) -> anyhow::Result<()> {
    let fleet = devices.fleet();
    let per_device = per_device(events, fleet.devices)?;
    let consumers = cloud.consumers(fleet.boot).await?;
    eprintln!(
        "saturate: {events} events from {} devices to port {}",
        fleet.devices, fleet.port
    );
    let report = run_fleet(&fleet, per_device, Pace::Flat, Duration::from_secs(600)).await?;
    result("saturate_acked", report.acked, "events");
    result(
        "saturate_publish_rate",
        format!("{:.0}", report.acked as f64 / report.elapsed.as_secs_f64()),
        "events/s",
    );
    consumers.wait_for(events).await;
    let complete = report_saturation(&consumers.consumers, events);
    consumers.finish().await?;
    complete
}

async fn latency(
    devices: &DeviceArgs,
    cloud: &CloudArgs,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    let fleet = devices.fleet();
    let events = rate * seconds;
    let per_device = per_device(events, fleet.devices)?;
    let interval = paced_interval(fleet.devices, rate);
    let consumers = cloud.consumers(fleet.boot).await?;
    eprintln!(
        "latency: {rate} events/s for {seconds} s from {} devices to port {}",
        fleet.devices, fleet.port
    );
    let report = run_fleet(
        &fleet,
        per_device,
        Pace::Every(interval),
        Duration::from_secs(seconds + 120),
    )
    .await?;
    result(
        "latency_offered_rate",
        format!("{:.0}", report.sent as f64 / report.elapsed.as_secs_f64()),
        "events/s",
    );
    consumers.wait_for(events).await;
    let complete = report_latency(&consumers.consumers, events);
    consumers.finish().await?;
    complete
}

/// The bare client's run: `rate` paces it (a latency run), `None` saturates.
async fn bare_run(
    bare: &BareArgs,
    cloud: &CloudArgs,
    events: u64,
    rate: Option<u64>,
) -> anyhow::Result<()> {
    let plan = edge_sim::bench::bare::BarePlan {
        gateway: bare.gateway.clone(),
        prefix: bare.prefix.clone(),
        devices: bare.devices.max(1),
        boot: bare.boot.unwrap_or_else(clock_boot),
        events,
        rate,
        window: bare.window.max(1),
    };
    let consumers = cloud.consumers(plan.boot).await?;
    let report = match (&cloud.nats_url, &cloud.amqp_url, &cloud.kafka_brokers) {
        (Some(url), None, None) => bare_nats(cloud, url, &plan).await?,
        (None, Some(url), None) => bare_amqp(cloud, url, &plan).await?,
        (None, None, Some(brokers)) => bare_kafka(cloud, brokers, &plan).await?,
        _ => bail!("give one of --nats-url, --amqp-url and --kafka-brokers for the bare client"),
    };
    let stage = if rate.is_some() {
        "latency"
    } else {
        "saturate"
    };
    result(&format!("{stage}_acked"), report.confirmed, "events");
    result("bare_failed", report.failed, "events");
    if let Some(failure) = &report.first_failure {
        eprintln!("bare: {} refused, the first: {failure}", report.failed);
    }
    let name = if rate.is_some() {
        "latency_offered_rate"
    } else {
        "saturate_publish_rate"
    };
    result(
        name,
        format!("{:.0}", report.sent as f64 / report.elapsed.as_secs_f64()),
        "events/s",
    );
    consumers.wait_for(events).await;
    let complete = if rate.is_some() {
        report_latency(&consumers.consumers, events)
    } else {
        report_saturation(&consumers.consumers, events)
    };
    consumers.finish().await?;
    complete
}

#[cfg(feature = "nats")]
async fn bare_nats(
    cloud: &CloudArgs,
    url: &str,
    plan: &edge_sim::bench::bare::BarePlan,
) -> anyhow::Result<edge_sim::bench::bare::BareReport> {
    use edge_sim::bench::nats::NatsPublisher;
    let config = nats_config(cloud, url);
    let mut publisher = NatsPublisher::connect(&config, &plan.gateway, plan.window).await?;
    eprintln!(
        "bare: {} events to {url} stream {}, window {}",
        plan.events, config.stream, plan.window
    );
    edge_sim::bench::bare::run(&mut publisher, plan).await
}

#[cfg(not(feature = "nats"))]
async fn bare_nats(
    _: &CloudArgs,
    _: &str,
    _: &edge_sim::bench::bare::BarePlan,
) -> anyhow::Result<edge_sim::bench::bare::BareReport> {
    bail!(NOT_BUILT)
}

#[cfg(feature = "amqp")]
async fn bare_amqp(
    cloud: &CloudArgs,
    url: &str,
    plan: &edge_sim::bench::bare::BarePlan,
) -> anyhow::Result<edge_sim::bench::bare::BareReport> {
    use edge_sim::bench::amqp::AmqpPublisher;
    let mut publisher =
        AmqpPublisher::connect(&amqp_config(url, &cloud.exchange), &plan.gateway).await?;
    eprintln!(
        "bare: {} events to {url} exchange {}, window {}",
        plan.events, cloud.exchange, plan.window
    );
    edge_sim::bench::bare::run(&mut publisher, plan).await
}

#[cfg(not(feature = "amqp"))]
async fn bare_amqp(
    _: &CloudArgs,
    _: &str,
    _: &edge_sim::bench::bare::BarePlan,
) -> anyhow::Result<edge_sim::bench::bare::BareReport> {
    bail!(NOT_BUILT)
}

/// Prints what each consumer received of a saturation run; an error if any missed events.
fn report_saturation(consumers: &[Consumer], events: u64) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for consumer in consumers {
        let via = consumer.via();
        let inbox = consumer.lock();
        let span = inbox.span().as_secs_f64();
        result_via("saturate_received", inbox.distinct(), "events", via);
        result_via(
            "saturate_lost",
            events - inbox.distinct().min(events),
            "events",
            via,
        );
        result_via(
            "saturate_duplicates",
            inbox.received() - inbox.distinct(),
            "events",
            via,
        );
        result_via(
            "saturate_rate",
            format!("{:.0}", inbox.distinct() as f64 / span.max(1e-9)),
            "events/s",
            via,
        );
        if inbox.distinct() < events {
            missing.push(format!("{via}: only {} of {events}", inbox.distinct()));
        }
    }
    if !missing.is_empty() {
        bail!("events did not arrive ({})", missing.join(", "));
    }
    Ok(())
}

/// Prints each consumer's latency percentiles; an error if any missed events.
fn report_latency(consumers: &[Consumer], events: u64) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for consumer in consumers {
        let via = consumer.via();
        let inbox = consumer.lock();
        let latencies = inbox.sorted_latencies();
        result_via("latency_received", inbox.distinct(), "events", via);
        result_via(
            "latency_lost",
            events - inbox.distinct().min(events),
            "events",
            via,
        );
        for (name, q) in [
            ("latency_p50", 0.5),
            ("latency_p99", 0.99),
            ("latency_p999", 0.999),
            ("latency_max", 1.0),
        ] {
            result_via(
                name,
                format!("{:.2}", quantile(&latencies, q) / 1000.0),
                "ms",
                via,
            );
        }
        if inbox.distinct() < events {
            missing.push(format!("{via}: only {} of {events}", inbox.distinct()));
        }
    }
    if !missing.is_empty() {
        bail!("events did not arrive ({})", missing.join(", "));
    }
    Ok(())
}

async fn fill(devices: &DeviceArgs, events: u64, rate: Option<u64>) -> anyhow::Result<()> {
    let fleet = devices.fleet();
    let per_device = per_device(events, fleet.devices)?;
    let pace = match rate {
        Some(rate) => Pace::Every(paced_interval(fleet.devices, rate)),
        None => Pace::Flat,
    };
    eprintln!(
        "fill: {events} events from {} devices to port {}, boot {}, rate {}",
        fleet.devices,
        fleet.port,
        fleet.boot,
        rate.map_or_else(|| "unlimited".to_owned(), |rate| format!("{rate}/s"))
    );
    let report = run_fleet(&fleet, per_device, pace, Duration::from_secs(3600)).await?;
    result("fill_acked", report.acked, "events");
    result(
        "fill_publish_rate",
        format!("{:.0}", report.acked as f64 / report.elapsed.as_secs_f64()),
        "events/s",
    );
    if report.acked < events {
        bail!("only {} of {events} events were acknowledged", report.acked);
    }
    Ok(())
}

async fn drain(
    cloud: &CloudArgs,
    events: u64,
    boot: u32,
    session: Option<String>,
    first_within: u64,
) -> anyhow::Result<()> {
    let consumer = edge_sim::bench::mqtt::consume(cloud.mqtt(boot, session)?).await?;
    println!("ready");
    consumer
        .wait_for(
            events,
            Duration::from_secs(first_within),
            Duration::from_secs(60),
        )
        .await;
    let inbox = consumer.lock();
    let span = inbox.span().as_secs_f64();
    result("drain_received", inbox.distinct(), "events");
    result(
        "drain_duplicates",
        inbox.received() - inbox.distinct(),
        "events",
    );
    result("drain_seconds", format!("{span:.2}"), "s");
    result(
        "drain_rate",
        format!("{:.0}", inbox.distinct() as f64 / span.max(1e-9)),
        "events/s",
    );
    if inbox.distinct() < events {
        bail!("only {} of {events} events arrived", inbox.distinct());
    }
    Ok(())
}

/// Runs one saturating serial device and reports its rate against the line's.
fn serial(
    link: &std::path::Path,
    baud: u32,
    events: u32,
    connect_within: Duration,
) -> anyhow::Result<()> {
    use edge_sim::serial_device::{SerialDevice, SerialDeviceConfig};
    let mut config =
        SerialDeviceConfig::new("bench-serial", 0, clock_boot(), Duration::from_millis(1));
    config.count = Some(events);
    config.baud = Some(baud);
    config.saturate = true;
    let device = SerialDevice::spawn(config, link).context("failed to create the pty")?;
    // Time from the first acknowledgement: until then the gateway may still be opening the port.
    let deadline = std::time::Instant::now() + connect_within;
    while device.stats().link.acked == 0 {
        if std::time::Instant::now() > deadline {
            bail!(
                "no acknowledgement within {connect_within:?}: is the gateway reading {}?",
                link.display()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = std::time::Instant::now();
    let first = device.stats();
    loop {
        let stats = device.stats();
        if stats.produced == u64::from(events) && stats.pending == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("not all events acknowledged after 10 minutes: {stats:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = device.stop();
    let acked = f64::from(stats.link.acked - first.link.acked);
    let rate = acked / elapsed;
    let frames = f64::from(stats.link.sent + stats.link.retransmitted + stats.link.hellos);
    let frame_bytes = stats.written as f64 / frames.max(1.0);
    let line_frames = f64::from(baud) / 10.0 / frame_bytes;
    eprintln!(
        "serial at {baud} baud: {acked} events in {elapsed:.2} s; {frame_bytes:.1} bytes per frame; line carries {line_frames:.0} frames/s"
    );
    result("serial_rate", format!("{rate:.0}"), "events/s");
    result("serial_frame_bytes", format!("{frame_bytes:.1}"), "bytes");
    result(
        "serial_line_frames",
        format!("{line_frames:.0}"),
        "frames/s",
    );
    result(
        "serial_line_ratio",
        format!("{:.3}", rate / line_frames),
        "ratio",
    );
    result("serial_retransmitted", stats.link.retransmitted, "events");
    Ok(())
}

/// Sizes of one typical event (three readings, no device clock) in each encoding.
fn sizes() {
    use edge_wire::link::{MAX_FRAME_LEN, Message, Sample, encode_frame};
    let mut readings = edge_wire::Readings::new();
    for (name, value) in [
        ("temp_c", 21.5),
        ("rh", f64::from(40.2f32)),
        ("co2_ppm", 415.0),
    ] {
        let _ = readings.push(name, value);
    }
    let sample = Sample {
        boot: 3_000_000_000,
        seq: 1234,
        ts: None,
        kind: None,
        readings: readings.clone(),
    };
    let mut scratch = vec![0u8; MAX_FRAME_LEN];
    let mut frame = vec![0u8; MAX_FRAME_LEN * 2];
    let framed = encode_frame(&Message::Sample(sample), &mut scratch, &mut frame).unwrap_or(0);
    let event = edge_wire::Event {
        device: "greenhouse-3",
        boot: 3_000_000_000,
        seq: 1234,
        ts: None,
        kind: None,
        readings,
    };
    let mut cbor = vec![0u8; 1024];
    let cbor_len = edge_wire::encode_event(&event, &mut cbor).unwrap_or(0);
    // As a device with a text stack writes it: shortest decimal forms.
    let json = r#"{"device":"greenhouse-3","boot":3000000000,"seq":1234,"readings":{"temp_c":21.5,"rh":40.2,"co2_ppm":415}}"#;
    result("size_serial_frame", framed, "bytes");
    result("size_mqtt_cbor", cbor_len, "bytes");
    result("size_json", json.len(), "bytes");
}
