//! The outbox: events kept until the gateway acknowledges them.
//!
//! # Invariants
//! 1. Every event gets the next `seq`: 0 for the first event of the boot, then one more per event,
//!    whether it is later acknowledged or dropped. The gateway therefore sees a gap exactly where
//!    events were dropped.
//! 2. The held events have consecutive `seq` values, oldest first: events enter only at the back
//!    and leave only from the front.
//! 3. An event leaves when an ack covers it (`ack.seq >= event.seq`; that the ack is for this boot
//!    is the [link](crate::link)'s check), or, oldest first, when a new event arrives while the
//!    outbox is full. Drops are counted: a device cut off from its gateway keeps its newest data
//!    and says how much it lost.
//!
//! `seq` is 32 bits and is not expected to wrap: at 10 events a second a boot lasts 13 years.

use heapless::Deque;

use crate::sensor::Measurement;

/// One event waiting for its ack.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Sequence number within the boot.
    pub seq: u32,
    /// Wall-clock time of the measurement in ms since the Unix epoch, if the device knew it.
    pub ts: Option<u64>,
    /// Optional category, e.g. `"alarm"`.
    pub kind: Option<&'static str>,
    /// The readings.
    pub measurement: Measurement,
}

/// What [`Outbox::push`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    /// The `seq` the new event got.
    pub seq: u32,
    /// The oldest event, if it had to go to make room.
    pub dropped: Option<OutboxEvent>,
}

/// Up to `N` unacknowledged events, oldest first (`N` ≥ 1).
#[derive(Debug)]
pub struct Outbox<const N: usize> {
    events: Deque<OutboxEvent, N>,
    next_seq: u32,
    dropped_full: u32,
}

impl<const N: usize> Default for Outbox<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Outbox<N> {
    /// An empty outbox whose first event gets `seq` 0.
    pub const fn new() -> Self {
        const { assert!(N > 0, "an outbox holds at least one event") };
        Self {
            events: Deque::new(),
            next_seq: 0,
            dropped_full: 0,
        }
    }

    /// Appends an event with the next `seq`; when the outbox is full, the oldest event goes first
    /// and is counted in [`dropped_full`](Self::dropped_full).
    pub fn push(
        &mut self,
        ts: Option<u64>,
        kind: Option<&'static str>,
        measurement: Measurement,
    ) -> Pushed {
        let dropped = if self.events.is_full() {
            self.dropped_full = self.dropped_full.wrapping_add(1);
            self.events.pop_front()
        } else {
            None
        };
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let event = OutboxEvent {
            seq,
            ts,
            kind,
            measurement,
        };
        // There is room: a full outbox just lost its oldest event (N ≥ 1).
        let _ = self.events.push_back(event);
        Pushed { seq, dropped }
    }

    /// Frees every held event with `seq` up to and including `seq`; returns how many.
    pub fn ack(&mut self, seq: u32) -> usize {
        let mut freed = 0;
        while self.events.pop_front_if(|event| event.seq <= seq).is_some() {
            freed += 1;
        }
        freed
    }

    /// The lowest `seq` held, or the next `seq` when none is: the `oldest_seq` of a `Hello`.
    pub fn oldest_seq(&self) -> u32 {
        self.events.front().map_or(self.next_seq, |event| event.seq)
    }

    /// The `seq` the next pushed event will get.
    pub const fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// The held event with this `seq`.
    pub fn get(&self, seq: u32) -> Option<&OutboxEvent> {
        // Held seqs are consecutive from the oldest (invariant 2).
        let index = seq.checked_sub(self.oldest_seq())?;
        self.events.get(usize::try_from(index).ok()?)
    }

    /// The held events, oldest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &OutboxEvent> + '_ {
        self.events.iter()
    }

    /// Number of held events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Whether the next push drops the oldest event.
    pub fn is_full(&self) -> bool {
        self.events.is_full()
    }

    /// Most events held at once.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Events dropped because the outbox was full (wraps at 2³²).
    pub const fn dropped_full(&self) -> u32 {
        self.dropped_full
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;

    fn measurement(value: f64) -> Measurement {
        let mut measurement = Measurement::new();
        measurement.push("temp_c", value).unwrap();
        measurement
    }

    fn seqs<const N: usize>(outbox: &Outbox<N>) -> Vec<u32> {
        outbox.iter().map(|event| event.seq).collect()
    }

    #[test]
    fn events_get_consecutive_seqs_from_zero() {
        let mut outbox = Outbox::<8>::new();
        assert_eq!(outbox.oldest_seq(), 0);
        for expected in 0..3 {
            let pushed = outbox.push(Some(1000 + u64::from(expected)), None, measurement(1.0));
            assert_eq!(pushed.seq, expected);
            assert_eq!(pushed.dropped, None);
        }
        assert_eq!(seqs(&outbox), [0, 1, 2]);
        assert_eq!(outbox.next_seq(), 3);
        assert_eq!(outbox.get(1).unwrap().ts, Some(1001));
        assert_eq!(outbox.get(3), None);
    }

    #[test]
    fn an_ack_frees_everything_up_to_its_seq() {
        let mut outbox = Outbox::<8>::new();
        for _ in 0..5 {
            outbox.push(None, None, measurement(1.0));
        }
        assert_eq!(outbox.ack(2), 3);
        assert_eq!(seqs(&outbox), [3, 4]);
        assert_eq!(outbox.oldest_seq(), 3);
        assert_eq!(outbox.get(2), None);
        assert_eq!(outbox.get(4).unwrap().seq, 4);
        // Repeated and older acks free nothing.
        assert_eq!(outbox.ack(2), 0);
        assert_eq!(outbox.ack(0), 0);
        assert_eq!(outbox.ack(9), 2);
        assert!(outbox.is_empty());
        assert_eq!(outbox.oldest_seq(), 5);
    }

    #[test]
    fn when_full_the_oldest_is_dropped_and_counted() {
        let mut outbox = Outbox::<3>::new();
        for value in 0..3 {
            outbox.push(None, None, measurement(f64::from(value)));
        }
        assert!(outbox.is_full());
        let pushed = outbox.push(None, Some("alarm"), measurement(3.0));
        assert_eq!(pushed.seq, 3);
        let dropped = pushed.dropped.unwrap();
        assert_eq!(dropped.seq, 0);
        assert_eq!(dropped.measurement.get("temp_c"), Some(0.0));
        outbox.push(None, None, measurement(4.0));
        assert_eq!(seqs(&outbox), [2, 3, 4]);
        assert_eq!(outbox.dropped_full(), 2);
        assert_eq!(outbox.get(3).unwrap().kind, Some("alarm"));
        assert_eq!(outbox.capacity(), 3);
    }
}
