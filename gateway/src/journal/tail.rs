//! The journal's recent rows in memory, so that a destination that keeps up takes what was just
//! committed without reading it back from SQLite.
//!
//! Each commit that appends rows hands them here, after the commit and before the committed id
//! moves on (so whoever hears of a commit finds its rows). A destination behind the tail, after an
//! outage or a restart, reads its rows from the database on a read connection of its own, and
//! takes from the tail again once it has caught up. With several destinations, a row committed
//! once is read from memory by each of them: fan-out costs no extra read of the journal.
//!
//! # Invariants
//! 1. For each lane, every row of the journal with an id above the lane's `floor` is in the tail,
//!    in id order, and nothing else is: rows appear here once committed and leave when the
//!    journal removes them (confirmed by every destination, evicted, expired), always from the
//!    head, as in the journal.
//! 2. A read of rows after `after` is answered from the tail only if `after >= floor`; then it
//!    returns exactly what the same read of the database would.
//! 3. The tail is bounded by [`TAIL_BYTES`] per lane: past it, the oldest rows leave the tail
//!    (not the journal) and `floor` moves up with them.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use super::record::{Lane, StoredEvent, row_cost};

/// Bytes of rows (as counted against `max_size`) the tail keeps per lane, at most: a few
/// thousand typical events, or one window of large ones.
pub(crate) const TAIL_BYTES: u64 = 2 * 1024 * 1024;

/// The recent rows of both lanes.
#[derive(Debug)]
pub(crate) struct Tail {
    lanes: [Mutex<LaneTail>; 2],
}

#[derive(Debug, Default)]
struct LaneTail {
    /// Every row with an id above this is in `rows`.
    floor: i64,
    rows: VecDeque<StoredEvent>,
    bytes: u64,
}

impl Tail {
    /// An empty tail over a journal whose last rows are `last` (`[alerts, events]`): it covers
    /// what comes after them.
    pub(crate) fn new(last: [i64; 2]) -> Self {
        Self {
            lanes: last.map(|floor| {
                Mutex::new(LaneTail {
                    floor,
                    ..LaneTail::default()
                })
            }),
        }
    }

    /// Rows of `lane` just committed (in id order, after every row already here), and the
    /// journal's head: rows with ids up to `deleted_through` are gone from it.
    pub(crate) fn committed(&self, lane: Lane, rows: Vec<StoredEvent>, deleted_through: i64) {
        let mut tail = self.lock(lane);
        for row in rows {
            tail.bytes += cost(&row);
            tail.rows.push_back(row);
        }
        tail.forget_through(deleted_through);
        while tail.bytes > TAIL_BYTES {
            let Some(oldest) = tail.rows.pop_front() else {
                break;
            };
            tail.bytes -= cost(&oldest);
            tail.floor = tail.floor.max(oldest.id);
        }
    }

    /// The journal was replaced by an empty one whose next rows come after `last`.
    pub(crate) fn reset(&self, last: [i64; 2]) {
        for lane in Lane::ALL {
            let mut tail = self.lock(lane);
            tail.rows.clear();
            tail.bytes = 0;
            tail.floor = last[lane.index()];
        }
    }

    /// Up to `limit` rows of `lane` with ids above `after`, in id order, if the tail holds every
    /// such row; `None` if some may be only in the database.
    pub(crate) fn read(&self, lane: Lane, after: i64, limit: usize) -> Option<Vec<StoredEvent>> {
        let tail = self.lock(lane);
        if after < tail.floor {
            return None;
        }
        let start = tail.rows.partition_point(|row| row.id <= after);
        Some(tail.rows.range(start..).take(limit).cloned().collect())
    }

    fn lock(&self, lane: Lane) -> std::sync::MutexGuard<'_, LaneTail> {
        // Nothing here can leave a tail half changed: a panic elsewhere while it was held
        // leaves it usable.
        self.lanes[lane.index()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl LaneTail {
    fn forget_through(&mut self, deleted_through: i64) {
        while self
            .rows
            .front()
            .is_some_and(|row| row.id <= deleted_through)
        {
            if let Some(gone) = self.rows.pop_front() {
                self.bytes -= cost(&gone);
            }
        }
    }
}

fn cost(row: &StoredEvent) -> u64 {
    row_cost(row.device.len() as i64, row.payload.len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, size: usize) -> StoredEvent {
        StoredEvent {
            id,
            device: "d".to_owned(),
            received_at_ms: id,
            payload: vec![b'x'; size],
        }
    }

    fn ids(rows: Option<Vec<StoredEvent>>) -> Option<Vec<i64>> {
        rows.map(|rows| rows.into_iter().map(|row| row.id).collect())
    }

    #[test]
    fn reads_what_was_committed_after_the_floor() {
        let tail = Tail::new([0, 10]);
        tail.committed(Lane::Events, vec![row(11, 10), row(12, 10), row(13, 10)], 0);
        assert_eq!(
            ids(tail.read(Lane::Events, 10, 100)),
            Some(vec![11, 12, 13])
        );
        assert_eq!(ids(tail.read(Lane::Events, 11, 1)), Some(vec![12]));
        assert_eq!(ids(tail.read(Lane::Events, 13, 100)), Some(vec![]));
        // Before the floor, rows may be in the database only.
        assert_eq!(ids(tail.read(Lane::Events, 9, 100)), None);
        // The other lane is apart.
        assert_eq!(ids(tail.read(Lane::Alerts, 0, 100)), Some(vec![]));
    }

    #[test]
    fn rows_the_journal_removed_leave_the_tail_and_reads_skip_them() {
        let tail = Tail::new([0, 0]);
        tail.committed(Lane::Events, (1..=5).map(|id| row(id, 10)).collect(), 0);
        // Evicted or confirmed by everyone: gone from the journal, so from the tail.
        tail.committed(Lane::Events, Vec::new(), 3);
        assert_eq!(ids(tail.read(Lane::Events, 0, 100)), Some(vec![4, 5]));
        assert_eq!(ids(tail.read(Lane::Events, 2, 100)), Some(vec![4, 5]));
    }

    #[test]
    fn the_oldest_rows_leave_past_the_bound_and_the_floor_follows() {
        let tail = Tail::new([0, 0]);
        let size = 64 * 1024;
        let rows = (1..=64).map(|id| row(id, size)).collect::<Vec<_>>();
        tail.committed(Lane::Events, rows, 0);
        let held = tail.lock(Lane::Events).rows.len() as i64;
        assert!(held < 64 && held > 0, "{held} rows held");
        assert!(tail.lock(Lane::Events).bytes <= TAIL_BYTES);
        let floor = 64 - held;
        assert_eq!(ids(tail.read(Lane::Events, floor - 1, 1)), None);
        assert_eq!(
            ids(tail.read(Lane::Events, floor, 1)),
            Some(vec![floor + 1])
        );
    }

    #[test]
    fn a_replaced_journal_empties_the_tail() {
        let tail = Tail::new([0, 0]);
        tail.committed(Lane::Alerts, vec![row(1, 1), row(2, 1)], 0);
        tail.reset([2, 0]);
        assert_eq!(ids(tail.read(Lane::Alerts, 1, 10)), None);
        assert_eq!(ids(tail.read(Lane::Alerts, 2, 10)), Some(vec![]));
    }
}
