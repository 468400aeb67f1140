//! The Kubernetes API the end-to-end suites run against (the local API
//! emulator, or the cluster `KUBECONFIG` points at when
//! `KENGINE_GATEWAY_E2E_CLUSTER=1`), and the controller binary under test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::Value;

use super::apiserver_harness;

pub const BIN: &str = env!("CARGO_BIN_EXE_kengine-gateway");

pub struct Cluster {
    pub client: kube::Client,
    pub kubeconfig: PathBuf,
    _emulator: Option<apiserver_harness::KubeApiEmulator>,
}

pub async fn cluster() -> Cluster {
    if std::env::var("KENGINE_GATEWAY_E2E_CLUSTER").as_deref() == Ok("1") {
        let kubeconfig =
            PathBuf::from(std::env::var("KUBECONFIG").expect("KUBECONFIG for a real cluster"));
        let client = kube::Client::try_default().await.expect("cluster client");
        return Cluster {
            client,
            kubeconfig,
            _emulator: None,
        };
    }
    let emulator = apiserver_harness::KubeApiEmulator::with_all_crds();
    let client = emulator.client().await;
    Cluster {
        client,
        kubeconfig: emulator.kubeconfig.clone(),
        _emulator: Some(emulator),
    }
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
    pub fn start(kubeconfig: &Path, identity: &str, dir: &Path, extra: &[&str]) -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (metrics, health) = (free(), free());
        let log = dir.join(format!("controller-{identity}.log"));
        let child = Command::new(BIN)
            .args([
                "controller",
                "--identity",
                identity,
                "--lease-namespace",
                "default",
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
