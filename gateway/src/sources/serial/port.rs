//! One serial port: open it, read frames, store samples, send acks after the commit, and open it
//! again with backoff when it goes away.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_wire::link::{Ack, FrameDecoder, FrameError, MAX_FRAME_LEN, Message, Nack, encode_frame};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::admin::SerialPortStats;
use crate::backoff::Backoff;
use crate::config::SerialConfig;
use crate::decode::{DeviceEvent, RejectReason, Rejection};
use crate::journal::{Commit, CommitFailed, Record};
use crate::sources::{Ingest, now_ms};

use super::sequencer::{Sequencer, Verdict};

/// Reopening a port that went away waits between these bounds (exponential, with jitter).
const REOPEN_MIN: Duration = Duration::from_millis(100);
const REOPEN_MAX: Duration = Duration::from_secs(5);
/// Append requests of one port waiting for their commit before the port stops reading.
const MAX_PENDING: usize = 8;
/// Bytes read from the port at a time.
const READ_CHUNK: usize = 1024;
/// How long a port that went away waits for the commits it started, to record them.
const ABANDON_WAIT: Duration = Duration::from_secs(2);
/// A gap is asked for again (`Nack`) at most this often, in case the first request was lost.
const NACK_INTERVAL: Duration = Duration::from_millis(100);

/// A serial port feeding the journal.
#[derive(Debug)]
pub struct SerialPort {
    config: SerialConfig,
    ingest: Ingest,
    sequencer: Arc<Mutex<Sequencer>>,
    stats: Arc<SerialPortStats>,
}

/// Samples read together, and the acks they owe once committed.
#[derive(Debug, Default)]
struct Group {
    records: Vec<Record>,
    /// `(device, boot, seq)` of every sample taken, stored or rejected, in order.
    marks: Vec<Mark>,
}

/// `(device, boot, seq)` of a sample.
type Mark = (String, u32, u32);
/// A group's outcome: its marks to acknowledge, or the devices to rewind.
type Settled = Result<Vec<Mark>, (Vec<String>, CommitFailed)>;

/// Why serving an open port ended.
enum End {
    Shutdown,
    Gone(String),
}

impl SerialPort {
    pub(super) fn new(
        config: SerialConfig,
        ingest: Ingest,
        sequencer: Arc<Mutex<Sequencer>>,
    ) -> Self {
        let stats = ingest
            .metrics()
            .serial_port(&config.port.display().to_string());
        Self {
            config,
            ingest,
            sequencer,
            stats,
        }
    }

    /// Serves the port until `shutdown` turns true, reopening it whenever it goes away.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let port = self.config.port.display().to_string();
        let mut backoff = Backoff::new(REOPEN_MIN, REOPEN_MAX);
        let mut opened_before = false;
        while !*shutdown.borrow() {
            match tokio_serial::SerialStream::open(&tokio_serial::new(&port, self.config.baud)) {
                Ok(stream) => {
                    if opened_before {
                        SerialPortStats::bump(&self.stats.reconnects);
                    }
                    opened_before = true;
                    self.stats.connected.store(true, Ordering::Relaxed);
                    tracing::info!(port, baud = self.config.baud, "serial port open");
                    let end = self.serve(stream, &mut shutdown, &mut backoff).await;
                    self.stats.connected.store(false, Ordering::Relaxed);
                    match end {
                        End::Shutdown => return,
                        End::Gone(reason) => {
                            tracing::warn!(port, reason, "serial port went away; reopening it");
                        }
                    }
                }
                Err(error) => {
                    if let Some(suppressed) = self.ingest.allow_warning("serial_open") {
                        tracing::warn!(port, %error, suppressed, "failed to open serial port; retrying");
                    }
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn serve(
        &self,
        stream: tokio_serial::SerialStream,
        shutdown: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> End {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut decoder = Box::new(FrameDecoder::<MAX_FRAME_LEN>::new());
        let mut buf = vec![0u8; READ_CHUNK];
        let mut out: Vec<u8> = Vec::new();
        let mut current: Option<(String, u32)> = None;
        let mut last_nack: Option<(Nack, std::time::Instant)> = None;
        let mut commits = FuturesOrdered::new();
        let mut ready: Option<Group> = None;
        let journal = self.ingest.journal().clone();
        // Devices with samples handed to the journal on this connection.
        let mut submitted: HashSet<String> = HashSet::new();
        let mut failed = false;
        let end = loop {
            if !out.is_empty() {
                if let Err(error) = writer.write_all(&out).await {
                    break End::Gone(format!("write failed: {error}"));
                }
                out.clear();
            }
            let reading = ready.is_none() && commits.len() < MAX_PENDING;
            tokio::select! {
                biased;
                _ = shutdown.changed() => return End::Shutdown,
                settled = commits.next(), if !commits.is_empty() => match settled as Option<Settled> {
                    Some(Ok(marks)) => self.acknowledge(&marks, &mut out),
                    Some(Err((devices, CommitFailed))) => {
                        self.rewind(devices.iter());
                        failed = true;
                        break End::Gone("the journal did not store its events".into());
                    }
                    None => {}
                },
                permit = journal.reserve(), if ready.is_some() => match (permit, ready.take()) {
                    (Ok(permit), Some(group)) => {
                        submitted.extend(group.marks.iter().map(|(device, _, _)| device.clone()));
                        commits.push_back(settle(Some(permit.submit(group.records)), group.marks));
                    }
                    (_, group) => {
                        ready = group;
                        break End::Gone("the journal writer stopped".into());
                    }
                },
                read = reader.read(&mut buf), if reading => match read {
                    Ok(0) => break End::Gone("end of stream".into()),
                    Ok(n) => {
                        let group = self
                            .take(&buf[..n], &mut decoder, &mut current, &mut last_nack, &mut out)
                            .await;
                        self.ingest.flush_rules();
                        if group.marks.is_empty() {
                            continue;
                        }
                        // Frames arrive: the port works, so the next outage starts from a short wait.
                        backoff.reset();
                        if group.records.is_empty() {
                            commits.push_back(settle(None, group.marks));
                        } else {
                            ready = Some(group);
                        }
                    }
                    Err(error) => break End::Gone(format!("read failed: {error}")),
                },
            }
        };
        // The port is gone, but what was taken from it must not be acknowledged later by a
        // cumulative ack for something else. Samples never handed over are forgotten; commits
        // that complete shortly are recorded (so a resend is acknowledged, not stored again);
        // after a failure, or if they take too long, the devices start over from their `Hello`.
        if let Some(group) = ready.take() {
            self.rewind(group.marks.iter().map(|(device, _, _)| device));
        }
        let settle_by = tokio::time::sleep(ABANDON_WAIT);
        tokio::pin!(settle_by);
        while !commits.is_empty() {
            tokio::select! {
                settled = commits.next() => match settled as Option<Settled> {
                    Some(Ok(marks)) if !failed => {
                        if let Ok(mut sequencer) = self.sequencer.lock() {
                            for (device, boot, seq) in &marks {
                                sequencer.committed(device, *boot, *seq);
                            }
                        }
                    }
                    Some(Ok(marks)) => self.rewind(marks.iter().map(|(device, _, _)| device)),
                    Some(Err((devices, CommitFailed))) => {
                        failed = true;
                        self.rewind(devices.iter());
                    }
                    None => break,
                },
                () = &mut settle_by => {
                    self.rewind(submitted.iter());
                    break;
                }
            }
        }
        end
    }

    fn rewind<'a>(&self, devices: impl Iterator<Item = &'a String>) {
        if let Ok(mut sequencer) = self.sequencer.lock() {
            for device in devices {
                sequencer.rewind(device);
            }
        }
    }

    /// Decodes the frames in `bytes`: answers Hellos and committed duplicates into `out`, and
    /// returns the samples to store.
    async fn take(
        &self,
        mut bytes: &[u8],
        decoder: &mut FrameDecoder<MAX_FRAME_LEN>,
        current: &mut Option<(String, u32)>,
        last_nack: &mut Option<(Nack, std::time::Instant)>,
        out: &mut Vec<u8>,
    ) -> Group {
        let mut group = Group::default();
        let mut rejected = Vec::new();
        // Acks to send again (for a Hello, or committed duplicates): the highest per device.
        let mut repeat: Vec<(String, Ack)> = Vec::new();
        while let Some(result) = decoder.decode(&mut bytes) {
            let message = match result {
                Ok(message) => message,
                Err(error) => {
                    self.frame_error(error);
                    continue;
                }
            };
            if matches!(message, Message::Hello(_) | Message::Sample(_)) {
                SerialPortStats::bump(&self.stats.frames);
            }
            match message {
                Message::Hello(hello) => {
                    let ack = self
                        .sequencer
                        .lock()
                        .ok()
                        .and_then(|mut sequencer| sequencer.hello(&hello));
                    tracing::debug!(
                        device = hello.device,
                        boot = hello.boot,
                        firmware = hello.firmware_version,
                        "serial device said hello"
                    );
                    *current = Some((hello.device.to_owned(), hello.boot));
                    if let Some(ack) = ack {
                        remember(&mut repeat, hello.device, ack);
                    }
                }
                Message::Sample(sample) => {
                    let Some((device, boot)) = current.as_ref() else {
                        SerialPortStats::bump(&self.stats.out_of_order);
                        continue;
                    };
                    let verdict = match self.sequencer.lock() {
                        Ok(mut sequencer) => sequencer.sample(device, sample.boot, sample.seq),
                        Err(_) => continue,
                    };
                    match verdict {
                        Verdict::Store => {
                            let event = sample.into_event(device);
                            match event.validate() {
                                Ok(()) => group
                                    .records
                                    .push(self.ingest.record(DeviceEvent::from(&event), now_ms())),
                                Err(error) => rejected.push((
                                    format!("{device}:{boot}:{}", event.seq),
                                    error.to_string(),
                                )),
                            }
                            group.marks.push((device.clone(), *boot, event.seq));
                        }
                        Verdict::Duplicate(ack) => {
                            SerialPortStats::bump(&self.stats.duplicates);
                            if let Some(ack) = ack {
                                remember(&mut repeat, device, ack);
                            }
                        }
                        Verdict::Gap { expected } => {
                            SerialPortStats::bump(&self.stats.out_of_order);
                            // Ask for the missing sample now, once per gap (again after a
                            // while, in case this request is lost too).
                            let nack = Nack {
                                boot: *boot,
                                seq: expected,
                            };
                            let repeated = last_nack.as_ref().is_some_and(|(last, at)| {
                                *last == nack && at.elapsed() < NACK_INTERVAL
                            });
                            if !repeated {
                                put_frame(out, &Message::Nack(nack));
                                *last_nack = Some((nack, std::time::Instant::now()));
                            }
                        }
                        Verdict::WrongBoot => {
                            SerialPortStats::bump(&self.stats.out_of_order);
                        }
                    }
                }
                Message::Ack(_) | Message::Nack(_) => {
                    self.frame_error(FrameError::Message(edge_wire::WireError::Malformed {
                        offset: 0,
                        reason: "Ack and Nack are sent by the gateway, not to it",
                    }));
                }
            }
        }
        for (_, ack) in repeat {
            put_ack(out, ack);
        }
        // A sample whose content is invalid is dead-lettered and still acknowledged in its
        // turn: sending it again would not make it valid.
        let topic = self.config.port.display().to_string();
        for (id, detail) in rejected {
            let rejection = Rejection::new(
                RejectReason::InvalidEvent,
                format!("invalid sample {id}: {detail}"),
            );
            self.ingest.reject(&topic, &[], rejection, now_ms()).await;
        }
        group
    }

    fn acknowledge(&self, marks: &[Mark], out: &mut Vec<u8>) {
        let Ok(mut sequencer) = self.sequencer.lock() else {
            return;
        };
        // Acks are cumulative: the last mark of each device says it all.
        for (index, (device, boot, seq)) in marks.iter().enumerate() {
            let last_of_device = !marks[index + 1..]
                .iter()
                .any(|(later, later_boot, _)| later == device && later_boot == boot);
            if let Some(ack) = sequencer.committed(device, *boot, *seq)
                && last_of_device
            {
                put_ack(out, ack);
            }
        }
    }

    fn frame_error(&self, error: FrameError) {
        SerialPortStats::bump(&self.stats.resyncs);
        if error == FrameError::Crc {
            SerialPortStats::bump(&self.stats.crc_errors);
        }
        if let Some(suppressed) = self.ingest.allow_warning("serial_frame") {
            tracing::warn!(
                port = %self.config.port.display(),
                suppressed,
                "dropped a serial frame: {error}"
            );
        }
    }
}

/// Resolves once the samples of a group are committed (at once when it stored none), to the
/// marks to acknowledge; on failure, to the devices whose state must be rewound.
async fn settle(commit: Option<Commit>, marks: Vec<Mark>) -> Settled {
    if let Some(commit) = commit
        && let Err(failed) = commit.await
    {
        let mut devices: Vec<String> = marks.into_iter().map(|(device, _, _)| device).collect();
        devices.dedup();
        return Err((devices, failed));
    }
    Ok(marks)
}

/// Keeps the highest ack per device.
fn remember(repeat: &mut Vec<(String, Ack)>, device: &str, ack: Ack) {
    match repeat.iter_mut().find(|(known, _)| known == device) {
        Some((_, kept)) if kept.boot == ack.boot => kept.seq = kept.seq.max(ack.seq),
        Some((_, kept)) => *kept = ack,
        None => repeat.push((device.to_owned(), ack)),
    }
}

fn put_ack(out: &mut Vec<u8>, ack: Ack) {
    put_frame(out, &Message::Ack(ack));
}

fn put_frame(out: &mut Vec<u8>, message: &Message<'_>) {
    let mut scratch = [0u8; 32];
    let mut frame = [0u8; 40];
    if let Ok(len) = encode_frame(message, &mut scratch, &mut frame) {
        out.extend_from_slice(&frame[..len]);
    }
}
