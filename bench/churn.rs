//! Scenario 4: changes under traffic. A load generator keeps requesting one
//! route while another route is modified `changes` times and the loaded
//! route's own backend weights change as often; every change is translated
//! and pushed (a full reload). Target: not one non-2xx answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kengine_gateway::sinks::pusher::Pusher;
use kengine_gateway::snapshot::{Object, Snapshot};
use kengine_gateway::translate;
use serde_json::json;

use crate::live::{self, Kengine};
use crate::load::{self, Target};
use crate::objects;
use crate::util::{self, round3, summary_ms};

pub struct Args {
    pub changes: usize,
    pub filler: usize,
    pub connections: usize,
    pub interval_ms: u64,
    pub retry: bool,
}

/// Weights of (v1, v2) on the loaded route, cycled through.
const WEIGHTS: [(u32, u32); 4] = [(90, 10), (50, 50), (10, 90), (70, 30)];

/// The loaded route. Services dial `clusterIP:port`, so each Service's port
/// is its echo backend's port.
fn routed(weights: (u32, u32), v1_port: u16, v2_port: u16) -> Object {
    objects::route(
        "apps",
        "routed",
        &["routed.example.com".into()],
        json!([{"backendRefs": [
            {"name": "v1", "port": v1_port, "weight": weights.0},
            {"name": "v2", "port": v2_port, "weight": weights.1},
        ]}]),
    )
}

/// The other route, version `k`: its path and a header it sets change.
fn other(k: usize, v1_port: u16) -> Object {
    objects::route(
        "apps",
        "other",
        &["other.example.com".into()],
        json!([{
            "matches": [{"path": {"type": "PathPrefix", "value": format!("/v{k}")}}],
            "filters": [{"type": "RequestHeaderModifier",
                         "requestHeaderModifier": {"set": [{"name": "X-Change", "value": k.to_string()}]}}],
            "backendRefs": [{"name": "v1", "port": v1_port}],
        }]),
    )
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (backend1, backend2) = (live::echo("v1").await?, live::echo("v2").await?);
    let (v1, v2) = (backend1.addr, backend2.addr);
    let port = util::free_port()?;
    let kengine = Kengine::start().await?;
    let mut pusher = Pusher::new(kengine.process.admin().clone());

    let mut snapshot = Snapshot::default();
    snapshot.insert(objects::class());
    snapshot.insert(objects::gateway(port, Some("127.0.0.1")));
    let options = util::options(&snapshot);
    snapshot.insert(objects::service("apps", "v1", v1));
    snapshot.insert(objects::service("apps", "v2", v2));
    for n in 0..args.filler.div_ceil(objects::ROUTES_PER_NS) {
        for s in
            objects::shaped_services(&objects::namespace_of(n * objects::ROUTES_PER_NS), |_| v1)
        {
            snapshot.insert(s);
        }
    }
    for i in 0..args.filler {
        snapshot.insert(objects::shaped_route(i, v1.port()));
    }
    snapshot.insert(routed(WEIGHTS[0], v1.port(), v2.port()));
    snapshot.insert(other(0, v1.port()));
    let output = translate::translate(&snapshot, &options);
    let config_bytes = output.config().to_json().len();
    pusher.push(output.config()).await?;

    let target = Target {
        addr: util::loopback(port),
        host: "routed.example.com".into(),
        path: "/".into(),
    };
    let p = live::until_200(&target, Duration::from_secs(10)).await;
    anyhow::ensure!(
        p.ok,
        "the routed route never answered 200\n{}",
        kengine.log_tail(20)
    );

    println!(
        "churn: {} other routes, config {:.0} KB; {} connections on routed.example.com; \
         {} changes of route `other` and {} weight changes of the loaded route, {} ms apart",
        args.filler,
        config_bytes as f64 / 1024.0,
        args.connections,
        args.changes,
        args.changes,
        args.interval_ms
    );
    let stop = Arc::new(AtomicBool::new(false));
    let cap = Duration::from_millis(2 * args.changes as u64 * (args.interval_ms + 5_000) + 10_000);
    let generator = {
        let (target, stop, connections) = (target.clone(), stop.clone(), args.connections);
        let options = load::Options {
            count_pods: true,
            retry_reused: args.retry,
            ..Default::default()
        };
        tokio::spawn(async move { load::run(&target, connections, cap, stop, options).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut pushes = Vec::new();
    let started = Instant::now();
    for k in 0..args.changes {
        for change in [
            other(k + 1, v1.port()),
            routed(WEIGHTS[(k + 1) % WEIGHTS.len()], v1.port(), v2.port()),
        ] {
            let t = Instant::now();
            snapshot.insert(change);
            let output = translate::translate(&snapshot, &options);
            pusher.push(output.config()).await?;
            pushes.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    }
    let changing = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut result = generator.await?;

    // The last version of `other` serves, and its previous path is gone.
    let last = args.changes;
    let now_ok = live::until_200(
        &Target {
            addr: target.addr,
            host: "other.example.com".into(),
            path: format!("/v{last}"),
        },
        Duration::from_secs(5),
    )
    .await;
    kengine.stop().await;

    println!(
        "{} requests in {:.1} s ({:.0} req/s) while {} pushes ran over {:.1} s",
        result.answered(),
        result.elapsed.as_secs_f64(),
        result.rps(),
        pushes.len(),
        changing.as_secs_f64()
    );
    println!(
        "statuses {:?}; non-2xx {} (target 0); transport errors {} ({} on reused keep-alive \
         connections) {:?}; retried {}; connections opened {}",
        result.statuses,
        result.non_2xx(),
        result.transport_errors,
        result.reused_conn_errors,
        result.error_samples,
        result.retried,
        result.connects
    );
    println!("answers per backend: {:?}", result.pods);
    let push = summary_ms(&pushes);
    println!(
        "translate + push per change: p50 {} ms, max {} ms; last change of `other` serving: {}",
        push["p50_ms"], push["max_ms"], now_ok.ok
    );
    println!(
        "{}",
        json!({
            "scenario": "churn",
            "changes": args.changes,
            "pushes": pushes.len(),
            "filler_routes": args.filler,
            "config_bytes": config_bytes,
            "connections": args.connections,
            "interval_ms": args.interval_ms,
            "retry_reused": args.retry,
            "changing_s": round3(changing.as_secs_f64()),
            "push": push,
            "load": result.report(),
            "last_change_serving": now_ok.ok,
        })
    );
    Ok(())
}
