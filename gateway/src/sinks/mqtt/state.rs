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

use std::collections::{HashMap, VecDeque};

/// A message handed to the MQTT client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflightMessage {
    /// A journal row, by the delivery driver's tag.
    Row {
        /// The tag.
        tag: u64,
    },
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
}

impl InflightWindow {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            unassigned: VecDeque::with_capacity(capacity),
            assigned: HashMap::with_capacity(capacity),
        }
    }

    /// Messages handed over and not yet acknowledged.
    pub(crate) fn len(&self) -> usize {
        self.unassigned.len() + self.assigned.len()
    }

    /// A message was handed to the client.
    pub(crate) fn handed_over(&mut self, message: InflightMessage) {
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
        self.assigned
            .remove(&pkid)
            .ok_or(WindowError::UnknownPacketId(pkid))
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
            InflightMessage::Status => None,
        }
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
