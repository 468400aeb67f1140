//! A node agent for the real control plane (`control_plane.rs`): the one
//! "node" of the test cluster, in the test's own network namespace
//! (`netns.rs`). It does what a kubelet and a CNI plugin do, with local
//! processes instead of containers:
//!
//! - registers the Node [`NODE_NAME`] (Ready, InternalIP [`NODE_IP`],
//!   `podCIDR` [`POD_CIDR`]) and renews its Lease in `kube-node-lease`;
//! - binds every pending Pod to itself (`pods/binding`, as kube-scheduler
//!   would; there is no scheduler);
//! - gives each of its Pods a network namespace and an IP from
//!   [`POD_CIDR`] over a routed veth pair (`network.rs`), so the real
//!   EndpointSlice controller accepts the addresses, kube-proxy can NAT to
//!   them and every pod can listen on the same port;
//! - runs each container as a local process inside that namespace, chosen
//!   by image name in [`containers`] (Caddy 2.8.4 for `kengine`/`caddy`
//!   images, this project's binary for `kengine-gateway` ones), with
//!   `$(VAR)` expansion, fieldRefs, and Secret/ConfigMap/emptyDir and
//!   `projected` volumes (`projected.rs`: the service-account token of
//!   `kube-api-access-*`, `ca.crt`, downwardAPI items). Volumes are
//!   temporary directories, bound at their mount paths in a mount
//!   namespace of each process (a missing mount point is made on the
//!   host, empty, and stays); every container gets the `KUBERNETES_SERVICE_*`
//!   variables, and the API server answers pods on the `kubernetes`
//!   Service's cluster IP, so in-cluster clients work;
//! - probes readiness (`httpGet`/`tcpSocket` to the pod IP, from the node,
//!   every [`TICK`]), restarts exited containers (`restartCount`,
//!   `lastState.terminated`), publishes Pod status (podIP/podIPs, hostIP,
//!   phase, conditions, containerStatuses);
//! - on deletion: SIGTERM, SIGKILL after the grace period (capped at 5 s),
//!   removes the pod's network, then deletes the Pod with grace 0, as the
//!   kubelet confirms a deletion (at once for a pod it never ran);
//! - serves container logs on the kubelet API (`kubelet_api.rs`, port
//!   [`KUBELET_PORT`] on [`NODE_IP`]), so `kubectl logs` works;
//! - runs the real kube-proxy in iptables mode (`kube_proxy.rs`).
//!
//! Not done: other volume types, token refresh, init containers,
//! liveness/startup probes, resources, security contexts. A Pod it cannot
//! run (an unknown image, an unsupported volume) stays Pending with the
//! reason in its container statuses (`ErrImagePull`,
//! `CreateContainerConfigError`), and [`Node::diagnostics`] lists it; a
//! failure of the node itself is fatal: the agent stops and [`Node::pods`]
//! panics with it.
//!
//! Everything it starts ends with [`Node::stop`] (or, less tidily, drop):
//! every process, every pod namespace and veth pair.

pub mod containers;
mod kube_proxy;
mod kubelet_api;
mod network;
mod projected;
mod registration;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};

#[allow(unused_imports)]
pub use network::{NODE_IP, POD_CIDR};
pub use registration::KUBELET_PORT;

use kengine_gateway::kengine::{AdminAddr, AdminClient};

use super::control_plane::{self, ControlPlane};
use containers::{
    Files, MAX_GRACE, Objects, PROBE_TIMEOUT, RESTART_BACKOFF, RunningContainer, Volume,
    admin_socket_of, now,
};
use network::{Allocator, PodNetwork};

pub const NODE_NAME: &str = "kengine-e2e-node";
const TICK: Duration = Duration::from_millis(200);
const LEASE_RENEW: Duration = Duration::from_secs(10);

/// A Pod the agent runs, as seen at the last tick.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ip: Ipv4Addr,
    /// The node end of its veth pair.
    pub veth: String,
    /// Its network namespace, as `/proc/*/ns/net` links name it
    /// (`net:[INODE]`).
    pub netns: String,
    /// Volume name → the directory standing in for it.
    pub volumes: BTreeMap<String, PathBuf>,
    pub ready: bool,
    /// The workload that owns it: `Deployment` (through its ReplicaSet),
    /// `DaemonSet`, or the owner's kind; empty for a bare Pod.
    pub workload_kind: String,
    pub workload: String,
    /// Kengine's admin unix socket (from its container's admin env), on the
    /// node's file system.
    pub admin_socket: Option<PathBuf>,
    /// The Kengine config it ran when it first turned Ready: read from the
    /// admin socket before Ready was published.
    pub ready_config: Option<Value>,
    pub containers: Vec<ContainerInfo>,
}

#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub name: String,
    pub pid: Option<u32>,
    pub restarts: i32,
    pub log: PathBuf,
}

pub struct Node {
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
    proxy: Option<tokio::process::Child>,
    proxy_log: PathBuf,
    kubelet_api: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Sets up the node's network in the calling thread's namespace,
    /// registers the Node, starts kube-proxy and the agent's task.
    pub async fn start(plane: &ControlPlane) -> Node {
        kengine_gateway::kengine::admin::install_crypto_provider();
        network::setup_node(control_plane::SERVICE_CIDR)
            .unwrap_or_else(|e| panic!("node network: {e}"));
        let client = plane.client().await;
        registration::register(&client, NODE_NAME)
            .await
            .unwrap_or_else(|e| panic!("registering Node {NODE_NAME}: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("node")
            .tempdir()
            .expect("node directory");
        let proxy_log = dir.path().join("kube-proxy.log");
        let proxy = kube_proxy::spawn(
            &control_plane::bin_dir(),
            &plane.kubeconfig,
            NODE_NAME,
            &proxy_log,
        )
        .unwrap_or_else(|e| panic!("kube-proxy: {e}"));
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let kubelet_api = kubelet_api::serve(
            std::net::SocketAddr::from((NODE_IP, KUBELET_PORT)),
            &plane.ca(),
            shared.clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("kubelet API: {e}"));
        let runner = Runner {
            client,
            log_dir: logs,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(PROBE_TIMEOUT)
                .pool_max_idle_per_host(0)
                .build()
                .expect("probe client"),
            ips: Allocator::default(),
            done: HashSet::new(),
            last_lease: Instant::now(),
            last_error: None,
            shared: shared.clone(),
        };
        let task = tokio::spawn(runner.run());
        Node {
            shared,
            task,
            proxy: Some(proxy),
            proxy_log,
            kubelet_api,
            _dir: dir,
        }
    }

    /// The Pods it runs. Panics if the agent hit a fatal error.
    pub fn pods(&self) -> Vec<PodInfo> {
        self.check().pods.iter().map(NodePod::info).collect()
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        self.pods()
            .into_iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// Kills a container's process (SIGKILL), as a crash would; it is
    /// restarted after [`RESTART_BACKOFF`].
    pub fn kill(&self, namespace: &str, pod: &str, container: &str) {
        let mut shared = self.check();
        let c = shared
            .pods
            .iter_mut()
            .find(|p| p.namespace == namespace && p.name == pod)
            .and_then(|p| p.containers.iter_mut().find(|c| c.name == container))
            .unwrap_or_else(|| {
                panic!("the node runs no container {container} in {namespace}/{pod}")
            });
        if let Some(child) = &mut c.child {
            let _ = child.start_kill();
        }
    }

    /// Polls `check` until it gives `Some`; on timeout (or at once when
    /// the agent stopped) fails with [`Node::diagnostics`].
    pub async fn until<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            let _ = self.pods();
            if let Some(v) = check().await {
                return v;
            }
            if start.elapsed() > limit {
                panic!(
                    "timed out after {limit:?} waiting for {what}\n{}",
                    self.diagnostics()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Everything the containers of a pod wrote, also after it stopped.
    pub fn logs(&self, namespace: &str, pod: &str) -> String {
        let shared = lock(&self.shared);
        let mut out = String::new();
        for (ns, p, container, path) in &shared.logs {
            if ns == namespace && p == pod {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                out += &format!("---- {ns}/{pod}/{container}\n{text}");
            }
        }
        out
    }

    /// For failure messages: the agent's state, kube-proxy's log tail and
    /// the tail of every container log.
    pub fn diagnostics(&self) -> String {
        let shared = lock(&self.shared);
        let tail = |text: &str| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        let mut out = format!("node agent fatal error: {:?}\n", shared.fatal);
        for failed in &shared.failed {
            out += &format!("pod not run: {failed}\n");
        }
        let proxy = std::fs::read_to_string(&self.proxy_log).unwrap_or_default();
        out += &format!("---- kube-proxy\n{}\n", tail(&proxy));
        for (ns, pod, container, path) in &shared.logs {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            out += &format!("---- {ns}/{pod}/{container}\n{}\n", tail(&text));
        }
        out
    }

    /// The pid of kube-proxy, while it runs.
    pub fn kube_proxy_pid(&self) -> Option<u32> {
        self.proxy.as_ref().and_then(tokio::process::Child::id)
    }

    /// Stops everything and waits for it: every container process and
    /// kube-proxy have exited and every pod network is removed on return.
    pub async fn stop(mut self) {
        self.kubelet_api.abort();
        self.task.abort();
        let _ = (&mut self.task).await;
        let (pods, stopping) = {
            let mut shared = lock(&self.shared);
            shared.dropped = true;
            (
                std::mem::take(&mut shared.pods),
                std::mem::take(&mut shared.stopping),
            )
        };
        for mut pod in pods.into_iter().chain(stopping) {
            for c in &mut pod.containers {
                if let Some(mut child) = c.child.take() {
                    let _ = child.kill().await;
                }
            }
            pod.network.remove();
        }
        if let Some(mut proxy) = self.proxy.take() {
            let _ = proxy.kill().await;
        }
    }

    fn check(&self) -> MutexGuard<'_, Shared> {
        let shared = lock(&self.shared);
        if let Some(fatal) = &shared.fatal {
            panic!("node agent stopped: {fatal}");
        }
        if self.task.is_finished() {
            panic!("node agent task ended unexpectedly (it panicked?)");
        }
        shared
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kubelet_api.abort();
        self.task.abort();
        let mut shared = lock(&self.shared);
        shared.dropped = true;
        // kill_on_drop sends SIGKILL to each process; the namespaces go
        // with their descriptors and processes.
        let stopping = std::mem::take(&mut shared.stopping);
        for pod in std::mem::take(&mut shared.pods).into_iter().chain(stopping) {
            pod.network.remove();
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shared between the task and the handle; never locked across an await.
#[derive(Default)]
struct Shared {
    pods: Vec<NodePod>,
    /// Pods being deleted: processes told to stop.
    stopping: Vec<NodePod>,
    /// (namespace, pod, container, file) of every container ever started.
    logs: Vec<(String, String, String, PathBuf)>,
    /// Pods it could not run, with the reason.
    failed: Vec<String>,
    fatal: Option<String>,
    dropped: bool,
}

struct NodePod {
    namespace: String,
    name: String,
    uid: String,
    network: PodNetwork,
    grace: Duration,
    volumes: BTreeMap<String, Volume>,
    containers: Vec<RunningContainer>,
    workload_kind: String,
    workload: String,
    admin_socket: Option<PathBuf>,
    ready_config: Option<Value>,
    started: bool,
    ready: bool,
    created_at: Value,
    ready_since: Value,
    /// Set once it is stopping: SIGKILL after this.
    deadline: Option<Instant>,
    /// The status last written to the API.
    published: Option<Value>,
}

impl NodePod {
    fn prepare(
        pod: &Pod,
        network: PodNetwork,
        fields: &HashMap<&str, String>,
        mut projected: HashMap<String, Files>,
        log_dir: &Path,
    ) -> Result<NodePod, String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let what = format!("pod {namespace}/{name}");
        let spec = pod.spec.clone().unwrap_or_default();
        let built = (|| -> Result<_, String> {
            if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
                return Err(format!("{what}: init containers are not emulated"));
            }
            let mut volumes = BTreeMap::new();
            for v in spec.volumes.iter().flatten() {
                let volume = match projected.remove(&v.name) {
                    Some(fixed) => Volume::projected(v, fixed)?,
                    None => Volume::new(v, &what)?,
                };
                volumes.insert(v.name.clone(), volume);
            }
            let ip = network.ip;
            let mut containers = Vec::new();
            let mut admin_socket = None;
            for c in &spec.containers {
                let mut rc = RunningContainer::resolve(c, &name, ip, fields, &volumes, log_dir)?;
                rc.log = log_dir.join(format!("{namespace}_{name}_{}.log", c.name));
                rc.netns = Some(network.netns.clone());
                if rc.kengine && admin_socket.is_none() {
                    admin_socket =
                        admin_socket_of(&rc.env_on_host()).map_err(|e| format!("{what}: {e}"))?;
                }
                containers.push(rc);
            }
            Ok((volumes, containers, admin_socket))
        })();
        // A pod it cannot run leaves no network behind.
        let (volumes, containers, admin_socket) = built.inspect_err(|_| network.remove())?;
        let (workload_kind, workload) = workload_of(pod);
        let grace = spec
            .termination_grace_period_seconds
            .map_or(MAX_GRACE, |s| Duration::from_secs(s.max(0) as u64))
            .min(MAX_GRACE);
        Ok(NodePod {
            namespace,
            name,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            network,
            grace,
            volumes,
            containers,
            workload_kind,
            workload,
            admin_socket,
            ready_config: None,
            started: false,
            ready: false,
            created_at: now(),
            ready_since: now(),
            deadline: None,
            published: None,
        })
    }

    fn set_ready(&mut self, ready: bool) {
        if ready != self.ready {
            self.ready = ready;
            self.ready_since = now();
        }
    }

    /// SIGTERM to every process; SIGKILL after the grace period.
    fn begin_stop(&mut self) {
        for c in &self.containers {
            if let Some(pid) = c.child.as_ref().and_then(tokio::process::Child::id) {
                // SAFETY: kill(2) on a child we have not reaped yet.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
        self.deadline = Some(Instant::now() + self.grace);
        self.set_ready(false);
    }

    /// `true` once every process of a stopping pod has exited.
    fn reap(&mut self) -> bool {
        let overdue = self.deadline.is_some_and(|d| Instant::now() >= d);
        let mut running = false;
        for c in &mut self.containers {
            if let Some(child) = &mut c.child {
                if matches!(child.try_wait(), Ok(None)) {
                    running = true;
                    if overdue {
                        let _ = child.start_kill();
                    }
                } else {
                    c.child = None;
                }
            }
        }
        !running
    }

    fn status(&self) -> Value {
        let ready = if self.ready { "True" } else { "False" };
        let started = if self.started { "True" } else { "False" };
        let condition = |type_: &str, status: &str, at: &Value| json!({"type": type_, "status": status, "lastTransitionTime": at});
        let ip = self.network.ip.to_string();
        json!({
            "phase": if self.started { "Running" } else { "Pending" },
            "hostIP": NODE_IP.to_string(),
            "hostIPs": [{"ip": NODE_IP.to_string()}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": self.created_at,
            // No qosClass: the API server derives it from the resources
            // and refuses a status that says otherwise (it is immutable).
            "conditions": [
                condition("PodReadyToStartContainers", started, &self.created_at),
                condition("Initialized", "True", &self.created_at),
                condition("ContainersReady", ready, &self.ready_since),
                condition("Ready", ready, &self.ready_since),
                condition("PodScheduled", "True", &self.created_at),
            ],
            "containerStatuses": self.containers.iter().map(|c| c.status(self.started)).collect::<Vec<_>>(),
        })
    }

    fn info(&self) -> PodInfo {
        PodInfo {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            ip: self.network.ip,
            veth: self.network.veth.clone(),
            netns: self.network.name(),
            volumes: self
                .volumes
                .iter()
                .map(|(k, v)| (k.clone(), v.dir.path().to_path_buf()))
                .collect(),
            ready: self.ready,
            workload_kind: self.workload_kind.clone(),
            workload: self.workload.clone(),
            admin_socket: self.admin_socket.clone(),
            ready_config: self.ready_config.clone(),
            containers: self
                .containers
                .iter()
                .map(|c| ContainerInfo {
                    name: c.name.clone(),
                    pid: c.child.as_ref().and_then(tokio::process::Child::id),
                    restarts: c.restarts,
                    log: c.log.clone(),
                })
                .collect(),
        }
    }
}

/// (kind, name) of the workload that owns `pod`: a ReplicaSet's pods
/// belong to its Deployment, named without the pod-template-hash suffix.
fn workload_of(pod: &Pod) -> (String, String) {
    let owners = pod.metadata.owner_references.iter().flatten();
    let Some(owner) = owners.into_iter().find(|o| o.controller == Some(true)) else {
        return Default::default();
    };
    let hash = (pod.metadata.labels.as_ref())
        .and_then(|l| l.get("pod-template-hash"))
        .map(|h| format!("-{h}"));
    match (owner.kind.as_str(), hash) {
        ("ReplicaSet", Some(hash)) if owner.name.ends_with(&hash) => (
            "Deployment".into(),
            owner.name[..owner.name.len() - hash.len()].to_string(),
        ),
        (kind, _) => (kind.to_string(), owner.name.clone()),
    }
}

/// What `fieldRef`s name, for env and downwardAPI files.
fn fields(pod: &Pod, ip: Ipv4Addr) -> HashMap<&'static str, String> {
    let spec = pod.spec.as_ref();
    HashMap::from([
        ("status.podIP", ip.to_string()),
        ("status.hostIP", NODE_IP.to_string()),
        (
            "metadata.name",
            pod.metadata.name.clone().unwrap_or_default(),
        ),
        (
            "metadata.namespace",
            pod.metadata.namespace.clone().unwrap_or_default(),
        ),
        ("spec.nodeName", NODE_NAME.to_string()),
        (
            "spec.serviceAccountName",
            spec.and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
        ),
    ])
}

/// One poll of the cluster.
struct World {
    pods: Vec<Pod>,
    /// Secrets and ConfigMaps per namespace.
    objects: HashMap<String, Objects>,
}

struct Runner {
    client: kube::Client,
    log_dir: PathBuf,
    http: reqwest::Client,
    ips: Allocator,
    /// Pods (by uid) it ran to the end; never started again.
    done: HashSet<String>,
    last_lease: Instant,
    last_error: Option<String>,
    shared: Arc<Mutex<Shared>>,
}

impl Runner {
    async fn run(mut self) {
        loop {
            if let Err(fatal) = self.tick().await {
                eprintln!("node agent: {fatal}");
                lock(&self.shared).fatal = Some(fatal);
                return;
            }
            tokio::time::sleep(TICK).await;
        }
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// API errors are retried on the next tick; each distinct one is printed once.
    fn report(&mut self, what: &str, error: impl std::fmt::Display) {
        let message = format!("{what}: {error}");
        if self.last_error.as_ref() != Some(&message) {
            eprintln!("node agent: {message}");
            self.last_error = Some(message);
        }
    }

    async fn tick(&mut self) -> Result<(), String> {
        if self.last_lease.elapsed() >= LEASE_RENEW {
            match registration::renew_lease(&self.client, NODE_NAME).await {
                Ok(()) => self.last_lease = Instant::now(),
                Err(e) => self.report("renewing the node Lease", e),
            }
        }
        let world = match self.observe().await {
            Ok(world) => world,
            Err(e) => {
                self.report("listing pods, secrets and config maps", e);
                return Ok(());
            }
        };
        self.bind(&world).await;
        self.admit(&world).await?;
        self.stop_deleted(&world);
        if !self.run_containers(&world)? {
            return Ok(());
        }
        self.probe().await;
        self.publish().await;
        self.finish().await;
        self.confirm_unrun_deletions(&world).await;
        Ok(())
    }

    /// A deleted pod of this node that runs nothing here (never admitted,
    /// or failed before it ran) is confirmed deleted at once, as a kubelet
    /// does: else it would stay, and its namespace could never go.
    async fn confirm_unrun_deletions(&mut self, world: &World) {
        let unrun: Vec<(String, String, String)> = {
            let shared = self.shared();
            world
                .pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_some())
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE_NAME))
                .filter_map(|p| {
                    let uid = p.metadata.uid.clone()?;
                    let runs = shared
                        .pods
                        .iter()
                        .chain(&shared.stopping)
                        .any(|r| r.uid == uid);
                    (!runs).then(|| {
                        (
                            p.metadata.namespace.clone().unwrap_or_default(),
                            p.metadata.name.clone().unwrap_or_default(),
                            uid,
                        )
                    })
                })
                .collect()
        };
        for (namespace, name, uid) in unrun {
            self.confirm_deleted(&namespace, &name, &uid).await;
        }
    }

    /// Deletes the pod with grace 0 (the kubelet's confirmation), if it is
    /// still the one with `uid`.
    async fn confirm_deleted(&mut self, namespace: &str, name: &str, uid: &str) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => {}
            Err(e) => self.report(&format!("deleting pod {namespace}/{name}"), e),
        }
    }

    async fn observe(&self) -> kube::Result<World> {
        let lp = ListParams::default();
        let (pods, secrets, config_maps) = (
            Api::<Pod>::all(self.client.clone()),
            Api::<Secret>::all(self.client.clone()),
            Api::<ConfigMap>::all(self.client.clone()),
        );
        let (pods, secrets, config_maps) =
            tokio::try_join!(pods.list(&lp), secrets.list(&lp), config_maps.list(&lp))?;
        let mut objects: HashMap<String, Objects> = HashMap::new();
        for s in secrets.items {
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            objects.entry(ns).or_default().add_secret(s);
        }
        for c in config_maps.items {
            let ns = c.metadata.namespace.clone().unwrap_or_default();
            objects.entry(ns).or_default().add_config_map(c);
        }
        Ok(World {
            pods: pods.items,
            objects,
        })
    }

    /// Binds pending Pods to this node, as the scheduler would.
    async fn bind(&mut self, world: &World) {
        for pod in &world.pods {
            let unbound = pod
                .spec
                .as_ref()
                .is_some_and(|s| s.node_name.as_deref().unwrap_or_default().is_empty());
            if !unbound || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let (ns, name) = (
                pod.metadata.namespace.clone().unwrap_or_default(),
                pod.metadata.name.clone().unwrap_or_default(),
            );
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": ns, "uid": pod.metadata.uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
            });
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            if let Err(e) = api
                .create_subresource::<Value, Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                self.report(&format!("binding pod {ns}/{name}"), e);
            }
        }
    }

    /// Starts managing the live Pods bound to this node that it does not run yet.
    async fn admit(&mut self, world: &World) -> Result<(), String> {
        for pod in &world.pods {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let ours = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE_NAME);
            let terminal = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Succeeded" || p == "Failed");
            if !ours || terminal || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let known = {
                let shared = self.shared();
                shared
                    .pods
                    .iter()
                    .chain(&shared.stopping)
                    .any(|p| p.uid == uid)
            };
            if known || self.done.contains(&uid) {
                continue;
            }
            let (ip, veth) = self.ips.next()?;
            let fields = fields(pod, ip);
            let mut projected = HashMap::new();
            for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
                if v.projected.is_none() {
                    continue;
                }
                match projected::files(&self.client, pod, v, &fields).await {
                    Ok(files) => {
                        projected.insert(v.name.clone(), files);
                    }
                    Err(projected::Failure::Unsupported(e)) => return Err(e),
                    Err(projected::Failure::Api(e)) => {
                        self.report("projected volume", e);
                        return Ok(());
                    }
                }
            }
            let network = PodNetwork::create(ip, veth)?;
            let node_pod = match NodePod::prepare(pod, network, &fields, projected, &self.log_dir) {
                Ok(p) => p,
                Err(e) => {
                    // Like a kubelet: this pod fails, the node goes on.
                    self.fail(pod, &e).await;
                    self.done.insert(uid);
                    continue;
                }
            };
            let mut shared = self.shared();
            for c in &node_pod.containers {
                shared.logs.push((
                    node_pod.namespace.clone(),
                    node_pod.name.clone(),
                    c.name.clone(),
                    c.log.clone(),
                ));
            }
            shared.pods.push(node_pod);
        }
        Ok(())
    }

    /// Pods whose object is gone or being deleted start stopping.
    fn stop_deleted(&mut self, world: &World) {
        let live: HashSet<&str> = world
            .pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        let mut shared = self.shared();
        let (keep, gone): (Vec<NodePod>, Vec<NodePod>) = std::mem::take(&mut shared.pods)
            .into_iter()
            .partition(|p| live.contains(p.uid.as_str()));
        shared.pods = keep;
        for mut pod in gone {
            pod.begin_stop();
            shared.stopping.push(pod);
        }
    }

    /// Syncs volumes, starts and restarts processes; `false` once dropped.
    fn run_containers(&self, world: &World) -> Result<bool, String> {
        let mut shared = self.shared();
        if shared.dropped {
            return Ok(false);
        }
        let empty = Objects::default();
        for pod in &mut shared.pods {
            let objects = world.objects.get(&pod.namespace).unwrap_or(&empty);
            for v in pod.volumes.values_mut() {
                v.sync(objects)?;
            }
            if !pod.started {
                if pod.volumes.values().all(Volume::ready) {
                    pod.started = true;
                    for c in &mut pod.containers {
                        c.spawn(&self.log_dir)?;
                    }
                }
                continue;
            }
            for c in &mut pod.containers {
                // Restarted a tick later at the earliest, so the unready
                // Pod is published in between.
                if c.check_exit() {
                    continue;
                }
                if c.child.is_none() && c.last_start.is_none_or(|t| t.elapsed() >= RESTART_BACKOFF)
                {
                    c.restarts += 1;
                    c.spawn(&self.log_dir)?;
                }
            }
        }
        Ok(true)
    }

    async fn probe(&mut self) {
        let mut probes = tokio::task::JoinSet::new();
        for pod in &self.shared().pods {
            for (i, c) in pod.containers.iter().enumerate() {
                if c.child.is_none() {
                    continue;
                }
                let (uid, probe, http) = (pod.uid.clone(), c.probe.clone(), self.http.clone());
                probes.spawn(async move {
                    let ok = match probe {
                        None => true,
                        Some(p) => p.check(&http).await,
                    };
                    (uid, i, ok)
                });
            }
        }
        let passed: Vec<(String, usize, bool)> = probes.join_all().await;
        let mut snapshots = Vec::new();
        {
            let mut shared = self.shared();
            for pod in &mut shared.pods {
                for (i, c) in pod.containers.iter_mut().enumerate() {
                    c.ready = c.child.is_some()
                        && passed
                            .iter()
                            .any(|(u, j, ok)| *ok && *j == i && *u == pod.uid);
                }
                let ready = pod.started && pod.containers.iter().all(|c| c.ready);
                match (&pod.admin_socket, &pod.ready_config) {
                    // A Kengine pod's first Ready waits for a snapshot of
                    // its config, so a test can tell what it served then.
                    (Some(socket), None) if ready && !pod.ready => {
                        snapshots.push((pod.uid.clone(), socket.clone()));
                    }
                    _ => pod.set_ready(ready),
                }
            }
        }
        for (uid, socket) in snapshots {
            let admin =
                AdminClient::new(AdminAddr::Unix(socket), PROBE_TIMEOUT * 2).expect("admin client");
            // On failure the Pod stays unready and this is retried next tick.
            if let Ok(config) = admin.config().await {
                let mut shared = self.shared();
                if let Some(pod) = shared.pods.iter_mut().find(|p| p.uid == uid) {
                    pod.ready_config = Some(config);
                    pod.set_ready(true);
                }
            }
        }
    }

    /// Publishes why a Pod cannot run (each container waiting with the
    /// reason a kubelet would give) and remembers it for diagnostics.
    async fn fail(&mut self, pod: &Pod, error: &str) {
        let (ns, name) = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        eprintln!("node agent: cannot run pod {ns}/{name}: {error}");
        self.shared().failed.push(format!("{ns}/{name}: {error}"));
        let reason = match error.contains(containers::UNKNOWN_IMAGE) {
            true => "ErrImagePull",
            false => "CreateContainerConfigError",
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let statuses: Vec<Value> = spec
            .containers
            .iter()
            .map(|c| {
                json!({"name": c.name, "image": c.image, "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": reason, "message": error}}})
            })
            .collect();
        let at = now();
        let status = json!({"metadata": {"uid": pod.metadata.uid}, "status": {
            "phase": "Pending", "hostIP": NODE_IP.to_string(),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": at},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": at},
            ],
            "containerStatuses": statuses}});
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
        {
            self.report(&format!("status of failed pod {ns}/{name}"), e);
        }
    }

    async fn publish(&mut self) {
        let changed: Vec<(String, String, String, Value)> = {
            let shared = self.shared();
            shared
                .pods
                .iter()
                .chain(&shared.stopping)
                .filter_map(|p| {
                    let status = p.status();
                    (p.published.as_ref() != Some(&status))
                        .then(|| (p.namespace.clone(), p.name.clone(), p.uid.clone(), status))
                })
                .collect()
        };
        for (ns, name, uid, status) in changed {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let patch = Patch::Merge(json!({"metadata": {"uid": uid}, "status": status}));
            match api
                .patch_status(&name, &PatchParams::default(), &patch)
                .await
            {
                Ok(_) => {
                    let mut shared = self.shared();
                    let Shared { pods, stopping, .. } = &mut *shared;
                    if let Some(p) = pods.iter_mut().chain(stopping).find(|p| p.uid == uid) {
                        p.published = Some(status);
                    }
                }
                Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => {}
                Err(e) => self.report(&format!("status of pod {ns}/{name}"), e),
            }
        }
    }

    /// Removes stopped pods and confirms their deletion to the API server.
    async fn finish(&mut self) {
        let mut finished = Vec::new();
        {
            let mut shared = self.shared();
            for mut pod in std::mem::take(&mut shared.stopping) {
                if pod.reap() {
                    finished.push(pod);
                } else {
                    shared.stopping.push(pod);
                }
            }
        }
        for pod in finished {
            pod.network.remove();
            self.done.insert(pod.uid.clone());
            self.confirm_deleted(&pod.namespace, &pod.name, &pod.uid)
                .await;
        }
    }
}
