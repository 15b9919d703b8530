//! Reading device events from the embedded broker.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use tokio::sync::watch;

use crate::journal::Record;
use crate::sources::Ingest;

/// Topic filter of device events.
pub(crate) const EVENTS_FILTER: &str = "devices/+/events";
/// Most events handed to the journal in one request.
const MAX_BATCH: usize = 512;

/// Reads what devices publish and hands it to the journal in batches.
pub struct MqttSource {
    link_tx: LinkTx,
    link_rx: LinkRx,
    ingest: Ingest,
}

impl std::fmt::Debug for MqttSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSource")
            .field("ingest", &self.ingest)
            .finish_non_exhaustive()
    }
}

impl MqttSource {
    /// A source reading through `link`.
    pub fn new((link_tx, link_rx): (LinkTx, LinkRx), ingest: Ingest) -> Self {
        Self {
            link_tx,
            link_rx,
            ingest,
        }
    }

    /// Runs until `shutdown` turns true or the broker goes away.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if let Err(error) = self.link_tx.try_subscribe(EVENTS_FILTER) {
            tracing::error!(%error, "failed to subscribe to device events");
            return;
        }
        let mut batch: Vec<Record> = Vec::new();
        let mut overflow = OverflowDetector::default();
        loop {
            let notification = tokio::select! {
                notification = self.link_rx.next() => notification,
                _ = shutdown.changed() => return,
            };
            let mut next = Some(notification);
            // Take what the router has already delivered, without waiting, into one batch.
            while let Some(notification) = next.take() {
                match notification {
                    Ok(Some(Notification::Forward(forward))) => {
                        if let Some(lost) = overflow.observe(forward.cursor) {
                            self.ingest.broker_overflow(lost);
                        }
                        let topic = String::from_utf8_lossy(&forward.publish.topic);
                        if let Some(record) =
                            self.ingest.accept(&topic, &forward.publish.payload).await
                        {
                            batch.push(record);
                        }
                    }
                    Ok(Some(Notification::Unschedule)) => {
                        // The router paused this link because its buffer filled up: resume it.
                        if let Err(error) = self.link_rx.wake().await {
                            tracing::error!(%error, "embedded broker link failed");
                            return;
                        }
                    }
                    Ok(Some(_)) | Ok(None) => {}
                    Err(error) => {
                        tracing::error!(%error, "embedded broker link failed");
                        return;
                    }
                }
                if batch.len() < MAX_BATCH {
                    next = now_or_never(self.link_rx.next());
                }
            }
            if !batch.is_empty()
                && self
                    .ingest
                    .journal()
                    .append(std::mem::take(&mut batch))
                    .await
                    .is_err()
            {
                tracing::error!("journal writer stopped; device events can no longer be stored");
                return;
            }
        }
    }
}

/// Polls a future once: its output if it is ready now.
fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// Notices when rumqttd's router dropped messages before the gateway read them.
///
/// The router keeps device messages in a bounded in-memory log and acknowledges them on append.
/// When devices publish faster than the journal commits, it drops the log's oldest segment and
/// the link's read cursor jumps past messages it never delivered. Each forwarded message carries
/// its absolute offset in that log, one per message, so a gap in the offsets is the number lost.
#[derive(Debug, Default)]
struct OverflowDetector {
    last_offset: Option<u64>,
}

impl OverflowDetector {
    /// Takes the cursor of a forwarded message; returns how many were skipped before it.
    fn observe(&mut self, cursor: Option<(u64, u64)>) -> Option<u64> {
        let (_, offset) = cursor?;
        let skipped = match self.last_offset {
            Some(last) if offset > last + 1 => Some(offset - last - 1),
            _ => None,
        };
        self.last_offset = Some(offset);
        skipped
    }
}

#[cfg(test)]
mod tests {
    use super::OverflowDetector;

    #[test]
    fn gaps_in_router_offsets_are_counted() {
        let mut detector = OverflowDetector::default();
        assert_eq!(detector.observe(Some((0, 0))), None);
        assert_eq!(detector.observe(Some((0, 1))), None);
        assert_eq!(
            detector.observe(None),
            None,
            "a forward without cursor changes nothing"
        );
        assert_eq!(detector.observe(Some((1, 3094))), Some(3092));
        assert_eq!(detector.observe(Some((1, 3095))), None);
    }
}
