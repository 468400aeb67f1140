//! Scenario 6, reload cost: how long Kengine (Caddy 2.8.4) takes to load our
//! config at each size (a first load into an empty process, then a reload
//! that adds one route to the running config), and how many reloads a burst
//! of EndpointSlice changes causes. The pusher sends a config only when its
//! hash changed, so a change that leaves the translated config as it was
//! costs no reload: we count config hashes that differ from the previous.
//!
//! Side by side, in one process, it also loads our config and the naive
//! config of the same routes (`naive.rs`) in turn, each after an empty
//! config, and prints the ratio of their load times.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kengine_gateway::sinks::fleet::config_hash;
use kengine_gateway::translate;
use serde_json::json;

use crate::live::Kengine;
use crate::objects::{self, namespace_of, object};
use crate::{naive, util};

/// Loads `snapshot`'s config and the same with one more route; the two times.
async fn load_times(
    kengine: &Kengine,
    routes: usize,
) -> anyhow::Result<(Duration, Duration, usize)> {
    let mut snapshot = objects::translate_snapshot(routes);
    let options = util::options(&snapshot);
    let first = translate::translate(&snapshot, &options).config().to_json();
    let bytes = first.len();
    let admin = kengine.process.admin();
    let start = Instant::now();
    admin.load(first).await?;
    let initial = start.elapsed();
    snapshot.insert(objects::shaped_route(routes, 8080));
    let second = translate::translate(&snapshot, &options).config().to_json();
    let start = Instant::now();
    admin.load(second).await?;
    Ok((initial, start.elapsed(), bytes))
}

/// Reloads caused by `changes` EndpointSlice updates of `service` in the
/// translate shape, with the Service ClusterIP or headless.
fn endpoint_reloads(routes: usize, changes: usize, headless: bool) -> usize {
    let mut snapshot = objects::translate_snapshot(routes);
    let ns = namespace_of(0);
    if headless {
        snapshot.insert(object(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "svc-0", "namespace": ns},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 8080}]},
        })));
    }
    let options = util::options(&snapshot);
    let mut previous = config_hash(translate::translate(&snapshot, &options).config());
    let mut reloads = 0;
    for i in 0..changes {
        snapshot.insert(slice(&ns, i));
        let hash = config_hash(translate::translate(&snapshot, &options).config());
        if hash != previous {
            reloads += 1;
            previous = hash;
        }
    }
    reloads
}

/// The EndpointSlice of `svc-0` after change `i`: a pod replaced by another.
fn slice(ns: &str, i: usize) -> kengine_gateway::snapshot::Object {
    let ip = |k: usize| SocketAddr::from(([10, 200, (k / 250) as u8, (k % 250) as u8 + 1], 8080));
    object(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "svc-0-abcde", "namespace": ns,
            "labels": {"kubernetes.io/service-name": "svc-0"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": [ip(i).ip().to_string()], "conditions": {"ready": true}},
            {"addresses": [ip(i + 1).ip().to_string()], "conditions": {"ready": true}},
        ],
    }))
}

/// A config as `/load` takes it, with the admin API kept where it is.
fn body(kengine: &Kengine, mut config: serde_json::Value) -> anyhow::Result<Vec<u8>> {
    config["admin"] = json!({
        "listen": kengine.process.admin_addr().to_string(),
        "config": {"persist": false},
    });
    Ok(serde_json::to_vec(&config)?)
}

/// Load times of our config and the naive one, `rounds` each, alternating,
/// each load from an empty config (the admin API only): median seconds of
/// ours, of naive, and both sizes in bytes.
async fn side_by_side(
    kengine: &Kengine,
    routes: usize,
    rounds: usize,
) -> anyhow::Result<(f64, f64, usize, usize)> {
    let snapshot = objects::translate_snapshot(routes);
    let ours = translate::translate(&snapshot, &util::options(&snapshot))
        .config()
        .to_json();
    let ours = body(kengine, serde_json::from_slice(&ours)?)?;
    let theirs = body(kengine, naive::config(routes))?;
    let empty = body(kengine, json!({}))?;
    let admin = kengine.process.admin();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (config, times) in [(&ours, &mut a), (&theirs, &mut b)] {
            admin.load(empty.clone()).await?;
            let start = Instant::now();
            admin.load(config.clone()).await?;
            times.push(start.elapsed().as_secs_f64());
        }
    }
    admin.load(empty).await?;
    Ok((
        util::median(&mut a),
        util::median(&mut b),
        ours.len(),
        theirs.len(),
    ))
}

pub async fn run(sizes: &[usize], changes: usize, rounds: usize) -> anyhow::Result<()> {
    let mut compared = Vec::new();
    {
        let kengine = Kengine::start().await?;
        for &routes in sizes {
            let (ours, theirs, ours_bytes, naive_bytes) = side_by_side(&kengine, routes, rounds)
                .await
                .map_err(|e| anyhow::anyhow!("{e}\n{}", kengine.log_tail(20)))?;
            println!(
                "{routes:>6} routes, median of {rounds} loads each: ours {:.0} ms ({:.0} KB), \
                 naive {:.0} ms ({:.0} KB), ratio {:.2} (target <= 1.0)",
                ours * 1e3,
                ours_bytes as f64 / 1e3,
                theirs * 1e3,
                naive_bytes as f64 / 1e3,
                ours / theirs
            );
            compared.push(json!({"routes": routes, "rounds": rounds,
                "ours_ms": util::round3(ours * 1e3), "naive_ms": util::round3(theirs * 1e3),
                "ours_bytes": ours_bytes, "naive_bytes": naive_bytes,
                "ratio": util::round3(ours / theirs)}));
        }
        kengine.stop().await;
    }
    let mut loads = Vec::new();
    for &routes in sizes {
        // A fresh process per size: the first load really is a first load.
        let kengine = Kengine::start().await?;
        let (initial, reload, bytes) = load_times(&kengine, routes)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", kengine.log_tail(20)))?;
        println!(
            "{routes:>6} routes ({:.1} MB): first load {:.0} ms, reload with one more route {:.0} ms",
            bytes as f64 / 1e6,
            util::ms(initial),
            util::ms(reload)
        );
        loads.push(json!({"routes": routes, "config_bytes": bytes,
            "first_load_ms": util::round3(util::ms(initial)), "reload_ms": util::round3(util::ms(reload))}));
        kengine.stop().await;
    }
    let routes = sizes.first().copied().unwrap_or(1_000);
    let cluster_ip = endpoint_reloads(routes, changes, false);
    let headless = endpoint_reloads(routes, changes, true);
    println!(
        "{changes} EndpointSlice changes with {routes} routes: {cluster_ip} reloads when the Service has a ClusterIP \
         (target 0: {}), {headless} when it is headless (its endpoints are dialed)",
        if cluster_ip == 0 { "met" } else { "missed" }
    );
    println!(
        "{}",
        json!({"scenario": "reload", "side_by_side": compared, "loads": loads, "endpoint_changes": changes,
            "reloads_cluster_ip": cluster_ip, "reloads_headless": headless})
    );
    Ok(())
}
