//! Which packet id carries which journal row: the bookkeeping behind at-least-once delivery over
//! rumqttc.
//!
//! rumqttc assigns packet ids inside its event loop and reports them as
//! `Outgoing::Publish(pkid)`, in the order the publishes were handed to it; a PUBACK names the
//! packet id. So every publish handed over is queued as *unassigned*; each
//! `Outgoing::Publish(pkid)` assigns the oldest unassigned message to `pkid`; each PUBACK
//! releases the message assigned to its `pkid`.
//!
//! # Invariants
//! 1. A message is in exactly one place: unassigned, or assigned to one packet id.
//! 2. The delivery driver keeps at most its window in flight; with the status message, that is
//!    what rumqttc's own in-flight limit is set to.
//! 3. A connection's state is dropped with the connection: after a reconnect everything that was
//!    in flight is offered again by the delivery driver, so a packet id never outlives the
//!    connection that assigned it.
//! 4. A batch is one publish: its PUBACK confirms every row it carries, and nothing else does.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Batch;

/// A message handed to the MQTT client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InflightMessage {
    /// A journal row, by the delivery driver's tag.
    Row {
        /// The tag.
        tag: u64,
    },
    /// A batch of event rows, by their tags, in journal order.
    Batch(Vec<u64>),
    /// The gateway's status message.
    Status,
}

/// Something the event loop reported that does not fit the bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WindowError {
    /// A packet id was reported for a publish that was never handed over.
    #[error("packet id {0} was assigned but no publish is waiting for one")]
    NothingUnassigned(u16),
    /// A packet id was reported while still in use.
    #[error("packet id {0} was assigned twice")]
    PacketIdInUse(u16),
    /// A PUBACK named a packet id that carries nothing.
    #[error("puback for unknown packet id {0}")]
    UnknownPacketId(u16),
}

/// The messages in flight on one connection.
#[derive(Debug)]
pub(crate) struct InflightWindow {
    unassigned: VecDeque<InflightMessage>,
    assigned: HashMap<u16, InflightMessage>,
    /// Messages carrying rows (not the status), handed over and not yet acknowledged.
    carrying_rows: usize,
}

impl InflightWindow {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            unassigned: VecDeque::with_capacity(capacity),
            assigned: HashMap::with_capacity(capacity),
            carrying_rows: 0,
        }
    }

    /// Messages handed over and not yet acknowledged.
    pub(crate) fn len(&self) -> usize {
        self.unassigned.len() + self.assigned.len()
    }

    /// Messages carrying rows handed over and not yet acknowledged.
    pub(crate) fn carrying_rows(&self) -> usize {
        self.carrying_rows
    }

    /// A message was handed to the client.
    pub(crate) fn handed_over(&mut self, message: InflightMessage) {
        if message != InflightMessage::Status {
            self.carrying_rows += 1;
        }
        self.unassigned.push_back(message);
    }

    /// The client put the oldest handed-over message on the wire as `pkid`.
    pub(crate) fn on_outgoing_publish(&mut self, pkid: u16) -> Result<(), WindowError> {
        if self.assigned.contains_key(&pkid) {
            return Err(WindowError::PacketIdInUse(pkid));
        }
        let message = self
            .unassigned
            .pop_front()
            .ok_or(WindowError::NothingUnassigned(pkid))?;
        self.assigned.insert(pkid, message);
        Ok(())
    }

    /// The broker acknowledged `pkid`: the message it carried is delivered.
    pub(crate) fn on_puback(&mut self, pkid: u16) -> Result<InflightMessage, WindowError> {
        let message = self
            .assigned
            .remove(&pkid)
            .ok_or(WindowError::UnknownPacketId(pkid))?;
        if message != InflightMessage::Status {
            self.carrying_rows = self.carrying_rows.saturating_sub(1);
        }
        Ok(message)
    }
}

/// The batch being filled: event rows, rendered as one JSON array as they come.
#[derive(Debug)]
pub(crate) struct Batcher {
    limits: Batch,
    tags: Vec<u64>,
    /// `[` and the rows so far, separated by commas; `]` is added when it is taken.
    array: Vec<u8>,
    /// When its first row came.
    since: Option<Instant>,
}

impl Batcher {
    pub(crate) fn new(limits: Batch) -> Self {
        Self {
            limits,
            tags: Vec::new(),
            array: Vec::new(),
            since: None,
        }
    }

    /// Whether it holds no row.
    pub(crate) fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Whether a row of `len` bytes can join without passing `max_bytes` (an empty batch takes
    /// any row: one larger than `max_bytes` goes alone).
    pub(crate) fn fits(&self, len: usize) -> bool {
        // With the comma before it and the closing bracket.
        let after = self.array.len() + len + 2;
        self.is_empty() || after <= self.limits.max_bytes as usize
    }

    /// Adds a row (see [`Self::fits`]).
    pub(crate) fn push(&mut self, tag: u64, payload: &[u8], now: Instant) {
        if self.tags.is_empty() {
            self.array.clear();
            self.array.push(b'[');
            self.since = Some(now);
        } else {
            self.array.push(b',');
        }
        self.array.extend_from_slice(payload);
        self.tags.push(tag);
    }

    /// Whether it holds `max_events` rows.
    pub(crate) fn is_full(&self) -> bool {
        self.tags.len() >= self.limits.max_events as usize
    }

    /// When it has waited `max_delay` for more rows.
    pub(crate) fn due_at(&self) -> Option<Instant> {
        self.since.map(|since| since + self.limits.max_delay)
    }

    /// Whether a batch that is not full may still wait for more rows.
    pub(crate) fn waits(&self) -> bool {
        self.limits.max_delay > Duration::ZERO
    }

    /// Takes the batch: its tags and the JSON array.
    pub(crate) fn take(&mut self) -> Option<(Vec<u64>, Vec<u8>)> {
        if self.tags.is_empty() {
            return None;
        }
        self.since = None;
        let mut array = std::mem::take(&mut self.array);
        array.push(b']');
        Some((std::mem::take(&mut self.tags), array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tag: u64) -> InflightMessage {
        InflightMessage::Row { tag }
    }

    fn id_of(message: InflightMessage) -> Option<u64> {
        match message {
            InflightMessage::Row { tag } => Some(tag),
            InflightMessage::Batch(_) | InflightMessage::Status => None,
        }
    }

    #[test]
    fn a_batch_is_confirmed_whole_by_its_puback() {
        let mut window = InflightWindow::new(3);
        window.handed_over(InflightMessage::Status);
        window.handed_over(InflightMessage::Batch(vec![4, 5, 6]));
        assert_eq!(window.carrying_rows(), 1);
        window.on_outgoing_publish(1).expect("assign");
        window.on_outgoing_publish(2).expect("assign");
        assert_eq!(window.on_puback(1), Ok(InflightMessage::Status));
        assert_eq!(window.carrying_rows(), 1, "the status carries no row");
        assert_eq!(
            window.on_puback(2),
            Ok(InflightMessage::Batch(vec![4, 5, 6]))
        );
        assert_eq!(window.carrying_rows(), 0);
    }

    fn limits(max_events: u32, max_bytes: u32) -> Batch {
        Batch {
            max_events,
            max_bytes,
            max_delay: Duration::from_millis(5),
        }
    }

    #[test]
    fn a_batch_is_a_json_array_of_the_rows_in_order() {
        let now = Instant::now();
        let mut batcher = Batcher::new(limits(3, 1024));
        assert_eq!(batcher.take(), None);
        batcher.push(7, br#"{"id":"a"}"#, now);
        assert_eq!(batcher.due_at(), Some(now + Duration::from_millis(5)));
        batcher.push(8, br#"{"id":"b"}"#, now + Duration::from_millis(1));
        assert!(!batcher.is_full());
        batcher.push(9, br#"{"id":"c"}"#, now + Duration::from_millis(2));
        assert!(batcher.is_full());
        let (tags, array) = batcher.take().expect("a batch");
        assert_eq!(tags, vec![7, 8, 9]);
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&array).expect("json");
        let ids: Vec<&str> = parsed.iter().filter_map(|row| row["id"].as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(batcher.is_empty());
        assert_eq!(batcher.due_at(), None);
        // The next batch starts afresh.
        batcher.push(10, b"{}", now);
        assert_eq!(
            batcher.take().map(|(_, array)| array),
            Some(b"[{}]".to_vec())
        );
    }

    #[test]
    fn max_bytes_counts_the_whole_array_and_a_large_row_goes_alone() {
        let now = Instant::now();
        // `[` + 10 + `,` + 10 + `]` = 23 bytes.
        let mut batcher = Batcher::new(limits(100, 23));
        let row = b"0123456789";
        assert!(batcher.fits(row.len()));
        batcher.push(1, row, now);
        assert!(batcher.fits(row.len()));
        batcher.push(2, row, now);
        assert!(!batcher.fits(1), "a third row would pass max_bytes");
        let (_, array) = batcher.take().expect("a batch");
        assert_eq!(array.len(), 23);
        let large = [b'x'; 100];
        assert!(batcher.fits(large.len()), "an empty batch takes any row");
    }

    #[test]
    fn packet_ids_are_assigned_in_hand_over_order() {
        let mut window = InflightWindow::new(3);
        window.handed_over(InflightMessage::Status);
        window.handed_over(row(10));
        window.handed_over(row(11));
        assert_eq!(window.len(), 3);
        assert_eq!(window.on_outgoing_publish(1), Ok(()));
        assert_eq!(window.on_outgoing_publish(2), Ok(()));
        assert_eq!(window.on_outgoing_publish(3), Ok(()));
        // acks may come in any order
        assert_eq!(window.on_puback(3).map(id_of), Ok(Some(11)));
        assert_eq!(window.on_puback(1), Ok(InflightMessage::Status));
        assert_eq!(window.len(), 1);
        assert_eq!(window.on_puback(2).map(id_of), Ok(Some(10)));
        assert_eq!(window.len(), 0);
    }

    #[test]
    fn a_packet_id_is_reused_only_after_its_ack() {
        let mut window = InflightWindow::new(2);
        window.handed_over(row(1));
        window.handed_over(row(2));
        window.on_outgoing_publish(1).expect("assign");
        // a collision held back by the client: it reports the id again only after the ack
        assert_eq!(
            window.on_outgoing_publish(1),
            Err(WindowError::PacketIdInUse(1))
        );
        assert_eq!(window.on_puback(1).map(id_of), Ok(Some(1)));
        window.on_outgoing_publish(1).expect("reuse after ack");
        assert_eq!(window.on_puback(1).map(id_of), Ok(Some(2)));
    }

    #[test]
    fn unexpected_reports_are_errors_not_panics() {
        let mut window = InflightWindow::new(2);
        assert_eq!(
            window.on_outgoing_publish(7),
            Err(WindowError::NothingUnassigned(7))
        );
        assert_eq!(window.on_puback(7), Err(WindowError::UnknownPacketId(7)));
    }
}
