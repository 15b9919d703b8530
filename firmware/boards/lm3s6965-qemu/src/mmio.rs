//! Volatile access to memory-mapped registers, by address.

/// Reads the 32-bit register at `address`.
#[inline]
pub fn read(address: usize) -> u32 {
    // SAFETY: callers pass the addresses of this chip's peripheral registers (constants in
    // this crate), which are always mapped, 4-byte aligned, and have no read side effects
    // other than the ones the datasheet documents (e.g. popping the UART's receive FIFO).
    unsafe { core::ptr::read_volatile(address as *const u32) }
}

/// Writes the 32-bit register at `address`.
#[inline]
pub fn write(address: usize, value: u32) {
    // SAFETY: as for `read`: a mapped, aligned peripheral register of this chip.
    unsafe { core::ptr::write_volatile(address as *mut u32, value) }
}

/// Read-modify-write of the register at `address`.
#[inline]
pub fn modify(address: usize, change: impl FnOnce(u32) -> u32) {
    write(address, change(read(address)));
}
