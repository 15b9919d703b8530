//! Simulated devices on serial lines, running the real device core (`edge-device`): modelled
//! sensors, the outbox, `Hello`, acks and retransmission, over a pty pair the simulator creates.
//!
//! Each device runs on a thread of its own, as firmware runs on a chip of its own. The test
//! harness and the demo drive it through [`SerialDevice`]: unplug and replug its line, make the
//! line noisy, and read what the device core counted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edge_device::{
    Clock, Device, Instant, LinkConfig, LinkCounters, Measurement, Sensor, SensorError,
};

use crate::serial::{Noise, Port, create_pty, open_tty};
use crate::signal::Signal;

/// Events a simulated device keeps until acknowledged.
pub const OUTBOX: usize = 1024;
/// The firmware version simulated devices announce.
pub const FIRMWARE_VERSION: &str = concat!("edge-sim-", env!("CARGO_PKG_VERSION"));

/// One simulated serial device.
#[derive(Debug, Clone)]
pub struct SerialDeviceConfig {
    /// Its id.
    pub name: String,
    /// Its position in the fleet (shapes its signal).
    pub index: usize,
    /// Its boot id.
    pub boot: u32,
    /// Time between events.
    pub interval: Duration,
    /// Stop sampling after this many events (`None`: until stopped); acks and retransmissions
    /// go on.
    pub count: Option<u32>,
    /// Probability that a byte on the line is corrupted, both ways.
    pub noise: Option<f64>,
    /// Limit the line to what a UART at this baud rate carries (a pty has no limit).
    pub baud: Option<u32>,
    /// How long unacknowledged events wait before they are sent again.
    pub retransmit_timeout: Duration,
    /// Ignore `interval` and keep the outbox topped up, so that the line is the limit (for
    /// benchmarks).
    pub saturate: bool,
}

impl SerialDeviceConfig {
    /// A device sampling every `interval`, with a 1 s retransmit timeout.
    pub fn new(name: impl Into<String>, index: usize, boot: u32, interval: Duration) -> Self {
        Self {
            name: name.into(),
            index,
            boot,
            interval,
            count: None,
            noise: None,
            baud: None,
            retransmit_timeout: Duration::from_secs(1),
            saturate: false,
        }
    }
}

/// What a simulated device has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SerialDeviceStats {
    /// Events produced (the next `seq`).
    pub produced: u64,
    /// Events still in the outbox, waiting for an ack.
    pub pending: u64,
    /// The device core's link counters.
    pub link: LinkCounters,
    /// Bytes the noisy line corrupted.
    pub flipped: u64,
    /// Bytes written to the line.
    pub written: u64,
}

#[derive(Debug, Default)]
struct Control {
    stop: AtomicBool,
    plugged: AtomicBool,
    produced: AtomicU64,
    stats: Mutex<SerialDeviceStats>,
}

/// A simulated device running on its own thread.
#[derive(Debug)]
pub struct SerialDevice {
    link: PathBuf,
    control: Arc<Control>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SerialDevice {
    /// Creates a pty whose slave side `link` points to, and starts the device on its master side.
    /// Unplugging closes the pty and removes the link; plugging makes a new one there.
    pub fn spawn(config: SerialDeviceConfig, link: &Path) -> std::io::Result<Self> {
        // Fail here, not on the device's thread, if the pty cannot be made.
        let pair = create_pty(Some(link))?;
        let line = Line::Pty(link.to_path_buf());
        Self::start(config, link, line, pair.master)
    }

    /// Starts the device on an existing tty (a USB serial adapter wired to the gateway's port,
    /// say) at `baud`. Unplugging closes it; plugging opens it again.
    pub fn spawn_on_tty(
        config: SerialDeviceConfig,
        tty: &Path,
        baud: u32,
    ) -> std::io::Result<Self> {
        let file = open_tty(tty, baud)?;
        let line = Line::Tty(tty.to_path_buf(), baud);
        Self::start(config, tty, line, file)
    }

    fn start(
        config: SerialDeviceConfig,
        path: &Path,
        line: Line,
        file: std::fs::File,
    ) -> std::io::Result<Self> {
        let control = Arc::new(Control::default());
        control.plugged.store(true, Ordering::SeqCst);
        let thread = {
            let control = Arc::clone(&control);
            // The device holds its outbox of OUTBOX samples in place, as on the board, and an
            // unoptimised build moves it on the stack more than once: 2 MiB is not enough.
            std::thread::Builder::new()
                .name(format!("sim-{}", config.name))
                .stack_size(16 * 1024 * 1024)
                .spawn(move || run(config, line, file, &control))?
        };
        let link = path;
        Ok(Self {
            link: link.to_path_buf(),
            control,
            thread: Some(thread),
        })
    }

    /// The path the gateway opens.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// Pulls the plug: the line closes and the link disappears; the device keeps sampling into
    /// its outbox.
    pub fn unplug(&self) {
        self.control.plugged.store(false, Ordering::SeqCst);
    }

    /// Plugs it back in: a new pty, at the same link.
    pub fn plug(&self) {
        self.control.plugged.store(true, Ordering::SeqCst);
    }

    /// What the device has done so far.
    pub fn stats(&self) -> SerialDeviceStats {
        self.control
            .stats
            .lock()
            .map(|stats| *stats)
            .unwrap_or_default()
    }

    /// Stops the device and returns its final figures.
    pub fn stop(mut self) -> SerialDeviceStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.control.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SerialDevice {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn sensor_count(control: &Control) -> u64 {
    control.produced.load(Ordering::SeqCst)
}

/// What the device's line is.
#[derive(Debug, Clone)]
enum Line {
    /// A pty of its own, reachable through this symlink.
    Pty(PathBuf),
    /// An existing tty, at this baud rate.
    Tty(PathBuf, u32),
}

impl Line {
    fn plug(&self) -> std::io::Result<std::fs::File> {
        match self {
            Self::Pty(link) => create_pty(Some(link)).map(|pair| pair.master),
            Self::Tty(path, baud) => open_tty(path, *baud),
        }
    }

    fn unplug(&self) {
        if let Self::Pty(link) = self {
            let _ = std::fs::remove_file(link);
        }
    }
}

/// A greenhouse sensor: temperature and humidity from [`Signal`].
struct SimSensor {
    signal: Signal,
    seq: u32,
    produced: Arc<Control>,
}

impl Sensor for SimSensor {
    fn measure(&mut self) -> Result<Measurement, SensorError> {
        let (temp, rh) = self.signal.sample(self.seq);
        self.seq = self.seq.wrapping_add(1);
        self.produced.produced.fetch_add(1, Ordering::SeqCst);
        let mut measurement = Measurement::new();
        measurement
            .push("temp_c", temp)
            .and_then(|()| measurement.push("rh", rh))
            .map_err(|_| SensorError::Other)?;
        Ok(measurement)
    }
}

/// Milliseconds since the device started; no wall clock, like most small devices.
struct SimClock {
    started: std::time::Instant,
}

impl Clock for SimClock {
    fn now(&mut self) -> Instant {
        Instant::from_millis(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }
}

/// A line with nothing on the other end: writes vanish, nothing arrives.
struct Unplugged;

impl embedded_io::ErrorType for Unplugged {
    type Error = std::io::Error;
}

impl embedded_io::Read for Unplugged {
    fn read(&mut self, _buf: &mut [u8]) -> Result<usize, Self::Error> {
        Ok(0)
    }
}

impl embedded_io::ReadReady for Unplugged {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(false)
    }
}

impl embedded_io::Write for Unplugged {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

fn open_port(config: &SerialDeviceConfig, master: std::fs::File) -> Port {
    let mut port = Port::new(master);
    if let Some(rate) = config.noise {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(7)
            ^ config.index as u64;
        port = port.with_noise(Noise::new(rate, seed));
    }
    if let Some(baud) = config.baud {
        port = port.with_line_rate(baud);
    }
    port
}

fn run(config: SerialDeviceConfig, line: Line, file: std::fs::File, control: &Arc<Control>) {
    let mut sensor = SimSensor {
        signal: Signal::new(config.index),
        seq: 0,
        produced: Arc::clone(control),
    };
    let mut link_config = LinkConfig::new(&config.name, FIRMWARE_VERSION);
    link_config.retransmit_timeout = config.retransmit_timeout;
    let mut boot = || config.boot;
    let device = Device::<1, OUTBOX>::new(
        &link_config,
        &mut boot,
        [(&mut sensor as &mut dyn Sensor, config.interval)],
    );
    let mut device = match device {
        Ok(device) => device,
        Err(error) => {
            tracing::error!(
                device = config.name,
                ?error,
                "simulated device refused its config"
            );
            return;
        }
    };
    let mut clock = SimClock {
        started: std::time::Instant::now(),
    };
    let mut port = Some(open_port(&config, file));
    let mut flipped_before = 0;
    let mut written_before = 0;
    // Saturating runs measure here instead of on the device's schedule.
    let mut burst_sensor = SimSensor {
        signal: Signal::new(config.index),
        seq: 0,
        produced: Arc::clone(control),
    };
    while !control.stop.load(Ordering::SeqCst) {
        let plugged = control.plugged.load(Ordering::SeqCst);
        if !plugged && let Some(old) = port.take() {
            flipped_before += old.flipped();
            written_before += old.written();
            drop(old);
            line.unplug();
        } else if plugged && port.is_none() {
            match line.plug() {
                Ok(file) => port = Some(open_port(&config, file)),
                Err(error) => tracing::warn!(%error, "failed to plug the simulated line back in"),
            }
        }
        let sampling = config
            .count
            .is_none_or(|count| control.produced.load(Ordering::SeqCst) < u64::from(count));
        if config.saturate && sampling {
            // Keep the outbox topped up with fresh events: the line is the limit.
            while device.link().outbox().len() < OUTBOX / 2
                && config
                    .count
                    .is_none_or(|count| sensor_count(control) < u64::from(count))
            {
                let measurement = burst_sensor.measure();
                if let Ok(measurement) = measurement {
                    let _ = device.link_mut().push(None, None, measurement);
                }
            }
        }
        match port.as_mut() {
            Some(port) if config.saturate => device.link_mut().poll(clock.now(), port),
            Some(port) if sampling => device.poll(&mut clock, port),
            Some(port) => device.link_mut().poll(clock.now(), port),
            None if sampling => device.poll(&mut clock, &mut Unplugged),
            None => {}
        }
        if let Ok(mut stats) = control.stats.lock() {
            *stats = SerialDeviceStats {
                produced: control.produced.load(Ordering::SeqCst),
                pending: device.link().outbox().len() as u64,
                link: device.link().counters(),
                flipped: flipped_before + port.as_ref().map_or(0, Port::flipped),
                written: written_before + port.as_ref().map_or(0, Port::written),
            };
        }
        // Bytes from the gateway are noticed within a millisecond; samples are due at wake_at.
        let wait = device
            .wake_at()
            .saturating_duration_since(clock.now())
            .min(Duration::from_millis(1));
        std::thread::sleep(wait.max(Duration::from_micros(200)));
    }
}
