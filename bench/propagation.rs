//! Scenario 2: propagation. Standalone's building blocks against a real
//! Caddy: routes are added one at a time (snapshot → translate → push), and
//! each creation is timed until the new route answers 200.
//!
//! Per route: *our share* is translate plus serializing the config (event →
//! push sent); *Kengine's reload* is the `/load` call; *probe* is from the
//! load's answer to the first 200. The pusher serializes inside `push`, so
//! that serialization is timed again off the critical path, after the 200,
//! and moved from the push time to our share.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kengine_gateway::kengine::config::{Admin, AdminConfig};
use kengine_gateway::sinks::pusher::Pusher;
use kengine_gateway::snapshot::Snapshot;
use kengine_gateway::translate;
use serde_json::json;

use crate::live::{self, Kengine};
use crate::load::{self, Target};
use crate::objects;
use crate::util::{self, ms, round3, summary_ms};

struct Sample {
    translate: Duration,
    serialize: Duration,
    reload: Duration,
    probe: Duration,
    total: Duration,
    config_bytes: usize,
}

impl Sample {
    fn ours(&self) -> Duration {
        self.translate + self.serialize
    }
}

pub async fn run(routes: usize, preload: usize, report_every: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        routes >= 1 && preload < routes,
        "--routes must be at least 1 and more than --preload"
    );
    let backend = live::echo("echo").await?;
    let echo = backend.addr;
    let port = util::free_port()?;
    let kengine = Kengine::start().await?;
    let mut pusher = Pusher::new(kengine.process.admin().clone());
    let admin_listen = kengine.process.admin_addr().to_string();

    let mut snapshot = Snapshot::default();
    snapshot.insert(objects::class());
    snapshot.insert(objects::gateway(port, Some("127.0.0.1")));
    let options = util::options(&snapshot);
    pusher
        .push(translate::translate(&snapshot, &options).config())
        .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut background = None;
    let mut samples: Vec<Sample> = Vec::with_capacity(routes);
    let (mut not_found, mut other, mut transport, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let (mut fresh_errors, mut late_routes) = (0u64, 0u64);
    let started = Instant::now();
    if preload > 0 {
        // Routes 0..preload in one push, untimed: the timed additions then
        // start from a config of that size without thousands of reloads.
        for i in 0..preload {
            if i.is_multiple_of(objects::ROUTES_PER_NS) {
                for s in objects::shaped_services(&objects::namespace_of(i), |_| echo) {
                    snapshot.insert(s);
                }
            }
            snapshot.insert(objects::shaped_route(i, echo.port()));
        }
        pusher
            .push(translate::translate(&snapshot, &options).config())
            .await?;
        let last = Target {
            addr: util::loopback(port),
            host: objects::host_of(preload - 1),
            path: "/app".into(),
        };
        anyhow::ensure!(
            live::until_200(&last, Duration::from_secs(30)).await.ok,
            "preloaded routes do not answer"
        );
        println!("propagation: preloaded {preload} routes in one push (untimed)");
    }
    println!(
        "propagation: adding routes {} to {routes} one at a time (2 rules, 2 backendRefs each) into Caddy",
        preload + 1
    );
    println!(
        "{:>7} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10} {:>9}",
        "routes",
        "total_ms",
        "ours_ms",
        "reload_ms",
        "probe_ms",
        "ours_%",
        "config_KB",
        "elapsed_s"
    );
    for i in preload..routes {
        if i.is_multiple_of(objects::ROUTES_PER_NS) {
            for s in objects::shaped_services(&objects::namespace_of(i), |_| echo) {
                snapshot.insert(s);
            }
        }
        let route = objects::shaped_route(i, echo.port());
        let target = Target {
            addr: util::loopback(port),
            host: objects::host_of(i),
            path: "/app".into(),
        };

        let t0 = Instant::now();
        snapshot.insert(route);
        let output = translate::translate(&snapshot, &options);
        let t1 = Instant::now();
        if let Err(e) = pusher.push(output.config()).await {
            anyhow::bail!("push of route {i} failed: {e}\n{}", kengine.log_tail(20));
        }
        let t2 = Instant::now();
        let probe = live::until_200(&target, Duration::from_secs(10)).await;
        let t3 = Instant::now();
        not_found += probe.not_found;
        other += probe.other;
        transport += probe.transport_errors;
        fresh_errors += probe.fresh_conn_errors;
        if probe.not_found > 0 || probe.transport_errors > 0 {
            late_routes += 1;
        }
        if !probe.ok {
            failed += 1;
        }

        // Off the critical path: what `push` spent serializing.
        let ts = Instant::now();
        let mut config = output.config().clone();
        config.admin = Some(Admin {
            listen: Some(admin_listen.clone()),
            config: Some(AdminConfig { persist: false }),
        });
        let bytes = config.to_json();
        let serialize = ts.elapsed();
        let push = t2 - t1;
        samples.push(Sample {
            translate: t1 - t0,
            serialize,
            reload: push.saturating_sub(serialize),
            probe: t3 - t2,
            total: t3 - t0,
            config_bytes: bytes.len(),
        });

        if background.is_none() {
            // A steady prober on the first route, 200 requests per second,
            // to catch any error a reload shows to live traffic.
            let target = target.clone();
            let stop = stop.clone();
            background = Some(tokio::spawn(async move {
                load::run(
                    &target,
                    1,
                    Duration::from_secs(24 * 3600),
                    stop,
                    load::Options {
                        pause: Duration::from_millis(5),
                        ..Default::default()
                    },
                )
                .await
            }));
        }
        if (i + 1 - preload).is_multiple_of(report_every) || i + 1 == routes {
            let window = &samples[samples.len().saturating_sub(report_every)..];
            let mean = |f: &dyn Fn(&Sample) -> Duration| {
                ms(window.iter().map(f).sum::<Duration>()) / window.len() as f64
            };
            let (total, ours) = (mean(&|s| s.total), mean(&|s| s.ours()));
            println!(
                "{:>7} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8.2}% {:>10.0} {:>9.1}",
                i + 1,
                total,
                ours,
                mean(&|s| s.reload),
                mean(&|s| s.probe),
                100.0 * ours / total,
                samples.last().map_or(0, |s| s.config_bytes) as f64 / 1024.0,
                started.elapsed().as_secs_f64()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut background = match background {
        Some(task) => task.await?,
        None => Default::default(),
    };
    kengine.stop().await;

    let pick = |f: fn(&Sample) -> Duration| samples.iter().map(f).collect::<Vec<_>>();
    let last_window = &samples[samples.len().saturating_sub(100)..];
    let share_at_end = last_window
        .iter()
        .map(Sample::ours)
        .sum::<Duration>()
        .as_secs_f64()
        / last_window
            .iter()
            .map(|s| s.total)
            .sum::<Duration>()
            .as_secs_f64();
    let share_overall = samples
        .iter()
        .map(Sample::ours)
        .sum::<Duration>()
        .as_secs_f64()
        / samples
            .iter()
            .map(|s| s.total)
            .sum::<Duration>()
            .as_secs_f64();
    let total = summary_ms(&pick(|s| s.total));
    println!(
        "event → 200 over the {} timed routes: p50 {} ms, p99 {} ms, max {} ms",
        samples.len(),
        total["p50_ms"],
        total["p99_ms"],
        total["max_ms"]
    );
    println!(
        "our share (translate + serialize): {:.2}% of the total over the last {} routes \
         (target < 10%), {:.2}% over all",
        100.0 * share_at_end,
        last_window.len(),
        100.0 * share_overall
    );
    println!(
        "probe answers after /load returned: 404 {not_found}, other than 200/404 {other} (target 0), \
         transport errors {transport} ({fresh_errors} on a fresh connection); \
         routes not answering 200 at the first try {late_routes}, never {failed}"
    );
    println!(
        "background prober on the first route: {} answers, non-2xx {}, transport errors {} \
         ({} on reused keep-alive connections) {:?}",
        background.answered(),
        background.non_2xx(),
        background.transport_errors,
        background.reused_conn_errors,
        background.error_samples
    );
    println!(
        "{}",
        json!({
            "scenario": "propagation",
            "routes": routes,
            "preload": preload,
            "elapsed_s": round3(started.elapsed().as_secs_f64()),
            "total": total,
            "ours": summary_ms(&pick(Sample::ours)),
            "translate": summary_ms(&pick(|s| s.translate)),
            "serialize": summary_ms(&pick(|s| s.serialize)),
            "reload": summary_ms(&pick(|s| s.reload)),
            "probe": summary_ms(&pick(|s| s.probe)),
            "last_100": {
                "total": summary_ms(&last_window.iter().map(|s| s.total).collect::<Vec<_>>()),
                "ours": summary_ms(&last_window.iter().map(Sample::ours).collect::<Vec<_>>()),
                "reload": summary_ms(&last_window.iter().map(|s| s.reload).collect::<Vec<_>>()),
            },
            "our_share_last_100": round3(share_at_end),
            "our_share_overall": round3(share_overall),
            "final_config_bytes": samples.last().map_or(0, |s| s.config_bytes),
            "probe_404": not_found,
            "probe_other_than_200_404": other,
            "probe_transport_errors": transport,
            "probe_fresh_conn_errors": fresh_errors,
            "routes_not_200_at_first_try": late_routes,
            "routes_never_200": failed,
            "background": background.report(),
        })
    );
    Ok(())
}
