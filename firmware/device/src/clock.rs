//! Time on the device: a monotonic millisecond clock ([`Clock`]) and its points ([`Instant`]).
//!
//! The core never reads a timer itself. The board implements [`Clock`] over whatever timer its
//! chip has, and the sans-IO parts ([`Link`](crate::link::Link),
//! [`Scheduler`](crate::schedule::Scheduler)) take the current [`Instant`] as an argument, which is
//! also how the tests run on fake time.

use core::time::Duration;

/// A point in time on the device's monotonic clock: milliseconds since an arbitrary start, usually
/// power-on.
///
/// 64 bits of milliseconds do not wrap in the life of any device, so comparisons are plain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    millis: u64,
}

impl Instant {
    /// The instant `millis` milliseconds after the clock's start.
    pub const fn from_millis(millis: u64) -> Self {
        Self { millis }
    }

    /// Milliseconds since the clock's start.
    pub const fn as_millis(self) -> u64 {
        self.millis
    }

    /// `self + duration`, at most the last representable instant.
    pub fn saturating_add(self, duration: Duration) -> Self {
        Self::from_millis(self.millis.saturating_add(millis_of(duration)))
    }

    /// How long after `earlier` this instant is; zero if `earlier` is not earlier.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.millis.saturating_sub(earlier.millis))
    }
}

/// A monotonic millisecond clock, and the wall-clock time if the device knows it.
pub trait Clock {
    /// The current instant. Successive calls never go backwards.
    fn now(&mut self) -> Instant;

    /// Wall-clock time in milliseconds since the Unix epoch, if the device knows it (a
    /// battery-backed RTC, a GNSS receiver). Events carry it as `ts`; without it the gateway
    /// stamps the time it received them, which is what most small devices rely on.
    fn unix_time_ms(&mut self) -> Option<u64> {
        None
    }
}

/// Whole milliseconds of `duration`, at most `u64::MAX`.
pub(crate) fn millis_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let late = Instant::from_millis(u64::MAX - 1);
        assert_eq!(
            late.saturating_add(Duration::from_secs(1)),
            Instant::from_millis(u64::MAX)
        );
        assert_eq!(
            Instant::from_millis(5).saturating_duration_since(Instant::from_millis(9)),
            Duration::ZERO
        );
        assert_eq!(
            Instant::from_millis(1500).saturating_duration_since(Instant::from_millis(500)),
            Duration::from_secs(1)
        );
        assert_eq!(millis_of(Duration::MAX), u64::MAX);
    }
}
