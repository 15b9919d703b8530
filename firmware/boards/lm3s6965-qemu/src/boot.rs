//! The boot id: different on every start, so the gateway tells a restarted device's events
//! (`{device}:{boot}:{seq}`, `seq` from 1 again) from the ones before.
//!
//! QEMU keeps no flash between runs, so this board takes the host's clock (seconds since the
//! epoch) over semihosting, which QEMU offers with `-semihosting-config enable=on`. A board on
//! real hardware keeps a counter in flash or uses its RTC instead: semihosting without a
//! debugger attached stops the core.

/// The host's time in seconds since the Unix epoch, as the boot id.
pub fn from_host_clock() -> u32 {
    // SAFETY: SYS_TIME takes no argument and only returns a value; QEMU serves it when
    // semihosting is enabled (the runner and the tests always enable it).
    let seconds = unsafe { cortex_m_semihosting::syscall!(TIME) };
    u32::try_from(seconds).unwrap_or(1).max(1)
}
