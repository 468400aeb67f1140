//! The node's network and one network namespace per pod, joined by a routed
//! veth pair (no bridge, so kube-proxy's NAT needs no `br_netfilter`):
//!
//! - node: [`NODE_IP`] on `lo`, a route for the Service range through `lo`
//!   (so a connect to a cluster IP finds a source address and reaches the
//!   NAT rules of kube-proxy), IPv4 forwarding on;
//! - pod: `eth0` holds the pod IP (/32), with a link route to [`NODE_IP`]
//!   and the default route through it; the node end (`kpN`) holds no
//!   address, only a /32 route to the pod IP. ARP works because the node
//!   answers for its own address on any interface.
//!
//! A pod's namespace is held by a file descriptor only (no holder process):
//! a short-lived thread unshares its network namespace and opens it. The
//! namespace ends when the descriptor is closed and its processes are gone;
//! [`PodNetwork::remove`] deletes the veth pair right away.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::Arc;

/// The node's address: its InternalIP, every pod's gateway, the source of
/// the node's connections to pods and Services.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
/// Pod IPs are handed out from this range, .2 upwards, never reused.
pub const POD_CIDR: &str = "10.244.0.0/24";
const POD_BASE: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 0);
const POD_MAX: u32 = 254;

/// Runs `ip ARGS`, in `netns` when given (else the caller's namespace).
pub fn ip(netns: Option<&OwnedFd>, args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    if let Some(ns) = netns {
        let fd = ns.as_raw_fd();
        // SAFETY: only setns(2), async-signal-safe, runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let out = cmd
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Prepares the calling thread's namespace (the test's) as the node.
pub fn setup_node(service_cidr: &str) -> Result<(), String> {
    ip(
        None,
        &["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"],
    )?;
    ip(
        None,
        &[
            "route",
            "add",
            service_cidr,
            "dev",
            "lo",
            "src",
            &NODE_IP.to_string(),
        ],
    )?;
    // /proc/sys/net is the namespace of the thread that opens it.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| format!("enabling IPv4 forwarding: {e}"))
}

/// Hands out pod IPs and veth names.
#[derive(Default)]
pub struct Allocator {
    next: u32,
}

impl Allocator {
    pub fn next(&mut self) -> Result<(Ipv4Addr, String), String> {
        self.next += 1;
        if self.next + 1 > POD_MAX {
            return Err(format!("the pod range {POD_CIDR} is exhausted"));
        }
        let ip = Ipv4Addr::from(u32::from(POD_BASE) + self.next + 1);
        Ok((ip, format!("kp{}", self.next)))
    }
}

/// A pod's network namespace and its veth pair.
pub struct PodNetwork {
    pub ip: Ipv4Addr,
    /// The node end of the veth pair.
    pub veth: String,
    pub netns: Arc<OwnedFd>,
}

impl PodNetwork {
    pub fn create(pod_ip: Ipv4Addr, veth: String) -> Result<PodNetwork, String> {
        // A fresh thread: unshare(CLONE_NEWNET) moves only it, and it ends
        // right after, so no other thread ever runs in the pod's namespace.
        let netns = std::thread::spawn(|| -> Result<OwnedFd, String> {
            // SAFETY: no pointers; affects only this thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(format!(
                    "unshare(CLONE_NEWNET): {}",
                    std::io::Error::last_os_error()
                ));
            }
            let file = std::fs::File::open("/proc/thread-self/ns/net")
                .map_err(|e| format!("opening the pod's network namespace: {e}"))?;
            Ok(OwnedFd::from(file))
        })
        .join()
        .map_err(|_| "the namespace thread panicked".to_string())??;
        let pod_ns = format!("/proc/{}/fd/{}", std::process::id(), netns.as_raw_fd());
        let net = PodNetwork {
            ip: pod_ip,
            veth,
            netns: Arc::new(netns),
        };
        let (node, pod) = (NODE_IP.to_string(), format!("{pod_ip}/32"));
        let ns = Some(&*net.netns);
        ip(
            None,
            &[
                "link", "add", &net.veth, "type", "veth", "peer", "name", "eth0", "netns", &pod_ns,
            ],
        )?;
        ip(None, &["link", "set", &net.veth, "up"])?;
        ip(
            None,
            &["route", "add", &pod, "dev", &net.veth, "src", &node],
        )?;
        ip(ns, &["link", "set", "lo", "up"])?;
        ip(ns, &["addr", "add", &pod, "dev", "eth0"])?;
        ip(ns, &["link", "set", "eth0", "up"])?;
        ip(ns, &["route", "add", &node, "dev", "eth0", "scope", "link"])?;
        ip(
            ns,
            &["route", "add", "default", "via", &node, "dev", "eth0"],
        )?;
        Ok(net)
    }

    /// `net:[INODE]`, as `/proc/PID/ns/net` links read.
    pub fn name(&self) -> String {
        std::fs::read_link(format!("/proc/self/fd/{}", self.netns.as_raw_fd()))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// Deletes the veth pair (both ends) now rather than when the namespace
    /// is torn down.
    pub fn remove(&self) {
        let _ = ip(None, &["link", "del", &self.veth]);
    }
}
