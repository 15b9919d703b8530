//! Board support for the TI Stellaris LM3S6965 (Cortex-M3) as QEMU's `lm3s6965evb` emulates it:
//! a minimal HAL for what the Edge Gateway firmware uses, implementing the embedded-io and
//! embedded-hal 1.0 traits so that the `edge-device` core runs on it unchanged.
//!
//! - [`uart::Uart0`]: the PL011-style UART0, non-blocking reads (`ReadReady`), writes that wait
//!   for room in the FIFO.
//! - [`i2c::I2c0`]: the I2C0 master, each operation its own START … STOP (the Stellaris controller
//!   that QEMU models ignores a repeated START).
//! - [`clock::SysTickClock`]: milliseconds from SysTick.
//! - [`boot`]: the boot id, random bits from the host over semihosting (QEMU keeps no flash
//!   between runs; a board with flash keeps a counter there instead).
//!
//! Registers are reached by address (the chip has no maintained register-level PAC); every
//! access goes through [`mmio`], the one place with `unsafe`.
#![no_std]

// The interrupt vector table and `memory.x`.
use lm3s6965 as _;

pub mod boot;
pub mod clock;
pub mod i2c;
pub mod mmio;
pub mod uart;

/// System control: run-mode clock gating.
mod sysctl {
    /// Run-mode clock gating control 1: UART0 is bit 0, I2C0 bit 12.
    pub const RCGC1: usize = 0x400F_E104;
    /// Run-mode clock gating control 2: GPIO port A is bit 0, port B bit 1.
    pub const RCGC2: usize = 0x400F_E108;
}

/// Turns on the clocks of UART0, I2C0 and their GPIO ports (PA0/PA1, PB2/PB3). QEMU does not
/// need it; the chip does.
pub fn enable_peripheral_clocks() {
    mmio::modify(sysctl::RCGC1, |value| value | (1 << 0) | (1 << 12));
    mmio::modify(sysctl::RCGC2, |value| value | 0b11);
}
