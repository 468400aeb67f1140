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
//! - runs each container as a local process, resolved by
//!   [`super::containers`] (Caddy 2.8.4 for Kengine containers, this
//!   project's binary for `admin-proxy`/`echo`/`kengine-gateway` ones).
//!   Anything else is a fatal error, which stops the kubelet and
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
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodSpec, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kengine_gateway::kengine::{AdminAddr, AdminClient};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::process::Child;

use super::containers::{
    MAX_GRACE, Objects, PROBE_TIMEOUT, RESTART_BACKOFF, RunningContainer, Volume, admin_socket_of,
    now, suffix,
};

/// The node every Pod is bound to.
pub const NODE_NAME: &str = "kengine-e2e-fake-node";
const HOST_IP: &str = "127.0.0.1";
const TICK: Duration = Duration::from_millis(200);
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

/// One poll of the namespace.
struct World {
    workloads: Vec<Workload>,
    pods: HashMap<String, Pod>,
    objects: Objects,
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
        let mut objects = Objects::default();
        secrets
            .items
            .into_iter()
            .for_each(|s| objects.add_secret(s));
        config_maps
            .items
            .into_iter()
            .for_each(|c| objects.add_config_map(c));
        Ok(World {
            workloads,
            pods: pods
                .items
                .into_iter()
                .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
                .collect(),
            objects,
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
                v.sync(&world.objects)?;
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
