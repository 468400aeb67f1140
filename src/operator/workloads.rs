//! The objects a managed KengineInstance owns, as pure functions of the
//! instance, the listener ports of the Gateways it serves and the
//! operator's settings. The operator applies them with server-side apply.
//!
//! Every pod runs two containers: Kengine, whose admin API listens only on
//! a unix socket in a pod-local emptyDir, and `kengine-gateway admin-proxy`,
//! which serves the admin port with mutual TLS and gates the pod's
//! readiness on the first successful config load.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde_json::{Value, json};

use crate::crd::{KengineInstance, Mode, ServiceType, TrafficPolicy};
use crate::kengine::Flavor;
use crate::translate::ListenerPort;

pub use crate::crd::{ADMIN_PORT, HEALTH_PORT};
/// Selects everything the operator generated (its watches use it).
pub use kengine_gateway_model::names::MANAGED_BY_SELECTOR as MANAGED_BY;
use kengine_gateway_model::names::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
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

/// Metadata of a generated object: owned by the instance, so deleting the
/// instance deletes it.
fn metadata(instance: &KengineInstance, name: &str, infra: &Infrastructure) -> Value {
    let names = Names::of(instance);
    let mut meta = json!({
        "name": name,
        "namespace": instance.metadata.namespace,
        "labels": labels(&names, infra),
        "ownerReferences": [owner(instance)],
    });
    if !infra.annotations.is_empty() {
        meta["annotations"] = json!(infra.annotations);
    }
    meta
}

/// No `blockOwnerDeletion`: background deletion does not need it, and
/// setting it takes `update` on the owner's finalizers where the
/// OwnerReferencesPermissionEnforcement admission plugin runs.
fn owner(instance: &KengineInstance) -> Value {
    json!({
        "apiVersion": KengineInstance::api_version(&()),
        "kind": KengineInstance::kind(&()),
        "name": instance.metadata.name,
        "uid": instance.metadata.uid,
        "controller": true,
    })
}

/// Everything a managed instance owns except its Secrets (see `pki`), in
/// apply order. `ports` are the data-plane ports translate placed for it;
/// without any, the Service is left out (a Service needs a port).
pub fn desired(
    instance: &KengineInstance,
    ports: &BTreeSet<ListenerPort>,
    infra: &Infrastructure,
    settings: &Settings,
) -> Vec<Value> {
    let names = Names::of(instance);
    let mut objects = vec![
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": metadata(instance, &names.workload, infra),
            // Kengine never calls the Kubernetes API.
            "automountServiceAccountToken": false,
        }),
        workload(instance, &names, infra, settings),
    ];
    if !ports.is_empty() {
        objects.push(service(instance, &names, ports, infra));
    }
    if instance.spec.mode == Mode::Deployment {
        objects.push(disruption_budget(instance, &names, infra));
    }
    objects.push(network_policy(instance, &names, ports, infra, settings));
    objects
}

fn workload(
    instance: &KengineInstance,
    names: &Names,
    infra: &Infrastructure,
    settings: &Settings,
) -> Value {
    let spec = &instance.spec;
    let mut pod_meta = json!({"labels": labels(names, infra)});
    if !infra.annotations.is_empty() {
        pod_meta["annotations"] = json!(infra.annotations);
    }
    let template = json!({"metadata": pod_meta, "spec": pod_spec(instance, names, settings)});
    let selector = json!({"matchLabels": selector(names)});
    let metadata = metadata(instance, &names.workload, infra);
    match spec.mode {
        Mode::DaemonSet => json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": metadata,
            "spec": {
                "selector": selector,
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": template,
            },
        }),
        _ => json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
            "spec": {
                "replicas": spec.replicas.unwrap_or(2),
                "selector": selector,
                // A new pod takes traffic only once it has its config, and
                // an old one leaves only after that: no request meets a 404.
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": template,
            },
        }),
    }
}

fn pod_spec(instance: &KengineInstance, names: &Names, settings: &Settings) -> Value {
    let spec = &instance.spec;
    let hardened = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
    });
    let socket = format!("{SOCKET_DIR}/admin.sock");
    let kengine = json!({
        "name": "kengine",
        "image": spec.image.as_deref().unwrap_or(&settings.kengine_image),
        // Where Containerfile.kengine (and Caddy's image) put the binary;
        // absolute, so the image needs no PATH.
        "command": [format!("/usr/bin/{}", settings.flavor.binary()), "run"],
        "env": [
            {"name": settings.flavor.admin_env(), "value": format!("unix/{socket}")},
            {"name": "XDG_CONFIG_HOME", "value": format!("{STATE_DIR}/config")},
            {"name": "XDG_DATA_HOME", "value": format!("{STATE_DIR}/data")},
        ],
        "resources": spec.resources.clone().unwrap_or_default(),
        "securityContext": hardened,
        "volumeMounts": [
            {"name": "admin-socket", "mountPath": SOCKET_DIR},
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        // Endpoints drop the pod before Kengine stops accepting.
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
    });
    let probe =
        |path: &str| json!({"httpGet": {"path": path, "port": HEALTH_PORT}, "periodSeconds": 2});
    let proxy = json!({
        "name": "admin-proxy",
        "image": settings.proxy_image,
        "args": [
            "admin-proxy",
            format!("--listen=$(POD_IP):{ADMIN_PORT}"),
            format!("--socket={socket}"),
            format!("--tls-cert={TLS_DIR}/tls.crt"),
            format!("--tls-key={TLS_DIR}/tls.key"),
            format!("--client-ca={TLS_DIR}/ca.crt"),
            format!("--client-name={}", settings.client_name),
            format!("--health-addr=$(POD_IP):{HEALTH_PORT}"),
        ],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "admin", "containerPort": ADMIN_PORT}],
        // The pod is Ready only once its first config is loaded.
        "readinessProbe": probe("/readyz"),
        "livenessProbe": probe("/healthz"),
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": hardened,
        "volumeMounts": [
            {"name": "admin-socket", "mountPath": SOCKET_DIR},
            {"name": "admin-tls", "mountPath": TLS_DIR, "readOnly": true},
        ],
    });
    let mut pod = json!({
        "serviceAccountName": names.workload,
        "automountServiceAccountToken": false,
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
            // Listeners on ports below 1024 without any capability.
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
        },
        "terminationGracePeriodSeconds": 30,
        "containers": [kengine, proxy],
        "volumes": [
            {"name": "admin-socket", "emptyDir": {}},
            {"name": "state", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "admin-tls", "secret": {"secretName": names.server_secret, "defaultMode": 0o440}},
        ],
    });
    if let Some(policy) = &settings.pull_policy {
        for c in pod["containers"].as_array_mut().into_iter().flatten() {
            c["imagePullPolicy"] = json!(policy);
        }
    }
    if !settings.pull_secrets.is_empty() {
        let secrets: Vec<Value> = settings
            .pull_secrets
            .iter()
            .map(|n| json!({"name": n}))
            .collect();
        pod["imagePullSecrets"] = json!(secrets);
    }
    if !spec.node_selector.is_empty() {
        pod["nodeSelector"] = json!(spec.node_selector);
    }
    if !spec.tolerations.is_empty() {
        pod["tolerations"] = json!(spec.tolerations);
    }
    pod["affinity"] = match &spec.affinity {
        Some(a) => json!(a),
        None => json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": selector(names)}},
        }]}}),
    };
    pod
}

fn service(
    instance: &KengineInstance,
    names: &Names,
    ports: &BTreeSet<ListenerPort>,
    infra: &Infrastructure,
) -> Value {
    let options = instance.spec.service.clone().unwrap_or_default();
    let mut metadata = metadata(instance, &names.workload, infra);
    let mut annotations = infra.annotations.clone();
    annotations.extend(options.annotations.clone());
    if !annotations.is_empty() {
        metadata["annotations"] = json!(annotations);
    }
    let type_ = match options.type_ {
        ServiceType::LoadBalancer => "LoadBalancer",
        ServiceType::NodePort => "NodePort",
        ServiceType::ClusterIP => "ClusterIP",
    };
    let mut spec = json!({
        "type": type_,
        "selector": selector(names),
        "ports": ports.iter().map(|p| json!({
            "name": format!("{}-{}", p.protocol.name().to_lowercase(), p.port),
            "protocol": p.protocol.name(), "port": p.port, "targetPort": p.port,
        })).collect::<Vec<_>>(),
    });
    if let Some(policy) = options.external_traffic_policy {
        spec["externalTrafficPolicy"] = json!(match policy {
            TrafficPolicy::Cluster => "Cluster",
            TrafficPolicy::Local => "Local",
        });
    }
    if let Some(class) = &options.load_balancer_class {
        spec["loadBalancerClass"] = json!(class);
    }
    // The Gateways' static addresses: kube-proxy answers them like the
    // Service's own IPs.
    if !infra.external_ips.is_empty() {
        spec["externalIPs"] = json!(infra.external_ips);
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec})
}

fn disruption_budget(instance: &KengineInstance, names: &Names, infra: &Infrastructure) -> Value {
    let budget = instance
        .spec
        .pod_disruption_budget
        .clone()
        .unwrap_or_default();
    let mut spec = json!({"selector": {"matchLabels": selector(names)}});
    match (budget.min_available, budget.max_unavailable) {
        (Some(min), _) => spec["minAvailable"] = json!(min),
        (None, max) => spec["maxUnavailable"] = json!(max.unwrap_or(IntOrString::Int(1))),
    }
    json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": metadata(instance, &names.workload, infra),
        "spec": spec,
    })
}

/// Only the operator's pods reach the admin port; the data-plane ports are
/// open to all; nothing else gets in.
fn network_policy(
    instance: &KengineInstance,
    names: &Names,
    ports: &BTreeSet<ListenerPort>,
    infra: &Infrastructure,
    settings: &Settings,
) -> Value {
    let mut ingress = vec![json!({
        "from": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.operator_namespace}},
            "podSelector": {"matchLabels": settings.operator_labels},
        }],
        "ports": [{"protocol": "TCP", "port": ADMIN_PORT}],
    })];
    if !ports.is_empty() {
        ingress.push(json!({
            "ports": ports.iter().map(|p| json!({"protocol": p.protocol.name(), "port": p.port})).collect::<Vec<_>>(),
        }));
    }
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": metadata(instance, &names.workload, infra),
        "spec": {
            "podSelector": {"matchLabels": selector(names)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    })
}

/// One admin-TLS Secret of the instance (data: PEM text by key).
pub fn secret(
    instance: &KengineInstance,
    name: &str,
    data: &BTreeMap<String, String>,
    infra: &Infrastructure,
) -> Value {
    let data: BTreeMap<&String, k8s_openapi::ByteString> = data
        .iter()
        .map(|(k, v)| (k, k8s_openapi::ByteString(v.clone().into_bytes())))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": metadata(instance, name, infra),
        "type": "kubernetes.io/tls",
        "data": data,
    })
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
    fn golden(name: &str, objects: &[Value]) {
        let yaml: String = objects
            .iter()
            .map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).unwrap()))
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

    /// Every generated object parses as its Kubernetes type and survives a
    /// round trip unchanged, so no field name is misspelt.
    fn well_typed(objects: &[Value]) {
        use k8s_openapi::api::{apps, core, networking, policy};
        fn round<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Value {
            serde_json::to_value(serde_json::from_value::<T>(v.clone()).unwrap()).unwrap()
        }
        for o in objects {
            let back = match o["kind"].as_str().unwrap() {
                "ServiceAccount" => round::<core::v1::ServiceAccount>(o),
                "Deployment" => round::<apps::v1::Deployment>(o),
                "DaemonSet" => round::<apps::v1::DaemonSet>(o),
                "Service" => round::<core::v1::Service>(o),
                "PodDisruptionBudget" => round::<policy::v1::PodDisruptionBudget>(o),
                "NetworkPolicy" => round::<networking::v1::NetworkPolicy>(o),
                "Secret" => round::<core::v1::Secret>(o),
                k => panic!("unexpected kind {k}"),
            };
            assert_eq!(&back, o, "{} does not round-trip", o["kind"]);
        }
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
        let objects = desired(&ki, &tcp(&[80, 443]), &infra(), &settings);
        well_typed(&objects);
        golden("deployment", &objects);
        let pod = &objects[1]["spec"]["template"]["spec"];
        assert_eq!(pod["imagePullSecrets"][0]["name"], "registry");
        assert_eq!(pod["containers"][1]["imagePullPolicy"], "Always");
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount",
                "Deployment",
                "Service",
                "PodDisruptionBudget",
                "NetworkPolicy"
            ]
        );
        for o in &objects {
            assert_eq!(o["metadata"]["ownerReferences"][0]["uid"], "0000-ki");
            assert_eq!(o["metadata"]["labels"]["team"], "edge");
            assert_eq!(o["metadata"]["labels"][INSTANCE_LABEL], "edge");
        }
    }

    #[test]
    fn daemonset_fleet_without_listeners() {
        let ki = instance(serde_json::json!({"mode": "DaemonSet", "image": "my/kengine:1"}));
        let objects = desired(
            &ki,
            &BTreeSet::new(),
            &Infrastructure::default(),
            &settings(),
        );
        well_typed(&objects);
        golden("daemonset", &objects);
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        // No Service without a port, no PDB for a DaemonSet.
        assert_eq!(kinds, ["ServiceAccount", "DaemonSet", "NetworkPolicy"]);
        let policy = &objects[2]["spec"]["ingress"];
        assert_eq!(policy.as_array().unwrap().len(), 1, "only the admin rule");
    }

    #[test]
    fn pods_are_hardened_and_admin_is_reachable_only_by_the_operator() {
        let ki = instance(serde_json::json!({}));
        let objects = desired(&ki, &tcp(&[8080]), &Infrastructure::default(), &settings());
        let pod = &objects[1]["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        for c in pod["containers"].as_array().unwrap() {
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
            assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
        }
        // Kengine's own admin is a unix socket; only the proxy has a port.
        let kengine = &pod["containers"][0];
        assert_eq!(kengine["env"][0]["value"], "unix//run/kengine/admin.sock");
        assert!(kengine.get("ports").is_none());
        // The server Secret is mounted; the CA and client Secrets are not.
        let volumes = pod["volumes"].to_string();
        assert!(volumes.contains("kengine-edge-admin-server"));
        assert!(!volumes.contains("admin-ca") && !volumes.contains("admin-client"));
        let policy = &objects[4]["spec"]["ingress"];
        assert_eq!(policy[0]["ports"][0]["port"], ADMIN_PORT);
        assert_eq!(
            policy[0]["from"][0]["podSelector"]["matchLabels"]["app"],
            "operator"
        );
        assert_eq!(
            policy[0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "kengine-system"
        );
        assert_eq!(policy[1]["ports"][0]["port"], 8080);
        assert!(policy[1].get("from").is_none(), "data plane open to all");
        assert_eq!(objects[3]["spec"]["maxUnavailable"], 1);
        assert_eq!(objects[1]["spec"]["replicas"], 2);
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
        well_typed(std::slice::from_ref(&secret));
        assert_eq!(secret["type"], "kubernetes.io/tls");
        assert_eq!(secret["data"]["tls.crt"], "UEVN");
    }
}
