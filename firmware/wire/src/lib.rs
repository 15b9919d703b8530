//! The Edge Gateway wire format: the device event, its CBOR encoding, and the serial link's
//! framed messages ([`link`]).
//!
//! This crate is the single definition of what a device sends, shared by the firmware, the gateway
//! and the simulator. It is `#![no_std]` and never allocates: strings are borrowed from the input on
//! decode ([`decode_event`]) and encoding writes into a caller-provided buffer ([`encode_event`]).
//!
//! Decoding checks structure only; [`Event::validate`] checks the content rules (device id form,
//! reading names, finite values, no duplicates). A receiver MUST call it before trusting an event.
//!
//! # On-wire format
//!
//! An event is one CBOR map (RFC 8949) with small unsigned integer keys:
//!
//! | key | field      | CBOR type                        | presence |
//! |-----|------------|----------------------------------|----------|
//! | 0   | `device`   | text, 1–64 bytes of `[A-Za-z0-9._-]` | required |
//! | 1   | `boot`     | unsigned integer ≤ 2³²−1         | required |
//! | 2   | `seq`      | unsigned integer ≤ 2³²−1         | required |
//! | 3   | `ts`       | unsigned integer, ms since the Unix epoch | optional |
//! | 4   | `readings` | map of text name → number, at most 32 entries | required |
//! | 5   | `kind`     | text, 1–64 bytes                 | optional |
//!
//! - The encoder writes keys in ascending order, definite lengths, and every reading value as a
//!   64-bit float so that no value is rounded. It omits `ts` and `kind` when they are absent.
//! - The decoder accepts any key order, definite or indefinite-length maps, any CBOR integer or
//!   float as a reading value (half-precision floats with the `half` feature), and `null` for an
//!   absent optional field. It skips unknown integer keys with their values, so that newer devices
//!   can add fields; it rejects text keys, duplicate known keys, a missing required key, more than
//!   [`MAX_READINGS`] readings, and bytes after the map.
//! - Keys 0–15 are reserved for this crate's future fields. Unknown values nested inside unknown
//!   keys SHOULD use definite lengths (skipping nested indefinite-length containers needs `alloc`).
#![no_std]

#[cfg(test)]
extern crate std;

mod cbor;
mod error;
mod event;
pub mod link;
mod readings;

pub use cbor::{decode_event, encode_event};
pub use error::WireError;
pub use event::{Event, is_valid_device_id};
pub use readings::Readings;

/// Longest device id, in bytes.
pub const MAX_DEVICE_LEN: usize = 64;
/// Most readings one event may carry.
pub const MAX_READINGS: usize = 32;
/// Longest reading name, in bytes of UTF-8.
pub const MAX_READING_NAME_LEN: usize = 64;
/// Longest event kind, in bytes of UTF-8.
pub const MAX_KIND_LEN: usize = 64;
