//! Placeholder until the configuration module lands.
mod model;
pub use model::*;
