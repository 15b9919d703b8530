//! The AWS EventBridge destination: `PutEvents` in batches of at most ten entries and 256 KB,
//! one call at a time; each entry's own result decides (the call's `FailedEntryCount` alone is
//! never trusted). An entry that failed for now is sent again first, with every later entry of
//! its device in that call, so that the last copy of each keeps the device's order.

mod batch;
mod destination;

pub use destination::{EventBridgeConnection, EventBridgeDestination};
