//! The device side of the serial link to the gateway: the protocol of [`edge_wire::link`].
//!
//! [`Link`] is a sans-IO state machine: it takes the bytes that arrived ([`Link::receive`]) and
//! hands out the next frame to write ([`Link::next_frame`], then [`Link::frame_written`]).
//! [`Link::poll`] is the thin loop that does both over an `embedded-io` serial port.
//!
//! ```
//! use edge_device::{Instant, Link, LinkConfig, Measurement};
//! use edge_wire::link::{Ack, Message, encode_frame};
//!
//! let mut link = Link::<16>::new(&LinkConfig::new("greenhouse-3", "1.4.0"), 7)?;
//! let mut measurement = Measurement::new();
//! measurement.push("temp_c", 21.5).unwrap();
//! assert_eq!(link.push(None, None, measurement), Ok(0));
//!
//! // Write what is due: a Hello, then the sample. Here into a Vec; on a device, the UART.
//! let now = Instant::from_millis(0);
//! let mut line = Vec::new();
//! while let Some(frame) = link.next_frame(now) {
//!     line.extend_from_slice(frame);
//!     link.frame_written(now);
//! }
//! assert_eq!(link.counters().sent, 1);
//!
//! // The gateway's ack, once it committed the event, frees it.
//! let (mut scratch, mut ack) = ([0u8; 32], [0u8; 32]);
//! let len = encode_frame(&Message::Ack(Ack { boot: 7, seq: 0 }), &mut scratch, &mut ack)?;
//! link.receive(now, &ack[..len]);
//! assert!(link.outbox().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The protocol, from the device's side
//! 1. Its first frame is a `Hello` (device, boot, firmware version, `oldest_seq`), preceded by a
//!    zero byte that ends whatever noise was on the line.
//! 2. Each event pushed into the outbox is written once as a `Sample`, in `seq` order, and stays
//!    held.
//! 3. An `Ack { boot, seq }` for this boot frees every held event up to `seq`. Acks for another
//!    boot, and acks for a `seq` never written, are ignored and counted; so are frames that fail
//!    COBS, the CRC or decoding.
//! 4. When events are unacknowledged and no ack has freed any for the retransmit timeout, it
//!    sends `Hello` with the lowest held `seq`, then every held event again, in order
//!    (go-back-N), and waits another timeout.
//! 5. When the full outbox drops an event that the current round has not yet written, the
//!    gateway would see a gap and drop everything after it; a `Hello` with the new `oldest_seq`
//!    goes first, so that it resumes from there.
//! 6. A failed write may leave half a frame on the line: the next frame is preceded by a zero byte,
//!    so that the gateway drops the fragment and nothing else.
//!
//! # Bounded work
//! A poll reads at most [`LinkConfig::max_read_per_poll`] bytes and writes at most
//! [`LinkConfig::max_frames_per_poll`] frames; a retransmission round of a full outbox is spread
//! over several polls. Nothing in the link panics, whatever arrives.

mod config;
mod counters;
mod poll;
mod state;
#[cfg(test)]
mod tests;

pub use config::{ConfigError, LinkConfig};
pub use counters::LinkCounters;
pub use state::{Link, Rejected};
