//! The boot id: different on every start, so the gateway tells a restarted device's events
//! (`{device}:{boot}:{seq}`, `seq` from 1 again) from the ones before.
//!
//! QEMU keeps no flash between runs and the LM3S6965 has no random number generator, so this
//! board draws its boot id from the host over semihosting (which QEMU offers with
//! `-semihosting-config enable=on`): 32 random bits from the host's `/dev/urandom`, so that two
//! boots collide with a probability of 1 in 2³², or, if that file cannot be read, the host's
//! clock in seconds (two boots within one second would then collide). A board on real hardware
//! keeps a counter in flash or uses its RNG instead: semihosting without a debugger attached
//! stops the core.

/// A boot id drawn from the host: random, or its clock.
pub fn from_host() -> u32 {
    host_random().unwrap_or_else(host_seconds).max(1)
}

/// 32 bits from the host's `/dev/urandom`.
fn host_random() -> Option<u32> {
    const PATH: &[u8] = b"/dev/urandom\0";
    /// SYS_OPEN's mode for reading in binary ("rb").
    const READ_BINARY: usize = 1;
    // SAFETY: SYS_OPEN reads `PATH.len() - 1` bytes from a NUL-terminated static string and
    // returns a handle, or -1.
    let handle =
        unsafe { cortex_m_semihosting::syscall!(OPEN, PATH.as_ptr(), READ_BINARY, PATH.len() - 1) };
    if handle == usize::MAX {
        return None;
    }
    let mut bytes = [0u8; 4];
    // SAFETY: SYS_READ writes at most `bytes.len()` bytes into `bytes`, and returns how many of
    // them it did not fill; SYS_CLOSE only takes the handle SYS_OPEN returned.
    let unfilled =
        unsafe { cortex_m_semihosting::syscall!(READ, handle, bytes.as_mut_ptr(), bytes.len()) };
    // SAFETY: as above.
    unsafe { cortex_m_semihosting::syscall!(CLOSE, handle) };
    (unfilled == 0).then(|| u32::from_le_bytes(bytes))
}

/// The host's time in seconds since the Unix epoch.
fn host_seconds() -> u32 {
    // SAFETY: SYS_TIME takes no argument and only returns a value; QEMU serves it when
    // semihosting is enabled (the runner and the tests always enable it).
    let seconds = unsafe { cortex_m_semihosting::syscall!(TIME) };
    u32::try_from(seconds).unwrap_or(1)
}
