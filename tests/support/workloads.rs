//! A fake kubelet plus fake Deployment and DaemonSet controllers, so that
//! managed Kengine fleets run end to end against the Kubernetes API emulator
//! (which has no controllers for built-in kinds).
//!
//! [`FakeKubelet::start`] polls one namespace every 200 ms and:
//!
//! - keeps `spec.replicas` Pods per Deployment and exactly one per DaemonSet
//!   (there is one fake node, [`NODE_NAME`]). A Pod is named
//!   `<workload>-<5 random chars>` and gets the template's labels,
//!   annotations and spec, `spec.nodeName`, and a controller ownerReference.
//!   Scale-down deletes the newest Pods. Pods whose object or owner is gone
//!   (deleted, garbage-collected, `deletionTimestamp` set) are stopped
//!   (SIGTERM, SIGKILL after the grace period, capped at 5 s), and workloads
//!   that still want Pods get new ones.
//! - runs each container as a local process: a container named `kengine`,
//!   or whose `command[0]` is `kengine`/`caddy`, runs the Caddy 2.8.4 binary
//!   ([`super::caddy_bin`]) with the rest of its command and args (`run` when
//!   there are none); a container whose first argument (`args[0]`, or
//!   `command[1]` when `command` is set) is `admin-proxy` runs this project's
//!   binary. Anything else is a fatal error, which stops the kubelet and
//!   makes [`FakeKubelet::pods`] panic with it. Because Caddy stands in for
//!   Kengine, Caddy containers also get `CADDY_X` for every `KENGINE_X` in
//!   their env that has no `CADDY_X` of its own.
//! - gives each Pod its own loopback IP, counting up from the `ip_base` the
//!   test passes (`127.0.40.0` gives .1, .2, ...), never reused. Tests that
//!   run at the same time must pass different bases.
//! - env: literal values, `$(VAR)` expansion (as the kubelet does, `$$`
//!   escapes) in env values, command and args, and `fieldRef`s to
//!   `status.podIP`, `status.hostIP`, `metadata.name`, `metadata.namespace`
//!   and `spec.nodeName`.
//! - volumes: each `emptyDir` is a fresh temporary directory per Pod; each
//!   `secret`/`configMap` volume is a temporary directory holding one file per
//!   key (or per `items` entry), rewritten atomically (write + rename) within
//!   a tick of the object changing. Containers start only once every
//!   non-optional Secret/ConfigMap exists, like a real kubelet. Every mount
//!   path found in env values, command and args is replaced by its
//!   directory (longest mount path first, in one pass, only at path
//!   boundaries). Directories are short (`$TMPDIR/kXXXXXX`) because a unix
//!   socket path must fit in 108 bytes.
//! - readiness: every 200 ms each running container's `readinessProbe`
//!   (`httpGet` on the Pod IP, or `tcpSocket`) is checked; a container
//!   without one is ready while its process runs. The Pod is Ready when all
//!   its containers are. The first time a Pod turns Ready, the config its
//!   Kengine runs is fetched through the admin unix socket (from the
//!   `CADDY_ADMIN`/`KENGINE_ADMIN` env) *before* Ready is published, and kept
//!   as [`PodInfo::ready_config`].
//! - restarts a container whose process exited (or was [`FakeKubelet::kill`]ed)
//!   on the next tick, so the unready Pod is published in between, at most
//!   once a second, with `restartCount` + 1 and `lastState.terminated`,
//!   whatever the `restartPolicy`. A restart does not renew `ready_config`.
//! - publishes Pod status (only when it changed) and the workload's status
//!   counters.
//!
//! Deliberately not emulated: changes to a workload's template after its Pods
//! were created (running Pods keep their spec; only Pods created later use the
//! new template, and `updatedReplicas` counts every Pod), liveness and
//! startup probes, probe delays and thresholds (one failed probe makes a
//! container unready), init containers and other volume types (fatal
//! errors), readOnly mounts, resources, and isolation: every Pod shares the
//! host's network namespace. Caddy binds data-plane listeners with
//! SO_REUSEPORT, so several Pods can listen on the same port, but the
//! kernel then spreads connections to *any* 127.x address over all of them:
//! a Pod IP does not select a Pod's data plane (it does for ports bound to
//! the Pod IP, such as the admin-proxy's). Pods it did not create are left
//! alone.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, Pod, PodSpec, PodTemplateSpec, Probe, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kengine_gateway::kengine::{AdminAddr, AdminClient};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::process::Child;

/// The node every Pod is bound to.
pub const NODE_NAME: &str = "kengine-e2e-fake-node";
const HOST_IP: &str = "127.0.0.1";
const TICK: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A crashing container is restarted at most this often.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// Upper bound on `terminationGracePeriodSeconds` (default 30 s), to keep tests fast.
const MAX_GRACE: Duration = Duration::from_secs(5);
const ADMIN_PROXY_BIN: &str = env!("CARGO_BIN_EXE_kengine-gateway");
/// Lines per log file in [`FakeKubelet::all_logs`].
const LOG_TAIL: usize = 60;

/// A Pod the fake kubelet runs, as seen at the last tick.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub name: String,
    pub uid: String,
    /// `Deployment` or `DaemonSet`.
    pub workload_kind: &'static str,
    pub workload: String,
    pub ip: Ipv4Addr,
    /// Its containers were started (volumes were ready).
    pub running: bool,
    pub ready: bool,
    /// The Kengine config the Pod ran when it first turned Ready.
    pub ready_config: Option<Value>,
    /// Kengine's admin unix socket, from the container's admin env.
    pub admin_socket: Option<PathBuf>,
    /// Volume name → the directory standing in for it.
    pub volumes: BTreeMap<String, PathBuf>,
    pub containers: Vec<ContainerInfo>,
}

#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub name: String,
    /// The running process, if any.
    pub pid: Option<u32>,
    pub ready: bool,
    pub restarts: i32,
    /// stdout and stderr of every run, appended.
    pub log: PathBuf,
}

/// Runs the Pods of every Deployment and DaemonSet in one namespace until
/// dropped; dropping it kills every process.
pub struct FakeKubelet {
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKubelet {
    /// Starts the background task; needs a tokio runtime.
    pub fn start(client: kube::Client, namespace: &str, ip_base: Ipv4Addr) -> FakeKubelet {
        kengine_gateway::kengine::admin::install_crypto_provider();
        let log_dir = tempfile::Builder::new()
            .prefix("kubelet-logs")
            .tempdir()
            .expect("log directory");
        let runner = Runner {
            client,
            namespace: namespace.to_string(),
            log_dir: log_dir.path().to_path_buf(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(PROBE_TIMEOUT)
                .pool_max_idle_per_host(0)
                .build()
                .expect("probe client"),
            next_ip: u32::from(ip_base),
            workload_status: HashMap::new(),
            last_error: None,
            shared: Arc::new(Mutex::new(Shared {
                pods: Vec::new(),
                stopping: Vec::new(),
                logs: Vec::new(),
                fatal: None,
                dropped: false,
                seq: 0,
                _log_dir: log_dir,
            })),
        };
        let shared = runner.shared.clone();
        let task = tokio::spawn(runner.run());
        FakeKubelet { shared, task }
    }

    /// The Pods it runs, oldest first. Panics if the kubelet hit a fatal error
    /// (an unsupported container or volume, say).
    pub fn pods(&self) -> Vec<PodInfo> {
        let shared = self.check();
        shared.pods.iter().map(RunningPod::info).collect()
    }

    pub fn pod(&self, name: &str) -> Option<PodInfo> {
        self.pods().into_iter().find(|p| p.name == name)
    }

    /// Kills a container's process (SIGKILL), as a crash would; it is
    /// restarted on a later tick.
    pub fn kill(&self, pod: &str, container: &str) {
        let mut shared = self.check();
        let c = shared
            .pods
            .iter_mut()
            .find(|p| p.name == pod)
            .and_then(|p| p.containers.iter_mut().find(|c| c.name == container))
            .unwrap_or_else(|| panic!("fake kubelet runs no container {container} in pod {pod}"));
        if let Some(child) = &mut c.child {
            let _ = child.start_kill();
        }
    }

    /// Everything the containers of `pod` wrote, also after it stopped.
    pub fn logs(&self, pod: &str) -> String {
        let shared = lock(&self.shared);
        let mut out = String::new();
        for (p, container, path) in &shared.logs {
            if p == pod {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                out += &format!("---- {pod}/{container}\n{text}");
            }
        }
        out
    }

    /// The last lines of every container log of every Pod it ever ran, for
    /// failure messages.
    pub fn all_logs(&self) -> String {
        let shared = lock(&self.shared);
        let mut out = String::new();
        if let Some(fatal) = &shared.fatal {
            out += &format!("fake kubelet stopped: {fatal}\n");
        }
        for (pod, container, path) in &shared.logs {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            out += &format!("---- {pod}/{container} (last {} lines)\n", tail.len());
            for line in tail {
                out += line;
                out.push('\n');
            }
        }
        out
    }

    fn check(&self) -> MutexGuard<'_, Shared> {
        let shared = lock(&self.shared);
        if let Some(fatal) = &shared.fatal {
            panic!("fake kubelet stopped: {fatal}");
        }
        if self.task.is_finished() {
            panic!("fake kubelet task ended unexpectedly (it panicked?)");
        }
        shared
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
        // Spawning happens under this lock and checks `dropped`, so nothing
        // starts after this.
        let mut shared = lock(&self.shared);
        shared.dropped = true;
        for pod in &mut shared.pods {
            for c in &mut pod.containers {
                if let Some(child) = &mut c.child {
                    let _ = child.start_kill();
                }
            }
        }
        for s in &mut shared.stopping {
            for child in &mut s.children {
                let _ = child.start_kill();
            }
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared between the task and the handle. The task never holds the
/// lock across an await.
struct Shared {
    pods: Vec<RunningPod>,
    stopping: Vec<Stopping>,
    /// (pod, container, file) of every container ever started.
    logs: Vec<(String, String, PathBuf)>,
    fatal: Option<String>,
    dropped: bool,
    seq: u64,
    _log_dir: tempfile::TempDir,
}

/// Processes of a removed Pod, told to stop; its volumes live until they exit.
struct Stopping {
    children: Vec<Child>,
    deadline: Instant,
    _volumes: Vec<tempfile::TempDir>,
}

impl Shared {
    /// Removes a Pod: SIGTERM now, SIGKILL after its grace period.
    fn stop_pod(&mut self, name: &str) {
        let Some(i) = self.pods.iter().position(|p| p.name == name) else {
            return;
        };
        let pod = self.pods.remove(i);
        let children: Vec<Child> = pod.containers.into_iter().filter_map(|c| c.child).collect();
        for child in &children {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        self.stopping.push(Stopping {
            children,
            deadline: Instant::now() + pod.grace,
            _volumes: pod.volumes.into_values().map(|v| v.dir).collect(),
        });
    }

    fn reap_stopping(&mut self) {
        let now = Instant::now();
        for s in &mut self.stopping {
            let overdue = now >= s.deadline;
            s.children.retain_mut(|c| {
                let running = matches!(c.try_wait(), Ok(None));
                if running && overdue {
                    // Reaped on a later tick.
                    let _ = c.start_kill();
                }
                running
            });
        }
        self.stopping.retain(|s| !s.children.is_empty());
    }
}

// ---------------------------------------------------------------- the API side

struct Workload {
    kind: &'static str,
    name: String,
    uid: String,
    generation: Option<i64>,
    replicas: usize,
    template: PodTemplateSpec,
}

type Files = BTreeMap<String, Vec<u8>>;

/// One poll of the namespace.
struct World {
    workloads: Vec<Workload>,
    pods: HashMap<String, Pod>,
    secrets: HashMap<String, Files>,
    config_maps: HashMap<String, Files>,
}

struct Runner {
    client: kube::Client,
    namespace: String,
    log_dir: PathBuf,
    http: reqwest::Client,
    next_ip: u32,
    /// Last status written per workload uid.
    workload_status: HashMap<String, Value>,
    last_error: Option<String>,
    shared: Arc<Mutex<Shared>>,
}

impl Runner {
    async fn run(mut self) {
        loop {
            if let Err(fatal) = self.tick().await {
                eprintln!("fake kubelet: {fatal}");
                lock(&self.shared).fatal = Some(fatal);
                return;
            }
            tokio::time::sleep(TICK).await;
        }
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// API errors are retried on the next tick; each distinct one is printed once.
    fn report(&mut self, what: &str, error: impl std::fmt::Display) {
        let message = format!("{what}: {error}");
        if self.last_error.as_ref() != Some(&message) {
            eprintln!("fake kubelet: {message}");
            self.last_error = Some(message);
        }
    }

    /// One reconciliation; `Err` is fatal.
    async fn tick(&mut self) -> Result<(), String> {
        let world = match self.observe().await {
            Ok(world) => world,
            Err(e) => {
                self.report("listing the namespace", e);
                return Ok(());
            }
        };
        let mut doomed = self.drop_lost_pods(&world);
        doomed.extend(self.scale(&world).await?);
        for name in doomed {
            match self
                .api::<Pod>()
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => self.report(&format!("deleting pod {name}"), e),
            }
        }
        if !self.run_containers(&world)? {
            return Ok(());
        }
        self.probe().await;
        self.publish_pods().await;
        self.publish_workloads(&world).await;
        Ok(())
    }

    async fn observe(&self) -> kube::Result<World> {
        let lp = ListParams::default();
        let (deployments, daemon_sets, pods, secrets, config_maps) = (
            self.api::<Deployment>(),
            self.api::<DaemonSet>(),
            self.api::<Pod>(),
            self.api::<Secret>(),
            self.api::<ConfigMap>(),
        );
        let (deployments, daemon_sets, pods, secrets, config_maps) = tokio::try_join!(
            deployments.list(&lp),
            daemon_sets.list(&lp),
            pods.list(&lp),
            secrets.list(&lp),
            config_maps.list(&lp),
        )?;
        let live = |m: &ObjectMeta| m.deletion_timestamp.is_none();
        let mut workloads = Vec::new();
        for d in deployments.items.into_iter().filter(|d| live(&d.metadata)) {
            let spec = d.spec.unwrap_or_default();
            workloads.push(Workload {
                kind: "Deployment",
                name: d.metadata.name.unwrap_or_default(),
                uid: d.metadata.uid.unwrap_or_default(),
                generation: d.metadata.generation,
                replicas: spec.replicas.unwrap_or(1).max(0) as usize,
                template: spec.template,
            });
        }
        for d in daemon_sets.items.into_iter().filter(|d| live(&d.metadata)) {
            workloads.push(Workload {
                kind: "DaemonSet",
                name: d.metadata.name.unwrap_or_default(),
                uid: d.metadata.uid.unwrap_or_default(),
                generation: d.metadata.generation,
                replicas: 1,
                template: d.spec.unwrap_or_default().template,
            });
        }
        let secrets = secrets
            .items
            .into_iter()
            .map(|s| {
                let mut files: Files = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                // The real API folds stringData into data; the emulator may not.
                for (k, v) in s.string_data.unwrap_or_default() {
                    files.insert(k, v.into_bytes());
                }
                (s.metadata.name.unwrap_or_default(), files)
            })
            .collect();
        let config_maps = config_maps
            .items
            .into_iter()
            .map(|c| {
                let mut files: Files = c
                    .binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                for (k, v) in c.data.unwrap_or_default() {
                    files.insert(k, v.into_bytes());
                }
                (c.metadata.name.unwrap_or_default(), files)
            })
            .collect();
        Ok(World {
            workloads,
            pods: pods
                .items
                .into_iter()
                .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
                .collect(),
            secrets,
            config_maps,
        })
    }

    /// Stops Pods whose object or owner is gone; returns the objects of
    /// orphans, which must be deleted.
    fn drop_lost_pods(&self, world: &World) -> Vec<String> {
        let mut shared = self.shared();
        let mut doomed = Vec::new();
        let mut lost = Vec::new();
        for pod in &shared.pods {
            let object_gone = world.pods.get(&pod.name).is_none_or(|o| {
                o.metadata.uid.as_deref() != Some(pod.uid.as_str())
                    || o.metadata.deletion_timestamp.is_some()
            });
            let owner_gone = !world.workloads.iter().any(|w| w.uid == pod.owner_uid);
            if owner_gone && !object_gone {
                doomed.push(pod.name.clone());
            }
            if object_gone || owner_gone {
                lost.push(pod.name.clone());
            }
        }
        for name in lost {
            shared.stop_pod(&name);
        }
        doomed
    }

    /// Creates missing Pods and stops surplus ones (newest first); returns
    /// the objects to delete.
    async fn scale(&mut self, world: &World) -> Result<Vec<String>, String> {
        let mut doomed = Vec::new();
        for w in &world.workloads {
            let mut owned: Vec<(u64, String)> = self
                .shared()
                .pods
                .iter()
                .filter(|p| p.owner_uid == w.uid)
                .map(|p| (p.seq, p.name.clone()))
                .collect();
            if owned.len() > w.replicas {
                owned.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
                let surplus = owned.len() - w.replicas;
                let mut shared = self.shared();
                for (_, name) in owned.into_iter().take(surplus) {
                    shared.stop_pod(&name);
                    doomed.push(name);
                }
            } else {
                for _ in owned.len()..w.replicas {
                    self.create_pod(w).await?;
                }
            }
        }
        Ok(doomed)
    }

    async fn create_pod(&mut self, w: &Workload) -> Result<(), String> {
        let name = format!("{}-{}", w.name, suffix());
        self.next_ip += 1;
        let ip = Ipv4Addr::from(self.next_ip);
        let mut spec = w
            .template
            .spec
            .clone()
            .ok_or_else(|| format!("{} {} has no pod template spec", w.kind, w.name))?;
        spec.node_name = Some(NODE_NAME.to_string());
        let mut pod = RunningPod::prepare(&name, &self.namespace, ip, &spec, w, &self.log_dir)?;
        let template_meta = w.template.metadata.clone().unwrap_or_default();
        let object = Pod {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: template_meta.labels,
                annotations: template_meta.annotations,
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: w.kind.into(),
                    name: w.name.clone(),
                    uid: w.uid.clone(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        };
        match self
            .api::<Pod>()
            .create(&PostParams::default(), &object)
            .await
        {
            Ok(created) => {
                pod.uid = created.metadata.uid.unwrap_or_default();
                let mut shared = self.shared();
                shared.seq += 1;
                pod.seq = shared.seq;
                for c in &pod.containers {
                    shared
                        .logs
                        .push((name.clone(), c.name.clone(), c.log.clone()));
                }
                shared.pods.push(pod);
            }
            Err(e) => self.report(&format!("creating pod {name}"), e),
        }
        Ok(())
    }

    /// Syncs volumes, starts and restarts processes; `false` once dropped.
    fn run_containers(&self, world: &World) -> Result<bool, String> {
        let mut shared = self.shared();
        if shared.dropped {
            return Ok(false);
        }
        shared.reap_stopping();
        for pod in &mut shared.pods {
            for v in pod.volumes.values_mut() {
                v.sync(world)?;
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
                // Restarted a tick later, so the unready Pod is published in between.
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

    /// Probes every running container, then updates readiness; a Pod's
    /// first Ready waits for its config snapshot.
    async fn probe(&mut self) {
        let mut probes = tokio::task::JoinSet::new();
        for pod in &self.shared().pods {
            for (i, c) in pod.containers.iter().enumerate() {
                if c.child.is_none() {
                    continue;
                }
                let (name, probe, http) = (pod.name.clone(), c.probe.clone(), self.http.clone());
                probes.spawn(async move {
                    let ok = match probe {
                        None => true,
                        Some(p) => p.check(&http).await,
                    };
                    (name, i, ok)
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
                            .any(|(p, j, ok)| *ok && *j == i && *p == pod.name);
                }
                let ready = pod.started && pod.containers.iter().all(|c| c.ready);
                match (&pod.admin_socket, &pod.ready_config) {
                    (Some(socket), None) if ready && !pod.ready => {
                        snapshots.push((pod.name.clone(), socket.clone()));
                    }
                    _ => pod.set_ready(ready),
                }
            }
        }
        for (name, socket) in snapshots {
            let admin =
                AdminClient::new(AdminAddr::Unix(socket), PROBE_TIMEOUT * 2).expect("admin client");
            // On failure the Pod stays unready and this is retried next tick.
            if let Ok(config) = admin.config().await {
                let mut shared = self.shared();
                if let Some(pod) = shared.pods.iter_mut().find(|p| p.name == name) {
                    pod.ready_config = Some(config);
                    pod.set_ready(true);
                }
            }
        }
    }

    async fn publish_pods(&mut self) {
        let changed: Vec<(String, Value)> = self
            .shared()
            .pods
            .iter()
            .filter_map(|p| {
                let status = p.status();
                (p.published.as_ref() != Some(&status)).then(|| (p.name.clone(), status))
            })
            .collect();
        for (name, status) in changed {
            let patch = Patch::Merge(json!({ "status": status }));
            match self
                .api::<Pod>()
                .patch_status(&name, &PatchParams::default(), &patch)
                .await
            {
                Ok(_) => {
                    if let Some(p) = self.shared().pods.iter_mut().find(|p| p.name == name) {
                        p.published = Some(status);
                    }
                }
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => self.report(&format!("status of pod {name}"), e),
            }
        }
    }

    async fn publish_workloads(&mut self, world: &World) {
        for w in &world.workloads {
            let (total, ready) = {
                let shared = self.shared();
                let owned = shared.pods.iter().filter(|p| p.owner_uid == w.uid);
                let ready = owned.clone().filter(|p| p.ready).count();
                (owned.count(), ready)
            };
            let status = match w.kind {
                "Deployment" => json!({
                    "replicas": total, "readyReplicas": ready, "availableReplicas": ready,
                    "updatedReplicas": total, "unavailableReplicas": total - ready,
                    "observedGeneration": w.generation,
                }),
                _ => json!({
                    "desiredNumberScheduled": 1, "currentNumberScheduled": total,
                    "numberReady": ready, "numberAvailable": ready,
                    "numberUnavailable": total - ready, "updatedNumberScheduled": total,
                    "numberMisscheduled": 0, "observedGeneration": w.generation,
                }),
            };
            if self.workload_status.get(&w.uid) == Some(&status) {
                continue;
            }
            let patch = Patch::Merge(json!({ "status": status }));
            let pp = PatchParams::default();
            let result = match w.kind {
                "Deployment" => self
                    .api::<Deployment>()
                    .patch_status(&w.name, &pp, &patch)
                    .await
                    .map(drop),
                _ => self
                    .api::<DaemonSet>()
                    .patch_status(&w.name, &pp, &patch)
                    .await
                    .map(drop),
            };
            match result {
                Ok(()) => {
                    self.workload_status.insert(w.uid.clone(), status);
                }
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => self.report(&format!("status of {} {}", w.kind, w.name), e),
            }
        }
    }
}

/// Kubernetes' random-suffix alphabet (no vowels, no look-alikes).
fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize];
            n /= ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

fn now() -> Value {
    serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now())).unwrap()
}

// ---------------------------------------------------------------- pods

struct RunningPod {
    name: String,
    uid: String,
    seq: u64,
    owner_uid: String,
    workload_kind: &'static str,
    workload: String,
    ip: Ipv4Addr,
    grace: Duration,
    volumes: BTreeMap<String, Volume>,
    containers: Vec<RunningContainer>,
    admin_socket: Option<PathBuf>,
    started: bool,
    ready: bool,
    ready_config: Option<Value>,
    created_at: Value,
    ready_since: Value,
    /// The status last written to the API.
    published: Option<Value>,
}

impl RunningPod {
    /// Volumes and resolved containers of a new Pod; errors are fatal.
    fn prepare(
        name: &str,
        namespace: &str,
        ip: Ipv4Addr,
        spec: &PodSpec,
        w: &Workload,
        log_dir: &Path,
    ) -> Result<RunningPod, String> {
        if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(format!(
                "{} {}: init containers are not emulated",
                w.kind, w.name
            ));
        }
        let mut volumes = BTreeMap::new();
        for v in spec.volumes.iter().flatten() {
            volumes.insert(v.name.clone(), Volume::new(v, &w.name)?);
        }
        let fields = HashMap::from([
            ("status.podIP", ip.to_string()),
            ("status.hostIP", HOST_IP.to_string()),
            ("metadata.name", name.to_string()),
            ("metadata.namespace", namespace.to_string()),
            ("spec.nodeName", NODE_NAME.to_string()),
        ]);
        let mut containers = Vec::new();
        let mut admin_socket = None;
        for c in &spec.containers {
            let rc = RunningContainer::resolve(c, name, ip, &fields, &volumes, log_dir)?;
            if rc.kengine && admin_socket.is_none() {
                admin_socket = admin_socket_of(&rc.env)?;
            }
            containers.push(rc);
        }
        let grace = spec
            .termination_grace_period_seconds
            .map_or(MAX_GRACE, |s| Duration::from_secs(s.max(0) as u64))
            .min(MAX_GRACE);
        Ok(RunningPod {
            name: name.to_string(),
            uid: String::new(),
            seq: 0,
            owner_uid: w.uid.clone(),
            workload_kind: w.kind,
            workload: w.name.clone(),
            ip,
            grace,
            volumes,
            containers,
            admin_socket,
            started: false,
            ready: false,
            ready_config: None,
            created_at: now(),
            ready_since: now(),
            published: None,
        })
    }

    fn set_ready(&mut self, ready: bool) {
        if ready != self.ready {
            self.ready = ready;
            self.ready_since = now();
        }
    }

    fn status(&self) -> Value {
        let ready = if self.ready { "True" } else { "False" };
        let condition = |type_: &str, status: &str, at: &Value| json!({"type": type_, "status": status, "lastTransitionTime": at});
        let mut status = json!({
            "phase": if self.started { "Running" } else { "Pending" },
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "startTime": self.created_at,
            "qosClass": "BestEffort",
            "conditions": [
                condition("PodScheduled", "True", &self.created_at),
                condition("Initialized", "True", &self.created_at),
                condition("ContainersReady", ready, &self.ready_since),
                condition("Ready", ready, &self.ready_since),
            ],
            "containerStatuses": self.containers.iter().map(|c| c.status(self.started)).collect::<Vec<_>>(),
        });
        // Like a real Pod, no IP before its sandbox (here: its processes) exists.
        if self.started {
            status["podIP"] = json!(self.ip.to_string());
            status["podIPs"] = json!([{"ip": self.ip.to_string()}]);
        }
        status
    }

    fn info(&self) -> PodInfo {
        PodInfo {
            name: self.name.clone(),
            uid: self.uid.clone(),
            workload_kind: self.workload_kind,
            workload: self.workload.clone(),
            ip: self.ip,
            running: self.started,
            ready: self.ready,
            ready_config: self.ready_config.clone(),
            admin_socket: self.admin_socket.clone(),
            volumes: self
                .volumes
                .iter()
                .map(|(k, v)| (k.clone(), v.dir.path().to_path_buf()))
                .collect(),
            containers: self
                .containers
                .iter()
                .map(|c| ContainerInfo {
                    name: c.name.clone(),
                    pid: c.child.as_ref().and_then(Child::id),
                    ready: c.ready,
                    restarts: c.restarts,
                    log: c.log.clone(),
                })
                .collect(),
        }
    }
}

/// Kengine's admin socket from `CADDY_ADMIN`/`KENGINE_ADMIN`, when it is one.
fn admin_socket_of(env: &[(String, String)]) -> Result<Option<PathBuf>, String> {
    let Some((_, value)) = env
        .iter()
        .find(|(k, _)| k == "CADDY_ADMIN" || k == "KENGINE_ADMIN")
    else {
        return Ok(None);
    };
    let Ok(AdminAddr::Unix(path)) = value.parse::<AdminAddr>() else {
        return Ok(None);
    };
    // sockaddr_un.sun_path is 108 bytes, including the terminating NUL.
    if path.as_os_str().len() > 107 {
        return Err(format!(
            "admin socket path {} is longer than a unix socket allows; use a shorter TMPDIR",
            path.display()
        ));
    }
    Ok(Some(path))
}

// ---------------------------------------------------------------- volumes

enum Source {
    EmptyDir,
    Secret(String),
    ConfigMap(String),
}

struct Volume {
    dir: tempfile::TempDir,
    source: Source,
    optional: bool,
    items: Option<Vec<KeyToPath>>,
    /// What is on disk (`None` until the object was first seen).
    written: Option<Files>,
}

impl Volume {
    fn new(v: &k8s_openapi::api::core::v1::Volume, workload: &str) -> Result<Volume, String> {
        let (source, optional, items) = if v.empty_dir.is_some() {
            (Source::EmptyDir, false, None)
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            (
                Source::Secret(name),
                s.optional == Some(true),
                s.items.clone(),
            )
        } else if let Some(c) = &v.config_map {
            (
                Source::ConfigMap(c.name.clone()),
                c.optional == Some(true),
                c.items.clone(),
            )
        } else {
            return Err(format!(
                "{workload}: volume {} is not an emptyDir, secret or configMap, which is all the fake kubelet emulates",
                v.name
            ));
        };
        // Short: unix socket paths under it must fit in 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("k")
            .tempdir()
            .map_err(|e| format!("volume directory: {e}"))?;
        Ok(Volume {
            dir,
            source,
            optional,
            items,
            written: None,
        })
    }

    fn ready(&self) -> bool {
        matches!(self.source, Source::EmptyDir) || self.optional || self.written.is_some()
    }

    /// Brings the files in line with the Secret or ConfigMap.
    fn sync(&mut self, world: &World) -> Result<(), String> {
        let data = match &self.source {
            Source::EmptyDir => return Ok(()),
            Source::Secret(name) => world.secrets.get(name),
            Source::ConfigMap(name) => world.config_maps.get(name),
        };
        // A deleted object leaves the files as they were, as on a real node.
        let Some(data) = data else { return Ok(()) };
        let files: Files = match &self.items {
            None => data.clone(),
            Some(items) => items
                .iter()
                .filter_map(|i| Some((i.path.clone(), data.get(&i.key)?.clone())))
                .collect(),
        };
        if self.written.as_ref() == Some(&files) {
            return Ok(());
        }
        let old = self.written.take().unwrap_or_default();
        let io = |e: std::io::Error| format!("writing volume files: {e}");
        for (path, bytes) in &files {
            if old.get(path) != Some(bytes) {
                let target = self.dir.path().join(path);
                let parent = target.parent().unwrap_or(self.dir.path());
                std::fs::create_dir_all(parent).map_err(io)?;
                // Readers never see a half-written file.
                let tmp = parent.join(".fake-kubelet.tmp");
                std::fs::write(&tmp, bytes).map_err(io)?;
                std::fs::rename(&tmp, &target).map_err(io)?;
            }
        }
        for path in old.keys().filter(|p| !files.contains_key(*p)) {
            let _ = std::fs::remove_file(self.dir.path().join(path));
        }
        self.written = Some(files);
        Ok(())
    }
}

// ---------------------------------------------------------------- containers

#[derive(Clone)]
enum ProbeTarget {
    Http(String),
    Tcp(SocketAddr),
}

impl ProbeTarget {
    async fn check(&self, http: &reqwest::Client) -> bool {
        match self {
            ProbeTarget::Http(url) => http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| (200..400).contains(&r.status().as_u16())),
            ProbeTarget::Tcp(addr) => {
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr))
                    .await
                    .is_ok_and(|r| r.is_ok())
            }
        }
    }
}

struct RunningContainer {
    name: String,
    image: String,
    pod: String,
    /// Runs Caddy standing in for Kengine.
    kengine: bool,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    probe: Option<ProbeTarget>,
    log: PathBuf,
    child: Option<Child>,
    started_at: Value,
    last_start: Option<Instant>,
    restarts: i32,
    last_exit: Option<Value>,
    ready: bool,
}

impl RunningContainer {
    fn resolve(
        c: &Container,
        pod: &str,
        ip: Ipv4Addr,
        fields: &HashMap<&str, String>,
        volumes: &BTreeMap<String, Volume>,
        log_dir: &Path,
    ) -> Result<RunningContainer, String> {
        let what = || format!("pod {pod} container {}", c.name);
        if c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
            return Err(format!("{}: envFrom is not emulated", what()));
        }
        // Expanded in order, so `$(VAR)` sees only earlier variables.
        let mut env: Vec<(String, String)> = Vec::new();
        for var in c.env.iter().flatten() {
            let value = if let Some(value) = &var.value {
                expand(value, &env)
            } else if let Some(from) = &var.value_from {
                let path = from.field_ref.as_ref().map(|f| f.field_path.as_str());
                match path.and_then(|p| fields.get(p)) {
                    Some(v) => v.clone(),
                    None => {
                        return Err(format!(
                            "{}: env {} uses a valueFrom the fake kubelet does not emulate",
                            what(),
                            var.name
                        ));
                    }
                }
            } else {
                String::new()
            };
            env.retain(|(k, _)| *k != var.name);
            env.push((var.name.clone(), value));
        }
        let command = c.command.clone().unwrap_or_default();
        let mut argv: Vec<String> = command.iter().skip(1).cloned().collect();
        argv.extend(c.args.iter().flatten().cloned());
        let argv: Vec<String> = argv.iter().map(|a| expand(a, &env)).collect();
        let entry = command
            .first()
            .map(|c| c.rsplit('/').next().unwrap_or(c).to_string());
        let (kengine, program, argv) = if argv.first().map(String::as_str) == Some("admin-proxy") {
            (false, PathBuf::from(ADMIN_PROXY_BIN), argv)
        } else if c.name == "kengine" || matches!(entry.as_deref(), Some("kengine" | "caddy")) {
            let argv = if argv.is_empty() {
                vec!["run".into()]
            } else {
                argv
            };
            (true, super::caddy_bin(), argv)
        } else {
            return Err(format!(
                "{}: cannot run image {:?} with command {command:?} and args {:?}; the fake \
                 kubelet runs Kengine containers (named `kengine`, or command `kengine`/`caddy`) \
                 and `admin-proxy` containers only",
                what(),
                c.image.as_deref().unwrap_or_default(),
                c.args.as_deref().unwrap_or_default(),
            ));
        };
        // The "mount namespace": container paths become host directories.
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let volume = volumes
                .get(&m.name)
                .ok_or_else(|| format!("{}: volumeMount {} names no volume", what(), m.name))?;
            let mut host = volume.dir.path().to_path_buf();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                host.push(sub);
            }
            let path = m.mount_path.trim_end_matches('/').to_string();
            if !path.is_empty() {
                mounts.push((path, host.to_string_lossy().into_owned()));
            }
        }
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let args = argv.iter().map(|a| remount(a, &mounts)).collect();
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k, remount(&v, &mounts)))
            .collect();
        if kengine {
            let mirrored: Vec<(String, String)> = env
                .iter()
                .filter_map(|(k, v)| {
                    Some((format!("CADDY_{}", k.strip_prefix("KENGINE_")?), v.clone()))
                })
                .filter(|(k, _)| !env.iter().any(|(e, _)| e == k))
                .collect();
            env.extend(mirrored);
        }
        let probe = c
            .readiness_probe
            .as_ref()
            .map(|p| probe_target(p, c, ip).map_err(|e| format!("{}: {e}", what())))
            .transpose()?;
        Ok(RunningContainer {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            pod: pod.to_string(),
            kengine,
            program,
            args,
            env,
            probe,
            log: log_dir.join(format!("{pod}_{}.log", c.name)),
            child: None,
            started_at: Value::Null,
            last_start: None,
            restarts: 0,
            last_exit: None,
            ready: false,
        })
    }

    fn spawn(&mut self, cwd: &Path) -> Result<(), String> {
        let io = |e: std::io::Error| format!("starting {}: {e}", self.program.display());
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io)?;
        let _ = writeln!(
            log,
            "==== fake kubelet: run {} of {}: {} {}",
            self.restarts,
            self.name,
            self.program.display(),
            self.args.join(" ")
        );
        let mut cmd = tokio::process::Command::new(&self.program);
        // A container sees its own environment, not the test's.
        cmd.args(&self.args).env_clear().env("HOSTNAME", &self.pod);
        for key in ["PATH", "KENGINE_GATEWAY_LOG", "RUST_BACKTRACE"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        let child = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io)?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(io)?;
        self.child = Some(child);
        self.started_at = now();
        self.last_start = Some(Instant::now());
        Ok(())
    }

    /// Notices an exited process; `true` if it just exited.
    fn check_exit(&mut self) -> bool {
        let Some(child) = &mut self.child else {
            return false;
        };
        let Ok(Some(exit)) = child.try_wait() else {
            return false;
        };
        self.child = None;
        self.ready = false;
        // Like a container runtime: 128 + signal for a killed process.
        let code = exit
            .code()
            .unwrap_or_else(|| 128 + exit.signal().unwrap_or(0));
        if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(log, "==== fake kubelet: {} exited: {exit}", self.name);
        }
        self.last_exit = Some(json!({
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": self.started_at,
            "finishedAt": now(),
        }));
        true
    }

    fn status(&self, pod_started: bool) -> Value {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        self.image.hash(&mut h);
        let state = match (&self.child, pod_started) {
            (Some(_), _) => json!({"running": {"startedAt": self.started_at}}),
            (None, false) => json!({"waiting": {"reason": "ContainerCreating"}}),
            (None, true) => json!({"waiting": {"reason": "CrashLoopBackOff"}}),
        };
        let mut status = json!({
            "name": self.name,
            "image": self.image,
            "imageID": format!("fake-kubelet://{}@{:016x}", self.image, h.finish()),
            "containerID": format!("fake-kubelet://{}/{}/{}", self.pod, self.name, self.restarts),
            "ready": self.ready,
            "started": self.child.is_some(),
            "restartCount": self.restarts,
            "state": state,
        });
        if let Some(exit) = &self.last_exit {
            status["lastState"] = json!({ "terminated": exit });
        }
        status
    }
}

fn probe_target(p: &Probe, c: &Container, ip: Ipv4Addr) -> Result<ProbeTarget, String> {
    let port = |port: &IntOrString| -> Result<u16, String> {
        match port {
            IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("bad probe port {n}")),
            IntOrString::String(name) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("probe port {name:?} names no container port")),
        }
    };
    if let Some(get) = &p.http_get {
        if get.scheme.as_deref().is_some_and(|s| s != "HTTP") {
            return Err("only HTTP readiness probes are emulated".into());
        }
        let host = get.host.clone().unwrap_or_else(|| ip.to_string());
        let path = get.path.as_deref().unwrap_or("/");
        return Ok(ProbeTarget::Http(format!(
            "http://{host}:{}{path}",
            port(&get.port)?
        )));
    }
    if let Some(tcp) = &p.tcp_socket {
        let host: Ipv4Addr = match &tcp.host {
            Some(h) => h.parse().map_err(|_| format!("bad probe host {h}"))?,
            None => ip,
        };
        return Ok(ProbeTarget::Tcp(SocketAddr::from((host, port(&tcp.port)?))));
    }
    Err("only httpGet and tcpSocket readiness probes are emulated".into())
}

/// Kubelet's `$(VAR)` expansion: defined variables are substituted, `$$`
/// is a literal `$`, anything else is left as written.
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out += &rest[..i];
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out += v,
                None => out += &format!("$({name})"),
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out + rest
}

/// Replaces mount paths (longest first) by their directories, in one pass so
/// a replacement is never rewritten again, and only at path boundaries
/// (`/tmp` matches `unix//tmp/x` and `--dir=/tmp`, not `/var/tmp` or `/tmpx`).
fn remount(s: &str, mounts: &[(String, String)]) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let mut out = String::new();
    let mut i = 0;
    'scan: while i < s.len() {
        let before_ok = s[..i].chars().next_back().is_none_or(|c| !is_name(c));
        if before_ok {
            for (path, host) in mounts {
                if let Some(after) = s[i..].strip_prefix(path.as_str())
                    && after.chars().next().is_none_or(|c| c == '/' || !is_name(c))
                {
                    out += host;
                    i += path.len();
                    continue 'scan;
                }
            }
        }
        let c = s[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}
