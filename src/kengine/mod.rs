//! Everything that speaks Kengine: its config model (from the model crate),
//! its admin API and its process.

pub mod admin;
pub mod files;
pub mod process;

pub use admin::{AdminAddr, AdminClient, AdminError, PushFailure};
pub use kengine_gateway_model::kengine::{Flavor, check, config, placeholders, re2};
