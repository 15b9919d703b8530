//! An MQTT broker in this process (rumqttd) that stands in for the cloud broker in the demo and
//! in tests, with a link that reads what the gateway forwards.
//!
//! rumqttd keeps messages in an in-memory log per topic filter; the log is capped at
//! `SEGMENT_SIZE × SEGMENT_COUNT` so the demo's memory stays bounded.

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Broker, ConnectionSettings, RouterConfig, ServerSettings};

const SEGMENT_SIZE: usize = 1024 * 1024;
const SEGMENT_COUNT: usize = 4;
const MAX_PAYLOAD: usize = 256 * 1024;
const MAX_CONNECTIONS: usize = 100;
/// The in-process link's client id.
const LINK_CLIENT_ID: &str = "edge-cloud-link";

/// Errors starting the broker.
#[derive(Debug, thiserror::Error)]
pub enum CloudBrokerError {
    /// The listen address is unusable.
    #[error("failed to listen on {listen}")]
    Listen {
        /// The address.
        listen: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// rumqttd refused the in-process link.
    #[error("failed to link to the broker: {0}")]
    Link(String),
    /// The broker thread could not be started.
    #[error("failed to start the broker thread")]
    Thread(#[source] std::io::Error),
}

/// Starts the broker on `listen`, on threads of its own, and returns an in-process link to it.
pub fn start_cloud_broker(listen: SocketAddr) -> Result<(LinkTx, LinkRx), CloudBrokerError> {
    // rumqttd binds inside its own thread and only logs a failure there: try the address first
    // so a port in use stops with a clear message.
    std::net::TcpListener::bind(listen)
        .map_err(|source| CloudBrokerError::Listen { listen, source })?;
    let server = ServerSettings {
        name: "cloud".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        id: 0,
        router: RouterConfig {
            max_connections: MAX_CONNECTIONS,
            max_outgoing_packet_count: 200,
            max_segment_size: SEGMENT_SIZE,
            max_segment_count: SEGMENT_COUNT,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: rumqttd::Strategy::default(),
        },
        v4: Some(HashMap::from([("cloud".to_owned(), server)])),
        ..rumqttd::Config::default()
    };
    let mut broker = Broker::new(config);
    let link = broker
        .link(LINK_CLIENT_ID)
        .map_err(|error| CloudBrokerError::Link(error.to_string()))?;
    std::thread::Builder::new()
        .name("cloud-broker".into())
        .spawn(move || {
            if let Err(error) = broker.start() {
                tracing::error!(%error, "in-process cloud broker stopped");
            }
        })
        .map_err(CloudBrokerError::Thread)?;
    Ok(link)
}
