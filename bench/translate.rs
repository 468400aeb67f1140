//! Scenario 1: translate cost. Each size runs in a fresh child process of
//! this binary, so its peak RSS (VmHWM) is its own.

use std::process::Command;
use std::time::Instant;

use kengine_gateway::translate;
use serde_json::{Value, json};

use crate::objects;
use crate::util::{self, median, round3};

/// In the child: build the input, translate it `iterations` times, print one
/// JSON line.
pub fn one(routes: usize, iterations: usize, mixed: bool) -> anyhow::Result<()> {
    let rss_start_kb = util::rss_kb();
    let t = Instant::now();
    let snapshot = objects::shaped_snapshot(routes, mixed);
    let build_ms = util::ms(t.elapsed());
    let rss_input_kb = util::rss_kb();
    let peak_input_kb = util::peak_rss_kb();
    let options = util::options(&snapshot);
    let (mut translate_ms, mut serialize_ms) = (Vec::new(), Vec::new());
    let mut config_bytes = 0;
    let mut accepted = 0;
    for _ in 0..iterations.max(1) {
        let t = Instant::now();
        let output = translate::translate(&snapshot, &options);
        translate_ms.push(util::ms(t.elapsed()));
        let t = Instant::now();
        let bytes = output.config().to_json();
        serialize_ms.push(util::ms(t.elapsed()));
        config_bytes = bytes.len();
        let ok = |conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
            conds
                .iter()
                .any(|c| c.type_ == "Accepted" && c.status == "True")
        };
        let status = &output.status;
        accepted = (status.http_routes.values())
            .filter(|parents| parents.iter().any(|p| ok(&p.conditions)))
            .count()
            + (status.grpc_routes.values())
                .filter(|parents| parents.iter().any(|p| ok(&p.conditions)))
                .count();
    }
    let first_ms = translate_ms[0] + serialize_ms[0];
    let total: Vec<f64> = translate_ms
        .iter()
        .zip(&serialize_ms)
        .map(|(a, b)| a + b)
        .collect();
    let min_total = total.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{}",
        json!({
            "routes": routes,
            "namespaces": routes.div_ceil(objects::ROUTES_PER_NS),
            "accepted_routes": accepted,
            "iterations": iterations.max(1),
            "build_input_ms": round3(build_ms),
            "translate_ms_median": round3(median(&mut translate_ms.clone())),
            "serialize_ms_median": round3(median(&mut serialize_ms.clone())),
            "total_ms_median": round3(median(&mut total.clone())),
            "total_ms_min": round3(min_total),
            "total_ms_first": round3(first_ms),
            "config_bytes": config_bytes,
            "rss_start_kb": rss_start_kb,
            "rss_input_kb": rss_input_kb,
            "peak_rss_input_kb": peak_input_kb,
            "peak_rss_kb": util::peak_rss_kb(),
        })
    );
    Ok(())
}

/// In the parent: one child per size, then the table.
pub fn run(sizes: &[usize], iterations: Option<usize>, mixed: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut rows: Vec<Value> = Vec::new();
    println!(
        "translate{}: one fresh process per size; times are the median of the iterations",
        if mixed {
            " (every other route a GRPCRoute)"
        } else {
            ""
        }
    );
    println!(
        "{:>7} {:>4} {:>5} {:>12} {:>12} {:>10} {:>9} {:>10} {:>11} {:>9}",
        "routes",
        "ns",
        "iters",
        "translate_ms",
        "serialize_ms",
        "total_ms",
        "us/route",
        "config_KB",
        "peak_RSS_MB",
        "input_MB"
    );
    for &n in sizes {
        let iters = iterations.unwrap_or(match n {
            0..=5_000 => 15,
            5_001..=10_000 => 7,
            _ => 3,
        });
        let out = Command::new(&exe)
            .args(["translate-one", "--routes", &n.to_string()])
            .args(["--iterations", &iters.to_string()])
            .args(mixed.then_some("--mixed"))
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "translate-one {n} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8(out.stdout)?;
        let row: Value = serde_json::from_str(text.lines().last().unwrap_or_default())?;
        let f = |k: &str| row[k].as_f64().unwrap_or(0.0);
        println!(
            "{:>7} {:>4} {:>5} {:>12.2} {:>12.2} {:>10.2} {:>9.2} {:>10.0} {:>11.1} {:>9.1}",
            n,
            row["namespaces"].as_u64().unwrap_or(0),
            iters,
            f("translate_ms_median"),
            f("serialize_ms_median"),
            f("total_ms_median"),
            f("total_ms_median") * 1000.0 / n as f64,
            f("config_bytes") / 1024.0,
            f("peak_rss_kb") / 1024.0,
            f("rss_input_kb") / 1024.0,
        );
        if row["accepted_routes"].as_u64() != Some(n as u64) {
            println!(
                "  warning: only {} of {n} routes Accepted",
                row["accepted_routes"]
            );
        }
        rows.push(row);
    }
    // Growth relative to the smallest size: near-linear means time ratio ≈ size ratio.
    if let Some(base) = rows.first() {
        let base_n = base["routes"].as_f64().unwrap_or(1.0);
        let base_t = base["total_ms_median"].as_f64().unwrap_or(1.0);
        println!("growth vs {base_n} routes (linear: time ratio = size ratio):");
        for r in &rows {
            let n = r["routes"].as_f64().unwrap_or(0.0);
            let t = r["total_ms_median"].as_f64().unwrap_or(0.0);
            println!(
                "  {:>7} routes: size x{:<6.0} time x{:<8.1} per-route cost x{:.2}",
                n,
                n / base_n,
                t / base_t,
                (t / n) / (base_t / base_n)
            );
        }
    }
    if let Some(r) = rows.iter().find(|r| r["routes"] == 5000) {
        let t = r["total_ms_median"].as_f64().unwrap_or(f64::MAX);
        let m = r["peak_rss_kb"].as_f64().unwrap_or(f64::MAX) / 1024.0;
        println!(
            "target at 5,000 routes: time {t:.1} ms (< 50 ms: {}), peak RSS {m:.1} MB (< 100 MB: {})",
            if t < 50.0 { "met" } else { "NOT met" },
            if m < 100.0 { "met" } else { "NOT met" },
        );
    }
    println!("{}", json!({"scenario": "translate", "sizes": rows}));
    Ok(())
}
