//! One destination's delivery state, without I/O: which rows are read, offered, confirmed; where
//! its position is; whether it is stalled. The [driver](super::driver) feeds it what the journal
//! and the connection report, and does what it says.
//!
//! # Invariants
//! 1. Per lane, `confirmed` is a position: every row of the lane with an id up to it is confirmed
//!    by this destination, or not routed to it. It only grows, and it is what the journal keeps.
//! 2. Every row read past `confirmed` is tracked in `rows` until it becomes part of the
//!    position: queued (read, not offered), in flight (offered under a tag), or done (confirmed
//!    out of order, passed over, or refused for good).
//! 3. A new connection starts over from `confirmed`: rows that were queued or in flight are read
//!    again and offered again, in id order; rows already done are not. So per-device order holds
//!    and a duplicate is always a resend of the same row (with the same id).
//! 4. At most `window` messages are in flight.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::destination::{Confirmation, Outgoing, Rejection, RejectionKind};
use crate::journal::{DestinationRoute, Lane, StoredEvent};

/// What the driver must do about a confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// A row was confirmed, this long after it was offered.
    Confirmed {
        /// Time from offer to confirmation.
        latency: Duration,
    },
    /// A row was refused for good: keep it as a dead letter (it is passed over).
    Refused {
        /// Its lane.
        lane: Lane,
        /// Its id.
        id: i64,
        /// Why.
        rejection: Rejection,
    },
    /// A row was refused for now: start the connection over.
    Retry(Rejection),
    /// The tag names nothing in flight (a repeat): nothing to do.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Queued,
    InFlight,
    Done,
}

#[derive(Debug, Default)]
struct LaneState {
    /// Every row up to here is confirmed or passed over.
    confirmed: i64,
    /// The position last handed to the journal.
    reported: i64,
    /// Rows up to here have been read (on this connection round).
    read: i64,
    /// Whether the last read found nothing new.
    caught_up: bool,
    /// Rows read and routed here, not yet offered.
    queue: VecDeque<StoredEvent>,
    /// Rows read past `confirmed`, by id.
    rows: BTreeMap<i64, Slot>,
}

impl LaneState {
    fn starting_at(confirmed: i64) -> Self {
        Self {
            confirmed,
            reported: confirmed,
            read: confirmed,
            ..Self::default()
        }
    }

    /// Moves `confirmed` over the done rows at the head.
    fn advance(&mut self) {
        while let Some((&id, &slot)) = self.rows.first_key_value() {
            if slot != Slot::Done || id > self.read {
                break;
            }
            self.rows.pop_first();
            self.confirmed = id;
        }
        if self.rows.is_empty() {
            // Nothing read is outstanding: the position is where reading got to (past rows the
            // journal evicted, too).
            self.confirmed = self.confirmed.max(self.read);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    lane: Lane,
    id: i64,
    offered_at: Instant,
}

/// The delivery state of one destination.
#[derive(Debug)]
pub(crate) struct Delivery {
    route: DestinationRoute,
    window: usize,
    lanes: [LaneState; 2],
    in_flight: HashMap<u64, InFlight>,
    next_tag: u64,
    /// The last time something in flight was confirmed, or the window went from empty to busy.
    progress_at: Instant,
}

impl Delivery {
    /// Starts at the positions the journal kept (`[alerts, events]`).
    pub(crate) fn new(route: DestinationRoute, window: usize, confirmed: [i64; 2]) -> Self {
        Self {
            route,
            window: window.max(1),
            lanes: [
                LaneState::starting_at(confirmed[Lane::Alerts.index()]),
                LaneState::starting_at(confirmed[Lane::Events.index()]),
            ],
            in_flight: HashMap::new(),
            next_tag: 1,
            progress_at: Instant::now(),
        }
    }

    fn lane(&mut self, lane: Lane) -> &mut LaneState {
        &mut self.lanes[lane.index()]
    }

    /// Whether the destination takes the lane at all.
    pub(crate) fn takes_lane(&self, lane: Lane) -> bool {
        self.route.takes_lane(lane)
    }

    /// Where the next read of `lane` starts, if one is worth doing now: the lane is routed here,
    /// not caught up, and what is queued is less than a window.
    pub(crate) fn read_from(&self, lane: Lane) -> Option<i64> {
        let state = &self.lanes[lane.index()];
        (self.route.takes_lane(lane) && !state.caught_up && state.queue.len() < self.window)
            .then_some(state.read)
    }

    /// Rows of `lane` that a read starting at `after` returned, in id order.
    pub(crate) fn on_read(&mut self, lane: Lane, after: i64, rows: Vec<StoredEvent>) {
        let route_takes = |row: &StoredEvent| self.route.takes(lane, &row.device);
        let routed: Vec<(StoredEvent, bool)> = rows
            .into_iter()
            .map(|row| {
                let takes = route_takes(&row);
                (row, takes)
            })
            .collect();
        let state = self.lane(lane);
        if after != state.read {
            // A read from before a restart of the round: its rows are read again.
            return;
        }
        state.caught_up = routed.is_empty();
        for (row, takes) in routed {
            state.read = state.read.max(row.id);
            match state.rows.get(&row.id) {
                // Confirmed out of order before the connection started over.
                Some(Slot::Done) => continue,
                Some(Slot::Queued | Slot::InFlight) => continue,
                None => {}
            }
            if takes {
                state.rows.insert(row.id, Slot::Queued);
                state.queue.push_back(row);
            } else {
                state.rows.insert(row.id, Slot::Done);
            }
        }
        state.advance();
    }

    /// Whether the last read of `lane` found nothing new: only then is it worth waiting for a
    /// commit (a commit noticed while a read is under way would be forgotten when the read
    /// comes back empty).
    pub(crate) fn caught_up(&self, lane: Lane) -> bool {
        self.lanes[lane.index()].caught_up
    }

    /// New rows were committed to `lane`.
    pub(crate) fn on_committed(&mut self, lane: Lane) {
        self.lane(lane).caught_up = false;
    }

    /// Whether another message may be offered.
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight.len() < self.window
    }

    /// Messages offered and not yet settled.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The next message to offer, alerts first, if the window has room.
    pub(crate) fn next_message(&mut self, now: Instant) -> Option<Outgoing> {
        if !self.has_room() {
            return None;
        }
        let lane = Lane::ALL
            .into_iter()
            .find(|lane| !self.lanes[lane.index()].queue.is_empty())?;
        let state = self.lane(lane);
        let row = state.queue.pop_front()?;
        state.rows.insert(row.id, Slot::InFlight);
        let tag = self.next_tag;
        self.next_tag += 1;
        if self.in_flight.is_empty() {
            self.progress_at = now;
        }
        self.in_flight.insert(
            tag,
            InFlight {
                lane,
                id: row.id,
                offered_at: now,
            },
        );
        Some(Outgoing { tag, lane, row })
    }

    /// A confirmation or rejection from the connection.
    pub(crate) fn on_confirmation(&mut self, confirmation: Confirmation, now: Instant) -> Settled {
        let (tag, rejection) = match confirmation {
            Confirmation::Confirmed(tag) => (tag, None),
            Confirmation::Rejected(tag, rejection) => (tag, Some(rejection)),
        };
        let Some(message) = self.in_flight.remove(&tag) else {
            return Settled::Unknown;
        };
        self.progress_at = now;
        let state = self.lane(message.lane);
        match rejection {
            Some(rejection) if rejection.kind == RejectionKind::Retryable => {
                // Stays in flight in `rows`: the round starts over and offers it again.
                Settled::Retry(rejection)
            }
            rejection => {
                if let Some(slot) = state.rows.get_mut(&message.id) {
                    *slot = Slot::Done;
                }
                state.advance();
                match rejection {
                    Some(rejection) => Settled::Refused {
                        lane: message.lane,
                        id: message.id,
                        rejection,
                    },
                    None => Settled::Confirmed {
                        latency: now.saturating_duration_since(message.offered_at),
                    },
                }
            }
        }
    }

    /// Starts a new round (a new connection): what was queued or in flight is read and offered
    /// again, from the position on.
    pub(crate) fn restart(&mut self, now: Instant) {
        self.in_flight.clear();
        for state in &mut self.lanes {
            state.queue.clear();
            state.rows.retain(|_, slot| *slot == Slot::Done);
            state.read = state.confirmed;
            state.caught_up = false;
            // Done rows right after the position join it once reading reaches them again.
        }
        self.progress_at = now;
    }

    /// Whether a position moved since it was last taken.
    pub(crate) fn positions_moved(&self) -> bool {
        self.lanes
            .iter()
            .any(|state| state.confirmed > state.reported)
    }

    /// The positions that moved since the last call: `(lane, through)`.
    pub(crate) fn take_positions(&mut self) -> Vec<(Lane, i64)> {
        let mut moved = Vec::new();
        for lane in Lane::ALL {
            let state = self.lane(lane);
            if state.confirmed > state.reported {
                state.reported = state.confirmed;
                moved.push((lane, state.confirmed));
            }
        }
        moved
    }

    /// When the connection counts as stalled if nothing is confirmed before: `ack_timeout` after
    /// the last progress, while something is in flight.
    pub(crate) fn stall_deadline(&self, ack_timeout: Duration) -> Option<Instant> {
        (!self.in_flight.is_empty()).then(|| self.progress_at + ack_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, device: &str) -> StoredEvent {
        StoredEvent {
            id,
            device: device.to_owned(),
            received_at_ms: 0,
            payload: format!("{device}:{id}").into_bytes(),
        }
    }

    fn offer_all(delivery: &mut Delivery, now: Instant) -> Vec<Outgoing> {
        std::iter::from_fn(|| delivery.next_message(now)).collect()
    }

    #[test]
    fn out_of_order_confirmations_move_the_position_only_over_a_contiguous_prefix() {
        let now = Instant::now();
        let mut delivery = Delivery::new(DestinationRoute::all("a"), 8, [0, 0]);
        assert_eq!(delivery.read_from(Lane::Events), Some(0));
        delivery.on_read(Lane::Events, 0, (1..=4).map(|id| row(id, "d")).collect());
        let sent = offer_all(&mut delivery, now);
        assert_eq!(sent.len(), 4);
        for tag in [sent[2].tag, sent[1].tag] {
            delivery.on_confirmation(Confirmation::Confirmed(tag), now);
        }
        assert!(
            delivery.take_positions().is_empty(),
            "row 1 is not confirmed"
        );
        delivery.on_confirmation(Confirmation::Confirmed(sent[0].tag), now);
        assert_eq!(delivery.take_positions(), vec![(Lane::Events, 3)]);
        delivery.on_confirmation(Confirmation::Confirmed(sent[3].tag), now);
        assert_eq!(delivery.take_positions(), vec![(Lane::Events, 4)]);
        assert_eq!(
            delivery.on_confirmation(Confirmation::Confirmed(sent[3].tag), now),
            Settled::Unknown,
            "a repeated confirmation changes nothing"
        );
    }

    #[test]
    fn a_restart_offers_again_only_what_was_not_confirmed_in_order() {
        let now = Instant::now();
        let mut delivery = Delivery::new(DestinationRoute::all("a"), 8, [0, 10]);
        delivery.on_read(Lane::Events, 10, (11..=15).map(|id| row(id, "d")).collect());
        let sent = offer_all(&mut delivery, now);
        delivery.on_confirmation(Confirmation::Confirmed(sent[1].tag), now);
        delivery.on_confirmation(Confirmation::Confirmed(sent[3].tag), now);
        delivery.restart(now);
        assert_eq!(delivery.in_flight(), 0);
        assert_eq!(delivery.read_from(Lane::Events), Some(10));
        delivery.on_read(Lane::Events, 10, (11..=15).map(|id| row(id, "d")).collect());
        let again: Vec<i64> = offer_all(&mut delivery, now)
            .iter()
            .map(|message| message.row.id)
            .collect();
        assert_eq!(again, vec![11, 13, 15]);
    }

    #[test]
    fn alerts_go_before_events_and_the_window_is_kept() {
        let now = Instant::now();
        let mut delivery = Delivery::new(DestinationRoute::all("a"), 3, [0, 0]);
        delivery.on_read(Lane::Events, 0, (1..=5).map(|id| row(id, "d")).collect());
        delivery.on_read(Lane::Alerts, 0, vec![row(1, "d")]);
        let sent = offer_all(&mut delivery, now);
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].lane, Lane::Alerts);
        assert!(sent[1..].iter().all(|message| message.lane == Lane::Events));
        assert!(delivery.next_message(now).is_none());
    }

    #[test]
    fn rows_of_other_devices_are_passed_over_and_count_as_confirmed() {
        let now = Instant::now();
        let route = DestinationRoute {
            devices: crate::rules::DevicePattern::new("a-*"),
            ..DestinationRoute::all("a")
        };
        let mut delivery = Delivery::new(route, 8, [0, 0]);
        delivery.on_read(
            Lane::Events,
            0,
            vec![row(1, "b-1"), row(2, "a-1"), row(3, "b-2")],
        );
        let sent = offer_all(&mut delivery, now);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].row.device, "a-1");
        assert_eq!(
            delivery.take_positions(),
            vec![(Lane::Events, 1)],
            "passed over at once"
        );
        delivery.on_confirmation(Confirmation::Confirmed(sent[0].tag), now);
        assert_eq!(delivery.take_positions(), vec![(Lane::Events, 3)]);
    }

    #[test]
    fn a_permanent_rejection_is_passed_over_and_a_retryable_one_is_not() {
        let now = Instant::now();
        let mut delivery = Delivery::new(DestinationRoute::all("a"), 8, [0, 0]);
        delivery.on_read(Lane::Events, 0, (1..=2).map(|id| row(id, "d")).collect());
        let sent = offer_all(&mut delivery, now);
        let permanent = Rejection {
            kind: RejectionKind::Permanent,
            reason: "too large".into(),
        };
        assert_eq!(
            delivery.on_confirmation(Confirmation::Rejected(sent[0].tag, permanent.clone()), now),
            Settled::Refused {
                lane: Lane::Events,
                id: 1,
                rejection: permanent
            }
        );
        let retryable = Rejection {
            kind: RejectionKind::Retryable,
            reason: "no route".into(),
        };
        assert_eq!(
            delivery.on_confirmation(Confirmation::Rejected(sent[1].tag, retryable.clone()), now),
            Settled::Retry(retryable)
        );
        assert_eq!(delivery.take_positions(), vec![(Lane::Events, 1)]);
        delivery.restart(now);
        delivery.on_read(Lane::Events, 1, vec![row(2, "d")]);
        assert_eq!(
            offer_all(&mut delivery, now)
                .iter()
                .map(|message| message.row.id)
                .collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn the_stall_deadline_follows_progress() {
        let start = Instant::now();
        let timeout = Duration::from_secs(30);
        let mut delivery = Delivery::new(DestinationRoute::all("a"), 8, [0, 0]);
        assert_eq!(delivery.stall_deadline(timeout), None);
        delivery.on_read(Lane::Events, 0, (1..=2).map(|id| row(id, "d")).collect());
        let sent = offer_all(&mut delivery, start);
        assert_eq!(delivery.stall_deadline(timeout), Some(start + timeout));
        let later = start + Duration::from_secs(10);
        delivery.on_confirmation(Confirmation::Confirmed(sent[0].tag), later);
        assert_eq!(delivery.stall_deadline(timeout), Some(later + timeout));
        delivery.on_confirmation(Confirmation::Confirmed(sent[1].tag), later);
        assert_eq!(delivery.stall_deadline(timeout), None);
    }

    #[test]
    fn a_stale_read_after_a_restart_is_ignored() {
        let now = Instant::now();
        let mut delivery = Delivery::new(DestinationRoute::all("a"), 8, [0, 0]);
        delivery.on_read(Lane::Events, 0, vec![row(1, "d")]);
        let _ = offer_all(&mut delivery, now);
        delivery.on_read(Lane::Events, 1, vec![row(2, "d")]);
        delivery.restart(now);
        delivery.on_read(Lane::Events, 1, vec![row(2, "d")]);
        assert_eq!(delivery.read_from(Lane::Events), Some(0));
    }
}
