//! `edge-alerts`: consumes what Edge Gateways publish on the cloud broker and stores it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use edge_alerts::api;
use edge_alerts::consumer::{self, ConsumerConfig, ConsumerStats};
use edge_alerts::store::postgres::PostgresStore;
use edge_alerts::store::sqlite::SqliteStore;
use edge_alerts::store::{Store, StoreError};
use tokio::sync::{broadcast, watch};

/// Consume gateway events, alerts and status from the cloud broker, and store each once.
#[derive(Debug, Parser)]
#[command(name = "edge-alerts", version, about)]
struct Args {
    /// Cloud broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Cloud broker port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// The gateways' topic prefix.
    #[arg(long, default_value = "edge")]
    prefix: String,
    /// Share the subscription with the other instances of this group (scale-out).
    #[arg(long)]
    group: Option<String>,
    /// MQTT client id, unique per instance.
    #[arg(long, default_value = "edge-alerts")]
    client_id: String,
    /// Store in this SQLite file (the default: ./edge-alerts.db).
    #[arg(long, conflicts_with = "postgres")]
    sqlite: Option<PathBuf>,
    /// Store in PostgreSQL, e.g. "host=127.0.0.1 user=postgres dbname=alerts".
    #[arg(long)]
    postgres: Option<String>,
    /// PostgreSQL schema to use (created if missing).
    #[arg(long, requires = "postgres")]
    schema: Option<String>,
    /// Serve the JSON API on this address (ip:port), e.g. 127.0.0.1:9300.
    #[arg(long, requires = "token_file")]
    listen: Option<std::net::SocketAddr>,
    /// A file holding the bearer token the API asks for.
    #[arg(long, requires = "listen")]
    token_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttc=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &args.postgres {
            Some(config) => {
                let store = PostgresStore::connect(config, args.schema.as_deref()).await?;
                serve(&args, store).await
            }
            None => {
                let path = args
                    .sqlite
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("edge-alerts.db"));
                serve(&args, SqliteStore::open(&path)?).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve<S: Store>(args: &Args, store: S) -> Result<(), StoreError> {
    let stats = Arc::new(ConsumerStats::default());
    let (changes, _) = broadcast::channel(1024);
    let (stop, stopped) = watch::channel(false);
    let config = ConsumerConfig {
        host: args.host.clone(),
        port: args.port,
        prefix: args.prefix.clone(),
        group: args.group.clone(),
        client_id: args.client_id.clone(),
    };
    let store = Arc::new(store);
    let task = tokio::spawn(consumer::run(
        config,
        Arc::clone(&store),
        Arc::clone(&stats),
        changes,
        stopped.clone(),
    ));
    if let (Some(listen), Some(token_file)) = (args.listen, &args.token_file) {
        let token = std::fs::read_to_string(token_file)
            .map_err(|error| {
                StoreError::Setup(format!("failed to read {}: {error}", token_file.display()))
            })?
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err(StoreError::Setup(format!(
                "{} holds no token",
                token_file.display()
            )));
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|error| StoreError::Setup(format!("failed to listen on {listen}: {error}")))?;
        let app = api::app(Arc::new(api::Api {
            store: Arc::clone(&store),
            stats: Arc::clone(&stats),
            token,
        }));
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.changed().await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(%error, "API server failed");
            }
        });
        tracing::info!(%listen, "serving the API");
    }
    let mut report = tokio::time::interval(Duration::from_secs(10));
    report.tick().await;
    loop {
        tokio::select! {
            _ = shutdown_signal() => break,
            _ = report.tick() => tracing::info!(
                applied = stats.applied.load(Ordering::Relaxed),
                duplicates = stats.duplicates.load(Ordering::Relaxed),
                refused = stats.refused.load(Ordering::Relaxed),
                store_errors = stats.store_errors.load(Ordering::Relaxed),
                "consumer"
            ),
        }
    }
    let _ = stop.send(true);
    let _ = task.await;
    Ok(())
}

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
