//! Synthetic sensor readings.

/// The readings of one simulated device over time.
#[derive(Debug, Clone)]
pub struct Signal {
    phase: f64,
    offset: f64,
    spikes: bool,
    state: u64,
}

impl Signal {
    /// A signal for the `index`-th device; every fifth device has heat spikes.
    pub fn new(index: usize) -> Self {
        let seed = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        Self {
            phase: index as f64 * 0.7,
            offset: (index % 7) as f64 * 0.5,
            spikes: index % 5 == 4,
            state: seed,
        }
    }

    fn noise(&mut self) -> f64 {
        // xorshift64: cheap, deterministic, good enough for sensor noise
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % 1000) as f64 / 1000.0 - 0.5
    }

    /// Temperature (°C) and relative humidity (%) at `seq`.
    pub fn sample(&mut self, seq: u32) -> (f64, f64) {
        let t = f64::from(seq);
        let mut temp =
            24.0 + self.offset + 6.0 * (t / 120.0 + self.phase).sin() + self.noise() * 0.4;
        // a spike every 300 samples, lasting 60: crosses 35 °C
        if self.spikes && (seq % 300) >= 200 && (seq % 300) < 260 {
            temp += 18.0;
        }
        let rh = 55.0 - (temp - 24.0) * 1.5 + self.noise();
        ((temp * 100.0).round() / 100.0, (rh * 10.0).round() / 10.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiking_devices_cross_the_threshold_and_others_do_not() {
        let mut hot = Signal::new(4);
        assert!((0..300).any(|seq| hot.sample(seq).0 > 35.0));
        let mut calm = Signal::new(0);
        assert!((0..300).all(|seq| calm.sample(seq).0 < 35.0));
    }
}
