//! Device simulator: virtual devices that publish events the way real firmware does.
