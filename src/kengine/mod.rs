//! Everything that speaks Kengine: its config model, its admin API and its process.

pub mod admin;
pub mod check;
pub mod config;
mod flavor;
pub mod placeholders;
pub mod process;
pub mod re2;

pub use admin::{AdminAddr, AdminClient, AdminError, PushFailure};
pub use flavor::Flavor;
