//! Starting the embedded rumqttd broker with bounded memory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Broker, ConnectionSettings, RouterConfig, ServerSettings};

use crate::admin::Metrics;
use crate::config::LocalBrokerConfig;
use crate::sources::ingest::WarnLimiter;

/// Router memory per topic filter is `SEGMENT_SIZE × SEGMENT_COUNT` at most: rumqttd keeps
/// published messages in segments and drops the oldest segment when a filter has this many.
const SEGMENT_SIZE: usize = 1024 * 1024;
const SEGMENT_COUNT: usize = 4;
/// Devices may send payloads up to this size through the broker; the gateway rejects (and
/// dead-letters) anything over 64 KiB itself, so the device gets a clear reason in the logs
/// rather than a dropped connection.
const BROKER_MAX_PAYLOAD: usize = 256 * 1024;
/// The link the gateway reads device events through.
const INGEST_CLIENT_ID: &str = "edge-gateway-ingest";

/// Errors starting the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is unusable.
    #[error("failed to listen for devices on {listen}")]
    Listen {
        /// The address.
        listen: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A device password file could not be read.
    #[error("failed to read password file {path} of device user `{user}`")]
    PasswordFile {
        /// The user.
        user: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// rumqttd refused the in-process link.
    #[error("failed to link to the embedded broker: {0}")]
    Link(String),
    /// The broker thread could not be started.
    #[error("failed to start the embedded broker thread")]
    Thread(#[source] std::io::Error),
}

/// Starts the broker on its own threads and returns the gateway's link to it. Refused device
/// logins are counted in `metrics` (when given) and logged at WARN, at most every 10 s.
pub fn start_broker(
    config: &LocalBrokerConfig,
    metrics: Option<Arc<Metrics>>,
) -> Result<(LinkTx, LinkRx), BrokerError> {
    // rumqttd binds inside its own thread and only logs a failure there: try the address first
    // so a port in use stops the gateway with a clear message.
    std::net::TcpListener::bind(config.listen).map_err(|source| BrokerError::Listen {
        listen: config.listen,
        source,
    })?;
    let mut users = HashMap::new();
    for user in &config.users {
        let password = std::fs::read_to_string(&user.password_file).map_err(|source| {
            BrokerError::PasswordFile {
                user: user.name.clone(),
                path: user.password_file.clone(),
                source,
            }
        })?;
        users.insert(
            user.name.clone(),
            password.trim_end_matches(['\r', '\n']).to_owned(),
        );
    }
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: BROKER_MAX_PAYLOAD,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    if !users.is_empty() {
        let warnings = Mutex::new(WarnLimiter::default());
        connections.set_auth_handler(move |client_id: String, user: String, password: String| {
            let accepted = users
                .get(&user)
                .is_some_and(|expected| constant_time_eq(expected.as_bytes(), password.as_bytes()));
            if !accepted {
                if let Some(metrics) = &metrics {
                    metrics.add_device_login_refused();
                }
                let suppressed = warnings
                    .lock()
                    .ok()
                    .and_then(|mut limiter| limiter.allow("login"));
                if let Some(suppressed) = suppressed {
                    tracing::warn!(
                        client_id,
                        user,
                        suppressed,
                        "refused a device login: unknown user or wrong password"
                    );
                }
            }
            std::future::ready(accepted)
        });
    }
    let server = ServerSettings {
        name: "devices".into(),
        listen: config.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let broker_config = rumqttd::Config {
        id: 0,
        router: RouterConfig {
            max_connections: config.max_connections + 1,
            max_outgoing_packet_count: 200,
            max_segment_size: SEGMENT_SIZE,
            max_segment_count: SEGMENT_COUNT,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: rumqttd::Strategy::default(),
        },
        v4: Some(HashMap::from([("devices".to_owned(), server)])),
        ..rumqttd::Config::default()
    };
    let mut broker = Broker::new(broker_config);
    let link = broker
        .link(INGEST_CLIENT_ID)
        .map_err(|error| BrokerError::Link(error.to_string()))?;
    std::thread::Builder::new()
        .name("local-broker".into())
        .spawn(move || {
            if let Err(error) = broker.start() {
                tracing::error!(%error, "embedded broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    Ok(link)
}

/// Compares secrets in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(constant_time_eq(b"", b""));
    }
}
