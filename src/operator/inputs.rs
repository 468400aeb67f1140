//! What the operator derives from the snapshot and translate's fleets:
//! per-Gateway instances to create, and for each instance the
//! infrastructure metadata of the Gateways it serves (its ports are
//! translate's `Fleet::ports`). Pure.

use std::collections::BTreeMap;

use gateway_api::apis::experimental::gateways::Gateway;
use kube::Resource;
use serde_json::{Value, json};

use super::workloads::Infrastructure;
use crate::crd::KengineInstance;
use crate::snapshot::{ObjectRef, Snapshot};
use crate::translate::Fleet;

/// Marks a KengineInstance the operator created for a Gateway.
pub const GATEWAY_LABEL: &str = "kengine.khulnasoft.com/gateway";

/// The Gateways of `fleets` that get an instance of their own, as the
/// instances to apply. Which fleet serves a Gateway is translate's decision
/// (`translate::fleets`): here only "translate chose the instance named like
/// the Gateway, and the Gateway did not name it itself". An existing
/// instance of that name that the Gateway does not own is the user's (or
/// its class's): it is used as it is, never taken over.
pub fn gateway_instances(
    snapshot: &Snapshot,
    fleets: &BTreeMap<ObjectRef, Fleet>,
) -> Vec<(ObjectRef, Value)> {
    let mut out = Vec::new();
    for (key, fleet) in fleets {
        let Some(gateway) = snapshot.gateways.get(key) else {
            continue;
        };
        if !fleet.gateways.contains(key) || !wants_own_instance(gateway) {
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

fn wants_own_instance(gateway: &Gateway) -> bool {
    gateway
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref())
        .is_none()
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
            }],
        },
        "spec": {"mode": "Deployment"},
    })
}

/// `infrastructure.labels` and `.annotations` of the fleet's Gateways; on a
/// shared fleet the first Gateway (by namespace/name) wins a clash, and the
/// labels and static addresses translate gave the fleet win over them.
pub fn infrastructure(snapshot: &Snapshot, fleet: Option<&Fleet>) -> Infrastructure {
    let mut infra = Infrastructure {
        external_ips: fleet.map(|f| f.external_ips.clone()).unwrap_or_default(),
        ..Default::default()
    };
    // Translate's labels first: no Gateway's infrastructure labels can
    // replace them.
    infra.labels = fleet.map(|f| f.labels.clone()).unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Object;

    fn snapshot(docs: Vec<Value>) -> Snapshot {
        let objects = docs
            .into_iter()
            .filter_map(|v| crate::providers::files::object_from_value(v).unwrap())
            .collect::<Vec<Object>>();
        Snapshot::from_objects(objects)
    }

    fn gateway(name: &str, class: &str, port: u16, infra: Value) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": "apps", "uid": format!("uid-{name}")},
            "spec": {"gatewayClassName": class, "infrastructure": infra,
                "listeners": [{"name": "l", "protocol": "HTTP", "port": port}]}})
    }

    fn class(name: &str, params: Value) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": name}, "spec": {"controllerName": "x", "parametersRef": params}})
    }

    fn instance(name: &str, owner: Option<&str>) -> Value {
        let owners: Vec<Value> = owner
            .map(|uid| json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "name": name, "uid": uid}))
            .into_iter()
            .collect();
        json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
            "metadata": {"name": name, "namespace": "apps", "ownerReferences": owners}, "spec": {}})
    }

    fn fleets(entries: &[(&str, &[&str])]) -> BTreeMap<ObjectRef, Fleet> {
        entries
            .iter()
            .map(|(key, gws)| {
                let fleet = Fleet {
                    gateways: gws.iter().map(|g| ObjectRef::new("apps", *g)).collect(),
                    ..Default::default()
                };
                (ObjectRef::new("apps", *key), fleet)
            })
            .collect()
    }

    #[test]
    fn a_gateway_without_parameters_gets_an_instance_it_owns() {
        let s = snapshot(vec![
            class("own", Value::Null),
            gateway("gw", "own", 80, Value::Null),
        ]);
        let wanted = gateway_instances(&s, &fleets(&[("gw", &["gw"])]));
        assert_eq!(wanted.len(), 1);
        let (key, ki) = &wanted[0];
        assert_eq!(key, &ObjectRef::new("apps", "gw"));
        assert_eq!(ki["metadata"]["ownerReferences"][0]["uid"], "uid-gw");
        assert_eq!(ki["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(ki["spec"]["mode"], "Deployment");
    }

    #[test]
    fn named_instances_and_the_users_own_are_left_alone() {
        let shared = json!({"group": "kengine.khulnasoft.com", "kind": "KengineInstance", "name": "shared", "namespace": "apps"});
        let s = snapshot(vec![
            class("shared", shared),
            class("own", Value::Null),
            gateway("a", "shared", 80, Value::Null),
            gateway("b", "own", 81, Value::Null),
            instance("b", None),
        ]);
        let f = fleets(&[("shared", &["a"]), ("b", &["b"])]);
        assert!(gateway_instances(&s, &f).is_empty());
        assert!(orphaned_instances(&s, &f).is_empty(), "never the user's");
    }

    #[test]
    fn a_class_naming_a_missing_instance_falls_back_like_translate() {
        let missing = json!({"group": "kengine.khulnasoft.com", "kind": "KengineInstance", "name": "gone", "namespace": "apps"});
        let s = snapshot(vec![
            class("c", missing),
            gateway("gw", "c", 80, Value::Null),
        ]);
        let out = crate::translate::translate(
            &s,
            &crate::translate::Options {
                controller_name: "x".into(),
                fleets: crate::translate::FleetMode::Instances,
                ..Default::default()
            },
        );
        assert!(
            out.fleets.contains_key(&ObjectRef::new("apps", "gw")),
            "translate's fallback"
        );
        let wanted = gateway_instances(&s, &out.fleets);
        assert_eq!(wanted.len(), 1, "the operator creates what translate chose");
    }

    #[test]
    fn an_instance_its_gateway_left_is_orphaned() {
        let s = snapshot(vec![
            gateway("gw", "elsewhere", 80, Value::Null),
            instance("gw", Some("uid-gw")),
        ]);
        let moved = fleets(&[("other", &["gw"])]);
        assert_eq!(
            orphaned_instances(&s, &moved),
            vec![ObjectRef::new("apps", "gw")]
        );
        let stays = fleets(&[("gw", &["gw"])]);
        assert!(orphaned_instances(&s, &stays).is_empty());
    }

    #[test]
    fn infrastructure_of_a_shared_fleet() {
        let s = snapshot(vec![
            gateway(
                "a",
                "c",
                80,
                json!({"labels": {"team": "a"}, "annotations": {"x": "1"}}),
            ),
            gateway(
                "b",
                "c",
                8443,
                json!({"labels": {"team": "b", "tier": "edge"}}),
            ),
        ]);
        let f = fleets(&[("shared", &["a", "b"])]);
        let fleet = f.get(&ObjectRef::new("apps", "shared"));
        let infra = infrastructure(&s, fleet);
        assert_eq!(infra.labels["team"], "a", "the first Gateway wins");
        assert_eq!(infra.labels["tier"], "edge");
        assert_eq!(infra.annotations["x"], "1");
        assert!(infrastructure(&s, None).labels.is_empty());
    }

    #[test]
    fn translates_labels_win_over_the_gateways_infrastructure_labels() {
        let label = crate::translate::GATEWAY_NAME_LABEL;
        let s = snapshot(vec![gateway(
            "gw",
            "c",
            80,
            json!({"labels": {label: "other", "team": "a"}}),
        )]);
        let mut f = fleets(&[("gw", &["gw"])]);
        let fleet = f.get_mut(&ObjectRef::new("apps", "gw")).unwrap();
        fleet.labels.insert(label.into(), "gw".into());
        let infra = infrastructure(&s, Some(fleet));
        assert_eq!(infra.labels[label], "gw");
        assert_eq!(infra.labels["team"], "a");
    }

    #[test]
    fn a_listener_on_the_admin_port_opens_nothing() {
        let mut gw = gateway("gw", "own", 80, Value::Null);
        gw["spec"]["listeners"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "admin", "protocol": "HTTP", "port": 2019}));
        let s = snapshot(vec![class("own", Value::Null), gw]);
        let out = crate::translate::translate(
            &s,
            &crate::translate::Options {
                controller_name: "x".into(),
                fleets: crate::translate::FleetMode::Instances,
                ..Default::default()
            },
        );
        let fleet = &out.fleets[&ObjectRef::new("apps", "gw")];
        let instance: KengineInstance =
            serde_json::from_value(gateway_instances(&s, &out.fleets)[0].1.clone()).unwrap();
        let settings = super::super::workloads::Settings {
            flavor: Default::default(),
            kengine_image: "k".into(),
            proxy_image: "p".into(),
            operator_namespace: "ops".into(),
            operator_labels: Default::default(),
            client_name: "c".into(),
            pull_policy: None,
            pull_secrets: Vec::new(),
        };
        let objects = super::super::workloads::desired(
            &instance,
            &fleet.ports,
            &infrastructure(&s, Some(fleet)),
            &settings,
        );
        let of = |kind: &str| objects.iter().find(|o| o["kind"] == kind).unwrap();
        let service: Vec<&Value> = of("Service")["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["port"])
            .collect();
        assert_eq!(service, [80]);
        let open_to_all = &of("NetworkPolicy")["spec"]["ingress"][1];
        assert!(open_to_all.get("from").is_none(), "{open_to_all}");
        assert_eq!(
            open_to_all["ports"],
            json!([{"protocol": "TCP", "port": 80}])
        );
    }
}
