//! Our `status.parents` entries of a route, stamped against the previous
//! ones. HTTPRoute and GRPCRoute entries have the same fields in two
//! generated types; [`Parents`] lets one rule serve both.

use gateway_api::apis::experimental::grpcroutes::{
    GrpcRouteStatusParents, GrpcRouteStatusParentsParentRef,
};
use gateway_api::apis::experimental::httproutes::{
    HttpRouteStatusParents, HttpRouteStatusParentsParentRef,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::conditions::{Cond, stamp};

/// One route kind's `status.parents` entry.
pub trait Parents: Sized {
    type Ref: PartialEq;
    fn parent_ref(from: HttpRouteStatusParentsParentRef) -> Self::Ref;
    fn new(controller_name: String, parent_ref: Self::Ref, conditions: Vec<Condition>) -> Self;
    fn key(&self) -> (&str, &Self::Ref);
    fn conditions(&self) -> &[Condition];
}

/// The entries of one route: each parentRef's conditions stamped against
/// our previous entry for the same parentRef (other controllers' entries
/// are not ours to read).
pub fn stamped<P: Parents>(
    parents: Vec<(HttpRouteStatusParentsParentRef, Vec<Cond>)>,
    previous: Option<&[P]>,
    generation: Option<i64>,
    controller_name: &str,
    now: &Time,
) -> Vec<P> {
    (parents.into_iter())
        .map(|(parent_ref, conds)| {
            let parent_ref = P::parent_ref(parent_ref);
            let before = (previous.into_iter().flatten())
                .find(|e| e.key() == (controller_name, &parent_ref))
                .map(P::conditions);
            let conditions = stamp(conds, generation, before, now);
            P::new(controller_name.to_string(), parent_ref, conditions)
        })
        .collect()
}

impl Parents for HttpRouteStatusParents {
    type Ref = HttpRouteStatusParentsParentRef;

    fn parent_ref(from: HttpRouteStatusParentsParentRef) -> Self::Ref {
        from
    }

    fn new(controller_name: String, parent_ref: Self::Ref, conditions: Vec<Condition>) -> Self {
        HttpRouteStatusParents {
            conditions,
            controller_name,
            parent_ref,
        }
    }

    fn key(&self) -> (&str, &Self::Ref) {
        (&self.controller_name, &self.parent_ref)
    }

    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl Parents for GrpcRouteStatusParents {
    type Ref = GrpcRouteStatusParentsParentRef;

    fn parent_ref(p: HttpRouteStatusParentsParentRef) -> Self::Ref {
        GrpcRouteStatusParentsParentRef {
            group: p.group,
            kind: p.kind,
            name: p.name,
            namespace: p.namespace,
            port: p.port,
            section_name: p.section_name,
        }
    }

    fn new(controller_name: String, parent_ref: Self::Ref, conditions: Vec<Condition>) -> Self {
        GrpcRouteStatusParents {
            conditions,
            controller_name,
            parent_ref,
        }
    }

    fn key(&self) -> (&str, &Self::Ref) {
        (&self.controller_name, &self.parent_ref)
    }

    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}
