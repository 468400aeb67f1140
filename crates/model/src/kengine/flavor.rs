//! Kengine is Caddy renamed. Its `caddy.*` module namespaces became
//! `kengine.*`, but JSON configs name modules by their short names
//! (`"output": "stderr"`, `"wrapper": "tls"`), so every config we emit today
//! is the same for both builds. What differs is the process environment.
//! The switch stays so that a namespaced ID, if we ever emit one, has one
//! place to live.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Flavor {
    #[default]
    Kengine,
    Caddy,
}

impl Flavor {
    /// Environment variable the binary reads its default admin address from.
    pub fn admin_env(self) -> &'static str {
        match self {
            Flavor::Kengine => "KENGINE_ADMIN",
            Flavor::Caddy => "CADDY_ADMIN",
        }
    }

    /// The binary's name in its container image.
    pub fn binary(self) -> &'static str {
        match self {
            Flavor::Kengine => "kengine",
            Flavor::Caddy => "caddy",
        }
    }

    /// Guess the flavor from a binary's file name.
    pub fn from_binary_name(path: &std::path::Path) -> Self {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("caddy") {
            Flavor::Caddy
        } else {
            Flavor::Kengine
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_follows_flavor() {
        assert_eq!(Flavor::Kengine.admin_env(), "KENGINE_ADMIN");
        assert_eq!(Flavor::Caddy.admin_env(), "CADDY_ADMIN");
        assert_eq!(Flavor::from_binary_name("/x/caddy".as_ref()), Flavor::Caddy);
        assert_eq!(
            Flavor::from_binary_name("kengine".as_ref()),
            Flavor::Kengine
        );
    }
}
