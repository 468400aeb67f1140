//! The config a straightforward translator would emit for the translate
//! shape (`objects::shaped_route`): one `host` route per HTTPRoute, a
//! subroute of `path` matchers, one `reverse_proxy` per rule (no sharing),
//! automatic HTTPS off. It is not correct (Kengine's `path` matcher ignores
//! case, and nothing answers 404 for a known host's unknown path), but its
//! load time is what the routes themselves cost Kengine: the yardstick of
//! the `reload` scenario.

use serde_json::{Value, json};

use crate::objects::{ROUTES_PER_NS, SERVICES_PER_NS, host_of};

/// Where Service `k` of route `i`'s namespace points in
/// `objects::shaped_snapshot`.
fn dial(i: usize, k: usize) -> String {
    let n = i / ROUTES_PER_NS;
    let svc = (i + k) % SERVICES_PER_NS;
    format!("10.{}.{}.{}:8080", n / 250, n % 250, svc + 1)
}

fn proxy(i: usize, a: usize, b: usize, weights: [u32; 2]) -> Value {
    json!({
        "handler": "reverse_proxy",
        "upstreams": [{"dial": dial(i, a)}, {"dial": dial(i, b)}],
        "load_balancing": {"selection_policy":
            {"policy": "weighted_round_robin", "weights": weights}},
    })
}

/// The naive config of `routes` shaped routes on port 8080.
pub fn config(routes: usize) -> Value {
    let routes: Vec<Value> = (0..routes)
        .map(|i| {
            json!({
                "match": [{"host": [host_of(i)]}],
                "handle": [{"handler": "subroute", "routes": [
                    {"match": [{"path": ["/app", "/app/*"]}], "handle": [proxy(i, 0, 1, [4, 1])]},
                    {"match": [{"path": ["/health"], "method": ["GET"]}], "handle": [proxy(i, 2, 3, [1, 1])]},
                ]}],
                "terminal": true,
            })
        })
        .collect();
    json!({"apps": {"http": {"servers": {"port-8080": {
        "listen": [":8080"],
        "routes": routes,
        "automatic_https": {"disable": true},
    }}}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naive config dials the addresses the shaped snapshot gives its
    /// Services, so both configs proxy to the same places.
    #[test]
    fn dials_match_the_shaped_services() {
        let snapshot = crate::objects::translate_snapshot(250);
        let svc = |ns: &str, name: &str| {
            let key = kengine_gateway::snapshot::ObjectRef::new(ns, name);
            snapshot.services[&key]
                .spec
                .as_ref()
                .unwrap()
                .cluster_ip
                .clone()
                .unwrap()
        };
        // Route 201 is in ns002; its first backendRef is svc-1 (201 % 10).
        assert_eq!(dial(201, 0), format!("{}:8080", svc("ns002", "svc-1")));
        let config = config(250);
        let routes = config["apps"]["http"]["servers"]["port-8080"]["routes"]
            .as_array()
            .unwrap();
        assert_eq!(routes.len(), 250);
        assert_eq!(routes[201]["match"][0]["host"][0], host_of(201));
    }
}
