//! Serial ports for simulated devices: a pty pair the simulator creates (the gateway opens its
//! slave side), or an existing tty. The port is non-blocking and implements the `embedded-io`
//! traits the device core is written against, optionally with a noisy line (random bit flips)
//! and a line-rate limit (a real UART moves `baud / 10` bytes per second; a pty has no limit).

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

/// A device's end of a serial line.
#[derive(Debug)]
pub struct Port {
    file: File,
    noise: Option<Noise>,
    line: Option<LineRate>,
    /// A byte read ahead by `read_ready`.
    peeked: Option<u8>,
    written: u64,
}

/// Flips each byte, in both directions, with a given probability.
#[derive(Debug, Clone)]
pub struct Noise {
    /// Probability that a byte is corrupted (one random bit flipped), 0 to 1.
    pub rate: f64,
    state: u64,
    /// Bytes corrupted so far.
    pub flipped: u64,
}

impl Noise {
    /// Corrupts bytes with probability `rate`, deterministically from `seed`.
    pub fn new(rate: f64, seed: u64) -> Self {
        Self {
            rate,
            state: seed | 1,
            flipped: 0,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn apply(&mut self, bytes: &mut [u8]) {
        for byte in bytes {
            if (self.next() % 1_000_000) as f64 / 1_000_000.0 < self.rate {
                *byte ^= 1 << (self.next() % 8);
                self.flipped += 1;
            }
        }
    }
}

/// Holds writes to `baud / 10` bytes per second (8N1: ten bit times per byte).
#[derive(Debug, Clone)]
struct LineRate {
    bytes_per_second: f64,
    started: Instant,
    sent: f64,
}

impl Port {
    /// Wraps an open, non-blocking tty.
    pub fn new(file: File) -> Self {
        Self {
            file,
            noise: None,
            line: None,
            peeked: None,
            written: 0,
        }
    }

    /// Corrupts bytes in transit, both ways.
    pub fn with_noise(mut self, noise: Noise) -> Self {
        self.noise = Some(noise);
        self
    }

    /// Limits writes to what a UART at `baud` (8N1) carries.
    pub fn with_line_rate(mut self, baud: u32) -> Self {
        self.line = Some(LineRate {
            bytes_per_second: f64::from(baud) / 10.0,
            started: Instant::now(),
            sent: 0.0,
        });
        self
    }

    /// Bytes written to the line so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes corrupted so far by the noisy line.
    pub fn flipped(&self) -> u64 {
        self.noise.as_ref().map_or(0, |noise| noise.flipped)
    }

    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut offset = 0;
        if let Some(byte) = self.peeked.take() {
            buf[0] = byte;
            offset = 1;
        }
        let n = match self.file.read(&mut buf[offset..]) {
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
            // A pty whose other side is not open reads EIO: nothing to read yet.
            Err(error) if error.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => 0,
            Err(error) => return Err(error),
        };
        if let Some(noise) = &mut self.noise {
            noise.apply(&mut buf[offset..offset + n]);
        }
        Ok(offset + n)
    }
}

impl embedded_io::ErrorType for Port {
    type Error = io::Error;
}

impl embedded_io::ReadReady for Port {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        if self.peeked.is_some() {
            return Ok(true);
        }
        let mut byte = [0u8; 1];
        if self.read_some(&mut byte)? == 1 {
            self.peeked = Some(byte[0]);
            return Ok(true);
        }
        Ok(false)
    }
}

impl embedded_io::Read for Port {
    /// Returns what is available, possibly nothing: call `read_ready` first to know.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.read_some(buf)
    }
}

impl embedded_io::Write for Port {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let mut bytes = buf.to_vec();
        if let Some(noise) = &mut self.noise {
            noise.apply(&mut bytes);
        }
        let mut written = 0;
        let mut blocked_since: Option<Instant> = None;
        while written < bytes.len() {
            if let Some(line) = &mut self.line {
                // Wait until the line has carried what was sent before.
                let due = line.started
                    + std::time::Duration::from_secs_f64(line.sent / line.bytes_per_second);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            match self.file.write(&bytes[written..]) {
                Ok(n) => {
                    written += n;
                    self.written += n as u64;
                    if let Some(line) = &mut self.line {
                        line.sent += n as f64;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    // The other side is not reading: give control back to the device's loop
                    // (which can then be stopped or unplugged) rather than wait for ever.
                    if blocked_since.get_or_insert_with(Instant::now).elapsed()
                        > std::time::Duration::from_millis(50)
                    {
                        return if written > 0 { Ok(written) } else { Err(error) };
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                // Nobody has the other side open: the bytes go nowhere, as on an unplugged line.
                Err(error)
                    if error.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) =>
                {
                    return Ok(buf.len());
                }
                Err(error) => return Err(error),
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A pty pair: the simulator keeps the master, a gateway opens [`PtyPair::slave_path`] (or a
/// symlink to it).
#[derive(Debug)]
pub struct PtyPair {
    /// The master side, non-blocking, close-on-exec.
    pub master: File,
    /// The slave side's device path, e.g. `/dev/pts/7`.
    pub slave_path: PathBuf,
}

/// Creates a pty pair in raw mode; with `link`, a symlink to its slave side is (re)placed there.
pub fn create_pty(link: Option<&Path>) -> io::Result<PtyPair> {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let slave_path = PathBuf::from(
        ptsname(&master, Vec::new())?
            .into_string()
            .map_err(|_| io::Error::other("pty name is not UTF-8"))?,
    );
    // Raw mode on the slave, so that bytes pass unchanged until the gateway sets its own mode.
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave_path)?;
    let mut termios = rustix::termios::tcgetattr(&slave)?;
    termios.make_raw();
    rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &termios)?;
    drop(slave);
    rustix::fs::fcntl_setfl(&master, rustix::fs::OFlags::NONBLOCK)?;
    if let Some(link) = link {
        let temporary = link.with_extension("new");
        let _ = std::fs::remove_file(&temporary);
        std::os::unix::fs::symlink(&slave_path, &temporary)?;
        std::fs::rename(&temporary, link)?;
    }
    Ok(PtyPair {
        master: File::from(master),
        slave_path,
    })
}

/// Opens an existing tty (a real serial adapter, or a pty slave) in raw mode at `baud`,
/// non-blocking.
pub fn open_tty(path: &Path, baud: u32) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(path)?;
    let mut termios = rustix::termios::tcgetattr(&file)?;
    termios.make_raw();
    termios.set_speed(baud)?;
    rustix::termios::tcsetattr(&file, rustix::termios::OptionalActions::Now, &termios)?;
    rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::NONBLOCK)?;
    Ok(file)
}

use std::os::unix::fs::OpenOptionsExt as _;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use embedded_io::{Read, ReadReady, Write};

    #[test]
    fn bytes_cross_a_pty_pair() {
        let pair = create_pty(None).unwrap();
        let slave = open_tty(&pair.slave_path, 115_200).unwrap();
        let mut device = Port::new(pair.master);
        let mut gateway = Port::new(slave);
        device.write(b"hello\0").unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < 6 && Instant::now() < deadline {
            if gateway.read_ready().unwrap() {
                let mut buf = [0u8; 16];
                let n = gateway.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            } else {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        assert_eq!(got, b"hello\0");
    }

    #[test]
    fn noise_flips_about_the_requested_share_of_bytes() {
        let mut noise = Noise::new(0.01, 42);
        let mut bytes = vec![0u8; 100_000];
        noise.apply(&mut bytes);
        let flipped = bytes.iter().filter(|&&b| b != 0).count();
        assert!((700..1300).contains(&flipped), "{flipped}");
        assert_eq!(noise.flipped, flipped as u64);
    }

    #[test]
    fn the_line_rate_holds_writes_back() {
        let pair = create_pty(None).unwrap();
        let _slave = open_tty(&pair.slave_path, 9600).unwrap();
        let mut port = Port::new(pair.master).with_line_rate(9600);
        let started = Instant::now();
        // 960 bytes/s: 240 bytes take about 250 ms.
        for _ in 0..4 {
            port.write(&[0x55; 60]).unwrap();
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed >= std::time::Duration::from_millis(180),
            "{elapsed:?}"
        );
    }
}
