//! Exponential backoff with full jitter, for reconnecting to brokers and reopening ports.
//!
//! Each failure doubles the ceiling (from `min` up to `max`); the wait is drawn uniformly between
//! half the ceiling and the ceiling, so many gateways that lost the same broker do not come back
//! in lockstep. A success resets it.

use std::time::Duration;

/// Backoff state.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    /// A backoff between `min` and `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        let max = max.max(min);
        Self {
            min,
            max,
            ceiling: min,
        }
    }

    /// The wait before the next attempt; grows with each call.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        let low = ceiling / 2;
        let spread = ceiling - low;
        let jitter = spread.mul_f64(rand::random::<f64>());
        (low + jitter).max(self.min.min(ceiling))
    }

    /// Forgets past failures.
    pub fn reset(&mut self) {
        self.ceiling = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_maximum_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays[0] >= Duration::from_millis(50));
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] <= Duration::from_millis(800));
        for delay in &delays[5..] {
            assert!(
                *delay >= Duration::from_secs(1) && *delay <= Duration::from_secs(2),
                "{delay:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut first = Vec::new();
        for _ in 0..32 {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
            backoff.next_delay();
            first.push(backoff.next_delay());
        }
        first.sort();
        first.dedup();
        assert!(first.len() > 16, "delays should differ between gateways");
    }
}
