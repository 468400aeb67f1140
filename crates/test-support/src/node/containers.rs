//! What the node agent does with one Pod's containers: resolving a
//! container into a local process (its program, `$(VAR)` expansion,
//! fieldRefs, the Service variables of `kubernetes`), running it in the
//! pod's network namespace and a mount namespace of its own (each volume
//! bound at its mount path), restarting it, its readiness probe, its
//! status, and the files of its Secret, ConfigMap and emptyDir volumes.
//!
//! Programs are chosen by image name ([`program_for`]): `kengine` and
//! `caddy` images run the Caddy 2.8.4 binary ([`crate::caddy_bin`]),
//! with `run` when there are no args; `kengine-gateway` images run this
//! project's binary; the conformance suite's `echo-basic` and `coredns`
//! images run the binaries `scripts/ensure-conformance.sh` builds. Any
//! other image fails its pod with that reason.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kengine_gateway::kengine::AdminAddr;
use serde_json::{Value, json};
use tokio::process::Child;

pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A crashing container is restarted at most this often.
pub const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// Upper bound on `terminationGracePeriodSeconds` (default 30 s), to keep tests fast.
pub const MAX_GRACE: Duration = Duration::from_secs(5);
/// Starts the lines a test kubelet writes into a container's log file
/// itself (runs, exits), so the kubelet API can leave them out.
pub const LOG_MARKER: &str = "==== fake kubelet: ";

/// The files of a Secret or ConfigMap: key → bytes.
pub type Files = BTreeMap<String, Vec<u8>>;

/// The Secrets and ConfigMaps of one namespace, by name.
#[derive(Default)]
pub struct Objects {
    pub secrets: HashMap<String, Files>,
    pub config_maps: HashMap<String, Files>,
}

impl Objects {
    pub fn add_secret(&mut self, s: k8s_openapi::api::core::v1::Secret) {
        let mut files: Files = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        // The API server folds stringData into data; kept for objects built in tests.
        for (k, v) in s.string_data.unwrap_or_default() {
            files.insert(k, v.into_bytes());
        }
        self.secrets
            .insert(s.metadata.name.unwrap_or_default(), files);
    }

    pub fn add_config_map(&mut self, c: k8s_openapi::api::core::v1::ConfigMap) {
        let mut files: Files = c
            .binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in c.data.unwrap_or_default() {
            files.insert(k, v.into_bytes());
        }
        self.config_maps
            .insert(c.metadata.name.unwrap_or_default(), files);
    }
}

/// Kubernetes' random-suffix alphabet (no vowels, no look-alikes).
pub fn suffix() -> String {
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

pub fn now() -> Value {
    serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now())).unwrap()
}

/// Kengine's admin socket from `CADDY_ADMIN`/`KENGINE_ADMIN`, when it is one.
pub fn admin_socket_of(env: &[(String, String)]) -> Result<Option<PathBuf>, String> {
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

pub enum Source {
    EmptyDir,
    Secret(String),
    ConfigMap(String),
    Projected(Vec<Projection>),
}

/// One source of a `projected` volume.
pub enum Projection {
    Secret {
        name: String,
        optional: bool,
        items: Option<Vec<KeyToPath>>,
    },
    ConfigMap {
        name: String,
        optional: bool,
        items: Option<Vec<KeyToPath>>,
    },
    /// Files the kubelet makes itself (downwardAPI items, service-account
    /// tokens), computed by the caller of [`Volume::projected`].
    Fixed(Files),
}

/// `data`, or only its `items` (key → path) when given.
fn select(data: &Files, items: &Option<Vec<KeyToPath>>) -> Files {
    match items {
        None => data.clone(),
        Some(items) => items
            .iter()
            .filter_map(|i| Some((i.path.clone(), data.get(&i.key)?.clone())))
            .collect(),
    }
}

pub struct Volume {
    pub dir: tempfile::TempDir,
    pub source: Source,
    optional: bool,
    items: Option<Vec<KeyToPath>>,
    /// What is on disk (`None` until the object was first seen).
    written: Option<Files>,
}

impl Volume {
    pub fn new(v: &k8s_openapi::api::core::v1::Volume, workload: &str) -> Result<Volume, String> {
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
                "{workload}: volume {} is not an emptyDir, secret or configMap, which is all the node agent runs",
                v.name
            ));
        };
        Volume::with(source, optional, items)
    }

    fn with(
        source: Source,
        optional: bool,
        items: Option<Vec<KeyToPath>>,
    ) -> Result<Volume, String> {
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

    /// A `projected` volume: its secret and configMap sources are kept in
    /// sync like volumes of their own; `fixed` holds the files of its
    /// downwardAPI and serviceAccountToken sources (by path), which only the
    /// caller can make.
    pub fn projected(
        v: &k8s_openapi::api::core::v1::Volume,
        fixed: Files,
    ) -> Result<Volume, String> {
        let sources = v
            .projected
            .as_ref()
            .ok_or_else(|| format!("volume {} is not projected", v.name))?
            .sources
            .iter()
            .flatten();
        let mut parts = vec![Projection::Fixed(fixed)];
        for source in sources {
            if let Some(s) = &source.secret {
                parts.push(Projection::Secret {
                    name: s.name.clone(),
                    optional: s.optional == Some(true),
                    items: s.items.clone(),
                });
            }
            if let Some(c) = &source.config_map {
                parts.push(Projection::ConfigMap {
                    name: c.name.clone(),
                    optional: c.optional == Some(true),
                    items: c.items.clone(),
                });
            }
        }
        Volume::with(Source::Projected(parts), false, None)
    }

    pub fn ready(&self) -> bool {
        matches!(self.source, Source::EmptyDir) || self.optional || self.written.is_some()
    }

    /// Brings the files in line with the Secret or ConfigMap.
    pub fn sync(&mut self, world: &Objects) -> Result<(), String> {
        let files: Files = match &self.source {
            Source::EmptyDir => return Ok(()),
            Source::Secret(name) | Source::ConfigMap(name) => {
                let data = match &self.source {
                    Source::Secret(_) => world.secrets.get(name),
                    _ => world.config_maps.get(name),
                };
                // A deleted object leaves the files as they were, as on a real node.
                let Some(data) = data else { return Ok(()) };
                select(data, &self.items)
            }
            Source::Projected(parts) => {
                let mut files = Files::new();
                for part in parts {
                    let (data, optional, items) = match part {
                        Projection::Fixed(fixed) => {
                            files.extend(fixed.clone());
                            continue;
                        }
                        Projection::Secret {
                            name,
                            optional,
                            items,
                        } => (world.secrets.get(name), optional, items),
                        Projection::ConfigMap {
                            name,
                            optional,
                            items,
                        } => (world.config_maps.get(name), optional, items),
                    };
                    match data {
                        Some(data) => files.extend(select(data, items)),
                        None if *optional => {}
                        None => return Ok(()),
                    }
                }
                files
            }
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
pub enum ProbeTarget {
    Http(String),
    Tcp(SocketAddr),
}

impl ProbeTarget {
    pub async fn check(&self, http: &reqwest::Client) -> bool {
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

pub struct RunningContainer {
    pub name: String,
    pub image: String,
    pub pod: String,
    /// Runs Caddy standing in for Kengine.
    pub kengine: bool,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// (mount path, host directory or file), as the volumeMounts say.
    pub mounts: Vec<(String, String)>,
    pub probe: Option<ProbeTarget>,
    pub log: PathBuf,
    pub child: Option<Child>,
    pub started_at: Value,
    pub last_start: Option<Instant>,
    pub restarts: i32,
    pub last_exit: Option<Value>,
    pub ready: bool,
    /// The network namespace its processes run in (the node agent's
    /// pods); `None`: the test's own.
    pub netns: Option<Arc<OwnedFd>>,
}

impl RunningContainer {
    pub fn resolve(
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
                            "{}: env {} uses a valueFrom the node agent does not support",
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
        let image = c.image.clone().unwrap_or_default();
        let (kengine, program, argv) = program_for(&image, &command, c.args.as_deref())
            .map_err(|e| format!("{}: {e}", what()))?;
        let argv: Vec<String> = argv.iter().map(|a| expand(a, &env)).collect();
        // The pod's mount namespace: each volume's directory is bound at
        // its mount path when a process starts (`spawn`).
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
            if !path.starts_with('/') {
                return Err(format!("{}: mountPath {path:?} is not absolute", what()));
            }
            mounts.push((path, host.to_string_lossy().into_owned()));
        }
        // The variables a kubelet gives every container, before the pod's own.
        let mut env: Vec<(String, String)> = {
            let own: Vec<(String, String)> = service_env()
                .into_iter()
                .filter(|(k, _)| !env.iter().any(|(e, _)| e == k))
                .collect();
            own.into_iter().chain(env).collect()
        };
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
            args: argv,
            env,
            mounts,
            probe,
            log: log_dir.join(format!("{pod}_{}.log", c.name)),
            child: None,
            started_at: Value::Null,
            last_start: None,
            restarts: 0,
            last_exit: None,
            ready: false,
            netns: None,
        })
    }

    pub fn spawn(&mut self, cwd: &Path) -> Result<(), String> {
        let io = |e: std::io::Error| format!("starting {}: {e}", self.program.display());
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io)?;
        let _ = writeln!(
            log,
            "{LOG_MARKER}run {} of {}: {} {}",
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
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io)?)
            .stderr(log)
            .kill_on_drop(true);
        let netns = self.netns.as_ref().map(|n| n.as_raw_fd());
        let binds = binds(&self.mounts)?;
        // SAFETY: between fork and exec only setns(2), unshare(2), open(2)
        // and mount(2) run, all async-signal-safe, on memory prepared before
        // the fork or on the stack; `netns` stays open in the parent until
        // `spawn` returns.
        unsafe {
            cmd.pre_exec(move || {
                let check = |rc: libc::c_int| match rc {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                };
                if let Some(fd) = netns {
                    check(libc::setns(fd, libc::CLONE_NEWNET))?;
                }
                if binds.is_empty() {
                    return Ok(());
                }
                // A mount namespace of its own, where the volumes sit at
                // their mount paths; nothing propagates back to the host.
                check(libc::unshare(libc::CLONE_NEWNS))?;
                check(libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                // Every source is opened before the first mount, so a
                // mount over `/tmp` cannot hide a later source under it;
                // opened here, because a bind mount's source must be in
                // the caller's mount namespace.
                let mut fds = [0 as libc::c_int; MAX_BINDS];
                for (i, (source, _)) in binds.iter().enumerate() {
                    fds[i] = libc::open(source.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                    if fds[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, (_, target)) in binds.iter().enumerate() {
                    let mut path = [0u8; 32];
                    fd_path(fds[i], &mut path);
                    check(libc::mount(
                        path.as_ptr().cast(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ))?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io)?;
        self.child = Some(child);
        self.started_at = now();
        self.last_start = Some(Instant::now());
        Ok(())
    }

    /// Notices an exited process; `true` if it just exited.
    pub fn check_exit(&mut self) -> bool {
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
            let _ = writeln!(log, "{LOG_MARKER}{} exited: {exit}", self.name);
        }
        self.last_exit = Some(json!({
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": self.started_at,
            "finishedAt": now(),
        }));
        true
    }

    pub fn status(&self, pod_started: bool) -> Value {
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

impl RunningContainer {
    /// Its environment with mount paths as the node sees them (where the
    /// test finds a socket or file the container names).
    pub fn env_on_host(&self) -> Vec<(String, String)> {
        let mut mounts = self.mounts.clone();
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        (self.env.iter())
            .map(|(k, v)| (k.clone(), remount(v, &mounts)))
            .collect()
    }
}

/// What runs for an image: (is Kengine, program, argv). Chosen by the
/// image's name (its last path segment, without tag or digest), as a
/// runtime would pull it; an image the node cannot run is an error.
pub fn program_for(
    image: &str,
    command: &[String],
    args: Option<&[String]>,
) -> Result<(bool, PathBuf, Vec<String>), String> {
    let name = image_name(image);
    let entry = command
        .first()
        .map(|c| c.rsplit('/').next().unwrap_or(c).to_string());
    let mut argv: Vec<String> = command.iter().skip(1).cloned().collect();
    argv.extend(args.iter().flat_map(|a| a.iter()).cloned());
    let entry_is = |names: &[&str]| entry.as_deref().is_none_or(|e| names.contains(&e));
    match name {
        "kengine" | "caddy" if entry_is(&["kengine", "caddy"]) => {
            if argv.is_empty() {
                argv.push("run".into());
            }
            Ok((true, crate::caddy_bin(), argv))
        }
        "kengine-gateway" if entry_is(&["kengine-gateway"]) => {
            Ok((false, crate::project_bin(), argv))
        }
        // The conformance suite's backends, built by scripts/ensure-conformance.sh.
        "echo-basic" | "coredns" if command.is_empty() => {
            let program = conformance_bin(name)?;
            Ok((false, program, argv))
        }
        "kengine" | "caddy" | "kengine-gateway" | "echo-basic" | "coredns" => Err(format!(
            "image {image:?} has no program {:?} (its entrypoint is {name})",
            entry.unwrap_or_default()
        )),
        _ => Err(format!(
            "image {image:?} {UNKNOWN_IMAGE}: it runs `kengine`/`caddy` images \
             (Caddy 2.8.4), `kengine-gateway` images (this project's binary), and \
             the conformance suite's `echo-basic` and `coredns` images"
        )),
    }
}

/// A binary of the conformance suite's backends: in
/// `$KENGINE_GATEWAY_CONFORMANCE_BIN`, else the repo's `.conformance-bin`.
fn conformance_bin(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os("KENGINE_GATEWAY_CONFORMANCE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo().join(".conformance-bin"));
    let bin = dir.join(name);
    match bin.is_file() {
        true => Ok(bin),
        false => Err(format!(
            "image {name} {UNKNOWN_IMAGE} yet: {} is missing (scripts/ensure-conformance.sh builds it)",
            bin.display()
        )),
    }
}

/// Says that an image has no program here (the pod fails with `ErrImagePull`).
pub const UNKNOWN_IMAGE: &str = "is not an image the node agent can run";

/// `registry.example/org/name:tag@sha256:...` → `name`.
fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

/// The Service variables of `default/kubernetes` that a kubelet sets in
/// every container: in-cluster clients find the API server by them.
fn service_env() -> Vec<(String, String)> {
    let ip = crate::control_plane::KUBERNETES_SERVICE_IP;
    [
        ("KUBERNETES_SERVICE_HOST", ip.to_string()),
        ("KUBERNETES_SERVICE_PORT", "443".into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443".into()),
        ("KUBERNETES_PORT", format!("tcp://{ip}:443")),
        ("KUBERNETES_PORT_443_TCP", format!("tcp://{ip}:443")),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp".into()),
        ("KUBERNETES_PORT_443_TCP_PORT", "443".into()),
        ("KUBERNETES_PORT_443_TCP_ADDR", ip.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// At most this many volume mounts per container.
const MAX_BINDS: usize = 64;

/// The bind mounts of a container's mount namespace, parents first, as
/// (source on the host, target) C strings. Missing targets are made on the
/// host (empty directories or files; they stay, as a node's mount points
/// would).
fn binds(
    mounts: &[(String, String)],
) -> Result<Vec<(std::ffi::CString, std::ffi::CString)>, String> {
    if mounts.len() > MAX_BINDS {
        return Err(format!(
            "more than {MAX_BINDS} volume mounts in one container"
        ));
    }
    let mut mounts = mounts.to_vec();
    mounts.sort_by_key(|(path, _)| path.len());
    let mut binds = Vec::new();
    for (target, host) in mounts {
        let err = |e: std::io::Error| format!("mount {host} at {target}: {e}");
        if !Path::new(&target).exists() {
            if Path::new(&host).is_dir() {
                std::fs::create_dir_all(&target).map_err(err)?;
            } else {
                if let Some(parent) = Path::new(&target).parent() {
                    std::fs::create_dir_all(parent).map_err(err)?;
                }
                std::fs::File::create(&target).map_err(err)?;
            }
        }
        let c = |s: String| std::ffi::CString::new(s).map_err(|e| format!("mount {target}: {e}"));
        binds.push((c(host.clone())?, c(target.clone())?));
    }
    Ok(binds)
}

/// Writes `/proc/self/fd/FD` and a NUL into `buf`, without allocating
/// (it runs between fork and exec).
fn fd_path(fd: libc::c_int, buf: &mut [u8; 32]) {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (fd.max(0) as u32, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
}

pub fn probe_target(p: &Probe, c: &Container, ip: Ipv4Addr) -> Result<ProbeTarget, String> {
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
pub fn expand(s: &str, env: &[(String, String)]) -> String {
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
pub fn remount(s: &str, mounts: &[(String, String)]) -> String {
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
