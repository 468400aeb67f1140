//! Which static Gateway addresses this host can bind: asked of the kernel
//! by binding each one briefly.

use std::collections::BTreeSet;
use std::net::{IpAddr, TcpListener};

use crate::snapshot::Snapshot;

/// The `IPAddress` values in every Gateway's `spec.addresses` that this host
/// can listen on.
pub fn usable(snapshot: &Snapshot) -> BTreeSet<IpAddr> {
    snapshot
        .gateways
        .values()
        .flat_map(|g| g.spec.addresses.iter().flatten())
        .filter_map(|a| a.value.as_deref()?.parse::<IpAddr>().ok())
        // 0.0.0.0 binds, yet no client can connect to it.
        .filter(crate::translate::unicast_address)
        .filter(|ip| TcpListener::bind((*ip, 0)).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_usable_and_documentation_addresses_are_not() {
        let snapshot = Snapshot::from_objects([crate::snapshot::Object::Gateway(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "g", "namespace": "default"},
                "spec": {"gatewayClassName": "c", "listeners": [],
                         "addresses": [{"value": "127.0.3.9"}, {"value": "192.0.2.1"}, {"type": "Hostname", "value": "x"},
                                {"value": "0.0.0.0"}, {"value": "::"}, {"value": "255.255.255.255"}, {"value": "224.0.0.1"}]}
            }))
            .unwrap(),
        )]);
        let usable = usable(&snapshot);
        assert!(usable.contains(&"127.0.3.9".parse::<IpAddr>().unwrap()));
        assert!(!usable.contains(&"192.0.2.1".parse::<IpAddr>().unwrap()));
        assert_eq!(
            usable.len(),
            1,
            "no unspecified, broadcast or multicast: {usable:?}"
        );
    }
}
