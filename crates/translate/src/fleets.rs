//! Which fleet serves a Gateway, first match wins:
//! 1. `Gateway.spec.infrastructure.parametersRef` → a KengineInstance in the
//!    Gateway's namespace (a dedicated fleet);
//! 2. `GatewayClass.spec.parametersRef` → a KengineInstance (one fleet for
//!    the class; its Gateways share servers and conflict like listeners);
//! 3. otherwise the per-Gateway instance named after the Gateway, which the
//!    operator creates and deletes with it.

use gateway_api::apis::experimental::gatewayclasses::GatewayClass;
use gateway_api::apis::experimental::gateways::Gateway;

use super::FleetMode;
use super::conditions::{Cond, Reason, Type};
use crate::crd::{GROUP, KIND};
use crate::snapshot::{ObjectRef, Snapshot};

/// Does the operator run this fleet's pods (with the admin-proxy sidecar)?
/// A missing instance is the per-Gateway one it is about to create.
pub fn managed(snapshot: &Snapshot, fleet: &ObjectRef) -> bool {
    snapshot
        .kengine_instances
        .get(fleet)
        .is_none_or(|i| i.spec.mode.managed())
}

/// The one fleet of `render` and `standalone`.
pub fn local() -> ObjectRef {
    ObjectRef::new("", "local")
}

/// The fleet that serves `gateway`, and whether it is the Gateway's own
/// instance (rule 3: the operator creates it, owned by the Gateway).
pub fn fleet_of(
    snapshot: &Snapshot,
    gateway: &Gateway,
    mode: FleetMode,
) -> Result<(ObjectRef, bool), Cond> {
    let key = ObjectRef::of(gateway);
    let chosen = if let Some(p) = gateway
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref())
    {
        let named = instance(snapshot, &p.group, &p.kind, &key.namespace, &p.name)
            .map_err(|why| invalid(format!("infrastructure.parametersRef: {why}")))?;
        (named, false)
    } else {
        let class = snapshot
            .gateway_classes
            .get(&gateway.spec.gateway_class_name);
        // An invalid class reference is reported on the class, and its
        // Gateways are not accepted (translate); they get their own fleet.
        match class.and_then(|c| class_instance(snapshot, c).ok().flatten()) {
            Some(shared) => (shared, false),
            None => (key, true),
        }
    };
    Ok(match mode {
        FleetMode::Local => (local(), false),
        FleetMode::Instances => chosen,
    })
}

/// Merges the `infrastructure.labels` and `.annotations` of the fleet's
/// Gateways into it: the first Gateway (by namespace/name) wins a clash,
/// and labels the fleet already has (translate's own) are never replaced.
pub fn propagate_infrastructure(snapshot: &Snapshot, fleet: &mut super::Fleet) {
    for key in &fleet.gateways {
        let Some(infra) = snapshot
            .gateways
            .get(key)
            .and_then(|g| g.spec.infrastructure.as_ref())
        else {
            continue;
        };
        for (k, v) in infra.labels.iter().flatten() {
            fleet.labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in infra.annotations.iter().flatten() {
            fleet
                .annotations
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
    }
}

/// The class's fleet, `None` without a parametersRef, `Err` for a bad one.
pub fn class_instance(
    snapshot: &Snapshot,
    class: &GatewayClass,
) -> Result<Option<ObjectRef>, String> {
    let Some(p) = &class.spec.parameters_ref else {
        return Ok(None);
    };
    // The kind first: a foreign kind is the problem, not its namespace.
    supported_kind(&p.group, &p.kind)?;
    let namespace = p
        .namespace
        .as_deref()
        .ok_or("parametersRef to a KengineInstance needs a namespace")?;
    instance(snapshot, &p.group, &p.kind, namespace, &p.name).map(Some)
}

fn supported_kind(group: &str, kind: &str) -> Result<(), String> {
    if group != GROUP || kind != KIND {
        return Err(format!(
            "{group}/{kind} is not supported; use {GROUP}/{KIND}"
        ));
    }
    Ok(())
}

fn instance(
    snapshot: &Snapshot,
    group: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<ObjectRef, String> {
    supported_kind(group, kind)?;
    let key = ObjectRef::new(namespace, name);
    if !snapshot.kengine_instances.contains_key(&key) {
        return Err(format!("{KIND} {key} not found"));
    }
    Ok(key)
}

fn invalid(message: String) -> Cond {
    Cond::new(Type::Accepted, false, Reason::InvalidParameters, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Object;

    fn snapshot(docs: serde_json::Value) -> Snapshot {
        let objects = docs
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| kengine_gateway_model::manifests::object_from_value(v.clone()).unwrap())
            .collect::<Vec<Object>>();
        Snapshot::from_objects(objects)
    }

    fn gateway(infra: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "apps"},
            "spec": {"gatewayClassName": "c", "listeners": [], "infrastructure": infra}})
    }

    fn instance(ns: &str, name: &str) -> serde_json::Value {
        serde_json::json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
            "metadata": {"name": name, "namespace": ns}, "spec": {"mode": "External", "external": {"selector": {"a": "b"}}}})
    }

    fn class(params: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "c"}, "spec": {"controllerName": "x", "parametersRef": params}})
    }

    /// The fleet plan of `docs` (managed fleets), by fleet name.
    fn plan(docs: serde_json::Value) -> std::collections::BTreeMap<String, super::super::Fleet> {
        let out = crate::translate(
            &snapshot(docs),
            &crate::Options {
                controller_name: "x".into(),
                fleets: FleetMode::Instances,
                ..Default::default()
            },
        );
        out.fleets.into_iter().map(|(k, f)| (k.name, f)).collect()
    }

    fn named_gateway(name: &str, infra: serde_json::Value) -> serde_json::Value {
        let mut g = gateway(infra);
        g["metadata"]["name"] = name.into();
        g["spec"]["listeners"] = serde_json::json!([{"name": "l", "protocol": "HTTP", "port": 80}]);
        g
    }

    #[test]
    fn a_gateway_that_names_no_instance_gets_its_own() {
        let named =
            serde_json::json!({"parametersRef": {"group": GROUP, "kind": KIND, "name": "mine"}});
        let fleets = plan(serde_json::json!([
            class(serde_json::Value::Null),
            named_gateway("own", serde_json::Value::Null),
            named_gateway("named", named),
            instance("apps", "mine"),
        ]));
        assert!(fleets["own"].own_instance);
        assert!(!fleets["mine"].own_instance, "the Gateway named it");
    }

    #[test]
    fn infrastructure_metadata_of_a_shared_fleet() {
        let shared = serde_json::json!({"group": GROUP, "kind": KIND, "name": "shared", "namespace": "apps"});
        let label = crate::GATEWAY_NAME_LABEL;
        let fleets = plan(serde_json::json!([
            class(shared),
            instance("apps", "shared"),
            named_gateway(
                "a",
                serde_json::json!({"labels": {"team": "a"}, "annotations": {"x": "1"}})
            ),
            named_gateway(
                "b",
                serde_json::json!({"labels": {"team": "b", "tier": "edge"}})
            ),
        ]));
        let f = &fleets["shared"];
        assert_eq!(f.labels["team"], "a", "the first Gateway wins");
        assert_eq!(f.labels["tier"], "edge");
        assert_eq!(f.annotations["x"], "1");
        assert!(!f.own_instance);
        // One Gateway's fleet: its name label cannot be replaced.
        let fleets = plan(serde_json::json!([
            class(serde_json::Value::Null),
            named_gateway(
                "gw",
                serde_json::json!({"labels": {label: "other", "team": "a"}})
            ),
        ]));
        assert_eq!(fleets["gw"].labels[label], "gw");
        assert_eq!(fleets["gw"].labels["team"], "a");
    }

    fn fleet(docs: serde_json::Value, mode: FleetMode) -> Result<ObjectRef, Cond> {
        let s = snapshot(docs);
        fleet_of(&s, &s.gateways[&ObjectRef::new("apps", "gw")], mode).map(|(key, _)| key)
    }

    #[test]
    fn gateway_parameters_ref_wins_then_class_then_own_instance() {
        let own = serde_json::json!({"parametersRef": {"group": GROUP, "kind": KIND, "name": "dedicated"}});
        let shared = serde_json::json!({"group": GROUP, "kind": KIND, "name": "shared", "namespace": "infra"});
        let all = serde_json::json!([
            gateway(own),
            class(shared.clone()),
            instance("apps", "dedicated"),
            instance("infra", "shared")
        ]);
        assert_eq!(
            fleet(all, FleetMode::Instances),
            Ok(ObjectRef::new("apps", "dedicated"))
        );
        let by_class = serde_json::json!([
            gateway(serde_json::Value::Null),
            class(shared),
            instance("infra", "shared")
        ]);
        assert_eq!(
            fleet(by_class.clone(), FleetMode::Instances),
            Ok(ObjectRef::new("infra", "shared"))
        );
        assert_eq!(fleet(by_class, FleetMode::Local), Ok(local()));
        let alone = serde_json::json!([
            gateway(serde_json::Value::Null),
            class(serde_json::Value::Null)
        ]);
        assert_eq!(
            fleet(alone, FleetMode::Instances),
            Ok(ObjectRef::new("apps", "gw")),
            "the per-Gateway instance"
        );
    }

    #[test]
    fn invalid_parameters_refs_are_reported() {
        let missing =
            serde_json::json!({"parametersRef": {"group": GROUP, "kind": KIND, "name": "nope"}});
        let err = fleet(serde_json::json!([gateway(missing)]), FleetMode::Instances).unwrap_err();
        assert_eq!(
            (err.type_, err.status, err.reason),
            (Type::Accepted, false, Reason::InvalidParameters)
        );
        assert!(
            err.message.contains("apps/nope not found"),
            "{}",
            err.message
        );
        let wrong = serde_json::json!({"parametersRef": {"group": "example.com", "kind": "Thing", "name": "x"}});
        assert!(fleet(serde_json::json!([gateway(wrong)]), FleetMode::Local).is_err());
        let s = snapshot(serde_json::json!([class(
            serde_json::json!({"group": GROUP, "kind": KIND, "name": "x"})
        )]));
        assert!(
            class_instance(&s, &s.gateway_classes["c"])
                .unwrap_err()
                .contains("needs a namespace")
        );
        let foreign = snapshot(serde_json::json!([class(
            serde_json::json!({"group": "example.com", "kind": "Config", "name": "x"})
        )]));
        let why = class_instance(&foreign, &foreign.gateway_classes["c"]).unwrap_err();
        assert_eq!(
            why,
            format!("example.com/Config is not supported; use {GROUP}/{KIND}")
        );
    }
}
