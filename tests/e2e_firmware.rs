//! End to end with the real firmware: the LM3S6965 image (`firmware/boards/lm3s6965-qemu`, built
//! by `scripts/firmware.sh`) runs in QEMU with an emulated TMP105 on its I2C bus, its UART on a
//! pty that the real `edge-gateway` reads, forwarding to a Mosquitto of the test's own. The test
//! sets the sensor's temperature over QMP, as a thermometer in a room would change.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DEVICE: &str = "qemu-lm3s6965";
/// The TMP105's resolution at 12 bits.
const STEP: f64 = 1.0 / 16.0;

const RULES: &str = r#"
[[rule]]
name = "firmware too hot"
devices = "qemu-*"
reading = "temp_c"
above = 35.0
clear_below = 33.0
severity = "critical"
"#;

/// QEMU running the firmware, paused until [`Qemu::resume`], its UART on a pty and its monitor
/// on a QMP socket.
struct Qemu {
    child: Child,
    pty: PathBuf,
    qmp: BufReader<UnixStream>,
}

impl Qemu {
    fn start(dir: &Path) -> Self {
        let socket = dir.join("qmp.sock");
        let mut child = Command::new("qemu-system-arm")
            .args(["-M", "lm3s6965evb", "-cpu", "cortex-m3"])
            .args(["-display", "none", "-monitor", "none"])
            .args(["-semihosting-config", "enable=on,target=native"])
            .args(["-serial", "pty"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .args(["-device", "tmp105,bus=i2c,address=0x48,id=tmp0"])
            .arg("-S")
            .arg("-kernel")
            .arg(firmware_image())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-arm (apt-get install qemu-system-arm)");
        // "char device redirected to /dev/pts/N (label serial0)"
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let pty = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("QEMU ended before it opened its pty");
            };
            if let Some(rest) = line.split("redirected to ").nth(1) {
                break PathBuf::from(rest.split_whitespace().next().expect("a pty path"));
            }
        };
        // Keep draining what QEMU prints, so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(&socket) {
                Ok(stream) => break stream,
                Err(error) => {
                    assert!(Instant::now() < deadline, "QMP socket: {error}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut qemu = Self {
            child,
            pty,
            qmp: BufReader::new(stream),
        };
        qemu.read_reply("QMP"); // the greeting
        qemu.command(r#"{"execute":"qmp_capabilities"}"#);
        qemu
    }

    /// The next line of QMP that is not an asynchronous event.
    fn read_reply(&mut self, expected: &str) -> String {
        loop {
            let mut line = String::new();
            self.qmp.read_line(&mut line).expect("QMP reply");
            if line.contains("\"event\"") {
                continue;
            }
            assert!(line.contains(expected), "QMP answered {line}");
            return line;
        }
    }

    fn command(&mut self, command: &str) {
        let stream = self.qmp.get_mut();
        stream.write_all(command.as_bytes()).expect("QMP write");
        stream.write_all(b"\n").expect("QMP write");
        self.read_reply("\"return\"");
    }

    /// Sets the TMP105's temperature, in thousandths of a degree.
    fn set_temperature(&mut self, millidegrees: i32) {
        self.command(&format!(
            r#"{{"execute":"qom-set","arguments":{{"path":"/machine/peripheral/tmp0","property":"temperature","value":{millidegrees}}}}}"#
        ));
    }

    fn resume(&mut self) {
        self.command(r#"{"execute":"cont"}"#);
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The readings of the device's events at the cloud, in arrival order: (seq, temp_c).
fn readings(cloud: &Subscriber) -> Vec<(u64, f64)> {
    cloud
        .inbox
        .all()
        .iter()
        .filter(|event| event.device == DEVICE)
        .filter_map(|event| Some((event.seq, event.body["readings"]["temp_c"].as_f64()?)))
        .collect()
}

#[test]
fn the_firmware_in_qemu_reaches_the_cloud_through_the_gateway_and_loses_nothing() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut qemu = Qemu::start(dir.path());

    let mut gateway = Gateway::prepare(
        &format!("mqtt://127.0.0.1:{}", broker.port),
        "",
        "",
        JournalSettings::default(),
    );
    let mut config = std::fs::read_to_string(&gateway.config_path).expect("read config");
    config.push_str(&format!(
        "\n[[serial]]\nport = \"{}\"\nbaud = 115200\n{RULES}",
        qemu.pty.display()
    ));
    std::fs::write(&gateway.config_path, config).expect("write config");
    gateway.spawn();

    // A room at 23.456 °C: the chip reads it to 1/16 °C.
    qemu.set_temperature(23_456);
    qemu.resume();
    wait_until("readings at the cloud", Duration::from_secs(30), || {
        readings(&cloud).len() >= 3
    });
    for (seq, temp) in readings(&cloud) {
        assert!(
            (temp - 23.456).abs() <= STEP,
            "event {seq} read {temp} °C for 23.456 °C"
        );
    }

    // Hotter than the rule allows: the gateway raises an alert.
    qemu.set_temperature(40_000);
    wait_until("the alert at the cloud", Duration::from_secs(30), || {
        cloud
            .inbox
            .alerts()
            .iter()
            .any(|alert| alert.body["state"] == "firing" && alert.body["device"] == DEVICE)
    });
    let alerts = cloud.inbox.alerts();
    let firing = alerts
        .iter()
        .find(|alert| alert.body["state"] == "firing")
        .expect("firing");
    assert_eq!(firing.body["rule"], "firmware too hot");
    assert!(
        (firing.body["value"].as_f64().unwrap_or(0.0) - 40.0).abs() <= STEP,
        "{firing:?}"
    );

    // The gateway dies mid-run and comes back: the firmware holds what was not acknowledged
    // and sends it again, so every reading arrives.
    let before = readings(&cloud).len();
    gateway.kill();
    qemu.set_temperature(30_000);
    std::thread::sleep(Duration::from_secs(2)); // the device samples on while the gateway is away
    gateway.spawn();
    wait_until(
        "readings after the restart",
        Duration::from_secs(30),
        || {
            readings(&cloud)
                .iter()
                .filter(|(_, temp)| (temp - 30.0).abs() <= STEP)
                .count()
                >= 3
                && readings(&cloud).len() > before + 4
        },
    );
    let per_device = cloud.inbox.check_order_and_resent_duplicates();
    let seqs = per_device.get(DEVICE).expect("the device's events");
    let first = seqs[0];
    assert_eq!(
        *seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "no reading lost across the restart"
    );
    // Cooled below the rule's clear level: the alert resolves.
    wait_until("the alert resolved", Duration::from_secs(30), || {
        cloud
            .inbox
            .alerts()
            .iter()
            .any(|alert| alert.body["state"] == "resolved" && alert.body["device"] == DEVICE)
    });
}
