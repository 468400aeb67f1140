//! A fake kubelet for the end-to-end suite: "pods" are real Caddy 2.8.4
//! processes on loopback addresses, and their Pod objects (IP, readiness,
//! restart count) are kept in the Kubernetes API by hand.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

pub struct FakePod {
    pub name: String,
    pub namespace: String,
    pub admin: SocketAddr,
    pub log: PathBuf,
    process: Option<Child>,
    restarts: i32,
    api: Api<Pod>,
    dir: tempfile::TempDir,
}

impl FakePod {
    /// Starts Caddy with its admin API on `admin` and creates a Ready Pod for it.
    pub async fn start(
        client: kube::Client,
        namespace: &str,
        name: &str,
        admin: SocketAddr,
        labels: serde_json::Value,
    ) -> Self {
        let mut pod = Self::create(client, namespace, name, admin, labels).await;
        pod.run().await;
        pod
    }

    /// A Ready Pod whose admin API on `admin` the test serves itself (no
    /// Caddy runs).
    pub async fn register(
        client: kube::Client,
        namespace: &str,
        name: &str,
        admin: SocketAddr,
        labels: serde_json::Value,
    ) -> Self {
        let pod = Self::create(client, namespace, name, admin, labels).await;
        pod.set_status(true).await;
        pod
    }

    async fn create(
        client: kube::Client,
        namespace: &str,
        name: &str,
        admin: SocketAddr,
        labels: serde_json::Value,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            // Bound to the node the harness registers (`cluster::NODE_NAME`)
            // and no kubelet runs: this fake kubelet keeps its status.
            "spec": {"nodeName": super::cluster::NODE_NAME, "containers": [{"name": "kengine", "image": "caddy:2.8.4"}]}
        });
        api.create(
            &PostParams::default(),
            &serde_json::from_value(pod).unwrap(),
        )
        .await
        .expect("create pod");
        FakePod {
            name: name.into(),
            namespace: namespace.into(),
            admin,
            log: dir.path().join("kengine.log"),
            process: None,
            restarts: 0,
            api,
            dir,
        }
    }

    async fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(super::caddy_bin())
            .arg("run")
            .env("CADDY_ADMIN", self.admin.to_string())
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env("XDG_DATA_HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start caddy");
        self.process = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(self.admin).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.set_status(true).await;
    }

    async fn set_status(&self, ready: bool) {
        let status = if ready { "True" } else { "False" };
        let patch = json!({"status": {
            "phase": "Running",
            "podIP": self.admin.ip().to_string(),
            "podIPs": [{"ip": self.admin.ip().to_string()}],
            "conditions": [{"type": "Ready", "status": status}, {"type": "ContainersReady", "status": status}],
            "containerStatuses": [{"name": "kengine", "ready": ready, "restartCount": self.restarts, "image": "caddy:2.8.4", "imageID": ""}]
        }});
        self.api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("pod status");
    }

    /// The container dies: the process is killed and the pod turns not ready.
    pub async fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        self.set_status(false).await;
    }

    /// The kubelet restarts the container: a fresh Caddy with no config.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.restarts += 1;
        self.run().await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The container hangs: Kengine stops answering on its admin address
    /// (connections are accepted and never answered) while the pod stays
    /// Ready. Dropping the handle lets go of the address and the
    /// connections it holds.
    pub async fn hang(&mut self) -> Hang {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let listener = tokio::net::TcpListener::bind(self.admin).await.unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                held.push(socket);
            }
        });
        Hang { task, accepted }
    }
}

pub struct Hang {
    task: tokio::task::JoinHandle<()>,
    /// Connections accepted (and never answered) so far.
    pub accepted: Arc<AtomicUsize>,
}

impl Drop for Hang {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for FakePod {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}
