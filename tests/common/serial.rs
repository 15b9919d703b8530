//! Serial devices: ptys and the frames of the serial link.

use super::*;

/// A pseudo-terminal standing in for a serial device: the test holds the master side, and the
/// gateway opens the slave side through a symlink that survives "unplugging". The master is
/// opened close-on-exec, so that no gateway started meanwhile keeps it open.
pub struct Pty {
    pub link: PathBuf,
    master: Option<std::fs::File>,
    decoder: Box<edge_wire::link::FrameDecoder<{ edge_wire::link::MAX_FRAME_LEN }>>,
}

impl Pty {
    /// A new pty, reachable at `dir/name`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut pty = Self {
            link: dir.join(name),
            master: None,
            decoder: Box::new(edge_wire::link::FrameDecoder::new()),
        };
        pty.plug();
        pty
    }

    /// Creates a fresh pty pair in raw mode and points the link at its slave side.
    pub fn plug(&mut self) {
        let pair = edge_sim::serial::create_pty(Some(&self.link)).expect("create a pty");
        self.master = Some(pair.master);
    }

    /// Closes the master side and removes the link, as when a USB adapter is pulled out.
    pub fn unplug(&mut self) {
        self.master = None;
        let _ = std::fs::remove_file(&self.link);
    }

    pub fn write(&mut self, mut bytes: &[u8]) {
        let master = self.master.as_mut().expect("pty plugged in");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !bytes.is_empty() {
            match master.write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "pty write stalled");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => panic!("write to pty: {error}"),
            }
        }
    }

    /// Reads frames from the gateway until `condition` holds for the acks seen so far, or
    /// `timeout`. Returns every ack received.
    pub fn read_acks_until(
        &mut self,
        timeout: Duration,
        mut condition: impl FnMut(&[edge_wire::link::Ack]) -> bool,
    ) -> Vec<edge_wire::link::Ack> {
        let master = self.master.as_mut().expect("pty plugged in");
        let deadline = Instant::now() + timeout;
        let mut acks = Vec::new();
        let mut buf = [0u8; 512];
        while !condition(&acks) && Instant::now() < deadline {
            let n = match master.read(&mut buf) {
                Ok(n) if n > 0 => n,
                Ok(_) => break,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(_) => break,
            };
            let mut input = &buf[..n];
            while let Some(result) = self.decoder.decode(&mut input) {
                if let Ok(edge_wire::link::Message::Ack(ack)) = result {
                    acks.push(ack);
                }
            }
        }
        acks
    }
}

/// Frames of the serial link, for tests that speak it byte by byte.
pub mod frames {
    use edge_wire::Readings;
    use edge_wire::link::{Hello, MAX_FRAME_LEN, Message, Sample, encode_frame};

    pub fn encode(message: &Message<'_>) -> Vec<u8> {
        let mut scratch = vec![0u8; MAX_FRAME_LEN];
        let mut out = vec![0u8; MAX_FRAME_LEN * 2];
        let len = encode_frame(message, &mut scratch, &mut out).expect("encode frame");
        out.truncate(len);
        out
    }

    pub fn hello(device: &str, boot: u32, oldest_seq: u32) -> Vec<u8> {
        encode(&Message::Hello(Hello {
            device,
            boot,
            firmware_version: "test-1.0",
            oldest_seq,
        }))
    }

    /// A sample with one reading, `n = seq`.
    pub fn sample(boot: u32, seq: u32) -> Vec<u8> {
        sample_with(boot, seq, f64::from(seq))
    }

    pub fn sample_with(boot: u32, seq: u32, value: f64) -> Vec<u8> {
        let mut readings = Readings::new();
        readings.push("n", value).expect("reading");
        encode(&Message::Sample(Sample {
            boot,
            seq,
            ts: None,
            kind: None,
            readings,
        }))
    }
}
