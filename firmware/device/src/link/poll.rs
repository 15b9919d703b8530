//! The thin I/O loop: a [`Link`] over an `embedded-io` serial port.
//!
//! The port needs [`ReadReady`] so that a poll reads only what has already arrived and never
//! waits for the gateway. Writes go through [`Write`], which blocks only while the port takes the
//! bytes (a UART takes them at line rate).

use embedded_io::{Read, ReadReady, Write};

use super::Link;
use crate::clock::Instant;

/// Bytes read from the port at a time.
const READ_CHUNK_LEN: usize = 64;

impl<const N: usize> Link<N> {
    /// One turn of the link at `now`: reads what has arrived (at most
    /// [`max_read_per_poll`](super::LinkConfig::max_read_per_poll) bytes) and acts on the acks,
    /// then writes what is due (at most
    /// [`max_frames_per_poll`](super::LinkConfig::max_frames_per_poll) frames) and flushes.
    ///
    /// Port errors are counted in [`io_errors`](super::LinkCounters::io_errors) and end the turn;
    /// nothing is lost by them, the next poll carries on.
    pub fn poll<S>(&mut self, now: Instant, serial: &mut S)
    where
        S: Read + ReadReady + Write,
    {
        self.read_available(now, serial);
        let mut written = false;
        for _ in 0..self.max_frames_per_poll {
            let Some(frame) = self.next_frame(now) else {
                break;
            };
            if write_all(serial, frame).is_err() {
                self.write_failed();
                return;
            }
            self.frame_written(now);
            written = true;
        }
        if written && serial.flush().is_err() {
            self.write_failed();
        }
    }

    fn read_available<S: Read + ReadReady>(&mut self, now: Instant, serial: &mut S) {
        let mut buf = [0u8; READ_CHUNK_LEN];
        let mut budget = self.max_read_per_poll;
        while budget > 0 {
            match serial.read_ready() {
                Ok(true) => {}
                Ok(false) => return,
                Err(_) => return self.read_failed(),
            }
            let want = budget.min(buf.len());
            match serial.read(&mut buf[..want]) {
                // End of stream (a port that went away): nothing more to read now.
                Ok(0) => return,
                Ok(len) => {
                    // Never trust a length beyond what was asked for.
                    let len = len.min(want);
                    budget -= len;
                    self.receive(now, &buf[..len]);
                }
                Err(_) => return self.read_failed(),
            }
        }
    }
}

/// `Write::write_all`, except that a port claiming to take no bytes is an error, not a panic.
fn write_all<S: Write>(serial: &mut S, mut bytes: &[u8]) -> Result<(), ()> {
    while !bytes.is_empty() {
        match serial.write(bytes) {
            Ok(0) | Err(_) => return Err(()),
            Ok(len) => bytes = bytes.get(len..).unwrap_or_default(),
        }
    }
    Ok(())
}
