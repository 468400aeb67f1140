//! Providers turn the outside world into objects for a [`crate::snapshot::Snapshot`].

pub mod addresses;
pub mod files;
pub mod kubernetes;
