//! The objects the operator would apply for every managed fleet of a
//! snapshot, without a cluster (`render --output objects`). Built with the
//! operator's own functions, in the order a pass applies them. Pure but for
//! the throwaway keys `pki::plan` generates, whose material is blanked.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::Value;

use super::{inputs, pki, workloads};
use crate::crd::KengineInstance;
use crate::snapshot::{ObjectRef, Snapshot};
use crate::translate::Fleet;

/// Per fleet, by instance: the KengineInstance (created for a Gateway, or
/// the input's own), its Secrets (keys only: the values are empty), then
/// its workload, Service, PodDisruptionBudget and NetworkPolicy.
pub fn objects(
    snapshot: &Snapshot,
    fleets: &BTreeMap<ObjectRef, Fleet>,
    settings: &workloads::Settings,
) -> Vec<Value> {
    let mut instances: BTreeMap<ObjectRef, (KengineInstance, Value)> = BTreeMap::new();
    for (key, instance) in &snapshot.kengine_instances {
        if instance.spec.mode.managed() && instance.metadata.deletion_timestamp.is_none() {
            let mut value = serde_json::to_value(instance).expect("instances always serialize");
            if let Some(object) = value.as_object_mut() {
                object.remove("status");
            }
            instances.insert(key.clone(), (instance.clone(), value));
        }
    }
    for (key, desired) in inputs::gateway_instances(snapshot, fleets) {
        if snapshot.kengine_instances.contains_key(&key) {
            continue;
        }
        let instance: KengineInstance =
            serde_json::from_value(desired.clone()).expect("the operator's own instance parses");
        instances.insert(key, (instance, desired));
    }

    let mut out = Vec::new();
    for (key, (instance, value)) in instances {
        out.push(value);
        let fleet = fleets.get(&key);
        let infra = inputs::infrastructure(fleet);
        let names = workloads::Names::of(&instance);
        // What a first pass issues; only the key names are shown. Like the
        // operator, a fleet whose certificates cannot be issued still gets
        // its workloads.
        let plan = pki::plan(
            &pki::Current::default(),
            &super::ca_subject(&instance),
            &names.server_name,
            &pki::Lifetimes::default(),
            SystemTime::now(),
        )
        .unwrap_or_else(|e| {
            tracing::warn!(instance = %key, "its admin certificates: {e}");
            pki::Plan::default()
        });
        for (name, data) in [
            (&names.ca_secret, &plan.ca),
            (&names.server_secret, &plan.server),
            (&names.client_secret, &plan.client),
        ] {
            let Some(data) = data else { continue };
            let blank: pki::SecretData = data.keys().map(|k| (k.clone(), String::new())).collect();
            let secret = workloads::secret(&instance, name, &blank, &infra);
            out.push(serde_json::to_value(secret).expect("Secrets always serialize"));
        }
        let ports = fleet.map(|f| f.ports.clone()).unwrap_or_default();
        let desired = workloads::desired(&instance, &ports, &infra, settings);
        out.extend(
            desired
                .into_objects()
                .iter()
                .map(workloads::Owned::to_value),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> workloads::Settings {
        workloads::Settings {
            flavor: Default::default(),
            kengine_image: "kengine:test".into(),
            proxy_image: "proxy:test".into(),
            operator_namespace: "ops".into(),
            operator_labels: BTreeMap::from([("app".into(), "operator".into())]),
            client_name: pki::CLIENT_NAME.into(),
            pull_policy: None,
            pull_secrets: Vec::new(),
        }
    }

    fn preview(docs: Vec<Value>) -> Vec<Value> {
        let input: Vec<_> = docs
            .into_iter()
            .filter_map(|v| crate::providers::files::object_from_value(v).unwrap())
            .collect();
        let snapshot = Snapshot::from_objects(input);
        let out = crate::translate::translate(
            &snapshot,
            &crate::translate::Options {
                fleets: crate::translate::FleetMode::Instances,
                ..Default::default()
            },
        );
        objects(&snapshot, &out.fleets, &settings())
    }

    fn class() -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "c"}, "spec": {"controllerName": crate::cli::DEFAULT_CONTROLLER_NAME}})
    }

    #[test]
    fn a_gateway_gets_its_instance_secrets_and_workloads() {
        let out = preview(vec![
            class(),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "gw", "namespace": "apps"},
                "spec": {"gatewayClassName": "c", "listeners": [
                    {"name": "http", "protocol": "HTTP", "port": 80},
                    {"name": "admin", "protocol": "HTTP", "port": 2019}]}}),
        ]);
        let kinds: Vec<&str> = out.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "KengineInstance",
                "Secret",
                "Secret",
                "Secret",
                "ServiceAccount",
                "Deployment",
                "Service",
                "PodDisruptionBudget",
                "NetworkPolicy"
            ]
        );
        for secret in out.iter().filter(|o| o["kind"] == "Secret") {
            let data = secret["data"].as_object().unwrap();
            assert!(data.contains_key(pki::TLS_CRT), "{secret}");
            assert!(data.values().all(|v| v == ""), "no key material: {secret}");
        }
        let service = out.iter().find(|o| o["kind"] == "Service").unwrap();
        assert_eq!(service["spec"]["ports"][0]["port"], 80);
        assert_eq!(service["spec"]["ports"].as_array().unwrap().len(), 1);
        assert_eq!(
            out,
            preview(vec![class(), {
                json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "gw", "namespace": "apps"},
                "spec": {"gatewayClassName": "c", "listeners": [
                    {"name": "http", "protocol": "HTTP", "port": 80},
                    {"name": "admin", "protocol": "HTTP", "port": 2019}]}})
            }]),
            "deterministic"
        );
    }

    #[test]
    fn external_instances_get_nothing() {
        let out = preview(vec![
            class(),
            json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
                "metadata": {"name": "ext", "namespace": "apps"},
                "spec": {"mode": "External", "external": {"selector": {"app": "k"}}}}),
        ]);
        assert!(out.is_empty(), "{out:?}");
    }
}
