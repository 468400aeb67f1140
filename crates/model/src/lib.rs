//! The data every stage of kengine-gateway shares: the [`snapshot`] of
//! Kubernetes objects the providers fill, the [`manifests`] parser that
//! turns YAML into those objects, our [`crd`] types, and the [`kengine`]
//! config model that translate emits and the sinks push. No I/O, no
//! runtime, no Kubernetes client.

/// An enum whose variants are written in status under their own names
/// (condition types and reasons): `as_str`, `Display`, and comparison with
/// the strings of a written condition.
#[macro_export]
macro_rules! named {
    ($(#[$doc:meta])* $vis:vis $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis enum $name { $($variant),+ }

        impl $name {
            /// The name written in status.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.as_str() == other
            }
        }
    };
}

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
