//! The write batch: what one transaction does, and the in-memory figures it keeps beside its
//! SQL. [`super::store::Store::apply`] runs it.
//!
//! # One transaction
//! 1. Confirmations move destinations' positions forward; the rows every destination routed to
//!    a lane has confirmed are deleted (a range at the head of the lane).
//! 2. Rows past `max_age` expire.
//! 3. Events are appended; a full journal applies `when_full`.
//! 4. Alerts are appended with their rule state.
//! 5. Dead letters are kept, bounded.
//!
//! Every row removed before all its destinations confirmed it is counted by reason, in total and
//! for each destination that had not confirmed it.

use rusqlite::params;

use super::eviction::{Budget, EVICTION_CHUNK_DIVISOR, Evict, Evicted, evict_head};
use super::record::{AlertRecord, DeadLetter, Lane, ROW_OVERHEAD, Record, StoredEvent, row_cost};
use super::stats::DropReason;
use super::store::{JournalOptions, MAX_ALERT_ROWS, Position};
use crate::config::WhenFull;

/// A destination's confirmation: every row of `lane` up to `through` is delivered to it (or not
/// routed to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirm {
    /// The destination's index in [`JournalOptions::destinations`].
    pub destination: usize,
    /// The lane.
    pub lane: Lane,
    /// The highest row id confirmed, with every row before it.
    pub through: i64,
}

/// What one transaction did.
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    /// What became of each append that was not deferred, in order.
    pub(crate) results: Vec<AppendResult>,
    /// Appends not taken because the journal is full and `when_full = "block"`: they must be
    /// offered again, in order, once confirmations have made room.
    pub(crate) deferred: Vec<Record>,
    /// Rows deleted because every destination confirmed them.
    pub(crate) released: u64,
    /// Rows removed before every destination confirmed them, by reason.
    pub(crate) dropped: Vec<(DropReason, u64)>,
    /// The same, for each destination that had not confirmed them: (index, reason, rows).
    pub(crate) dropped_for: Vec<(usize, DropReason, u64)>,
    /// The highest alert row id stored, if alerts were.
    pub(crate) last_alert_row: Option<i64>,
    /// The rows stored, per lane ([`Lane::index`]), in id order: what the tail takes.
    pub(crate) stored: [Vec<StoredEvent>; 2],
}

/// What became of one appended record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendResult {
    /// Stored under this row id.
    Stored(i64),
    /// Refused: the journal is full and `when_full = "drop_newest"`, or the row alone is larger
    /// than the journal may hold.
    Refused,
    /// Not stored because no destination takes it (its device matches no route).
    Unrouted,
}

/// One transaction's worth of work.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) appends: Vec<Record>,
    pub(crate) alerts: Vec<AlertRecord>,
    pub(crate) confirms: Vec<Confirm>,
    pub(crate) dead_letters: Vec<DeadLetter>,
    /// Whether to look for rows older than `max_age` in this transaction.
    pub(crate) expire: bool,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.appends.is_empty()
            && self.alerts.is_empty()
            && self.confirms.is_empty()
            && self.dead_letters.is_empty()
            && !self.expire
    }
}

/// The in-memory figures one transaction updates, beside its SQL.
pub(super) struct Accounting<'a> {
    pub(super) options: &'a JournalOptions,
    pub(super) budget: Budget,
    pub(super) next_id: &'a mut [i64; 2],
    pub(super) deleted_through: &'a mut [i64; 2],
    pub(super) positions: &'a mut Vec<Position>,
    pub(super) rows: &'a mut u64,
    pub(super) alert_rows: &'a mut u64,
    pub(super) row_bytes: &'a mut u64,
}

/// Writes the positions that the journal's rows do not already tell (see
/// [`Accounting::confirm`]).
///
/// Every row through `deleted_through` has left the journal, so a destination that has
/// confirmed no further needs no position on disk: it starts after the rows that are gone
/// whatever its stored position says, and a stored one that lags only points at rows that no
/// longer exist. With one destination that is always the case, and a commit writes the lane's
/// page alone instead of that page and the positions table's.
pub(super) fn save_positions(
    tx: &rusqlite::Transaction<'_>,
    options: &JournalOptions,
    positions: &[Position],
    deleted_through: &[i64; 2],
) -> Result<(), rusqlite::Error> {
    let mut save = tx.prepare_cached(
        "INSERT INTO positions (destination, lane, confirmed) VALUES (?1, ?2, ?3)
         ON CONFLICT (destination, lane) DO UPDATE SET confirmed = excluded.confirmed",
    )?;
    for lane in Lane::ALL {
        for (route, position) in options.destinations.iter().zip(positions) {
            let confirmed = position.confirmed[lane.index()];
            if confirmed > deleted_through[lane.index()] {
                save.execute(params![route.name, lane.as_str(), confirmed])?;
            }
        }
    }
    Ok(())
}

/// Whether a destination has confirmed `lane` past the rows deleted from it: a position that
/// must be written to survive a restart ([`save_positions`]).
fn ahead_of_deletes(positions: &[Position], deleted_through: &[i64; 2], lane: Lane) -> bool {
    positions
        .iter()
        .any(|position| position.confirmed[lane.index()] > deleted_through[lane.index()])
}

impl Accounting<'_> {
    /// Moves positions forward and deletes the rows every destination of their lane confirmed.
    /// With `save`, the positions that moved past the deletes are written too; without, only
    /// the deletes are, and the caller writes the positions later ([`save_positions`]): a
    /// position on disk may lag, never lead, so a crash meanwhile only sends rows again.
    /// Returns whether a position moved to where the deletes do not tell it: one that is not
    /// written yet when `save` is false.
    pub(super) fn confirm(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        confirms: &[Confirm],
        save: bool,
        outcome: &mut BatchOutcome,
    ) -> Result<bool, rusqlite::Error> {
        if confirms.is_empty() {
            return Ok(false);
        }
        let mut moved = [false; 2];
        for confirm in confirms {
            let Some(position) = self.positions.get_mut(confirm.destination) else {
                continue;
            };
            // A position never passes the rows that exist: ids past it are still to come.
            let through = confirm.through.min(self.next_id[confirm.lane.index()] - 1);
            let slot = &mut position.confirmed[confirm.lane.index()];
            if through > *slot {
                *slot = through;
                moved[confirm.lane.index()] = true;
            }
        }
        for lane in Lane::ALL {
            if !moved[lane.index()] {
                continue;
            }
            // Rows leave once every destination that takes the lane has confirmed them.
            let through = self
                .options
                .destinations
                .iter()
                .zip(self.positions.iter())
                .filter(|(route, _)| route.takes_lane(lane))
                .map(|(_, position)| position.confirmed[lane.index()])
                .min()
                .unwrap_or(i64::MAX);
            if through <= self.deleted_through[lane.index()] {
                continue;
            }
            let removed = tx
                .prepare_cached(&format!(
                    "DELETE FROM {} WHERE id <= ?1 RETURNING length(device), length(payload)",
                    lane.table()
                ))?
                .query_map([through], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            for (device_len, payload_len) in &removed {
                self.remove_row(lane, row_cost(*device_len, *payload_len));
            }
            outcome.released += removed.len() as u64;
            self.deleted_through[lane.index()] = through.min(self.next_id[lane.index()] - 1);
        }
        let ahead = Lane::ALL.into_iter().any(|lane| {
            moved[lane.index()] && ahead_of_deletes(self.positions, self.deleted_through, lane)
        });
        if save && ahead {
            save_positions(tx, self.options, self.positions, self.deleted_through)?;
        }
        Ok(ahead)
    }

    fn remove_row(&mut self, lane: Lane, cost: u64) {
        *self.rows = self.rows.saturating_sub(1);
        if lane == Lane::Alerts {
            *self.alert_rows = self.alert_rows.saturating_sub(1);
        }
        *self.row_bytes = self.row_bytes.saturating_sub(cost);
    }

    /// Accounts for rows removed from the head of `lane` before every destination confirmed
    /// them: counted by `reason`, in total and for each destination that had not confirmed them.
    pub(super) fn forget(
        &mut self,
        lane: Lane,
        evicted: &Evicted,
        reason: DropReason,
        outcome: &mut BatchOutcome,
    ) {
        let Some((last, _)) = evicted.rows.last() else {
            return;
        };
        *self.rows = self.rows.saturating_sub(evicted.rows.len() as u64);
        if lane == Lane::Alerts {
            *self.alert_rows = self.alert_rows.saturating_sub(evicted.rows.len() as u64);
        }
        *self.row_bytes = self.row_bytes.saturating_sub(evicted.freed);
        let index = lane.index();
        self.deleted_through[index] = self.deleted_through[index].max(*last);
        add_count(&mut outcome.dropped, reason, evicted.rows.len() as u64);
        for (destination, (route, position)) in self
            .options
            .destinations
            .iter()
            .zip(self.positions.iter())
            .enumerate()
        {
            let lost = evicted
                .rows
                .iter()
                .filter(|(id, device)| *id > position.confirmed[index] && route.takes(lane, device))
                .count() as u64;
            if lost > 0 {
                match outcome
                    .dropped_for
                    .iter_mut()
                    .find(|(index, other, _)| *index == destination && *other == reason)
                {
                    Some((_, _, count)) => *count += lost,
                    None => outcome.dropped_for.push((destination, reason, lost)),
                }
            }
        }
    }

    pub(super) fn append(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        appends: Vec<Record>,
        outcome: &mut BatchOutcome,
    ) -> Result<(), rusqlite::Error> {
        let mut refused = 0;
        let mut unrouted = 0;
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (id, device, received_at, payload) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let index = Lane::Events.index();
        let mut appends = appends.into_iter();
        while let Some(record) = appends.next() {
            if !self
                .options
                .destinations
                .iter()
                .any(|route| route.takes(Lane::Events, &record.device))
            {
                outcome.results.push(AppendResult::Unrouted);
                unrouted += 1;
                continue;
            }
            let cost = record.cost();
            if *self.row_bytes + cost > self.budget.rows {
                match self.options.when_full {
                    WhenFull::DropOldest if cost <= self.budget.rows => {
                        let need = *self.row_bytes + cost - self.budget.rows;
                        let chunk = self.budget.rows / EVICTION_CHUNK_DIVISOR;
                        let evicted = evict_head(tx, Evict::Bytes(need.max(chunk)))?;
                        self.forget(Lane::Events, &evicted, DropReason::EvictedOldest, outcome);
                    }
                    WhenFull::Block if cost <= self.budget.rows => {
                        outcome.deferred.push(record);
                        outcome.deferred.extend(appends.by_ref());
                        break;
                    }
                    // drop_newest, or a row that could never fit
                    _ => {
                        outcome.results.push(AppendResult::Refused);
                        refused += 1;
                        continue;
                    }
                }
            }
            let id = self.next_id[index];
            insert.execute(params![
                id,
                record.device,
                record.received_at_ms,
                record.payload
            ])?;
            self.next_id[index] += 1;
            *self.rows += 1;
            *self.row_bytes += cost;
            outcome.results.push(AppendResult::Stored(id));
            outcome.stored[index].push(StoredEvent {
                id,
                device: record.device,
                received_at_ms: record.received_at_ms,
                payload: record.payload,
            });
        }
        if refused > 0 {
            add_count(&mut outcome.dropped, DropReason::RejectedNewest, refused);
        }
        if unrouted > 0 {
            add_count(&mut outcome.dropped, DropReason::Unrouted, unrouted);
        }
        Ok(())
    }

    pub(super) fn append_alerts(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        alerts: &[AlertRecord],
        outcome: &mut BatchOutcome,
    ) -> Result<(), rusqlite::Error> {
        let mut unrouted = 0;
        let mut insert = tx.prepare_cached(
            "INSERT INTO alerts (id, device, received_at, payload) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut fire = tx.prepare_cached(
            "INSERT OR REPLACE INTO alert_state (rule, device, alert) VALUES (?1, ?2, ?3)",
        )?;
        let mut resolve =
            tx.prepare_cached("DELETE FROM alert_state WHERE rule = ?1 AND device = ?2")?;
        let index = Lane::Alerts.index();
        let mut last_alert = 0;
        // Alerts are few and matter most: they are never evicted by events, and always stored
        // (unless no destination takes alerts of their device). The rule state is kept either
        // way.
        for alert in alerts {
            let routed = self
                .options
                .destinations
                .iter()
                .any(|route| route.takes(Lane::Alerts, &alert.device));
            if !routed {
                unrouted += 1;
            } else {
                let id = self.next_id[index];
                insert.execute(params![id, alert.device, alert.at_ms, alert.payload])?;
                self.next_id[index] += 1;
                *self.rows += 1;
                *self.alert_rows += 1;
                *self.row_bytes += (alert.device.len() + alert.payload.len()) as u64 + ROW_OVERHEAD;
                outcome.last_alert_row = Some(id);
                outcome.stored[index].push(StoredEvent {
                    id,
                    device: alert.device.clone(),
                    received_at_ms: alert.at_ms,
                    payload: alert.payload.clone(),
                });
            }
            let number = i64::try_from(alert.alert).unwrap_or(i64::MAX);
            if alert.firing {
                fire.execute(params![alert.rule, alert.device, number])?;
            } else {
                resolve.execute(params![alert.rule, alert.device])?;
            }
            last_alert = last_alert.max(number);
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('last_alert', ?1)
             ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
            [last_alert],
        )?;
        if unrouted > 0 {
            add_count(&mut outcome.dropped, DropReason::Unrouted, unrouted);
        }
        // A flapping rule must not fill the journal: past MAX_ALERT_ROWS undelivered alerts,
        // the oldest give way (counted as evicted).
        let excess = i64::try_from(*self.alert_rows).unwrap_or(i64::MAX) - MAX_ALERT_ROWS;
        if excess > 0 {
            let evicted = tx
                .prepare_cached(
                    "DELETE FROM alerts WHERE id IN
                         (SELECT id FROM alerts ORDER BY id LIMIT ?1)
                     RETURNING id, device, length(device), length(payload)",
                )?
                .query_map([excess], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut removed = Evicted::default();
            for (id, device, device_len, payload_len) in evicted {
                removed.freed += row_cost(device_len, payload_len);
                removed.rows.push((id, device));
            }
            removed.rows.sort_unstable_by_key(|(id, _)| *id);
            self.forget(Lane::Alerts, &removed, DropReason::EvictedOldest, outcome);
        }
        Ok(())
    }
}

/// Adds `count` to the entry for `reason`, or adds the entry.
fn add_count(counts: &mut Vec<(DropReason, u64)>, reason: DropReason, count: u64) {
    match counts.iter_mut().find(|(other, _)| *other == reason) {
        Some((_, total)) => *total += count,
        None => counts.push((reason, count)),
    }
}

pub(super) fn keep_dead_letters(
    tx: &rusqlite::Transaction<'_>,
    letters: &[DeadLetter],
    keep: u64,
) -> Result<(), rusqlite::Error> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO dead_letters (received_at, source, topic, reason, detail, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for letter in letters {
        let payload = &letter.payload[..letter.payload.len().min(DeadLetter::MAX_PAYLOAD)];
        insert.execute(params![
            letter.received_at_ms,
            letter.source,
            letter.topic,
            letter.reason,
            letter.detail,
            payload
        ])?;
    }
    tx.execute(
        "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?1",
        [i64::try_from(keep).unwrap_or(i64::MAX)],
    )?;
    Ok(())
}
