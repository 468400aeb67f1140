//! Real helm against the test's cluster: the chart journey and the official
//! conformance suite install `charts/kengine-gateway` with it, as users do.

use std::path::{Path, PathBuf};
use std::process::Command;

/// helm: `$HELM`, else `.tools/helm/helm` (which scripts/ensure-helm.sh
/// installs), else `helm` on the PATH.
pub fn bin() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HELM") {
        return Some(h.into());
    }
    let local = crate::repo().join(".tools/helm/helm");
    if local.is_file() {
        return Some(local);
    }
    let on_path = Command::new("helm").arg("version").output();
    on_path
        .is_ok_and(|o| o.status.success())
        .then(|| "helm".into())
}

/// Runs `helm ARGS` in the repo against `kubeconfig`, with its caches in
/// `home`; panics with helm's output when it fails. Returns that output.
pub fn run(kubeconfig: &Path, home: &Path, args: &[&str]) -> String {
    let bin = bin().expect("no helm: run scripts/ensure-helm.sh or set HELM");
    let out = Command::new(&bin)
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .current_dir(crate::repo())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("running helm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm {}: {text}", args.join(" "));
    text
}

/// `helm install` of the chart with its default values into
/// `kengine-system`, waiting until its Deployment is ready.
pub fn install_chart(kubeconfig: &Path, home: &Path) -> String {
    run(
        kubeconfig,
        home,
        &[
            "install",
            super::cluster::CHART_RELEASE,
            "charts/kengine-gateway",
            "--namespace",
            super::cluster::CHART_NAMESPACE,
            "--create-namespace",
            "--wait",
            "--timeout",
            "180s",
        ],
    )
}
