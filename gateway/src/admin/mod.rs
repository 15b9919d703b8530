//! The admin surface: `/healthz`, `/readyz` and `/metrics` (Prometheus text format) over HTTP,
//! and the metrics registry every stage writes to.

mod metrics;
mod server;

pub use metrics::{DeviceConnection, Histogram, Metrics, SerialPortStats, Source, UplinkStats};
pub use server::serve;
