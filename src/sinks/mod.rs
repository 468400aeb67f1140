//! Sinks act on translate's output: push configs, publish status.

pub mod pusher;
pub mod status;
