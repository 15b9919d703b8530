//! The NATS JetStream adapter.
//!
//! 1. A connection is one NATS client: connected, authenticated (user and password, token, or a
//!    `.creds` file), over TLS for `tls://`; its stream checked ([`super::stream`]); `online`
//!    published to the status subject (awaiting its PubAck) if the uplink takes the status lane.
//! 2. Offering hands the row to the connection's [publisher task](crate::sinks::pipeline), so it
//!    never waits. The task publishes in order on the one client (per-device order on the wire)
//!    and awaits every PubAck concurrently; each PubAck (or failure) goes back as a
//!    confirmation.
//! 3. The JetStream request timeout is twice the uplink's `ack_timeout` ([`request_timeout`]):
//!    a stall of the whole connection is the driver's to notice, at `ack_timeout`; one PubAck
//!    that does not come while others do is a retryable rejection (the driver starts over and
//!    sends again, with the same `Nats-Msg-Id`, which the stream de-duplicates within its
//!    duplicate window). "No responders" (no stream, or a leader change) is retryable too; a
//!    message over the server's `max_payload` is refused for good.
//! 4. The client reconnects by itself, but a disconnection ends our connection at once: the
//!    driver starts over rather than wait for PubAcks that may never come.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::stream;
use crate::config::UplinkConfig;
use crate::journal::Lane;
use crate::sinks::destination::{
    Confirmation, Connection, Destination, DestinationError, Outgoing, Rejection, RejectionKind,
    request_timeout,
};
use crate::sinks::error::{SinkError, read_secret};
use crate::sinks::pipeline::{Pipeline, Publish, Published};
use crate::sinks::tls;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the client logs in.
#[derive(Debug, Clone)]
enum Login {
    None,
    Password { user: String, password: String },
    Token(String),
    Credentials(std::path::PathBuf),
}

/// A NATS JetStream stream as a destination.
#[derive(Debug)]
pub struct NatsDestination {
    url: String,
    login: Login,
    tls: Option<rustls::ClientConfig>,
    subject_prefix: String,
    gateway: String,
    stream: String,
    lanes: crate::config::Lanes,
    status: bool,
    window: usize,
    ack_timeout: Duration,
}

impl NatsDestination {
    /// Prepares the destination: reads secrets and TLS files now, so a bad path fails at start.
    pub fn new(uplink: &UplinkConfig, gateway_id: &str) -> Result<Self, SinkError> {
        let login = if let Some(user) = &uplink.username {
            let password = match &uplink.password_file {
                Some(path) => read_secret(path)?,
                None => String::new(),
            };
            Login::Password {
                user: user.clone(),
                password,
            }
        } else if let Some(path) = &uplink.token_file {
            Login::Token(read_secret(path)?)
        } else if let Some(path) = &uplink.credentials_file {
            // Read now so that a missing file fails at start; the client reads it again.
            read_secret(path)?;
            Login::Credentials(path.clone())
        } else {
            Login::None
        };
        let tls = if uplink.url.tls {
            Some(tls::client_config(uplink)?.as_ref().clone())
        } else {
            None
        };
        Ok(Self {
            url: format!("nats://{}", uplink.url.authority()),
            login,
            tls,
            subject_prefix: uplink.subject_prefix.clone(),
            gateway: gateway_id.to_owned(),
            stream: uplink.stream.clone(),
            lanes: uplink.lanes,
            status: uplink.lanes.status,
            window: usize::from(uplink.max_inflight.max(1)),
            ack_timeout: uplink.ack_timeout,
        })
    }

    fn subject(&self, lane: edge_schema::Lane<'_>) -> String {
        edge_schema::Address {
            gateway: self.gateway.as_str().into(),
            lane,
        }
        .nats_subject(&self.subject_prefix)
    }
}

impl Destination for NatsDestination {
    type Connection = NatsConnection;

    fn describe(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "nats" };
        format!(
            "{scheme}://{} stream {}",
            self.url.trim_start_matches("nats://"),
            self.stream
        )
    }

    async fn connect(&mut self) -> Result<NatsConnection, DestinationError> {
        let (events, disconnected) = mpsc::unbounded_channel();
        let mut options = match &self.login {
            Login::Credentials(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|error| {
                    DestinationError::misconfigured(format!(
                        "failed to read NATS credentials {}: {error}",
                        path.display()
                    ))
                })?,
            Login::Password { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            Login::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
            Login::None => async_nats::ConnectOptions::new(),
        };
        options = options
            .name(format!("edge-gateway-{}", self.gateway))
            .connection_timeout(CONNECT_TIMEOUT)
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    if matches!(
                        event,
                        async_nats::Event::Disconnected | async_nats::Event::Closed
                    ) {
                        let _ = events.send(event.to_string());
                    }
                }
            });
        if let Some(tls) = &self.tls {
            options = options.require_tls(true).tls_client_config(tls.clone());
        }
        let client = options.connect(self.url.as_str()).await.map_err(|error| {
            let text = format!("failed to connect: {error}");
            match error.kind() {
                async_nats::ConnectErrorKind::Authentication
                | async_nats::ConnectErrorKind::AuthorizationViolation => {
                    DestinationError::misconfigured(text)
                }
                _ => DestinationError::transient(text),
            }
        })?;
        // The driver keeps at most a window in flight (plus the status message): the client's
        // own limit must not be lower, or a publish would wait for a permit while the PubAcks
        // that free permits wait behind it.
        let context = jetstream::context::ContextBuilder::new()
            .timeout(request_timeout(self.ack_timeout))
            .max_ack_inflight(self.window + 2)
            .build(client);
        let filter = edge_schema::address::nats_filter(&self.subject_prefix);
        let mut subjects = Vec::new();
        if self.lanes.events {
            subjects.push(self.subject(edge_schema::Lane::Events { device: "*".into() }));
        }
        if self.lanes.alerts {
            subjects.push(self.subject(edge_schema::Lane::Alerts));
        }
        if self.status {
            subjects.push(self.subject(edge_schema::Lane::Status));
        }
        stream::ensure(&context, &self.stream, &filter, &subjects).await?;
        let status_subject = self.status.then(|| self.subject(edge_schema::Lane::Status));
        if let Some(subject) = &status_subject {
            publish_status(&context, subject, "online").await?;
        }
        let pipeline = Pipeline::start(
            Publisher {
                context: context.clone(),
                gateway: self.gateway.clone(),
                subject_prefix: self.subject_prefix.clone(),
            },
            self.window,
        );
        Ok(NatsConnection {
            context,
            pipeline,
            disconnected,
            status_subject,
        })
    }
}

async fn publish_status(
    context: &jetstream::Context,
    subject: &str,
    status: &'static str,
) -> Result<(), DestinationError> {
    let ack = context
        .publish(subject.to_owned(), Bytes::from_static(status.as_bytes()))
        .await
        .map_err(|error| {
            DestinationError::transient(format!("failed to publish status: {error}"))
        })?;
    ack.await.map(|_| ()).map_err(|error| {
        DestinationError::transient(format!("status was not acknowledged: {error}"))
    })
}

/// A live NATS connection.
#[derive(Debug)]
pub struct NatsConnection {
    context: jetstream::Context,
    pipeline: Pipeline,
    disconnected: mpsc::UnboundedReceiver<String>,
    status_subject: Option<String>,
}

impl Connection for NatsConnection {
    fn offer(&mut self, message: Outgoing) -> Result<(), DestinationError> {
        self.pipeline.offer(message)
    }

    async fn next(&mut self) -> Result<Confirmation, DestinationError> {
        tokio::select! {
            confirmation = self.pipeline.next() => confirmation,
            Some(event) = self.disconnected.recv() => {
                Err(DestinationError::transient(format!("connection {event}")))
            }
        }
    }

    async fn close(mut self, grace: Duration) -> Vec<Confirmation> {
        let deadline = tokio::time::Instant::now() + grace;
        let confirmed = self.pipeline.drain(grace).await;
        if let Some(subject) = self.status_subject.take() {
            let _ = tokio::time::timeout_at(
                deadline,
                publish_status(&self.context, &subject, "offline"),
            )
            .await;
        }
        confirmed
    }
}

/// Publishes each row to its subject; its PubAck confirms it.
struct Publisher {
    context: jetstream::Context,
    gateway: String,
    subject_prefix: String,
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
        let subject = edge_schema::Address {
            gateway: self.gateway.as_str().into(),
            lane,
        }
        .nats_subject(&self.subject_prefix);
        let mut publish = PublishMessage::build();
        if let Some(key) = crate::sinks::message_key(message.lane, &message.row.payload) {
            publish = publish.message_id(key);
        }
        let publish = publish.payload(Bytes::from(message.row.payload));
        match self.context.send_publish(subject, publish).await {
            Ok(ack) => Published::Sent(Box::pin(async move {
                Ok(match ack.await {
                    // A duplicate means the stream already has it: delivered.
                    Ok(_) => Confirmation::Confirmed(tag),
                    Err(error) => {
                        Confirmation::Rejected(tag, rejection(error.kind(), &error.to_string()))
                    }
                })
            })),
            Err(error) if error.kind() == PublishErrorKind::MaxPayloadExceeded => {
                Published::Settled(Ok(Confirmation::Rejected(
                    tag,
                    rejection(error.kind(), &error.to_string()),
                )))
            }
            Err(error) => Published::Settled(Err(DestinationError::transient(format!(
                "failed to publish: {error}"
            )))),
        }
    }
}

/// What a failed PubAck means.
fn rejection(kind: PublishErrorKind, text: &str) -> Rejection {
    let permanent = matches!(kind, PublishErrorKind::MaxPayloadExceeded);
    Rejection {
        kind: if permanent {
            RejectionKind::Permanent
        } else {
            RejectionKind::Retryable
        },
        reason: text.to_owned(),
    }
}
