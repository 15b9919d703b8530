//! Sources: where events enter the gateway. Each source decodes and validates its input with
//! [`crate::decode`], journals what is good and dead-letters what is not.

pub mod grant;
pub(crate) mod ingest;
pub mod mqtt;
pub mod serial;

pub use grant::Grant;
pub use ingest::{Ingest, now_ms};
