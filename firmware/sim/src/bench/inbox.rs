//! What a consumer at the far end has received: the same tally for every backbone (MQTT, NATS
//! JetStream, AMQP), so that figures taken through different brokers compare.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::payload::{now_us, parse_arrival};

/// What a consumer has seen of one run (one boot).
#[derive(Debug, Default)]
pub struct Inbox {
    /// Count only events of this boot.
    boot: u32,
    /// Distinct events received.
    seen: HashSet<u64>,
    /// Messages of this run received, duplicates included.
    received: u64,
    /// Latency of each first arrival, µs.
    latencies_us: Vec<f64>,
    /// Receive time of the first and of the latest new event.
    first_at: Option<Instant>,
    last_at: Option<Instant>,
}

impl Inbox {
    /// Distinct events received.
    pub fn distinct(&self) -> u64 {
        self.seen.len() as u64
    }

    /// Messages received, duplicates included.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// From the first to the latest new event.
    pub fn span(&self) -> Duration {
        match (self.first_at, self.last_at) {
            (Some(first), Some(last)) => last - first,
            _ => Duration::ZERO,
        }
    }

    /// When the latest new event arrived.
    pub fn last_at(&self) -> Option<Instant> {
        self.last_at
    }

    /// Latencies of first arrivals in µs, sorted.
    pub fn sorted_latencies(&self) -> Vec<f64> {
        let mut latencies = self.latencies_us.clone();
        latencies.sort_by(f64::total_cmp);
        latencies
    }

    /// Counts `payload`, received at `received_us` (µs since the epoch) and `at`: an event of
    /// this run, or each event of this run in a gateway's batch (a JSON array).
    fn record(&mut self, payload: &[u8], received_us: f64, at: Instant) {
        if payload.first() == Some(&b'[') {
            if let Ok(items) = serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(payload)
            {
                for item in items {
                    self.record_one(item.get().as_bytes(), received_us, at);
                }
            }
            return;
        }
        self.record_one(payload, received_us, at);
    }

    /// Counts one event, if it is one of this run.
    fn record_one(&mut self, payload: &[u8], received_us: f64, at: Instant) {
        let Some(arrival) = parse_arrival(payload) else {
            return;
        };
        if arrival.boot != self.boot {
            return;
        }
        self.received += 1;
        if self.seen.insert(arrival.key) {
            self.latencies_us.push(received_us - arrival.sent_us);
            self.first_at.get_or_insert(at);
            self.last_at = Some(at);
        }
    }
}

/// A consumer's tally, shared between the task that receives and the command that reports.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// Which backbone it consumes from: `mqtt`, `nats`, `amqp` (the `via` of its results).
    via: &'static str,
    inbox: Arc<Mutex<Inbox>>,
}

impl Consumer {
    /// An empty tally of the events of `boot`, received through `via`.
    pub fn new(via: &'static str, boot: u32) -> Self {
        Self {
            via,
            inbox: Arc::new(Mutex::new(Inbox {
                boot,
                ..Inbox::default()
            })),
        }
    }

    /// Which backbone it consumes from.
    pub fn via(&self) -> &'static str {
        self.via
    }

    /// Counts a received message (anything that is not an event of this run is passed over).
    /// Called by the receiving task as soon as a message is in hand.
    pub fn record(&self, payload: &[u8]) {
        let received_us = now_us() as f64;
        let at = Instant::now();
        self.lock().record(payload, received_us, at);
    }

    /// Waits until `expected` distinct events arrived, or no new one arrived for `idle` (after
    /// the first one; before it, for `first_within`).
    pub async fn wait_for(&self, expected: u64, first_within: Duration, idle: Duration) {
        let started = Instant::now();
        loop {
            let (distinct, last_at) = {
                let inbox = self.lock();
                (inbox.distinct(), inbox.last_at())
            };
            if distinct >= expected {
                return;
            }
            let quiet_since = last_at.unwrap_or(started);
            let limit = if last_at.is_some() {
                idle
            } else {
                first_within
            };
            if quiet_since.elapsed() > limit {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The inbox, locked.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The value at quantile `q` (0 to 1) of sorted `values` (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::payload::event_payload;

    #[test]
    fn quantiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), 50.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&values, 1.0), 100.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn counts_this_runs_events_once_each() {
        let mut inbox = Inbox {
            boot: 7,
            ..Inbox::default()
        };
        let at = Instant::now();
        let event = event_payload("bench-1", 7, 3, 1_000);
        inbox.record(event.as_bytes(), 1_500.0, at);
        inbox.record(event.as_bytes(), 2_000.0, at);
        inbox.record(
            event_payload("bench-1", 6, 4, 1_000).as_bytes(),
            1_500.0,
            at,
        );
        inbox.record(b"online", 1_500.0, at);
        assert_eq!(inbox.distinct(), 1);
        assert_eq!(inbox.received(), 2, "a duplicate is received, not distinct");
        assert_eq!(inbox.sorted_latencies(), vec![500.0], "first arrival only");
    }
    #[test]
    fn counts_each_event_of_a_gateways_batch() {
        let mut inbox = Inbox {
            boot: 7,
            ..Inbox::default()
        };
        let at = Instant::now();
        let batch = format!(
            "[{},{},{}]",
            event_payload("bench-1", 7, 1, 1_000),
            event_payload("bench-2", 7, 1, 1_000),
            event_payload("bench-1", 6, 2, 1_000),
        );
        inbox.record(batch.as_bytes(), 1_500.0, at);
        assert_eq!(
            inbox.distinct(),
            2,
            "this run's two events, not the other boot's"
        );
        inbox.record(b"[not json", 1_500.0, at);
        assert_eq!(inbox.received(), 2);
    }
}
