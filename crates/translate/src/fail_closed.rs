//! Security features we read but do not implement yet fail closed, and say
//! so in status: a backend that must be dialed over TLS is never dialed in
//! plaintext (its share of requests gets 500), and a backend client
//! certificate is never presented.

use std::collections::{BTreeMap, BTreeSet};

use gateway_api::apis::experimental::gateways::Gateway;
use gateway_api::apis::experimental::httproutes::HttpRoute;
use gateway_api::apis::standard::backendtlspolicies::{
    BackendTlsPolicyStatusAncestors, BackendTlsPolicyStatusAncestorsAncestorRef,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{Cond, Reason, Type, stamp};
use super::gateways::GROUP;
use crate::snapshot::{ObjectRef, Snapshot};

/// The spec's limit on a policy's `status.ancestors`.
const MAX_ANCESTORS: usize = 16;

/// A Gateway's `spec.tls.backend.clientCertificateRef` is never presented:
/// no backend is dialed over TLS (see [`backend_tls_policy`]). Reported as
/// the spec's Gateway condition for a client certificate that cannot be used.
pub fn backend_client_certificate(gateway: &Gateway) -> Option<Cond> {
    let r = gateway
        .spec
        .tls
        .as_ref()?
        .backend
        .as_ref()?
        .client_certificate_ref
        .as_ref()?;
    Some(Cond::new(
        Type::ResolvedRefs,
        false,
        Reason::InvalidClientCertificateRef,
        format!(
            "clientCertificateRef to {} is not supported yet: no backend is dialed over TLS (backends a BackendTLSPolicy targets answer 500)",
            r.name
        ),
    ))
}

/// The BackendTLSPolicy that asks for TLS to this Service port, if any: a
/// targetRef to the Service, without a sectionName or naming the port.
pub fn backend_tls_policy<'s>(
    snapshot: &'s Snapshot,
    key: &ObjectRef,
    service: &Service,
    port: i32,
) -> Option<&'s ObjectRef> {
    let port_name = service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find(|p| p.port == port)
        .and_then(|p| p.name.as_deref());
    snapshot
        .backend_tls_policies
        .iter()
        .filter(|(policy, _)| policy.namespace == key.namespace)
        .find(|(_, p)| {
            p.spec.target_refs.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == "Service"
                    && t.name == key.name
                    && t.section_name
                        .as_deref()
                        .is_none_or(|s| Some(s) == port_name)
            })
        })
        .map(|(policy, _)| policy)
}

/// Our `status.ancestors` entries of each BackendTLSPolicy a backendRef of
/// a route of ours runs into: one per Gateway of ours the route names,
/// `Accepted=False`, since the policy is not applied.
pub fn policy_status(
    snapshot: &Snapshot,
    uses: &BTreeMap<ObjectRef, BTreeSet<ObjectRef>>,
    controller_name: &str,
    now: &Time,
) -> BTreeMap<ObjectRef, Vec<BackendTlsPolicyStatusAncestors>> {
    uses.iter()
        .filter_map(|(policy, gateways)| {
            let object = snapshot.backend_tls_policies.get(policy)?;
            let previous = object.status.as_ref().map(|s| &s.ancestors[..]);
            let entries = gateways
                .iter()
                .take(MAX_ANCESTORS)
                .map(|gateway| {
                    let ancestor_ref = BackendTlsPolicyStatusAncestorsAncestorRef {
                        group: Some(GROUP.into()),
                        kind: Some("Gateway".into()),
                        name: gateway.name.clone(),
                        namespace: Some(gateway.namespace.clone()),
                        port: None,
                        section_name: None,
                    };
                    let before = previous.and_then(|p| {
                        p.iter()
                            .find(|e| {
                                e.controller_name == controller_name
                                    && e.ancestor_ref == ancestor_ref
                            })
                            .map(|e| &e.conditions[..])
                    });
                    let conds = vec![Cond::new(
                        Type::Accepted,
                        false,
                        Reason::Invalid,
                        "BackendTLSPolicy is not supported yet: requests to its targets are answered 500, never sent in plaintext",
                    )];
                    BackendTlsPolicyStatusAncestors {
                        ancestor_ref,
                        conditions: stamp(conds, object.metadata.generation, before, now),
                        controller_name: controller_name.to_string(),
                    }
                })
                .collect();
            Some((policy.clone(), entries))
        })
        .collect()
}

/// Records, for each BackendTLSPolicy a backendRef of `route` runs into,
/// the Gateways of ours the route names.
pub fn http_route_uses(
    snapshot: &Snapshot,
    key: &ObjectRef,
    route: &HttpRoute,
    gateways: &[ObjectRef],
    uses: &mut BTreeMap<ObjectRef, BTreeSet<ObjectRef>>,
) {
    let refs = route
        .spec
        .rules
        .iter()
        .flatten()
        .flat_map(|r| r.backend_refs.iter().flatten());
    for r in refs {
        if !r.group.as_deref().unwrap_or("").is_empty()
            || r.kind.as_deref().unwrap_or("Service") != "Service"
        {
            continue;
        }
        let service_key = ObjectRef::new(r.namespace.as_deref().unwrap_or(&key.namespace), &r.name);
        let (Some(service), Some(port)) = (snapshot.services.get(&service_key), r.port) else {
            continue;
        };
        if let Some(policy) = backend_tls_policy(snapshot, &service_key, service, port) {
            uses.entry(policy.clone())
                .or_default()
                .extend(gateways.iter().cloned());
        }
    }
}
