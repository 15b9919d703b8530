//! What goes into one `PutEvents` call, and what each entry's result means: pure functions,
//! tested without a network.

use std::collections::{HashSet, VecDeque};

use crate::sinks::destination::{Outgoing, RejectionKind};

/// Entries per `PutEvents` call, at most (EventBridge's limit).
pub(super) const MAX_ENTRIES: usize = 10;
/// Bytes per `PutEvents` call, at most, as EventBridge counts them (its limit: 256 KB).
pub(super) const MAX_BYTES: usize = 256 * 1024;
/// What `Time` counts for, in an entry's size.
const TIME_BYTES: usize = 14;

/// `Source` of every entry.
pub(super) const SOURCE: &str = "edge-gateway";

/// `DetailType` of an event, an alert transition and a status.
pub(super) const EVENT: &str = "edge.event";
pub(super) const ALERT: &str = "edge.alert";
pub(super) const STATUS: &str = "edge.status";

/// An entry's size as EventBridge counts it: `Time`, `Source`, `DetailType` and `Detail`.
pub(super) fn entry_size(detail_type: &str, detail: &[u8]) -> usize {
    TIME_BYTES + SOURCE.len() + detail_type.len() + detail.len()
}

/// The size of an offered message's entry.
pub(super) fn size_of(message: &Outgoing) -> usize {
    let detail_type = match message.lane {
        crate::journal::Lane::Events => EVENT,
        crate::journal::Lane::Alerts => ALERT,
    };
    entry_size(detail_type, &message.row.payload)
}

/// Takes the next batch from the front of `queue`, in order: up to [`MAX_ENTRIES`] entries and
/// [`MAX_BYTES`]. The first entry is always taken (one too large for any call is refused before
/// it gets here).
pub(super) fn next_batch(queue: &mut VecDeque<Outgoing>) -> Vec<Outgoing> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(next) = queue.front() {
        let size = size_of(next);
        if batch.len() == MAX_ENTRIES || (!batch.is_empty() && bytes + size > MAX_BYTES) {
            break;
        }
        bytes += size;
        if let Some(message) = queue.pop_front() {
            batch.push(message);
        }
    }
    batch
}

/// What became of one entry of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// It has an `EventId`.
    Put,
    /// Refused with this error code.
    Failed(String),
}

/// What to do with each entry of a call, given each one's outcome (in the call's order):
/// confirm it, refuse it for good, or send it again. An entry that failed for now is sent
/// again, and so is every later entry of its device in the call, put or not: sent again after
/// it, they arrive after it (and twice, which consumers absorb by id), so the last copy of each
/// keeps the device's order.
pub(super) fn settle(batch: &[Outgoing], outcomes: &[Outcome]) -> Vec<Verdict> {
    let mut held: HashSet<&str> = HashSet::new();
    batch
        .iter()
        .zip(outcomes)
        .map(|(message, outcome)| {
            let device = message.row.device.as_str();
            match outcome {
                Outcome::Failed(code) if entry_error(code) == RejectionKind::Permanent => {
                    Verdict::Refuse
                }
                Outcome::Failed(_) => {
                    held.insert(device);
                    Verdict::Again
                }
                Outcome::Put if held.contains(device) => Verdict::Again,
                Outcome::Put => Verdict::Confirm,
            }
        })
        .collect()
}

/// What [`settle`] decided for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Confirm the row.
    Confirm,
    /// Refuse it for good (dead-lettered).
    Refuse,
    /// Send it again, first.
    Again,
}

/// What an entry's `ErrorCode` means: permanent for what EventBridge will never take (a
/// malformed or invalid entry), retryable otherwise (throttling, an internal failure, access
/// denied until a policy is fixed, a code this gateway does not know).
pub(super) fn entry_error(code: &str) -> RejectionKind {
    match code {
        "MalformedDetail" | "InvalidArgument" | "ValidationException" => RejectionKind::Permanent,
        _ => RejectionKind::Retryable,
    }
}

/// The entry's `Time`, in ms since the Unix epoch: the device's time if it sent one, else when
/// the gateway received it; an alert transition's `at`.
pub(super) fn entry_time(payload: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Times {
        ts: Option<i64>,
        received_at: Option<i64>,
        at: Option<i64>,
    }
    let times: Times = serde_json::from_slice(payload).ok()?;
    times.ts.or(times.received_at).or(times.at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Lane, StoredEvent};

    fn message(tag: u64, device: &str, payload_len: usize) -> Outgoing {
        Outgoing {
            tag,
            lane: Lane::Events,
            row: StoredEvent {
                id: i64::try_from(tag).unwrap_or_default(),
                device: device.into(),
                received_at_ms: 0,
                payload: vec![b' '; payload_len],
            },
        }
    }

    fn tags(batch: &[Outgoing]) -> Vec<u64> {
        batch.iter().map(|message| message.tag).collect()
    }

    #[test]
    fn a_batch_takes_ten_entries_in_order_whatever_their_devices() {
        let mut queue: VecDeque<Outgoing> =
            (0..25).map(|tag| message(tag, "one-device", 100)).collect();
        assert_eq!(tags(&next_batch(&mut queue)), (0..10).collect::<Vec<_>>());
        assert_eq!(tags(&next_batch(&mut queue)), (10..20).collect::<Vec<_>>());
        assert_eq!(tags(&next_batch(&mut queue)), (20..25).collect::<Vec<_>>());
        assert!(queue.is_empty());
    }

    #[test]
    fn a_batch_stays_within_256_kilobytes() {
        let big = MAX_BYTES / 2;
        let mut queue: VecDeque<Outgoing> = [
            message(0, "a", big),
            message(1, "b", big),
            message(2, "c", 10),
        ]
        .into();
        let first = next_batch(&mut queue);
        assert_eq!(tags(&first), [0]);
        assert!(first.iter().map(size_of).sum::<usize>() <= MAX_BYTES);
        assert_eq!(tags(&next_batch(&mut queue)), [1, 2]);
    }

    #[test]
    fn after_an_entry_that_failed_its_device_is_sent_again_from_there_in_order() {
        let batch = [
            message(0, "a", 10),
            message(1, "b", 10),
            message(2, "a", 10),
            message(3, "b", 10),
            message(4, "a", 10),
            message(5, "c", 10),
        ];
        let outcomes = [
            Outcome::Put,
            Outcome::Failed("ThrottlingException".into()),
            Outcome::Put,
            Outcome::Put,
            Outcome::Failed("MalformedDetail".into()),
            Outcome::Put,
        ];
        assert_eq!(
            settle(&batch, &outcomes),
            [
                Verdict::Confirm,
                Verdict::Again,
                Verdict::Confirm,
                // Put, but after b's failure: sent again after it.
                Verdict::Again,
                Verdict::Refuse,
                Verdict::Confirm,
            ]
        );
    }

    #[test]
    fn only_a_malformed_or_invalid_entry_is_refused_for_good() {
        assert_eq!(entry_error("MalformedDetail"), RejectionKind::Permanent);
        assert_eq!(entry_error("InvalidArgument"), RejectionKind::Permanent);
        for code in [
            "ThrottlingException",
            "InternalFailure",
            "AccessDeniedException",
            "SomethingNew",
        ] {
            assert_eq!(entry_error(code), RejectionKind::Retryable, "{code}");
        }
    }

    #[test]
    fn an_entry_is_timed_by_the_device_else_by_its_arrival() {
        assert_eq!(entry_time(br#"{"ts":5,"received_at":9}"#), Some(5));
        assert_eq!(entry_time(br#"{"received_at":9}"#), Some(9));
        assert_eq!(entry_time(br#"{"at":7,"state":"firing"}"#), Some(7));
        assert_eq!(entry_time(b"online"), None);
    }
}
