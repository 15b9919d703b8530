//! `edge-sim`: run simulated devices against an Edge Gateway.

use std::time::Duration;

use clap::Parser;
use edge_sim::mqtt::{DeviceConfig, Format, run_device};

/// Simulated devices publishing events over MQTT.
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
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as u32)
        .unwrap_or(1);
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
