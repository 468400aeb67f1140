//! ReferenceGrant: may an object in one namespace refer to one in another?

use crate::snapshot::Snapshot;

/// The referring side of a cross-namespace reference.
pub struct From<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
}

/// The referenced side.
pub struct To<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// Same-namespace references are always allowed; others need a grant in the
/// target namespace that names the source and the target.
pub fn permitted(snapshot: &Snapshot, from: &From, to: &To) -> bool {
    if from.namespace == to.namespace {
        return true;
    }
    snapshot
        .reference_grants
        .iter()
        .filter(|(key, _)| key.namespace == to.namespace)
        .any(|(_, grant)| {
            let from_ok = grant.spec.from.iter().any(|f| {
                f.group == from.group && f.kind == from.kind && f.namespace == from.namespace
            });
            let to_ok = grant.spec.to.iter().any(|t| {
                t.group == to.group
                    && t.kind == to.kind
                    && t.name
                        .as_deref()
                        .is_none_or(|n| n.is_empty() || n == to.name)
            });
            from_ok && to_ok
        })
}

/// May Gateway `gateway` use the core object `kind` `namespace/name` (a
/// certificate Secret, a CA ConfigMap)?
pub fn gateway_may_use(
    snapshot: &Snapshot,
    gateway: &crate::snapshot::ObjectRef,
    kind: &str,
    namespace: &str,
    name: &str,
) -> bool {
    let from = From {
        group: super::gateways::GROUP,
        kind: "Gateway",
        namespace: &gateway.namespace,
    };
    let to = To {
        group: "",
        kind,
        namespace,
        name,
    };
    permitted(snapshot, &from, &to)
}
