//! What a rule is, once its TOML has been checked: it cannot be contradictory.

use std::collections::BTreeMap;
use std::time::Duration;

/// One alert rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name; alerts carry it.
    pub name: String,
    /// Which devices it watches.
    pub devices: DevicePattern,
    /// What it checks.
    pub condition: Condition,
    /// How long the condition must hold before the alert fires (`for`).
    pub hold: Duration,
    /// How bad it is.
    pub severity: Severity,
    /// After an alert resolves, no new one fires for this long.
    pub cooldown: Duration,
    /// Free-form labels, passed on with each alert.
    pub labels: BTreeMap<String, String>,
}

/// The condition of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// A reading (or an aggregate of it over a window) crosses a threshold.
    Threshold {
        /// The reading's name.
        reading: String,
        /// `None`: the latest value; `Some`: an aggregate over a sliding window.
        window: Option<Window>,
        /// When it fires and when it clears.
        bounds: Bounds,
    },
    /// Nothing heard from a device (or no value of `reading`) for `after`.
    Silent {
        /// `None`: any event counts; `Some`: only events carrying this reading.
        reading: Option<String>,
        /// How long the silence must last.
        after: Duration,
    },
}

/// A sliding window and the aggregate taken over it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// The window's length.
    pub over: Duration,
    /// What is taken over it.
    pub aggregate: Aggregate,
}

/// An aggregate over a window of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Mean.
    Avg,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Number of values.
    Count,
    /// Change per second, from the oldest value in the window to the newest.
    Rate,
}

impl Aggregate {
    /// Every aggregate and its name in the configuration.
    pub const ALL: [(Self, &'static str); 5] = [
        (Self::Avg, "avg"),
        (Self::Min, "min"),
        (Self::Max, "max"),
        (Self::Count, "count"),
        (Self::Rate, "rate"),
    ];
}

/// Thresholds with hysteresis. At least one of `above` and `below` is set; both make an
/// "outside" rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Fires when the value is greater than this…
    pub above: Option<f64>,
    /// …and clears once it is below this (at most `above`; `above` when not configured).
    pub clear_below: f64,
    /// Fires when the value is less than this…
    pub below: Option<f64>,
    /// …and clears once it is above this (at least `below`; `below` when not configured).
    pub clear_above: f64,
}

impl Bounds {
    /// Whether `value` starts an alert.
    pub fn triggers(&self, value: f64) -> bool {
        self.above.is_some_and(|above| value > above)
            || self.below.is_some_and(|below| value < below)
    }

    /// Whether a firing alert goes on at `value` (hysteresis: between the clear level and the
    /// threshold it neither fires anew nor clears).
    pub fn holds(&self, value: f64) -> bool {
        self.above.is_some() && value >= self.clear_below
            || self.below.is_some() && value <= self.clear_above
    }
}

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// For the record.
    Info,
    /// Look at it soon.
    Warning,
    /// Act now.
    Critical,
}

impl Severity {
    /// Every severity and its name.
    pub const ALL: [(Self, &'static str); 3] = [
        (Self::Info, "info"),
        (Self::Warning, "warning"),
        (Self::Critical, "critical"),
    ];

    /// The name used in configuration and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// Device ids a rule watches: an exact id, or a glob where `*` matches any run of characters and
/// `?` any one character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePattern {
    pattern: String,
}

impl DevicePattern {
    /// A pattern, if it is one: 1 to 64 characters of `[A-Za-z0-9._-]`, `*` and `?`.
    pub fn new(pattern: &str) -> Option<Self> {
        let valid = (1..=64).contains(&pattern.len())
            && pattern.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'*' | b'?')
            });
        valid.then(|| Self {
            pattern: pattern.to_owned(),
        })
    }

    /// The exact device id, if the pattern has no wildcard.
    pub fn exact(&self) -> Option<&str> {
        (!self.pattern.contains(['*', '?'])).then_some(self.pattern.as_str())
    }

    /// Whether `device` matches.
    pub fn matches(&self, device: &str) -> bool {
        glob_match(self.pattern.as_bytes(), device.as_bytes())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

/// Glob matching with `*` and `?`, iterative with one backtrack point (linear in practice).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let pattern = |text: &str| DevicePattern::new(text).expect("valid pattern");
        assert!(pattern("greenhouse-*").matches("greenhouse-3"));
        assert!(pattern("greenhouse-*").matches("greenhouse-"));
        assert!(!pattern("greenhouse-*").matches("barn-1"));
        assert!(pattern("*-3").matches("greenhouse-3"));
        assert!(pattern("g?-*").matches("gh-12"));
        assert!(!pattern("g?-*").matches("g-12"));
        assert!(pattern("*").matches("anything"));
        assert!(pattern("a*b*c").matches("axxbyyc"));
        assert!(!pattern("a*b*c").matches("axxbyy"));
        assert!(pattern("exact").matches("exact"));
        assert!(!pattern("exact").matches("exactly"));
        assert_eq!(pattern("exact").exact(), Some("exact"));
        assert_eq!(pattern("ex*").exact(), None);
        assert!(DevicePattern::new("bad/glob").is_none());
        assert!(DevicePattern::new("").is_none());
        assert!(DevicePattern::new("[abc]").is_none());
    }

    #[test]
    fn hysteresis_at_the_boundaries() {
        let bounds = Bounds {
            above: Some(35.0),
            clear_below: 33.0,
            below: None,
            clear_above: f64::NEG_INFINITY,
        };
        assert!(!bounds.triggers(35.0), "at the threshold is not above it");
        assert!(bounds.triggers(35.01));
        assert!(bounds.holds(33.0), "at the clear level it still holds");
        assert!(!bounds.holds(32.99));
        let outside = Bounds {
            above: Some(30.0),
            clear_below: 29.0,
            below: Some(10.0),
            clear_above: 11.0,
        };
        assert!(outside.triggers(9.9) && outside.triggers(30.1) && !outside.triggers(20.0));
        assert!(outside.holds(10.5) && outside.holds(29.5) && !outside.holds(20.0));
    }
}
