//! `edge-alerts`: consumes what Edge Gateways publish on the cloud broker (MQTT, NATS JetStream
//! or AMQP) and stores it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use edge_alerts::api;
use edge_alerts::consumer::{self, ConsumerStats, Outlets, now_ms};
use edge_alerts::notify::{self, NotifyStats, Routes};
use edge_alerts::source::config::{SourceConfig, SourceOptions, parse_duration};
use edge_alerts::store::postgres::PostgresStore;
use edge_alerts::store::sqlite::SqliteStore;
use edge_alerts::store::{Store, StoreError};
use tokio::sync::{Notify, broadcast, watch};

/// Consume gateway events, alerts and status from the cloud broker, and store each once.
#[derive(Debug, Parser)]
#[command(name = "edge-alerts", version, about)]
struct Args {
    /// Where to consume from: mqtt://[user:pass@]host:port, nats://[user:pass@]host:port,
    /// amqp://user:pass@host:port[/vhost] or kafka://[user:pass@]host:port[,host:port...];
    /// over TLS: mqtts://, tls://, amqps:// or kafka+tls://. Without it: MQTT on --host and
    /// --port.
    #[arg(long, conflicts_with_all = ["host", "port"])]
    source: Option<String>,
    /// Cloud broker host (MQTT).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Cloud broker port (MQTT).
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// The gateways' topic prefix (MQTT).
    #[arg(long, default_value = "edge")]
    prefix: String,
    /// The gateways' subject prefix (NATS).
    #[arg(long, default_value = "edge")]
    subject_prefix: String,
    /// The JetStream stream, created if missing (NATS).
    #[arg(long, default_value = "EDGE")]
    stream: String,
    /// How long a message may stay unacknowledged before it is delivered again, when this
    /// instance creates the durable consumer (NATS), e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    ack_wait: Duration,
    /// The topic exchange the gateways publish to, declared if missing (AMQP).
    #[arg(long, default_value = "edge")]
    exchange: String,
    /// The topic of the gateways' events (Kafka).
    #[arg(long, default_value = "edge.events")]
    events_topic: String,
    /// The topic of the gateways' alert transitions (Kafka).
    #[arg(long, default_value = "edge.alerts")]
    alerts_topic: String,
    /// The topic of the gateways' status (Kafka).
    #[arg(long, default_value = "edge.status")]
    status_topic: String,
    /// The SASL mechanism of the login in a kafka:// URL: PLAIN, SCRAM-SHA-256 or
    /// SCRAM-SHA-512 (Kafka).
    #[arg(long)]
    sasl_mechanism: Option<String>,
    /// The instances of a group share the work: the MQTT shared subscription (none: not
    /// shared), the NATS durable consumer, the AMQP queue and the Kafka consumer group (the
    /// last three `edge-alerts` when not given).
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
    /// The CA certificates (PEM) that the broker's certificate (mqtts://, tls://, amqps://) and
    /// PostgreSQL's (sslmode=require) are checked against; without it, the system's.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// PostgreSQL schema to use (created if missing).
    #[arg(long, requires = "postgres")]
    schema: Option<String>,
    /// Serve the JSON API on this address (ip:port), e.g. 127.0.0.1:9300.
    #[arg(long, requires = "token_file")]
    listen: Option<std::net::SocketAddr>,
    /// A file holding the token the dashboard and the API ask for.
    #[arg(long, requires = "listen")]
    token_file: Option<PathBuf>,
    /// The address users reach the dashboard at, e.g. https://alerts.example.com/ (behind a
    /// proxy that terminates TLS): with https, session cookies are `Secure`.
    #[arg(long, requires = "listen")]
    public_url: Option<String>,
    /// The configuration file: webhook routes (`[[route]]`), see docs/cloud.md.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Keep each device's readings this many hours for the charts.
    #[arg(long, default_value_t = 24)]
    history_hours: u32,
    /// Stop when standard input closes (for a parent that starts this service as its child:
    /// it stops with the parent, however the parent ends).
    #[arg(long, hide = true)]
    exit_with_stdin: bool,
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
    // The one TLS provider of this build (webhooks over https).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let routes = match &args.config {
        Some(path) => match Routes::load(path) {
            Ok(routes) => routes,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        },
        None => Routes::default(),
    };
    let routes = Arc::new(routes);
    let options = SourceOptions {
        prefix: args.prefix.clone(),
        subject_prefix: args.subject_prefix.clone(),
        stream: args.stream.clone(),
        ack_wait: args.ack_wait,
        exchange: args.exchange.clone(),
        group: args.group.clone(),
        client_id: args.client_id.clone(),
        ca_file: args.ca_file.clone(),
        kafka_topics: [
            args.events_topic.clone(),
            args.alerts_topic.clone(),
            args.status_topic.clone(),
        ],
        sasl_mechanism: args.sasl_mechanism.clone(),
    };
    let url = args
        .source
        .clone()
        .unwrap_or_else(|| format!("mqtt://{}:{}", args.host, args.port));
    let source = match SourceConfig::from_url(&url, &options) {
        Ok(source) => source,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    // Read once, here, so that a CA file that cannot be used stops the start with its path.
    let tls = if source.uses_tls() || args.ca_file.is_some() {
        match edge_alerts::tls::client_config(args.ca_file.as_deref()) {
            Ok(tls) => Some(tls),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
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
                let store =
                    PostgresStore::connect(config, args.schema.as_deref(), tls.clone()).await?;
                serve(&args, source, tls, store, routes).await
            }
            None => {
                let path = args
                    .sqlite
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("edge-alerts.db"));
                serve(&args, source, tls, SqliteStore::open(&path)?, routes).await
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

async fn serve<S: Store>(
    args: &Args,
    source: SourceConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    store: S,
    routes: Arc<Routes>,
) -> Result<(), StoreError> {
    let stats = Arc::new(ConsumerStats::default());
    let notify_stats = Arc::new(NotifyStats::default());
    let (changes, _) = broadcast::channel(1024);
    let queued = Arc::new(Notify::new());
    let (stop, stopped) = watch::channel(false);
    let store = Arc::new(store);
    let tls = tls.filter(|_| source.uses_tls());
    let task = tokio::spawn(consumer::run(
        source,
        tls,
        Arc::clone(&store),
        Arc::clone(&stats),
        Outlets {
            changes: changes.clone(),
            routes: Arc::clone(&routes),
            queued: Arc::clone(&queued),
        },
        stopped.clone(),
    ));
    // Runs with no routes too: it drains what a previous configuration queued (and drops
    // what no route wants any more, counted).
    let notifier = tokio::spawn(notify::run(
        Arc::clone(&store),
        Arc::clone(&routes),
        Arc::clone(&notify_stats),
        queued,
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
        let secure = args
            .public_url
            .as_deref()
            .is_some_and(|url| url.to_ascii_lowercase().starts_with("https://"));
        let app = api::app(Arc::new(
            api::Api::new(
                Arc::clone(&store),
                Arc::clone(&stats),
                Arc::clone(&notify_stats),
                changes.clone(),
                token,
            )
            .with_secure_cookies(secure),
        ))
        // The client's address, for the throttle on failed logins.
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
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
        tracing::info!("dashboard on http://{listen}/");
    }
    let retention = i64::from(args.history_hours) * 3_600_000;
    let mut report = tokio::time::interval(Duration::from_secs(10));
    report.tick().await;
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    let (orphaned, mut parent_gone) = tokio::sync::oneshot::channel::<()>();
    if args.exit_with_stdin {
        std::thread::spawn(move || {
            let mut sink = [0u8; 64];
            while matches!(std::io::Read::read(&mut std::io::stdin(), &mut sink), Ok(n) if n > 0) {}
            let _ = orphaned.send(());
        });
    }
    // One signal listener for the whole run: made anew in each turn, a signal arriving while
    // another branch runs (a long prune) would find no listener and be lost.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Ok(()) = &mut parent_gone => {
                tracing::info!("standard input closed; stopping");
                break;
            }
            _ = prune.tick() => match store.prune(now_ms() - retention).await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "pruned the readings history"),
                Err(error) => tracing::warn!(%error, "failed to prune the readings history"),
            },
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
    let _ = notifier.await;
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
