//! The data every stage of kengine-gateway shares: the [`snapshot`] of
//! Kubernetes objects the providers fill, the [`manifests`] parser that
//! turns YAML into those objects, our [`crd`] types, and the [`kengine`]
//! config model that translate emits and the sinks push. No I/O, no
//! runtime, no Kubernetes client.

pub mod crd;
pub mod kengine;
pub mod manifests;
pub mod names;
pub mod snapshot;

/// The GatewayClass `controllerName` we answer to unless told otherwise.
pub const DEFAULT_CONTROLLER_NAME: &str = "kengine.khulnasoft.com/gateway-controller";

/// The first 8 bytes of a SHA-256, in hex: short, stable names and digests.
pub fn short_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}
