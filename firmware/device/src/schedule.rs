//! When each sensor is due: a fixed interval per sensor, on the device's monotonic clock.
//!
//! The scheduler only keeps time; [`Device`](crate::device::Device) measures the sensors it names
//! and turns the measurements into events.
//!
//! # Rules
//! 1. Every sensor is due at the first poll.
//! 2. After a sample, the next one is due one interval after the previous due time, not after the
//!    poll that took it, so a steady rate does not drift when polls run a little late.
//! 3. When the device fell a whole interval or more behind (a long blocking operation, a stop in
//!    a debugger), the missed samples are not made up: the next one is due one interval from now.
//!    A burst of back-dated samples would say nothing new and would push unacknowledged events
//!    out of the outbox.
//! 4. An interval shorter than a millisecond counts as a millisecond, so that no sensor can be due
//!    on every poll and starve the others.

use core::time::Duration;

use crate::clock::{Instant, millis_of};

/// Due times of `N` sensors, each with its own interval.
#[derive(Debug, Clone)]
pub struct Scheduler<const N: usize> {
    intervals_ms: [u64; N],
    /// `None` until the sensor's first sample (rule 1).
    due_at: [Option<Instant>; N],
}

impl<const N: usize> Scheduler<N> {
    /// A schedule with the interval of each sensor, by index.
    pub fn new(intervals: [Duration; N]) -> Self {
        Self {
            intervals_ms: intervals.map(|interval| millis_of(interval).max(1)),
            due_at: [None; N],
        }
    }

    /// The lowest-indexed sensor due at `now`, which counts as sampled: its next due time moves
    /// on. Call until it returns `None` to take every sample that is due.
    pub fn next_due(&mut self, now: Instant) -> Option<usize> {
        let index = (0..N).find(|&index| self.due_at[index].is_none_or(|at| at <= now))?;
        let interval = self.intervals_ms[index];
        let next = match self.due_at[index] {
            // Rule 2: keep the phase…
            Some(at) => at.as_millis().saturating_add(interval),
            None => now.as_millis().saturating_add(interval),
        };
        // …unless that is already past (rule 3).
        let next = if next <= now.as_millis() {
            now.as_millis().saturating_add(interval)
        } else {
            next
        };
        self.due_at[index] = Some(Instant::from_millis(next));
        Some(index)
    }

    /// When the next sample is due, at the earliest; `None` without sensors. A device can sleep
    /// until then.
    pub fn due_at(&self) -> Option<Instant> {
        // A sensor never sampled is due at once: Instant 0 is never later than now.
        self.due_at.iter().map(|at| at.unwrap_or_default()).min()
    }

    /// The interval of sensor `index`.
    pub fn interval(&self, index: usize) -> Option<Duration> {
        self.intervals_ms
            .get(index)
            .map(|&millis| Duration::from_millis(millis))
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;

    fn at(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    fn due(scheduler: &mut Scheduler<2>, now: u64) -> Vec<usize> {
        core::iter::from_fn(|| scheduler.next_due(at(now))).collect()
    }

    #[test]
    fn each_sensor_runs_at_its_own_interval() {
        let mut scheduler = Scheduler::new([Duration::from_secs(1), Duration::from_millis(2500)]);
        assert_eq!(scheduler.due_at(), Some(at(0)));
        let mut samples = [0; 2];
        // Poll every 100 ms for 10 s.
        for now in (10_000..=20_000).step_by(100) {
            for index in due(&mut scheduler, now) {
                samples[index] += 1;
            }
        }
        // At 10 s, then every 1 s / 2.5 s after.
        assert_eq!(samples, [11, 5]);
    }

    #[test]
    fn all_sensors_are_due_at_the_first_poll_and_then_not_again() {
        let mut scheduler = Scheduler::new([Duration::from_secs(1), Duration::from_secs(5)]);
        assert_eq!(due(&mut scheduler, 42), [0, 1]);
        assert!(due(&mut scheduler, 42).is_empty());
        assert_eq!(scheduler.due_at(), Some(at(1042)));
        assert!(due(&mut scheduler, 1041).is_empty());
        assert_eq!(due(&mut scheduler, 1042), [0]);
        assert_eq!(scheduler.due_at(), Some(at(2042)));
    }

    #[test]
    fn late_polls_keep_the_phase() {
        let mut scheduler = Scheduler::new([Duration::from_secs(1), Duration::from_secs(60)]);
        due(&mut scheduler, 0);
        // Polls run 300 ms late each time; samples stay on the 1 s grid.
        for second in 1..=5 {
            assert_eq!(due(&mut scheduler, second * 1000 + 300), [0]);
            assert_eq!(scheduler.due_at(), Some(at((second + 1) * 1000)));
        }
    }

    #[test]
    fn missed_intervals_are_not_made_up() {
        let mut scheduler = Scheduler::new([Duration::from_secs(1), Duration::from_secs(60)]);
        due(&mut scheduler, 0);
        // Stalled for 10.5 s: one sample, then the next a full interval later.
        assert_eq!(due(&mut scheduler, 10_500), [0]);
        assert_eq!(scheduler.due_at(), Some(at(11_500)));
    }

    #[test]
    fn a_zero_interval_cannot_starve_the_others() {
        let mut scheduler = Scheduler::new([Duration::ZERO, Duration::from_secs(1)]);
        assert_eq!(scheduler.interval(0), Some(Duration::from_millis(1)));
        assert_eq!(due(&mut scheduler, 0), [0, 1]);
        assert!(due(&mut scheduler, 0).is_empty());
        assert_eq!(due(&mut scheduler, 1), [0]);
        assert_eq!(scheduler.interval(2), None);
    }
}
