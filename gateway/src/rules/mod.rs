//! Alert rules evaluated at the edge: thresholds with hysteresis, `for` durations, window
//! aggregates, silence, severity, cooldown and labels.
//!
//! - [`model`]: a checked rule.
//! - [`engine`]: the sans-IO engine, events and ticks in, alert transitions out.
//! - [`service`]: the engine's task in the gateway, journaling alerts in the priority lane.
//! - [`reload`]: re-reading the rules on SIGHUP or `POST /reload`.
//! - [`replay`]: `edge-gateway rules test`, recorded events through the rules.

pub mod engine;
pub mod model;
pub mod reload;
pub mod replay;
pub mod service;

#[cfg(test)]
mod tests;

pub use engine::{AlertState, Engine, Observation, Transition};
pub use model::{Aggregate, Bounds, Condition, DevicePattern, Rule, Severity, Window};
pub use service::{Observed, RulesHandle};
