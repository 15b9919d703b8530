//! A fixed-capacity list of named readings, stored inline without allocation.

use core::fmt;

use crate::{MAX_READINGS, WireError};

/// Up to [`MAX_READINGS`] `(name, value)` pairs, in insertion order.
///
/// Storage is a fixed array, so an event fits on a microcontroller's stack. Names borrow from
/// wherever they came from (a decoded buffer, or `'static` strings in firmware). Pushing does not
/// check names or values; [`Event::validate`](crate::Event::validate) does.
#[derive(Clone)]
pub struct Readings<'a> {
    items: [(&'a str, f64); MAX_READINGS],
    len: usize,
}

impl<'a> Readings<'a> {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            items: [("", 0.0); MAX_READINGS],
            len: 0,
        }
    }

    /// Appends a reading, or returns [`WireError::TooManyReadings`] when the list is full.
    pub fn push(&mut self, name: &'a str, value: f64) -> Result<(), WireError> {
        let slot = self
            .items
            .get_mut(self.len)
            .ok_or(WireError::TooManyReadings)?;
        *slot = (name, value);
        self.len += 1;
        Ok(())
    }

    /// The readings in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'a str, f64)> + '_ {
        self.as_slice().iter().copied()
    }

    /// The readings as a slice, in insertion order.
    pub fn as_slice(&self) -> &[(&'a str, f64)] {
        &self.items[..self.len]
    }

    /// Number of readings.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no readings.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of the first reading called `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value)
    }
}

impl Default for Readings<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for Readings<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl fmt::Debug for Readings<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a> TryFrom<&[(&'a str, f64)]> for Readings<'a> {
    type Error = WireError;

    /// Copies the pairs, or fails with [`WireError::TooManyReadings`].
    fn try_from(pairs: &[(&'a str, f64)]) -> Result<Self, WireError> {
        let mut readings = Self::new();
        for &(name, value) in pairs {
            readings.push(name, value)?;
        }
        Ok(readings)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn push_keeps_order_and_stops_when_full() {
        let mut readings = Readings::new();
        assert!(readings.is_empty());
        for _ in 0..MAX_READINGS {
            assert_eq!(readings.push("x", 1.0), Ok(()));
        }
        assert_eq!(readings.push("y", 2.0), Err(WireError::TooManyReadings));
        assert_eq!(readings.len(), MAX_READINGS);
        assert_eq!(readings.get("y"), None);
    }

    #[test]
    fn get_finds_by_name() {
        let readings = Readings::try_from(&[("temp_c", 21.5), ("rh", 40.2)][..]).unwrap();
        assert_eq!(readings.get("rh"), Some(40.2));
        assert_eq!(readings.get("missing"), None);
        let names: std::vec::Vec<_> = readings.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["temp_c", "rh"]);
    }

    #[test]
    fn equality_ignores_unused_slots() {
        let mut a = Readings::new();
        a.push("a", 1.0).unwrap();
        let b = Readings::try_from(&[("a", 1.0)][..]).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, Readings::new());
    }
}
