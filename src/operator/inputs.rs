//! What the operator takes from translate's fleet plan: the per-Gateway
//! instances to create (`Fleet::own_instance`) and each instance's
//! infrastructure (`Fleet::labels`, `annotations`, `external_ips`; its
//! ports are `Fleet::ports`). Every Gateway API decision is translate's;
//! here only Kubernetes ownership is decided. Pure.

use std::collections::BTreeMap;

use gateway_api::apis::experimental::gateways::Gateway;
use kube::Resource;
use serde_json::{Value, json};

use super::workloads::Infrastructure;
use crate::crd::KengineInstance;
use crate::snapshot::{ObjectRef, Snapshot};
use crate::translate::Fleet;
use kengine_gateway_model::names::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Marks a KengineInstance the operator created for a Gateway.
pub const GATEWAY_LABEL: &str = "kengine.khulnasoft.com/gateway";

/// The fleets translate made a Gateway's own instance, as the instances to
/// apply. An existing instance of that name that the Gateway does not own
/// is the user's (or its class's): it is used as it is, never taken over.
pub fn gateway_instances(
    snapshot: &Snapshot,
    fleets: &BTreeMap<ObjectRef, Fleet>,
) -> Vec<(ObjectRef, Value)> {
    let mut out = Vec::new();
    for (key, fleet) in fleets {
        if !fleet.own_instance {
            continue;
        }
        let Some(gateway) = snapshot.gateways.get(key) else {
            continue;
        };
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

/// A server-side apply configuration rather than a typed `KengineInstance`:
/// the typed spec always serializes `upstreamMode`, and applying it would
/// make the operator that field's manager, in the user's way.
fn own_instance(gateway: &Gateway) -> Value {
    json!({
        "apiVersion": KengineInstance::api_version(&()),
        "kind": KengineInstance::kind(&()),
        "metadata": {
            "name": gateway.metadata.name,
            "namespace": gateway.metadata.namespace,
            "labels": {GATEWAY_LABEL: gateway.metadata.name, MANAGED_BY_LABEL: MANAGED_BY_VALUE},
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

/// The fleet's infrastructure as translate planned it.
pub fn infrastructure(fleet: Option<&Fleet>) -> Infrastructure {
    fleet.map_or_else(Infrastructure::default, |f| Infrastructure {
        labels: f.labels.clone(),
        annotations: f.annotations.clone(),
        external_ips: f.external_ips.clone(),
    })
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

    /// Translate's fleet plan (managed fleets).
    fn plan(s: &Snapshot) -> BTreeMap<ObjectRef, Fleet> {
        crate::translate::translate(
            s,
            &crate::translate::Options {
                controller_name: "x".into(),
                fleets: crate::translate::FleetMode::Instances,
                ..Default::default()
            },
        )
        .fleets
    }

    #[test]
    fn a_gateway_without_parameters_gets_an_instance_it_owns() {
        let s = snapshot(vec![
            class("own", Value::Null),
            gateway("gw", "own", 80, Value::Null),
        ]);
        let wanted = gateway_instances(&s, &plan(&s));
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
            instance("shared", None),
            instance("b", None),
        ]);
        let f = plan(&s);
        assert!(
            f[&ObjectRef::new("apps", "b")].own_instance,
            "translate's choice"
        );
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
    fn infrastructure_is_translates_plan() {
        let mut fleet = Fleet::default();
        fleet.labels.insert("team".into(), "a".into());
        fleet.annotations.insert("x".into(), "1".into());
        fleet.external_ips.insert("10.0.0.9".parse().unwrap());
        let infra = infrastructure(Some(&fleet));
        assert_eq!(infra.labels, fleet.labels);
        assert_eq!(infra.annotations, fleet.annotations);
        assert_eq!(infra.external_ips, fleet.external_ips);
        assert!(infrastructure(None).labels.is_empty());
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
        let desired = super::super::workloads::desired(
            &instance,
            &fleet.ports,
            &infrastructure(Some(fleet)),
            &settings,
        );
        let service = desired.service.unwrap().spec.unwrap();
        let service: Vec<i32> = service.ports.unwrap().iter().map(|p| p.port).collect();
        assert_eq!(service, [80]);
        let policy = serde_json::to_value(desired.network_policy).unwrap();
        let open_to_all = &policy["spec"]["ingress"][1];
        assert!(open_to_all.get("from").is_none(), "{open_to_all}");
        assert_eq!(
            open_to_all["ports"],
            json!([{"protocol": "TCP", "port": 80}])
        );
    }
}
