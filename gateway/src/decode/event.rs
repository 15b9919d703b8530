//! The gateway's own, owned copy of a device event.

/// A decoded, validated device event, owned so that it can outlive the payload it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceEvent {
    /// Device id: 1–64 characters of `[A-Za-z0-9._-]`.
    pub device: String,
    /// Boot counter: a new value each time the device starts.
    pub boot: u32,
    /// Sequence number within a boot.
    pub seq: u32,
    /// Device time of the event in milliseconds since the Unix epoch, if the device sent one.
    pub ts: Option<u64>,
    /// Optional category of the event.
    pub kind: Option<String>,
    /// Readings in the order the device sent them; names are unique.
    pub readings: Vec<(String, f64)>,
}

impl DeviceEvent {
    /// The stable id `{device}:{boot}:{seq}` that consumers use to drop duplicates.
    pub fn id(&self) -> String {
        format!("{}:{}:{}", self.device, self.boot, self.seq)
    }
}

impl From<&edge_wire::Event<'_>> for DeviceEvent {
    fn from(event: &edge_wire::Event<'_>) -> Self {
        Self {
            device: event.device.to_owned(),
            boot: event.boot,
            seq: event.seq,
            ts: event.ts,
            kind: event.kind.map(str::to_owned),
            readings: event
                .readings
                .iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn id_joins_device_boot_and_seq() {
        let event = DeviceEvent {
            device: "greenhouse-3".to_owned(),
            boot: 7,
            seq: 42,
            ts: None,
            kind: None,
            readings: Vec::new(),
        };
        assert_eq!(event.id(), "greenhouse-3:7:42");
    }

    #[test]
    fn converts_from_a_wire_event() {
        let wire = edge_wire::Event {
            device: "d",
            boot: 1,
            seq: u32::MAX,
            ts: Some(5),
            kind: Some("alarm"),
            readings: edge_wire::Readings::try_from(&[("b", 2.0), ("a", 1.0)][..]).unwrap(),
        };
        let event = DeviceEvent::from(&wire);
        assert_eq!(event.id(), "d:1:4294967295");
        assert_eq!(event.kind.as_deref(), Some("alarm"));
        assert_eq!(
            event.readings,
            [("b".to_owned(), 2.0), ("a".to_owned(), 1.0)]
        );
    }
}
