//! A private network namespace per test: the "node" the control plane, the
//! controller, the test client and every process they start run in.
//!
//! Network namespaces belong to threads, and threads and processes inherit
//! the namespace of the thread that creates them. So a test enters a fresh
//! namespace on its own thread first, then builds its tokio runtime: every
//! runtime thread, every child process (etcd, kube-apiserver, Caddy, the
//! controller) and every socket of the test lives in that namespace. Tests
//! that run at the same time cannot collide on addresses or ports, and the
//! non-loopback addresses a test adds (Service and Pod IPs) never exist
//! outside it. The namespace is gone when its last thread and process end.
//!
//! Needs CAP_SYS_ADMIN (root), and `ip` from iproute2.

use std::future::Future;
use std::process::Command;

/// Moves the calling thread into a new network namespace with `lo` up.
/// Panics with the reason when that is not possible (not root).
pub fn enter() {
    // SAFETY: unshare takes no pointers; CLONE_NEWNET affects only the
    // calling thread, so other threads of the test binary are untouched.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc != 0 {
        panic!(
            "unshare(CLONE_NEWNET): {} (the end-to-end tests need root for network namespaces)",
            std::io::Error::last_os_error()
        );
    }
    ip(&["link", "set", "lo", "up"]);
}

/// Runs `ip ARGS` in the calling thread's namespace; panics with its stderr.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Makes `addr` (an IPv4 address, no prefix) a local address of the
/// namespace, on `lo`: something in the test can then listen on it, as a
/// Service's cluster IP or a Pod's IP would answer in a cluster.
pub fn add_local_address(addr: &str) {
    ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
}

/// Runs `test` on a multi-threaded runtime inside a fresh namespace: the
/// replacement for `#[tokio::test(flavor = "multi_thread")]` in tests that
/// need one.
pub fn run<F: Future>(worker_threads: usize, test: F) -> F::Output {
    enter();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(test)
}
