//! The Kubernetes API the end-to-end suites run against, and the
//! controller binary under test.
//!
//! [`cluster`] starts a real control plane (`control_plane.rs`) with the
//! Gateway API v1.6.1 experimental CRDs and `crds/`, and gives the
//! controller the chart's own RBAC: the ServiceAccount, ClusterRole, Role
//! and bindings `helm template` renders, and that account's token
//! (TokenRequest). With `KENGINE_GATEWAY_E2E_CLUSTER=1` it is the cluster
//! `KUBECONFIG` points at instead, used with that kubeconfig's own rights.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

use super::control_plane::{ControlPlane, client_for};

/// The `kengine-gateway` binary (see [`crate::project_bin`]).
pub fn bin() -> PathBuf {
    crate::project_bin()
}

/// The namespace and names the chart installs into (`helm template
/// kengine-gateway charts/kengine-gateway --namespace kengine-system`).
pub const CHART_NAMESPACE: &str = "kengine-system";
pub const CHART_RELEASE: &str = "kengine-gateway";

/// The node the fake kubelet's Pods are bound to.
pub const NODE_NAME: &str = "kengine-e2e-fake-node";

pub struct Cluster {
    /// A client with full rights, for the test itself.
    pub client: kube::Client,
    /// The controller's kubeconfig: the chart's ServiceAccount token on the
    /// real control plane, else the test's own.
    pub kubeconfig: PathBuf,
    /// Where the controller's leader-election Lease lives (the chart grants
    /// it in its own namespace).
    pub lease_namespace: String,
    /// The real control plane this test started, if any.
    pub plane: Option<ControlPlane>,
    _node: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(node) = &self._node {
            node.abort();
        }
    }
}

/// `KENGINE_GATEWAY_E2E_CLUSTER=1`: the suites run against an existing
/// cluster.
pub fn external_cluster() -> bool {
    std::env::var("KENGINE_GATEWAY_E2E_CLUSTER").as_deref() == Ok("1")
}

/// Runs an end-to-end test: in its own network namespace
/// (`support::netns`), unless it runs against an existing cluster, which
/// is reachable only from the host's.
pub fn run<F: Future>(worker_threads: usize, test: F) -> F::Output {
    if external_cluster() {
        return tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(test);
    }
    super::netns::run(worker_threads, test)
}

/// Makes `ip` a local address, where a test serves what a cluster would
/// (a Service's cluster IP, a Pod's IP). In the test's own namespace; on
/// the host (root, and the address stays) against an existing cluster.
pub fn local_address(ip: &str) {
    if external_cluster() {
        let _ = Command::new("ip")
            .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .status();
        return;
    }
    super::netns::add_local_address(ip);
}

/// The real control plane with the controller under the chart's RBAC (or
/// the existing cluster).
pub async fn cluster() -> Cluster {
    cluster_with_rbac(|_| {}).await
}

/// [`cluster`], with the chart's RBAC objects changed by `edit` before they
/// are applied (a test takes a grant away and sees the real 403).
pub async fn cluster_with_rbac(edit: impl FnOnce(&mut Vec<Value>)) -> Cluster {
    start(edit, true).await
}

/// [`cluster`] without the stand-in Node, for a suite that runs the node
/// agent (`support::node`): its Node is then the only one, so a DaemonSet
/// has exactly one pod.
pub async fn cluster_for_node_agent() -> Cluster {
    start(|_| {}, false).await
}

async fn start(edit: impl FnOnce(&mut Vec<Value>), stand_in_node: bool) -> Cluster {
    if external_cluster() {
        let kubeconfig =
            PathBuf::from(std::env::var("KUBECONFIG").expect("KUBECONFIG for a real cluster"));
        let client = client_for(&kubeconfig).await;
        let node = fake_node(&client).await;
        return Cluster {
            client,
            kubeconfig,
            lease_namespace: "default".into(),
            plane: None,
            _node: Some(node),
        };
    }
    let plane = match stand_in_node {
        true => ControlPlane::start().await,
        false => ControlPlane::start_for_pods().await,
    };
    let repo = crate::repo();
    let repo = repo.as_path();
    plane
        .install_crds(&[
            repo.join("e2e/gateway-api/v1.6.1/config/crd/experimental"),
            repo.join("crds"),
        ])
        .await;
    let client = plane.client().await;
    let mut rbac = chart_rbac();
    edit(&mut rbac);
    let token = install_rbac(&client, rbac).await;
    let kubeconfig = plane.token_kubeconfig("controller", &token);
    let node = match stand_in_node {
        true => Some(fake_node(&client).await),
        false => None,
    };
    Cluster {
        client,
        kubeconfig,
        lease_namespace: CHART_NAMESPACE.into(),
        plane: Some(plane),
        _node: node,
    }
}

impl Cluster {
    /// Starts the controller with this cluster's credentials and Lease
    /// namespace.
    pub fn controller(&self, identity: &str, dir: &Path, extra: &[&str]) -> Controller {
        Controller::start_in(
            &self.kubeconfig,
            &self.lease_namespace,
            identity,
            dir,
            extra,
        )
    }

    /// Creates namespace `name` and waits for its `default` ServiceAccount,
    /// without which the API server admits no Pod there.
    pub async fn namespace(&self, name: &str) {
        let ns = resource("", "v1", "Namespace", "namespaces");
        apply(
            &self.client,
            &ns,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .await;
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), name);
        eventually(
            "the namespace's default ServiceAccount",
            Duration::from_secs(30),
            async || accounts.get_opt("default").await.ok().flatten(),
        )
        .await;
    }

    /// A ClusterIP Service `name` on `port` without a selector, and an echo
    /// backend answering as `name` on the cluster IP the API server gave it
    /// (made local: ClusterIP-mode upstreams dial it directly).
    pub async fn echo_service(&self, namespace: &str, name: &str, port: u16) -> SocketAddr {
        let svc = resource("", "v1", "Service", "services");
        apply(
            &self.client,
            &svc,
            Some(namespace),
            json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"port": port}]}}),
        )
        .await;
        let s = get(&self.client, &svc, Some(namespace), name).await;
        let ip = s["spec"]["clusterIP"].as_str().expect("a cluster IP");
        local_address(ip);
        let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let identity = kengine_gateway::echo::Identity {
            name: name.into(),
            namespace: namespace.into(),
        };
        tokio::spawn(kengine_gateway::echo::serve(
            listener,
            identity,
            std::future::pending(),
        ));
        addr
    }
}

/// A Deployment of one echo pod (this project's `echo`, on port 8080)
/// answering as `name`, and its Service `name` on port 80, for a suite that
/// runs the node agent.
pub async fn echo_backend(client: &kube::Client, namespace: &str, name: &str) {
    let labels = json!({"app": name});
    let deployment = resource("apps", "v1", "Deployment", "deployments");
    apply(client, &deployment, Some(namespace), json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "echo", "image": "khulnasoft/kengine-gateway:e2e",
                    "args": ["echo", "--listen", "0.0.0.0:8080", "--name", name],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}}]}}}})).await;
    apply(
        client,
        &resource("", "v1", "Service", "services"),
        Some(namespace),
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]}}),
    )
    .await;
}

/// The ServiceAccount and RBAC objects of the chart with its default
/// values: `helm template`, or without helm deploy/install.yaml, which is
/// that rendering (scripts/chart-test.sh keeps it current).
pub fn chart_rbac() -> Vec<Value> {
    let repo = crate::repo();
    let repo = repo.as_path();
    let yaml = match super::helm::bin() {
        Some(helm) => {
            let out = Command::new(helm)
                .args([
                    "template",
                    CHART_RELEASE,
                    "charts/kengine-gateway",
                    "--namespace",
                    CHART_NAMESPACE,
                ])
                .current_dir(repo)
                .output()
                .expect("running helm");
            assert!(
                out.status.success(),
                "helm template: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).expect("UTF-8")
        }
        None => {
            eprintln!("no helm: the chart's RBAC from deploy/install.yaml (its default rendering)");
            std::fs::read_to_string(repo.join("deploy/install.yaml")).unwrap()
        }
    };
    let rbac = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
        .filter(|v: &Value| v["kind"].as_str().is_some_and(|k| rbac.contains(&k)))
        .collect();
    assert!(
        docs.iter().any(|d| d["kind"] == "ClusterRole"),
        "the chart renders no ClusterRole"
    );
    docs
}

/// Applies the RBAC objects (into the chart's namespace) and returns a
/// token of the chart's ServiceAccount.
async fn install_rbac(client: &kube::Client, docs: Vec<Value>) -> String {
    let ns = resource("", "v1", "Namespace", "namespaces");
    apply(
        client,
        &ns,
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CHART_NAMESPACE}}),
    )
    .await;
    let mut account = None;
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap().to_string();
        let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (
                String::new(),
                doc["apiVersion"].as_str().unwrap().to_string(),
            ),
        };
        let plural = format!("{}s", kind.to_lowercase());
        let ar = resource(&group, &version, &kind, &plural);
        let namespaced = !kind.starts_with("Cluster");
        if kind == "ServiceAccount" {
            account = doc["metadata"]["name"].as_str().map(str::to_string);
        }
        apply(client, &ar, namespaced.then_some(CHART_NAMESPACE), doc).await;
    }
    let account = account.expect("the chart renders a ServiceAccount");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), CHART_NAMESPACE);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("a token")
        .token
}

/// Registers the Node the fake kubelet's Pods are bound to and keeps it
/// Ready: the node lifecycle controller marks the Pods of a silent node not
/// ready, and the pod garbage collector deletes Pods bound to no Node.
async fn fake_node(client: &kube::Client) -> tokio::task::JoinHandle<()> {
    let nodes = resource("", "v1", "Node", "nodes");
    apply(
        client,
        &nodes,
        None,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_NAME}}),
    )
    .await;
    node_heartbeat(api(client, &nodes, None), NODE_NAME)
}

/// Keeps Node `name` Ready (a heartbeat every 10 s) until the task ends.
pub fn node_heartbeat(
    nodes: Api<DynamicObject>,
    name: &'static str,
) -> tokio::task::JoinHandle<()> {
    let since = k8s_openapi::jiff::Timestamp::now().to_string();
    tokio::spawn(async move {
        loop {
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                "reason": "KubeletReady", "message": "a test's stand-in kubelet",
                "lastHeartbeatTime": now, "lastTransitionTime": since}]}});
            if let Err(e) = nodes
                .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                .await
            {
                eprintln!("node heartbeat: {e}");
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    })
}

pub fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// `namespace` `None`: a cluster-scoped kind.
pub fn api(client: &kube::Client, ar: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

/// Creates or replaces an object (server-side apply).
pub async fn apply(
    client: &kube::Client,
    ar: &ApiResource,
    namespace: Option<&str>,
    object: Value,
) {
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let params = PatchParams::apply("e2e-test").force();
    api(client, ar, namespace)
        .patch(&name, &params, &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

pub async fn get(
    client: &kube::Client,
    ar: &ApiResource,
    namespace: Option<&str>,
    name: &str,
) -> Value {
    serde_json::to_value(api(client, ar, namespace).get(name).await.unwrap()).unwrap()
}

/// The object, or `None` when it does not exist.
pub async fn get_opt(
    client: &kube::Client,
    ar: &ApiResource,
    namespace: Option<&str>,
    name: &str,
) -> Option<Value> {
    let found = api(client, ar, namespace).get_opt(name).await.unwrap();
    found.map(|o| serde_json::to_value(o).unwrap())
}

pub async fn delete(client: &kube::Client, ar: &ApiResource, namespace: Option<&str>, name: &str) {
    api(client, ar, namespace)
        .delete(name, &DeleteParams::background())
        .await
        .unwrap_or_else(|e| panic!("delete {name}: {e}"));
}

/// Polls `check` until it gives `Some`, or fails the test after `limit`.
pub async fn eventually<T, F: AsyncFnMut() -> Option<T>>(
    what: &str,
    limit: Duration,
    mut check: F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn condition<'a>(conditions: &'a Value, type_: &str) -> Option<&'a Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_)
}

/// The controller binary; its log is printed when a test fails.
pub struct Controller {
    child: Child,
    pub metrics: SocketAddr,
    pub log: PathBuf,
}

impl Controller {
    /// The controller with its Lease in `default`.
    pub fn start(kubeconfig: &Path, identity: &str, dir: &Path, extra: &[&str]) -> Self {
        Self::start_in(kubeconfig, "default", identity, dir, extra)
    }

    pub fn start_in(
        kubeconfig: &Path,
        lease_namespace: &str,
        identity: &str,
        dir: &Path,
        extra: &[&str],
    ) -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (metrics, health) = (free(), free());
        let log = dir.join(format!("controller-{identity}.log"));
        let child = Command::new(bin())
            .args([
                "controller",
                "--identity",
                identity,
                "--lease-namespace",
                lease_namespace,
                "--debounce-ms",
                "50",
            ])
            .args([
                "--metrics-addr",
                &metrics.to_string(),
                "--health-addr",
                &health.to_string(),
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("KENGINE_GATEWAY_LOG", "info,kengine_gateway=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Controller {
            child,
            metrics,
            log,
        }
    }

    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = super::http()
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .reduce(|a, b| a + b)
    }

    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test when the API server denied the controller anything
    /// (a grant the chart's RBAC lacks): the denial may not show otherwise.
    pub fn assert_no_denials(&self) {
        let log = self.log_text();
        let denied: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("is forbidden: User"))
            .take(5)
            .collect();
        assert!(
            denied.is_empty(),
            "the API server denied the controller (RBAC):\n{}",
            denied.join("\n")
        );
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed run shows what the controller said.
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("kube_client"))
                .rev()
                .take(40)
                .collect();
            eprintln!(
                "--- controller log {} (last lines, newest first) ---\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}
