//! What every source does with a payload: decode, validate, stamp, hand to the journal; or count,
//! log (rate-limited) and dead-letter it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::admin::{Metrics, Source};
use crate::decode::{self, DeviceEvent, RejectReason, Rejection};
use crate::journal::{DeadLetter, JournalHandle, Record};
use crate::rules::{Observed, RulesHandle};
use crate::sources::Grant;

/// At most one WARN per reason in this interval; the rest are counted and summarised.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Turns raw payloads into journal records. Clones share their warning limits, so one source's
/// many connections log like one. Accepted events are handed to the rule engine in batches
/// ([`Ingest::flush_rules`]), one hand-over per read rather than per event.
#[derive(Debug)]
pub struct Ingest {
    source: Source,
    gateway_id: Arc<str>,
    journal: JournalHandle,
    metrics: Arc<Metrics>,
    warnings: Arc<Mutex<WarnLimiter>>,
    rules: Option<RulesHandle>,
    for_rules: Mutex<Vec<Observed>>,
}

impl Clone for Ingest {
    fn clone(&self) -> Self {
        Self {
            source: self.source,
            gateway_id: Arc::clone(&self.gateway_id),
            journal: self.journal.clone(),
            metrics: Arc::clone(&self.metrics),
            warnings: Arc::clone(&self.warnings),
            rules: self.rules.clone(),
            for_rules: Mutex::default(),
        }
    }
}

/// Events held for the rule engine before they are handed over anyway.
const RULES_BATCH: usize = 256;

impl Ingest {
    /// An ingest stage for one source.
    pub fn new(
        source: Source,
        gateway_id: String,
        journal: JournalHandle,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            source,
            gateway_id: gateway_id.into(),
            journal,
            metrics,
            warnings: Arc::default(),
            rules: None,
            for_rules: Mutex::default(),
        }
    }

    /// Also hands every accepted event to the rule engine.
    pub fn with_rules(mut self, rules: RulesHandle) -> Self {
        self.rules = Some(rules);
        self
    }

    /// The figures sources count into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// `Some(n)` when a warning about `reason` may be logged now (`n` were suppressed since the
    /// last one); `None` when it is suppressed. Shared by every clone of this stage.
    pub fn allow_warning(&self, reason: &'static str) -> Option<u64> {
        self.warnings
            .lock()
            .ok()
            .and_then(|mut limiter| limiter.allow(reason))
    }

    /// The journal records go to.
    pub fn journal(&self) -> &JournalHandle {
        &self.journal
    }

    /// Decodes one payload that arrived on `topic` from a connection with `grant`: the record
    /// to journal, or `None` when it was rejected (then it is already counted, logged and
    /// dead-lettered). A device the grant does not cover is refused before its payload is read.
    pub async fn accept(&self, grant: &Grant, topic: &str, payload: &[u8]) -> Option<Record> {
        let received_at_ms = now_ms();
        let decoded = decode::device_from_topic(topic)
            .and_then(|device| {
                if grant.speaks_for(device) {
                    Ok(device)
                } else {
                    Err(Rejection::new(
                        RejectReason::NotAuthorized,
                        format!(
                            "login `{}` may not publish for device `{device}`",
                            grant.login().unwrap_or_default()
                        ),
                    ))
                }
            })
            .and_then(|device| decode::decode_payload(device, payload));
        match decoded {
            Ok(event) => Some(self.record(event, received_at_ms)),
            Err(rejection) => {
                self.reject(topic, payload, rejection, received_at_ms).await;
                None
            }
        }
    }

    /// The journal record of an accepted event; the event goes on to the rule engine.
    pub fn record(&self, event: DeviceEvent, received_at_ms: i64) -> Record {
        self.metrics.add_received(self.source, 1);
        let record = Record {
            device: event.device.clone(),
            received_at_ms,
            payload: decode::encode_uplink(
                &event,
                &self.gateway_id,
                u64::try_from(received_at_ms).unwrap_or(0),
            ),
        };
        if self.rules.as_ref().is_some_and(RulesHandle::is_active) {
            let event_id = event.id();
            let full = self.for_rules.lock().is_ok_and(|mut held| {
                held.push(Observed {
                    device: event.device,
                    event_id,
                    at_ms: received_at_ms,
                    readings: event.readings,
                });
                held.len() >= RULES_BATCH
            });
            if full {
                self.flush_rules();
            }
        }
        record
    }

    /// Hands the events accepted since the last call to the rule engine. Sources call it after
    /// each read.
    pub fn flush_rules(&self) {
        let Some(rules) = &self.rules else {
            return;
        };
        let held = self
            .for_rules
            .lock()
            .map(|mut held| std::mem::take(&mut *held))
            .unwrap_or_default();
        rules.observe(held);
    }

    /// Counts, logs and dead-letters a rejected input.
    pub async fn reject(
        &self,
        topic: &str,
        payload: &[u8],
        rejection: Rejection,
        received_at_ms: i64,
    ) {
        let reason = rejection.reason.as_str();
        self.metrics.add_rejected(reason);
        if let Some(suppressed) = self.allow_warning(reason) {
            tracing::warn!(
                source = self.source.as_str(),
                topic,
                reason,
                suppressed,
                "rejected input: {}",
                rejection.detail
            );
        }
        let letter = DeadLetter {
            received_at_ms,
            source: self.source.as_str(),
            topic: topic.to_owned(),
            reason,
            detail: rejection.detail,
            payload: payload[..payload.len().min(DeadLetter::MAX_PAYLOAD)].to_vec(),
        };
        if self.journal.dead_letter(letter).is_err() {
            self.metrics.add_dead_letter_dropped();
        }
    }
}

/// Rate-limits warnings per reason.
#[derive(Debug, Default)]
pub(crate) struct WarnLimiter {
    last: std::collections::HashMap<&'static str, (Instant, u64)>,
}

impl WarnLimiter {
    /// `Some(n)` when a warning may be logged now, `n` being how many were suppressed since the
    /// last one; `None` when this one is suppressed.
    pub(crate) fn allow(&mut self, reason: &'static str) -> Option<u64> {
        let now = Instant::now();
        match self.last.get_mut(reason) {
            Some((at, suppressed)) if now.duration_since(*at) < WARN_INTERVAL => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let count = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(count)
            }
            None => {
                self.last.insert(reason, (now, 0));
                Some(0)
            }
        }
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_limited_per_reason() {
        let mut limiter = WarnLimiter::default();
        assert_eq!(limiter.allow("a"), Some(0));
        assert_eq!(limiter.allow("a"), None);
        assert_eq!(limiter.allow("a"), None);
        assert_eq!(
            limiter.allow("b"),
            Some(0),
            "reasons are limited separately"
        );
    }
}
