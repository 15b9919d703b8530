//! Test support: an in-memory serial port, and the frames a device wrote, decoded with
//! `edge_wire` so that tests check what actually went on the wire.

use std::collections::VecDeque;
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use edge_wire::link::{Ack, FrameDecoder, FrameError, MAX_FRAME_LEN, Message, encode_frame};
use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write};

/// An in-memory serial port: `rx` is what the gateway sent, `tx` what the device wrote.
#[derive(Debug)]
pub(crate) struct FakeSerial {
    pub(crate) rx: VecDeque<u8>,
    pub(crate) tx: Vec<u8>,
    /// Largest read or write at once, so that frames cross call boundaries.
    pub(crate) chunk: usize,
    /// Writes fail once this many more bytes were taken.
    pub(crate) fail_after: Option<usize>,
}

impl FakeSerial {
    pub(crate) fn new() -> Self {
        Self {
            rx: VecDeque::new(),
            tx: Vec::new(),
            chunk: 7,
            fail_after: None,
        }
    }

    /// The gateway sends `bytes`.
    pub(crate) fn gateway_sends(&mut self, bytes: &[u8]) {
        self.rx.extend(bytes);
    }

    /// The gateway acknowledges everything of `boot` up to `seq`.
    pub(crate) fn gateway_acks(&mut self, boot: u32, seq: u32) {
        self.gateway_sends(&ack_frame(boot, seq));
    }
}

impl ErrorType for FakeSerial {
    type Error = ErrorKind;
}

impl ReadReady for FakeSerial {
    fn read_ready(&mut self) -> Result<bool, ErrorKind> {
        Ok(!self.rx.is_empty())
    }
}

impl Read for FakeSerial {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        // A real port would block here: the link must only read what is ready.
        assert!(!self.rx.is_empty(), "read with nothing ready would block");
        let len = buf.len().min(self.chunk).min(self.rx.len());
        for (slot, byte) in buf.iter_mut().zip(self.rx.drain(..len)) {
            *slot = byte;
        }
        Ok(len)
    }
}

impl Write for FakeSerial {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        let mut len = buf.len().min(self.chunk);
        if let Some(left) = &mut self.fail_after {
            if *left == 0 {
                return Err(ErrorKind::Other);
            }
            len = len.min(*left);
            *left -= len;
        }
        self.tx.extend(&buf[..len]);
        Ok(len)
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

/// One complete ack frame.
pub(crate) fn ack_frame(boot: u32, seq: u32) -> Vec<u8> {
    let mut scratch = [0u8; 64];
    let mut out = [0u8; 64];
    let len = encode_frame(&Message::Ack(Ack { boot, seq }), &mut scratch, &mut out).unwrap();
    out[..len].to_vec()
}

/// One complete nack frame.
pub(crate) fn nack_frame(boot: u32, seq: u32) -> Vec<u8> {
    let mut scratch = [0u8; 64];
    let mut out = [0u8; 64];
    let message = Message::Nack(edge_wire::link::Nack { boot, seq });
    let len = encode_frame(&message, &mut scratch, &mut out).unwrap();
    out[..len].to_vec()
}

/// A frame the device wrote, decoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sent {
    Hello {
        device: String,
        boot: u32,
        firmware_version: String,
        oldest_seq: u32,
    },
    Sample {
        boot: u32,
        seq: u32,
        ts: Option<u64>,
        kind: Option<String>,
        readings: Vec<(String, f64)>,
    },
}

impl Sent {
    /// `hello 3` or `sample 5`, for compact assertions.
    pub(crate) fn summary(&self) -> String {
        match self {
            Self::Hello { oldest_seq, .. } => format!("hello {oldest_seq}"),
            Self::Sample { seq, .. } => format!("sample {seq}"),
        }
    }

    /// The boot the frame is for.
    pub(crate) fn boot(&self) -> u32 {
        match self {
            Self::Hello { boot, .. } | Self::Sample { boot, .. } => *boot,
        }
    }
}

/// Decodes everything in `bytes`, bad frames included.
pub(crate) fn decode(bytes: &[u8]) -> Vec<Result<Sent, FrameError>> {
    let mut decoder = FrameDecoder::<MAX_FRAME_LEN>::new();
    let mut input = bytes;
    let mut frames = Vec::new();
    while let Some(result) = decoder.decode(&mut input) {
        frames.push(result.map(|message| {
            match message {
                Message::Hello(hello) => Sent::Hello {
                    device: hello.device.to_string(),
                    boot: hello.boot,
                    firmware_version: hello.firmware_version.to_string(),
                    oldest_seq: hello.oldest_seq,
                },
                Message::Sample(sample) => Sent::Sample {
                    boot: sample.boot,
                    seq: sample.seq,
                    ts: sample.ts,
                    kind: sample.kind.map(ToString::to_string),
                    readings: sample
                        .readings
                        .iter()
                        .map(|(name, value)| (name.to_string(), value))
                        .collect(),
                },
                Message::Ack(ack) => panic!("the device wrote an ack: {ack:?}"),
                Message::Nack(nack) => panic!("the device wrote a nack: {nack:?}"),
            }
        }));
    }
    assert!(
        !decoder.is_mid_frame(),
        "the device left a frame unfinished"
    );
    frames
}

/// Takes what the device wrote since the last call; every frame must be well-formed.
pub(crate) fn take_sent(serial: &mut FakeSerial) -> Vec<Sent> {
    decode(&core::mem::take(&mut serial.tx))
        .into_iter()
        .map(|frame| frame.expect("the device writes only well-formed frames"))
        .collect()
}
