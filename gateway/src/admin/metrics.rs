//! A small metrics registry with fixed families, rendered in the Prometheus text format.
//!
//! Every family the gateway exports is a field here, so a scrape never misses a series that has
//! not happened yet (counters start at zero) and hot paths pay one atomic add.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::journal::{DropReason, JournalStats, Lane};

/// Where events enter the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The MQTT endpoint devices publish to.
    Mqtt,
    /// A serial port.
    Serial,
}

impl Source {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mqtt => "mqtt",
            Source::Serial => "serial",
        }
    }
}

/// A counter with one label whose values are known up front (and may grow).
#[derive(Debug, Default)]
struct LabeledCounter {
    values: Mutex<BTreeMap<&'static str, u64>>,
}

impl LabeledCounter {
    fn with_labels(labels: &[&'static str]) -> Self {
        Self {
            values: Mutex::new(labels.iter().map(|label| (*label, 0)).collect()),
        }
    }

    fn add(&self, label: &'static str, count: u64) {
        if let Ok(mut values) = self.values.lock() {
            *values.entry(label).or_default() += count;
        }
    }

    fn get(&self, label: &str) -> u64 {
        self.values
            .lock()
            .map(|values| values.get(label).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        self.values
            .lock()
            .map(|values| {
                values
                    .iter()
                    .map(|(label, value)| (*label, *value))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Upper bounds of the ack-latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of durations with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(index) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the series of one labelled histogram (`labels` like `uplink="cloud"`).
    fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

impl Metrics {
    fn render_serial(&self, out: &mut String) {
        let ports: Vec<(String, Arc<SerialPortStats>)> = self
            .serial_ports
            .lock()
            .map(|ports| ports.clone())
            .unwrap_or_default();
        type Read = fn(&SerialPortStats) -> u64;
        let families: [(&str, &str, &str, Read); 7] = [
            (
                "edge_serial_connected",
                "gauge",
                "Whether the serial port is open.",
                |s| u64::from(s.connected.load(Ordering::Relaxed)),
            ),
            (
                "edge_serial_frames_total",
                "counter",
                "Frames received that decoded to a message.",
                |s| s.frames.load(Ordering::Relaxed),
            ),
            (
                "edge_serial_crc_errors_total",
                "counter",
                "Frames dropped for a CRC mismatch.",
                |s| s.crc_errors.load(Ordering::Relaxed),
            ),
            (
                "edge_serial_resyncs_total",
                "counter",
                "Frames dropped for any reason; the decoder resynchronised on the next delimiter.",
                |s| s.resyncs.load(Ordering::Relaxed),
            ),
            (
                "edge_serial_reconnects_total",
                "counter",
                "Times the port was opened again after it went away.",
                |s| s.reconnects.load(Ordering::Relaxed),
            ),
            (
                "edge_serial_duplicates_total",
                "counter",
                "Samples received again that were already stored.",
                |s| s.duplicates.load(Ordering::Relaxed),
            ),
            (
                "edge_serial_out_of_order_total",
                "counter",
                "Samples dropped after a gap, for a wrong boot or before a Hello; the device resends them.",
                |s| s.out_of_order.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, read) in families {
            family(out, name, kind, help);
            for (port, stats) in &ports {
                let _ = writeln!(
                    out,
                    "{name}{{port=\"{}\"}} {}",
                    escape_label(port),
                    read(stats)
                );
            }
        }
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// An open device connection, counted in `edge_device_connections` while it lives.
#[derive(Debug)]
pub struct DeviceConnection {
    metrics: Arc<Metrics>,
}

impl Drop for DeviceConnection {
    fn drop(&mut self) {
        self.metrics
            .device_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The figures of one serial port.
#[derive(Debug, Default)]
pub struct SerialPortStats {
    /// Whether the port is open.
    pub connected: AtomicBool,
    /// Frames received that decoded to a message.
    pub frames: AtomicU64,
    /// Frames dropped for a CRC mismatch.
    pub crc_errors: AtomicU64,
    /// Frames dropped for any reason (bad CRC or COBS, too long, a message this version does
    /// not understand): each one makes the decoder resynchronise on the next delimiter.
    pub resyncs: AtomicU64,
    /// Times the port was opened again after it went away.
    pub reconnects: AtomicU64,
    /// Samples received again that were already stored (retransmissions).
    pub duplicates: AtomicU64,
    /// Samples dropped because one before them is missing, their boot is not the announced one,
    /// or no `Hello` came first; the device resends them.
    pub out_of_order: AtomicU64,
}

impl SerialPortStats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every figure the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    received: [AtomicU64; 2],
    rejected: LabeledCounter,
    dead_letters_dropped: AtomicU64,
    device_logins_refused: AtomicU64,
    device_tls_refused: AtomicU64,
    device_client_ids_refused: AtomicU64,
    device_connections: AtomicU64,
    device_connections_refused: AtomicU64,
    device_protocol_errors: AtomicU64,
    alerts: [AtomicU64; 2],
    rule_events_dropped: AtomicU64,
    serial_ports: std::sync::Mutex<Vec<(String, Arc<SerialPortStats>)>>,
    uplinks: Vec<Arc<UplinkStats>>,
    journal: Arc<JournalStats>,
}

/// Live figures of one uplink (destination), labelled `uplink` in `/metrics`.
#[derive(Debug)]
pub struct UplinkStats {
    name: String,
    connected: AtomicBool,
    connections: AtomicU64,
    published: AtomicU64,
    confirmed: AtomicU64,
    rejected: [AtomicU64; 2],
    stalls: AtomicU64,
    stalled: AtomicBool,
    /// Time from offering a message to its confirmation.
    pub ack_latency: Histogram,
}

impl UplinkStats {
    fn new(name: String) -> Self {
        Self {
            name,
            connected: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            published: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            rejected: Default::default(),
            stalls: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
            ack_latency: Histogram::default(),
        }
    }

    /// The uplink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets whether the uplink is connected; counts connections.
    pub fn set_connected(&self, connected: bool) {
        let was = self.connected.swap(connected, Ordering::Relaxed);
        if connected && !was {
            self.connections.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the uplink is connected.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Counts messages handed to the connection.
    pub fn add_published(&self, count: u64) {
        self.published.fetch_add(count, Ordering::Relaxed);
    }

    /// Counts messages the broker confirmed.
    pub fn add_confirmed(&self, count: u64) {
        self.confirmed.fetch_add(count, Ordering::Relaxed);
    }

    /// Messages the broker confirmed so far.
    pub fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::Relaxed)
    }

    /// Counts a message the broker refused; `permanent` ones are dead-lettered.
    pub fn add_rejected(&self, permanent: bool) {
        self.rejected[usize::from(permanent)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an ack timeout and marks the uplink stalled until the next confirmation.
    pub fn record_stall(&self) {
        self.stalls.fetch_add(1, Ordering::Relaxed);
        self.stalled.store(true, Ordering::Relaxed);
    }

    /// Marks the uplink as no longer stalled.
    pub fn clear_stall(&self) {
        self.stalled.store(false, Ordering::Relaxed);
    }

    /// Whether nothing was confirmed for an ack timeout, and nothing since.
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }
}

impl Metrics {
    /// A registry reading the journal's figures from `journal`; `reject_reasons` are the labels
    /// of `edge_events_rejected_total` shown from the start.
    pub fn new(journal: Arc<JournalStats>, reject_reasons: &[&'static str]) -> Self {
        Self {
            received: Default::default(),
            rejected: LabeledCounter::with_labels(reject_reasons),
            dead_letters_dropped: AtomicU64::new(0),
            device_logins_refused: AtomicU64::new(0),
            device_tls_refused: AtomicU64::new(0),
            device_client_ids_refused: AtomicU64::new(0),
            device_connections: AtomicU64::new(0),
            device_connections_refused: AtomicU64::new(0),
            device_protocol_errors: AtomicU64::new(0),
            alerts: Default::default(),
            rule_events_dropped: AtomicU64::new(0),
            serial_ports: std::sync::Mutex::default(),
            uplinks: journal
                .destinations()
                .iter()
                .map(|destination| Arc::new(UplinkStats::new(destination.name().to_owned())))
                .collect(),
            journal,
        }
    }

    /// Counts accepted events.
    pub fn add_received(&self, source: Source, count: u64) {
        self.received[source as usize].fetch_add(count, Ordering::Relaxed);
    }

    /// Counts a rejected input.
    pub fn add_rejected(&self, reason: &'static str) {
        self.rejected.add(reason, 1);
    }

    /// Rejected inputs so far, for one reason.
    pub fn rejected(&self, reason: &str) -> u64 {
        self.rejected.get(reason)
    }

    /// Counts a dead letter that could not be kept (the writer's queue was full, or it stopped).
    pub fn add_dead_letter_dropped(&self) {
        self.dead_letters_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a device login the device listener refused.
    pub fn add_device_login_refused(&self) {
        self.device_logins_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a device connection whose TLS handshake failed (no, expired or untrusted client
    /// certificate, a plain-text client, a handshake that did not finish in time).
    pub fn add_device_tls_refused(&self) {
        self.device_tls_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a device connection refused because its client id is held by a connection of
    /// another login.
    pub fn add_device_client_id_refused(&self) {
        self.device_client_ids_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an open device connection until the returned guard is dropped.
    pub fn device_connected(self: &Arc<Self>) -> DeviceConnection {
        self.device_connections.fetch_add(1, Ordering::Relaxed);
        DeviceConnection {
            metrics: Arc::clone(self),
        }
    }

    /// Device connections open now.
    pub fn device_connections(&self) -> u64 {
        self.device_connections.load(Ordering::Relaxed)
    }

    /// Counts a device connection turned away because `max_connections` were open.
    pub fn add_device_connection_refused(&self) {
        self.device_connections_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a device connection closed for breaking the MQTT protocol (malformed or oversized
    /// packet, no CONNECT in time, unsupported protocol version, keep-alive expired).
    pub fn add_device_protocol_error(&self) {
        self.device_protocol_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an alert transition.
    pub fn add_alert(&self, firing: bool) {
        self.alerts[usize::from(!firing)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an event the rule engine could not take (it was behind).
    pub fn add_rule_events_dropped(&self, count: u64) {
        self.rule_events_dropped.fetch_add(count, Ordering::Relaxed);
    }

    /// The figures of serial port `port`, registered on first use.
    pub fn serial_port(&self, port: &str) -> Arc<SerialPortStats> {
        let Ok(mut ports) = self.serial_ports.lock() else {
            return Arc::default();
        };
        if let Some((_, stats)) = ports.iter().find(|(name, _)| name == port) {
            return Arc::clone(stats);
        }
        let stats = Arc::new(SerialPortStats::default());
        ports.push((port.to_owned(), Arc::clone(&stats)));
        stats
    }

    /// The figures of each uplink, in configuration order (the journal's destinations).
    pub fn uplinks(&self) -> &[Arc<UplinkStats>] {
        &self.uplinks
    }

    /// The journal's figures.
    pub fn journal(&self) -> &JournalStats {
        &self.journal
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self, now_ms: i64) -> String {
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "edge_events_received_total",
            "counter",
            "Events accepted, by source.",
        );
        for source in [Source::Mqtt, Source::Serial] {
            let value = self.received[source as usize].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "edge_events_received_total{{source=\"{}\"}} {value}",
                source.as_str()
            );
        }
        family(
            &mut out,
            "edge_events_rejected_total",
            "counter",
            "Inputs rejected (and dead-lettered), by reason.",
        );
        for (reason, value) in self.rejected.snapshot() {
            let _ = writeln!(
                out,
                "edge_events_rejected_total{{reason=\"{reason}\"}} {value}"
            );
        }
        single(
            &mut out,
            "edge_dead_letters_dropped_total",
            "counter",
            "Rejected inputs that could not be kept as dead letters.",
            self.dead_letters_dropped.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "edge_device_logins_refused_total",
            "counter",
            "Device logins refused (unknown user, wrong or missing password).",
            self.device_logins_refused.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "edge_device_tls_refused_total",
            "counter",
            "Device connections whose TLS handshake failed (no, expired or untrusted client certificate, plain text, too slow).",
            self.device_tls_refused.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "edge_device_client_ids_refused_total",
            "counter",
            "Device connections refused because their client id is held by a connection of another login.",
            self.device_client_ids_refused.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "edge_device_connections",
            "gauge",
            "Device MQTT connections open now.",
            self.device_connections(),
        );
        single(
            &mut out,
            "edge_device_connections_refused_total",
            "counter",
            "Device connections turned away because devices.max_connections were open.",
            self.device_connections_refused.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "edge_device_protocol_errors_total",
            "counter",
            "Device connections closed for breaking the MQTT protocol.",
            self.device_protocol_errors.load(Ordering::Relaxed),
        );
        self.render_serial(&mut out);
        family(
            &mut out,
            "edge_alerts_total",
            "counter",
            "Alert transitions raised by the rules, by state.",
        );
        for (index, state) in ["firing", "resolved"].iter().enumerate() {
            let _ = writeln!(
                out,
                "edge_alerts_total{{state=\"{state}\"}} {}",
                self.alerts[index].load(Ordering::Relaxed)
            );
        }
        single(
            &mut out,
            "edge_rule_events_dropped_total",
            "counter",
            "Events the rule engine could not evaluate because it was behind.",
            self.rule_events_dropped.load(Ordering::Relaxed),
        );
        let journal = &self.journal;
        single(
            &mut out,
            "edge_journal_rows",
            "gauge",
            "Rows (events and alerts) waiting in the journal.",
            journal.rows(),
        );
        single(
            &mut out,
            "edge_journal_bytes",
            "gauge",
            "Size of the journal's files (database and WAL).",
            journal.file_bytes(),
        );
        let age = journal
            .oldest_received_at_ms()
            .map(|at| (now_ms - at).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        family(
            &mut out,
            "edge_journal_oldest_age_seconds",
            "gauge",
            "Age of the oldest event in the journal.",
        );
        let _ = writeln!(out, "edge_journal_oldest_age_seconds {age}");
        family(
            &mut out,
            "edge_journal_dropped_total",
            "counter",
            "Events removed from the journal without delivery, by reason.",
        );
        for reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "edge_journal_dropped_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                journal.dropped(reason)
            );
        }
        single(
            &mut out,
            "edge_journal_appended_total",
            "counter",
            "Events committed to the journal.",
            journal.appended(),
        );
        single(
            &mut out,
            "edge_journal_commits_total",
            "counter",
            "Journal transactions committed.",
            journal.commits(),
        );
        single(
            &mut out,
            "edge_journal_corruptions_total",
            "counter",
            "Unreadable journals moved aside and replaced by an empty one.",
            journal.corruptions(),
        );
        // What reaches the storage device: the journal's pages, WAL and checkpoints (the
        // process writes nothing else to disk; logs go to stderr). The figure to watch for
        // SD-card wear.
        if let Some(written) = storage_write_bytes() {
            single(
                &mut out,
                "edge_storage_written_bytes_total",
                "counter",
                "Bytes this process caused to be written to storage (Linux /proc/self/io).",
                written,
            );
        }
        self.render_uplinks(&mut out, now_ms);
        out
    }
}

impl Metrics {
    fn render_uplinks(&self, out: &mut String, now_ms: i64) {
        let destinations = self.journal.destinations();
        let label = |uplink: &UplinkStats| escape_label(uplink.name());
        let per_uplink = |out: &mut String,
                          name: &str,
                          kind: &str,
                          help: &str,
                          value: &dyn Fn(&UplinkStats) -> u64| {
            family(out, name, kind, help);
            for uplink in &self.uplinks {
                let _ = writeln!(
                    out,
                    "{name}{{uplink=\"{}\"}} {}",
                    label(uplink),
                    value(uplink)
                );
            }
        };
        per_uplink(
            out,
            "edge_uplink_connected",
            "gauge",
            "Whether the uplink is connected.",
            &|uplink| u64::from(uplink.connected()),
        );
        per_uplink(
            out,
            "edge_uplink_connections_total",
            "counter",
            "Successful connections to the uplink's broker.",
            &|uplink| uplink.connections.load(Ordering::Relaxed),
        );
        per_uplink(
            out,
            "edge_uplink_published_total",
            "counter",
            "Messages handed to the uplink's connection (resends included).",
            &|uplink| uplink.published.load(Ordering::Relaxed),
        );
        per_uplink(
            out,
            "edge_uplink_acked_total",
            "counter",
            "Messages the uplink's broker confirmed.",
            &|uplink| uplink.confirmed(),
        );
        family(
            out,
            "edge_uplink_rejected_total",
            "counter",
            "Messages the uplink's broker refused: retryable ones are sent again, permanent ones dead-lettered.",
        );
        for uplink in &self.uplinks {
            for (index, kind) in ["retryable", "permanent"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "edge_uplink_rejected_total{{uplink=\"{}\",kind=\"{kind}\"}} {}",
                    label(uplink),
                    uplink.rejected[index].load(Ordering::Relaxed)
                );
            }
        }
        per_uplink(
            out,
            "edge_uplink_stalls_total",
            "counter",
            "Times nothing in flight was confirmed for the uplink's ack_timeout (the connection was dropped and the messages resent).",
            &|uplink| uplink.stalls.load(Ordering::Relaxed),
        );
        per_uplink(
            out,
            "edge_uplink_stalled",
            "gauge",
            "Whether the uplink's last ack timeout has not been followed by a confirmation yet.",
            &|uplink| u64::from(uplink.stalled()),
        );
        family(
            out,
            "edge_uplink_backlog_rows",
            "gauge",
            "Journal rows the uplink has not confirmed yet, by lane.",
        );
        for (uplink, destination) in self.uplinks.iter().zip(destinations) {
            for lane in Lane::ALL {
                let _ = writeln!(
                    out,
                    "edge_uplink_backlog_rows{{uplink=\"{}\",lane=\"{}\"}} {}",
                    label(uplink),
                    lane.as_str(),
                    destination.backlog(lane)
                );
            }
        }
        family(
            out,
            "edge_uplink_oldest_unconfirmed_age_seconds",
            "gauge",
            "Age of the oldest event the uplink has not confirmed (0 when none).",
        );
        for (uplink, destination) in self.uplinks.iter().zip(destinations) {
            let age = destination
                .oldest_unconfirmed_ms()
                .map_or(0.0, |at| (now_ms - at).max(0) as f64 / 1000.0);
            let _ = writeln!(
                out,
                "edge_uplink_oldest_unconfirmed_age_seconds{{uplink=\"{}\"}} {age}",
                label(uplink)
            );
        }
        family(
            out,
            "edge_uplink_dropped_total",
            "counter",
            "Rows the journal removed before the uplink confirmed them, by reason.",
        );
        for (uplink, destination) in self.uplinks.iter().zip(destinations) {
            for reason in [
                DropReason::EvictedOldest,
                DropReason::Expired,
                DropReason::Corrupt,
            ] {
                let _ = writeln!(
                    out,
                    "edge_uplink_dropped_total{{uplink=\"{}\",reason=\"{}\"}} {}",
                    label(uplink),
                    reason.as_str(),
                    destination.dropped(reason)
                );
            }
        }
        family(
            out,
            "edge_uplink_ack_latency_seconds",
            "histogram",
            "Time from offering a message to the uplink to its confirmation.",
        );
        for uplink in &self.uplinks {
            uplink.ack_latency.render_series(
                out,
                "edge_uplink_ack_latency_seconds",
                &format!("uplink=\"{}\"", label(uplink)),
            );
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// `write_bytes` of `/proc/self/io`: bytes this process caused to be sent to the storage
/// layer. `None` where the kernel does not say (not Linux, or no task I/O accounting).
fn storage_write_bytes() -> Option<u64> {
    parse_write_bytes(&std::fs::read_to_string("/proc/self/io").ok()?)
}

fn parse_write_bytes(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_labels_and_histogram_buckets() {
        let journal = JournalStats::new(["cloud".to_owned(), "bus".to_owned()]);
        let metrics = Metrics::new(Arc::new(journal), &["invalid_json"]);
        metrics.add_received(Source::Mqtt, 3);
        metrics.add_rejected("invalid_json");
        metrics.add_rejected("oversized");
        let cloud = &metrics.uplinks()[0];
        cloud.ack_latency.observe(Duration::from_millis(3));
        cloud.ack_latency.observe(Duration::from_secs(60));
        cloud.set_connected(true);
        cloud.add_rejected(true);
        cloud.record_stall();
        let text = metrics.render(0);
        assert!(text.contains("edge_events_received_total{source=\"mqtt\"} 3\n"));
        assert!(text.contains("edge_events_received_total{source=\"serial\"} 0\n"));
        assert!(text.contains("edge_events_rejected_total{reason=\"invalid_json\"} 1\n"));
        assert!(text.contains("edge_events_rejected_total{reason=\"oversized\"} 1\n"));
        assert!(text.contains("edge_journal_dropped_total{reason=\"evicted_oldest\"} 0\n"));
        let cloud = "uplink=\"cloud\"";
        for series in [
            format!("edge_uplink_ack_latency_seconds_bucket{{{cloud},le=\"0.001\"}} 0\n"),
            format!("edge_uplink_ack_latency_seconds_bucket{{{cloud},le=\"0.005\"}} 1\n"),
            format!("edge_uplink_ack_latency_seconds_bucket{{{cloud},le=\"10\"}} 1\n"),
            format!("edge_uplink_ack_latency_seconds_bucket{{{cloud},le=\"+Inf\"}} 2\n"),
            format!("edge_uplink_ack_latency_seconds_count{{{cloud}}} 2\n"),
            "edge_uplink_ack_latency_seconds_count{uplink=\"bus\"} 0\n".to_owned(),
            format!("edge_uplink_connected{{{cloud}}} 1\n"),
            "edge_uplink_connected{uplink=\"bus\"} 0\n".to_owned(),
            format!("edge_uplink_rejected_total{{{cloud},kind=\"permanent\"}} 1\n"),
            format!("edge_uplink_stalls_total{{{cloud}}} 1\n"),
            format!("edge_uplink_stalled{{{cloud}}} 1\n"),
            "edge_uplink_backlog_rows{uplink=\"bus\",lane=\"events\"} 0\n".to_owned(),
            format!("edge_uplink_dropped_total{{{cloud},reason=\"evicted_oldest\"}} 0\n"),
        ] {
            assert!(text.contains(&series), "missing {series}");
        }
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "bad sample line: {line}");
        }
    }

    #[test]
    fn storage_writes_come_from_proc_self_io() {
        let io = "rchar: 6976\nwchar: 0\nsyscr: 10\nsyscw: 0\nread_bytes: 0\nwrite_bytes: 40960\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_write_bytes(io), Some(40960));
        assert_eq!(parse_write_bytes("nothing here"), None);
        // On Linux the process's own figure is there (and counts from 0).
        if cfg!(target_os = "linux") {
            assert!(storage_write_bytes().is_some());
        }
    }
}
