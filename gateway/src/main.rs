//! The `edge-gateway` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use edge_gateway::config;

/// Carries sensor events from devices to the cloud through a durable journal.
#[derive(Debug, Parser)]
#[command(name = "edge-gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway service.
    Run {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file: exit 0 if valid, else print `file:line:col: message` lines
    /// and exit 2.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Look into the journal (works while the gateway runs).
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Work with the alert rules of a configuration.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Run everything on this machine with embedded defaults: a gateway, a "cloud" broker and
    /// simulated devices.
    Demo(edge_gateway::demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Replay recorded events (JSON Lines, one event per line with its `ts`) through the rules
    /// and print each alert transition. Exit 0; 1 if some lines could not be replayed; 2 if the
    /// configuration has problems.
    Test {
        /// The configuration file with the `[[rule]]` tables.
        #[arg(long, short)]
        config: PathBuf,
        /// The recorded events.
        #[arg(long, short)]
        events: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum JournalCommand {
    /// Rows, bytes, oldest age and rows per device.
    Stats {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The oldest buffered events and the latest dead letters.
    Inspect {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// How many of each to show.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match config::load(&config) {
            Ok(checked) => {
                for warning in &checked.warnings {
                    eprintln!("{warning}");
                }
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::from(2)
            }
        },
        Command::Run { config: path } => {
            let config = match config::load(&path) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::from(2);
                }
            };
            report(run(config, path))
        }
        Command::Journal { command } => report(journal(command)),
        Command::Rules {
            command: RulesCommand::Test { config, events },
        } => rules_test(&config, &events),
        Command::Demo(args) => report(demo(args)),
    }
}

fn rules_test(config_path: &std::path::Path, events_path: &std::path::Path) -> ExitCode {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let events = match std::fs::read_to_string(events_path) {
        Ok(events) => events,
        Err(error) => {
            eprintln!("error: failed to read {}: {error}", events_path.display());
            return ExitCode::FAILURE;
        }
    };
    let rules = config.rules.len();
    let result = edge_gateway::rules::replay::replay(config.rules, &events);
    print!(
        "{}",
        edge_gateway::rules::replay::render(&config.gateway.id, &result.transitions)
    );
    for error in &result.errors {
        eprintln!(
            "{}:{}: {}",
            events_path.display(),
            error.line,
            error.message
        );
    }
    println!(
        "{} events through {rules} rules: {} alert transitions",
        result.events,
        result.transitions.len()
    );
    if result.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn,rumqttc=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The async runtime, with `worker_threads` threads, or one per core.
fn runtime(worker_threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    // TLS for the uplink uses ring: lean to build, fast enough for a gateway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = worker_threads {
        builder.worker_threads(threads);
    }
    builder
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

fn run(config: config::Config, config_path: std::path::PathBuf) -> anyhow::Result<()> {
    init_logging();
    runtime(Some(config.gateway.worker_threads))?.block_on(async {
        edge_gateway::app::run(config, Some(config_path), shutdown_signal()).await?;
        Ok(())
    })
}

fn demo(args: edge_gateway::demo::DemoArgs) -> anyhow::Result<()> {
    init_logging();
    // The demo runs the cloud broker and the devices in the same process: a thread per core.
    runtime(None)?.block_on(edge_gateway::demo::run(args, shutdown_signal()))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn journal(command: JournalCommand) -> anyhow::Result<()> {
    let (config_path, limit) = match &command {
        JournalCommand::Stats { config } => (config, None),
        JournalCommand::Inspect { config, limit } => (config, Some(*limit)),
    };
    let config = config::load(config_path).map_err(|error| anyhow::anyhow!("{error}"))?;
    let path = config.journal_path();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    match limit {
        None => {
            let summary = edge_gateway::journal::summarize(&path, &config.destination_routes())?;
            println!("journal:      {}", path.display());
            println!("rows:         {}", summary.rows);
            println!("alerts:       {}", summary.alerts);
            println!("bytes:        {}", summary.file_bytes);
            match summary.oldest_received_at_ms {
                Some(at) => println!("oldest age:   {:.1}s", (now_ms - at).max(0) as f64 / 1000.0),
                None => println!("oldest age:   -"),
            }
            println!("dead letters: {}", summary.dead_letters);
            println!("per uplink (rows not yet confirmed):");
            for uplink in &summary.destinations {
                let age = uplink.oldest_received_at_ms.map_or_else(
                    || "-".to_owned(),
                    |at| format!("{:.1}s", (now_ms - at).max(0) as f64 / 1000.0),
                );
                println!(
                    "  {:<24} events {:<10} alerts {:<8} oldest age {age}",
                    uplink.name, uplink.events, uplink.alerts
                );
            }
            if !summary.per_device.is_empty() {
                println!("per device:");
                for (device, rows) in &summary.per_device {
                    println!("  {device:<40} {rows}");
                }
            }
        }
        Some(limit) => {
            let inspection = edge_gateway::journal::inspect(&path, limit)?;
            println!("oldest {} buffered alerts:", inspection.alerts.len());
            for alert in &inspection.alerts {
                let age = (now_ms - alert.received_at_ms).max(0) as f64 / 1000.0;
                println!(
                    "  #{} {} age {age:.1}s {}",
                    alert.id,
                    alert.device,
                    String::from_utf8_lossy(&alert.payload)
                );
            }
            println!("oldest {} buffered events:", inspection.events.len());
            for event in &inspection.events {
                let age = (now_ms - event.received_at_ms).max(0) as f64 / 1000.0;
                println!(
                    "  #{} {} age {age:.1}s {}",
                    event.id,
                    event.device,
                    String::from_utf8_lossy(&event.payload)
                );
            }
            println!("latest {} dead letters:", inspection.dead_letters.len());
            for letter in &inspection.dead_letters {
                println!(
                    "  {} {} [{}] {}",
                    letter.received_at_ms, letter.topic, letter.reason, letter.detail
                );
            }
        }
    }
    Ok(())
}
