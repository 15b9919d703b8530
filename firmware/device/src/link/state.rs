//! The link's state machine: what to write next, and what an incoming frame changes.
//!
//! # State
//! - `cursor`: the next `seq` to write, from the outbox's oldest `seq` to its next one.
//! - `sent_end`: one past the highest `seq` ever written. An ack at or beyond it is for an event
//!   the gateway cannot have, and is ignored.
//! - `retransmit_at`: set while written events wait for their ack; moved on whenever an ack frees
//!   one, and when a retransmission round starts.
//! - `hello_due`, `delimiter_due`: a `Hello`, a lone zero byte, goes before the next frame.
//! - `pending`: what the frame handed out by [`Link::next_frame`] holds, until
//!   [`Link::frame_written`] or [`Link::write_failed`] says how it went.

use core::fmt;
use core::time::Duration;

use edge_wire::link::{
    Ack, FrameDecoder, Hello, MAX_FRAME_LEN, Message, Nack, Sample, encode_frame,
};
use edge_wire::{
    Event, MAX_DEVICE_LEN, MAX_KIND_LEN, MAX_READING_NAME_LEN, Readings, WireError,
    is_valid_device_id,
};
use heapless::String;

use super::{ConfigError, LinkConfig, LinkCounters};
use crate::clock::Instant;
use crate::outbox::Outbox;
use crate::sensor::{MAX_EVENT_READINGS, Measurement};

/// Longest firmware version a `Hello` carries, in bytes.
const MAX_FIRMWARE_VERSION_LEN: usize = 64;
/// Longest gateway → device frame accepted. An ack takes about 20 bytes; the rest leaves room
/// for messages of later versions, which are then counted as bad frames rather than overflowing.
pub(super) const MAX_RECEIVE_FRAME_LEN: usize = 128;
/// Longest CBOR message the device writes: a `Sample` with every field at its largest (array
/// header, type, boot, seq, map header, each reading as a 64-byte name and a 64-bit float, `ts`,
/// a 64-byte kind). Events that break the size rules are refused by [`Link::push`], so every held
/// event fits; a `Hello` is far smaller.
const MAX_MESSAGE_LEN: usize = 1
    + 1
    + 5
    + 5
    + 1
    + MAX_EVENT_READINGS * (2 + MAX_READING_NAME_LEN + 9)
    + 9
    + (2 + MAX_KIND_LEN);
/// The message and its CRC-32.
const SCRATCH_LEN: usize = MAX_MESSAGE_LEN + 4;
/// A leading zero byte, the COBS encoding (one extra byte per 254, plus one) and the delimiter.
const FRAME_BUFFER_LEN: usize = 1 + SCRATCH_LEN + SCRATCH_LEN / 254 + 1 + 1;
// Every frame the device writes is one the gateway accepts.
const _: () = assert!(FRAME_BUFFER_LEN - 2 <= MAX_FRAME_LEN);

/// What the frame last handed out holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Hello,
    Sample(u32),
}

/// The device end of the serial link: the outbox, the frame decoder, the encode buffers and the
/// protocol state, for one boot. `N` is the outbox capacity, in events.
pub struct Link<const N: usize> {
    device: String<MAX_DEVICE_LEN>,
    firmware_version: String<MAX_FIRMWARE_VERSION_LEN>,
    boot: u32,
    outbox: Outbox<N>,
    decoder: FrameDecoder<MAX_RECEIVE_FRAME_LEN>,
    scratch: [u8; SCRATCH_LEN],
    /// `frame[0]` stays zero: it is the delimiter written before a frame when one is due.
    frame: [u8; FRAME_BUFFER_LEN],
    pending: Option<Pending>,
    cursor: u32,
    sent_end: u32,
    hello_due: bool,
    delimiter_due: bool,
    retransmit_at: Option<Instant>,
    retransmit_timeout: Duration,
    pub(super) max_frames_per_poll: usize,
    pub(super) max_read_per_poll: usize,
    counters: LinkCounters,
}

/// An event [`Link::push`] refused, given back with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The event rule it breaks: a reading name that is empty, too long or holds a control
    /// character, a value that is not finite, a name twice, a bad kind.
    pub error: WireError,
    /// The refused readings.
    pub measurement: Measurement,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("failed to queue the event: it breaks the event rules")
    }
}

impl core::error::Error for Rejected {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<const N: usize> Link<N> {
    /// A link for `boot` (from a [`BootId`](crate::BootId)), with an empty outbox whose first
    /// event gets `seq` 0. Its first frame will be a `Hello`.
    pub fn new(config: &LinkConfig<'_>, boot: u32) -> Result<Self, ConfigError> {
        let mut device = String::new();
        if !is_valid_device_id(config.device) || device.push_str(config.device).is_err() {
            return Err(ConfigError::InvalidDevice);
        }
        let mut firmware_version = String::new();
        firmware_version
            .push_str(config.firmware_version)
            .map_err(|_| ConfigError::FirmwareVersionTooLong)?;
        Ok(Self {
            device,
            firmware_version,
            boot,
            outbox: Outbox::new(),
            decoder: FrameDecoder::new(),
            scratch: [0; SCRATCH_LEN],
            frame: [0; FRAME_BUFFER_LEN],
            pending: None,
            cursor: 0,
            sent_end: 0,
            hello_due: true,
            delimiter_due: true,
            retransmit_at: None,
            retransmit_timeout: config.retransmit_timeout,
            max_frames_per_poll: config.max_frames_per_poll.max(1),
            max_read_per_poll: config.max_read_per_poll,
            counters: LinkCounters::default(),
        })
    }

    /// Puts an event in the outbox, to be written at the next poll; returns its `seq`.
    ///
    /// An event that breaks the event rules (see [`Rejected::error`]) is refused here, counted,
    /// and given back, with the gateway's own validation code: the gateway would only
    /// dead-letter it, and refusing it here is what guarantees that every held event fits the
    /// frame buffers.
    // The refused readings come back inline: there is no heap to box them on, and a failed
    // hand-off gives its payload back.
    #[allow(clippy::result_large_err)]
    pub fn push(
        &mut self,
        ts: Option<u64>,
        kind: Option<&'static str>,
        measurement: Measurement,
    ) -> Result<u32, Rejected> {
        if let Err(error) = self.check_event(ts, kind, &measurement) {
            self.counters.rejected = self.counters.rejected.wrapping_add(1);
            return Err(Rejected { error, measurement });
        }
        let pushed = self.outbox.push(ts, kind, measurement);
        if let Some(dropped) = pushed.dropped
            && dropped.seq >= self.cursor
        {
            // Protocol step 5: the gateway would wait for the dropped event.
            self.hello_due = true;
        }
        self.cursor = self.cursor.max(self.outbox.oldest_seq());
        Ok(pushed.seq)
    }

    /// Takes bytes that arrived from the gateway, in any pieces, and acts on the acks among them.
    /// Everything else is counted and dropped.
    pub fn receive(&mut self, now: Instant, mut bytes: &[u8]) {
        while let Some(decoded) = self.decoder.decode(&mut bytes) {
            let ack = match decoded {
                Ok(Message::Ack(ack)) => ack,
                Ok(Message::Nack(nack)) => {
                    self.on_nack(nack);
                    continue;
                }
                Ok(Message::Hello(_) | Message::Sample(_)) => {
                    self.counters.ignored_messages = self.counters.ignored_messages.wrapping_add(1);
                    continue;
                }
                Err(_) => {
                    self.counters.bad_frames = self.counters.bad_frames.wrapping_add(1);
                    continue;
                }
            };
            self.on_ack(now, ack);
        }
    }

    /// The next frame to write, if one is due at `now`: a `Hello`, a new event, or the next event
    /// of a retransmission round. Asking again before [`frame_written`](Self::frame_written) or
    /// [`write_failed`](Self::write_failed) gives the same frame.
    pub fn next_frame(&mut self, now: Instant) -> Option<&[u8]> {
        self.check_retransmit(now);
        self.cursor = self.cursor.max(self.outbox.oldest_seq());
        let (pending, message) = if self.hello_due {
            let hello = Hello {
                device: &self.device,
                boot: self.boot,
                firmware_version: &self.firmware_version,
                oldest_seq: self.outbox.oldest_seq(),
            };
            (Pending::Hello, Message::Hello(hello))
        } else {
            let event = self.outbox.get(self.cursor)?;
            let sample = Sample {
                boot: self.boot,
                seq: event.seq,
                ts: event.ts,
                kind: event.kind,
                readings: wire_readings(&event.measurement).ok()?,
            };
            (Pending::Sample(event.seq), Message::Sample(sample))
        };
        // Cannot fail: held events passed `check_event`, so they fit the buffers (see
        // MAX_MESSAGE_LEN and the test that encodes the largest event).
        let len = encode_frame(&message, &mut self.scratch, &mut self.frame[1..]).ok()?;
        self.pending = Some(pending);
        let start = usize::from(!self.delimiter_due);
        self.frame.get(start..1 + len)
    }

    /// The frame from [`next_frame`](Self::next_frame) was written whole.
    pub fn frame_written(&mut self, now: Instant) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        self.delimiter_due = false;
        match pending {
            Pending::Hello => {
                self.hello_due = false;
                self.counters.hellos = self.counters.hellos.wrapping_add(1);
            }
            Pending::Sample(seq) => {
                if seq < self.sent_end {
                    self.counters.retransmitted = self.counters.retransmitted.wrapping_add(1);
                } else {
                    self.counters.sent = self.counters.sent.wrapping_add(1);
                    self.sent_end = seq.saturating_add(1);
                }
                self.cursor = self.cursor.max(seq.saturating_add(1));
                if self.retransmit_at.is_none() {
                    self.retransmit_at = Some(now.saturating_add(self.retransmit_timeout));
                }
            }
        }
    }

    /// Writing the frame from [`next_frame`](Self::next_frame) failed, perhaps half-way: it will
    /// be written again, after a zero byte that ends the fragment.
    pub fn write_failed(&mut self) {
        self.pending = None;
        self.delimiter_due = true;
        self.counters.io_errors = self.counters.io_errors.wrapping_add(1);
    }

    /// Reading from the port failed; only counted.
    pub fn read_failed(&mut self) {
        self.counters.io_errors = self.counters.io_errors.wrapping_add(1);
    }

    /// When the link must be polled next at the latest, to retransmit; `None` while no written
    /// event waits for an ack.
    pub fn retransmit_at(&self) -> Option<Instant> {
        self.retransmit_at
    }

    /// The boot this link speaks for.
    pub fn boot(&self) -> u32 {
        self.boot
    }

    /// The device id.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The firmware version sent in every `Hello`.
    pub fn firmware_version(&self) -> &str {
        &self.firmware_version
    }

    /// The events waiting for their ack.
    pub fn outbox(&self) -> &Outbox<N> {
        &self.outbox
    }

    /// What the link has done so far.
    pub fn counters(&self) -> LinkCounters {
        LinkCounters {
            dropped_full: self.outbox.dropped_full(),
            ..self.counters
        }
    }

    fn on_ack(&mut self, now: Instant, ack: Ack) {
        if ack.boot != self.boot || ack.seq >= self.sent_end {
            self.counters.ignored_acks = self.counters.ignored_acks.wrapping_add(1);
            return;
        }
        let freed = self.outbox.ack(ack.seq);
        if freed == 0 {
            // A repeated ack, e.g. for a retransmitted event the gateway already had.
            return;
        }
        let freed = u32::try_from(freed).unwrap_or(u32::MAX);
        self.counters.acked = self.counters.acked.wrapping_add(freed);
        self.cursor = self.cursor.max(self.outbox.oldest_seq());
        self.retransmit_at = self
            .awaiting_ack()
            .then(|| now.saturating_add(self.retransmit_timeout));
    }

    /// Protocol step 5: the gateway missed `nack.seq` (it arrived corrupted, or not at all) and
    /// dropped what followed: go back to it now rather than at the timeout.
    fn on_nack(&mut self, nack: Nack) {
        if nack.boot != self.boot || nack.seq >= self.sent_end {
            // Another boot, or a gap the device has not written past yet: nothing to resend.
            self.counters.ignored_acks = self.counters.ignored_acks.wrapping_add(1);
            return;
        }
        self.counters.nacks = self.counters.nacks.wrapping_add(1);
        if nack.seq < self.outbox.oldest_seq() {
            // The gateway waits for an event this device no longer holds (acked and freed, or
            // dropped when the outbox was full): tell it where the outbox starts.
            self.hello_due = true;
        }
        self.cursor = self.cursor.min(nack.seq.max(self.outbox.oldest_seq()));
    }

    /// Protocol step 4: go back to the oldest held event when the timeout passed.
    fn check_retransmit(&mut self, now: Instant) {
        match self.retransmit_at {
            Some(at) if at <= now => {}
            _ => return,
        }
        if self.awaiting_ack() {
            self.hello_due = true;
            self.cursor = self.outbox.oldest_seq();
            self.counters.retransmit_rounds = self.counters.retransmit_rounds.wrapping_add(1);
            self.retransmit_at = Some(now.saturating_add(self.retransmit_timeout));
        } else {
            self.retransmit_at = None;
        }
    }

    /// Whether a held event was written and waits for its ack.
    fn awaiting_ack(&self) -> bool {
        !self.outbox.is_empty() && self.outbox.oldest_seq() < self.sent_end
    }

    /// The content rules the gateway checks, with the same code.
    fn check_event(
        &self,
        ts: Option<u64>,
        kind: Option<&'static str>,
        measurement: &Measurement,
    ) -> Result<(), WireError> {
        Event {
            device: &self.device,
            boot: self.boot,
            seq: self.outbox.next_seq(),
            ts,
            kind,
            readings: wire_readings(measurement)?,
        }
        .validate()
    }
}

impl<const N: usize> fmt::Debug for Link<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("device", &self.device)
            .field("boot", &self.boot)
            .field("outbox", &self.outbox)
            .field("cursor", &self.cursor)
            .field("sent_end", &self.sent_end)
            .field("hello_due", &self.hello_due)
            .field("retransmit_at", &self.retransmit_at)
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

/// The readings in the wire crate's form.
fn wire_readings(measurement: &Measurement) -> Result<Readings<'static>, WireError> {
    let mut readings = Readings::new();
    for reading in measurement.as_slice() {
        readings.push(reading.name, reading.value)?;
    }
    Ok(readings)
}
