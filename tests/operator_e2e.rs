//! End to end: managed Kengine fleets on the real control plane. The pods
//! the operator's Deployments and DaemonSets get from the real ReplicaSet
//! and DaemonSet controllers run on the node agent (`support::node`: real
//! Caddy 2.8.4 and admin-proxy processes, each pod in its own network
//! namespace with its own IP), traffic reaches them through their Services
//! and the real kube-proxy, and the real garbage collector removes what a
//! deleted owner leaves. Each test runs in its own network namespace.

use kengine_gateway_test_support as support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kengine_gateway::kengine::AdminClient;
use kengine_gateway::kengine::admin::{RemoteTls, install_crypto_provider};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;
use support::cluster::{cluster_for_node_agent, external_cluster, resource};
use support::node::{NODE_NAME, Node, PodInfo};

const CLIENT_NAME: &str = "kengine-gateway-controller";
const ADMIN_SERVER_NAME: &str = "admin.fleet.e2e.test";
/// Pods start in a few seconds; a certificate renewal takes 40.
const LIMIT: Duration = Duration::from_secs(60);

/// A throwaway CA for the admin-proxy's mutual TLS.
struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "fleet e2e CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { params, key, pem }
    }

    /// (certificate PEM, key PEM) for `name`, as CN and DNS SAN.
    fn leaf(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The admin-proxy's Secret, with a fresh server certificate.
    fn server_secret(&self, name: &str) -> Secret {
        let (cert, key) = self.leaf(ADMIN_SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth);
        let data = [
            ("tls.crt", cert),
            ("tls.key", key),
            ("ca.crt", self.pem.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
        .collect();
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Default::default()
        }
    }

    /// An admin API client for a pod, with the controller's identity.
    fn admin(&self, ip: Ipv4Addr) -> AdminClient {
        let (cert, key) = self.leaf(CLIENT_NAME, ExtendedKeyUsagePurpose::ClientAuth);
        let identity = cert + &key;
        let tls = RemoteTls {
            ca_pem: self.pem.as_bytes(),
            identity_pem: identity.as_bytes(),
            server_name: Some(ADMIN_SERVER_NAME),
        };
        AdminClient::remote(SocketAddr::from((ip, 2019)), Some(tls), LIMIT).unwrap()
    }
}

/// A Deployment with the operator's managed pod template.
fn managed_deployment(name: &str, secret: &str, replicas: i32) -> Deployment {
    let labels = json!({"app.kubernetes.io/name": "kengine", "app.kubernetes.io/instance": name});
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"e2e/template": "v1"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "volumes": [
                        {"name": "admin-socket", "emptyDir": {}},
                        {"name": "state", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "admin-tls", "secret": {"secretName": secret}},
                    ],
                    "containers": [
                        {
                            "name": "kengine", "image": "kengine:e2e",
                            "command": ["kengine", "run"],
                            "env": [
                                {"name": "CADDY_ADMIN", "value": "unix//run/kengine/admin.sock"},
                                {"name": "XDG_CONFIG_HOME", "value": "/var/lib/kengine/config"},
                                {"name": "XDG_DATA_HOME", "value": "/var/lib/kengine/data"},
                            ],
                            "volumeMounts": [
                                {"name": "admin-socket", "mountPath": "/run/kengine"},
                                {"name": "state", "mountPath": "/var/lib/kengine"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        },
                        {
                            "name": "admin-proxy", "image": "kengine-gateway:e2e",
                            "args": [
                                "admin-proxy", "--listen=$(POD_IP):2019",
                                "--socket=/run/kengine/admin.sock",
                                "--tls-cert=/etc/kengine/admin-tls/tls.crt",
                                "--tls-key=/etc/kengine/admin-tls/tls.key",
                                "--client-ca=/etc/kengine/admin-tls/ca.crt",
                                format!("--client-name={CLIENT_NAME}"),
                                "--health-addr=$(POD_IP):2020", "--reload-interval=1",
                            ],
                            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                            "volumeMounts": [
                                {"name": "admin-socket", "mountPath": "/run/kengine"},
                                {"name": "admin-tls", "mountPath": "/etc/kengine/admin-tls", "readOnly": true},
                            ],
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 2020}, "periodSeconds": 1},
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 2020}},
                        },
                    ],
                },
            },
        },
    }))
    .unwrap()
}

/// [`Node::until`].
async fn until<T>(
    node: &Node,
    what: &str,
    limit: Duration,
    check: impl AsyncFnMut() -> Option<T>,
) -> T {
    node.until(what, limit, check).await
}

fn condition(pod: &Pod, type_: &str) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    Some(conditions.iter().find(|c| c.type_ == type_)?.status.clone())
}

async fn accepts(addr: SocketAddr) -> bool {
    let connect = tokio::net::TcpStream::connect(addr);
    matches!(
        tokio::time::timeout(Duration::from_secs(2), connect).await,
        Ok(Ok(_))
    )
}

/// A client that gives up on one request after 5 s.
fn http() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// GET `url` with `Host: host`: the status and the body.
async fn http_get(http: &reqwest::Client, url: &str, host: Option<&str>) -> Option<(u16, String)> {
    let mut req = http.get(url);
    if let Some(host) = host {
        req = req.header("Host", host);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// The cluster IP of Service `ns/name`.
async fn cluster_ip(client: &kube::Client, ns: &str, name: &str) -> Ipv4Addr {
    let svc = support::cluster::get(
        client,
        &resource("", "v1", "Service", "services"),
        Some(ns),
        name,
    )
    .await;
    svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap()
}

#[test]
fn node_agent_runs_managed_pods() {
    if external_cluster() {
        eprintln!(
            "node_agent_runs_managed_pods: skipped against a real cluster (runs its own node)"
        );
        return;
    }
    support::netns::run(2, managed_pods());
}

async fn managed_pods() {
    install_crypto_provider();
    const NS: &str = "fleet";
    const NAME: &str = "kengine-edge";
    const SECRET: &str = "kengine-edge-admin-server";
    let cluster = cluster_for_node_agent().await;
    let node = Node::start(cluster.plane.as_ref().unwrap()).await;
    let client = cluster.client.clone();
    cluster.namespace(NS).await;
    let pp = PostParams::default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let http = http();
    let ca = TestCa::new();
    secrets
        .create(&pp, &ca.server_secret(SECRET))
        .await
        .unwrap();
    deployments
        .create(&pp, &managed_deployment(NAME, SECRET, 2))
        .await
        .unwrap();

    // Two pods come up: Kengine runs, the proxy answers /healthz but not
    // /readyz, and the API shows them Running with their IPs but not Ready.
    let pods = until(&node, "2 pods with a running proxy", LIMIT, async || {
        let pods: Vec<PodInfo> = node
            .pods()
            .into_iter()
            .filter(|p| p.namespace == NS)
            .collect();
        if pods.len() != 2 {
            return None;
        }
        for p in &pods {
            // Caddy creates its admin socket once it listens.
            p.admin_socket.as_ref()?.exists().then_some(())?;
            let url = format!("http://{}:2020/healthz", p.ip);
            (http_get(&http, &url, None).await?.0 == 200).then_some(())?;
        }
        Some(pods)
    })
    .await;
    for p in &pods {
        let url = format!("http://{}:2020/readyz", p.ip);
        let (ready, _) = http_get(&http, &url, None).await.unwrap();
        assert_ne!(ready, 200, "{} is ready before any config", p.name);
        let socket = p.admin_socket.as_ref().expect("admin socket");
        assert!(socket.starts_with(&p.volumes["admin-socket"]), "{socket:?}");
        let object = until(&node, "the pod's status", LIMIT, async || {
            let pod = pods_api.get(&p.name).await.ok()?;
            let statuses = pod.status.as_ref()?.container_statuses.clone()?;
            statuses
                .iter()
                .any(|c| c.name == "admin-proxy" && c.started == Some(true))
                .then_some(pod)
        })
        .await;
        let status = object.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip, Some(p.ip.to_string()));
        assert_eq!(condition(&object, "Ready").as_deref(), Some("False"));
        assert!(!p.ready && p.ready_config.is_none(), "{p:?}");
        let spec = object.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some(NODE_NAME));
        // Made by the real ReplicaSet controller for the Deployment.
        let owner = &object.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ReplicaSet", Some(true))
        );
        assert_eq!(
            (p.workload_kind.as_str(), p.workload.as_str()),
            ("Deployment", NAME)
        );
        assert_eq!(
            object.metadata.labels.as_ref().unwrap()["app.kubernetes.io/instance"],
            NAME
        );
    }
    assert_ne!(pods[0].ip, pods[1].ip);

    // A config loaded through the proxy makes that pod, and only it, Ready;
    // the node agent saw the config before it published Ready.
    let config = json!({"apps": {"http": {"servers": {"e2e": {
        "listen": [":8080"],
        "routes": [{"handle": [{"handler": "static_response", "body": "fleet"}]}],
    }}}}});
    let load = async |ip| {
        ca.admin(ip)
            .load(serde_json::to_vec(&config).unwrap())
            .await
            .unwrap_or_else(|e| panic!("load into {ip}: {e}\n{}", node.diagnostics()));
    };
    load(pods[0].ip).await;
    until(&node, "the configured pod to be Ready", LIMIT, async || {
        let pod = pods_api.get(&pods[0].name).await.ok()?;
        (condition(&pod, "Ready")? == "True").then_some(())
    })
    .await;
    let first = node.pod(NS, &pods[0].name).unwrap();
    assert_eq!(first.ready_config.as_ref(), Some(&config));
    assert!(!node.pod(NS, &pods[1].name).unwrap().ready);

    // Each pod listens on the same port at its own address.
    load(pods[1].ip).await;
    until(&node, "2 ready replicas", LIMIT, async || {
        let status = deployments.get(NAME).await.ok()?.status?;
        (status.ready_replicas == Some(2) && status.observed_generation == Some(1)).then_some(())
    })
    .await;
    assert_eq!(
        node.pod(NS, &pods[1].name).unwrap().ready_config.as_ref(),
        Some(&config)
    );
    for p in &pods {
        let answer = http_get(&http, &format!("http://{}:8080/", p.ip), None).await;
        assert_eq!(answer, Some((200, "fleet".to_string())), "{}", p.name);
    }
    // And a ClusterIP Service reaches them through kube-proxy.
    support::cluster::apply(
        &client,
        &resource("", "v1", "Service", "services"),
        Some(NS),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME, "namespace": NS},
            "spec": {"selector": {"app.kubernetes.io/instance": NAME},
                "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await;
    let ip = cluster_ip(&client, NS, NAME).await;
    until(
        &node,
        "the Service answering through kube-proxy",
        LIMIT,
        async || {
            let answer = http_get(&http, &format!("http://{ip}/"), None).await?;
            (answer == (200, "fleet".to_string())).then_some(())
        },
    )
    .await;

    // Scaling up adds a pod, which waits for its config.
    deployments
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let third = until(&node, "a third pod", LIMIT, async || {
        let status = deployments.get(NAME).await.ok()?.status?;
        let new = (node.pods().into_iter())
            .find(|p| p.namespace == NS && !pods.iter().any(|old| old.name == p.name))?;
        (status.replicas == Some(3) && status.observed_generation == Some(2)).then_some(new)
    })
    .await;
    assert!(!third.ready, "{third:?}");
    let status = deployments.get(NAME).await.unwrap().status.unwrap();
    assert_eq!(status.ready_replicas, Some(2));

    // A rotated Secret reaches every pod's files.
    let rotated = ca.server_secret(SECRET);
    let new_cert = rotated.data.as_ref().unwrap()["tls.crt"].0.clone();
    secrets
        .replace(SECRET, &pp, &{
            let mut s = rotated;
            s.metadata.resource_version =
                secrets.get(SECRET).await.unwrap().metadata.resource_version;
            s
        })
        .await
        .unwrap();
    until(
        &node,
        "the rotated certificate in every pod",
        LIMIT,
        async || {
            node.pods()
                .iter()
                .filter(|p| p.namespace == NS)
                .all(|p| {
                    std::fs::read(p.volumes["admin-tls"].join("tls.crt")).ok()
                        == Some(new_cert.clone())
                })
                .then_some(())
        },
    )
    .await;

    // Deleting the Deployment: the real garbage collector deletes its
    // ReplicaSet and their pods, and the node stops every process.
    let all: Vec<PodInfo> = node
        .pods()
        .into_iter()
        .filter(|p| p.namespace == NS)
        .collect();
    assert_eq!(all.len(), 3);
    deployments
        .delete(NAME, &DeleteParams::background())
        .await
        .unwrap();
    until(&node, "every process to stop", LIMIT, async || {
        let listed = pods_api.list(&ListParams::default()).await.ok()?;
        if node.pods().iter().any(|p| p.namespace == NS) || !listed.items.is_empty() {
            return None;
        }
        for p in &all {
            for port in [2019, 2020, 8080] {
                if accepts(SocketAddr::from((p.ip, port))).await {
                    return None;
                }
            }
        }
        Some(())
    })
    .await;
    node.stop().await;
    drop(cluster);
}

// ---------------------------------------------------------------------------
// The operator journey: from a KengineInstance to traffic through a managed
// fleet whose admin API the controller reaches over mutual TLS.

mod journey {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use k8s_openapi::api::core::v1::Secret;
    use kengine_gateway::kengine::admin::RemoteTls;
    use kengine_gateway::kengine::{AdminAddr, AdminClient};
    use kube::api::Api;
    use kube::core::ApiResource;
    use serde_json::{Value, json};

    use super::{LIMIT, cluster_ip, http, http_get, until};
    use crate::support::cluster::{
        apply, cluster_for_node_agent, condition, delete, external_cluster, get, get_opt, resource,
    };
    use crate::support::node::{Node, PodInfo};

    const NS: &str = "journey";
    const GW: &str = "gateway.networking.k8s.io";
    /// Listener ports of this test's Gateways.
    const SHARED_PORT: u16 = 18571;
    const OWN_PORT: u16 = 18572;
    const DS_PORT: u16 = 18573;
    /// A certificate of 60 s is renewed after 40.
    const RENEWAL: Duration = Duration::from_secs(90);

    fn ki() -> ApiResource {
        resource(
            "kengine.khulnasoft.com",
            "v1alpha1",
            "KengineInstance",
            "kengineinstances",
        )
    }
    fn gateway() -> ApiResource {
        resource(GW, "v1", "Gateway", "gateways")
    }
    fn route() -> ApiResource {
        resource(GW, "v1", "HTTPRoute", "httproutes")
    }
    fn deployment() -> ApiResource {
        resource("apps", "v1", "Deployment", "deployments")
    }
    fn service() -> ApiResource {
        resource("", "v1", "Service", "services")
    }

    /// PEM text of a Secret's key.
    async fn secret(client: &kube::Client, name: &str, key: &str) -> Option<String> {
        let s = Api::<Secret>::namespaced(client.clone(), NS)
            .get_opt(name)
            .await
            .unwrap()?;
        let bytes = s.data?.get(key)?.0.clone();
        String::from_utf8(bytes).ok()
    }

    /// An admin client with the controller's identity from the client Secret.
    async fn controller_admin(client: &kube::Client, ip: Ipv4Addr) -> AdminClient {
        let ca = secret(client, "kengine-edge-admin-client", "ca.crt")
            .await
            .unwrap();
        let identity = format!(
            "{}\n{}",
            secret(client, "kengine-edge-admin-client", "tls.crt")
                .await
                .unwrap(),
            secret(client, "kengine-edge-admin-client", "tls.key")
                .await
                .unwrap()
        );
        AdminClient::remote(
            SocketAddr::new(ip.into(), 2019),
            Some(RemoteTls {
                ca_pem: ca.as_bytes(),
                identity_pem: identity.as_bytes(),
                server_name: Some("edge.journey.admin.kengine.internal"),
            }),
            Duration::from_secs(5),
        )
        .unwrap()
    }

    /// A certificate for the controller's name from a CA the fleet never saw.
    fn impostor() -> String {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "impostor CA");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(vec!["kengine-gateway-controller".to_string()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "kengine-gateway-controller");
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        format!("{}\n{}", cert.pem(), key.serialize_pem())
    }

    /// `GET /` with `Host: host` at `addr`: the status and the echo pod
    /// that answered.
    async fn answer(
        http: &reqwest::Client,
        addr: SocketAddr,
        host: &str,
    ) -> Option<(u16, Option<String>)> {
        let (status, body) = http_get(http, &format!("http://{addr}/"), Some(host)).await?;
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        Some((status, body["pod"].as_str().map(str::to_string)))
    }

    fn serves(config: &Value, host: &str) -> bool {
        config.to_string().contains(host)
    }

    /// Every upstream `dial` of a config, sorted and deduplicated.
    fn dials(config: &Value) -> Vec<String> {
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(map) => {
                    for (k, v) in map {
                        match (k.as_str(), v) {
                            ("dial", Value::String(d)) => out.push(d.clone()),
                            _ => walk(v, out),
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(config, &mut out);
        out.sort();
        out.dedup();
        out
    }

    /// The fleet's pods on the node.
    fn fleet(node: &Node, workload: &str) -> Vec<PodInfo> {
        node.pods()
            .into_iter()
            .filter(|p| p.namespace == NS && p.workload == workload)
            .collect()
    }

    /// The config a pod runs, read from its admin socket.
    async fn running_config(pod: &PodInfo) -> Option<Value> {
        let admin = AdminClient::new(
            AdminAddr::Unix(pod.admin_socket.clone()?),
            Duration::from_secs(5),
        )
        .ok()?;
        admin.config().await.ok()
    }

    /// Requests through `addr` until stopped (each bounded by the client's
    /// timeout); counts 200 and other answers.
    fn traffic(addr: SocketAddr, stop: Arc<AtomicU64>) -> tokio::task::JoinHandle<(u64, u64)> {
        tokio::spawn(async move {
            let http = http();
            let (mut ok, mut bad) = (0, 0);
            while stop.load(Ordering::Relaxed) == 0 {
                match answer(&http, addr, "journey.example").await {
                    Some((200, _)) => ok += 1,
                    _ => bad += 1,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, bad)
        })
    }

    #[test]
    fn operator_journey() {
        if external_cluster() {
            // A real cluster runs the operator's Deployments itself, with
            // images that are not published yet; this journey needs the
            // node agent.
            eprintln!("operator_journey: skipped against a real cluster (needs published images)");
            return;
        }
        crate::support::netns::run(4, journey());
    }

    async fn journey() {
        kengine_gateway::kengine::admin::install_crypto_provider();
        let cluster = cluster_for_node_agent().await;
        let node = Node::start(cluster.plane.as_ref().unwrap()).await;
        let c = &cluster.client;
        let dir = tempfile::tempdir().unwrap();
        cluster.namespace(NS).await;
        crate::support::cluster::echo_backend(c, NS, "web").await;
        let web_ip = cluster_ip(c, NS, "web").await;

        // 1. A KengineInstance and a GatewayClass that shares it.
        apply(
            c,
            &ki(),
            Some(NS),
            json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
            "metadata": {"name": "edge", "namespace": NS},
            "spec": {"mode": "Deployment", "replicas": 1, "service": {"type": "ClusterIP"}}}),
        )
        .await;
        let class = resource(GW, "v1", "GatewayClass", "gatewayclasses");
        apply(c, &class, None, json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "kengine-journey"},
            "spec": {"controllerName": "kengine.khulnasoft.com/gateway-controller",
                "parametersRef": {"group": "kengine.khulnasoft.com", "kind": "KengineInstance", "name": "edge", "namespace": NS}}})).await;
        // The chart's RBAC, its ServiceAccount's token.
        let controller = cluster.controller(
            "journey",
            dir.path(),
            &[
                "--leader-elect=false",
                "--flavor=caddy",
                "--resync-seconds=2",
                "--admin-cert-lifetime=60",
                "--operator-namespace=kengine-system",
            ],
        );

        // 2. A Gateway and an HTTPRoute: the fleet comes up, gets its config
        //    over mutual TLS and serves through its Service.
        apply(
            c,
            &gateway(),
            Some(NS),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": NS, "labels": {"test": "journey"}},
            "spec": {"gatewayClassName": "kengine-journey",
                "infrastructure": {"labels": {"team": "edge"}, "annotations": {"owner": "journey"}},
                "listeners": [{"name": "http", "protocol": "HTTP", "port": SHARED_PORT}]}}),
        )
        .await;
        let web_route = |hosts: Vec<&str>| {
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"parentRefs": [{"name": "gw"}], "hostnames": hosts,
                "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}})
        };
        apply(c, &route(), Some(NS), web_route(vec!["journey.example"])).await;

        let http = http();
        let shared = until(&node, "the fleet's Service", LIMIT, async || {
            get_opt(c, &service(), Some(NS), "kengine-edge").await?;
            Some(SocketAddr::from((
                cluster_ip(c, NS, "kengine-edge").await,
                SHARED_PORT,
            )))
        })
        .await;
        until(
            &node,
            "traffic through the managed fleet",
            LIMIT,
            async || {
                let answer = answer(&http, shared, "journey.example").await?;
                (answer == (200, Some("web".into()))).then_some(())
            },
        )
        .await;
        let pods = until(&node, "the pod Ready", LIMIT, async || {
            let pods = fleet(&node, "kengine-edge");
            pods.iter().all(|p| p.ready).then_some(pods)
        })
        .await;
        assert_eq!(pods.len(), 1, "{}", node.diagnostics());
        let first = &pods[0];
        assert_eq!(first.workload_kind, "Deployment");
        assert!(
            first
                .ready_config
                .as_ref()
                .is_some_and(|c| serves(c, "journey.example")),
            "the pod turned Ready before it had its config: {:?}",
            first.ready_config
        );
        // ClusterIP mode: the fleet dials the backend's Service.
        let web_dial = format!("{web_ip}:80");
        assert!(
            serves(first.ready_config.as_ref().unwrap(), &web_dial),
            "dials {web_dial}"
        );

        until(
            &node,
            "the Gateway Programmed and the instance Ready",
            LIMIT,
            async || {
                let g = get(c, &gateway(), Some(NS), "gw").await;
                let i = get(c, &ki(), Some(NS), "edge").await;
                let programmed =
                    condition(&g["status"]["conditions"], "Programmed")?["status"] == "True";
                let ready = condition(&i["status"]["conditions"], "Ready")?["status"] == "True";
                (programmed && ready && i["status"]["readyReplicas"] == 1).then_some(())
            },
        )
        .await;
        let i = get(c, &ki(), Some(NS), "edge").await;
        assert_eq!(i["status"]["gateways"], json!([format!("{NS}/gw")]));

        // What the operator generated: owned by the instance, labelled with
        // the Gateway's infrastructure labels, the Service on the listener port.
        let svc = get(c, &service(), Some(NS), "kengine-edge").await;
        assert_eq!(svc["spec"]["ports"][0]["port"], SHARED_PORT);
        assert_eq!(svc["metadata"]["labels"]["team"], "edge");
        assert_eq!(
            svc["metadata"]["ownerReferences"][0]["kind"],
            "KengineInstance"
        );
        let netpol = get(
            c,
            &resource(
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
            ),
            Some(NS),
            "kengine-edge",
        )
        .await;
        assert_eq!(netpol["spec"]["ingress"][0]["ports"][0]["port"], 2019);
        assert_eq!(
            netpol["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "kengine-system"
        );
        let sa = get(
            c,
            &resource("", "v1", "ServiceAccount", "serviceaccounts"),
            Some(NS),
            "kengine-edge",
        )
        .await;
        assert_eq!(sa["automountServiceAccountToken"], false);
        assert!(
            get_opt(
                c,
                &resource(
                    "policy",
                    "v1",
                    "PodDisruptionBudget",
                    "poddisruptionbudgets"
                ),
                Some(NS),
                "kengine-edge"
            )
            .await
            .is_some()
        );
        let deploy = get(c, &deployment(), Some(NS), "kengine-edge").await;
        assert_eq!(
            deploy["spec"]["template"]["metadata"]["annotations"]["owner"],
            "journey"
        );

        let events = resource("events.k8s.io", "v1", "Event", "events");
        until(
            &node,
            "a CertificateIssued Event on the instance",
            LIMIT,
            async || {
                let list = crate::support::cluster::api(c, &events, Some(NS))
                    .list(&Default::default())
                    .await
                    .ok()?;
                list.items
                    .iter()
                    .map(|e| serde_json::to_value(e).unwrap())
                    .any(|e| e["reason"] == "CertificateIssued" && e["regarding"]["name"] == "edge")
                    .then_some(())
            },
        )
        .await;

        // 3. Admin access needs the controller's certificate from the instance CA.
        let ip = first.ip;
        let admin = controller_admin(c, ip).await;
        assert!(
            admin.config().await.is_ok(),
            "the controller's identity is let in"
        );
        let ca = secret(c, "kengine-edge-admin-client", "ca.crt")
            .await
            .unwrap();
        let impostor = impostor();
        let other = AdminClient::remote(
            SocketAddr::new(ip.into(), 2019),
            Some(RemoteTls {
                ca_pem: ca.as_bytes(),
                identity_pem: impostor.as_bytes(),
                server_name: Some("edge.journey.admin.kengine.internal"),
            }),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(
            other.config().await.is_err(),
            "a certificate from another CA is refused"
        );
        let anonymous = reqwest::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        assert!(
            anonymous
                .get(format!("https://{ip}:2019/config/"))
                .send()
                .await
                .is_err(),
            "no client certificate is refused"
        );
        assert!(
            anonymous
                .get(format!("http://{ip}:2019/config/"))
                .send()
                .await
                .map(|r| r.status() != 200)
                .unwrap_or(true),
            "plain HTTP gets nothing"
        );
        // The CA key stays out of the pods: only the server Secret is mounted.
        let mounted: Vec<String> = first
            .volumes
            .values()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        let ca_key = secret(c, "kengine-edge-admin-ca", "tls.key").await.unwrap();
        assert!(
            !mounted.iter().any(|f| f.contains(ca_key.trim())),
            "the CA key reached a pod"
        );

        // 4. Scale to 3 under traffic through the Service: every new pod has
        //    the config before it is Ready, and no request fails.
        let server_cert = secret(c, "kengine-edge-admin-server", "tls.crt")
            .await
            .unwrap();
        let client_cert = secret(c, "kengine-edge-admin-client", "tls.crt")
            .await
            .unwrap();
        let stop = Arc::new(AtomicU64::new(0));
        let load = traffic(shared, stop.clone());
        apply(
            c,
            &ki(),
            Some(NS),
            json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
            "metadata": {"name": "edge", "namespace": NS},
            "spec": {"mode": "Deployment", "replicas": 3, "service": {"type": "ClusterIP"}}}),
        )
        .await;
        until(&node, "3 ready pods", LIMIT, async || {
            let pods = fleet(&node, "kengine-edge");
            (pods.len() == 3 && pods.iter().all(|p| p.ready)).then_some(())
        })
        .await;
        for pod in fleet(&node, "kengine-edge") {
            assert!(
                pod.ready_config
                    .as_ref()
                    .is_some_and(|c| serves(c, "journey.example")),
                "pod {} turned Ready before it had its config",
                pod.name
            );
        }
        until(&node, "readyReplicas 3", LIMIT, async || {
            (get(c, &ki(), Some(NS), "edge").await["status"]["readyReplicas"] == 3).then_some(())
        })
        .await;

        // 5. Certificate rotation (lifetime 60 s: renewed after 40 s) keeps
        //    pushes and traffic working.
        until(
            &node,
            "the admin certificates renewed",
            RENEWAL,
            async || {
                let server = secret(c, "kengine-edge-admin-server", "tls.crt").await?;
                let client = secret(c, "kengine-edge-admin-client", "tls.crt").await?;
                (server != server_cert && client != client_cert).then_some(())
            },
        )
        .await;
        stop.store(1, Ordering::Relaxed);
        let (ok, bad) = load.await.unwrap();
        assert!(
            ok > 50 && bad == 0,
            "scaling and rotation under traffic: {ok} ok, {bad} failed"
        );
        apply(
            c,
            &route(),
            Some(NS),
            web_route(vec!["journey.example", "rotated.example"]),
        )
        .await;
        until(
            &node,
            "every pod loaded the change over the rotated certificates",
            LIMIT,
            async || {
                for pod in fleet(&node, "kengine-edge") {
                    if !serves(&running_config(&pod).await?, "rotated.example") {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
        let fresh = controller_admin(c, fleet(&node, "kengine-edge")[2].ip).await;
        assert!(
            fresh.config().await.is_ok(),
            "the renewed client certificate is accepted"
        );

        // 6. A Kengine container that restarts gets its config back, and
        //    changes made behind the operator's back are undone.
        let victim = fleet(&node, "kengine-edge")[0].name.clone();
        node.kill(NS, &victim, "kengine");
        until(
            &node,
            "the restarted pod Ready with its config",
            LIMIT,
            async || {
                let p = node.pod(NS, &victim)?;
                let restarted = p
                    .containers
                    .iter()
                    .any(|c| c.name == "kengine" && c.restarts > 0);
                if !(restarted && p.ready) {
                    return None;
                }
                serves(&running_config(&p).await?, "rotated.example").then_some(())
            },
        )
        .await;
        let netpol = resource(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
        );
        delete(c, &netpol, Some(NS), "kengine-edge").await;
        let scaled = kube::api::Patch::Merge(json!({"spec": {"replicas": 1}}));
        crate::support::cluster::api(c, &deployment(), Some(NS))
            .patch("kengine-edge", &kube::api::PatchParams::default(), &scaled)
            .await
            .unwrap();
        until(&node, "the drift undone", LIMIT, async || {
            let restored = get_opt(c, &netpol, Some(NS), "kengine-edge")
                .await
                .is_some();
            let d = get(c, &deployment(), Some(NS), "kengine-edge").await;
            (restored && d["spec"]["replicas"] == 3).then_some(())
        })
        .await;

        // 7. A DaemonSet fleet that a Gateway names in its infrastructure:
        //    one pod on the one node.
        let own_class = resource(GW, "v1", "GatewayClass", "gatewayclasses");
        apply(
            c,
            &own_class,
            None,
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "kengine-journey-own"},
            "spec": {"controllerName": "kengine.khulnasoft.com/gateway-controller"}}),
        )
        .await;
        apply(
            c,
            &ki(),
            Some(NS),
            json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
            "metadata": {"name": "edge-ds", "namespace": NS},
            "spec": {"mode": "DaemonSet", "service": {"type": "ClusterIP"}}}),
        )
        .await;
        apply(c, &gateway(), Some(NS), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "ds", "namespace": NS},
            "spec": {"gatewayClassName": "kengine-journey-own",
                "infrastructure": {"parametersRef": {"group": "kengine.khulnasoft.com", "kind": "KengineInstance", "name": "edge-ds"}},
                "listeners": [{"name": "http", "protocol": "HTTP", "port": DS_PORT}]}})).await;
        apply(
            c,
            &route(),
            Some(NS),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "ds-web", "namespace": NS},
            "spec": {"parentRefs": [{"name": "ds"}], "hostnames": ["ds.example"],
                "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}),
        )
        .await;
        let ds = until(&node, "the DaemonSet fleet's Service", LIMIT, async || {
            get_opt(c, &service(), Some(NS), "kengine-edge-ds").await?;
            Some(SocketAddr::from((
                cluster_ip(c, NS, "kengine-edge-ds").await,
                DS_PORT,
            )))
        })
        .await;
        until(
            &node,
            "traffic through the DaemonSet fleet",
            LIMIT,
            async || {
                (answer(&http, ds, "ds.example").await? == (200, Some("web".into()))).then_some(())
            },
        )
        .await;
        let ds_pods = fleet(&node, "kengine-edge-ds");
        assert_eq!(ds_pods.len(), 1, "{ds_pods:?}");
        assert_eq!(ds_pods[0].workload_kind, "DaemonSet");
        assert!(
            get_opt(c, &ki(), Some(NS), "ds").await.is_none(),
            "a named fleet, no per-Gateway one"
        );

        // The ClusterIP fleets dial the backend's Service.
        for pod in fleet(&node, "kengine-edge") {
            let config = running_config(&pod).await.unwrap();
            assert!(serves(&config, &web_dial), "{config}");
        }
        // upstreamMode Endpoints: the DaemonSet fleet dials the echo pod
        // the real EndpointSlice controller published (its unnamed Service
        // port is `name: ""` there), not the cluster IP; the other fleet
        // is unchanged.
        let web_pod = node
            .pods()
            .into_iter()
            .find(|p| p.namespace == NS && p.workload == "web")
            .expect("the echo pod");
        let pod_dial = format!("{}:8080", web_pod.ip);
        apply(c, &ki(), Some(NS), json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
            "metadata": {"name": "edge-ds", "namespace": NS},
            "spec": {"mode": "DaemonSet", "service": {"type": "ClusterIP"}, "upstreamMode": "Endpoints"}})).await;
        until(
            &node,
            "the Endpoints fleet dialing the pod",
            LIMIT,
            async || {
                let pods = fleet(&node, "kengine-edge-ds");
                let config = running_config(pods.first()?).await?;
                (dials(&config) == std::slice::from_ref(&pod_dial)).then_some(())
            },
        )
        .await;
        assert_eq!(
            answer(&http, ds, "ds.example").await,
            Some((200, Some("web".into())))
        );
        for pod in fleet(&node, "kengine-edge") {
            let config = running_config(&pod).await.unwrap();
            assert_eq!(dials(&config), std::slice::from_ref(&web_dial), "{config}");
        }

        // 8. A Gateway without parametersRef gets its own fleet; deleting
        //    the Gateway makes the real garbage collector delete its
        //    instance, and with it the workloads and their pods.
        apply(
            c,
            &gateway(),
            Some(NS),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "solo", "namespace": NS},
            "spec": {"gatewayClassName": "kengine-journey-own",
                "listeners": [{"name": "http", "protocol": "HTTP", "port": OWN_PORT}]}}),
        )
        .await;
        until(
            &node,
            "the per-Gateway fleet Programmed",
            LIMIT,
            async || {
                let g = get(c, &gateway(), Some(NS), "solo").await;
                (condition(&g["status"]["conditions"], "Programmed")?["status"] == "True")
                    .then_some(())
            },
        )
        .await;
        let own = get(c, &ki(), Some(NS), "solo").await;
        assert_eq!(own["metadata"]["ownerReferences"][0]["kind"], "Gateway");
        until(&node, "the per-Gateway fleet's 2 pods", LIMIT, async || {
            (fleet(&node, "kengine-solo").len() == 2).then_some(())
        })
        .await;
        delete(c, &gateway(), Some(NS), "solo").await;
        until(&node, "the per-Gateway fleet gone", LIMIT, async || {
            let gone = get_opt(c, &ki(), Some(NS), "solo").await.is_none()
                && get_opt(c, &deployment(), Some(NS), "kengine-solo")
                    .await
                    .is_none()
                && fleet(&node, "kengine-solo").is_empty();
            gone.then_some(())
        })
        .await;
        // The shared fleet is untouched.
        assert_eq!(
            answer(&http, shared, "rotated.example").await,
            Some((200, Some("web".into())))
        );
        controller.assert_no_denials();
        drop(controller);
        node.stop().await;
        drop(cluster);
    }
}
