//! Sinks act on translate's output: push configs, publish status.

pub mod fleet;
pub mod fleet_lanes;
pub mod message;
pub mod pusher;
pub mod status;
pub mod status_writer;
