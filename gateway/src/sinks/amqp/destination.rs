//! The AMQP adapter (lapin).
//!
//! 1. A connection is one AMQP connection and one channel in confirm mode (one channel keeps
//!    the order of publishes); the exchange is declared (durable, topic) if missing, and a clear
//!    error is given if it exists with another type; `online` is published to the status routing
//!    key if the uplink takes the status lane (not mandatory: nobody need listen to status).
//! 2. Offering hands the row to the connection's [publisher task](crate::sinks::pipeline), so it
//!    never waits; the task publishes in order and awaits every confirm concurrently.
//! 3. A confirm with the message returned (no queue bound for its routing key) and a Nack are
//!    retryable rejections: the driver starts over after a backoff, keeping per-device order;
//!    the message is counted as rejected each time, and the uplink's backlog shows it waiting.
//! 4. A publish or confirm that fails because the channel or connection closed ends the
//!    connection.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, ConnectionProperties, ExchangeKind};

use crate::config::UplinkConfig;
use crate::journal::Lane;
use crate::sinks::destination::{
    Confirmation, Connection, Destination, DestinationError, Outgoing, Rejection, RejectionKind,
};
use crate::sinks::error::{SinkError, read_secret};
use crate::sinks::pipeline::{Pipeline, Publish, Published};

/// How long connecting may take, in ms.
const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Delivery mode 2: the broker writes the message to disk in a durable queue.
const PERSISTENT: u8 = 2;

/// A RabbitMQ exchange as a destination.
#[derive(Debug)]
pub struct AmqpDestination {
    uri: AMQPUri,
    ca_chain: Option<String>,
    exchange: String,
    gateway: String,
    status: bool,
    window: usize,
}

impl AmqpDestination {
    /// Prepares the destination: reads the password and CA files now, so a bad path fails at
    /// start.
    pub fn new(uplink: &UplinkConfig, gateway_id: &str) -> Result<Self, SinkError> {
        let (username, password) = match &uplink.username {
            Some(user) => (
                user.clone(),
                match &uplink.password_file {
                    Some(path) => read_secret(path)?,
                    None => String::new(),
                },
            ),
            // RabbitMQ's default login, as AMQP URLs without credentials mean.
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        // The CA file is added to the system's roots (lapin's rustls set-up).
        let ca_chain = match &uplink.ca_file {
            Some(path) => Some(crate::sinks::tls::read_ca_pem(path)?),
            None => None,
        };
        let uri = AMQPUri {
            scheme: if uplink.url.tls {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo { username, password },
                host: uplink.url.host.clone(),
                port: uplink.url.port,
            },
            vhost: uplink.url.vhost.clone().unwrap_or_else(|| "/".to_owned()),
            query: AMQPQueryString {
                connection_timeout: Some(CONNECT_TIMEOUT_MS),
                ..AMQPQueryString::default()
            },
        };
        Ok(Self {
            uri,
            ca_chain,
            exchange: uplink.exchange.clone(),
            gateway: gateway_id.to_owned(),
            status: uplink.lanes.status,
            window: usize::from(uplink.max_inflight.max(1)),
        })
    }

    fn routing_key(&self, lane: edge_schema::Lane<'_>) -> String {
        routing_key(&self.gateway, lane)
    }
}

fn routing_key(gateway: &str, lane: edge_schema::Lane<'_>) -> String {
    edge_schema::Address {
        gateway: gateway.into(),
        lane,
    }
    .amqp_routing_key()
}

impl Destination for AmqpDestination {
    type Connection = AmqpConnection;

    fn describe(&self) -> String {
        let scheme = match self.uri.scheme {
            AMQPScheme::AMQP => "amqp",
            AMQPScheme::AMQPS => "amqps",
        };
        format!(
            "{scheme}://{}:{} exchange {}",
            self.uri.authority.host, self.uri.authority.port, self.exchange
        )
    }

    async fn connect(&mut self) -> Result<AmqpConnection, DestinationError> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("edge-gateway-{}", self.gateway).into());
        let connected = match &self.ca_chain {
            Some(chain) => {
                let runtime = lapin::runtime::default_runtime().map_err(|error| {
                    DestinationError::transient(format!("no runtime for AMQP: {error}"))
                })?;
                let tls = lapin::tcp::OwnedTLSConfig {
                    identity: None,
                    cert_chain: Some(chain.clone()),
                };
                lapin::Connection::connect_uri_with_config(
                    self.uri.clone(),
                    properties,
                    tls,
                    runtime,
                )
                .await
            }
            None => lapin::Connection::connect_uri(self.uri.clone(), properties).await,
        };
        let connection = connected.map_err(|error| {
            let text = format!("failed to connect: {error}");
            if text.contains("ACCESS_REFUSED") || text.contains("authentication") {
                DestinationError::misconfigured(text)
            } else {
                DestinationError::transient(text)
            }
        })?;
        let channel = connection.create_channel().await.map_err(|error| {
            DestinationError::transient(format!("failed to open a channel: {error}"))
        })?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|error| {
                DestinationError::transient(format!(
                    "failed to turn on publisher confirms: {error}"
                ))
            })?;
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|error| {
                DestinationError::misconfigured(format!(
                    "failed to declare exchange `{}` (durable, topic): {error}; if it exists \
                     with another type, set the uplink's `exchange`",
                    self.exchange
                ))
            })?;
        let status_key = self
            .status
            .then(|| self.routing_key(edge_schema::Lane::Status));
        if let Some(key) = &status_key {
            publish_status(&channel, &self.exchange, key, "online").await?;
        }
        let pipeline = Pipeline::start(
            Publisher {
                channel: channel.clone(),
                exchange: self.exchange.clone(),
                gateway: self.gateway.clone(),
            },
            self.window,
        );
        Ok(AmqpConnection {
            connection,
            channel,
            exchange: self.exchange.clone(),
            pipeline,
            status_key,
        })
    }
}

async fn publish_status(
    channel: &Channel,
    exchange: &str,
    key: &str,
    status: &'static str,
) -> Result<(), DestinationError> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            status.as_bytes(),
            BasicProperties::default().with_delivery_mode(PERSISTENT),
        )
        .await
        .map_err(|error| {
            DestinationError::transient(format!("failed to publish status: {error}"))
        })?;
    match confirm.await {
        Ok(confirmation) if confirmation.is_ack() => Ok(()),
        Ok(_) => Err(DestinationError::transient(
            "status was refused by the broker (nack)",
        )),
        Err(error) => Err(DestinationError::transient(format!(
            "status was not confirmed: {error}"
        ))),
    }
}

/// A live AMQP connection.
pub struct AmqpConnection {
    connection: lapin::Connection,
    channel: Channel,
    exchange: String,
    pipeline: Pipeline,
    status_key: Option<String>,
}

impl std::fmt::Debug for AmqpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConnection")
            .field("exchange", &self.exchange)
            .finish_non_exhaustive()
    }
}

impl Connection for AmqpConnection {
    fn offer(&mut self, message: Outgoing) -> Result<(), DestinationError> {
        self.pipeline.offer(message)
    }

    async fn next(&mut self) -> Result<Confirmation, DestinationError> {
        self.pipeline.next().await
    }

    async fn close(mut self, grace: Duration) -> Vec<Confirmation> {
        let deadline = tokio::time::Instant::now() + grace;
        let confirmed = self.pipeline.drain(grace).await;
        if let Some(key) = self.status_key.take() {
            let _ = tokio::time::timeout_at(
                deadline,
                publish_status(&self.channel, &self.exchange, &key, "offline"),
            )
            .await;
        }
        let _ = tokio::time::timeout_at(
            deadline,
            self.connection.close(200, "edge-gateway stopping".into()),
        )
        .await;
        confirmed
    }
}

/// Publishes each row, persistent and mandatory; its publisher confirm settles it.
struct Publisher {
    channel: Channel,
    exchange: String,
    gateway: String,
}

impl Publish for Publisher {
    async fn publish(&self, message: Outgoing) -> Published {
        let tag = message.tag;
        let lane = match message.lane {
            Lane::Alerts => edge_schema::Lane::Alerts,
            Lane::Events => edge_schema::Lane::Events {
                device: message.row.device.as_str().into(),
            },
        };
        let key = routing_key(&self.gateway, lane);
        let mut properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into());
        if let Some(key) = crate::sinks::message_key(message.lane, &message.row.payload) {
            properties = properties.with_message_id(key.into());
        }
        let sent = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.row.payload,
                properties,
            )
            .await;
        match sent {
            Ok(confirm) => Published::Sent(Box::pin(async move { settle(tag, confirm.await) })),
            Err(error) => Published::Settled(Err(DestinationError::transient(format!(
                "failed to publish: {error}"
            )))),
        }
    }
}

/// What a publisher confirm means for the message it confirms.
fn settle(
    tag: u64,
    confirm: Result<lapin::Confirmation, lapin::Error>,
) -> Result<Confirmation, DestinationError> {
    match confirm {
        Ok(lapin::Confirmation::Ack(None)) => Ok(Confirmation::Confirmed(tag)),
        Ok(lapin::Confirmation::Ack(Some(returned))) => Ok(Confirmation::Rejected(
            tag,
            Rejection {
                kind: RejectionKind::Retryable,
                reason: format!(
                    "no queue took it (returned: {} {})",
                    returned.reply_code, returned.reply_text
                ),
            },
        )),
        Ok(lapin::Confirmation::Nack(_)) => Ok(Confirmation::Rejected(
            tag,
            Rejection {
                kind: RejectionKind::Retryable,
                reason: "the broker did not store it (nack)".to_owned(),
            },
        )),
        Ok(lapin::Confirmation::NotRequested) => Err(DestinationError::transient(
            "the channel is not in confirm mode",
        )),
        Err(error) => Err(DestinationError::transient(format!(
            "confirm failed: {error}"
        ))),
    }
}
