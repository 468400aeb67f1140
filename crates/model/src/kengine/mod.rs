//! Kengine's JSON config as types, and the checks Kengine would make of it.

pub mod check;
pub mod config;
mod flavor;
pub mod placeholders;
pub mod re2;

pub use flavor::Flavor;
