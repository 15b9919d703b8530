//! Edge Gateway: carries sensor events from devices to the cloud, and never loses one on the way.
//!
//! The gateway is a pipeline of stages, each a module:
//! sources ([`sources`]) → decode and validate ([`decode`]) → journal ([`journal`]) → sinks
//! ([`sinks`]), plus the admin surface ([`admin`]). [`config`] turns TOML into a validated
//! configuration that cannot be invalid, and [`app`] wires the stages together.

pub mod admin;
pub mod app;
pub mod backoff;
pub mod cloud_broker;
pub mod config;
pub mod decode;
pub mod demo;
pub mod journal;
pub mod rules;
pub mod sinks;
pub mod sources;
pub mod systemd;
