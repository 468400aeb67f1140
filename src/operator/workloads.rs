//! The objects a managed KengineInstance owns, as pure functions of the
//! instance, the listener ports of the Gateways it serves and the
//! operator's settings. The operator applies them with server-side apply.
//!
//! Every pod runs two containers: Kengine, whose admin API listens only on
//! a unix socket in a pod-local emptyDir, and `kengine-gateway admin-proxy`,
//! which serves the admin port with mutual TLS and gates the pod's
//! readiness on the first successful config load.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStrategy, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, Lifecycle, LifecycleHandler, LocalObjectReference, ObjectFieldSelector,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service,
    ServiceAccount, ServicePort, ServiceSpec, SleepAction, Sysctl, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde::Serialize;
use serde_json::Value;

use super::apply::ObjectId;

use crate::crd::{KengineInstance, Mode, ServiceType, TrafficPolicy};
use crate::kengine::Flavor;
use crate::translate::ListenerPort;

pub use crate::crd::{ADMIN_PORT, HEALTH_PORT};
/// Selects everything the operator generated (its watches use it).
pub use kengine_gateway_model::names::MANAGED_BY_SELECTOR as MANAGED_BY;
use kengine_gateway_model::names::{FLEET_FILES_DIR, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
/// The instance a generated object belongs to.
pub const INSTANCE_LABEL: &str = "kengine.khulnasoft.com/instance";
const SOCKET_DIR: &str = "/run/kengine";
const TLS_DIR: &str = "/etc/kengine/admin-tls";
const STATE_DIR: &str = "/var/lib/kengine";
/// The non-root user the containers run as.
const UID: i64 = 65532;

/// What the operator is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub flavor: Flavor,
    /// Default Kengine image of instances that name none.
    pub kengine_image: String,
    /// The image that provides `kengine-gateway admin-proxy` (the operator's).
    pub proxy_image: String,
    /// The operator's namespace and pod labels: the only admin-port clients
    /// the NetworkPolicy admits.
    pub operator_namespace: String,
    pub operator_labels: BTreeMap<String, String>,
    /// The identity the proxy requires in client certificates.
    pub client_name: String,
    /// `imagePullPolicy` of both containers (the cluster default when unset).
    pub pull_policy: Option<String>,
    /// Secrets (in each instance's namespace) for pulling the images.
    pub pull_secrets: Vec<String>,
}

/// Labels and annotations from the `infrastructure` of the Gateways an
/// instance serves; they go on every generated object and pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Infrastructure {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The static addresses translate gave the fleet's Service.
    pub external_ips: BTreeSet<std::net::IpAddr>,
}

/// Names of everything generated for one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Names {
    /// Deployment or DaemonSet, Service, ServiceAccount, PDB, NetworkPolicy.
    pub workload: String,
    pub ca_secret: String,
    pub server_secret: String,
    pub client_secret: String,
    /// The DNS name in the admin server certificate, which the controller checks.
    pub server_name: String,
    /// The value of [`INSTANCE_LABEL`].
    pub label: String,
}

impl Names {
    pub fn of(instance: &KengineInstance) -> Names {
        let name = instance.metadata.name.clone().unwrap_or_default();
        let namespace = instance.metadata.namespace.clone().unwrap_or_default();
        let workload = bounded(&format!("kengine-{name}"), 63);
        Names {
            ca_secret: format!("{workload}-admin-ca"),
            server_secret: format!("{workload}-admin-server"),
            client_secret: format!("{workload}-admin-client"),
            server_name: format!(
                "{}.{}.admin.kengine.internal",
                bounded(&name, 63),
                bounded(&namespace, 63)
            ),
            label: bounded(&name, 63),
            workload,
        }
    }
}

/// `name` as a DNS label of at most `max` bytes: dots become dashes, and a
/// name too long keeps its start and gains a hash of the whole.
fn bounded(name: &str, max: usize) -> String {
    let clean = name.replace('.', "-");
    if clean.len() <= max {
        return clean;
    }
    let hash = crate::sinks::fleet::short_hash(name.as_bytes());
    let keep = max - hash.len() - 1;
    format!("{}-{hash}", clean[..keep].trim_end_matches('-'))
}

/// The labels every generated object carries; the first two select pods.
pub fn labels(names: &Names, infra: &Infrastructure) -> BTreeMap<String, String> {
    let mut labels = infra.labels.clone();
    for (k, v) in selector(names).into_iter().chain([
        ("app.kubernetes.io/component".into(), "data-plane".into()),
        ("app.kubernetes.io/part-of".into(), "kengine-gateway".into()),
        (MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into()),
    ]) {
        labels.insert(k, v);
    }
    labels
}

pub fn selector(names: &Names) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "kengine".into()),
        (INSTANCE_LABEL.into(), names.label.clone()),
    ])
}

/// Everything a managed instance owns except its Secrets (see `pki`).
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub service_account: ServiceAccount,
    pub workload: Workload,
    /// Left out without data-plane ports: a Service needs a port.
    pub service: Option<Service>,
    /// Only for a Deployment.
    pub disruption_budget: Option<PodDisruptionBudget>,
    pub network_policy: NetworkPolicy,
}

impl Desired {
    /// The objects in apply order.
    pub fn into_objects(self) -> Vec<Owned> {
        let mut objects = vec![
            Owned::ServiceAccount(self.service_account),
            self.workload.into(),
        ];
        objects.extend(self.service.map(Owned::Service));
        objects.extend(self.disruption_budget.map(Owned::PodDisruptionBudget));
        objects.push(Owned::NetworkPolicy(self.network_policy));
        objects
    }
}

/// What runs the Kengine pods.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    Deployment(Deployment),
    DaemonSet(DaemonSet),
}

impl From<Workload> for Owned {
    fn from(workload: Workload) -> Owned {
        match workload {
            Workload::Deployment(d) => Owned::Deployment(d),
            Workload::DaemonSet(d) => Owned::DaemonSet(d),
        }
    }
}

/// One generated object (other than a Secret), of whichever kind.
/// Serializes as the object itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Owned {
    ServiceAccount(ServiceAccount),
    Deployment(Deployment),
    DaemonSet(DaemonSet),
    Service(Service),
    PodDisruptionBudget(PodDisruptionBudget),
    NetworkPolicy(NetworkPolicy),
}

impl Owned {
    pub fn id(&self) -> ObjectId {
        match self {
            Owned::ServiceAccount(o) => ObjectId::of(o),
            Owned::Deployment(o) => ObjectId::of(o),
            Owned::DaemonSet(o) => ObjectId::of(o),
            Owned::Service(o) => ObjectId::of(o),
            Owned::PodDisruptionBudget(o) => ObjectId::of(o),
            Owned::NetworkPolicy(o) => ObjectId::of(o),
        }
    }

    pub fn is_workload(&self) -> bool {
        matches!(self, Owned::Deployment(_) | Owned::DaemonSet(_))
    }

    /// The Deployment or DaemonSet, if it is one.
    pub fn into_workload(self) -> Option<Workload> {
        match self {
            Owned::Deployment(d) => Some(Workload::Deployment(d)),
            Owned::DaemonSet(d) => Some(Workload::DaemonSet(d)),
            _ => None,
        }
    }

    /// A watched copy (JSON) of this object, typed as its kind; `None` if
    /// it does not parse as one.
    pub fn typed(&self, live: &Value) -> Option<Owned> {
        fn parse<K: serde::de::DeserializeOwned>(live: &Value) -> Option<K> {
            K::deserialize(live).ok()
        }
        Some(match self {
            Owned::ServiceAccount(_) => Owned::ServiceAccount(parse(live)?),
            Owned::Deployment(_) => Owned::Deployment(parse(live)?),
            Owned::DaemonSet(_) => Owned::DaemonSet(parse(live)?),
            Owned::Service(_) => Owned::Service(parse(live)?),
            Owned::PodDisruptionBudget(_) => Owned::PodDisruptionBudget(parse(live)?),
            Owned::NetworkPolicy(_) => Owned::NetworkPolicy(parse(live)?),
        })
    }

    /// As JSON, the form of watched copies and of `render`'s output.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("Kubernetes objects always serialize")
    }
}

/// Metadata of a generated object: owned by the instance, so deleting the
/// instance deletes it.
fn metadata(instance: &KengineInstance, name: &str, infra: &Infrastructure) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: instance.metadata.namespace.clone(),
        labels: Some(labels(&Names::of(instance), infra)),
        annotations: non_empty(infra.annotations.clone()),
        owner_references: Some(vec![owner(instance)]),
        ..Default::default()
    }
}

/// No `blockOwnerDeletion`: background deletion does not need it, and
/// setting it takes `update` on the owner's finalizers where the
/// OwnerReferencesPermissionEnforcement admission plugin runs.
fn owner(instance: &KengineInstance) -> OwnerReference {
    OwnerReference {
        api_version: KengineInstance::api_version(&()).into_owned(),
        kind: KengineInstance::kind(&()).into_owned(),
        name: instance.metadata.name.clone().unwrap_or_default(),
        // Empty only in `render`, whose instances no API server has seen.
        uid: instance.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// An empty map or list is left out rather than written as `{}` or `[]`.
fn non_empty<C: Default + PartialEq>(collection: C) -> Option<C> {
    (collection != C::default()).then_some(collection)
}

fn match_labels(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    }
}

/// Everything a managed instance owns except its Secrets. `ports` are the
/// data-plane ports translate placed for it.
pub fn desired(
    instance: &KengineInstance,
    ports: &BTreeSet<ListenerPort>,
    infra: &Infrastructure,
    settings: &Settings,
) -> Desired {
    let names = Names::of(instance);
    Desired {
        service_account: ServiceAccount {
            metadata: metadata(instance, &names.workload, infra),
            // Kengine never calls the Kubernetes API.
            automount_service_account_token: Some(false),
            ..Default::default()
        },
        workload: workload(instance, &names, infra, settings),
        service: (!ports.is_empty()).then(|| service(instance, &names, ports, infra)),
        disruption_budget: (instance.spec.mode == Mode::Deployment)
            .then(|| disruption_budget(instance, &names, infra)),
        network_policy: network_policy(instance, &names, ports, infra, settings),
    }
}

fn workload(
    instance: &KengineInstance,
    names: &Names,
    infra: &Infrastructure,
    settings: &Settings,
) -> Workload {
    let spec = &instance.spec;
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(names, infra)),
            annotations: non_empty(infra.annotations.clone()),
            ..Default::default()
        }),
        spec: Some(pod_spec(instance, names, settings)),
    };
    let selector = match_labels(selector(names));
    let metadata = metadata(instance, &names.workload, infra);
    let rolling_update = Some("RollingUpdate".to_string());
    match spec.mode {
        Mode::DaemonSet => Workload::DaemonSet(DaemonSet {
            metadata,
            spec: Some(DaemonSetSpec {
                selector,
                update_strategy: Some(DaemonSetUpdateStrategy {
                    type_: rolling_update,
                    rolling_update: Some(RollingUpdateDaemonSet {
                        max_unavailable: Some(IntOrString::Int(1)),
                        max_surge: None,
                    }),
                }),
                template,
                ..Default::default()
            }),
            ..Default::default()
        }),
        _ => Workload::Deployment(Deployment {
            metadata,
            spec: Some(DeploymentSpec {
                replicas: Some(spec.replicas.unwrap_or(2)),
                selector,
                // A new pod takes traffic only once it has its config, and
                // an old one leaves only after that: no request meets a 404.
                strategy: Some(DeploymentStrategy {
                    type_: rolling_update,
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(1)),
                        max_unavailable: Some(IntOrString::Int(0)),
                    }),
                }),
                template,
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn pod_spec(instance: &KengineInstance, names: &Names, settings: &Settings) -> PodSpec {
    let spec = &instance.spec;
    let pull_secrets = settings
        .pull_secrets
        .iter()
        .map(|name| LocalObjectReference { name: name.clone() })
        .collect();
    PodSpec {
        service_account_name: Some(names.workload.clone()),
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(UID),
            run_as_group: Some(UID),
            fs_group: Some(UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            // Listeners on ports below 1024 without any capability.
            sysctls: Some(vec![Sysctl {
                name: "net.ipv4.ip_unprivileged_port_start".into(),
                value: "0".into(),
            }]),
            ..Default::default()
        }),
        termination_grace_period_seconds: Some(30),
        containers: vec![kengine(instance, settings), admin_proxy(settings)],
        volumes: Some(volumes(names)),
        image_pull_secrets: non_empty(pull_secrets),
        node_selector: non_empty(spec.node_selector.clone()),
        tolerations: non_empty(spec.tolerations.clone()),
        affinity: Some(spec.affinity.clone().unwrap_or_else(|| spread(names))),
        ..Default::default()
    }
}

fn socket() -> String {
    format!("{SOCKET_DIR}/admin.sock")
}

fn kengine(instance: &KengineInstance, settings: &Settings) -> Container {
    let spec = &instance.spec;
    let env = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    };
    Container {
        name: "kengine".into(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| settings.kengine_image.clone()),
        ),
        image_pull_policy: settings.pull_policy.clone(),
        // Where Containerfile.kengine (and Caddy's image) put the binary;
        // absolute, so the image needs no PATH.
        command: Some(vec![
            format!("/usr/bin/{}", settings.flavor.binary()),
            "run".into(),
        ]),
        env: Some(vec![
            env(settings.flavor.admin_env(), format!("unix/{}", socket())),
            env("XDG_CONFIG_HOME", format!("{STATE_DIR}/config")),
            env("XDG_DATA_HOME", format!("{STATE_DIR}/data")),
        ]),
        resources: Some(spec.resources.clone().unwrap_or_default()),
        security_context: Some(hardened()),
        volume_mounts: Some(vec![
            mount("admin-socket", SOCKET_DIR),
            mount("state", STATE_DIR),
            mount("tmp", "/tmp"),
            // What the config names, written by the admin proxy.
            VolumeMount {
                read_only: Some(true),
                ..mount("files", FLEET_FILES_DIR)
            },
        ]),
        // Endpoints drop the pod before Kengine stops accepting.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: 5 }),
                ..Default::default()
            }),
            post_start: None,
        }),
        ..Default::default()
    }
}

fn admin_proxy(settings: &Settings) -> Container {
    let quantities = |entries: &[(&str, &str)]| -> BTreeMap<String, Quantity> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    };
    Container {
        name: "admin-proxy".into(),
        image: Some(settings.proxy_image.clone()),
        image_pull_policy: settings.pull_policy.clone(),
        args: Some(vec![
            "admin-proxy".into(),
            format!("--listen=$(POD_IP):{ADMIN_PORT}"),
            format!("--socket={}", socket()),
            format!("--tls-cert={TLS_DIR}/tls.crt"),
            format!("--tls-key={TLS_DIR}/tls.key"),
            format!("--client-ca={TLS_DIR}/ca.crt"),
            format!("--client-name={}", settings.client_name),
            format!("--health-addr=$(POD_IP):{HEALTH_PORT}"),
            format!("--files-dir={FLEET_FILES_DIR}"),
        ]),
        env: Some(vec![EnvVar {
            name: "POD_IP".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("admin".into()),
            container_port: ADMIN_PORT.into(),
            ..Default::default()
        }]),
        // The pod is Ready only once its first config is loaded.
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/healthz")),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "10m"), ("memory", "16Mi")])),
            limits: Some(quantities(&[("memory", "64Mi")])),
            claims: None,
        }),
        security_context: Some(hardened()),
        volume_mounts: Some(vec![
            mount("admin-socket", SOCKET_DIR),
            VolumeMount {
                read_only: Some(true),
                ..mount("admin-tls", TLS_DIR)
            },
            mount("files", FLEET_FILES_DIR),
        ]),
        ..Default::default()
    }
}

/// Both containers: no privilege escalation, no capabilities, a read-only
/// root filesystem.
fn hardened() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..Default::default()
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(HEALTH_PORT.into()),
            ..Default::default()
        }),
        period_seconds: Some(2),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

fn volumes(names: &Names) -> Vec<Volume> {
    let empty = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    vec![
        empty("admin-socket"),
        empty("state"),
        empty("tmp"),
        // Private keys (backend client certificates): kept in memory.
        Volume {
            name: "files".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity("16Mi".into())),
            }),
            ..Default::default()
        },
        Volume {
            name: "admin-tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names.server_secret.clone()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
}

/// The affinity of instances that set none: prefer one pod per node.
fn spread(names: &Names) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".into(),
                        label_selector: Some(match_labels(selector(names))),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(
    instance: &KengineInstance,
    names: &Names,
    ports: &BTreeSet<ListenerPort>,
    infra: &Infrastructure,
) -> Service {
    let options = instance.spec.service.clone().unwrap_or_default();
    let mut annotations = infra.annotations.clone();
    annotations.extend(options.annotations);
    let type_ = match options.type_ {
        ServiceType::LoadBalancer => "LoadBalancer",
        ServiceType::NodePort => "NodePort",
        ServiceType::ClusterIP => "ClusterIP",
    };
    let traffic_policy = |policy| match policy {
        TrafficPolicy::Cluster => "Cluster".to_string(),
        TrafficPolicy::Local => "Local".to_string(),
    };
    let ports = ports.iter().map(|p| ServicePort {
        name: Some(format!("{}-{}", p.protocol.name().to_lowercase(), p.port)),
        protocol: Some(p.protocol.name().into()),
        port: p.port.into(),
        target_port: Some(IntOrString::Int(p.port.into())),
        ..Default::default()
    });
    Service {
        metadata: ObjectMeta {
            annotations: non_empty(annotations),
            ..metadata(instance, &names.workload, infra)
        },
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(selector(names)),
            ports: Some(ports.collect()),
            external_traffic_policy: options.external_traffic_policy.map(traffic_policy),
            load_balancer_class: options.load_balancer_class,
            // The Gateways' static addresses: kube-proxy answers them like
            // the Service's own IPs.
            external_ips: non_empty(infra.external_ips.iter().map(|ip| ip.to_string()).collect()),
            ..Default::default()
        }),
        status: None,
    }
}

fn disruption_budget(
    instance: &KengineInstance,
    names: &Names,
    infra: &Infrastructure,
) -> PodDisruptionBudget {
    let budget = instance
        .spec
        .pod_disruption_budget
        .clone()
        .unwrap_or_default();
    let (min_available, max_unavailable) = match (budget.min_available, budget.max_unavailable) {
        (Some(min), _) => (Some(min), None),
        (None, max) => (None, Some(max.unwrap_or(IntOrString::Int(1)))),
    };
    PodDisruptionBudget {
        metadata: metadata(instance, &names.workload, infra),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(match_labels(selector(names))),
            min_available,
            max_unavailable,
            ..Default::default()
        }),
        status: None,
    }
}

/// Only the operator's pods reach the admin port; the data-plane ports are
/// open to all; nothing else gets in.
fn network_policy(
    instance: &KengineInstance,
    names: &Names,
    ports: &BTreeSet<ListenerPort>,
    infra: &Infrastructure,
    settings: &Settings,
) -> NetworkPolicy {
    let port = |protocol: &str, port: u16| NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(port.into())),
        end_port: None,
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(match_labels(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            settings.operator_namespace.clone(),
        )]))),
        pod_selector: Some(match_labels(settings.operator_labels.clone())),
        ip_block: None,
    };
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(vec![operator]),
        ports: Some(vec![port("TCP", ADMIN_PORT)]),
    }];
    if !ports.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            from: None,
            ports: Some(
                ports
                    .iter()
                    .map(|p| port(p.protocol.name(), p.port))
                    .collect(),
            ),
        });
    }
    NetworkPolicy {
        metadata: metadata(instance, &names.workload, infra),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(match_labels(selector(names))),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            egress: None,
        }),
    }
}

/// One admin-TLS Secret of the instance (data: PEM text by key).
pub fn secret(
    instance: &KengineInstance,
    name: &str,
    data: &BTreeMap<String, String>,
    infra: &Infrastructure,
) -> Secret {
    let data = data
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
        .collect();
    Secret {
        metadata: metadata(instance, name, infra),
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::KengineInstanceSpec;

    fn instance(spec: serde_json::Value) -> KengineInstance {
        let mut ki = KengineInstance::new(
            "edge",
            serde_json::from_value::<KengineInstanceSpec>(spec).unwrap(),
        );
        ki.metadata.namespace = Some("apps".into());
        ki.metadata.uid = Some("0000-ki".into());
        ki
    }

    fn settings() -> Settings {
        Settings {
            flavor: Flavor::Kengine,
            kengine_image: "kengine:test".into(),
            proxy_image: "kengine-gateway:test".into(),
            operator_namespace: "kengine-system".into(),
            operator_labels: BTreeMap::from([("app".into(), "operator".into())]),
            client_name: "kengine-gateway-controller".into(),
            pull_policy: None,
            pull_secrets: Vec::new(),
        }
    }

    fn tcp(ports: &[u16]) -> BTreeSet<ListenerPort> {
        ports
            .iter()
            .map(|&port| ListenerPort {
                port,
                protocol: crate::translate::Transport::Tcp,
            })
            .collect()
    }

    fn infra() -> Infrastructure {
        Infrastructure {
            labels: BTreeMap::from([
                ("team".into(), "edge".into()),
                // Ours win: a Gateway cannot move pods out of their selector.
                (INSTANCE_LABEL.into(), "hijack".into()),
            ]),
            annotations: BTreeMap::from([("cost-center".into(), "42".into())]),
            external_ips: BTreeSet::from(["192.0.2.10".parse().unwrap()]),
        }
    }

    /// Compares with `testdata/NAME.yaml`; `UPDATE_GOLDEN=1` rewrites it.
    /// Through JSON values, so keys are sorted and the file reads like
    /// `render --output objects`.
    fn golden(name: &str, objects: &[Owned]) {
        let yaml: String = objects
            .iter()
            .map(|o| format!("---\n{}", serde_yaml_ng::to_string(&o.to_value()).unwrap()))
            .collect();
        let path = format!(
            "{}/src/operator/testdata/{name}.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &yaml).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            want == yaml,
            "{path} differs; rerun with UPDATE_GOLDEN=1 and review the diff"
        );
    }

    fn kinds(objects: &[Owned]) -> Vec<String> {
        objects.iter().map(|o| o.id().kind).collect()
    }

    fn pod(workload: &Workload) -> &PodSpec {
        let template = match workload {
            Workload::Deployment(d) => &d.spec.as_ref().unwrap().template,
            Workload::DaemonSet(d) => &d.spec.as_ref().unwrap().template,
        };
        template.spec.as_ref().unwrap()
    }

    fn ingress(policy: &NetworkPolicy) -> &[NetworkPolicyIngressRule] {
        policy.spec.as_ref().unwrap().ingress.as_deref().unwrap()
    }

    fn port_numbers(rule: &NetworkPolicyIngressRule) -> Vec<&IntOrString> {
        let ports = rule.ports.iter().flatten();
        ports.map(|p| p.port.as_ref().unwrap()).collect()
    }

    #[test]
    fn deployment_fleet() {
        let ki = instance(serde_json::json!({
            "replicas": 3,
            "resources": {"requests": {"cpu": "100m"}},
            "service": {"type": "LoadBalancer", "annotations": {"lb": "internal"}, "externalTrafficPolicy": "Local", "loadBalancerClass": "example.com/lb"},
            "podDisruptionBudget": {"minAvailable": "50%"},
            "nodeSelector": {"pool": "edge"},
            "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
        }));
        let settings = Settings {
            pull_policy: Some("Always".into()),
            pull_secrets: vec!["registry".into()],
            ..settings()
        };
        let desired = desired(&ki, &tcp(&[80, 443]), &infra(), &settings);
        let pod = pod(&desired.workload);
        assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "registry");
        assert_eq!(
            pod.containers[1].image_pull_policy.as_deref(),
            Some("Always")
        );
        let objects = desired.into_objects();
        golden("deployment", &objects);
        assert_eq!(
            kinds(&objects),
            [
                "ServiceAccount",
                "Deployment",
                "Service",
                "PodDisruptionBudget",
                "NetworkPolicy"
            ]
        );
        for o in &objects {
            let o = o.to_value();
            assert_eq!(o["metadata"]["ownerReferences"][0]["uid"], "0000-ki");
            assert_eq!(o["metadata"]["labels"]["team"], "edge");
            assert_eq!(o["metadata"]["labels"][INSTANCE_LABEL], "edge");
        }
    }

    #[test]
    fn daemonset_fleet_without_listeners() {
        let ki = instance(serde_json::json!({"mode": "DaemonSet", "image": "my/kengine:1"}));
        let desired = desired(
            &ki,
            &BTreeSet::new(),
            &Infrastructure::default(),
            &settings(),
        );
        // No Service without a port, no PDB for a DaemonSet.
        assert!(desired.service.is_none() && desired.disruption_budget.is_none());
        assert_eq!(
            ingress(&desired.network_policy).len(),
            1,
            "only the admin rule"
        );
        let objects = desired.into_objects();
        golden("daemonset", &objects);
        assert_eq!(
            kinds(&objects),
            ["ServiceAccount", "DaemonSet", "NetworkPolicy"]
        );
    }

    #[test]
    fn pods_are_hardened_and_admin_is_reachable_only_by_the_operator() {
        let ki = instance(serde_json::json!({}));
        let desired = desired(&ki, &tcp(&[8080]), &Infrastructure::default(), &settings());
        let pod = pod(&desired.workload);
        assert_eq!(pod.automount_service_account_token, Some(false));
        let security = pod.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(
            security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        for c in &pod.containers {
            let security = c.security_context.as_ref().unwrap();
            assert_eq!(security.read_only_root_filesystem, Some(true));
            assert_eq!(security.allow_privilege_escalation, Some(false));
            let drop = security.capabilities.as_ref().unwrap().drop.as_ref();
            assert_eq!(drop.unwrap(), &["ALL"]);
        }
        // Kengine's own admin is a unix socket; only the proxy has a port.
        let kengine = &pod.containers[0];
        assert_eq!(
            kengine.env.as_ref().unwrap()[0].value.as_deref(),
            Some("unix//run/kengine/admin.sock")
        );
        assert!(kengine.ports.is_none());
        // The server Secret is mounted; the CA and client Secrets are not.
        let secrets: Vec<&str> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.secret.as_ref()?.secret_name.as_deref())
            .collect();
        assert_eq!(secrets, ["kengine-edge-admin-server"]);
        let policy = ingress(&desired.network_policy);
        assert_eq!(
            port_numbers(&policy[0]),
            [&IntOrString::Int(ADMIN_PORT.into())]
        );
        let from = &policy[0].from.as_ref().unwrap()[0];
        let labels = |s: &Option<LabelSelector>| s.as_ref().unwrap().match_labels.clone().unwrap();
        assert_eq!(labels(&from.pod_selector)["app"], "operator");
        assert_eq!(
            labels(&from.namespace_selector)["kubernetes.io/metadata.name"],
            "kengine-system"
        );
        assert_eq!(port_numbers(&policy[1]), [&IntOrString::Int(8080)]);
        assert!(policy[1].from.is_none(), "data plane open to all");
        let budget = desired.disruption_budget.unwrap().spec.unwrap();
        assert_eq!(budget.max_unavailable, Some(IntOrString::Int(1)));
        let Workload::Deployment(deployment) = desired.workload else {
            panic!("a Deployment by default");
        };
        assert_eq!(deployment.spec.unwrap().replicas, Some(2));
    }

    #[test]
    fn long_names_stay_valid() {
        let mut ki = instance(serde_json::json!({}));
        ki.metadata.name = Some(format!("a.{}", "b".repeat(80)));
        let names = Names::of(&ki);
        assert!(names.workload.len() <= 63, "{}", names.workload);
        assert!(!names.workload.contains('.'));
        assert!(names.label.len() <= 63);
        assert!(
            names
                .server_name
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63)
        );
        let mut other = ki.clone();
        other.metadata.name = Some(format!("a.{}c", "b".repeat(80)));
        assert_ne!(
            Names::of(&other).workload,
            names.workload,
            "hash keeps them apart"
        );
    }

    #[test]
    fn secrets_hold_pem_text() {
        let ki = instance(serde_json::json!({}));
        let data = BTreeMap::from([("tls.crt".to_string(), "PEM".to_string())]);
        let secret = secret(
            &ki,
            "kengine-edge-admin-server",
            &data,
            &Infrastructure::default(),
        );
        let secret = serde_json::to_value(&secret).unwrap();
        assert_eq!(secret["type"], "kubernetes.io/tls");
        assert_eq!(secret["data"]["tls.crt"], "UEVN");
        assert_eq!(secret["metadata"]["name"], "kengine-edge-admin-server");
    }
}
