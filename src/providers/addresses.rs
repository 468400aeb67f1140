//! Which static Gateway addresses this host can bind: asked of the kernel
//! by binding each one briefly.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};

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

/// The listen address in Kengine's refusal of a config because another
/// process holds it (`listen tcp 127.0.0.1:80: bind: address already in
/// use`). Probing cannot tell: our own Kengine holds the ports it serves,
/// with SO_REUSEPORT. `:80` (every interface) is returned as `0.0.0.0:80`.
pub fn in_use(kengine_error: &str) -> Option<SocketAddr> {
    let before = &kengine_error[..kengine_error.find(": bind: address already in use")?];
    let addr = &before[before.rfind("listen tcp")? + "listen tcp".len()..];
    let addr = addr.trim_start_matches(['4', '6']).trim();
    match addr.strip_prefix(':') {
        Some(port) => Some(SocketAddr::new([0, 0, 0, 0].into(), port.parse().ok()?)),
        None => addr.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_taken_address_from_kengines_refusal() {
        let body = "loading config: loading new config: http app module: start: listening on \
                    127.0.0.1:8081: listen tcp 127.0.0.1:8081: bind: address already in use";
        assert_eq!(in_use(body), Some("127.0.0.1:8081".parse().unwrap()));
        assert_eq!(
            in_use("listening on :80: listen tcp :80: bind: address already in use"),
            Some("0.0.0.0:80".parse().unwrap())
        );
        assert_eq!(
            in_use("listen tcp6 [::1]:443: bind: address already in use"),
            Some("[::1]:443".parse().unwrap())
        );
        assert_eq!(
            in_use("listen tcp 127.0.0.1:80: bind: permission denied"),
            None
        );
    }

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
