//! Readings as a sensor returns them: a few named values per measurement.

use heapless::Vec;

/// Most readings one measurement, and so one event, carries.
///
/// A sensor chip measures a handful of quantities at once; keeping this small keeps every event
/// in the outbox small (an event holds this many readings inline).
pub const MAX_EVENT_READINGS: usize = 4;

/// One named measured value, e.g. `temp_c = 21.5`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// What was measured, with its unit: `temp_c`, `rh`, `pressure_hpa`.
    pub name: &'static str,
    /// The value, in the unit the name says.
    pub value: f64,
}

/// The readings of one measurement, at most [`MAX_EVENT_READINGS`], in the order they were added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurement {
    readings: Vec<Reading, MAX_EVENT_READINGS>,
}

impl Measurement {
    /// No readings.
    pub const fn new() -> Self {
        Self {
            readings: Vec::new(),
        }
    }

    /// Adds a reading; when the measurement is full, gives the reading back.
    pub fn push(&mut self, name: &'static str, value: f64) -> Result<(), Reading> {
        self.readings.push(Reading { name, value })
    }

    /// The readings, in the order they were added.
    pub fn as_slice(&self) -> &[Reading] {
        &self.readings
    }

    /// The value of the first reading called `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.readings
            .iter()
            .find(|reading| reading.name == name)
            .map(|reading| reading.value)
    }

    /// Number of readings.
    pub fn len(&self) -> usize {
        self.readings.len()
    }

    /// Whether there are no readings.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }
}

impl From<Reading> for Measurement {
    fn from(reading: Reading) -> Self {
        let mut measurement = Self::new();
        // One reading always fits: MAX_EVENT_READINGS is at least 1.
        let _ = measurement.readings.push(reading);
        measurement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_keeps_order_and_gives_back_what_does_not_fit() {
        let mut measurement = Measurement::new();
        assert!(measurement.is_empty());
        for (index, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
            assert_eq!(measurement.push(name, index as f64), Ok(()));
        }
        assert_eq!(
            measurement.push("e", 9.0),
            Err(Reading {
                name: "e",
                value: 9.0
            })
        );
        assert_eq!(measurement.len(), MAX_EVENT_READINGS);
        assert_eq!(measurement.get("c"), Some(2.0));
        assert_eq!(measurement.get("e"), None);
        let names: std::vec::Vec<_> = measurement.as_slice().iter().map(|r| r.name).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
    }
}
