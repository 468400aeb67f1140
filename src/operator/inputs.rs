//! What the operator derives from the snapshot and translate's fleets:
//! per-Gateway instances to create, and for each instance the listener
//! ports and infrastructure metadata of the Gateways it serves. Pure.

use std::collections::{BTreeMap, BTreeSet};

use gateway_api::apis::experimental::gateways::Gateway;
use kube::Resource;
use serde_json::{Value, json};

use super::workloads::Infrastructure;
use crate::crd::KengineInstance;
use crate::snapshot::{ObjectRef, Snapshot};
use crate::translate::Fleet;

/// Marks a KengineInstance the operator created for a Gateway.
pub const GATEWAY_LABEL: &str = "kengine.khulnasoft.com/gateway";

/// The Gateways of `fleets` that get an instance of their own (neither
/// their infrastructure nor their class names one), as the instances to
/// apply. An existing instance of that name that the Gateway does not own
/// is the user's: it is used as it is, never taken over.
pub fn gateway_instances(
    snapshot: &Snapshot,
    fleets: &BTreeMap<ObjectRef, Fleet>,
) -> Vec<(ObjectRef, Value)> {
    let mut out = Vec::new();
    for (key, fleet) in fleets {
        let Some(gateway) = snapshot.gateways.get(key) else {
            continue;
        };
        if !fleet.gateways.contains(key) || !wants_own_instance(snapshot, gateway) {
            continue;
        }
        if let Some(existing) = snapshot.kengine_instances.get(key)
            && !owned_by(existing, gateway)
        {
            continue;
        }
        out.push((key.clone(), own_instance(gateway)));
    }
    out
}

/// Per-Gateway instances that no longer serve their Gateway (it moved to
/// another fleet); a deleted Gateway's instance is garbage-collected.
pub fn orphaned_instances(
    snapshot: &Snapshot,
    fleets: &BTreeMap<ObjectRef, Fleet>,
) -> Vec<ObjectRef> {
    snapshot
        .kengine_instances
        .iter()
        .filter(|(key, instance)| {
            let Some(gateway) = snapshot.gateways.get(key) else {
                return false;
            };
            owned_by(instance, gateway)
                && !fleets.get(key).is_some_and(|f| f.gateways.contains(key))
        })
        .map(|(key, _)| key.clone())
        .collect()
}

fn wants_own_instance(snapshot: &Snapshot, gateway: &Gateway) -> bool {
    let infra = gateway
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref());
    let class = snapshot
        .gateway_classes
        .get(&gateway.spec.gateway_class_name)
        .and_then(|c| c.spec.parameters_ref.as_ref());
    infra.is_none() && class.is_none()
}

fn owned_by(instance: &KengineInstance, gateway: &Gateway) -> bool {
    let uid = gateway.metadata.uid.as_deref();
    uid.is_some()
        && instance
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "Gateway" && Some(o.uid.as_str()) == uid)
}

fn own_instance(gateway: &Gateway) -> Value {
    json!({
        "apiVersion": KengineInstance::api_version(&()),
        "kind": KengineInstance::kind(&()),
        "metadata": {
            "name": gateway.metadata.name,
            "namespace": gateway.metadata.namespace,
            "labels": {GATEWAY_LABEL: gateway.metadata.name, "app.kubernetes.io/managed-by": "kengine-gateway"},
            // Deleting the Gateway deletes its fleet.
            "ownerReferences": [{
                "apiVersion": Gateway::api_version(&()),
                "kind": "Gateway",
                "name": gateway.metadata.name,
                "uid": gateway.metadata.uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {"mode": "Deployment"},
    })
}

/// The data-plane ports of the Gateways a fleet serves.
pub fn ports(snapshot: &Snapshot, fleet: Option<&Fleet>) -> BTreeSet<u16> {
    gateways(snapshot, fleet)
        .flat_map(|g| g.spec.listeners.iter())
        .filter_map(|l| u16::try_from(l.port).ok())
        .collect()
}

/// `infrastructure.labels` and `.annotations` of the fleet's Gateways; on a
/// shared fleet the first Gateway (by namespace/name) wins a clash.
pub fn infrastructure(snapshot: &Snapshot, fleet: Option<&Fleet>) -> Infrastructure {
    let mut infra = Infrastructure::default();
    for gateway in gateways(snapshot, fleet) {
        let Some(i) = &gateway.spec.infrastructure else {
            continue;
        };
        for (k, v) in i.labels.iter().flatten() {
            infra.labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in i.annotations.iter().flatten() {
            infra
                .annotations
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
    }
    infra
}

fn gateways<'a>(
    snapshot: &'a Snapshot,
    fleet: Option<&'a Fleet>,
) -> impl Iterator<Item = &'a Gateway> {
    fleet
        .into_iter()
        .flat_map(|f| f.gateways.iter())
        .filter_map(|g| snapshot.gateways.get(g))
}
