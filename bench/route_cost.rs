//! Where scenario 5's dispatch cost goes. Kengine compiles the routes of a
//! `subroute` into a handler chain on every request, and a route whose
//! matcher fails still costs its evaluation. This scenario measures Caddy's
//! CPU per request on hand-written servers that each add one kind of that
//! work, derives a cost per unit, counts the units on the path the
//! translated host tree makes a request take, and compares the prediction
//! with the tree measured in the same process. Every leaf answers with a
//! static response (the tree's proxies are replaced by one), so the
//! dispatch work stands out from the proxying.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use kengine_gateway::translate;
use serde_json::{Value, json};

use crate::dispatch;
use crate::live::{self, Kengine};
use crate::load::Target;
use crate::util::{self, median, round3};

pub struct Args {
    pub hosts: usize,
    pub seconds: f64,
    pub connections: usize,
    pub rounds: usize,
}

/// Routes per subroute in the unit servers, and nesting depth.
const ROUTES: usize = 64;
const LEVELS: usize = 8;
const TARGET: &str = "target.example.com";

fn ok() -> Value {
    json!({"handler": "static_response", "status_code": 200, "body": "ok"})
}

fn host_route(hosts: Vec<String>, handle: Vec<Value>) -> Value {
    json!({"match": [{"host": hosts}], "handle": handle})
}

fn subroute(routes: Vec<Value>) -> Value {
    json!({"handler": "subroute", "routes": routes})
}

/// `size` hostnames that are not the target.
fn others(size: usize) -> Vec<String> {
    (0..size).map(|i| format!("o{i:03}.example.net")).collect()
}

/// The unit servers: (name, routes), each reached with Host `TARGET`.
fn units() -> Vec<(&'static str, Vec<Value>)> {
    let target = || vec![TARGET.to_string()];
    // The target's route first, then `ROUTES - 1` others: compiled, never evaluated.
    let compiled = |n: usize| {
        let mut routes = vec![host_route(target(), vec![ok()])];
        routes.extend((1..n).map(|i| host_route(vec![format!("o{i:03}.example.net")], vec![ok()])));
        vec![host_route(target(), vec![subroute(routes)])]
    };
    // `ROUTES - 1` routes whose `size`-host matcher fails, then the target's.
    let failing = |size: usize| {
        let mut routes: Vec<Value> = (1..ROUTES)
            .map(|_| host_route(others(size), vec![ok()]))
            .collect();
        routes.push(host_route(target(), vec![ok()]));
        vec![host_route(target(), vec![subroute(routes)])]
    };
    let mut nested = vec![ok()];
    for _ in 0..LEVELS {
        nested = vec![subroute(vec![json!({"handle": nested})])];
    }
    vec![
        ("base", vec![host_route(target(), vec![ok()])]),
        ("compile 1", compiled(1)),
        ("compile 64", compiled(ROUTES)),
        ("fail 64 x 1 host", failing(1)),
        ("fail 64 x 100 hosts", failing(100)),
        ("fail 64 x 101 hosts", failing(101)),
        ("8 levels", vec![host_route(target(), nested)]),
    ]
}

/// What a request for one host does on its way through a config, in the
/// units measured here.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Path {
    /// Subroutes entered.
    pub levels: usize,
    /// Routes compiled for the request: every route of each subroute
    /// entered (all of them, not only those evaluated), and each `invoke`.
    pub compiled: usize,
    /// Length of each host list that failed on the way.
    pub failed: Vec<usize>,
}

/// Walks `routes` as Kengine does for Host `host`: the first route whose
/// host matcher has it (or that has none) runs its handlers in order until
/// one answers. Matcher sets without a host matcher count as failing (the
/// tree of exact hosts has none on the way to a leaf).
pub fn walk(routes: &[Value], host: &str, named: &Value, path: &mut Path) -> bool {
    for route in routes {
        if let Some(sets) = route.get("match").and_then(Value::as_array) {
            let hosts = |set: &Value| set.get("host").and_then(Value::as_array).cloned();
            let matched = sets
                .iter()
                .any(|set| hosts(set).is_some_and(|h| h.iter().any(|x| x == host)));
            if !matched {
                let len: usize = sets.iter().filter_map(hosts).map(|h| h.len()).sum();
                path.failed.push(len.max(1));
                continue;
            }
        }
        for handler in route["handle"].as_array().into_iter().flatten() {
            match handler["handler"].as_str() {
                Some("subroute") => {
                    let inner = handler["routes"].as_array().cloned().unwrap_or_default();
                    path.levels += 1;
                    path.compiled += inner.len();
                    if walk(&inner, host, named, path) {
                        return true;
                    }
                }
                Some("invoke") => {
                    path.compiled += 1;
                    let name = handler["name"].as_str().unwrap_or_default();
                    if walk(std::slice::from_ref(&named[name]), host, named, path) {
                        return true;
                    }
                }
                Some("static_response" | "reverse_proxy") => return true,
                _ => {}
            }
        }
    }
    false
}

/// Cost per unit, from the unit servers' median CPU per request.
struct Units {
    compile: f64,
    level: f64,
    fail_1: f64,
    fail_100: f64,
    fail_101: f64,
}

impl Units {
    fn from(cpu: impl Fn(&str) -> f64) -> Self {
        let per = (ROUTES - 1) as f64;
        let compile = (cpu("compile 64") - cpu("compile 1")) / per;
        Units {
            compile,
            // A level compiles its one route too.
            level: (cpu("8 levels") - cpu("base")) / LEVELS as f64 - compile,
            fail_1: (cpu("fail 64 x 1 host") - cpu("compile 64")) / per,
            fail_100: (cpu("fail 64 x 100 hosts") - cpu("compile 64")) / per,
            fail_101: (cpu("fail 64 x 101 hosts") - cpu("compile 64")) / per,
        }
    }

    /// A failing host list: Kengine scans up to 100 entries and
    /// binary-searches a longer list.
    fn fail(&self, len: usize) -> f64 {
        if len > 100 {
            self.fail_101
        } else {
            self.fail_1 + (self.fail_100 - self.fail_1) * (len - 1) as f64 / 99.0
        }
    }

    fn predict(&self, path: &Path) -> f64 {
        path.levels as f64 * self.level
            + path.compiled as f64 * self.compile
            + path.failed.iter().map(|&n| self.fail(n)).sum::<f64>()
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.hosts >= 1, "--hosts must be at least 1");
    // The translated tree; its proxies never run (replaced below), so the
    // backend address is a placeholder.
    let port_tree = util::free_port()?;
    let snapshot = dispatch::snapshot(args.hosts, port_tree, util::loopback(9), false, false);
    let output = translate::translate(&snapshot, &util::options(&snapshot));
    let mut config: Value = serde_json::from_slice(&output.config().to_json())?;
    let servers = config["apps"]["http"]["servers"]
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("the translated config has no servers"))?;
    anyhow::ensure!(servers.len() == 1, "expected one translated server");
    let tree = servers.values_mut().next().expect("one server");
    if let Some(named) = tree.get_mut("named_routes").and_then(Value::as_object_mut) {
        for route in named.values_mut() {
            *route = json!({"handle": [ok()]});
        }
    }
    let tree_routes = tree["routes"].as_array().cloned().unwrap_or_default();
    let named = tree.get("named_routes").cloned().unwrap_or(json!({}));
    // The unit servers get the tree server's settings (protocols: h2c wraps
    // every request), only their own listener and routes.
    let mut settings = tree.clone();
    if let Some(s) = settings.as_object_mut() {
        s.remove("named_routes");
    }

    let kengine = Kengine::start().await?;
    let mut targets: Vec<(String, Target)> = Vec::new();
    for (name, routes) in units() {
        let port = util::free_port()?;
        let mut server = settings.clone();
        server["listen"] = json!([format!("127.0.0.1:{port}")]);
        server["routes"] = json!(routes);
        servers.insert(format!("unit {name}"), server);
        targets.push((name.into(), target(util::loopback(port), TARGET)));
    }
    let first = dispatch::host(0);
    let last = dispatch::host(args.hosts - 1);
    for (name, host) in [("tree first", &first), ("tree last", &last)] {
        targets.push((name.into(), target(util::loopback(port_tree), host)));
    }
    kengine
        .load_json(config)
        .await
        .context("loading the unit servers")?;
    for (name, t) in &targets {
        let p = live::until_200(t, Duration::from_secs(10)).await;
        anyhow::ensure!(p.ok, "{name} ({}) never answered 200", t.host);
        dispatch::run_load(t, args.connections, 0.5).await;
    }

    println!(
        "route-cost: {} translated hosts and {} unit servers in one Caddy; {} connections, {} s per run, {} rounds",
        args.hosts,
        targets.len() - 2,
        args.connections,
        args.seconds,
        args.rounds
    );
    let pid = kengine.process.id().unwrap_or(0);
    let mut cpu_us: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut non_2xx = 0;
    for _ in 0..args.rounds {
        for (k, (_, t)) in targets.iter().enumerate() {
            let before = util::process_cpu(pid);
            let r = dispatch::run_load(t, args.connections, args.seconds).await;
            let cpu = util::process_cpu(pid).saturating_sub(before);
            non_2xx += r.non_2xx() + r.transport_errors;
            cpu_us[k].push(cpu.as_secs_f64() * 1e6 / r.answered().max(1) as f64);
        }
    }
    kengine.stop().await;
    let medians: Vec<f64> = cpu_us.iter().map(|c| median(&mut c.clone())).collect();
    for ((name, _), m) in targets.iter().zip(&medians) {
        println!("  {name:<20} Caddy CPU {m:>6.1} us/request");
    }
    let cpu = |name: &str| {
        targets
            .iter()
            .position(|(n, _)| n == name)
            .map_or(0.0, |k| medians[k])
    };
    let units = Units::from(cpu);
    println!(
        "per unit: route compiled {:.2} us, subroute level {:.2} us, failing host matcher of 1 / 100 / 101 hosts {:.2} / {:.2} / {:.2} us",
        units.compile, units.level, units.fail_1, units.fail_100, units.fail_101
    );
    let mut paths = Vec::new();
    for (name, host) in [("tree first", &first), ("tree last", &last)] {
        let mut path = Path::default();
        anyhow::ensure!(
            walk(&tree_routes, host, &named, &mut path),
            "{host} reaches no leaf"
        );
        let predicted = units.predict(&path);
        let measured = cpu(name) - cpu("base");
        println!(
            "{name}: {} levels, {} routes compiled, {} failing matchers ({} hosts in them): \
             predicted {predicted:.1} us over base, measured {measured:.1} us",
            path.levels,
            path.compiled,
            path.failed.len(),
            path.failed.iter().sum::<usize>()
        );
        paths.push(json!({
            "target": name, "levels": path.levels, "compiled": path.compiled,
            "failed": path.failed, "predicted_us": round3(predicted), "measured_us": round3(measured),
        }));
    }
    println!(
        "{}",
        json!({
            "scenario": "route-cost",
            "hosts": args.hosts,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "non_2xx_or_errors": non_2xx,
            "cpu_us_per_request": targets.iter().zip(&medians).map(|((n, _), m)| (n.clone(), json!(round3(*m)))).collect::<serde_json::Map<_, _>>(),
            "units_us": {"compile": round3(units.compile), "level": round3(units.level),
                "fail_1": round3(units.fail_1), "fail_100": round3(units.fail_100), "fail_101": round3(units.fail_101)},
            "paths": paths,
        })
    );
    Ok(())
}

fn target(addr: SocketAddr, host: &str) -> Target {
    Target {
        addr,
        host: host.into(),
        path: "/".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_counts_what_kengine_does_on_the_way() {
        let leaf = |h: &str| {
            host_route(
                vec![h.into()],
                vec![json!({"handler": "invoke", "name": "p"})],
            )
        };
        let routes = vec![
            host_route(
                vec!["a".into(), "b".into()],
                vec![subroute(vec![leaf("a"), leaf("b")])],
            ),
            host_route(vec!["c".into()], vec![subroute(vec![leaf("c")])]),
        ];
        let named = json!({"p": {"handle": [ok()]}});
        let mut path = Path::default();
        assert!(walk(&routes, "b", &named, &mut path));
        assert_eq!(
            path,
            Path {
                levels: 1,
                compiled: 3,
                failed: vec![1]
            }
        );
        let mut path = Path::default();
        assert!(walk(&routes, "c", &named, &mut path));
        assert_eq!(path.failed, vec![2]);
        assert!(!walk(&routes, "x", &named, &mut Path::default()));
    }
}
