//! `edge-sim`: run simulated devices against an Edge Gateway, over MQTT or serial lines.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use edge_sim::mqtt::{DeviceConfig, Format, run_device};
use edge_sim::serial_device::{SerialDevice, SerialDeviceConfig};

/// Simulated devices publishing events over MQTT (the default), or speaking the serial link on
/// ptys (`--serial-dir`) or on a tty (`--tty`).
#[derive(Debug, Parser)]
#[command(name = "edge-sim", version, about)]
struct Args {
    /// Broker host (the gateway's device broker).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Number of devices.
    #[arg(long, default_value_t = 5)]
    devices: usize,
    /// Milliseconds between a device's events.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Events per device, then stop (default: run until interrupted).
    #[arg(long)]
    count: Option<u32>,
    /// Payload encoding.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Device name prefix.
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Serial instead of MQTT: each device gets a pty, reachable at DIR/{name}; point the
    /// gateway's `[[serial]] port` entries there.
    #[arg(long, value_name = "DIR", conflicts_with = "tty")]
    serial_dir: Option<PathBuf>,
    /// Serial instead of MQTT: one device on this tty (e.g. a USB serial adapter wired to the
    /// gateway's port).
    #[arg(long, value_name = "PATH")]
    tty: Option<PathBuf>,
    /// Serial: the line's baud rate (the device writes no faster than a UART at this rate).
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// Serial: probability that a byte on the line is corrupted, both ways (0 to 1).
    #[arg(long)]
    noise: Option<f64>,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as u32)
        .unwrap_or(1);
    if args.serial_dir.is_some() || args.tty.is_some() {
        if let Err(error) = run_serial(&args, boot).await {
            eprintln!("edge-sim: {error}");
            std::process::exit(1);
        }
        return;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..args.devices)
        .map(|index| {
            let config = DeviceConfig {
                name: format!("{}-{index}", args.prefix),
                index,
                host: args.host.clone(),
                port: args.port,
                interval: Duration::from_millis(args.interval_ms),
                count: args.count,
                format: args.format,
                boot,
            };
            tokio::spawn(run_device(config, stopped.clone()))
        })
        .collect();
    let all = async {
        let mut acked = 0;
        for task in tasks {
            acked += task.await.unwrap_or(0);
        }
        acked
    };
    tokio::pin!(all);
    let acked = tokio::select! {
        acked = &mut all => acked,
        _ = tokio::signal::ctrl_c() => {
            let _ = stop.send(true);
            all.await
        }
    };
    println!("{acked} events acknowledged");
}

/// Runs serial devices until Ctrl-C (or until each has sent `--count` events and had them all
/// acknowledged).
async fn run_serial(args: &Args, boot: u32) -> std::io::Result<()> {
    let mut devices = Vec::new();
    let count = if args.tty.is_some() { 1 } else { args.devices };
    for index in 0..count {
        let name = format!("{}-serial-{index}", args.prefix);
        let mut config =
            SerialDeviceConfig::new(&name, index, boot, Duration::from_millis(args.interval_ms));
        config.count = args.count;
        config.noise = args.noise;
        config.baud = Some(args.baud);
        let device = match (&args.tty, &args.serial_dir) {
            (Some(tty), _) => SerialDevice::spawn_on_tty(config, tty, args.baud)?,
            (None, Some(dir)) => {
                std::fs::create_dir_all(dir)?;
                SerialDevice::spawn(config, &dir.join(&name))?
            }
            (None, None) => return Ok(()),
        };
        println!("{name}: [[serial]] port = \"{}\"", device.link().display());
        devices.push(device);
    }
    let done = async {
        loop {
            let finished = args.count.is_some_and(|count| {
                devices.iter().all(|device| {
                    let stats = device.stats();
                    stats.produced >= u64::from(count) && stats.pending == 0
                })
            });
            if finished {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = done => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    for device in devices {
        let name = device.link().display().to_string();
        let stats = device.stop();
        println!(
            "{name}: {} events, {} acknowledged, {} pending, {} resent, {} dropped (outbox full)",
            stats.produced,
            stats.link.acked,
            stats.pending,
            stats.link.retransmitted,
            stats.link.dropped_full
        );
    }
    Ok(())
}
