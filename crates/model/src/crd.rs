//! `KengineInstance` (kengine.khulnasoft.com/v1alpha1): one fleet of Kengine
//! pods that serves Gateways. Its YAML in `crds/` is generated from these
//! types (`kengine-gateway crd`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "kengine.khulnasoft.com";
pub const KIND: &str = "KengineInstance";
/// The admin-proxy sidecar's mutual-TLS admin port on managed pods.
pub const ADMIN_PORT: u16 = 2019;
/// The admin-proxy sidecar's plain-HTTP `/healthz` and `/readyz`.
pub const HEALTH_PORT: u16 = 2020;

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
    validation = Rule::new("self.spec.mode == 'External' ? has(self.spec.external) : !has(self.spec.external)").message("spec.external is required with mode External and forbidden otherwise"),
    validation = Rule::new("!has(self.spec.replicas) || self.spec.mode == 'Deployment'").message("replicas applies to mode Deployment only"),
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KengineInstanceSpec {
    /// How the fleet runs. `Deployment` (default) and `DaemonSet`: the
    /// operator runs the Kengine pods, their Service, admin-TLS Secrets,
    /// NetworkPolicy and PodDisruptionBudget. `External`: pods someone else
    /// runs, found by `external.selector`; the operator only pushes config.
    #[serde(default)]
    pub mode: Mode,
    /// Pods of a `Deployment` fleet (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// The Kengine image (default: the operator's `--kengine-image`). It must
    /// provide every module in `modules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Compute resources of the Kengine container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the Kengine pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the Kengine pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the Kengine pods (default: prefer spreading across nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// The Service in front of the pods. Its ports are the union of the
    /// listener ports of the Gateways the fleet serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceOptions>,
    /// Extra Kengine modules the image provides (for example `layer4`).
    /// Recorded for features that need them; no translated feature uses
    /// one yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
    /// How Kengine reaches backends. `ClusterIP` (default): each Service's
    /// cluster IP, so pod churn never reloads Kengine (headless Services
    /// always use their ready endpoints). `Endpoints`: every ready endpoint
    /// from the Service's EndpointSlices, weights split evenly over them
    /// (for session affinity or to skip kube-proxy; every endpoint change
    /// reloads Kengine).
    #[serde(default)]
    pub upstream_mode: UpstreamMode,
    /// The PodDisruptionBudget of a `Deployment` fleet (default:
    /// `maxUnavailable: 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<DisruptionBudget>,
    /// Required with mode `External`, forbidden otherwise.
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

impl Mode {
    /// The operator runs this fleet's pods.
    pub fn managed(self) -> bool {
        self != Mode::External
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UpstreamMode {
    #[default]
    ClusterIP,
    Endpoints,
}

/// Options of the fleet's Service.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.loadBalancerClass) || self.type == 'LoadBalancer'", "message": "loadBalancerClass needs type LoadBalancer"},
    {"rule": "!has(self.externalTrafficPolicy) || self.type != 'ClusterIP'", "message": "externalTrafficPolicy needs type NodePort or LoadBalancer"}
]))]
pub struct ServiceOptions {
    /// `LoadBalancer` (default), `NodePort` or `ClusterIP`.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations of the Service (for example a cloud load balancer's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `Cluster` or `Local` (keeps client source addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<TrafficPolicy>,
    /// The load balancer implementation, for type `LoadBalancer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    LoadBalancer,
    NodePort,
    ClusterIP,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TrafficPolicy {
    Cluster,
    Local,
}

/// At most one of the two; both absent means `maxUnavailable: 1`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.minAvailable) && has(self.maxUnavailable))", "message": "set minAvailable or maxUnavailable, not both"}
]))]
pub struct DisruptionBudget {
    /// Pods (or a percentage, `50%`) that must stay available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    /// Pods (or a percentage) that may be unavailable at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
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
    /// The `metadata.generation` this status describes.
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
    /// The pod's name.
    pub name: String,
    /// SHA-256 (hex, shortened) of the config the pod last loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Why the current config is not loaded, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

crate::named! {
    /// The condition types of a KengineInstance's status.
    pub InstanceCondition {
        Degraded,
        PlainHttpAdmin,
        Progressing,
        Ready,
    }
}

crate::named! {
    /// The reasons of a KengineInstance's conditions.
    pub InstanceReason {
        AllPodsLoaded,
        ApplyFailed,
        NoFailures,
        NotReady,
        PlainHttpAllowed,
        PodsNotReady,
        PushFailed,
        RollingOut,
        Settled,
    }
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
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../crds/kengineinstances.yaml"
        );
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == crd_yaml(),
            "crds/kengineinstances.yaml is stale: run `cargo run -- crd > crds/kengineinstances.yaml`"
        );
    }

    /// `kubectl explain` has something to say about every field.
    #[test]
    fn every_field_is_described() {
        use kube::CustomResourceExt;
        fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
            if !schema.is_object() {
                return;
            }
            if let Some(props) = schema["properties"].as_object() {
                for (name, sub) in props {
                    let here = format!("{path}.{name}");
                    let described = sub["description"].as_str().is_some_and(|d| !d.is_empty());
                    // apiVersion/kind/metadata are described by Kubernetes itself.
                    if !described && !path.is_empty() {
                        missing.push(here.clone());
                    }
                    walk(&here, sub, missing);
                }
            }
            walk(&format!("{path}[]"), &schema["items"], missing);
            if let Some(extra) = schema.get("additionalProperties") {
                walk(&format!("{path}{{}}"), extra, missing);
            }
        }
        let crd = serde_json::to_value(KengineInstance::crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        walk("", schema, &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:#?}"
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
