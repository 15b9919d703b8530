//! The gateway configuration: a TOML file turned into a [`Config`] that cannot be invalid.
//!
//! Reading goes in three steps, each in its own file: the file as written ([`raw`], serde
//! structs mirroring the TOML), then [`validate`], a pure function that collects *every* problem
//! (unknown keys, missing keys, bad values, values that contradict each other), then the
//! validated [`model`]. Problems are reported as `file:line:column: message`, the location taken
//! from the spans of the TOML parse. Nothing here opens the files the configuration names
//! (password files, certificates): the components that use them do.
//!
//! `config/gateway.toml` is a commented example with every key; `docs/configuration.md` is the
//! reference.

mod error;
mod load;
mod locate;
mod model;
mod raw;
mod units;
mod url;
mod validate;

#[cfg(test)]
mod tests;

pub use error::{ConfigError, Problem};
pub use load::{load, parse};
pub use model::{
    AdminConfig, Batch, Config, DeviceTls, DeviceUser, DevicesConfig, GatewayConfig, JournalConfig,
    Lanes, SaslMechanism, SerialConfig, Synchronous, UplinkConfig, UplinkType, UplinkUrl, WhenFull,
};
