//! The real kube-proxy (iptables mode) in the node's network namespace: it
//! watches Services and EndpointSlices and writes the NAT rules that send a
//! cluster IP's connections to ready pod IPs.
//!
//! Flags for a network namespace: `--conntrack-max-per-core=0` and zero TCP
//! timeouts leave the conntrack sysctls alone (`nf_conntrack_max` is not
//! writable outside the initial namespace); health and metrics listen on
//! loopback ports of this namespace; `--hostname-override` names our Node,
//! whose InternalIP kube-proxy takes as the node IP.

use std::path::Path;
use std::process::Stdio;

use super::network::POD_CIDR;

pub fn spawn(
    bin_dir: &Path,
    kubeconfig: &Path,
    node: &str,
    log: &Path,
) -> Result<tokio::process::Child, String> {
    let bin = bin_dir.join("kube-proxy");
    if !bin.is_file() {
        return Err(format!(
            "{} has no kube-proxy: run scripts/ensure-kube.sh",
            bin_dir.display()
        ));
    }
    // Without these kube-proxy starts, logs and programs nothing.
    for tool in ["iptables", "iptables-restore"] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|d| d.join(tool).is_file());
        if !found {
            return Err(format!(
                "no {tool}: kube-proxy needs Debian's iptables package"
            ));
        }
    }
    let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0)
    };
    tokio::process::Command::new(&bin)
        .args([
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--hostname-override={node}"),
            "--proxy-mode=iptables".into(),
            format!("--cluster-cidr={POD_CIDR}"),
            "--conntrack-max-per-core=0".into(),
            "--conntrack-tcp-timeout-established=0".into(),
            "--conntrack-tcp-timeout-close-wait=0".into(),
            // No NodePorts on 127.0.0.1: that needs route_localnet.
            "--iptables-localhost-nodeports=false".into(),
            format!("--healthz-bind-address=127.0.0.1:{}", port()),
            format!("--metrics-bind-address=127.0.0.1:{}", port()),
            "--v=2".into(),
        ])
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|e| e.to_string())?)
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))
}
