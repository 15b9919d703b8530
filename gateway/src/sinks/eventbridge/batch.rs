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

/// Takes the next batch from `queue` (in order): up to [`MAX_ENTRIES`] entries and
/// [`MAX_BYTES`], at most one per device. An entry of a device already in the batch stays,
/// and so does every later one of that device. The first entry is always taken (one too large
/// for any call is refused before it gets here).
pub(super) fn next_batch(queue: &mut VecDeque<Outgoing>) -> Vec<Outgoing> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut devices: HashSet<String> = HashSet::new();
    let mut index = 0;
    while index < queue.len() && batch.len() < MAX_ENTRIES {
        let size = size_of(&queue[index]);
        let device = &queue[index].row.device;
        if devices.contains(device) || (!batch.is_empty() && bytes + size > MAX_BYTES) {
            devices.insert(device.clone());
            index += 1;
            continue;
        }
        devices.insert(device.clone());
        bytes += size;
        if let Some(message) = queue.remove(index) {
            batch.push(message);
        }
    }
    batch
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
    fn a_batch_takes_ten_entries_at_most_one_per_device_in_order() {
        let mut queue: VecDeque<Outgoing> = (0..30)
            .map(|tag| message(tag, &format!("dev-{}", tag % 12), 100))
            .collect();
        let first = next_batch(&mut queue);
        assert_eq!(tags(&first), (0..10).collect::<Vec<_>>());
        // dev-10 and dev-11 come next, then dev-0 again: one entry each.
        let second = next_batch(&mut queue);
        assert_eq!(tags(&second), [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
        let third = next_batch(&mut queue);
        assert_eq!(tags(&third), (20..30).collect::<Vec<_>>());
        assert!(queue.is_empty());
    }

    #[test]
    fn a_device_seen_once_waits_with_all_its_later_entries() {
        let mut queue: VecDeque<Outgoing> = [
            message(0, "a", 10),
            message(1, "a", 10),
            message(2, "b", 10),
            message(3, "a", 10),
        ]
        .into();
        assert_eq!(tags(&next_batch(&mut queue)), [0, 2]);
        assert_eq!(tags(&next_batch(&mut queue)), [1]);
        assert_eq!(tags(&next_batch(&mut queue)), [3]);
    }

    #[test]
    fn a_batch_stays_within_256_kilobytes_and_keeps_order_when_it_skips() {
        let big = MAX_BYTES / 2;
        let mut queue: VecDeque<Outgoing> = [
            message(0, "a", big),
            message(1, "b", big),
            message(2, "c", 10),
            // Same device as one left out for size: it must wait too.
            message(3, "b", 10),
        ]
        .into();
        let first = next_batch(&mut queue);
        assert_eq!(tags(&first), [0, 2]);
        assert!(first.iter().map(size_of).sum::<usize>() <= MAX_BYTES);
        assert_eq!(tags(&next_batch(&mut queue)), [1]);
        assert_eq!(tags(&next_batch(&mut queue)), [3]);
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
