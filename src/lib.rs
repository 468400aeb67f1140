//! kengine-gateway: the Kubernetes Gateway API on Kengine.
//!
//! Data flows one way: [`providers`] → [`snapshot`] → [`translate`] (pure) →
//! [`sinks`]. The commands in [`cli`] wire those stages together. The
//! snapshot, the CRD and the Kengine config model live in the
//! `kengine-gateway-model` crate and translate in `kengine-gateway-translate`,
//! so that translate cannot reach back into the providers or the sinks;
//! they are re-exported here under their old paths.

pub mod admin_proxy;
pub mod cli;
pub mod controller;
pub mod echo;
pub mod kengine;
pub mod operator;
pub mod providers;
pub mod render;
pub mod sinks;
pub mod standalone;

pub use kengine_gateway_model::{crd, snapshot};
pub use kengine_gateway_translate as translate;
