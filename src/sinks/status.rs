//! Status as objects: merges computed status into the input objects, for
//! `render --output status` and `standalone --status-file`.

use gateway_api::apis::experimental::grpcroutes::GrpcRouteStatus;
use gateway_api::apis::experimental::httproutes::{HttpRouteStatus, HttpRouteStatusParents};
use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicyStatus;
use serde::Serialize;

use crate::snapshot::Snapshot;
use crate::translate::Status;

/// Every Gateway API object of the snapshot with its status: ours where we
/// computed one, as it was otherwise. Route entries of other controllers stay.
pub fn objects(
    snapshot: &Snapshot,
    status: &Status,
    controller_name: &str,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (name, class) in &snapshot.gateway_classes {
        let mut class = class.clone();
        if let Some(s) = status.gateway_classes.get(name) {
            class.status = Some(s.clone());
        }
        out.push(json(&class));
    }
    for (key, gateway) in &snapshot.gateways {
        let mut gateway = gateway.clone();
        if let Some(s) = status.gateways.get(key) {
            gateway.status = Some(s.clone());
        }
        out.push(json(&gateway));
    }
    for (key, route) in &snapshot.http_routes {
        let mut route = route.clone();
        if let Some(ours) = status.http_routes.get(key) {
            let parents = merged_parents(route.status.as_ref(), ours, controller_name);
            route.status = Some(HttpRouteStatus { parents });
        }
        out.push(json(&route));
    }
    for (key, route) in &snapshot.grpc_routes {
        let mut route = route.clone();
        if let Some(ours) = status.grpc_routes.get(key) {
            let current = route.status.as_ref().map(|s| &s.parents[..]);
            let parents = merged_entries(current, ours, |p| p.controller_name == controller_name);
            route.status = Some(GrpcRouteStatus { parents });
        }
        out.push(json(&route));
    }
    out.extend(snapshot.reference_grants.values().map(json));
    for (key, policy) in &snapshot.backend_tls_policies {
        let mut policy = policy.clone();
        if let Some(ours) = status.backend_tls_policies.get(key) {
            let current = policy.status.as_ref().map(|s| &s.ancestors[..]);
            let ancestors = merged_entries(current, ours, |a| a.controller_name == controller_name);
            policy.status = Some(BackendTlsPolicyStatus { ancestors });
        }
        out.push(json(&policy));
    }
    out
}

/// A route's `status.parents` with our entries replaced by `ours` and every
/// other controller's entry kept as it is.
pub fn merged_parents(
    current: Option<&HttpRouteStatus>,
    ours: &[HttpRouteStatusParents],
    controller_name: &str,
) -> Vec<HttpRouteStatusParents> {
    merged_entries(current.map(|s| &s.parents[..]), ours, |p| {
        p.controller_name == controller_name
    })
}

/// A status list shared by controllers (route parents, policy ancestors)
/// with the entries `is_ours` picks replaced by `ours`.
pub fn merged_entries<T: Clone>(
    current: Option<&[T]>,
    ours: &[T],
    is_ours: impl Fn(&T) -> bool,
) -> Vec<T> {
    let others = current.into_iter().flatten().filter(|e| !is_ours(e));
    others.chain(ours).cloned().collect()
}

/// A YAML stream, one document per object.
pub fn yaml_stream(objects: &[serde_json::Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml_ng::to_string(o).expect("JSON values always serialize"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn json<T: Serialize>(object: &T) -> serde_json::Value {
    serde_json::to_value(object).expect("Kubernetes objects always serialize")
}
