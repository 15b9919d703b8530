//! The AWS EventBridge destination: `PutEvents` in batches of at most ten entries and 256 KB;
//! each entry's own result decides (the call's `FailedEntryCount` alone is never trusted). A
//! batch holds at most one entry per device, so that an entry sent again after a failure is
//! never overtaken by a later one of its device.

mod batch;
mod destination;

pub use destination::{EventBridgeConnection, EventBridgeDestination};
