//! kengine-gateway: the Kubernetes Gateway API on Kengine.
//!
//! Data flows one way: [`providers`] → [`snapshot`] → [`translate`] (pure) →
//! [`sinks`]. The commands in [`cli`] wire those stages together.

pub mod admin_proxy;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod echo;
pub mod kengine;
pub mod operator;
pub mod providers;
pub mod render;
pub mod sinks;
pub mod snapshot;
pub mod standalone;
pub mod translate;
