/// An event ready to be journaled: the uplink payload is encoded once, on ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The device the event came from (used for topics, stats and order).
    pub device: String,
    /// When the gateway received it, in ms since the Unix epoch.
    pub received_at_ms: i64,
    /// The message to send upstream.
    pub payload: Vec<u8>,
}

impl Record {
    /// What the row costs against `max_size`: its bytes plus SQLite's per-row overhead (cell
    /// header, rowid, record header, cell pointer), rounded up.
    pub(crate) fn cost(&self) -> u64 {
        (self.device.len() + self.payload.len()) as u64 + ROW_OVERHEAD
    }
}

pub(crate) const ROW_OVERHEAD: u64 = 40;

/// [`Record::cost`] of a stored row, from the lengths SQLite reports.
pub(crate) fn row_cost(device_len: i64, payload_len: i64) -> u64 {
    u64::try_from(device_len + payload_len).unwrap_or(0) + ROW_OVERHEAD
}

/// A journaled event, as the read path hands it to a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The row id: increasing in arrival order, the unit of acknowledgement.
    pub id: i64,
    /// The device the event came from.
    pub device: String,
    /// When the gateway received it, in ms since the Unix epoch.
    pub received_at_ms: i64,
    /// The message to send upstream.
    pub payload: Vec<u8>,
}

/// An alert transition ready to be journaled in the priority lane: it is forwarded before any
/// event, and its rule's firing state is kept with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    /// The rule.
    pub rule: String,
    /// The device.
    pub device: String,
    /// The alert's number (`{gateway}:alert:{n}`).
    pub alert: u64,
    /// Whether it starts (`true`) or ends.
    pub firing: bool,
    /// When, in ms since the Unix epoch.
    pub at_ms: i64,
    /// The message to send upstream.
    pub payload: Vec<u8>,
}

/// An alert that was firing when the journal was last written, so that it goes on after a
/// restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiringAlert {
    /// The rule.
    pub rule: String,
    /// The device.
    pub device: String,
    /// The alert's number.
    pub alert: u64,
}

/// Rejected input, kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// When it arrived, in ms since the Unix epoch.
    pub received_at_ms: i64,
    /// Which source it came from (`mqtt`, `serial`).
    pub source: &'static str,
    /// The MQTT topic or serial port.
    pub topic: String,
    /// The rejection reason (a metric label).
    pub reason: &'static str,
    /// A human-readable explanation.
    pub detail: String,
    /// The offending bytes, truncated to [`DeadLetter::MAX_PAYLOAD`].
    pub payload: Vec<u8>,
}

impl DeadLetter {
    /// At most this many bytes of a rejected payload are kept.
    pub const MAX_PAYLOAD: usize = 1024;
}

/// A queue of the journal. Each lane is read in its own id order, and a sink sends what waits in
/// [`Lane::Alerts`] before anything of [`Lane::Events`]: alerts are few and matter most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Alert transitions raised by the rules.
    Alerts,
    /// Device events.
    Events,
}

impl Lane {
    /// Both lanes, in the order a sink serves them.
    pub const ALL: [Lane; 2] = [Lane::Alerts, Lane::Events];

    /// The lane's name in configuration, metrics and the `positions` table.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Alerts => "alerts",
            Lane::Events => "events",
        }
    }

    /// Index into per-lane arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Lane::Alerts => 0,
            Lane::Events => 1,
        }
    }

    /// The table that holds the lane's rows.
    pub(crate) fn table(self) -> &'static str {
        match self {
            Lane::Alerts => "alerts",
            Lane::Events => "events",
        }
    }
}

/// A destination as the journal knows it: its name (the key of its delivery positions) and which
/// rows are routed to it. A row leaves the journal once every destination it is routed to has
/// confirmed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationRoute {
    /// The uplink's name.
    pub name: String,
    /// Whether it takes [`Lane::Alerts`].
    pub alerts: bool,
    /// Whether it takes [`Lane::Events`].
    pub events: bool,
    /// The devices it takes (events and alerts of other devices are passed over); all if `None`.
    pub devices: Option<crate::rules::DevicePattern>,
}

impl DestinationRoute {
    /// A destination that takes everything.
    pub fn all(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            alerts: true,
            events: true,
            devices: None,
        }
    }

    /// Whether it takes the lane at all.
    pub fn takes_lane(&self, lane: Lane) -> bool {
        match lane {
            Lane::Alerts => self.alerts,
            Lane::Events => self.events,
        }
    }

    /// Whether a row of `lane` from `device` is routed to it.
    pub fn takes(&self, lane: Lane, device: &str) -> bool {
        self.takes_lane(lane)
            && self
                .devices
                .as_ref()
                .is_none_or(|pattern| pattern.matches(device))
    }
}
