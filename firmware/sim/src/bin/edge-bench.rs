//! `edge-bench`: drives a forwarder (the gateway, or a Mosquitto bridge) with simulated devices
//! and measures what a cloud subscriber receives.
//!
//! Every result is printed as one line, `result name=… value=… unit=…`, for scripts to read
//! (`scripts/bench.sh`); everything else goes to stderr.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use edge_sim::bench::{
    CloudSubscriber, FleetConfig, Pace, SubscriberConfig, now_us, quantile, run_fleet,
};

/// Load generator and measuring subscriber for forwarding benchmarks.
#[derive(Debug, Parser)]
#[command(name = "edge-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish as fast as the device broker acknowledges; report the rate at the cloud.
    Saturate {
        #[command(flatten)]
        devices: DeviceArgs,
        #[command(flatten)]
        cloud: CloudArgs,
        /// Events in total, spread evenly over the devices.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
    },
    /// Publish at a fixed total rate; report the latency percentiles at the cloud.
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
    /// Subscribe only, and time the arrival of `events` distinct events of `--boot`.
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
struct CloudArgs {
    /// Cloud broker host.
    #[arg(long, default_value = "127.0.0.1")]
    cloud_host: String,
    /// Cloud broker port.
    #[arg(long)]
    cloud_port: u16,
    /// Topic filter on the cloud broker: `edge/#` behind the gateway, `devices/#` behind a
    /// bridge.
    #[arg(long, default_value = "edge/#")]
    filter: String,
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
    fn subscriber(&self, boot: u32, session: Option<String>) -> SubscriberConfig {
        SubscriberConfig {
            host: self.cloud_host.clone(),
            port: self.cloud_port,
            filter: self.filter.clone(),
            boot,
            session,
        }
    }
}

/// A boot number that differs between runs a second apart.
fn clock_boot() -> u32 {
    (now_us() / 1_000_000) as u32
}

fn result(name: &str, value: impl std::fmt::Display, unit: &str) {
    println!("result name={name} value={value} unit={unit}");
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
    let subscriber = CloudSubscriber::start(cloud.subscriber(fleet.boot, None)).await?;
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
    subscriber
        .wait_for(events, Duration::from_secs(60), Duration::from_secs(30))
        .await;
    let inbox = subscriber.lock();
    let span = inbox.span().as_secs_f64();
    result("saturate_received", inbox.distinct(), "events");
    result(
        "saturate_lost",
        events - inbox.distinct().min(events),
        "events",
    );
    result(
        "saturate_duplicates",
        inbox.received() - inbox.distinct(),
        "events",
    );
    result(
        "saturate_rate",
        format!("{:.0}", inbox.distinct() as f64 / span.max(1e-9)),
        "events/s",
    );
    if inbox.distinct() < events {
        bail!("only {} of {events} events arrived", inbox.distinct());
    }
    Ok(())
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
    let subscriber = CloudSubscriber::start(cloud.subscriber(fleet.boot, None)).await?;
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
    subscriber
        .wait_for(events, Duration::from_secs(60), Duration::from_secs(30))
        .await;
    let inbox = subscriber.lock();
    let latencies = inbox.sorted_latencies();
    result("latency_received", inbox.distinct(), "events");
    result(
        "latency_lost",
        events - inbox.distinct().min(events),
        "events",
    );
    for (name, q) in [
        ("latency_p50", 0.5),
        ("latency_p99", 0.99),
        ("latency_p999", 0.999),
        ("latency_max", 1.0),
    ] {
        result(
            name,
            format!("{:.2}", quantile(&latencies, q) / 1000.0),
            "ms",
        );
    }
    if inbox.distinct() < events {
        bail!("only {} of {events} events arrived", inbox.distinct());
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
    let subscriber = CloudSubscriber::start(cloud.subscriber(boot, session)).await?;
    println!("ready");
    subscriber
        .wait_for(
            events,
            Duration::from_secs(first_within),
            Duration::from_secs(60),
        )
        .await;
    let inbox = subscriber.lock();
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
