//! Names several parts of kengine-gateway must agree on: the label that
//! marks what we generate (the operator sets it, the Kubernetes provider
//! watches by it) and our server-side-apply field manager.

/// The `app.kubernetes.io/managed-by` label of everything we generate.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY_VALUE: &str = "kengine-gateway";
/// Selects everything we generated.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=kengine-gateway";
/// Our server-side-apply field manager (status, and the operator's objects).
pub const FIELD_MANAGER: &str = "kengine-gateway";

/// Where a managed fleet's pods hold the files its config names (backend
/// client certificates): an in-memory emptyDir that the admin-proxy sidecar
/// writes, mounted read-only in the Kengine container.
pub const FLEET_FILES_DIR: &str = "/run/kengine-gateway/files";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_is_the_label() {
        assert_eq!(
            MANAGED_BY_SELECTOR,
            format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
        );
    }
}
