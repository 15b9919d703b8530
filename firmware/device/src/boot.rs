//! Boot identity: a value that differs on every start of the device ([`BootId`]).
//!
//! Events are identified by `(device, boot, seq)`, and `seq` starts again from 0 on every boot. A
//! device that reused a boot value after a restart would have its new events taken for duplicates
//! of old ones, and dropped. Two sources are good enough:
//!
//! - a counter in persistent storage (flash, EEPROM, a backup-domain register), read, incremented
//!   and written back before the first event of the boot;
//! - a 32-bit hardware random number: two boots collide with a probability of 1 in 2³².

/// A source of boot values: a new one each time the device starts.
///
/// ```
/// use edge_device::BootId;
///
/// /// A counter kept in a backup register that survives resets.
/// struct BackupCounter {
///     register: u32,
/// }
///
/// impl BootId for BackupCounter {
///     fn next_boot(&mut self) -> u32 {
///         self.register = self.register.wrapping_add(1);
///         self.register
///     }
/// }
///
/// let mut counter = BackupCounter { register: 41 };
/// assert_eq!(counter.next_boot(), 42);
/// // A closure is a source too, e.g. over a hardware random number generator.
/// assert_eq!((|| 7).next_boot(), 7);
/// ```
pub trait BootId {
    /// A boot value this device has not used before. Called once per start.
    fn next_boot(&mut self) -> u32;
}

/// Any `FnMut() -> u32` is a boot source, e.g. `|| rng.next_u32()`.
impl<F: FnMut() -> u32> BootId for F {
    fn next_boot(&mut self) -> u32 {
        self()
    }
}
