//! `standalone`: serve YAML files through one local Kengine, pushing again
//! whenever the files change.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::time::Instant;

use crate::cli::StandaloneArgs;
use crate::kengine::config::Config;
use crate::kengine::files::Files;
use crate::kengine::process::KengineProcess;
use crate::kengine::{AdminAddr, AdminClient, Flavor};
use crate::providers::{addresses, files};
use crate::render;
use crate::sinks::pusher::{Pushed, Pusher};
use crate::sinks::status;
use crate::snapshot::Snapshot;
use crate::translate::{self, Status};

pub async fn run(args: StandaloneArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let mut flavor = args.translate.flavor;
    let (mut process, client) = match (&args.kengine, &args.admin) {
        (Some(bin), _) => {
            if flavor == Flavor::Kengine && Flavor::from_binary_name(bin) == Flavor::Caddy {
                flavor = Flavor::Caddy;
            }
            // A signal while Kengine starts: dropping the start kills the child.
            let process = tokio::select! {
                () = &mut shutdown => {
                    tracing::info!("shutting down during startup");
                    return Ok(());
                }
                p = KengineProcess::start(bin, flavor, None) => p?,
            };
            tracing::info!(bin = %bin.display(), admin = %process.admin_addr(), "started kengine");
            let client = process.admin().clone();
            (Some(Supervised::new(process)), client)
        }
        (None, Some(addr)) => {
            let addr: AdminAddr = addr.parse().map_err(anyhow::Error::msg)?;
            (None, AdminClient::new(addr, Duration::from_secs(60))?)
        }
        (None, None) => unreachable!("clap requires --kengine or --admin"),
    };
    let ignore: Vec<_> = args.status_file.iter().cloned().collect();
    let (_watcher, mut changes) =
        files::watch(&args.translate.files, &ignore).context("watching input files")?;
    let mut pusher = Pusher::new(client);
    let mut state = State::default();
    let quiet = Quiet {
        period: Duration::from_millis(args.debounce_ms),
        max_delay: Duration::from_millis(args.debounce_ms.max(args.max_delay_ms)),
    };
    let mut burst: Option<Burst> = None;
    let mut first = true;

    loop {
        let due = burst.map(|b| quiet.due(b));
        tokio::select! {
            () = &mut shutdown => break,
            // The first sync, and each burst of changes once it has quieted.
            () = sleep_until_opt(due), if first || due.is_some() => {
                first = false;
                burst = None;
                let changed = changes.take();
                tokio::select! {
                    () = &mut shutdown => break,
                    () = state.sync(&args, &mut pusher, changed) => {}
                }
            }
            Some(()) = changes.recv() => {
                let now = Instant::now();
                burst = Some(match burst {
                    Some(b) => Burst { last: now, ..b },
                    None => Burst { first: now, last: now },
                });
            }
            status = exited(&mut process) => {
                let bin = args.kengine.as_deref().expect("only a started kengine exits");
                let Some(mut supervised) = process.take() else { continue };
                let delay = supervised.backoff();
                tracing::error!(
                    "kengine exited unexpectedly ({}); restarting it in {delay:?}",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                );
                let restarted = tokio::select! {
                    () = &mut shutdown => break,
                    p = supervised.restart(bin, flavor, delay) => p,
                };
                tracing::info!(admin = %restarted.process.admin_addr(), "restarted kengine");
                pusher = Pusher::new(restarted.process.admin().clone());
                process = Some(restarted);
                tokio::select! {
                    () = &mut shutdown => break,
                    () = state.push_last_good(&mut pusher) => {}
                }
            }
        }
    }
    tracing::info!("shutting down");
    if let Some(supervised) = process {
        supervised.process.stop().await?;
    }
    Ok(())
}

/// When a burst of file changes is pushed: once no change came for
/// `period`, and at the latest `max_delay` after its first change.
#[derive(Clone, Copy)]
struct Quiet {
    period: Duration,
    max_delay: Duration,
}

#[derive(Clone, Copy, Debug)]
struct Burst {
    first: Instant,
    last: Instant,
}

impl Quiet {
    fn due(&self, burst: Burst) -> Instant {
        (burst.last + self.period).min(burst.first + self.max_delay)
    }
}

async fn sleep_until_opt(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

async fn exited(process: &mut Option<Supervised>) -> std::io::Result<std::process::ExitStatus> {
    match process {
        Some(s) => s.process.exited().await,
        None => std::future::pending().await,
    }
}

/// The Kengine we started, restarted with backoff when it dies.
struct Supervised {
    process: KengineProcess,
    started: Instant,
    delay: Duration,
}

const FIRST_RESTART_DELAY: Duration = Duration::from_millis(500);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

impl Supervised {
    fn new(process: KengineProcess) -> Self {
        Supervised {
            process,
            started: Instant::now(),
            delay: Duration::ZERO,
        }
    }

    /// How long to wait before the next start: doubles while Kengine keeps
    /// dying young, starts over once it has run for a while.
    fn backoff(&mut self) -> Duration {
        self.delay = if self.started.elapsed() > MAX_RESTART_DELAY || self.delay.is_zero() {
            FIRST_RESTART_DELAY
        } else {
            (self.delay * 2).min(MAX_RESTART_DELAY)
        };
        self.delay
    }

    /// Starts a new Kengine after `delay`, and again with backoff until one
    /// answers.
    async fn restart(mut self, bin: &Path, flavor: Flavor, mut delay: Duration) -> Supervised {
        loop {
            tokio::time::sleep(delay).await;
            match KengineProcess::start(bin, flavor, None).await {
                Ok(process) => {
                    self.process = process;
                    self.started = Instant::now();
                    return self;
                }
                Err(e) => {
                    delay = (delay * 2).min(MAX_RESTART_DELAY);
                    tracing::error!("restarting kengine failed, next try in {delay:?}: {e:#}");
                }
            }
        }
    }
}

/// Retries of one sync for taken addresses: a bound on pushes.
const MAX_TAKEN_LISTENS: usize = 32;

#[derive(Default)]
struct State {
    status: Option<Status>,
    /// The status file as last written, to annotate when a reload is refused.
    status_text: Option<String>,
    /// The last config Kengine accepted: pushed again to a restarted one.
    last_good: Option<Config>,
    /// Changed files found empty: probably being rewritten in place.
    empty: BTreeSet<PathBuf>,
}

impl State {
    /// Reload the files and push. A bad or emptied file, or a rejected
    /// config, is logged and the last good config keeps serving.
    async fn sync(
        &mut self,
        args: &StandaloneArgs,
        pusher: &mut Pusher,
        changed: BTreeSet<PathBuf>,
    ) {
        self.empty.extend(changed);
        self.empty.retain(|p| is_empty_file(p));
        if let Some(path) = self.empty.first() {
            let why = format!(
                "{} is empty (being rewritten?); waiting until it has content or is removed",
                path.display()
            );
            self.refuse(args, &why);
            return;
        }
        let snapshot = match render::load(&args.translate.files) {
            Ok(s) => s,
            Err(e) => {
                self.refuse(args, &e.to_string());
                return;
            }
        };
        let mut snapshot = snapshot;
        carry_status(&mut snapshot, self.status.as_ref());
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut options = render::options(&args.translate, now.clone(), &snapshot);
        // Kengine binds one address at a time and stops at the first taken
        // one: each refusal names one more listener to leave out. Every sync
        // starts afresh, since the other process may have let go.
        let output = loop {
            let mut output = translate::translate(&snapshot, &options);
            // Kengine reads the files the config names while loading it.
            let local = output.fleets.get(&translate::fleets::local());
            if let Some(files) = local.map(|f| &f.files).filter(|f| !f.is_empty())
                && let Err(why) = write_files(&args.translate.files_dir, files)
            {
                tracing::error!("config not loaded, the last good one keeps serving: {why}");
                crate::translate::programmed::mark_not_programmed(&mut output.status, &why, &now);
                break output;
            }
            match pusher.push(output.config()).await {
                Ok(Pushed::Loaded) => {
                    tracing::info!(bytes = output.config().to_json().len(), "config loaded");
                    self.last_good = Some(output.config().clone());
                }
                Ok(Pushed::Unchanged) => tracing::info!("config unchanged; nothing pushed"),
                Err(e) => {
                    let message = e.to_string();
                    if let Some(addr) = addresses::in_use(&message)
                        && options.taken_listens.len() < MAX_TAKEN_LISTENS
                        && options.taken_listens.insert(addr)
                    {
                        tracing::warn!(%addr, "address in use by another process; leaving its listeners out");
                        continue;
                    }
                    tracing::error!("config not loaded, the last good one keeps serving: {e}");
                    crate::translate::programmed::mark_not_programmed(
                        &mut output.status,
                        &message,
                        &now,
                    );
                }
            }
            break output;
        };
        log_status(&output.status);
        if let Some(path) = &args.status_file {
            let text = status::yaml_stream(&status::objects(
                &snapshot,
                &output.status,
                &options.controller_name,
            ));
            write_status_file(path, &text);
            self.status_text = Some(text);
        }
        self.status = Some(output.status);
    }

    /// Logs why the files are not reloaded, and says so at the top of the
    /// status file, above the status of the config that keeps serving.
    fn refuse(&self, args: &StandaloneArgs, why: &str) {
        tracing::error!("not reloading, the last good config keeps serving: {why}");
        if let Some(path) = &args.status_file {
            let note = format!(
                "# not reloaded, the last good config keeps serving: {}\n",
                why.replace('\n', " ")
            );
            write_status_file(path, &(note + self.status_text.as_deref().unwrap_or("")));
        }
    }

    async fn push_last_good(&mut self, pusher: &mut Pusher) {
        let Some(config) = &self.last_good else {
            return;
        };
        match pusher.push(config).await {
            Ok(_) => tracing::info!("last good config loaded into the restarted kengine"),
            Err(e) => tracing::error!("pushing the last good config to the restarted kengine: {e}"),
        }
    }
}

/// Writes the files the config names into `dir`, which only we may read:
/// made with mode 0700 when missing, refused when others can get in.
fn write_files(dir: &Path, files: &Files) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let fail = |why: String| format!("files directory {}: {why}", dir.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail(e.to_string()))?;
    let mode = std::fs::metadata(dir)
        .map_err(|e| fail(e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(fail(format!(
            "mode {:o} lets other users in; private keys are written there (make it 0700)",
            mode & 0o777
        )));
    }
    crate::kengine::files::replace(dir, files)
        .map(drop)
        .map_err(fail)
}

/// A file that exists and holds nothing but whitespace.
fn is_empty_file(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.iter().all(u8::is_ascii_whitespace))
}

/// Writes only when the text changed: every write is a file event.
fn write_status_file(path: &Path, text: &str) {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return;
    }
    if let Err(e) = std::fs::write(path, text) {
        tracing::error!(path = %path.display(), "writing status file: {e}");
    }
}

/// Files carry no status, so the status we computed last time stands in for
/// what a cluster would hold: it keeps `lastTransitionTime`s stable.
fn carry_status(snapshot: &mut Snapshot, status: Option<&Status>) {
    let Some(status) = status else { return };
    for (name, class) in &mut snapshot.gateway_classes {
        if class.status.is_none() {
            class.status = status.gateway_classes.get(name).cloned();
        }
    }
    for (key, gateway) in &mut snapshot.gateways {
        if gateway.status.is_none() {
            gateway.status = status.gateways.get(key).cloned();
        }
    }
    for (key, route) in &mut snapshot.http_routes {
        if route.status.is_none() {
            route.status = status.http_routes.get(key).map(|parents| {
                gateway_api::apis::experimental::httproutes::HttpRouteStatus {
                    parents: parents.clone(),
                }
            });
        }
    }
    for (key, route) in &mut snapshot.grpc_routes {
        if route.status.is_none() {
            route.status = status.grpc_routes.get(key).map(|parents| {
                gateway_api::apis::experimental::grpcroutes::GrpcRouteStatus {
                    parents: parents.clone(),
                }
            });
        }
    }
    for (key, policy) in &mut snapshot.backend_tls_policies {
        if policy.status.is_none() {
            policy.status = status.backend_tls_policies.get(key).map(|ancestors| {
                gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicyStatus {
                    ancestors: ancestors.clone(),
                }
            });
        }
    }
}

fn log_status(status: &Status) {
    let summary =
        |conds: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>| {
            conds
                .into_iter()
                .flatten()
                .map(|c| {
                    if c.status == "True" {
                        c.type_.to_string()
                    } else {
                        format!("{}=False({}: {})", c.type_, c.reason, c.message)
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
    for (name, s) in &status.gateway_classes {
        tracing::info!("GatewayClass {name}: {}", summary(s.conditions.as_ref()));
    }
    for (key, s) in &status.gateways {
        let listeners: Vec<String> = s
            .listeners
            .iter()
            .flatten()
            .map(|l| {
                format!(
                    "{}[routes={} {}]",
                    l.name,
                    l.attached_routes,
                    summary(Some(&l.conditions))
                )
            })
            .collect();
        tracing::info!(
            "Gateway {key}: {} listeners: {}",
            summary(s.conditions.as_ref()),
            listeners.join(", ")
        );
    }
    for (key, parents) in &status.http_routes {
        for p in parents {
            tracing::info!(
                "HTTPRoute {key} on {}: {}",
                p.parent_ref.name,
                summary(Some(&p.conditions))
            );
        }
    }
    // Kinds we do not serve: a warning, since nothing of them is served.
    for (key, parents) in &status.grpc_routes {
        for p in parents {
            tracing::warn!(
                "GRPCRoute {key} on {}: {}",
                p.parent_ref.name,
                summary(Some(&p.conditions))
            );
        }
    }
    for (key, ancestors) in &status.backend_tls_policies {
        for a in ancestors {
            tracing::warn!(
                "BackendTLSPolicy {key} on {}: {}",
                a.ancestor_ref.name,
                summary(Some(&a.conditions))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files directory is made private, and one others can enter is
    /// refused (private keys go there).
    #[test]
    fn files_go_into_a_directory_only_we_can_enter() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        let files = Files::from([("client-1.key".to_string(), "KEY".to_string())]);
        let dir = root.path().join("new/files");
        write_files(&dir, &files).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("client-1.key")).unwrap(),
            "KEY"
        );
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = write_files(&open, &files).unwrap_err();
        assert!(err.contains("lets other users in"), "{err}");
        assert!(!open.join("client-1.key").exists());
    }

    /// The status of GRPCRoutes and BackendTLSPolicies keeps its
    /// transition times across syncs, like the others.
    #[test]
    fn carried_status_keeps_transition_times_of_every_kind() {
        let at = |secs| Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap());
        let options = |now| translate::Options {
            now,
            ..Default::default()
        };
        let twice = |case: &str| {
            let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("crates/translate/testdata/{case}/input.yaml"));
            let first = translate::translate(
                &render::load(std::slice::from_ref(&input)).unwrap(),
                &options(at(10)),
            );
            let mut snapshot = render::load(&[input]).unwrap();
            carry_status(&mut snapshot, Some(&first.status));
            translate::translate(&snapshot, &options(at(20)))
        };
        let second = twice("grpc_routes/grpc-methods");
        let key = crate::snapshot::ObjectRef::new("apps", "methods");
        let grpc = &second.status.grpc_routes[&key][0].conditions[0];
        assert_eq!(grpc.last_transition_time, at(10));
        let second = twice("fail_closed/unapplicable-security");
        let key = crate::snapshot::ObjectRef::new("web", "tls-app");
        let policy = &second.status.backend_tls_policies[&key][0].conditions[0];
        assert_eq!(policy.last_transition_time, at(10));
    }
}
