//! End to end: managed Kengine fleets. The workloads the operator creates run
//! on the fake kubelet of `support::workloads` (real Caddy 2.8.4 and
//! admin-proxy processes) against the Kubernetes API emulator.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kengine_gateway::kengine::AdminClient;
use kengine_gateway::kengine::admin::{RemoteTls, install_crypto_provider};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;
use support::apiserver_harness::KubeApiEmulator;
use support::workloads::{FakeKubelet, NODE_NAME};

const CLIENT_NAME: &str = "kengine-gateway-controller";
const ADMIN_SERVER_NAME: &str = "admin.fleet.e2e.test";
const LIMIT: Duration = Duration::from_secs(20);

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

/// Polls `check` until it gives `Some`; on timeout fails with the pods' logs.
async fn eventually<T>(
    kubelet: &FakeKubelet,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > LIMIT {
            panic!(
                "timed out after {LIMIT:?} waiting for {what}\n{}",
                kubelet.all_logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn condition(pod: &Pod, type_: &str) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    Some(conditions.iter().find(|c| c.type_ == type_)?.status.clone())
}

async fn accepts(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

async fn http_get(url: &str) -> Option<(u16, String)> {
    let resp = support::http().get(url).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_kubelet_runs_managed_pods() {
    install_crypto_provider();
    const NS: &str = "fleet";
    const NAME: &str = "kengine-edge";
    const SECRET: &str = "kengine-edge-admin-server";
    let emulator = KubeApiEmulator::start_with(Default::default());
    let client = emulator.client().await;
    let pp = PostParams::default();
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&pp, &namespace)
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let ca = TestCa::new();
    secrets
        .create(&pp, &ca.server_secret(SECRET))
        .await
        .unwrap();
    let deployment = deployments
        .create(&pp, &managed_deployment(NAME, SECRET, 2))
        .await
        .unwrap();
    let kubelet = FakeKubelet::start(client.clone(), NS, Ipv4Addr::new(127, 0, 41, 0));

    // Two pods come up: Kengine runs, the proxy answers /healthz but not
    // /readyz, and the API shows them Running with their IPs but not Ready.
    let pods = eventually(&kubelet, "2 pods with a running proxy", async || {
        let pods = kubelet.pods();
        if pods.len() != 2 {
            return None;
        }
        for p in &pods {
            // Caddy creates its admin socket once it listens.
            p.admin_socket.as_ref()?.exists().then_some(())?;
            let (health, _) = http_get(&format!("http://{}:2020/healthz", p.ip)).await?;
            (health == 200).then_some(())?;
        }
        Some(pods)
    })
    .await;
    for p in &pods {
        let (ready, _) = http_get(&format!("http://{}:2020/readyz", p.ip))
            .await
            .unwrap();
        assert_ne!(ready, 200, "{} is ready before any config", p.name);
        let socket = p.admin_socket.as_ref().expect("admin socket");
        assert!(socket.starts_with(&p.volumes["admin-socket"]), "{socket:?}");
        let object = eventually(&kubelet, "the pod's status", async || {
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
        let owner = &object.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Deployment", Some(true))
        );
        assert_eq!(Some(&owner.uid), deployment.metadata.uid.as_ref());
        assert_eq!(
            object.metadata.labels.as_ref().unwrap()["app.kubernetes.io/instance"],
            NAME
        );
        assert!(p.name.starts_with("kengine-edge-") && p.name.len() == NAME.len() + 6);
    }

    // A config loaded through the proxy makes that pod, and only it, Ready;
    // the kubelet saw the config before it published Ready.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = json!({"apps": {"http": {"servers": {"e2e": {
        "listen": [format!(":{port}")],
        "routes": [{"handle": [{"handler": "static_response", "body": "fleet"}]}],
    }}}}});
    let load = async |ip| {
        ca.admin(ip)
            .load(serde_json::to_vec(&config).unwrap())
            .await
            .unwrap_or_else(|e| panic!("load into {ip}: {e}\n{}", kubelet.all_logs()));
    };
    load(pods[0].ip).await;
    eventually(&kubelet, "the configured pod to be Ready", async || {
        let pod = pods_api.get(&pods[0].name).await.ok()?;
        (condition(&pod, "Ready")? == "True").then_some(())
    })
    .await;
    let first = kubelet.pod(&pods[0].name).unwrap();
    assert_eq!(first.ready_config.as_ref(), Some(&config));
    assert!(!kubelet.pod(&pods[1].name).unwrap().ready);

    // The second pod listens on the same port (SO_REUSEPORT).
    load(pods[1].ip).await;
    eventually(&kubelet, "2 ready replicas", async || {
        let status = deployments.get(NAME).await.ok()?.status?;
        (status.ready_replicas == Some(2) && status.observed_generation == Some(1)).then_some(())
    })
    .await;
    assert_eq!(
        kubelet.pod(&pods[1].name).unwrap().ready_config.as_ref(),
        Some(&config)
    );
    let answer = http_get(&format!("http://127.0.0.1:{port}/")).await;
    assert_eq!(answer, Some((200, "fleet".to_string())));

    // Scaling up adds a pod, which waits for its config.
    deployments
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let third = eventually(&kubelet, "a third pod", async || {
        let status = deployments.get(NAME).await.ok()?.status?;
        let pods = kubelet.pods();
        (pods.len() == 3 && status.replicas == Some(3) && status.observed_generation == Some(2))
            .then(|| pods[2].clone())
    })
    .await;
    assert!(!third.ready, "{third:?}");
    assert_eq!(
        deployments
            .get(NAME)
            .await
            .unwrap()
            .status
            .unwrap()
            .ready_replicas,
        Some(2)
    );

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
    eventually(
        &kubelet,
        "the rotated certificate in every pod",
        async || {
            kubelet
                .pods()
                .iter()
                .all(|p| {
                    std::fs::read(p.volumes["admin-tls"].join("tls.crt")).ok()
                        == Some(new_cert.clone())
                })
                .then_some(())
        },
    )
    .await;

    // Deleting the Deployment stops every process and removes the pods.
    let all = kubelet.pods();
    deployments
        .delete(NAME, &DeleteParams::background())
        .await
        .unwrap();
    eventually(&kubelet, "every process to stop", async || {
        if !kubelet.pods().is_empty()
            || !pods_api
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty()
        {
            return None;
        }
        for p in &all {
            if accepts(SocketAddr::from((p.ip, 2020))).await
                || accepts(SocketAddr::from((p.ip, 2019))).await
            {
                return None;
            }
        }
        (!accepts(SocketAddr::from(([127, 0, 0, 1], port))).await).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------
// The operator journey: from a KengineInstance to traffic through a managed
// fleet whose admin API the controller reaches over mutual TLS.

mod journey {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use k8s_openapi::api::core::v1::Secret;
    use kengine_gateway::kengine::admin::RemoteTls;
    use kengine_gateway::kengine::{AdminAddr, AdminClient};
    use kube::api::Api;
    use kube::core::ApiResource;
    use serde_json::{Value, json};

    use crate::support::cluster::{
        Controller, apply, condition, delete, eventually, get, get_opt, resource,
    };
    use crate::support::workloads::FakeKubelet;

    const NS: &str = "journey";
    const GW: &str = "gateway.networking.k8s.io";
    /// Data-plane ports of this test's Gateways (every fake pod shares them).
    const SHARED_PORT: u16 = 18571;
    const OWN_PORT: u16 = 18572;
    const DS_PORT: u16 = 18573;
    const LIMIT: Duration = Duration::from_secs(30);

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
    async fn controller_admin(client: &kube::Client, ip: std::net::Ipv4Addr) -> AdminClient {
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

    /// `GET /` with `Host: host` on the shared data-plane port answers 200.
    async fn answers(http: &reqwest::Client, port: u16, host: &str) -> Option<()> {
        let r = http
            .get(format!("http://127.0.0.1:{port}/"))
            .header("Host", host)
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    }

    fn serves(config: &Value, host: &str) -> bool {
        config.to_string().contains(host)
    }

    /// Requests through the shared port until stopped; counts non-200 answers.
    fn traffic(stop: Arc<AtomicU64>) -> tokio::task::JoinHandle<(u64, u64)> {
        tokio::spawn(async move {
            let http = crate::support::http();
            let (mut ok, mut bad) = (0, 0);
            while stop.load(Ordering::Relaxed) == 0 {
                let r = http
                    .get(format!("http://127.0.0.1:{SHARED_PORT}/"))
                    .header("Host", "journey.example")
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => ok += 1,
                    _ => bad += 1,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, bad)
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn operator_journey() {
        if std::env::var("KENGINE_GATEWAY_E2E_CLUSTER").as_deref() == Ok("1") {
            // A real cluster runs the operator's Deployments itself, with
            // images that are not published yet; this journey needs the
            // fake kubelet and the emulator.
            eprintln!("operator_journey: skipped against a real cluster (needs published images)");
            return;
        }
        kengine_gateway::kengine::admin::install_crypto_provider();
        // Still on the emulator: the fleet's pods need the node agent.
        let cluster = crate::support::cluster::emulator_cluster().await;
        let c = &cluster.client;
        let dir = tempfile::tempdir().unwrap();
        apply(
            c,
            &resource("", "v1", "Namespace", "namespaces"),
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        )
        .await;
        let kubelet = FakeKubelet::start(c.clone(), NS, "127.0.42.0".parse().unwrap());
        let backend = crate::support::echo("127.0.0.1", "web").await;
        apply(c, &resource("", "v1", "Service", "services"), Some(NS),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NS},
                "spec": {"clusterIP": backend.ip().to_string(), "ports": [{"port": backend.port()}]}})).await;

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
        let controller = Controller::start(
            &cluster.kubeconfig,
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
        //    over mutual TLS and serves.
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
                "rules": [{"backendRefs": [{"name": "web", "port": backend.port()}]}]}})
        };
        apply(c, &route(), Some(NS), web_route(vec!["journey.example"])).await;

        let http = crate::support::http();
        eventually("traffic through the managed fleet", LIMIT, async || {
            answers(&http, SHARED_PORT, "journey.example").await
        })
        .await;
        let pods = eventually("the pod Ready", LIMIT, async || {
            let pods = kubelet.pods();
            pods.iter().all(|p| p.ready).then_some(pods)
        })
        .await;
        assert_eq!(pods.len(), 1, "{}", kubelet.all_logs());
        let first = &pods[0];
        assert!(
            first
                .ready_config
                .as_ref()
                .is_some_and(|c| serves(c, "journey.example")),
            "the pod turned Ready before it had its config: {:?}",
            first.ready_config
        );

        eventually(
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
        let svc = get(
            c,
            &resource("", "v1", "Service", "services"),
            Some(NS),
            "kengine-edge",
        )
        .await;
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
        eventually(
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

        // 4. Scale to 3 under traffic: every new pod has the config before
        //    it is Ready, and no request fails.
        let server_cert = secret(c, "kengine-edge-admin-server", "tls.crt")
            .await
            .unwrap();
        let client_cert = secret(c, "kengine-edge-admin-client", "tls.crt")
            .await
            .unwrap();
        let stop = Arc::new(AtomicU64::new(0));
        let load = traffic(stop.clone());
        apply(
            c,
            &ki(),
            Some(NS),
            json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
            "metadata": {"name": "edge", "namespace": NS},
            "spec": {"mode": "Deployment", "replicas": 3, "service": {"type": "ClusterIP"}}}),
        )
        .await;
        eventually("3 ready pods", LIMIT, async || {
            let pods = kubelet.pods();
            (pods.len() == 3 && pods.iter().all(|p| p.ready)).then_some(())
        })
        .await;
        for pod in kubelet.pods() {
            assert!(
                pod.ready_config
                    .as_ref()
                    .is_some_and(|c| serves(c, "journey.example")),
                "pod {} turned Ready before it had its config",
                pod.name
            );
        }
        eventually("readyReplicas 3", LIMIT, async || {
            (get(c, &ki(), Some(NS), "edge").await["status"]["readyReplicas"] == 3).then_some(())
        })
        .await;

        // 5. Certificate rotation (lifetime 60 s: renewed after 40 s) keeps
        //    pushes and traffic working.
        eventually(
            "the admin certificates renewed",
            Duration::from_secs(90),
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
        eventually(
            "every pod loaded the change over the rotated certificates",
            LIMIT,
            async || {
                for pod in kubelet.pods() {
                    let admin = AdminClient::new(
                        AdminAddr::Unix(pod.admin_socket.clone()?),
                        Duration::from_secs(5),
                    )
                    .ok()?;
                    if !serves(&admin.config().await.ok()?, "rotated.example") {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
        let fresh = controller_admin(c, kubelet.pods()[2].ip).await;
        assert!(
            fresh.config().await.is_ok(),
            "the renewed client certificate is accepted"
        );

        // 6. A Kengine container that restarts gets its config back, and
        //    changes made behind the operator's back are undone.
        let victim = kubelet.pods()[0].name.clone();
        kubelet.kill(&victim, "kengine");
        eventually(
            "the restarted pod Ready with its config",
            LIMIT,
            async || {
                let p = kubelet.pod(&victim)?;
                let restarted = p
                    .containers
                    .iter()
                    .any(|c| c.name == "kengine" && c.restarts > 0);
                if !(restarted && p.ready) {
                    return None;
                }
                let admin = AdminClient::new(
                    AdminAddr::Unix(p.admin_socket.clone()?),
                    Duration::from_secs(5),
                )
                .ok()?;
                serves(&admin.config().await.ok()?, "rotated.example").then_some(())
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
        eventually("the drift undone", LIMIT, async || {
            let restored = get_opt(c, &netpol, Some(NS), "kengine-edge")
                .await
                .is_some();
            let d = get(c, &deployment(), Some(NS), "kengine-edge").await;
            (restored && d["spec"]["replicas"] == 3).then_some(())
        })
        .await;

        // 7. A Gateway without parametersRef gets its own fleet, which goes
        //    away with it.
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

        // A DaemonSet fleet that a Gateway names in its infrastructure.
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
                "rules": [{"backendRefs": [{"name": "web", "port": backend.port()}]}]}}),
        )
        .await;
        eventually("traffic through the DaemonSet fleet", LIMIT, async || {
            answers(&http, DS_PORT, "ds.example").await
        })
        .await;
        let ds_pods: Vec<_> = kubelet
            .pods()
            .into_iter()
            .filter(|p| p.workload == "kengine-edge-ds")
            .collect();
        assert_eq!(ds_pods.len(), 1);
        assert_eq!(ds_pods[0].workload_kind, "DaemonSet");
        assert!(
            get_opt(c, &ki(), Some(NS), "ds").await.is_none(),
            "a named fleet, no per-Gateway one"
        );
        // upstreamMode Endpoints: that fleet dials the Service's ready
        // endpoint (another echo), the shared fleet still its ClusterIP.
        let pod_backend = crate::support::echo("127.0.0.3", "web-endpoint").await;
        apply(c, &resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"), Some(NS),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-1", "namespace": NS, "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "ports": [{"port": pod_backend.port()}],
                "endpoints": [{"addresses": ["127.0.0.3"], "conditions": {"ready": true}}]})).await;
        apply(c, &ki(), Some(NS), json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
            "metadata": {"name": "edge-ds", "namespace": NS},
            "spec": {"mode": "DaemonSet", "service": {"type": "ClusterIP"}, "upstreamMode": "Endpoints"}})).await;
        let ds_addr: SocketAddr = format!("127.0.0.1:{DS_PORT}").parse().unwrap();
        eventually(
            "the Endpoints fleet dials the endpoint",
            LIMIT,
            async || {
                (crate::support::get(&http, ds_addr, "ds.example", "/")
                    .await
                    .1
                    .as_deref()
                    == Some("web-endpoint"))
                .then_some(())
            },
        )
        .await;
        let shared: SocketAddr = format!("127.0.0.1:{SHARED_PORT}").parse().unwrap();
        assert_eq!(
            crate::support::get(&http, shared, "journey.example", "/")
                .await
                .1
                .as_deref(),
            Some("web"),
            "the ClusterIP fleet is unchanged"
        );
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
        eventually("the per-Gateway fleet Programmed", LIMIT, async || {
            let g = get(c, &gateway(), Some(NS), "solo").await;
            (condition(&g["status"]["conditions"], "Programmed")?["status"] == "True").then_some(())
        })
        .await;
        let own = get(c, &ki(), Some(NS), "solo").await;
        assert_eq!(own["metadata"]["ownerReferences"][0]["kind"], "Gateway");
        assert_eq!(
            kubelet
                .pods()
                .iter()
                .filter(|p| p.workload == "kengine-solo")
                .count(),
            2
        );
        delete(c, &gateway(), Some(NS), "solo").await;
        eventually("the per-Gateway fleet gone", LIMIT, async || {
            let gone = get_opt(c, &ki(), Some(NS), "solo").await.is_none()
                && get_opt(c, &deployment(), Some(NS), "kengine-solo")
                    .await
                    .is_none()
                && !kubelet.pods().iter().any(|p| p.workload == "kengine-solo");
            gone.then_some(())
        })
        .await;
        // The shared fleet is untouched.
        let (status, _) = crate::support::get(
            &http,
            format!("127.0.0.1:{SHARED_PORT}").parse().unwrap(),
            "rotated.example",
            "/",
        )
        .await;
        assert_eq!(status, 200);
        drop(controller);
    }
}
