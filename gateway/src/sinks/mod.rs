//! Sinks: where journaled events go. Each sink reads the journal in order and acks rows only
//! once its destination has confirmed them.

pub mod mqtt;
