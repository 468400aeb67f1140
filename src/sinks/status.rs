//! Status as objects: merges computed status into the input objects, for
//! `render --output status` and `standalone --status-file`.

use gateway_api::apis::experimental::gateways::GatewayStatus;
use gateway_api::apis::experimental::grpcroutes::GrpcRouteStatus;
use gateway_api::apis::experimental::httproutes::{HttpRouteStatus, HttpRouteStatusParents};
use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicyStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
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

/// Marks every Gateway not programmed, e.g. when Kengine rejected the config.
pub fn mark_not_programmed(status: &mut Status, message: &str, now: &Time) {
    for gateway in status.gateways.values_mut() {
        not_programmed(gateway, "Invalid", message, None, now);
    }
}

/// Overrides a Gateway's `Programmed` condition with what really happened
/// to its config (`reason` as the spec names them: Invalid, Pending...).
/// `previous` is the status the object has now, so a condition that was
/// already False keeps its `lastTransitionTime`.
pub fn not_programmed(
    gateway: &mut GatewayStatus,
    reason: &str,
    message: &str,
    previous: Option<&GatewayStatus>,
    now: &Time,
) {
    let since = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "Programmed" && c.status == "False")
        })
        .map(|c| c.last_transition_time.clone());
    for c in gateway
        .conditions
        .iter_mut()
        .flatten()
        .filter(|c| c.type_ == "Programmed")
    {
        if c.status == "True" {
            c.last_transition_time = since.clone().unwrap_or_else(|| now.clone());
        }
        c.status = "False".into();
        c.reason = reason.into();
        c.message = message.to_string();
    }
}

/// What can be said of a Gateway before its fleet's push: the computed
/// status, with the `Programmed` condition (and the addresses, when
/// translate leaves them to the push) it has live, since the config that
/// made it so still serves. `None` when it has no live `Programmed` yet.
pub fn before_push(
    computed: &GatewayStatus,
    live: Option<&GatewayStatus>,
) -> Option<GatewayStatus> {
    let live = live?;
    let programmed = live
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Programmed")?;
    let mut early = computed.clone();
    for c in early
        .conditions
        .iter_mut()
        .flatten()
        .filter(|c| c.type_ == "Programmed")
    {
        // Its observedGeneration too: the condition is about the config
        // pushed for that generation.
        *c = programmed.clone();
    }
    if early.addresses.is_none() {
        early.addresses.clone_from(&live.addresses);
    }
    Some(early)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gateway_status(programmed: &str, attached: i32, addresses: bool) -> GatewayStatus {
        let condition = |t: &str, s: &str, g: i64| {
            json!({"type": t, "status": s, "reason": "R", "message": "", "observedGeneration": g,
                "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        serde_json::from_value(json!({
            "conditions": [condition("Accepted", "True", 2), condition("Programmed", programmed, 1)],
            "listeners": [{"name": "http", "attachedRoutes": attached, "supportedKinds": [], "conditions": []}],
            "addresses": if addresses { json!([{"type": "IPAddress", "value": "10.0.0.9"}]) } else { json!(null) },
        }))
        .unwrap()
    }

    #[test]
    fn before_a_push_gateways_keep_their_live_programmed_condition() {
        let live = gateway_status("False", 3, true);
        let computed = gateway_status("True", 1000, false);
        let early = before_push(&computed, Some(&live)).unwrap();
        let programmed = |s: &GatewayStatus| s.conditions.as_ref().unwrap()[1].status.clone();
        assert_eq!(programmed(&early), "False", "as live until the push says");
        assert_eq!(early.listeners.as_ref().unwrap()[0].attached_routes, 1000);
        assert_eq!(early.addresses, live.addresses);
        assert_eq!(
            early.conditions.as_ref().unwrap()[0],
            computed.conditions.as_ref().unwrap()[0]
        );
        assert!(
            before_push(&computed, None).is_none(),
            "a new Gateway waits for its push"
        );
    }
}
