//! `upstreamMode: Endpoints`: a fleet's proxies dial each Service's ready
//! endpoints instead of its ClusterIP. Done on the finished config, so the
//! route compilation stays shared by every fleet: every upstream that is a
//! ClusterIP Service's `clusterIP:port` becomes that port's ready endpoints,
//! each backend's weight split evenly over its endpoints (as for headless
//! Services). A proxy left without endpoints answers 503.

use foldhash::HashMap;

use super::backends::{self, Backend};
use crate::kengine::config::{
    Config, Handler, LoadBalancing, ReverseProxy, Route, SelectionPolicy, Upstream,
};
use crate::snapshot::{ObjectRef, Snapshot};

/// `clusterIP:port` → the ready endpoints behind it.
fn endpoints_by_cluster_ip(snapshot: &Snapshot) -> HashMap<String, Vec<String>> {
    let mut map = HashMap::default();
    for (key, service) in &snapshot.services {
        let Some(spec) = &service.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        for port in spec.ports.iter().flatten() {
            let dials = backends::ready_endpoints(snapshot, key, port.name.as_deref());
            map.insert(backends::join(ip, port.port), dials);
        }
    }
    map
}

/// Rewrites every proxy of `config` to dial endpoints.
pub fn to_endpoints(config: &mut Config, snapshot: &Snapshot) {
    let endpoints = endpoints_by_cluster_ip(snapshot);
    let Some(http) = config.apps.http.as_mut() else {
        return;
    };
    for server in http.servers.values_mut() {
        for route in server
            .routes
            .iter_mut()
            .chain(server.named_routes.values_mut())
        {
            rewrite_route(route, &endpoints);
        }
    }
}

fn rewrite_route(route: &mut Route, endpoints: &HashMap<String, Vec<String>>) {
    // New dial addresses are not checked yet: the whole-config check walks
    // this route again.
    route.provenance.set_checked(false);
    for handler in &mut route.handle {
        match handler {
            Handler::Subroute { routes } => {
                for r in routes {
                    rewrite_route(r, endpoints);
                }
            }
            Handler::ReverseProxy(proxy) => {
                for response in &mut proxy.handle_response {
                    for r in &mut response.routes {
                        rewrite_route(r, endpoints);
                    }
                }
                if !rewrite_proxy(proxy, endpoints) {
                    *handler = Handler::status(503);
                }
            }
            _ => {}
        }
    }
}

/// False when no endpoint is left to dial.
fn rewrite_proxy(proxy: &mut ReverseProxy, endpoints: &HashMap<String, Vec<String>>) -> bool {
    let weights: Vec<u32> = match proxy
        .load_balancing
        .as_ref()
        .and_then(|lb| lb.selection_policy.as_ref())
    {
        Some(SelectionPolicy::WeightedRoundRobin { weights }) => weights.clone(),
        None => vec![1; proxy.upstreams.len()],
    };
    let expanded: Vec<Backend> = proxy
        .upstreams
        .iter()
        .zip(weights.iter().chain(std::iter::repeat(&1)))
        .map(|(u, &weight)| Backend {
            weight,
            dials: endpoints
                .get(&u.dial)
                .cloned()
                .unwrap_or_else(|| vec![u.dial.clone()]),
            h2c: false,
            tls: None,
        })
        .collect();
    let pairs = backends::upstream_weights(&expanded);
    if pairs.is_empty() {
        return false;
    }
    let weighted = pairs.iter().any(|(_, w)| *w != pairs[0].1);
    proxy.upstreams = pairs
        .iter()
        .map(|(dial, _)| Upstream { dial: dial.clone() })
        .collect();
    let retries = proxy.load_balancing.as_ref().and_then(|lb| lb.retries);
    proxy.load_balancing = if weighted {
        Some(LoadBalancing {
            selection_policy: Some(SelectionPolicy::WeightedRoundRobin {
                weights: pairs.iter().map(|(_, w)| *w).collect(),
            }),
            retries,
        })
    } else {
        retries.map(|retries| LoadBalancing {
            selection_policy: None,
            retries: Some(retries),
        })
    };
    true
}

/// The fleet's instance asks for endpoints.
pub fn wanted(snapshot: &Snapshot, fleet: &ObjectRef) -> bool {
    snapshot
        .kengine_instances
        .get(fleet)
        .is_some_and(|i| i.spec.upstream_mode == crate::crd::UpstreamMode::Endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Object;
    use serde_json::json;

    fn snapshot() -> Snapshot {
        let docs = [
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "n"},
                "spec": {"clusterIP": "10.0.0.1", "ports": [{"name": "http", "port": 80}]}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b", "namespace": "n"},
                "spec": {"clusterIP": "10.0.0.2", "ports": [{"name": "http", "port": 80}]}}),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "a-1", "namespace": "n", "labels": {"kubernetes.io/service-name": "a"}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
                "endpoints": [
                    {"addresses": ["10.1.0.1"], "conditions": {"ready": true}},
                    {"addresses": ["10.1.0.2"], "conditions": {"ready": true}},
                    {"addresses": ["10.1.0.3"], "conditions": {"ready": false}}]}),
        ];
        let objects: Vec<Object> = docs
            .into_iter()
            .filter_map(|d| kengine_gateway_model::manifests::object_from_value(d).unwrap())
            .collect();
        Snapshot::from_objects(objects)
    }

    fn proxy(dials: &[&str], weights: Option<Vec<u32>>) -> ReverseProxy {
        ReverseProxy {
            upstreams: dials
                .iter()
                .map(|d| Upstream {
                    dial: d.to_string(),
                })
                .collect(),
            load_balancing: weights.map(|weights| LoadBalancing {
                selection_policy: Some(SelectionPolicy::WeightedRoundRobin { weights }),
                retries: None,
            }),
            ..Default::default()
        }
    }

    fn dials(p: &ReverseProxy) -> Vec<&str> {
        p.upstreams.iter().map(|u| u.dial.as_str()).collect()
    }

    #[test]
    fn cluster_ips_become_ready_endpoints_with_weights_split() {
        let endpoints = endpoints_by_cluster_ip(&snapshot());
        // a (2 ready endpoints) 3 : external 1 → each endpoint 3, external 2.
        let mut p = proxy(&["10.0.0.1:80", "example.org:80"], Some(vec![3, 1]));
        assert!(rewrite_proxy(&mut p, &endpoints));
        assert_eq!(
            dials(&p),
            ["10.1.0.1:8080", "10.1.0.2:8080", "example.org:80"]
        );
        assert_eq!(
            p.load_balancing.unwrap().selection_policy,
            Some(SelectionPolicy::WeightedRoundRobin {
                weights: vec![3, 3, 2]
            })
        );
        let mut single = proxy(&["10.0.0.1:80"], None);
        assert!(rewrite_proxy(&mut single, &endpoints));
        assert_eq!(dials(&single), ["10.1.0.1:8080", "10.1.0.2:8080"]);
        assert!(
            single.load_balancing.is_none(),
            "equal weights: default policy"
        );
    }

    #[test]
    fn a_proxy_without_endpoints_answers_503() {
        let s = snapshot();
        let mut route = Route::handle(vec![Handler::ReverseProxy(Box::new(proxy(
            &["10.0.0.2:80"],
            None,
        )))]);
        rewrite_route(&mut route, &endpoints_by_cluster_ip(&s));
        assert_eq!(route.handle, vec![Handler::status(503)]);
    }
}
