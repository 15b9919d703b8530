//! The MQTT adapter: publishes at QoS 1 with rumqttc; a row is confirmed by its PUBACK.
//!
//! 1. One connection is one rumqttc client and event loop. The event loop is wrapped in a
//!    stream that keeps an unfinished poll alive across the driver's `select!` iterations: a poll
//!    future dropped half-way can abandon a connection attempt or a PUBACK.
//! 2. Publishes are handed over with `try_publish`, so offering never waits; the request queue
//!    is sized above the driver's window (plus the status message).
//! 3. Which packet id carries which message is the sans-IO bookkeeping of [`super::state`].
//! 4. With the status lane, the connection says `online` (retained) once connected, `offline`
//!    when closed, and leaves `offline` as its last will.
//! 5. Sessions are clean: on a new connection nothing of the old one survives in rumqttc, and the
//!    driver offers again whatever it had not confirmed.
//! 6. With `batch`, event rows are gathered into one JSON array published to
//!    `{prefix}/{gateway}/events`; its PUBACK confirms all of them. A batch goes when it is full
//!    (`max_events`, `max_bytes`), or when it is not and no other message carrying rows is
//!    unconfirmed (so a lone event waits for nothing), or else when its first row has waited
//!    `max_delay` and rumqttc's in-flight window has room. Alerts are never batched. Per-device
//!    order holds: rows join batches in journal order, and publishes go out in order.
//!
//! Publishes handed over are bounded: without batches by the driver's window; with batches,
//! full batches by the driver's window in rows, partial ones by `max_inflight`, so at most twice
//! `max_inflight` (plus the status) wait in rumqttc's request queue, which is sized for that.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Outgoing as MqttOutgoing, Packet, QoS,
    TlsConfiguration, Transport,
};

use super::state::{Batcher, InflightMessage, InflightWindow};
use crate::config::{Batch, UplinkConfig};
use crate::journal::Lane;
use crate::sinks::destination::{
    Confirmation, Connection, Destination, DestinationError, Outgoing,
};
use crate::sinks::error::{SinkError, read_secret};
use crate::sinks::tls;

/// Largest MQTT packet the uplink sends or accepts.
const MAX_PACKET_SIZE: usize = 256 * 1024;

/// An MQTT broker as a destination.
#[derive(Debug)]
pub struct MqttDestination {
    options: MqttOptions,
    /// Messages in flight on the wire at most (`max_inflight`).
    window: usize,
    /// Publishes that may wait in rumqttc's request queue at once.
    queue: usize,
    topic_prefix: String,
    status_topic: Option<String>,
    batch_topic: String,
    batch: Option<Batch>,
}

impl MqttDestination {
    /// Prepares the destination: reads credentials and TLS files now, so a bad path fails at
    /// start.
    pub fn new(uplink: &UplinkConfig, gateway_id: &str) -> Result<Self, SinkError> {
        let topic_prefix = format!("{}/{gateway_id}", uplink.topic_prefix);
        let status_topic = uplink
            .lanes
            .status
            .then(|| format!("{topic_prefix}/status"));
        let window = usize::from(uplink.max_inflight.max(1));
        let batch_topic = format!("{topic_prefix}/events");
        let batch = uplink.batch;
        let queue = match batch {
            Some(_) => 2 * window + 16,
            None => window + 16,
        };
        let mut options = MqttOptions::new(&uplink.client_id, &uplink.url.host, uplink.url.port);
        options
            .set_keep_alive(uplink.keep_alive)
            .set_clean_session(true)
            // One more than the driver's window: the status message.
            .set_inflight(uplink.max_inflight.saturating_add(1))
            .set_request_channel_capacity(queue)
            .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
        if let Some(status_topic) = &status_topic {
            options.set_last_will(LastWill::new(
                status_topic,
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        }
        if let Some(username) = &uplink.username {
            let password = match &uplink.password_file {
                Some(path) => read_secret(path)?,
                None => String::new(),
            };
            options.set_credentials(username, password);
        }
        if uplink.url.tls {
            let config = tls::client_config(uplink)?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        Ok(Self {
            options,
            window,
            queue,
            topic_prefix,
            status_topic,
            batch_topic,
            batch,
        })
    }
}

impl Destination for MqttDestination {
    type Connection = MqttConnection;

    fn describe(&self) -> String {
        let (host, port) = self.options.broker_address();
        if host.contains(':') {
            format!("mqtt://[{host}]:{port}")
        } else {
            format!("mqtt://{host}:{port}")
        }
    }

    async fn connect(&mut self) -> Result<MqttConnection, DestinationError> {
        let (client, mut event_loop) = AsyncClient::new(self.options.clone(), self.queue);
        // No Nagle: a publish that rumqttc writes in pieces would otherwise wait for the
        // broker's delayed ACK of the first piece (tens to hundreds of milliseconds).
        let mut network = event_loop.network_options();
        network.set_tcp_nodelay(true);
        event_loop.set_network_options(network);
        let mut events = event_stream(event_loop);
        loop {
            match events.next().await {
                Some(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                    if ack.code != rumqttc::ConnectReturnCode::Success {
                        let refused = format!("broker refused the connection: {:?}", ack.code);
                        return Err(match ack.code {
                            rumqttc::ConnectReturnCode::BadUserNamePassword
                            | rumqttc::ConnectReturnCode::NotAuthorized => {
                                DestinationError::misconfigured(refused)
                            }
                            _ => DestinationError::transient(refused),
                        });
                    }
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(DestinationError::transient(error.to_string())),
                None => return Err(DestinationError::transient("event loop stopped")),
            }
        }
        let mut window = InflightWindow::new(self.window + 1);
        if let Some(status_topic) = &self.status_topic
            && client
                .try_publish(status_topic, QoS::AtLeastOnce, true, "online")
                .is_ok()
        {
            window.handed_over(InflightMessage::Status);
        }
        Ok(MqttConnection {
            client,
            events,
            window,
            max_inflight: self.window,
            topic_prefix: self.topic_prefix.clone(),
            status_topic: self.status_topic.clone(),
            batch_topic: self.batch_topic.clone(),
            batcher: self.batch.map(Batcher::new),
            ready: VecDeque::new(),
        })
    }
}

/// A live MQTT connection.
pub struct MqttConnection {
    client: AsyncClient,
    events: EventStream,
    window: InflightWindow,
    max_inflight: usize,
    topic_prefix: String,
    status_topic: Option<String>,
    batch_topic: String,
    batcher: Option<Batcher>,
    /// Confirmations of a batch's rows not yet returned by `next`.
    ready: VecDeque<Confirmation>,
}

impl MqttConnection {
    fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        message: InflightMessage,
    ) -> Result<(), DestinationError> {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|error| {
                // The queue is sized for every publish the driver's window allows: this means
                // the event loop is gone.
                DestinationError::transient(format!("failed to queue a publish: {error}"))
            })?;
        self.window.handed_over(message);
        Ok(())
    }

    /// Publishes the batch being filled.
    fn publish_batch(&mut self) -> Result<(), DestinationError> {
        let Some((tags, array)) = self.batcher.as_mut().and_then(Batcher::take) else {
            return Ok(());
        };
        let topic = self.batch_topic.clone();
        self.publish(topic, array, InflightMessage::Batch(tags))
    }

    /// Publishes a batch that is not full if it should not wait any longer: nothing else
    /// carrying rows is unconfirmed, or it has waited `max_delay`; and the wire has room.
    fn publish_batch_if_due(&mut self, now: tokio::time::Instant) -> Result<(), DestinationError> {
        let Some(batcher) = &self.batcher else {
            return Ok(());
        };
        let due = !batcher.is_empty()
            && self.window.len() < self.max_inflight
            && (self.window.carrying_rows() == 0
                || !batcher.waits()
                || batcher.due_at().is_some_and(|at| at <= now));
        if due {
            self.publish_batch()?;
        }
        Ok(())
    }

    /// When the batch being filled is to be published if nothing else happens first.
    fn batch_deadline(&self) -> Option<tokio::time::Instant> {
        let batcher = self.batcher.as_ref()?;
        (self.window.len() < self.max_inflight)
            .then(|| batcher.due_at())
            .flatten()
    }

    /// Takes a PUBACK: returns the first confirmation it gives; the rest of a batch's wait in
    /// `ready`.
    fn on_puback(&mut self, pkid: u16) -> Option<Confirmation> {
        match self.window.on_puback(pkid) {
            Ok(InflightMessage::Row { tag }) => Some(Confirmation::Confirmed(tag)),
            Ok(InflightMessage::Batch(tags)) => {
                self.ready
                    .extend(tags.into_iter().map(Confirmation::Confirmed));
                self.ready.pop_front()
            }
            Ok(InflightMessage::Status) => None,
            Err(error) => {
                tracing::warn!(%error, "uplink bookkeeping");
                None
            }
        }
    }
}

impl std::fmt::Debug for MqttConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConnection")
            .field("in_flight", &self.window.len())
            .finish_non_exhaustive()
    }
}

impl Connection for MqttConnection {
    fn offer(&mut self, message: Outgoing) -> Result<(), DestinationError> {
        if message.lane == Lane::Events
            && let Some(batcher) = &mut self.batcher
        {
            if !batcher.fits(message.row.payload.len()) {
                self.publish_batch()?;
            }
            let batcher = self
                .batcher
                .as_mut()
                .ok_or_else(|| DestinationError::transient("the batch is gone"))?;
            batcher.push(
                message.tag,
                &message.row.payload,
                tokio::time::Instant::now(),
            );
            if batcher.is_full() {
                self.publish_batch()?;
            }
            return Ok(());
        }
        let topic = match message.lane {
            Lane::Alerts => format!("{}/alerts", self.topic_prefix),
            Lane::Events => format!(
                "{}/devices/{}/events",
                self.topic_prefix, message.row.device
            ),
        };
        self.publish(
            topic,
            message.row.payload,
            InflightMessage::Row { tag: message.tag },
        )
    }

    fn offered(&mut self) -> Result<(), DestinationError> {
        self.publish_batch_if_due(tokio::time::Instant::now())
    }

    async fn next(&mut self) -> Result<Confirmation, DestinationError> {
        loop {
            if let Some(confirmation) = self.ready.pop_front() {
                return Ok(confirmation);
            }
            let deadline = self.batch_deadline();
            let event = tokio::select! {
                event = self.events.next() => event,
                () = sleep_until(deadline) => {
                    self.publish_batch_if_due(tokio::time::Instant::now())?;
                    continue;
                }
            };
            match event {
                Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    let confirmation = self.on_puback(ack.pkid);
                    // The wire has room again: a batch that was waiting for it may go.
                    self.publish_batch_if_due(tokio::time::Instant::now())?;
                    if let Some(confirmation) = confirmation {
                        return Ok(confirmation);
                    }
                }
                Some(Ok(Event::Outgoing(MqttOutgoing::Publish(pkid)))) => {
                    // Our view of the connection is wrong: start it over rather than confirm the
                    // wrong rows.
                    self.window
                        .on_outgoing_publish(pkid)
                        .map_err(|error| DestinationError::transient(error.to_string()))?;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(DestinationError::transient(error.to_string())),
                None => return Err(DestinationError::transient("event loop stopped")),
            }
        }
    }

    async fn close(mut self, grace: Duration) -> Vec<Confirmation> {
        let mut confirmed: Vec<Confirmation> = self.ready.drain(..).collect();
        // What waits in the batch goes now: the driver counts it as offered.
        let _ = self.publish_batch();
        if let Some(status_topic) = &self.status_topic
            && self
                .client
                .try_publish(status_topic, QoS::AtLeastOnce, true, "offline")
                .is_ok()
        {
            self.window.handed_over(InflightMessage::Status);
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.window.len() > 0 {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Ok(Some(Ok(Event::Incoming(Packet::PubAck(ack))))) => {
                    if let Some(confirmation) = self.on_puback(ack.pkid) {
                        confirmed.push(confirmation);
                    }
                    confirmed.extend(self.ready.drain(..));
                }
                Ok(Some(Ok(Event::Outgoing(MqttOutgoing::Publish(pkid))))) => {
                    let _ = self.window.on_outgoing_publish(pkid);
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) | Err(_) => break,
            }
        }
        let _ = self.client.try_disconnect();
        // The poller ends when the disconnect has gone out (the event loop reports it as an
        // error).
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, self.events.next()).await {}
        confirmed
    }
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The events of one connection.
type EventStream = Pin<Box<dyn Stream<Item = Result<Event, rumqttc::ConnectionError>> + Send>>;

/// The event loop as a stream: polling it through `next()` is cancel-safe, because an unfinished
/// poll stays inside the stream. The stream ends after the first error: the connection is over.
fn event_stream(event_loop: rumqttc::EventLoop) -> EventStream {
    Box::pin(futures_util::stream::unfold(
        Some(event_loop),
        |state| async move {
            let mut event_loop = state?;
            let event = event_loop.poll().await;
            let next = event.is_ok().then_some(event_loop);
            Some((event, next))
        },
    ))
}
