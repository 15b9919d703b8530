//! Milliseconds since start, from SysTick.

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use edge_device::{Clock, Instant};

/// The core clock: the LM3S6965's 12 MHz default (and QEMU's).
pub const CORE_HZ: u32 = 12_000_000;

/// Milliseconds counted by the SysTick interrupt (wraps after 49 days; [`SysTickClock`]
/// extends it to 64 bits).
static TICKS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// A [`Clock`] over SysTick interrupts every millisecond.
#[derive(Debug)]
pub struct SysTickClock {
    last: u32,
    high: u64,
}

impl SysTickClock {
    /// Starts SysTick (it also wakes the core from `wfi` every millisecond).
    pub fn start(mut syst: SYST) -> Self {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(CORE_HZ / 1000 - 1);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        Self { last: 0, high: 0 }
    }

    /// Milliseconds since [`start`](Self::start).
    pub fn millis(&mut self) -> u64 {
        let now = TICKS.load(Ordering::Relaxed);
        if now < self.last {
            self.high += 1 << 32;
        }
        self.last = now;
        self.high | u64::from(now)
    }
}

impl Clock for SysTickClock {
    fn now(&mut self) -> Instant {
        Instant::from_millis(self.millis())
    }
}
