//! Wires the stages together and runs them until asked to stop.
//!
//! Start order: journal (recovering what a previous run left) → admin server → uplinks → device
//! listener. Stop order is the reverse of the data flow: sources stop taking input, each uplink
//! flushes its position and says `offline`, the journal commits what is queued and checkpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::admin::{self, Metrics, Source};
use crate::config::Config;
use crate::decode::RejectReason;
use crate::journal::{Journal, JournalError, JournalHandle, JournalOptions};
use crate::rules::reload::Reloader;
use crate::sinks::SinkError;
use crate::sources::mqtt::{DeviceListener, ListenerError};
use crate::sources::{Ingest, serial};

/// How long serial ports get to stop once the gateway stops.
const SERIAL_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The device listener could not start.
    #[error(transparent)]
    Devices(#[from] ListenerError),
    /// An uplink could not be set up.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The admin listener could not bind.
    #[error("failed to listen for admin requests on {listen}")]
    Admin {
        /// The address.
        listen: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The journal settings of a configuration.
pub fn journal_options(config: &Config) -> JournalOptions {
    JournalOptions {
        path: config.journal_path(),
        max_size: config.journal.max_size,
        max_age: config.journal.max_age,
        when_full: config.journal.when_full,
        synchronous: config.journal.synchronous,
        commit_interval: config.journal.commit_interval,
        destinations: config.destination_routes(),
    }
}

/// Runs the gateway until `shutdown` resolves, then stops it cleanly. With `config_path`, the
/// rules are re-read from that file on SIGHUP and on `POST /reload`.
pub async fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AppError> {
    let (journal, report) = Journal::start(journal_options(&config))?;
    let handle = journal.handle();
    if report.recovered_rows > 0 {
        tracing::info!(
            rows = report.recovered_rows,
            "journal holds events from a previous run; sending them again"
        );
    }
    let reasons: Vec<&'static str> = RejectReason::ALL
        .iter()
        .map(|reason| reason.as_str())
        .collect();
    let metrics = Arc::new(Metrics::new(Arc::clone(handle.stats()), &reasons));

    let admin_listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .map_err(|source| AppError::Admin {
            listen: config.admin.listen,
            source,
        })?;
    let (stop, stopped) = watch::channel(false);
    let mut sink_tasks =
        crate::sinks::uplinks::spawn(&config, &handle, &metrics, &report.positions, &stopped)?;
    let (rules, rules_task) = crate::rules::service::spawn(
        config.rules.clone(),
        &config.gateway.id,
        crate::rules::service::Numbering {
            journal: report.journal,
            last_alert: report.last_alert,
            firing: &report.firing_alerts,
        },
        handle.clone(),
        Arc::clone(&metrics),
        stopped.clone(),
    );
    let ingest = Ingest::new(
        Source::Mqtt,
        config.gateway.id.clone(),
        handle.clone(),
        Arc::clone(&metrics),
    )
    .with_rules(rules.clone());
    let devices = DeviceListener::bind(&config.devices, ingest)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if config.devices.anonymous() {
        tracing::warn!(
            listen = %config.devices.listen,
            "devices connect without a login: whoever reaches this address may publish as any device"
        );
    }

    let device_tls = devices.tls();
    let reloader = config_path
        .map(|path| Arc::new(Reloader::new(path, rules.clone()).with_device_tls(device_tls)));
    let hangup_task = reloader.clone().map(|reloader| {
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                tracing::warn!(
                    "cannot listen for SIGHUP: rules and device TLS files reload only through POST /reload"
                );
                return;
            };
            loop {
                tokio::select! {
                    _ = hangups.recv() => {
                        // Problems are logged by the reloader.
                        let _ = reloader.reload().await;
                    }
                    _ = stopped.changed() => return,
                }
            }
        })
    });
    let admin_task = {
        let mut stopped = stopped.clone();
        let metrics = Arc::clone(&metrics);
        let reloader = reloader.clone();
        tokio::spawn(async move {
            let wait = async move {
                let _ = stopped.changed().await;
            };
            if let Err(error) = admin::serve(admin_listener, metrics, reloader, wait).await {
                tracing::error!(%error, "admin server failed");
            }
        })
    };
    let source_task = tokio::spawn(devices.run(stopped.clone()));
    let serial_ingest = Ingest::new(
        Source::Serial,
        config.gateway.id.clone(),
        handle.clone(),
        Arc::clone(&metrics),
    )
    .with_rules(rules.clone());
    let mut serial_tasks = serial::spawn_ports(&config.serial, &serial_ingest, &stopped);
    let stopped_for_watchdog = stopped.clone();
    let uplinks = config
        .uplinks
        .iter()
        .map(|uplink| format!("{} ({})", uplink.name, uplink.endpoint()))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(
        gateway = %config.gateway.id,
        devices = %config.devices.listen,
        admin = %config.admin.listen,
        %uplinks,
        journal = %config.journal_path().display(),
        "edge-gateway running"
    );
    let watchdog_task = crate::systemd::Notifier::from_env().map(|notifier| {
        if let Err(error) = notifier.notify("READY=1\nSTATUS=running") {
            tracing::warn!(%error, "failed to tell systemd the gateway is ready");
        }
        tokio::spawn(feed_the_watchdog(
            notifier,
            crate::systemd::watchdog_interval(),
            handle.clone(),
            stopped_for_watchdog,
        ))
    });

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    let _ = source_task.await;
    // A port stuck writing to a device that stopped reading must not hold the gateway up.
    let drained = tokio::time::timeout(SERIAL_SHUTDOWN_GRACE, async {
        while serial_tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("serial ports did not stop in time: closing them");
        serial_tasks.shutdown().await;
    }
    rules_task.join().await;
    if let Some(task) = hangup_task {
        let _ = task.await;
    }
    while sink_tasks.join_next().await.is_some() {}
    drop(handle);
    journal.close().await;
    let _ = admin_task.await;
    if let Some(task) = watchdog_task {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Pings systemd's watchdog every `period` while the gateway can store what it takes in: the
/// journal writer answers a heartbeat within half a period (it is not stuck in a commit) and its
/// last commit succeeded. Otherwise no ping, and systemd restarts the service once `WatchdogSec`
/// (two periods) passes without one; a ping is never more than one and a half periods late.
/// Says `STOPPING=1` when the gateway begins to stop.
async fn feed_the_watchdog(
    notifier: crate::systemd::Notifier,
    period: Option<Duration>,
    journal: JournalHandle,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticks = period.map(|period| {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        (ticks, period / 2)
    });
    loop {
        let ping = async {
            let Some((ticks, patience)) = ticks.as_mut() else {
                return std::future::pending().await;
            };
            ticks.tick().await;
            match tokio::time::timeout(*patience, journal.heartbeat()).await {
                Ok(Ok(())) if journal.stats().writable() => {
                    let _ = notifier.notify("WATCHDOG=1");
                }
                Ok(Ok(())) => tracing::warn!("journal commits fail: not pinging the watchdog"),
                Ok(Err(_)) => tracing::warn!("journal writer stopped: not pinging the watchdog"),
                Err(_) => tracing::warn!(
                    waited = ?patience,
                    "journal writer stuck in a commit: not pinging the watchdog"
                ),
            }
        };
        tokio::select! {
            () = ping => {}
            _ = stopped.changed() => {
                let _ = notifier.notify("STOPPING=1\nSTATUS=stopping");
                return;
            }
        }
    }
}
