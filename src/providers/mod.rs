//! Providers turn the outside world into objects for a [`crate::snapshot::Snapshot`].

pub mod addresses;
pub mod base64_data;
pub mod files;
pub mod kubernetes;
pub mod yaml_depth;
