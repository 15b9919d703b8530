//! CBOR encoding of [`Event`]: hand-written so that the format stays compact (integer keys),
//! evolvable (unknown keys skipped) and exact (readings always as 64-bit floats).
//!
//! The key table is in the crate documentation, section "On-wire format".

use minicbor::data::Type;
use minicbor::decode::{self, Decoder};
use minicbor::encode::{self, Encoder, Write, write::Cursor};
use minicbor::{Decode, Encode};

use crate::{Event, MAX_READINGS, Readings, WireError};

const DEVICE: u64 = 0;
const BOOT: u64 = 1;
const SEQ: u64 = 2;
const TS: u64 = 3;
const READINGS: u64 = 4;
const KIND: u64 = 5;

#[cfg(feature = "half")]
const EXPECTED_NUMBER: &str = "expected an integer or a float as a reading value";
#[cfg(not(feature = "half"))]
const EXPECTED_NUMBER: &str =
    "expected an integer, f32 or f64 as a reading value (f16 needs the `half` feature)";

/// Encodes `event` into `buf` and returns the number of bytes written.
///
/// The event is not validated; see [`Event::validate`].
pub fn encode_event(event: &Event<'_>, buf: &mut [u8]) -> Result<usize, WireError> {
    let mut encoder = Encoder::new(Cursor::new(buf));
    match event.encode(&mut encoder, &mut ()) {
        Ok(()) => Ok(encoder.writer().position()),
        // Writing into a slice fails only when the slice is full.
        Err(_) => Err(WireError::BufferTooSmall),
    }
}

/// Decodes one event that fills `bytes` exactly, borrowing its strings from `bytes`.
///
/// This checks structure only; call [`Event::validate`] before trusting the content.
pub fn decode_event(bytes: &[u8]) -> Result<Event<'_>, WireError> {
    let mut decoder = Decoder::new(bytes);
    let event = decode_fields(&mut decoder)?;
    let offset = decoder.position();
    if offset < bytes.len() {
        return Err(WireError::TrailingBytes { offset });
    }
    Ok(event)
}

impl<C> Encode<C> for Event<'_> {
    fn encode<W: Write>(
        &self,
        e: &mut Encoder<W>,
        _ctx: &mut C,
    ) -> Result<(), encode::Error<W::Error>> {
        let fields = 4 + u64::from(self.ts.is_some()) + u64::from(self.kind.is_some());
        e.map(fields)?;
        e.u64(DEVICE)?.str(self.device)?;
        e.u64(BOOT)?.u32(self.boot)?;
        e.u64(SEQ)?.u32(self.seq)?;
        if let Some(ts) = self.ts {
            e.u64(TS)?.u64(ts)?;
        }
        e.u64(READINGS)?.map(self.readings.len() as u64)?;
        for (name, value) in self.readings.iter() {
            e.str(name)?.f64(value)?;
        }
        if let Some(kind) = self.kind {
            e.u64(KIND)?.str(kind)?;
        }
        Ok(())
    }
}

impl<'b, C> Decode<'b, C> for Event<'b> {
    fn decode(d: &mut Decoder<'b>, _ctx: &mut C) -> Result<Self, decode::Error> {
        decode_fields(d).map_err(|err| match err {
            WireError::Truncated => decode::Error::end_of_input(),
            WireError::Malformed { offset, reason } => decode::Error::message(reason).at(offset),
            WireError::MissingField(_) => decode::Error::message("missing event field"),
            WireError::DuplicateField(_) => decode::Error::message("duplicate event field"),
            WireError::TooManyReadings => decode::Error::message("too many readings"),
            _ => decode::Error::message("invalid event"),
        })
    }
}

/// Decodes the event map at the decoder's position, leaving the decoder just past it.
fn decode_fields<'b>(d: &mut Decoder<'b>) -> Result<Event<'b>, WireError> {
    let mut remaining = expect(d, "expected a map of event fields", Decoder::map)?;
    let mut seen = 0u8;
    let mut device = None;
    let mut boot = None;
    let mut seq = None;
    let mut ts = None;
    let mut readings = None;
    let mut kind = None;
    while next_entry(d, &mut remaining)? {
        let Some(key) = decode_key(d)? else {
            skip(d)?;
            continue;
        };
        match key {
            DEVICE => {
                first(&mut seen, key, "device")?;
                device = Some(expect(d, "expected utf-8 text for `device`", Decoder::str)?);
            }
            BOOT => {
                first(&mut seen, key, "boot")?;
                boot = Some(expect(
                    d,
                    "expected a 32-bit unsigned integer for `boot`",
                    Decoder::u32,
                )?);
            }
            SEQ => {
                first(&mut seen, key, "seq")?;
                seq = Some(expect(
                    d,
                    "expected a 32-bit unsigned integer for `seq`",
                    Decoder::u32,
                )?);
            }
            TS => {
                first(&mut seen, key, "ts")?;
                ts = optional(d, "expected an unsigned integer for `ts`", Decoder::u64)?;
            }
            READINGS => {
                first(&mut seen, key, "readings")?;
                readings = Some(decode_readings(d)?);
            }
            KIND => {
                first(&mut seen, key, "kind")?;
                kind = optional(d, "expected utf-8 text for `kind`", Decoder::str)?;
            }
            _ => skip(d)?,
        }
    }
    Ok(Event {
        device: device.ok_or(WireError::MissingField("device"))?,
        boot: boot.ok_or(WireError::MissingField("boot"))?,
        seq: seq.ok_or(WireError::MissingField("seq"))?,
        ts,
        kind,
        readings: readings.ok_or(WireError::MissingField("readings"))?,
    })
}

pub(crate) fn decode_readings<'b>(d: &mut Decoder<'b>) -> Result<Readings<'b>, WireError> {
    let mut remaining = expect(d, "expected a map of readings", Decoder::map)?;
    // Fail before reading anything when the header already says too many.
    if remaining.is_some_and(|len| len > MAX_READINGS as u64) {
        return Err(WireError::TooManyReadings);
    }
    let mut readings = Readings::new();
    while next_entry(d, &mut remaining)? {
        let name = expect(d, "expected utf-8 text for a reading name", Decoder::str)?;
        readings.push(name, decode_number(d)?)?;
    }
    Ok(readings)
}

/// Any CBOR integer or float, as an `f64`.
fn decode_number(d: &mut Decoder<'_>) -> Result<f64, WireError> {
    let offset = d.position();
    let value = match d
        .datatype()
        .map_err(|err| lift(err, offset, EXPECTED_NUMBER))?
    {
        Type::U8
        | Type::U16
        | Type::U32
        | Type::U64
        | Type::I8
        | Type::I16
        | Type::I32
        | Type::I64
        | Type::Int => d.int().map(|n| i128::from(n) as f64),
        #[cfg(feature = "half")]
        Type::F16 => d.f64(),
        Type::F32 | Type::F64 => d.f64(),
        _ => {
            return Err(WireError::Malformed {
                offset,
                reason: EXPECTED_NUMBER,
            });
        }
    };
    value.map_err(|err| lift(err, offset, EXPECTED_NUMBER))
}

/// An integer map key: `Some` for keys this version may know, `None` for negative or huge keys.
fn decode_key(d: &mut Decoder<'_>) -> Result<Option<u64>, WireError> {
    const REASON: &str = "expected an integer map key";
    let offset = d.position();
    match d.datatype().map_err(|err| lift(err, offset, REASON))? {
        Type::U8
        | Type::U16
        | Type::U32
        | Type::U64
        | Type::I8
        | Type::I16
        | Type::I32
        | Type::I64
        | Type::Int => {
            let key = d.int().map_err(|err| lift(err, offset, REASON))?;
            Ok(u64::try_from(key).ok())
        }
        _ => Err(WireError::Malformed {
            offset,
            reason: REASON,
        }),
    }
}

/// Advances past one map entry boundary: `false` at the end of the map. `remaining` is the
/// entries left in a definite-length map, or `None` for an indefinite-length one.
fn next_entry(d: &mut Decoder<'_>, remaining: &mut Option<u64>) -> Result<bool, WireError> {
    match remaining {
        Some(0) => Ok(false),
        Some(left) => {
            *left -= 1;
            Ok(true)
        }
        None => {
            let offset = d.position();
            if d.datatype()
                .map_err(|err| lift(err, offset, "expected a map entry"))?
                == Type::Break
            {
                // The break is a single byte, just seen at `offset`.
                d.set_position(offset + 1);
                Ok(false)
            } else {
                Ok(true)
            }
        }
    }
}

/// Records that field `key` was seen, failing if it was seen before.
fn first(seen: &mut u8, key: u64, name: &'static str) -> Result<(), WireError> {
    let bit = 1 << key;
    if *seen & bit != 0 {
        return Err(WireError::DuplicateField(name));
    }
    *seen |= bit;
    Ok(())
}

/// Decodes one item with `f`, turning a failure into a [`WireError`] that says what was expected.
pub(crate) fn expect<'b, T>(
    d: &mut Decoder<'b>,
    reason: &'static str,
    f: impl FnOnce(&mut Decoder<'b>) -> Result<T, decode::Error>,
) -> Result<T, WireError> {
    let offset = d.position();
    f(d).map_err(|err| lift(err, offset, reason))
}

/// Like [`expect`], but `null` or `undefined` mean absent.
pub(crate) fn optional<'b, T>(
    d: &mut Decoder<'b>,
    reason: &'static str,
    f: impl FnOnce(&mut Decoder<'b>) -> Result<T, decode::Error>,
) -> Result<Option<T>, WireError> {
    let offset = d.position();
    match d.datatype().map_err(|err| lift(err, offset, reason))? {
        Type::Null | Type::Undefined => {
            d.set_position(offset + 1);
            Ok(None)
        }
        _ => expect(d, reason, f).map(Some),
    }
}

fn skip(d: &mut Decoder<'_>) -> Result<(), WireError> {
    expect(
        d,
        "expected a well-formed value for an unknown key",
        Decoder::skip,
    )
}

fn lift(err: decode::Error, offset: usize, reason: &'static str) -> WireError {
    if err.is_end_of_input() {
        WireError::Truncated
    } else {
        WireError::Malformed { offset, reason }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::string::String;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    fn sample() -> Event<'static> {
        Event {
            device: "greenhouse-3",
            boot: 7,
            seq: 42,
            ts: Some(1_764_230_400_000),
            kind: Some("periodic"),
            readings: Readings::try_from(&[("temp_c", 21.5), ("rh", 40.2)][..]).unwrap(),
        }
    }

    fn encode(event: &Event<'_>) -> Vec<u8> {
        let mut buf = [0u8; 4096];
        let len = encode_event(event, &mut buf).unwrap();
        buf[..len].to_vec()
    }

    /// Builds arbitrary CBOR with minicbor's encoder.
    fn cbor(
        build: impl FnOnce(
            &mut Encoder<Cursor<&mut [u8]>>,
        ) -> Result<(), encode::Error<encode::write::EndOfSlice>>,
    ) -> Vec<u8> {
        let mut buf = [0u8; 4096];
        let mut e = Encoder::new(Cursor::new(&mut buf[..]));
        build(&mut e).unwrap();
        let len = e.writer().position();
        buf[..len].to_vec()
    }

    /// The required fields, without the map header: 4 entries.
    fn required(
        e: &mut Encoder<Cursor<&mut [u8]>>,
    ) -> Result<(), encode::Error<encode::write::EndOfSlice>> {
        e.u8(0)?
            .str("d1")?
            .u8(1)?
            .u32(3)?
            .u8(2)?
            .u32(4)?
            .u8(4)?
            .map(1)?
            .str("t")?
            .f64(1.5)?;
        Ok(())
    }

    #[test]
    fn roundtrip() {
        let event = sample();
        let bytes = encode(&event);
        assert_eq!(decode_event(&bytes), Ok(event));
    }

    #[test]
    fn roundtrip_without_optional_fields() {
        let event = Event {
            ts: None,
            kind: None,
            readings: Readings::new(),
            ..sample()
        };
        let bytes = encode(&event);
        assert_eq!(decode_event(&bytes), Ok(event));
    }

    #[test]
    fn encoding_is_compact_and_exact() {
        let bytes = encode(&sample());
        // 1 map header, 14 device, 2 boot, 3 seq, 10 ts, 2 readings header, 16 + 12 readings,
        // 10 kind: against 117 bytes for the same event as compact JSON.
        assert_eq!(bytes.len(), 70);
        let event = Event {
            readings: Readings::try_from(&[("x", 0.1)][..]).unwrap(),
            ..sample()
        };
        assert_eq!(
            decode_event(&encode(&event)).unwrap().readings.get("x"),
            Some(0.1)
        );
    }

    #[test]
    fn buffer_too_small_never_writes_past_the_end() {
        let event = sample();
        let len = encode(&event).len();
        for size in 0..len {
            let mut buf = std::vec![0u8; size];
            assert_eq!(
                encode_event(&event, &mut buf),
                Err(WireError::BufferTooSmall),
                "{size}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_skipped() {
        let bytes = cbor(|e| {
            e.map(8)?;
            e.u8(9)?
                .map(1)?
                .str("nested")?
                .array(2)?
                .u8(1)?
                .bytes(b"x")?;
            e.i8(-3)?.tag(minicbor::data::IanaTag::Timestamp)?.u32(5)?;
            e.u64(u64::MAX)?.str("far future")?;
            required(e)?;
            e.u8(200)?.f32(1.0)?;
            Ok(())
        });
        let event = decode_event(&bytes).unwrap();
        assert_eq!((event.device, event.boot, event.seq), ("d1", 3, 4));
        assert_eq!(event.readings.get("t"), Some(1.5));
    }

    #[test]
    fn keys_in_any_order_and_indefinite_maps() {
        let bytes = cbor(|e| {
            e.begin_map()?.u8(4)?.begin_map()?.str("a")?.u8(1)?.end()?;
            e.u8(2)?.u8(9)?.u8(1)?.u8(8)?.u8(0)?.str("dev")?.end()?;
            Ok(())
        });
        let event = decode_event(&bytes).unwrap();
        assert_eq!((event.device, event.boot, event.seq), ("dev", 8, 9));
        assert_eq!(event.readings.get("a"), Some(1.0));
    }

    #[test]
    fn integer_and_f32_readings_are_accepted() {
        let bytes = cbor(|e| {
            e.map(4)?.u8(0)?.str("d")?.u8(1)?.u8(0)?.u8(2)?.u8(0)?;
            e.u8(4)?.map(5)?;
            e.str("small")?.u8(21)?;
            e.str("negative")?.i32(-40)?;
            e.str("big")?.u64(u64::MAX)?;
            e.str("very_negative")?
                .int(minicbor::data::Int::try_from(-(1i128 << 64)).unwrap())?;
            e.str("single")?.f32(0.5)?;
            Ok(())
        });
        let event = decode_event(&bytes).unwrap();
        assert_eq!(event.readings.get("small"), Some(21.0));
        assert_eq!(event.readings.get("negative"), Some(-40.0));
        assert_eq!(event.readings.get("big"), Some(u64::MAX as f64));
        assert_eq!(
            event.readings.get("very_negative"),
            Some(-18_446_744_073_709_551_616.0)
        );
        assert_eq!(event.readings.get("single"), Some(0.5));
    }

    #[test]
    fn half_floats() {
        // f16 0x3e00 is 1.5.
        let bytes = cbor(|e| {
            e.map(4)?
                .u8(0)?
                .str("d")?
                .u8(1)?
                .u8(0)?
                .u8(2)?
                .u8(0)?
                .u8(4)?
                .map(1)?
                .str("h")?;
            Ok(())
        });
        let mut bytes = bytes;
        bytes.extend_from_slice(&[0xf9, 0x3e, 0x00]);
        let decoded = decode_event(&bytes);
        #[cfg(feature = "half")]
        assert_eq!(decoded.unwrap().readings.get("h"), Some(1.5));
        #[cfg(not(feature = "half"))]
        assert!(matches!(decoded, Err(WireError::Malformed { .. })));
    }

    #[test]
    fn null_optional_fields_are_absent() {
        let bytes = cbor(|e| {
            e.map(6)?;
            required(e)?;
            e.u8(3)?.null()?.u8(5)?.undefined()?;
            Ok(())
        });
        let event = decode_event(&bytes).unwrap();
        assert_eq!((event.ts, event.kind), (None, None));
    }

    #[test]
    fn missing_required_fields() {
        for (skip, field) in [(0, "device"), (1, "boot"), (2, "seq"), (4, "readings")] {
            let bytes = cbor(|e| {
                e.map(3)?;
                if skip != 0 {
                    e.u8(0)?.str("d")?;
                }
                if skip != 1 {
                    e.u8(1)?.u8(1)?;
                }
                if skip != 2 {
                    e.u8(2)?.u8(1)?;
                }
                if skip != 4 {
                    e.u8(4)?.map(0)?;
                }
                Ok(())
            });
            assert_eq!(decode_event(&bytes), Err(WireError::MissingField(field)));
        }
    }

    #[test]
    fn duplicate_fields_are_rejected() {
        let bytes = cbor(|e| {
            e.map(5)?;
            required(e)?;
            e.u8(1)?.u8(9)?;
            Ok(())
        });
        assert_eq!(decode_event(&bytes), Err(WireError::DuplicateField("boot")));
    }

    #[test]
    fn too_many_readings_are_rejected() {
        let names: Vec<String> = (0..=MAX_READINGS).map(|i| std::format!("r{i}")).collect();
        for definite in [true, false] {
            let bytes = cbor(|e| {
                e.map(4)?
                    .u8(0)?
                    .str("d")?
                    .u8(1)?
                    .u8(0)?
                    .u8(2)?
                    .u8(0)?
                    .u8(4)?;
                if definite {
                    e.map(names.len() as u64)?;
                } else {
                    e.begin_map()?;
                }
                for name in &names {
                    e.str(name)?.u8(1)?;
                }
                if !definite {
                    e.end()?;
                }
                Ok(())
            });
            assert_eq!(decode_event(&bytes), Err(WireError::TooManyReadings));
        }
    }

    #[test]
    fn wrong_types_are_malformed() {
        let text_key = cbor(|e| {
            e.map(1)?.str("device")?.str("d")?;
            Ok(())
        });
        assert!(matches!(
            decode_event(&text_key),
            Err(WireError::Malformed {
                offset: 1,
                reason: "expected an integer map key"
            })
        ));
        let big_boot = cbor(|e| {
            e.map(1)?.u8(1)?.u64(1 << 32)?;
            Ok(())
        });
        assert!(matches!(
            decode_event(&big_boot),
            Err(WireError::Malformed { offset: 2, .. })
        ));
        let text_value = cbor(|e| {
            e.map(1)?.u8(4)?.map(1)?.str("t")?.str("hot")?;
            Ok(())
        });
        assert_eq!(
            decode_event(&text_value),
            Err(WireError::Malformed {
                offset: 5,
                reason: EXPECTED_NUMBER
            })
        );
        assert!(matches!(
            decode_event(&[0x80]),
            Err(WireError::Malformed { offset: 0, .. })
        ));
    }

    #[test]
    fn truncated_input_is_an_error() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            assert_eq!(
                decode_event(&bytes[..len]),
                Err(WireError::Truncated),
                "{len}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&sample());
        let len = bytes.len();
        bytes.push(0);
        assert_eq!(
            decode_event(&bytes),
            Err(WireError::TrailingBytes { offset: len })
        );
    }

    #[test]
    fn decode_trait_works_inside_other_messages() {
        let event = sample();
        let bytes = cbor(|e| {
            e.array(2)?.u8(1)?.encode(&event)?;
            Ok(())
        });
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.array().unwrap(), Some(2));
        assert_eq!(d.u8().unwrap(), 1);
        assert_eq!(d.decode::<Event<'_>>().unwrap(), event);
        let err = Decoder::new(&bytes[..10])
            .decode::<(u8, Event<'_>)>()
            .unwrap_err();
        assert!(err.is_end_of_input());
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z_][a-z0-9_ .é°-]{0,63}".prop_filter("at most 64 bytes", |n| n.len() <= 64)
    }

    prop_compose! {
        fn owned_event()(
            device in "[A-Za-z0-9._-]{1,64}",
            boot in any::<u32>(),
            seq in any::<u32>(),
            ts in proptest::option::of(any::<u64>()),
            kind in proptest::option::of(name()),
            readings in proptest::collection::btree_map(name(), any::<f64>().prop_filter("finite", |v| v.is_finite()), 0..=MAX_READINGS),
        ) -> (String, u32, u32, Option<u64>, Option<String>, Vec<(String, f64)>) {
            (device, boot, seq, ts, kind, readings.into_iter().collect())
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_event(&bytes);
        }

        #[test]
        fn valid_events_roundtrip((device, boot, seq, ts, kind, pairs) in owned_event()) {
            let mut readings = Readings::new();
            for (name, value) in &pairs {
                readings.push(name, *value).unwrap();
            }
            let event = Event { device: &device, boot, seq, ts, kind: kind.as_deref(), readings };
            prop_assert_eq!(event.validate(), Ok(()));
            let bytes = encode(&event);
            prop_assert_eq!(decode_event(&bytes), Ok(event));
        }

        #[test]
        fn corrupted_events_never_panic(
            (device, boot, seq, ts, kind, pairs) in owned_event(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut readings = Readings::new();
            for (name, value) in &pairs {
                readings.push(name, *value).unwrap();
            }
            let event = Event { device: &device, boot, seq, ts, kind: kind.as_deref(), readings };
            let mut bytes = encode(&event);
            for (at, byte) in flips {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let cut = cut.index(bytes.len() + 1);
            if let Ok(decoded) = decode_event(&bytes[..cut]) {
                let _ = decoded.validate();
            }
        }
    }
}
