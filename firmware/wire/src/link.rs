//! The serial link: messages between a device and the gateway, and how they are framed on a byte
//! stream (UART, USB serial).
//!
//! # Frames
//! A frame is `COBS(message ‖ CRC-32(message)) ‖ 0x00`: the CBOR message, its CRC-32
//! (ISO-HDLC, the CRC of Ethernet and zlib, little-endian) appended, the whole COBS-encoded so that
//! it holds no zero byte, and a zero byte as delimiter. A receiver that sees garbage, a bad CRC or a
//! frame longer than its buffer drops what it has and starts again after the next zero byte: one
//! corrupt frame never costs more than itself. A sender MAY send extra zero bytes (empty frames are
//! ignored), e.g. one before its first frame to end whatever noise preceded it.
//!
//! # Messages
//! Each message is a CBOR array whose first element is its type:
//!
//! | message | direction | array |
//! |---|---|---|
//! | [`Hello`] | device → gateway | `[0, device, boot, firmware_version, oldest_seq]` |
//! | [`Sample`] (an event) | device → gateway | `[1, boot, seq, readings, ts?, kind?]` |
//! | [`Ack`] | gateway → device | `[2, boot, seq]` |
//! | [`Nack`] | gateway → device | `[3, boot, seq]` |
//!
//! Receivers ignore array elements past those they know, so that later versions can add fields.
//! Reading values are encoded as the shortest exact form: an integer when the value is integral,
//! a 32-bit float when that is exact, a 64-bit float otherwise.
//!
//! # The protocol (go-back-N with cumulative acks)
//! 1. A device sends `Hello` when it starts, and again before each retransmission round, with the
//!    lowest `seq` it still holds (`oldest_seq`; the next `seq` when it holds none).
//! 2. It sends each event as a `Sample` with `seq` one higher than the previous (starting from 0
//!    in a new boot) and keeps it in its outbox.
//! 3. The gateway stores a sample only if its `seq` is the next one it expects from that device and
//!    boot; after a `Hello` it expects `oldest_seq`, unless it already stored more. It sends
//!    `Ack { boot, seq }` **after the journal commit**; the ack means: everything of this boot up to
//!    `seq` is stored. A sample it already stored is acknowledged again, not stored twice; a sample
//!    after a gap is dropped (the device resends from the gap).
//! 4. On an ack the device frees every event of that boot up to `seq`. When acks stop arriving for
//!    its retransmit timeout, it sends `Hello` and everything it holds again, in order.
//! 5. When a sample arrives after a gap, the gateway sends `Nack { boot, seq }` with the `seq` it
//!    expects (at most one per gap every 100 ms), and the device resends from there at once
//!    instead of waiting for its timeout. On a noisy line this is what keeps go-back-N moving.

use minicbor::decode::Decoder;
use minicbor::encode::{Encoder, write::Cursor};

use crate::cbor::{decode_readings, expect, optional};
use crate::{Event, MAX_DEVICE_LEN, Readings, WireError};

/// Longest frame a receiver must accept, delimiter excluded: a `Sample` with 32 readings of long
/// names fits in it.
pub const MAX_FRAME_LEN: usize = 4096;

const HELLO: u8 = 0;
const SAMPLE: u8 = 1;
const ACK: u8 = 2;
const NACK: u8 = 3;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// A device introducing itself: who it is, which boot, and the oldest event it still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Device id: 1–64 characters of `[A-Za-z0-9._-]`.
    pub device: &'a str,
    /// Boot counter: a new value each time the device starts.
    pub boot: u32,
    /// Firmware version, free text (at most 64 bytes).
    pub firmware_version: &'a str,
    /// Lowest `seq` the device still holds, or its next `seq` if it holds none.
    pub oldest_seq: u32,
}

/// One event on the serial link. The device is the one the last [`Hello`] named.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// Boot counter, as in the device's `Hello`.
    pub boot: u32,
    /// Sequence number within the boot, +1 per event, from 0.
    pub seq: u32,
    /// Device time of the event, in milliseconds since the Unix epoch, if the device knows it.
    pub ts: Option<u64>,
    /// Optional category of the event.
    pub kind: Option<&'a str>,
    /// The measured values.
    pub readings: Readings<'a>,
}

impl<'a> Sample<'a> {
    /// The event this sample is, for `device`.
    pub fn into_event(self, device: &'a str) -> Event<'a> {
        Event {
            device,
            boot: self.boot,
            seq: self.seq,
            ts: self.ts,
            kind: self.kind,
            readings: self.readings,
        }
    }
}

/// The gateway's cumulative acknowledgement: every event of `boot` up to `seq` is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Boot counter the ack is for.
    pub boot: u32,
    /// Highest stored `seq` of that boot.
    pub seq: u32,
}

/// The gateway's request to resend: the next sample of `boot` it can store is `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nack {
    /// Boot counter the request is for.
    pub boot: u32,
    /// The `seq` the gateway expects next.
    pub seq: u32,
}

/// Any message of the serial link.
// A sample holds its readings inline (no allocation on a microcontroller); messages are decoded
// one at a time, so the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// Device → gateway.
    Hello(Hello<'a>),
    /// Device → gateway.
    Sample(Sample<'a>),
    /// Gateway → device.
    Ack(Ack),
    /// Gateway → device.
    Nack(Nack),
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes between two delimiters are not valid COBS.
    Cobs,
    /// The frame is shorter than a CRC, or its CRC does not match.
    Crc,
    /// The frame grew past the receiver's buffer before its delimiter.
    TooLong,
    /// The CRC matched, but the message is not one this version understands.
    Message(WireError),
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Cobs => f.write_str("frame is not valid COBS"),
            Self::Crc => f.write_str("frame CRC does not match"),
            Self::TooLong => f.write_str("frame longer than the receive buffer"),
            Self::Message(error) => write!(f, "bad message: {error}"),
        }
    }
}

impl core::error::Error for FrameError {}

/// Encodes `message` as one complete frame (delimiter included) into `out`, using `scratch` for
/// the unframed message. Returns the frame's length.
///
/// `scratch` must hold the CBOR message plus 4 bytes of CRC; `out` that plus 1 byte per 254 and
/// the delimiter. [`MAX_FRAME_LEN`]-sized buffers hold any message.
pub fn encode_frame(
    message: &Message<'_>,
    scratch: &mut [u8],
    out: &mut [u8],
) -> Result<usize, WireError> {
    let len = encode_message(message, scratch)?;
    let crc = CRC.checksum(&scratch[..len]).to_le_bytes();
    let with_crc = len + crc.len();
    scratch
        .get_mut(len..with_crc)
        .ok_or(WireError::BufferTooSmall)?
        .copy_from_slice(&crc);
    let encoded =
        cobs::try_encode(&scratch[..with_crc], out).map_err(|_| WireError::BufferTooSmall)?;
    *out.get_mut(encoded).ok_or(WireError::BufferTooSmall)? = 0;
    Ok(encoded + 1)
}

/// Encodes `message` as CBOR (no framing) into `buf`; returns its length.
pub fn encode_message(message: &Message<'_>, buf: &mut [u8]) -> Result<usize, WireError> {
    let mut e = Encoder::new(Cursor::new(buf));
    let written = match message {
        Message::Hello(hello) => e
            .array(5)
            .and_then(|e| e.u8(HELLO))
            .and_then(|e| e.str(hello.device))
            .and_then(|e| e.u32(hello.boot))
            .and_then(|e| e.str(hello.firmware_version))
            .and_then(|e| e.u32(hello.oldest_seq))
            .map(|_| ()),
        Message::Sample(sample) => encode_sample(&mut e, sample),
        Message::Ack(ack) => e
            .array(3)
            .and_then(|e| e.u8(ACK))
            .and_then(|e| e.u32(ack.boot))
            .and_then(|e| e.u32(ack.seq))
            .map(|_| ()),
        Message::Nack(nack) => e
            .array(3)
            .and_then(|e| e.u8(NACK))
            .and_then(|e| e.u32(nack.boot))
            .and_then(|e| e.u32(nack.seq))
            .map(|_| ()),
    };
    match written {
        Ok(()) => Ok(e.writer().position()),
        // Writing into a slice fails only when the slice is full.
        Err(_) => Err(WireError::BufferTooSmall),
    }
}

fn encode_sample<W: minicbor::encode::Write>(
    e: &mut Encoder<W>,
    sample: &Sample<'_>,
) -> Result<(), minicbor::encode::Error<W::Error>> {
    let len = match (sample.ts, sample.kind) {
        (_, Some(_)) => 6,
        (Some(_), None) => 5,
        (None, None) => 4,
    };
    e.array(len)?
        .u8(SAMPLE)?
        .u32(sample.boot)?
        .u32(sample.seq)?;
    e.map(sample.readings.len() as u64)?;
    for (name, value) in sample.readings.iter() {
        e.str(name)?;
        encode_number(e, value)?;
    }
    if len >= 5 {
        match sample.ts {
            Some(ts) => e.u64(ts)?,
            None => e.null()?,
        };
    }
    if let Some(kind) = sample.kind {
        e.str(kind)?;
    }
    Ok(())
}

/// The shortest exact CBOR form of a reading value.
fn encode_number<W: minicbor::encode::Write>(
    e: &mut Encoder<W>,
    value: f64,
) -> Result<(), minicbor::encode::Error<W::Error>> {
    // Integral and within ±2⁵³: an integer, which converts back to exactly this f64.
    const EXACT_INT: f64 = 9_007_199_254_740_992.0;
    if value.is_finite() && value == (value as i64) as f64 && value.abs() <= EXACT_INT {
        e.i64(value as i64)?;
    } else if f64::from(value as f32) == value || value.is_nan() {
        e.f32(value as f32)?;
    } else {
        e.f64(value)?;
    }
    Ok(())
}

/// Decodes one unframed message that fills `bytes` exactly.
///
/// A `Hello` must name a valid device id. A `Sample` is checked for structure only, like
/// [`crate::decode_event`]: a receiver calls [`Event::validate`] on it, and can still acknowledge
/// (and so get rid of) a sample whose content it rejects, since it knows its `seq`.
pub fn decode_message(bytes: &[u8]) -> Result<Message<'_>, WireError> {
    let mut d = Decoder::new(bytes);
    let len = expect_len(&mut d)?;
    let kind = expect(&mut d, "expected a message type", Decoder::u8)?;
    let (message, known) = match kind {
        HELLO => {
            at_least(len, 5)?;
            let device = expect(&mut d, "expected utf-8 text for `device`", Decoder::str)?;
            let boot = expect(&mut d, "expected a 32-bit `boot`", Decoder::u32)?;
            let firmware_version = expect(
                &mut d,
                "expected utf-8 text for `firmware_version`",
                Decoder::str,
            )?;
            let oldest_seq = expect(&mut d, "expected a 32-bit `oldest_seq`", Decoder::u32)?;
            if !crate::is_valid_device_id(device) {
                return Err(WireError::InvalidDevice);
            }
            if firmware_version.len() > MAX_DEVICE_LEN {
                return Err(WireError::Malformed {
                    offset: 0,
                    reason: "`firmware_version` is longer than 64 bytes",
                });
            }
            let hello = Hello {
                device,
                boot,
                firmware_version,
                oldest_seq,
            };
            (Message::Hello(hello), 5)
        }
        SAMPLE => {
            at_least(len, 4)?;
            let boot = expect(&mut d, "expected a 32-bit `boot`", Decoder::u32)?;
            let seq = expect(&mut d, "expected a 32-bit `seq`", Decoder::u32)?;
            let readings = decode_readings(&mut d)?;
            let ts = if len >= 5 {
                optional(
                    &mut d,
                    "expected an unsigned integer for `ts`",
                    Decoder::u64,
                )?
            } else {
                None
            };
            let kind = if len >= 6 {
                optional(&mut d, "expected utf-8 text for `kind`", Decoder::str)?
            } else {
                None
            };
            let sample = Sample {
                boot,
                seq,
                ts,
                kind,
                readings,
            };
            (
                Message::Sample(sample),
                4 + u64::from(len >= 5) + u64::from(len >= 6),
            )
        }
        ACK => {
            at_least(len, 3)?;
            let boot = expect(&mut d, "expected a 32-bit `boot`", Decoder::u32)?;
            let seq = expect(&mut d, "expected a 32-bit `seq`", Decoder::u32)?;
            (Message::Ack(Ack { boot, seq }), 3)
        }
        NACK => {
            at_least(len, 3)?;
            let boot = expect(&mut d, "expected a 32-bit `boot`", Decoder::u32)?;
            let seq = expect(&mut d, "expected a 32-bit `seq`", Decoder::u32)?;
            (Message::Nack(Nack { boot, seq }), 3)
        }
        _ => {
            return Err(WireError::Malformed {
                offset: 1,
                reason: "unknown message type",
            });
        }
    };
    for _ in known..len {
        expect(&mut d, "expected a well-formed value", Decoder::skip)?;
    }
    let offset = d.position();
    if offset < bytes.len() {
        return Err(WireError::TrailingBytes { offset });
    }
    Ok(message)
}

fn expect_len(d: &mut Decoder<'_>) -> Result<u64, WireError> {
    match expect(d, "expected a message array", Decoder::array)? {
        Some(len) => Ok(len),
        None => Err(WireError::Malformed {
            offset: 0,
            reason: "expected a definite-length message array",
        }),
    }
}

fn at_least(len: u64, needed: u64) -> Result<(), WireError> {
    if len < needed {
        return Err(WireError::Malformed {
            offset: 0,
            reason: "message array is missing fields",
        });
    }
    Ok(())
}

/// Splits a byte stream into frames and decodes them; `N` is the longest frame accepted
/// (delimiter excluded). Sans-IO: feed it whatever the port delivered.
///
/// ```
/// use edge_wire::link::{Ack, FrameDecoder, Message, encode_frame, MAX_FRAME_LEN};
/// let mut scratch = [0u8; 64];
/// let mut frame = [0u8; 64];
/// let len = encode_frame(&Message::Ack(Ack { boot: 7, seq: 41 }), &mut scratch, &mut frame).unwrap();
/// let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
/// let mut input = &frame[..len];
/// assert_eq!(decoder.decode(&mut input), Some(Ok(Message::Ack(Ack { boot: 7, seq: 41 }))));
/// assert!(input.is_empty());
/// ```
#[derive(Debug)]
pub struct FrameDecoder<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflowed: bool,
}

impl<const N: usize> Default for FrameDecoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameDecoder<N> {
    /// An empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            overflowed: false,
        }
    }

    /// Takes bytes from the front of `input` up to and including the next delimiter, and returns
    /// what that frame held; `None` when `input` ran out first (the partial frame is kept for the
    /// next call). Never panics, whatever the input.
    pub fn decode<'s>(&'s mut self, input: &mut &[u8]) -> Option<Result<Message<'s>, FrameError>> {
        while let Some((&byte, rest)) = input.split_first() {
            *input = rest;
            if byte != 0 {
                if self.len < N {
                    self.buf[self.len] = byte;
                    self.len += 1;
                } else {
                    self.overflowed = true;
                }
                continue;
            }
            let len = core::mem::take(&mut self.len);
            if core::mem::take(&mut self.overflowed) {
                return Some(Err(FrameError::TooLong));
            }
            if len == 0 {
                continue;
            }
            return Some(self.finish(len));
        }
        None
    }

    /// Whether bytes of an unfinished frame are held.
    pub fn is_mid_frame(&self) -> bool {
        self.len > 0 || self.overflowed
    }

    fn finish(&mut self, len: usize) -> Result<Message<'_>, FrameError> {
        let frame = &mut self.buf[..len];
        let decoded = cobs::decode_in_place(frame).map_err(|_| FrameError::Cobs)?;
        let Some(body_len) = decoded.checked_sub(4) else {
            return Err(FrameError::Crc);
        };
        let (body, crc) = frame[..decoded].split_at(body_len);
        let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if CRC.checksum(body) != expected {
            return Err(FrameError::Crc);
        }
        decode_message(&self.buf[..body_len]).map_err(FrameError::Message)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    fn frame(message: &Message<'_>) -> Vec<u8> {
        let mut scratch = [0u8; MAX_FRAME_LEN];
        let mut out = [0u8; MAX_FRAME_LEN + MAX_FRAME_LEN / 254 + 2];
        let len = encode_frame(message, &mut scratch, &mut out).unwrap();
        out[..len].to_vec()
    }

    fn sample(seq: u32) -> Message<'static> {
        let mut readings = Readings::new();
        readings.push("temp_c", 21.5).unwrap();
        readings.push("rh", f64::from(40.2f32)).unwrap();
        readings.push("co2_ppm", 415.0).unwrap();
        Message::Sample(Sample {
            boot: 3_000_000_000,
            seq,
            ts: None,
            kind: None,
            readings,
        })
    }

    fn decode_all(bytes: &[u8]) -> Vec<Result<std::string::String, FrameError>> {
        let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
        let mut input = bytes;
        let mut out = Vec::new();
        while let Some(result) = decoder.decode(&mut input) {
            out.push(result.map(|message| std::format!("{message:?}")));
        }
        out
    }

    #[test]
    fn every_message_round_trips_through_a_frame() {
        let hello = Message::Hello(Hello {
            device: "greenhouse-3",
            boot: 7,
            firmware_version: "1.2.0",
            oldest_seq: 40,
        });
        let ack = Message::Ack(Ack { boot: 7, seq: 41 });
        let nack = Message::Nack(Nack { boot: 7, seq: 42 });
        let mut with_optionals = sample(9);
        if let Message::Sample(sample) = &mut with_optionals {
            sample.kind = Some("alarm");
        }
        for message in [hello, sample(0), ack, nack, with_optionals] {
            let bytes = frame(&message);
            assert_eq!(bytes.iter().filter(|&&b| b == 0).count(), 1);
            assert_eq!(bytes.last(), Some(&0));
            let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
            let mut input = bytes.as_slice();
            assert_eq!(decoder.decode(&mut input), Some(Ok(message.clone())));
        }
    }

    #[test]
    fn a_typical_event_fits_in_48_bytes() {
        // Three readings, no device clock: the gateway stamps the receive time.
        assert!(
            frame(&sample(1234)).len() <= 48,
            "{}",
            frame(&sample(1234)).len()
        );
    }

    #[test]
    fn a_corrupt_frame_costs_only_itself() {
        let mut stream = frame(&sample(1));
        let mut bad = frame(&sample(2));
        bad[5] ^= 0x40;
        stream.extend(&bad);
        stream.extend(frame(&sample(3)));
        let results = decode_all(&stream);
        assert_eq!(results.len(), 3);
        assert!(results[0].is_ok());
        assert!(matches!(
            results[1],
            Err(FrameError::Crc | FrameError::Cobs)
        ));
        assert!(results[2].as_ref().unwrap().contains("seq: 3"));
    }

    #[test]
    fn overlong_frames_are_dropped_and_the_next_one_decodes() {
        let mut stream = std::vec![0x55u8; 100];
        stream.push(0);
        stream.extend(frame(&Message::Ack(Ack { boot: 1, seq: 2 })));
        let mut decoder = FrameDecoder::<32>::new();
        let mut input = stream.as_slice();
        assert_eq!(decoder.decode(&mut input), Some(Err(FrameError::TooLong)));
        assert_eq!(
            decoder.decode(&mut input),
            Some(Ok(Message::Ack(Ack { boot: 1, seq: 2 })))
        );
    }

    #[test]
    fn a_frame_split_anywhere_decodes_the_same() {
        let bytes = frame(&sample(5));
        for split in 0..bytes.len() {
            let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
            let mut first = &bytes[..split];
            assert_eq!(decoder.decode(&mut first), None);
            let mut second = &bytes[split..];
            assert_eq!(decoder.decode(&mut second), Some(Ok(sample(5))));
        }
    }

    #[test]
    fn bad_messages_with_good_crcs_are_rejected() {
        let mut scratch = [0u8; 64];
        for body in [
            &[0x83, 0x09, 0x01, 0x02][..],   // unknown type
            &[0x82, 0x02, 0x01],             // ack missing seq
            &[0x9f, 0x02, 0x01, 0x02, 0xff], // indefinite array
        ] {
            scratch[..body.len()].copy_from_slice(body);
            let crc = CRC.checksum(body).to_le_bytes();
            scratch[body.len()..body.len() + 4].copy_from_slice(&crc);
            let mut out = [0u8; 80];
            let len = cobs::try_encode(&scratch[..body.len() + 4], &mut out).unwrap();
            out[len] = 0;
            let results = decode_all(&out[..=len]);
            assert!(
                matches!(results[..], [Err(FrameError::Message(_))]),
                "{results:?}"
            );
        }
    }

    fn arb_sample()
    -> impl Strategy<Value = (u32, u32, Option<u64>, Vec<(std::string::String, f64)>)> {
        (
            any::<u32>(),
            any::<u32>(),
            proptest::option::of(any::<u64>()),
            proptest::collection::btree_map("[a-z_]{1,12}", -1e9f64..1e9, 0..8)
                .prop_map(|map| map.into_iter().collect::<Vec<_>>()),
        )
    }

    proptest! {
        #[test]
        fn samples_round_trip((boot, seq, ts, values) in arb_sample()) {
            let mut readings = Readings::new();
            for (name, value) in &values {
                readings.push(name, *value).unwrap();
            }
            let message = Message::Sample(Sample { boot, seq, ts, kind: None, readings });
            let bytes = frame(&message);
            let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
            let mut input = bytes.as_slice();
            prop_assert_eq!(decoder.decode(&mut input), Some(Ok(message)));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            decode_all(&bytes);
        }

        /// A corrupted stream yields each frame either exactly as sent or not at all.
        #[test]
        fn corruption_never_yields_a_wrong_message(
            seqs in proptest::collection::vec(any::<u32>(), 1..8),
            flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..6),
        ) {
            let sent: Vec<Message<'static>> = seqs.iter().map(|&seq| sample(seq)).collect();
            let mut stream: Vec<u8> = sent.iter().flat_map(|message| frame(message)).collect();
            for (at, mask) in flips {
                let at = at % stream.len();
                stream[at] ^= mask;
            }
            let expected: Vec<std::string::String> =
                sent.iter().map(|message| std::format!("{message:?}")).collect();
            for message in decode_all(&stream).into_iter().flatten() {
                prop_assert!(expected.contains(&message), "decoded a message never sent: {}", message);
            }
        }
    }
}
