//! The publishing half shared by adapters whose client confirms each publish through a future
//! (a JetStream PubAck, an AMQP publisher confirm): a task of the connection's own publishes what
//! the driver offers, in order, and awaits the confirmations concurrently, passing each back.
//!
//! Offering only puts the message in a channel sized to the driver's window, so it never waits;
//! waiting for a confirmation reads the other channel, so it is cancel-safe. An error from the
//! client ends the task, and with it the connection.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::destination::{Confirmation, DestinationError, Outgoing};

/// A confirmation still to come.
pub(crate) type Pending =
    Pin<Box<dyn Future<Output = Result<Confirmation, DestinationError>> + Send>>;

/// Where a publisher task passes confirmations back; an error ends the connection.
pub(crate) type ConfirmationSender = mpsc::Sender<Result<Confirmation, DestinationError>>;

/// What publishing one message gave.
pub(crate) enum Published {
    /// Sent; its confirmation comes later.
    Sent(Pending),
    /// Settled at once: refused before it was sent, or the connection failed.
    Settled(Result<Confirmation, DestinationError>),
}

/// How one protocol publishes a message.
pub(crate) trait Publish: Send + Sync + 'static {
    /// Sends `message` (in the order of the calls).
    fn publish(&self, message: Outgoing) -> impl Future<Output = Published> + Send;
}

/// The connection's publisher task and its two channels.
#[derive(Debug)]
pub(crate) struct Pipeline {
    offers: Option<mpsc::Sender<Outgoing>>,
    confirmations: mpsc::Receiver<Result<Confirmation, DestinationError>>,
    task: JoinHandle<()>,
}

impl Pipeline {
    /// Starts the task for a window of `window` messages.
    pub(crate) fn start(publisher: impl Publish, window: usize) -> Self {
        Self::spawn(window, |pending, confirmed| {
            run(publisher, pending, confirmed)
        })
    }

    /// Starts a task of the adapter's own (one that batches, say) on the same two channels:
    /// it takes what is offered from the first and passes each confirmation back on the second.
    pub(crate) fn spawn<F>(
        window: usize,
        task: impl FnOnce(mpsc::Receiver<Outgoing>, ConfirmationSender) -> F,
    ) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (offers, pending) = mpsc::channel(window.max(1));
        let (confirmed, confirmations) = mpsc::channel(window.max(1) + 1);
        let task = tokio::spawn(task(pending, confirmed));
        Self {
            offers: Some(offers),
            confirmations,
            task,
        }
    }

    /// Hands a message to the task without waiting.
    pub(crate) fn offer(&self, message: Outgoing) -> Result<(), DestinationError> {
        self.offers
            .as_ref()
            .ok_or_else(|| DestinationError::transient("the connection is closing"))?
            .try_send(message)
            .map_err(|error| {
                DestinationError::transient(format!("the publisher is gone or behind: {error}"))
            })
    }

    /// The next confirmation; an error when the task stopped.
    pub(crate) async fn next(&mut self) -> Result<Confirmation, DestinationError> {
        match self.confirmations.recv().await {
            Some(result) => result,
            None => Err(DestinationError::transient("the publisher stopped")),
        }
    }

    /// Takes no more offers and collects the confirmations that come within `grace`.
    pub(crate) async fn drain(&mut self, grace: Duration) -> Vec<Confirmation> {
        let deadline = tokio::time::Instant::now() + grace;
        self.offers = None;
        let mut confirmed = Vec::new();
        while let Ok(Some(Ok(confirmation))) =
            tokio::time::timeout_at(deadline, self.confirmations.recv()).await
        {
            confirmed.push(confirmation);
        }
        confirmed
    }
}

impl Pipeline {
    /// Stops the task at once, dropping what it holds; nothing more is confirmed.
    pub(crate) fn stop(&mut self) {
        self.offers = None;
        self.task.abort();
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    publisher: impl Publish,
    mut offers: mpsc::Receiver<Outgoing>,
    confirmations: ConfirmationSender,
) {
    let mut pending = FuturesUnordered::new();
    let mut open = true;
    loop {
        let settled = tokio::select! {
            offer = offers.recv(), if open => match offer {
                Some(message) => match publisher.publish(message).await {
                    Published::Sent(confirmation) => {
                        pending.push(confirmation);
                        continue;
                    }
                    Published::Settled(settled) => settled,
                },
                None => {
                    open = false;
                    continue;
                }
            },
            Some(settled) = pending.next(), if !pending.is_empty() => settled,
            else => return,
        };
        let failed = settled.is_err();
        if confirmations.send(settled).await.is_err() || failed {
            return;
        }
    }
}
