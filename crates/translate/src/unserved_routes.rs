//! Route kinds we read but do not serve yet (GRPCRoute): every parentRef to
//! a Gateway of ours gets an entry saying so, so that the route's author is
//! not left without an answer.

use std::collections::{BTreeMap, BTreeSet};

use gateway_api::apis::experimental::grpcroutes::{
    GrpcRouteStatusParents, GrpcRouteStatusParentsParentRef,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{Cond, Reason, Type, stamp};
use super::gateways::{self, GROUP, HTTP_ROUTE};
use crate::snapshot::{ObjectRef, Snapshot};

/// Our `status.parents` entries of each GRPCRoute that names a Gateway of
/// ours: `Accepted=False` with `NotAllowedByListeners`, since no listener
/// of ours supports the kind (their `supportedKinds` list HTTPRoute only).
pub fn grpc_routes(
    snapshot: &Snapshot,
    ours: &BTreeSet<ObjectRef>,
    controller_name: &str,
    now: &Time,
) -> BTreeMap<ObjectRef, Vec<GrpcRouteStatusParents>> {
    let mut out = BTreeMap::new();
    for (key, route) in &snapshot.grpc_routes {
        let previous = route.status.as_ref().map(|s| &s.parents[..]);
        let entries: Vec<GrpcRouteStatusParents> = route
            .spec
            .parent_refs
            .iter()
            .flatten()
            .filter(|p| gateways::names_a_gateway(p.group.as_deref(), p.kind.as_deref()))
            .filter_map(|p| {
                let namespace = p.namespace.as_deref().unwrap_or(&key.namespace);
                let gateway = ObjectRef::new(namespace, &p.name);
                if !ours.contains(&gateway) {
                    return None;
                }
                let parent_ref = GrpcRouteStatusParentsParentRef {
                    group: Some(GROUP.into()),
                    kind: Some("Gateway".into()),
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    port: p.port,
                    section_name: p.section_name.clone(),
                };
                let conds = vec![Cond::new(
                    Type::Accepted,
                    false,
                    Reason::NotAllowedByListeners,
                    format!(
                        "GRPCRoute is not supported yet: no listener of Gateway {gateway} supports it (supportedKinds: {HTTP_ROUTE})"
                    ),
                )];
                let before = previous.and_then(|prev| {
                    prev.iter()
                        .find(|e| e.controller_name == controller_name && e.parent_ref == parent_ref)
                        .map(|e| &e.conditions[..])
                });
                Some(GrpcRouteStatusParents {
                    conditions: stamp(conds, route.metadata.generation, before, now),
                    controller_name: controller_name.to_string(),
                    parent_ref,
                })
            })
            .collect();
        if !entries.is_empty() {
            out.insert(key.clone(), entries);
        }
    }
    out
}
