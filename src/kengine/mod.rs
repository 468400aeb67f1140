//! Everything that speaks Kengine: its config model, its admin API and its process.

pub mod admin;
pub mod config;
mod flavor;
pub mod process;

pub use admin::{AdminAddr, AdminClient, AdminError, PushFailure};
pub use flavor::Flavor;
