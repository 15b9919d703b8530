//! Alert rules evaluated at the edge: thresholds with hysteresis, `for` durations, window
//! aggregates, silence, severity, cooldown and labels.
//!
//! - [`model`]: a checked rule.
//! - [`engine`]: the sans-IO engine, events and ticks in, alert transitions out.

pub mod engine;
pub mod model;

#[cfg(test)]
mod tests;

pub use engine::{AlertState, Engine, Observation, Transition};
pub use model::{Aggregate, Bounds, Condition, DevicePattern, Rule, Severity, Window};
