//! The NATS source: a durable JetStream pull consumer, shared by the instances of a group.
//!
//! Gateways publish to JetStream on `{subject_prefix}.{gateway}.…` (ids escaped, see
//! [`edge_schema::address`]), each message with `Nats-Msg-Id` set to its id for the stream's
//! de-duplication window. This source:
//!
//! 1. connects (retrying, without limit), and makes sure the stream exists: it creates it
//!    with subjects `{subject_prefix}.>` and file storage if the gateways have not yet, so the
//!    start order does not matter;
//! 2. binds to the durable consumer named by the group (creating it if missing: filter
//!    `{subject_prefix}.>`, explicit acks, `ack_wait`, deliver all). Every instance of the
//!    group pulls from the same consumer: the server hands each message to one of them;
//! 3. settles each delivery after the pipeline's commit: `+ACK` when stored, `-NAK` with a
//!    delay (the pipeline's backoff) when the store failed, `+TERM` when it is not one of ours
//!    or not understood, so that it does not come back.
//!
//! A delivery left unsettled (this instance killed, or slower than `ack_wait`) is delivered
//! again, to any instance of the group, once `ack_wait` has passed; the store's keys make that
//! harmless.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{self, AckKind, stream};
use edge_schema::Address;
use edge_schema::address::nats_filter;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::config::NatsSourceConfig;
use crate::consumer::{Backoff, Delivery, Outcome, Settle, Started};

/// Deliveries unacknowledged at once across the group, at most (the server's
/// `max_ack_pending`): bounds what instances hold in memory.
const MAX_ACK_PENDING: i64 = 4096;
/// Messages asked for in one pull.
const PULL_BATCH: usize = 256;
/// How often the server says it is there while there is nothing to deliver: a connection that
/// went silent is noticed after two missed heartbeats.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Why the source could not consume; it retries after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum NatsSourceError {
    /// The first connection failed (the server is down, refused the login, or its certificate
    /// is not trusted); once connected, the client reconnects by itself.
    #[error("failed to connect to {server}: {source}")]
    Connect {
        /// The server.
        server: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The stream could not be found or created.
    #[error("failed to find or create stream `{stream}`")]
    Stream {
        /// The stream.
        stream: String,
        /// Why.
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    /// The durable consumer could not be found or created.
    #[error("failed to find or create consumer `{durable}`")]
    Consumer {
        /// The consumer.
        durable: String,
        /// Why.
        #[source]
        source: jetstream::stream::ConsumerError,
    },
    /// Pulling from the consumer could not start.
    #[error("failed to pull from consumer `{durable}`")]
    Pull {
        /// The consumer.
        durable: String,
        /// Why.
        #[source]
        source: async_nats::jetstream::consumer::StreamError,
    },
    /// The pull ended (the consumer or stream was deleted, the client closed).
    #[error("the pull from consumer `{0}` ended")]
    Ended(String),
}

/// Settles JetStream deliveries: ack, nak with a delay, or term.
#[derive(Debug)]
pub struct NatsSettler {
    /// The client, once connected: flushed at the end so the last acks reach the server.
    client: Arc<OnceLock<async_nats::Client>>,
}

impl Settle for NatsSettler {
    type Handle = Acker;

    fn gives_back(&self) -> bool {
        true
    }

    async fn settle(&mut self, settled: Vec<(Acker, Outcome)>, retry_after: Duration) {
        for (acker, outcome) in settled {
            let kind = match outcome {
                Outcome::Stored => AckKind::Ack,
                Outcome::Refused => AckKind::Term,
                Outcome::NotStored => AckKind::Nak((!retry_after.is_zero()).then_some(retry_after)),
            };
            // A lost ack is a redelivery after `ack_wait`, which the store ignores.
            if let Err(error) = acker.ack_with(kind).await {
                tracing::warn!(%error, "failed to settle a message with the server");
            }
        }
    }

    async fn close(self) {
        if let Some(client) = self.client.get() {
            let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
        }
    }
}

/// Connects to the server of `config` and consumes, reconnecting and setting up again with a
/// backoff whatever fails, in a task of its own; over TLS with `tls` (for `tls://`).
pub fn start(
    config: NatsSourceConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    shutdown: watch::Receiver<bool>,
) -> Started<NatsSettler> {
    let (deliveries, incoming) = mpsc::unbounded_channel();
    let client = Arc::new(OnceLock::new());
    let task = tokio::spawn(receive(
        config,
        tls,
        Arc::clone(&client),
        deliveries,
        shutdown,
    ));
    Started {
        incoming,
        settler: NatsSettler { client },
        task,
    }
}

async fn receive(
    config: NatsSourceConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    connected: Arc<OnceLock<async_nats::Client>>,
    deliveries: mpsc::UnboundedSender<Delivery<Acker>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    loop {
        let error = match session(
            &config,
            tls.as_deref(),
            &connected,
            &deliveries,
            &mut backoff,
        )
        .await
        {
            Ok(()) => return,
            Err(error) => error,
        };
        let wait = backoff.next();
        tracing::warn!(
            error = &error as &dyn std::error::Error,
            retry_in = ?wait,
            "not consuming from NATS"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One run: set up, then pass deliveries on until the pull ends. `Ok` when the pipeline is
/// gone (nothing more to do).
async fn session(
    config: &NatsSourceConfig,
    tls: Option<&rustls::ClientConfig>,
    connected: &OnceLock<async_nats::Client>,
    deliveries: &mpsc::UnboundedSender<Delivery<Acker>>,
    backoff: &mut Backoff,
) -> Result<(), NatsSourceError> {
    let client = match connected.get() {
        Some(client) => client.clone(),
        None => {
            let mut options = async_nats::ConnectOptions::new()
                .name("edge-alerts")
                .max_reconnects(None);
            if let Some((user, password)) = &config.credentials {
                options = options.user_and_password(user.clone(), password.clone());
            }
            if let Some(tls) = tls {
                options = options
                    .require_tls(true)
                    .tls_client_config(rustls::ClientConfig::clone(tls));
            }
            // The first connection is made here, so that its failure is reported with its cause
            // (and retried with the backoff); later ones the client makes by itself.
            let client = options
                .connect(config.server.as_str())
                .await
                .map_err(|source| NatsSourceError::Connect {
                    server: config.server.clone(),
                    source,
                })?;
            connected.get_or_init(|| client).clone()
        }
    };
    let jetstream = jetstream::new(client);
    let filter = nats_filter(&config.subject_prefix);
    let stream = jetstream
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![filter.clone()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|source| NatsSourceError::Stream {
            stream: config.stream.clone(),
            source,
        })?;
    let consumer: PullConsumer = stream
        .get_or_create_consumer(
            &config.durable,
            pull::Config {
                durable_name: Some(config.durable.clone()),
                filter_subject: filter,
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                deliver_policy: DeliverPolicy::All,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            },
        )
        .await
        .map_err(|source| NatsSourceError::Consumer {
            durable: config.durable.clone(),
            source,
        })?;
    let pull_failed = |source| NatsSourceError::Pull {
        durable: config.durable.clone(),
        source,
    };
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .heartbeat(HEARTBEAT)
        .expires(HEARTBEAT * 4)
        .messages()
        .await
        .map_err(pull_failed)?;
    tracing::info!(
        server = config.server,
        stream = config.stream,
        consumer = config.durable,
        "consuming"
    );
    backoff.reset();
    let mut failures = 0u64;
    while let Some(message) = messages.next().await {
        match message {
            Ok(message) => {
                let (message, acker) = message.split();
                let origin = message.subject.to_string();
                let delivery = Delivery {
                    address: Address::from_nats_subject(&config.subject_prefix, &origin)
                        .map(Address::into_owned),
                    origin,
                    payload: message.payload,
                    handle: acker,
                };
                if deliveries.send(delivery).is_err() {
                    return Ok(());
                }
            }
            // Missed heartbeats (a connection lost: the client reconnects) and failed pulls
            // are passing; the pull goes on. Logged once, then every hundredth.
            Err(error) => {
                if failures.is_multiple_of(100) {
                    tracing::warn!(%error, failures, "pulling from JetStream");
                }
                failures += 1;
            }
        }
    }
    Err(NatsSourceError::Ended(config.durable.clone()))
}
