//! Gateway API objects built programmatically: serde_json values fed through
//! the file provider's `object_from_value`, as any provider would.

use std::net::SocketAddr;

use kengine_gateway::cli::DEFAULT_CONTROLLER_NAME;
use kengine_gateway::providers::files::object_from_value;
use kengine_gateway::snapshot::{Object, Snapshot};
use serde_json::{Value, json};

pub const GATEWAY_NS: &str = "infra";
pub const GATEWAY: &str = "gw";
/// Services per application namespace in the translate shape.
pub const SERVICES_PER_NS: usize = 10;
pub const ROUTES_PER_NS: usize = 100;

pub fn object(value: Value) -> Object {
    object_from_value(value)
        .expect("benchmark object is valid")
        .expect("benchmark object is of a kind we read")
}

pub fn class() -> Object {
    object(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": "kengine"},
        "spec": {"controllerName": DEFAULT_CONTROLLER_NAME},
    }))
}

/// One Gateway with one HTTP listener accepting routes from every namespace;
/// bound to `address` when given (a loopback IP for the live scenarios).
pub fn gateway(port: u16, address: Option<&str>) -> Object {
    let mut spec = json!({
        "gatewayClassName": "kengine",
        "listeners": [{
            "name": "http",
            "protocol": "HTTP",
            "port": port,
            "allowedRoutes": {"namespaces": {"from": "All"}},
        }],
    });
    if let Some(ip) = address {
        spec["addresses"] = json!([{"type": "IPAddress", "value": ip}]);
    }
    object(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": GATEWAY, "namespace": GATEWAY_NS},
        "spec": spec,
    }))
}

/// A ClusterIP Service dialed at `addr`.
pub fn service(namespace: &str, name: &str, addr: SocketAddr) -> Object {
    object(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": addr.ip().to_string(), "ports": [{"port": addr.port()}]},
    }))
}

pub fn route(namespace: &str, name: &str, hostnames: &[String], rules: Value) -> Object {
    object(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": GATEWAY, "namespace": GATEWAY_NS}],
            "hostnames": hostnames,
            "rules": rules,
        },
    }))
}

pub fn namespace_of(i: usize) -> String {
    format!("ns{:03}", i / ROUTES_PER_NS)
}

/// The hostname of route `i` in the translate/propagation shape.
pub fn host_of(i: usize) -> String {
    format!("r{i:05}.{}.example.com", namespace_of(i))
}

pub fn route_name(i: usize) -> String {
    format!("route-{i:05}")
}

/// Route `i` of the translate shape: its own hostname, two rules, each with
/// two weighted backendRefs to Services of its namespace:
/// `PathPrefix /app` → 80/20, and `Exact /health` + `GET` → 50/50. The
/// backendRefs name Service port `port`.
pub fn shaped_route(i: usize, port: u16) -> Object {
    let ns = namespace_of(i);
    let svc = |k: usize| format!("svc-{}", (i + k) % SERVICES_PER_NS);
    route(
        &ns,
        &route_name(i),
        &[host_of(i)],
        json!([
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/app"}}],
                "backendRefs": [
                    {"name": svc(0), "port": port, "weight": 80},
                    {"name": svc(1), "port": port, "weight": 20},
                ],
            },
            {
                "matches": [{"path": {"type": "Exact", "value": "/health"}, "method": "GET"}],
                "backendRefs": [
                    {"name": svc(2), "port": port, "weight": 1},
                    {"name": svc(3), "port": port, "weight": 1},
                ],
            },
        ]),
    )
}

/// Route `i` as a GRPCRoute of the same cost: a service split 80/20, and
/// one method matched with a header, with two backends.
pub fn shaped_grpc_route(i: usize, port: u16) -> Object {
    let ns = namespace_of(i);
    let svc = |k: usize| format!("svc-{}", (i + k) % SERVICES_PER_NS);
    object(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": route_name(i), "namespace": ns},
        "spec": {
            "parentRefs": [{"name": GATEWAY, "namespace": GATEWAY_NS}],
            "hostnames": [host_of(i)],
            "rules": [
                {
                    "matches": [{"method": {"service": "app.v1.Catalog"}}],
                    "backendRefs": [
                        {"name": svc(0), "port": port, "weight": 80},
                        {"name": svc(1), "port": port, "weight": 20},
                    ],
                },
                {
                    "matches": [{
                        "method": {"service": "grpc.health.v1.Health", "method": "Check"},
                        "headers": [{"name": "x-probe", "value": "1"}],
                    }],
                    "backendRefs": [
                        {"name": svc(2), "port": port, "weight": 1},
                        {"name": svc(3), "port": port, "weight": 1},
                    ],
                },
            ],
        },
    }))
}

/// The Services route `i`'s namespace needs. `dial(ns, k)` says where
/// Service `k` of namespace `ns` points.
pub fn shaped_services(ns: &str, dial: impl Fn(usize) -> SocketAddr) -> Vec<Object> {
    (0..SERVICES_PER_NS)
        .map(|k| service(ns, &format!("svc-{k}"), dial(k)))
        .collect()
}

/// The whole translate input: class, one Gateway, `routes` routes in
/// namespaces of [`ROUTES_PER_NS`], and their Services (fake ClusterIPs).
/// Objects are built and inserted one at a time, so no big intermediate
/// document tree inflates the peak memory we measure afterwards.
pub fn translate_snapshot(routes: usize) -> Snapshot {
    shaped_snapshot(routes, false)
}

/// [`translate_snapshot`]; with `mixed`, every other route a GRPCRoute.
pub fn shaped_snapshot(routes: usize, mixed: bool) -> Snapshot {
    let mut snapshot = Snapshot::default();
    snapshot.insert(class());
    snapshot.insert(gateway(8080, None));
    let namespaces = routes.div_ceil(ROUTES_PER_NS);
    for n in 0..namespaces {
        let ns = namespace_of(n * ROUTES_PER_NS);
        for s in shaped_services(&ns, |k| {
            SocketAddr::from(([10, (n / 250) as u8, (n % 250) as u8, k as u8 + 1], 8080))
        }) {
            snapshot.insert(s);
        }
    }
    for i in 0..routes {
        snapshot.insert(match mixed && i % 2 == 1 {
            true => shaped_grpc_route(i, 8080),
            false => shaped_route(i, 8080),
        });
    }
    snapshot
}
