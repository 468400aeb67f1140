//! Shared pieces of the scenarios that run a real Caddy: the process, echo
//! backends and a probe.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kengine_gateway::echo::{self, Identity};
use kengine_gateway::kengine::Flavor;
use kengine_gateway::kengine::process::KengineProcess;

use crate::load::{self, Target};
use crate::util;

/// A Caddy 2.8.4 (the code Kengine forked) with its admin API on a private
/// unix socket and its log in a temp dir removed with it.
pub struct Kengine {
    pub process: KengineProcess,
    pub dir: tempfile::TempDir,
}

impl Kengine {
    pub async fn start() -> anyhow::Result<Self> {
        let bin = util::caddy_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("kengine-gateway-bench-")
            .tempdir()?;
        let log = dir.path().join("kengine.log");
        let process = KengineProcess::start(&bin, Flavor::Caddy, Some(&log)).await?;
        Ok(Kengine { process, dir })
    }

    /// Loads a hand-built JSON config, keeping the admin API where it is
    /// (what `Pusher` does for a translated one). A rejection carries the
    /// log's last lines.
    pub async fn load_json(&self, mut config: serde_json::Value) -> anyhow::Result<()> {
        config["admin"] = serde_json::json!({
            "listen": self.process.admin_addr().to_string(),
            "config": {"persist": false},
        });
        let body = serde_json::to_vec(&config)?;
        if let Err(e) = self.process.admin().load(body).await {
            anyhow::bail!("{e}\n{}", self.log_tail(20));
        }
        Ok(())
    }

    /// The last lines of the Caddy log, for error reports.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("kengine.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub async fn stop(self) {
        let _ = self.process.stop().await;
    }
}

/// An echo backend on 127.0.0.1 answering as `name`, in a child process of
/// this binary (`echo-child`): echo logs a line per request on stdout,
/// which goes to /dev/null there, and the backend's CPU is not the load
/// generator's. Killed when the returned handle is dropped.
pub struct Echo {
    pub addr: SocketAddr,
    _child: tokio::process::Child,
}

pub async fn echo(name: &str) -> anyhow::Result<Echo> {
    echo_on(std::net::Ipv4Addr::LOCALHOST, name).await
}

/// [`echo`], listening on `ip` (its `addr` is still the loopback one).
pub async fn echo_on(ip: std::net::Ipv4Addr, name: &str) -> anyhow::Result<Echo> {
    let port = util::free_port()?;
    let listen = SocketAddr::from((ip, port));
    let addr = util::loopback(port);
    let child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "echo-child",
            "--listen",
            &listen.to_string(),
            "--name",
            name,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(10),
            "echo backend on {addr} did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Echo {
        addr,
        _child: child,
    })
}

/// In the child: serve echo on `listen` until killed.
pub fn echo_child(listen: SocketAddr, name: String) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let identity = Identity {
            name,
            namespace: "bench".into(),
        };
        echo::serve(listener, identity, std::future::pending()).await
    })
}

/// What a probe saw until the target answered 200.
#[derive(Debug, Default, Clone)]
pub struct Probe {
    pub ok: bool,
    pub not_found: u64,
    /// Answers other than 200 and 404.
    pub other: u64,
    pub transport_errors: u64,
    /// Of those, errors on the first request of a fresh connection.
    pub fresh_conn_errors: u64,
}

/// GETs `target` on a fresh connection until it answers 200 or `limit`
/// passes; 404s are retried after a millisecond.
pub async fn until_200(target: &Target, limit: Duration) -> Probe {
    let start = Instant::now();
    let mut p = Probe::default();
    let mut sender = None;
    let mut on_conn = 0;
    while start.elapsed() < limit {
        if sender.is_none() {
            match load::connect(target.addr).await {
                Ok(s) => {
                    sender = Some(s);
                    on_conn = 0;
                }
                Err(_) => {
                    p.transport_errors += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            }
        }
        let answer = load::get(sender.as_mut().expect("connected"), target).await;
        on_conn += 1;
        match answer {
            Ok((200, _)) => {
                p.ok = true;
                return p;
            }
            Ok((404, _)) => {
                p.not_found += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(_) => {
                p.other += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(_) => {
                p.transport_errors += 1;
                if on_conn == 1 {
                    p.fresh_conn_errors += 1;
                }
                sender = None;
            }
        }
    }
    p
}
