//! systemd's service notifications (the `sd_notify` protocol), without libsystemd: a datagram
//! with `KEY=value` lines to the socket named by `$NOTIFY_SOCKET`.
//!
//! Under a `Type=notify` unit the gateway sends `READY=1` once it listens and its journal is
//! open, `WATCHDOG=1` every half `WatchdogSec` while the journal writer answers a heartbeat
//! promptly and its last commit succeeded (a hung runtime, a writer stuck in a commit, or commits
//! that fail stop the pings, and systemd restarts the service), and `STOPPING=1` when it begins a
//! clean shutdown. Without `$NOTIFY_SOCKET` (not under systemd) nothing is sent.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
}

impl Notifier {
    /// The notifier systemd asked for, if it did (`$NOTIFY_SOCKET`: a path, or `@name` for an
    /// abstract socket).
    pub fn from_env() -> Option<Self> {
        let target = std::env::var_os("NOTIFY_SOCKET")?;
        match Self::new(&target.to_string_lossy()) {
            Ok(notifier) => Some(notifier),
            Err(error) => {
                tracing::warn!(%error, "NOTIFY_SOCKET is set but unusable; not notifying systemd");
                None
            }
        }
    }

    /// A notifier for the socket `target`.
    pub fn new(target: &str) -> io::Result<Self> {
        let address = match target.strip_prefix('@') {
            Some(name) => abstract_address(name)?,
            None => SocketAddr::from_pathname(target)?,
        };
        // Never blocks the runtime's thread: a datagram systemd cannot take now is dropped
        // (the next watchdog ping comes soon).
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Self { socket, address })
    }

    /// Sends `state`, e.g. `READY=1`.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(state.as_bytes(), &self.address)
            .map(|_| ())
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &str) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name.as_bytes())
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_name: &str) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist on Linux only",
    ))
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, when it is set for this process
/// (`$WATCHDOG_PID`, if set, must be ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let micros: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (micros > 0).then(|| Duration::from_micros(micros / 2))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.to_str().unwrap()).unwrap();
        notifier.notify("READY=1\nSTATUS=running").unwrap();
        let mut buffer = [0u8; 64];
        let count = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..count], b"READY=1\nSTATUS=running");

        let name = format!("edge-gateway-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&abstract_address(&name).unwrap()).unwrap();
        Notifier::new(&format!("@{name}"))
            .unwrap()
            .notify("WATCHDOG=1")
            .unwrap();
        let count = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..count], b"WATCHDOG=1");
    }
}
