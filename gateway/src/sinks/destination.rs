//! The seam every destination plugs into: what a protocol adapter must do, and nothing more.
//!
//! The [delivery driver](super::driver) owns everything destinations share — reading the journal
//! in order per lane, the in-flight window, confirmations and rejections, reconnecting with
//! backoff, the ack timeout, the delivery position. An adapter only connects, hands messages to
//! its broker without waiting, reports each message's confirmation, and closes.
//!
//! # Contract
//! 1. [`Destination::connect`] returns a connection that is ready to take messages (connected,
//!    authenticated, its stream / exchange checked), having said `online` if the destination
//!    takes the status lane.
//! 2. [`Connection::offer`] never waits. The driver offers at most `max_inflight` messages that
//!    are not confirmed yet, in journal order per lane; the adapter keeps that order on the wire.
//! 3. Every offered message is, eventually, either confirmed or rejected through
//!    [`Connection::next`], exactly once, or the connection fails. A confirmation means the
//!    broker has taken responsibility for the message (PUBACK, PubAck, publisher confirm), and
//!    nothing less.
//! 4. [`Connection::next`] is cancel-safe: the driver waits on it beside other work.
//! 5. After an error from `offer` or `next` the connection is dropped; whatever it had not
//!    confirmed is offered again on the next one.

use std::future::Future;
use std::time::Duration;

use crate::journal::{Lane, StoredEvent};

/// The timeout a destination puts on one request of its own (a PubAck, an HTTP call): twice the
/// uplink's `ack_timeout`, so that a connection on which nothing is confirmed is noticed,
/// counted and logged as a stall by the driver first, at `ack_timeout`. The request's own
/// timeout only catches one request lost while others are confirmed.
pub(crate) fn request_timeout(ack_timeout: Duration) -> Duration {
    ack_timeout.saturating_mul(2)
}

/// One journal row handed to a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The driver's name for this message on this connection; confirmations name it.
    pub tag: u64,
    /// The lane it comes from.
    pub lane: Lane,
    /// The row: its device and the uplink message.
    pub row: StoredEvent,
}

/// What became of an offered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// The broker took it.
    Confirmed(u64),
    /// The broker refused it.
    Rejected(u64, Rejection),
}

/// Why a broker refused a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Whether sending it again can succeed.
    pub kind: RejectionKind,
    /// What the broker said.
    pub reason: String,
}

/// Whether a rejection is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// Try again later (no queue bound yet, no responders during a leader change, a full
    /// stream): the driver starts the connection over after a backoff, keeping per-device order.
    Retryable,
    /// It will never be taken (too large, refused by policy): dead-lettered with the reason,
    /// counted, and passed over.
    Permanent,
}

impl RejectionKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
        }
    }
}

/// A connection failed, or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DestinationError {
    /// What happened, for the log.
    pub message: String,
    /// Whether the cause is the configuration or the broker's set-up (a stream that does not
    /// cover our subjects, a refused login), which retrying does not fix by itself: logged at
    /// ERROR.
    pub misconfigured: bool,
}

impl DestinationError {
    /// A failure that may pass (the network, a broker restart).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            misconfigured: false,
        }
    }

    /// A failure that needs someone to change a setting.
    pub fn misconfigured(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            misconfigured: true,
        }
    }
}

/// A protocol adapter: how to reach one destination.
pub trait Destination: Send + Sync + 'static {
    /// A live connection.
    type Connection: Connection;

    /// Where it goes, for logs: a URL without credentials.
    fn describe(&self) -> String;

    /// Connects (see the contract, step 1).
    fn connect(
        &mut self,
    ) -> impl Future<Output = Result<Self::Connection, DestinationError>> + Send;
}

/// A live connection to a destination.
pub trait Connection: Send {
    /// Hands a message over without waiting (step 2). An error means the connection is gone.
    fn offer(&mut self, message: Outgoing) -> Result<(), DestinationError>;

    /// The driver has offered what it had for now: an adapter that gathers messages into
    /// batches may send a partial one. An error means the connection is gone.
    fn offered(&mut self) -> Result<(), DestinationError> {
        Ok(())
    }

    /// The next confirmation or rejection (steps 3 and 4).
    fn next(&mut self) -> impl Future<Output = Result<Confirmation, DestinationError>> + Send;

    /// Says `offline` if the destination takes the status lane, waits up to `grace` for the
    /// confirmations still due, and disconnects. Returns the confirmations that came.
    fn close(self, grace: Duration) -> impl Future<Output = Vec<Confirmation>> + Send;
}
