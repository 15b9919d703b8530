//! The link against a fake serial port: the frames the device writes are decoded with
//! `edge_wire` and checked, and the "gateway" answers with real frames, good and bad.

use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use core::time::Duration;

use edge_wire::link::{FrameDecoder, MAX_FRAME_LEN, Message};
use edge_wire::{MAX_KIND_LEN, MAX_READING_NAME_LEN, WireError};

use super::state::MAX_RECEIVE_FRAME_LEN;
use super::*;
use crate::clock::Instant;
use crate::sensor::{MAX_EVENT_READINGS, Measurement};
use crate::testing::{FakeSerial, Sent, ack_frame, decode, nack_frame, take_sent};

const DEVICE: &str = "greenhouse-3";
const FIRMWARE: &str = "1.4.0";
const BOOT: u32 = 7;
const TIMEOUT_MS: u64 = 2000;

fn at(millis: u64) -> Instant {
    Instant::from_millis(millis)
}

fn config() -> LinkConfig<'static> {
    LinkConfig {
        retransmit_timeout: Duration::from_millis(TIMEOUT_MS),
        ..LinkConfig::new(DEVICE, FIRMWARE)
    }
}

fn link<const N: usize>() -> Link<N> {
    Link::new(&config(), BOOT).unwrap()
}

fn measurement(value: f64) -> Measurement {
    let mut measurement = Measurement::new();
    measurement.push("temp_c", value).unwrap();
    measurement
}

/// Pushes `count` events whose `temp_c` is their expected seq.
fn push_events<const N: usize>(link: &mut Link<N>, count: u32) {
    for _ in 0..count {
        let seq = link.outbox().next_seq();
        assert_eq!(link.push(None, None, measurement(f64::from(seq))), Ok(seq));
    }
}

/// [`take_sent`], summarised; every frame must be for our boot.
fn take_summary(serial: &mut FakeSerial) -> Vec<String> {
    let sent = take_sent(serial);
    assert!(sent.iter().all(|frame| frame.boot() == BOOT), "{sent:?}");
    sent.iter().map(Sent::summary).collect()
}

fn held_seqs<const N: usize>(link: &Link<N>) -> Vec<u32> {
    link.outbox().iter().map(|event| event.seq).collect()
}

#[test]
fn the_first_poll_writes_a_delimiter_a_hello_then_each_event_once() {
    let mut link = link::<8>();
    let mut serial = FakeSerial::new();
    let mut readings = Measurement::new();
    readings.push("temp_c", 21.5).unwrap();
    readings.push("rh", 40.25).unwrap();
    assert_eq!(
        link.push(Some(1_764_230_400_000), Some("alarm"), readings),
        Ok(0)
    );
    assert_eq!(link.push(None, None, measurement(-3.0)), Ok(1));

    link.poll(at(0), &mut serial);
    assert_eq!(
        serial.tx[0], 0,
        "a zero byte ends any noise before the first frame"
    );
    assert_eq!(
        take_sent(&mut serial),
        [
            Sent::Hello {
                device: DEVICE.to_string(),
                boot: BOOT,
                firmware_version: FIRMWARE.to_string(),
                oldest_seq: 0,
            },
            Sent::Sample {
                boot: BOOT,
                seq: 0,
                ts: Some(1_764_230_400_000),
                kind: Some("alarm".to_string()),
                readings: std::vec![("temp_c".to_string(), 21.5), ("rh".to_string(), 40.25)],
            },
            Sent::Sample {
                boot: BOOT,
                seq: 1,
                ts: None,
                kind: None,
                readings: std::vec![("temp_c".to_string(), -3.0)],
            },
        ]
    );

    // Nothing new, no timeout yet: nothing to write.
    link.poll(at(10), &mut serial);
    assert!(serial.tx.is_empty());

    // A new event goes out alone, without another Hello.
    push_events(&mut link, 1);
    link.poll(at(20), &mut serial);
    assert_eq!(take_summary(&mut serial), ["sample 2"]);
    let counters = link.counters();
    assert_eq!((counters.hellos, counters.sent), (1, 3));
    assert_eq!(counters.retransmitted, 0);
    assert_eq!(held_seqs(&link), [0, 1, 2], "events stay held until acked");
}

#[test]
fn an_ack_frees_its_event_and_stops_the_retransmit_timer() {
    let mut link = link::<8>();
    let mut serial = FakeSerial::new();
    push_events(&mut link, 1);
    link.poll(at(0), &mut serial);
    take_sent(&mut serial);
    assert_eq!(link.retransmit_at(), Some(at(TIMEOUT_MS)));

    serial.gateway_acks(BOOT, 0);
    link.poll(at(100), &mut serial);
    assert!(link.outbox().is_empty());
    assert_eq!(link.counters().acked, 1);
    assert_eq!(link.retransmit_at(), None);

    // The same ack again frees nothing and is no error.
    serial.gateway_acks(BOOT, 0);
    link.poll(at(200), &mut serial);
    assert_eq!(link.counters().acked, 1);
    assert_eq!(link.counters().ignored_acks, 0);

    // Long after the timeout: nothing is retransmitted.
    link.poll(at(60_000), &mut serial);
    assert!(serial.tx.is_empty());
    assert_eq!(link.counters().retransmit_rounds, 0);
}

#[test]
fn a_cumulative_ack_frees_every_event_up_to_its_seq() {
    let mut link = link::<8>();
    let mut serial = FakeSerial::new();
    push_events(&mut link, 4);
    link.poll(at(0), &mut serial);
    take_sent(&mut serial);

    serial.gateway_acks(BOOT, 2);
    link.poll(at(500), &mut serial);
    assert_eq!(held_seqs(&link), [3]);
    assert_eq!(link.counters().acked, 3);

    // Only the unacknowledged event comes again, after a Hello that says where to resume.
    link.poll(at(500 + TIMEOUT_MS), &mut serial);
    assert_eq!(take_summary(&mut serial), ["hello 3", "sample 3"]);
}

#[test]
fn a_lost_ack_brings_hello_and_all_held_events_again_after_the_timeout_and_not_before() {
    let mut link = link::<8>();
    let mut serial = FakeSerial::new();
    push_events(&mut link, 3);
    link.poll(at(0), &mut serial);
    assert_eq!(
        take_summary(&mut serial),
        ["hello 0", "sample 0", "sample 1", "sample 2"]
    );

    // The gateway's ack is lost.
    for now in [1, 500, TIMEOUT_MS - 1] {
        link.poll(at(now), &mut serial);
        assert!(serial.tx.is_empty(), "retransmitted at {now} ms");
    }
    link.poll(at(TIMEOUT_MS), &mut serial);
    assert_eq!(
        take_summary(&mut serial),
        ["hello 0", "sample 0", "sample 1", "sample 2"]
    );
    let counters = link.counters();
    assert_eq!(counters.sent, 3);
    assert_eq!(counters.retransmitted, 3);
    assert_eq!(counters.retransmit_rounds, 1);
    assert_eq!(counters.hellos, 2);

    // Still nothing: the next round comes a whole timeout later.
    link.poll(at(2 * TIMEOUT_MS - 1), &mut serial);
    assert!(serial.tx.is_empty());
    link.poll(at(2 * TIMEOUT_MS), &mut serial);
    assert_eq!(take_summary(&mut serial).len(), 4);

    // The gateway got them: one ack frees all, and the rounds stop.
    serial.gateway_acks(BOOT, 2);
    link.poll(at(2 * TIMEOUT_MS + 10), &mut serial);
    assert!(link.outbox().is_empty());
    link.poll(at(10 * TIMEOUT_MS), &mut serial);
    assert!(serial.tx.is_empty());
    assert_eq!(link.counters().retransmit_rounds, 2);
}

#[test]
fn a_nack_brings_the_missing_events_again_at_once() {
    let mut link = link::<8>();
    let mut serial = FakeSerial::new();
    push_events(&mut link, 4);
    link.poll(at(0), &mut serial);
    assert_eq!(take_summary(&mut serial).len(), 5);

    // Sample 1 arrived corrupted: the gateway stored 0, dropped 2 and 3, and asks from 1.
    serial.gateway_acks(BOOT, 0);
    serial.rx.extend(nack_frame(BOOT, 1));
    link.poll(at(20), &mut serial);
    assert_eq!(
        take_summary(&mut serial),
        ["sample 1", "sample 2", "sample 3"],
        "resent well before the timeout, without a Hello"
    );
    assert_eq!(link.counters().nacks, 1);
    assert_eq!(link.counters().retransmitted, 3);

    // A nack for another boot, or past what was written, changes nothing.
    serial.rx.extend(nack_frame(BOOT + 1, 1));
    serial.rx.extend(nack_frame(BOOT, 9));
    link.poll(at(30), &mut serial);
    assert!(serial.tx.is_empty());
    assert_eq!(link.counters().ignored_acks, 2);

    // A nack for an event already freed: the gateway lost track; a Hello tells it where to go on.
    serial.gateway_acks(BOOT, 2);
    link.poll(at(40), &mut serial);
    serial.rx.extend(nack_frame(BOOT, 0));
    link.poll(at(50), &mut serial);
    assert_eq!(take_summary(&mut serial), ["hello 3", "sample 3"]);
}

#[test]
fn an_ack_that_frees_events_restarts_the_timeout() {
    let mut link = link::<8>();
    let mut serial = FakeSerial::new();
    push_events(&mut link, 2);
    link.poll(at(0), &mut serial);
    take_sent(&mut serial);

    serial.gateway_acks(BOOT, 0);
    link.poll(at(1500), &mut serial);
    link.poll(at(TIMEOUT_MS), &mut serial);
    link.poll(at(1500 + TIMEOUT_MS - 1), &mut serial);
    assert!(serial.tx.is_empty(), "the gateway is making progress");
    link.poll(at(1500 + TIMEOUT_MS), &mut serial);
    assert_eq!(take_summary(&mut serial), ["hello 1", "sample 1"]);
}

#[test]
fn a_full_outbox_drops_the_oldest_events_and_counts_them() {
    let mut link = link::<4>();
    let mut serial = FakeSerial::new();
    // The gateway is away: nothing is ever acked.
    push_events(&mut link, 4);
    link.poll(at(0), &mut serial);
    take_sent(&mut serial);

    push_events(&mut link, 2);
    assert_eq!(held_seqs(&link), [2, 3, 4, 5]);
    assert_eq!(link.counters().dropped_full, 2);
    // The dropped events had been written: the new ones simply follow.
    link.poll(at(100), &mut serial);
    assert_eq!(take_summary(&mut serial), ["sample 4", "sample 5"]);

    // The next round starts from the oldest event still held, and says so.
    link.poll(at(TIMEOUT_MS), &mut serial);
    assert_eq!(
        take_summary(&mut serial),
        ["hello 2", "sample 2", "sample 3", "sample 4", "sample 5"]
    );
    let held: Vec<f64> = link
        .outbox()
        .iter()
        .map(|event| event.measurement.get("temp_c").unwrap())
        .collect();
    assert_eq!(held, [2.0, 3.0, 4.0, 5.0], "the newest data is kept");
}

#[test]
fn dropping_events_never_written_announces_the_gap_with_a_hello() {
    let mut link = link::<4>();
    let mut serial = FakeSerial::new();
    link.poll(at(0), &mut serial);
    assert_eq!(take_summary(&mut serial), ["hello 0"]);

    // Six events arrive between two polls: 0 and 1 are dropped before they were ever written,
    // so the gateway, which expects 0, must be told to resume at 2.
    push_events(&mut link, 6);
    link.poll(at(10), &mut serial);
    assert_eq!(
        take_summary(&mut serial),
        ["hello 2", "sample 2", "sample 3", "sample 4", "sample 5"]
    );
    assert_eq!(link.counters().dropped_full, 2);
    assert_eq!(link.counters().sent, 4);
}

#[test]
fn garbage_and_corrupted_frames_are_counted_and_ignored() {
    let mut link = link::<8>();
    let mut serial = FakeSerial::new();
    push_events(&mut link, 2);
    link.poll(at(0), &mut serial);
    take_sent(&mut serial);

    // 1. Line noise, then a delimiter.
    serial.gateway_sends(b"\x13\x37garbage\xff\xfe");
    serial.gateway_sends(&[0]);
    // 2. An ack for both events with one bit flipped: it must not free anything.
    let mut corrupted = ack_frame(BOOT, 1);
    corrupted[3] ^= 0x04;
    serial.gateway_sends(&corrupted);
    // 3. A frame longer than any message the device accepts.
    serial.gateway_sends(&[0x55; MAX_RECEIVE_FRAME_LEN + 10]);
    serial.gateway_sends(&[0]);
    // 4. A good ack for the first event only.
    serial.gateway_acks(BOOT, 0);

    // Byte by byte, over as many polls as that takes.
    serial.chunk = 1;
    for poll in 0..100 {
        link.poll(at(10 + poll), &mut serial);
    }
    assert!(serial.rx.is_empty());
    let counters = link.counters();
    assert_eq!(counters.bad_frames, 3);
    assert_eq!(counters.acked, 1);
    assert_eq!(held_seqs(&link), [1]);
}

#[test]
fn acks_for_another_boot_are_ignored() {
    let mut link = link::<8>();
    let mut serial = FakeSerial::new();
    push_events(&mut link, 1);
    link.poll(at(0), &mut serial);
    take_sent(&mut serial);

    // Acks for the previous boot and a later one, e.g. from before a reset.
    serial.gateway_acks(BOOT - 1, 0);
    serial.gateway_acks(BOOT + 1, 5);
    link.poll(at(10), &mut serial);
    assert_eq!(link.counters().ignored_acks, 2);
    assert_eq!(link.counters().acked, 0);
    assert_eq!(held_seqs(&link), [0]);

    link.poll(at(TIMEOUT_MS), &mut serial);
    assert_eq!(take_summary(&mut serial), ["hello 0", "sample 0"]);
}

#[test]
fn acks_for_events_never_written_are_ignored() {
    let mut link = link::<8>();
    let mut serial = FakeSerial::new();
    push_events(&mut link, 1);
    link.poll(at(0), &mut serial);
    take_sent(&mut serial);

    // seq 1 is in the outbox but not written yet; the poll reads before it writes.
    push_events(&mut link, 1);
    serial.gateway_acks(BOOT, 1);
    serial.gateway_acks(BOOT, u32::MAX);
    link.poll(at(10), &mut serial);
    assert_eq!(take_summary(&mut serial), ["sample 1"]);
    assert_eq!(link.counters().ignored_acks, 2);
    assert_eq!(held_seqs(&link), [0, 1]);

    // Now that it was written, the same ack counts.
    serial.gateway_acks(BOOT, 1);
    link.poll(at(20), &mut serial);
    assert!(link.outbox().is_empty());
    assert_eq!(link.counters().acked, 2);
}

#[test]
fn messages_only_a_device_sends_are_ignored() {
    let mut link = link::<8>();
    let mut serial = FakeSerial::new();
    push_events(&mut link, 2);
    link.poll(at(0), &mut serial);

    // A line that echoes: the device reads its own Hello and samples back.
    let echo = core::mem::take(&mut serial.tx);
    serial.gateway_sends(&echo);
    link.poll(at(10), &mut serial);
    let counters = link.counters();
    assert_eq!(counters.ignored_messages, 3);
    assert_eq!(counters.bad_frames, 0);
    assert_eq!(counters.acked, 0);
    assert_eq!(held_seqs(&link), [0, 1]);
}

#[test]
fn a_failed_write_is_counted_and_the_frame_comes_again_after_a_delimiter() {
    let mut link = link::<8>();
    let mut serial = FakeSerial::new();
    push_events(&mut link, 1);
    // The port takes the leading delimiter and 9 bytes of the Hello, then fails.
    serial.fail_after = Some(10);
    link.poll(at(0), &mut serial);
    assert_eq!(link.counters().io_errors, 1);
    assert_eq!(link.counters().hellos, 0);

    serial.fail_after = None;
    link.poll(at(10), &mut serial);
    let frames = decode(&core::mem::take(&mut serial.tx));
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert!(frames[0].is_err(), "the fragment is cut off: {frames:?}");
    let sent: Vec<String> = frames[1..]
        .iter()
        .map(|frame| frame.as_ref().unwrap().summary())
        .collect();
    assert_eq!(sent, ["hello 0", "sample 0"]);
    assert_eq!(link.counters().sent, 1);
}

#[test]
fn a_poll_writes_at_most_max_frames_per_poll() {
    let config = LinkConfig {
        max_frames_per_poll: 2,
        ..config()
    };
    let mut link = Link::<8>::new(&config, BOOT).unwrap();
    let mut serial = FakeSerial::new();
    push_events(&mut link, 5);
    let mut polls = Vec::new();
    for now in 0..4 {
        link.poll(at(now), &mut serial);
        polls.push(take_summary(&mut serial));
    }
    assert_eq!(
        polls,
        [
            std::vec!["hello 0", "sample 0"],
            std::vec!["sample 1", "sample 2"],
            std::vec!["sample 3", "sample 4"],
            std::vec![],
        ]
    );
}

#[test]
fn a_poll_reads_at_most_max_read_per_poll() {
    let config = LinkConfig {
        max_read_per_poll: 100,
        ..config()
    };
    let mut link = Link::<8>::new(&config, BOOT).unwrap();
    let mut serial = FakeSerial::new();
    serial.gateway_sends(&[0x42; 1000]);
    link.poll(at(0), &mut serial);
    assert_eq!(serial.rx.len(), 900);
}

#[test]
fn events_that_break_the_rules_are_refused_and_given_back() {
    let mut link = link::<8>();
    let mut twice = measurement(1.0);
    twice.push("temp_c", 2.0).unwrap();
    let mut unnamed = Measurement::new();
    unnamed.push("", 1.0).unwrap();
    let cases = [
        (
            None,
            measurement(f64::NAN),
            WireError::NonFiniteReading { index: 0 },
        ),
        (
            None,
            measurement(f64::INFINITY),
            WireError::NonFiniteReading { index: 0 },
        ),
        (
            None,
            twice.clone(),
            WireError::DuplicateReading { index: 1 },
        ),
        (None, unnamed, WireError::InvalidReadingName { index: 0 }),
        (Some("bad\nkind"), measurement(1.0), WireError::InvalidKind),
    ];
    for (kind, measurement, error) in cases {
        let refused = link.push(None, kind, measurement.clone()).unwrap_err();
        assert_eq!(refused.error, error);
        // Debug, not ==: NaN is not equal to itself.
        assert_eq!(
            format!("{:?}", refused.measurement),
            format!("{measurement:?}"),
            "the readings come back"
        );
    }
    assert_eq!(link.counters().rejected, 5);
    assert!(link.outbox().is_empty());
    // Refused events take no seq.
    assert_eq!(link.push(None, None, measurement(1.0)), Ok(0));
}

#[test]
fn the_largest_event_fits_the_frame_buffer() {
    fn leak(text: String) -> &'static str {
        std::boxed::Box::leak(text.into_boxed_str())
    }
    let mut link = Link::<2>::new(&config(), u32::MAX).unwrap();
    let mut serial = FakeSerial::new();
    let mut largest = Measurement::new();
    let mut expected = Vec::new();
    for index in 0..MAX_EVENT_READINGS {
        let name = leak(format!("{index}{}", "n".repeat(MAX_READING_NAME_LEN - 1)));
        // Not exact as a 32-bit float: encoded as a 64-bit one.
        let value = -0.1 * (index as f64 + 1.0);
        largest.push(name, value).unwrap();
        expected.push((name.to_string(), value));
    }
    let kind = leak("k".repeat(MAX_KIND_LEN));
    assert_eq!(link.push(Some(u64::MAX), Some(kind), largest), Ok(0));
    link.poll(at(0), &mut serial);
    let sent = take_sent(&mut serial);
    assert_eq!(
        sent[1],
        Sent::Sample {
            boot: u32::MAX,
            seq: 0,
            ts: Some(u64::MAX),
            kind: Some(kind.to_string()),
            readings: expected,
        }
    );
}

#[test]
fn the_config_is_checked() {
    let long = "x".repeat(65);
    for device in ["", "has space", "ünï", &long] {
        let config = LinkConfig::new(device, FIRMWARE);
        assert_eq!(
            Link::<4>::new(&config, BOOT).unwrap_err(),
            ConfigError::InvalidDevice
        );
    }
    let config = LinkConfig::new(DEVICE, &long);
    assert_eq!(
        Link::<4>::new(&config, BOOT).unwrap_err(),
        ConfigError::FirmwareVersionTooLong
    );
    let link = Link::<4>::new(&LinkConfig::new("a", ""), 0).unwrap();
    assert_eq!(
        (link.device(), link.firmware_version(), link.boot()),
        ("a", "", 0)
    );
}

/// A gateway that follows the protocol, for the model test: it stores a sample only when its
/// seq is the next one expected, and acks after storing.
#[derive(Debug, Default)]
struct ModelGateway {
    decoder: FrameDecoder<MAX_FRAME_LEN>,
    /// Known once a Hello came.
    expected: Option<u32>,
    /// Seq and `temp_c` of every stored sample, in order.
    stored: Vec<(u32, f64)>,
}

impl ModelGateway {
    /// Takes the device's bytes; returns the acks to send back.
    fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut acks = Vec::new();
        let mut input = bytes;
        while let Some(frame) = self.decoder.decode(&mut input) {
            match frame {
                Ok(Message::Hello(hello)) => {
                    assert_eq!(hello.boot, BOOT);
                    let stored_next = self.stored.last().map_or(0, |(seq, _)| seq + 1);
                    self.expected = Some(hello.oldest_seq.max(stored_next));
                }
                Ok(Message::Sample(sample)) => {
                    let Some(expected) = self.expected else {
                        continue;
                    };
                    if sample.seq == expected {
                        self.stored
                            .push((sample.seq, sample.readings.get("temp_c").unwrap()));
                        self.expected = Some(expected + 1);
                        acks.extend(ack_frame(BOOT, sample.seq));
                    } else if sample.seq < expected {
                        acks.extend(ack_frame(BOOT, expected - 1));
                    }
                }
                Ok(Message::Ack(_) | Message::Nack(_)) => panic!("the device wrote an ack"),
                // Corrupted on the way: dropped, as the gateway does.
                Err(_) => {}
            }
        }
        acks
    }
}

#[derive(Debug, Clone)]
enum Op {
    Push(u32),
    /// Advance the clock, poll, and deliver (or lose, or corrupt) what was written and acked.
    Poll {
        advance_ms: u64,
        to_gateway: Delivery,
        to_device: Delivery,
    },
    Garbage(Vec<u8>),
    ForeignAck {
        boot: u32,
        seq: u32,
    },
}

#[derive(Debug, Clone, Copy)]
enum Delivery {
    Whole,
    Lost,
    Corrupted(usize, u8),
}

fn deliver(bytes: Vec<u8>, delivery: Delivery) -> Vec<u8> {
    match delivery {
        Delivery::Whole => bytes,
        Delivery::Lost => Vec::new(),
        Delivery::Corrupted(at, mask) => {
            let mut bytes = bytes;
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] ^= mask;
            }
            bytes
        }
    }
}

mod model {
    use proptest::prelude::*;

    use super::*;

    fn delivery() -> impl Strategy<Value = Delivery> {
        prop_oneof![
            3 => Just(Delivery::Whole),
            1 => Just(Delivery::Lost),
            1 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Delivery::Corrupted(at, mask)),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1u32..4).prop_map(Op::Push),
            4 => (0u64..3000, delivery(), delivery()).prop_map(|(advance_ms, to_gateway, to_device)| {
                Op::Poll { advance_ms, to_gateway, to_device }
            }),
            1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Garbage),
            1 => (any::<u32>(), any::<u32>()).prop_map(|(boot, seq)| Op::ForeignAck { boot, seq }),
        ]
    }

    proptest! {
        /// Over a lossy, corrupting line and with a gateway that follows the protocol: the
        /// device never panics, its outbox stays consistent, and once the line heals every event
        /// reaches the gateway exactly once and in order, except those the full outbox dropped
        /// (which are counted).
        #[test]
        fn every_event_arrives_once_and_in_order_or_is_counted_as_dropped(
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let mut link = link::<6>();
            let mut serial = FakeSerial::new();
            let mut gateway = ModelGateway::default();
            let mut now = 0;
            let mut pushed = 0u32;
            for op in ops {
                match op {
                    Op::Push(count) => {
                        push_events(&mut link, count);
                        pushed += count;
                    }
                    Op::Poll { advance_ms, to_gateway, to_device } => {
                        now += advance_ms;
                        link.poll(at(now), &mut serial);
                        let written = core::mem::take(&mut serial.tx);
                        let acks = gateway.receive(&deliver(written, to_gateway));
                        serial.gateway_sends(&deliver(acks, to_device));
                    }
                    Op::Garbage(bytes) => serial.gateway_sends(&bytes),
                    Op::ForeignAck { boot, seq } => {
                        if boot != BOOT {
                            serial.gateway_acks(boot, seq);
                        }
                    }
                }
                let held = held_seqs(&link);
                prop_assert!(held.len() <= 6);
                prop_assert!(held.windows(2).all(|pair| pair[1] == pair[0] + 1), "{held:?}");
                let counters = link.counters();
                prop_assert_eq!(
                    counters.acked + counters.dropped_full + held.len() as u32,
                    pushed
                );
            }

            // The line heals: everything flows until the outbox is empty.
            for _ in 0..20 {
                now += TIMEOUT_MS;
                link.poll(at(now), &mut serial);
                let acks = gateway.receive(&core::mem::take(&mut serial.tx));
                serial.gateway_sends(&acks);
                link.poll(at(now), &mut serial);
            }
            prop_assert!(link.outbox().is_empty(), "{link:?}");

            let stored = &gateway.stored;
            prop_assert!(stored.windows(2).all(|pair| pair[0].0 < pair[1].0), "{stored:?}");
            for (seq, value) in stored {
                prop_assert_eq!(f64::from(*seq), *value);
            }
            let missing = pushed - stored.len() as u32;
            prop_assert!(missing <= link.counters().dropped_full);
        }
    }
}
