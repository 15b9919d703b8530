//! The end-to-end harness: the real `edge-gateway` binary, real brokers (Mosquitto, or rumqttd
//! in this process), real MQTT clients, temp dirs and ephemeral ports on 127.0.0.1.
//!
//! One module per concern: [`gateway`] (the process and its typed configuration), [`brokers`],
//! [`proxy`] (a TCP proxy that can cut or swallow traffic), [`inbox`] (what the cloud received),
//! [`devices`], [`serial`], [`http`], [`pki`] (certificates made for the test), [`kafka`]
//! (librdkafka's mock cluster, a Kafka-protocol broker in this process), [`aws`] (moto's
//! server for EventBridge, and an HTTP proxy in front of it).
#![allow(dead_code, unreachable_pub, unused_imports)]

mod aws;
mod brokers;
mod devices;
mod gateway;
mod http;
mod inbox;
mod kafka;
mod pki;
mod proxy;
mod serial;

pub use aws::*;
pub use brokers::*;
pub use devices::*;
pub use gateway::*;
pub use http::*;
pub use inbox::*;
pub use kafka::*;
pub use pki::*;
pub use proxy::*;
pub use serial::*;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Polls `condition` every 50 ms until it holds or `timeout` passes; panics with `what` then.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A command running `program`, a binary built with the tests: directly, or through the
/// emulator named by `EDGE_TEST_RUNNER` when the tests are built for another architecture
/// (`scripts/test-pi.sh` sets `qemu-aarch64-static`). The kernel cannot run a foreign binary
/// itself where no binfmt_misc handler is registered, so the harness names the emulator.
pub fn built_program(program: impl AsRef<OsStr>) -> Command {
    match std::env::var_os("EDGE_TEST_RUNNER").filter(|runner| !runner.is_empty()) {
        Some(runner) => {
            let mut command = Command::new(runner);
            command.arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A command running the `edge-gateway` binary built with the tests.
pub fn edge_gateway() -> Command {
    built_program(env!("CARGO_BIN_EXE_edge-gateway"))
}

/// `edge-alerts`, built beside `edge-gateway` by `cargo test --workspace`. Not cross-built for
/// the Pi's run of this suite, which skips the tests that need it (`scripts/test-pi.sh`: the
/// demo's, and those named `edge_alerts_…`).
pub fn edge_alerts_program() -> PathBuf {
    let program = Path::new(env!("CARGO_BIN_EXE_edge-gateway")).with_file_name("edge-alerts");
    assert!(
        program.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (or build -p edge-alerts)",
        program.display()
    );
    program
}

/// The LM3S6965 firmware image: `$EDGE_FIRMWARE_ELF`, or where `scripts/firmware.sh` builds it.
pub fn firmware_image() -> PathBuf {
    let image = std::env::var_os("EDGE_FIRMWARE_ELF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(
                "../firmware/boards/lm3s6965-qemu/target/thumbv7m-none-eabi/release/edge-board-lm3s6965",
            )
        });
    assert!(
        image.is_file(),
        "{} is missing: build it with scripts/firmware.sh (scripts/test.sh does)",
        image.display()
    );
    image
}

/// An unused TCP port on 127.0.0.1.
///
/// Chosen below the kernel's ephemeral range (`ip_local_port_range`, 32768 and up by default):
/// a port from that range can be taken, between this call and the listener's bind, by the local
/// end of any outgoing connection on the machine (a gateway reconnecting to a broker makes many).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const LAST: u16 = 32_000;
    // Start each test process somewhere else in the range, then walk it.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        FIRST + (std::process::id() % u32::from(LAST - FIRST)) as u16,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in FIRST..LAST {
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + port.saturating_sub(FIRST) % (LAST - FIRST);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {LAST}")
}

/// The value of `series` in a Prometheus text exposition. A family name without labels that
/// only has labelled series (e.g. `edge_uplink_connected`, labelled by uplink) gives their sum.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    let exact = text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    });
    if exact.is_some() || series.contains('{') {
        return exact;
    }
    let labelled: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(series)?.strip_prefix('{')?;
            rest.rsplit_once(' ')?.1.trim().parse().ok()
        })
        .collect();
    (!labelled.is_empty()).then(|| labelled.iter().sum())
}

pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}
