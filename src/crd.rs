//! `KengineInstance` (kengine.khulnasoft.com/v1alpha1): one fleet of Kengine
//! pods that serves Gateways. Its YAML in `crds/` is generated from these
//! types (`kengine-gateway crd`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "kengine.khulnasoft.com";
pub const KIND: &str = "KengineInstance";

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kengine.khulnasoft.com",
    version = "v1alpha1",
    kind = "KengineInstance",
    namespaced,
    status = "KengineInstanceStatus",
    shortname = "ki",
    category = "kengine",
    derive = "PartialEq",
    derive = "Default",
    validation = "self.mode != 'External' || has(self.external)",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KengineInstanceSpec {
    /// How the fleet runs. `External`: pods someone else runs, found by
    /// `external.selector`; the operator only pushes config to them.
    /// `Deployment` and `DaemonSet` (managed fleets) are not implemented yet.
    #[serde(default)]
    pub mode: Mode,
    /// Required with mode `External`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSpec>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Mode {
    #[default]
    Deployment,
    DaemonSet,
    External,
}

/// Bring-your-own Kengine: where its pods are and how to reach their admin API.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSpec {
    /// Labels of the Kengine pods, in the instance's namespace.
    pub selector: BTreeMap<String, String>,
    /// Port of the admin API on each pod.
    #[serde(default = "default_admin_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub admin_port: i32,
    /// Mutual TLS for the admin API. Required unless `allowPlainHttp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_tls: Option<AdminTls>,
    /// A Service in front of the pods. Gateways report its LoadBalancer
    /// ingress addresses, else its ClusterIP; without it, the pod IPs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Talk plain HTTP to the admin API. The admin API can change anything
    /// Kengine does, and pushed configs carry TLS private keys: the instance
    /// reports a `PlainHttpAdmin` warning condition while this is set.
    #[serde(default)]
    pub allow_plain_http: bool,
}

fn default_admin_port() -> i32 {
    2019
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminTls {
    /// A `kubernetes.io/tls` Secret in the instance's namespace: the
    /// controller's client certificate and key.
    pub client_certificate_secret: String,
    /// A Secret in the instance's namespace whose `ca.crt` verifies the
    /// pods' admin server certificates.
    pub ca_secret: String,
    /// The name the admin server certificates are issued for; checked
    /// instead of the pod IP when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KengineInstanceStatus {
    /// `Ready`, `Progressing`, `Degraded`, and `PlainHttpAdmin` while plain
    /// HTTP is allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods that are ready and loaded the current config.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Addresses traffic reaches the fleet at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// `namespace/name` of every Gateway the fleet serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// The config each pod has loaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodConfigStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodConfigStatus {
    pub name: String,
    /// SHA-256 (hex, shortened) of the config the pod last loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Why the current config is not loaded, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The CRD as YAML, as checked in under `crds/`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let header = "# Generated by `kengine-gateway crd`; do not edit.\n";
    format!(
        "{header}{}",
        serde_yaml_ng::to_string(&KengineInstance::crd()).expect("CRD serializes")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_crd_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/kengineinstances.yaml");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == crd_yaml(),
            "crds/kengineinstances.yaml is stale: run `cargo run -- crd > crds/kengineinstances.yaml`"
        );
    }

    #[test]
    fn external_mode_defaults() {
        let ki: KengineInstanceSpec = serde_json::from_value(
            serde_json::json!({"mode": "External", "external": {"selector": {"app": "k"}}}),
        )
        .unwrap();
        let ext = ki.external.unwrap();
        assert_eq!(ext.admin_port, 2019);
        assert!(!ext.allow_plain_http);
        assert_eq!(KengineInstanceSpec::default().mode, Mode::Deployment);
    }
}
