//! Who a device connection may speak for: the devices its login names.

use std::sync::Arc;

use crate::rules::DevicePattern;

/// The devices a connection may publish for, decided at login.
#[derive(Debug, Clone)]
pub enum Grant {
    /// No logins are configured (loopback, or `allow_anonymous`): any device.
    AnyDevice,
    /// A login, and the devices it may speak for.
    Login {
        /// The login's name.
        name: Arc<str>,
        /// Device ids or globs.
        devices: Arc<[DevicePattern]>,
    },
}

impl Grant {
    /// The login's name, if there is one.
    pub fn login(&self) -> Option<&str> {
        match self {
            Self::AnyDevice => None,
            Self::Login { name, .. } => Some(name),
        }
    }

    /// Whether the connection may publish events for `device`.
    pub fn speaks_for(&self, device: &str) -> bool {
        match self {
            Self::AnyDevice => true,
            Self::Login { devices, .. } => devices.iter().any(|pattern| pattern.matches(device)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(devices: &[&str]) -> Grant {
        Grant::Login {
            name: "sensor-1".into(),
            devices: devices
                .iter()
                .filter_map(|pattern| DevicePattern::new(pattern))
                .collect(),
        }
    }

    #[test]
    fn a_login_speaks_only_for_the_devices_it_names() {
        let own = login(&["sensor-1"]);
        assert!(own.speaks_for("sensor-1"));
        assert!(!own.speaks_for("sensor-2"));
        assert!(!own.speaks_for("sensor-10"));
        let greenhouse = login(&["gh-?", "pump"]);
        assert!(greenhouse.speaks_for("gh-1"));
        assert!(greenhouse.speaks_for("pump"));
        assert!(!greenhouse.speaks_for("gh-10"));
        assert!(Grant::AnyDevice.speaks_for("anything"));
        assert_eq!(own.login(), Some("sensor-1"));
        assert_eq!(Grant::AnyDevice.login(), None);
    }
}
