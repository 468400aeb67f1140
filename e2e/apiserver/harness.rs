//! Starts the Kubernetes API emulator (`kube-api-emulator`) for an
//! integration test and builds kube clients for it. Include it with
//!
//! ```ignore
//! #[path = "../e2e/apiserver/harness.rs"]
//! mod apiserver_harness;
//! ```
//!
//! Integration tests run the `kube-api-emulator` Cargo built for them; other
//! targets (the bench binary) the one beside their own executable. The
//! process is killed when the handle is dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Gateway API v1.6.1 experimental-channel CRDs (copied into e2e/gateway-api).
pub fn gateway_api_crds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/gateway-api/v1.6.1/config/crd/experimental")
}

/// Gateway API v1.1.0 experimental-channel CRDs.
pub fn gateway_api_v1_1_crds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/gateway-api/v1.1.0/config/crd/experimental")
}

fn emulator_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_kube-api-emulator") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("kube-api-emulator")))
            .unwrap_or_else(|| PathBuf::from("kube-api-emulator")),
    }
}

/// How to start the emulator.
#[derive(Debug, Clone, Default)]
pub struct EmulatorOptions {
    /// CRD files or directories (`--crds`).
    pub crds: Vec<PathBuf>,
    /// Watch events kept before older resourceVersions expire (`--watch-history`).
    pub watch_history: Option<usize>,
    /// Seconds between BOOKMARK events on idle watches (`--bookmark-interval`).
    pub bookmark_interval: Option<u64>,
}

/// A running Kubernetes API emulator.
pub struct KubeApiEmulator {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// A kubeconfig pointing at it (no credentials, namespace `default`).
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl KubeApiEmulator {
    /// Starts it with the Gateway API v1.6.1 experimental CRDs and ours
    /// (`crds/`): what the controller needs.
    pub fn with_all_crds() -> Self {
        Self::start_with(EmulatorOptions {
            crds: vec![
                gateway_api_crds(),
                Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"),
            ],
            ..Default::default()
        })
    }

    /// Starts it with the Gateway API v1.6.1 experimental CRDs.
    pub fn start() -> Self {
        Self::start_with(EmulatorOptions {
            crds: vec![gateway_api_crds()],
            ..Default::default()
        })
    }

    pub fn start_with(options: EmulatorOptions) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let kubeconfig = dir.path().join("kubeconfig");
        let mut cmd = Command::new(emulator_bin());
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--kubeconfig-out")
            .arg(&kubeconfig);
        for crd in &options.crds {
            cmd.arg("--crds").arg(crd);
        }
        if let Some(n) = options.watch_history {
            cmd.arg("--watch-history").arg(n.to_string());
        }
        if let Some(n) = options.bookmark_interval {
            cmd.arg("--bookmark-interval").arg(n.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kube-api-emulator");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout
            .read_line(&mut first)
            .expect("read kube-api-emulator stdout");
        let Some(url) = first.trim().strip_prefix("listening on ").map(String::from) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kube-api-emulator did not start (first line: {first:?})");
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = stdout.read_to_end(&mut sink);
        });
        Self {
            child,
            url,
            kubeconfig,
            _dir: dir,
        }
    }

    /// A kube `Config` read from the kubeconfig the emulator wrote.
    pub async fn config(&self) -> kube::Config {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kubeconfig")
    }

    /// A kube client for the emulator.
    pub async fn client(&self) -> kube::Client {
        // Test builds enable two rustls providers (a dev-dependency brings
        // aws-lc-rs), so the process-wide default must be chosen explicitly.
        kengine_gateway::kengine::admin::install_crypto_provider();
        kube::Client::try_from(self.config().await).expect("kube client")
    }
}

impl Drop for KubeApiEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
