//! The bare client: what a broker allows with the gateway's delivery guarantee and none of the
//! gateway's work (no device connections, no journal, no fsync).
//!
//! 1. One connection publishes the messages the gateway would send, byte for byte: the uplink
//!    JSON of [`edge_schema::encode_event`], to the same subjects or routing keys, with the same
//!    message id, for the same set of device names (round robin).
//! 2. At most `window` publishes await their confirmation at once (the gateway's
//!    `max_inflight`, 256 by default); confirmations are awaited concurrently while publishing
//!    goes on, as the gateway's adapters do.
//! 3. A message counts as delivered only when the broker confirmed it (JetStream PubAck, AMQP
//!    publisher confirm); a refusal is counted, not retried.
//!
//! Paced runs send event `i` at `i / rate` seconds after the start; a late event is sent at
//! once, so the rate holds on average.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::payload::{device_name, now_us};

/// The broker's confirmation of one message, still to come.
pub type Confirm = BoxFuture<'static, anyhow::Result<()>>;

/// A broker client that publishes with confirmations.
pub trait Publisher {
    /// Sends `payload`, the message `id` of `device`'s event, to where the gateway would send
    /// it; the returned future resolves when the broker confirms it. An error here means the
    /// connection is unusable.
    fn publish(
        &mut self,
        device: &str,
        id: String,
        payload: Vec<u8>,
    ) -> impl Future<Output = anyhow::Result<Confirm>> + Send;
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct BarePlan {
    /// The gateway id the messages name (and their subjects or routing keys).
    pub gateway: String,
    /// Device name prefix (names are `{prefix}-{index}`).
    pub prefix: String,
    /// Device names the events are spread over.
    pub devices: usize,
    /// Boot sent with every event.
    pub boot: u32,
    /// Events in total.
    pub events: u64,
    /// Events per second; `None`: as fast as the window allows.
    pub rate: Option<u64>,
    /// Publishes awaiting their confirmation at most.
    pub window: usize,
}

/// What a bare run did.
#[derive(Debug, Clone, Default)]
pub struct BareReport {
    /// Messages published.
    pub sent: u64,
    /// Messages the broker confirmed.
    pub confirmed: u64,
    /// Messages refused (or whose confirmation failed).
    pub failed: u64,
    /// The first refusal, for the log.
    pub first_failure: Option<String>,
    /// From the first publish to the last confirmation.
    pub elapsed: Duration,
}

impl BareReport {
    fn settle(&mut self, result: anyhow::Result<()>) {
        match result {
            Ok(()) => self.confirmed += 1,
            Err(error) => {
                self.failed += 1;
                self.first_failure
                    .get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
}

/// Publishes `plan` through `publisher`; returns once every message is confirmed or refused.
pub async fn run<P: Publisher>(publisher: &mut P, plan: &BarePlan) -> anyhow::Result<BareReport> {
    let devices = plan.devices.max(1);
    let names: Vec<String> = (0..devices)
        .map(|index| device_name(&plan.prefix, index))
        .collect();
    let window = plan.window.max(1);
    let mut readings = vec![("sent_us".to_owned(), 0.0)];
    let mut confirms = FuturesUnordered::new();
    let mut report = BareReport::default();
    let started = Instant::now();
    for index in 0..plan.events {
        if let Some(rate) = plan.rate {
            let due = started + Duration::from_secs_f64(index as f64 / rate.max(1) as f64);
            loop {
                tokio::select! {
                    biased;
                    () = tokio::time::sleep_until(due) => break,
                    Some(result) = confirms.next(), if !confirms.is_empty() => {
                        report.settle(result);
                    }
                }
            }
        }
        while confirms.len() >= window {
            if let Some(result) = confirms.next().await {
                report.settle(result);
            }
        }
        let device = &names[(index % devices as u64) as usize];
        let sent_us = now_us();
        readings[0].1 = sent_us as f64;
        let payload = edge_schema::encode_event(&edge_schema::EventFields {
            gateway: &plan.gateway,
            device,
            boot: plan.boot,
            seq: u32::try_from(index / devices as u64)?,
            ts: None,
            received_at: sent_us / 1000,
            readings: &readings,
            kind: None,
        });
        let id = edge_schema::message_id(&payload)
            .map(|id| id.into_owned())
            .unwrap_or_default();
        confirms.push(publisher.publish(device, id, payload).await?);
        report.sent += 1;
    }
    while let Some(result) = confirms.next().await {
        report.settle(result);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
