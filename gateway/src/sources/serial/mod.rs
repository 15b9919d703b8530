//! The serial source: devices on serial ports (UART, USB serial) speaking the `edge-wire` link
//! protocol (COBS frames with CRC-32; `Hello`, `Sample`, `Ack`; see `docs/wire-protocol.md`).
//!
//! Each configured port is served by a task of its own ([`port`]): it decodes frames, keeps
//! per-device order and drops retransmitted samples ([`sequencer`]), appends samples to the same
//! journal as MQTT events, and sends each `Ack` only **after the journal commit**. A port that
//! goes away (end of stream or an error) is reopened with exponential backoff; the rest of the
//! gateway carries on.

mod port;
mod sequencer;

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::SerialConfig;
use crate::sources::Ingest;

pub use port::SerialPort;

/// Starts a task per port; the returned set ends when `shutdown` turns true.
pub fn spawn_ports(
    ports: &[SerialConfig],
    ingest: &Ingest,
    shutdown: &watch::Receiver<bool>,
) -> JoinSet<()> {
    let sequencer = Arc::new(Mutex::new(sequencer::Sequencer::default()));
    let mut tasks = JoinSet::new();
    for config in ports {
        let port = SerialPort::new(config.clone(), ingest.clone(), Arc::clone(&sequencer));
        tasks.spawn(port.run(shutdown.clone()));
    }
    tasks
}
