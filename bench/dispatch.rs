//! Scenario 5: data-plane dispatch. One Caddy runs the translated config of
//! `hosts` routes (one hostname each); a second Caddy runs a hand-written
//! one-route config. The same load hits the first route, the last route and
//! the one-route config, interleaved round by round, so a drift of the
//! machine hits all three alike. Comparing with the one-route config catches
//! a uniform slowdown that a first/last ratio alone would hide. The same
//! one route also runs beside the tree, in its process, which splits that
//! slowdown into what any big config costs and what the dispatch costs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use kengine_gateway::snapshot::Snapshot;
use kengine_gateway::translate;
use serde_json::json;

use crate::live::{self, Kengine};
use crate::load::{self, LoadResult, Target};
use crate::objects;
use crate::util::{self, median, round3};

pub struct Args {
    pub hosts: usize,
    pub seconds: f64,
    pub connections: usize,
    pub rounds: usize,
    pub wrk: bool,
    pub distinct_backends: bool,
    /// Each route has the translate shape's two rules (`Exact /health` +
    /// `GET`, `PathPrefix /app`) and the load asks for `/app/x`, so the
    /// rules' matchers run too.
    pub two_rules: bool,
}

/// The rules of every route, to `service` on `port`.
fn rules(service: &str, port: u16, two_rules: bool) -> serde_json::Value {
    let backends = json!([{"name": service, "port": port}]);
    match two_rules {
        false => json!([{"backendRefs": backends}]),
        true => json!([
            {"matches": [{"path": {"type": "Exact", "value": "/health"}, "method": "GET"}],
             "backendRefs": backends},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/app"}}],
             "backendRefs": backends},
        ]),
    }
}

pub fn host(i: usize) -> String {
    format!("h{i:05}.example.com")
}

/// The benchmark's objects: a Gateway on `port` and `hosts` routes, each
/// its own hostname, one rule, one backend (`echo`, or with
/// `distinct_backends` a Service each on a loopback alias 127.1.x.y).
pub fn snapshot(
    hosts: usize,
    port: u16,
    echo: SocketAddr,
    distinct_backends: bool,
    two_rules: bool,
) -> Snapshot {
    let mut snapshot = Snapshot::default();
    snapshot.insert(objects::class());
    snapshot.insert(objects::gateway(port, Some("127.0.0.1")));
    snapshot.insert(objects::service("apps", "echo", echo));
    for i in 0..hosts {
        let service = if distinct_backends {
            let alias = std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1);
            let name = format!("echo-{i:05}");
            snapshot.insert(objects::service("apps", &name, (alias, echo.port()).into()));
            name
        } else {
            "echo".to_string()
        };
        snapshot.insert(objects::route(
            "apps",
            &format!("route-{i:05}"),
            &[host(i)],
            rules(&service, echo.port(), two_rules),
        ));
    }
    snapshot
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.hosts >= 1, "--hosts must be at least 1");
    // Distinct backends dial the echo through loopback aliases
    // (127.1.x.y), so it listens on every address.
    let backend = if args.distinct_backends {
        live::echo_on(std::net::Ipv4Addr::UNSPECIFIED, "echo").await?
    } else {
        live::echo("echo").await?
    };
    let echo = util::loopback(backend.addr.port());

    let port_many = util::free_port()?;
    let snapshot = snapshot(
        args.hosts,
        port_many,
        echo,
        args.distinct_backends,
        args.two_rules,
    );
    let path = if args.two_rules { "/app/x" } else { "/" };
    let t = Instant::now();
    let output = translate::translate(&snapshot, &util::options(&snapshot));
    let translate_ms = util::ms(t.elapsed());
    let config_bytes = output.config().to_json().len();
    let last = host(args.hosts - 1);
    // The data plane's own limit: one hand-written route for the same request.
    let one_route = |port: u16| {
        json!({
            "listen": [format!("127.0.0.1:{port}")],
            "routes": [{
                "match": [{"host": [last]}],
                "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": echo.to_string()}]}],
            }],
            "automatic_https": {"disable": true},
            "protocols": ["h1", "h2", "h2c"],
        })
    };
    // The same route also runs beside the tree, in its process: it pays the
    // big config's garbage collection but none of the dispatch, which
    // separates the two costs.
    let port_beside = util::free_port()?;
    let mut config: serde_json::Value = serde_json::from_slice(&output.config().to_json())?;
    config["apps"]["http"]["servers"]["one-route-beside"] = one_route(port_beside);
    let many = Kengine::start().await?;
    let t = Instant::now();
    many.load_json(config)
        .await
        .with_context(|| format!("loading {} routes", args.hosts))?;
    let load_ms = util::ms(t.elapsed());
    println!(
        "dispatch: {} routes ({}) translated in {translate_ms:.1} ms, config {:.0} KB, loaded in {load_ms:.0} ms",
        args.hosts,
        if args.distinct_backends {
            "a Service each"
        } else {
            "one shared Service"
        },
        config_bytes as f64 / 1024.0
    );

    let port_one = util::free_port()?;
    let one = Kengine::start().await?;
    one.load_json(json!({"apps": {"http": {"servers": {"one": one_route(port_one)}}}}))
        .await?;

    let targets = [
        (
            "first route",
            Target {
                addr: util::loopback(port_many),
                host: host(0),
                path: path.into(),
            },
        ),
        (
            "last route",
            Target {
                addr: util::loopback(port_many),
                host: last.clone(),
                path: path.into(),
            },
        ),
        (
            "one-route config",
            Target {
                addr: util::loopback(port_one),
                host: last.clone(),
                path: path.into(),
            },
        ),
        (
            "one route beside",
            Target {
                addr: util::loopback(port_beside),
                host: last.clone(),
                path: path.into(),
            },
        ),
    ];
    for (name, target) in &targets {
        let p = live::until_200(target, Duration::from_secs(10)).await;
        anyhow::ensure!(p.ok, "{name} ({}) never answered 200", target.host);
    }
    // Warm-up: connections, Go's and our allocators, the backend.
    for (_, target) in &targets {
        run_load(target, args.connections, 1.0).await;
    }

    println!(
        "{} connections, {} s per run, {} rounds interleaved (first, last, one-route, one route beside)",
        args.connections, args.seconds, args.rounds
    );
    // Caddy's own CPU time per request: unlike req/s it barely moves when
    // other work on the machine takes CPU away, so it is the steadier figure
    // of the dispatch cost on a shared machine.
    let pids = [
        many.process.id().unwrap_or(0),
        many.process.id().unwrap_or(0),
        one.process.id().unwrap_or(0),
        many.process.id().unwrap_or(0),
    ];
    let mut results: Vec<Vec<LoadResult>> = vec![Vec::new(); targets.len()];
    let mut cpu_us: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for round in 0..args.rounds {
        for (k, (name, target)) in targets.iter().enumerate() {
            let before = util::process_cpu(pids[k]);
            let r = run_load(target, args.connections, args.seconds).await;
            let cpu = util::process_cpu(pids[k]).saturating_sub(before);
            let per_request = cpu.as_secs_f64() * 1e6 / r.answered().max(1) as f64;
            println!(
                "  round {} {name:<17} {:>8.0} req/s  Caddy CPU {per_request:>6.1} us/request  \
                 non-2xx {}  transport errors {}",
                round + 1,
                r.rps(),
                r.non_2xx(),
                r.transport_errors
            );
            results[k].push(r);
            cpu_us[k].push(per_request);
        }
    }

    let mut rows = Vec::new();
    let mut medians = Vec::new();
    let mut cpu_medians = Vec::new();
    for (((name, target), runs), cpu) in targets.iter().zip(results.iter_mut()).zip(&cpu_us) {
        let mut rps: Vec<f64> = runs.iter().map(LoadResult::rps).collect();
        let m = median(&mut rps.clone());
        medians.push(m);
        let cpu_median = median(&mut cpu.clone());
        cpu_medians.push(cpu_median);
        let mut all = LoadResult::default();
        for r in runs.iter() {
            all.latencies_us.extend(&r.latencies_us);
        }
        rows.push(json!({
            "target": name,
            "host": target.host,
            "rps_median": m.round(),
            "rps_runs": rps.iter_mut().map(|r| r.round()).collect::<Vec<_>>(),
            "caddy_cpu_us_per_request_median": round3(cpu_median),
            "caddy_cpu_us_per_request_runs": cpu.iter().map(|c| round3(*c)).collect::<Vec<_>>(),
            "non_2xx": runs.iter().map(LoadResult::non_2xx).sum::<u64>(),
            "transport_errors": runs.iter().map(|r| r.transport_errors).sum::<u64>(),
            "latency": all.latency_json(),
        }));
    }
    let (first, last_rps, baseline) = (medians[0], medians[1], medians[2]);
    println!(
        "median req/s: first {first:.0}, last {last_rps:.0}, one-route {baseline:.0}; \
         last/first {:.2}, first/one-route {:.2}, last/one-route {:.2}",
        last_rps / first,
        first / baseline,
        last_rps / baseline
    );
    let (c_first, c_last, c_one) = (cpu_medians[0], cpu_medians[1], cpu_medians[2]);
    println!(
        "median Caddy CPU per request: first {c_first:.1} us, last {c_last:.1} us, one-route {c_one:.1} us; \
         as throughput ratios: last/first {:.2}, first/one-route {:.2}, last/one-route {:.2}",
        c_first / c_last,
        c_one / c_first,
        c_one / c_last
    );
    let c_beside = cpu_medians[3];
    println!(
        "one route beside the tree: {c_beside:.1} us per request: the big config's cost alone \
         (one-route/beside {:.2}); the tree's dispatch alone: first {:.2}, last {:.2} of beside",
        c_one / c_beside,
        c_beside / c_first,
        c_beside / c_last
    );
    let wrk = if args.wrk {
        run_wrk(&targets, &args)
    } else {
        None
    };

    many.stop().await;
    one.stop().await;
    println!(
        "{}",
        json!({
            "scenario": "dispatch",
            "hosts": args.hosts,
            "distinct_backends": args.distinct_backends,
            "connections": args.connections,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "translate_ms": round3(translate_ms),
            "config_bytes": config_bytes,
            "load_ms": round3(load_ms),
            "targets": rows,
            "ratio_last_first": round3(last_rps / first),
            "ratio_first_one_route": round3(first / baseline),
            "ratio_last_one_route": round3(last_rps / baseline),
            "cpu_ratio_last_first": round3(c_first / c_last),
            "cpu_ratio_first_one_route": round3(c_one / c_first),
            "cpu_ratio_last_one_route": round3(c_one / c_last),
            "cpu_ratio_one_route_beside": round3(c_one / c_beside),
            "cpu_ratio_first_beside": round3(c_beside / c_first),
            "cpu_ratio_last_beside": round3(c_beside / c_last),
            "wrk": wrk,
        })
    );
    Ok(())
}

pub async fn run_load(target: &Target, connections: usize, seconds: f64) -> LoadResult {
    load::run(
        target,
        connections,
        Duration::from_secs_f64(seconds),
        Arc::new(AtomicBool::new(false)),
        load::Options::default(),
    )
    .await
}

/// The same three targets through `wrk`, an independent load generator,
/// when it is installed.
fn run_wrk(targets: &[(&str, Target)], args: &Args) -> Option<serde_json::Value> {
    let mut rows = Vec::new();
    for (name, target) in targets {
        let out = std::process::Command::new("wrk")
            .args(["-t1", &format!("-c{}", args.connections)])
            .arg(format!("-d{}s", args.seconds.ceil() as u64))
            .args(["-H", &format!("Host: {}", target.host)])
            .arg(format!("http://{}{}", target.addr, target.path))
            .output();
        let out = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => {
                println!("wrk: not available; skipped");
                return None;
            }
        };
        let rps = out
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        let non2xx = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        println!("  wrk {name:<17} {rps:>8.0} req/s  non-2xx/3xx {non2xx}");
        rows.push(json!({"target": name, "rps": rps.round(), "non_2xx_3xx": non2xx}));
    }
    Some(json!(rows))
}
