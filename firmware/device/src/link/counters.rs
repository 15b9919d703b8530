//! What the link has done, for the device's diagnostics.

/// Running totals of a [`Link`](super::Link), each wrapping at 2³².
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Samples written for the first time.
    pub sent: u32,
    /// Samples written again by a retransmission round.
    pub retransmitted: u32,
    /// Retransmission rounds: times the retransmit timeout passed without an ack.
    pub retransmit_rounds: u32,
    /// `Hello` frames written.
    pub hellos: u32,
    /// Events freed by acks.
    pub acked: u32,
    /// Events dropped, oldest first, because the outbox was full.
    pub dropped_full: u32,
    /// Events refused by [`Link::push`](super::Link::push) because they break the event rules.
    pub rejected: u32,
    /// Frames from the gateway dropped: bad COBS, bad CRC, too long, or not a message this
    /// version knows.
    pub bad_frames: u32,
    /// Nacks acted on: the gateway asked for a resend from a `seq`, and got it at once.
    pub nacks: u32,
    /// Acks and nacks ignored: for another boot, or for a `seq` not yet written.
    pub ignored_acks: u32,
    /// Well-formed messages that only a device sends (a line that echoes, two devices crossed).
    pub ignored_messages: u32,
    /// Failed reads and writes of the serial port.
    pub io_errors: u32,
}
