//! Scenario 3, attached-routes convergence: the `kengine-gateway controller`
//! binary against a real control plane (etcd, kube-apiserver and
//! kube-controller-manager from `scripts/ensure-kube.sh`, the test harness's
//! `crates/test-support`), one Gateway served by an External
//! KengineInstance whose one pod is a real Caddy 2.8.4. N HTTPRoutes are
//! created in a burst, then deleted in a burst; each way we time from the
//! first request until `status.listeners[0].attachedRoutes` reads the final
//! count, and count the controller's status writes (its own metric).
//!
//! It runs in a network namespace of its own (root), where the Kengine
//! pod's IP is a local address: the API server takes no loopback pod IP.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

use kengine_gateway_test_support::{control_plane, netns};

const NS: &str = "bench";
const PORT: u16 = 18690;
const TARGET: Duration = Duration::from_secs(1);
/// The Kengine pod's IP, local to the bench's network namespace.
const POD_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 244, 0, 2);
const NODE: &str = "bench";

/// Enters a network namespace of its own, then runs the scenario.
pub fn main(routes: usize) -> anyhow::Result<()> {
    // SAFETY: geteuid takes no arguments and cannot fail.
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "the attached scenario needs root: it runs a real control plane in a network namespace of its own"
    );
    netns::enter();
    netns::add_local_address(&POD_IP.to_string());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(routes))
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version,
        kind: kind.into(),
        plural: plural.into(),
    }
}

async fn apply(
    client: &kube::Client,
    ar: &ApiResource,
    namespaced: bool,
    object: Value,
) -> anyhow::Result<()> {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let api: Api<DynamicObject> = if namespaced {
        Api::namespaced_with(client.clone(), NS, ar)
    } else {
        Api::all_with(client.clone(), ar)
    };
    api.patch(
        &name,
        &PatchParams::apply("bench").force(),
        &Patch::Apply(object),
    )
    .await
    .with_context(|| format!("apply {name}"))?;
    Ok(())
}

/// The controller binary beside this one, with its log in a file.
struct Controller {
    child: Child,
    metrics: std::net::SocketAddr,
}

impl Controller {
    fn start(kubeconfig: &std::path::Path, log: &std::path::Path) -> anyhow::Result<Self> {
        let bin = std::env::current_exe()?
            .parent()
            .map(|d| d.join("kengine-gateway"))
            .filter(|p| p.exists())
            .context("build the kengine-gateway binary too: cargo build --release --bins")?;
        let metrics = super::util::loopback(super::util::free_port()?);
        let health = super::util::loopback(super::util::free_port()?);
        let child = Command::new(bin)
            .args([
                "controller",
                "--leader-elect=false",
                "--flavor=caddy",
                "--manage-fleets=false",
            ])
            .arg(format!("--metrics-addr={metrics}"))
            .arg(format!("--health-addr={health}"))
            .env("KUBECONFIG", kubeconfig)
            .env("KENGINE_GATEWAY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()?;
        Ok(Controller { child, metrics })
    }

    /// Sum of a counter over its label sets.
    async fn counter(&self, name: &str) -> f64 {
        self.counter_with(name, "").await
    }

    /// Sum of a counter over its label sets that contain `label`.
    async fn counter_with(&self, name: &str, label: &str) -> f64 {
        let text = async {
            reqwest::get(format!("http://{}/metrics", self.metrics))
                .await
                .ok()?
                .text()
                .await
                .ok()
        }
        .await
        .unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn attached(gateways: &Api<DynamicObject>) -> Option<i64> {
    let gw = serde_json::to_value(gateways.get("gw").await.ok()?).ok()?;
    gw["status"]["listeners"][0]["attachedRoutes"].as_i64()
}

/// Polls until attachedRoutes reads `want`; the time since `start`.
async fn until_attached(
    gateways: &Api<DynamicObject>,
    want: i64,
    start: Instant,
) -> anyhow::Result<Duration> {
    let limit = Duration::from_secs(120);
    loop {
        if attached(gateways).await == Some(want) {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "attachedRoutes never reached {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Caddy with its admin API on `admin` (killed when dropped).
async fn caddy(
    admin: std::net::SocketAddr,
    dir: &std::path::Path,
) -> anyhow::Result<tokio::process::Child> {
    let child = tokio::process::Command::new(super::util::caddy_bin()?)
        .arg("run")
        .env("CADDY_ADMIN", admin.to_string())
        .env("XDG_CONFIG_HOME", dir)
        .env("XDG_DATA_HOME", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(admin).await.is_ok() {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("caddy's admin API never answered on {admin}")
}

async fn run(routes: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let plane = control_plane::ControlPlane::start().await;
    let repo = crate::util::repo();
    plane
        .install_crds(&[
            repo.join("e2e/gateway-api/v1.6.1/config/crd/experimental"),
            repo.join("crds"),
        ])
        .await;
    let client = plane.client().await;
    let admin = std::net::SocketAddr::from((POD_IP, super::util::free_port()?));
    let _kengine = caddy(admin, dir.path()).await?;
    let gw = "gateway.networking.k8s.io";
    let (ns, node, pod, class, gateway, route, ki) = (
        resource("", "v1", "Namespace", "namespaces"),
        resource("", "v1", "Node", "nodes"),
        resource("", "v1", "Pod", "pods"),
        resource(gw, "v1", "GatewayClass", "gatewayclasses"),
        resource(gw, "v1", "Gateway", "gateways"),
        resource(gw, "v1", "HTTPRoute", "httproutes"),
        resource(
            "kengine.khulnasoft.com",
            "v1alpha1",
            "KengineInstance",
            "kengineinstances",
        ),
    );
    apply(
        &client,
        &ns,
        false,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .await?;
    // The Node the pod is bound to, kept Ready: the pod garbage collector
    // deletes pods of unknown nodes, and the node lifecycle controller
    // marks those of a silent node unready.
    apply(
        &client,
        &node,
        false,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}),
    )
    .await?;
    let _heartbeat = kengine_gateway_test_support::cluster::node_heartbeat(
        Api::all_with(client.clone(), &node),
        NODE,
    );
    // Pods need their namespace's default ServiceAccount.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), NS);
    let start = Instant::now();
    while accounts.get_opt("default").await?.is_none() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "no default ServiceAccount in {NS}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The one Kengine pod: a local Caddy, plain-HTTP admin on its pod IP.
    apply(
        &client,
        &pod,
        true,
        json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kengine-0", "namespace": NS, "labels": {"app": "kengine"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "kengine", "image": "caddy:2.8.4"}]}}),
    )
    .await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    Api::<DynamicObject>::namespaced_with(client.clone(), NS, &pod)
        .patch_status(
            "kengine-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
            "phase": "Running", "podIP": admin.ip().to_string(), "podIPs": [{"ip": admin.ip().to_string()}],
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}})),
        )
        .await?;
    apply(&client, &ki, true, json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
        "metadata": {"name": "fleet", "namespace": NS},
        "spec": {"mode": "External", "external": {"selector": {"app": "kengine"}, "adminPort": admin.port(), "allowPlainHttp": true}}})).await?;
    apply(&client, &class, false, json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "kengine-bench"},
        "spec": {"controllerName": kengine_gateway::cli::DEFAULT_CONTROLLER_NAME,
            "parametersRef": {"group": "kengine.khulnasoft.com", "kind": "KengineInstance", "name": "fleet", "namespace": NS}}})).await?;
    apply(
        &client,
        &gateway,
        true,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": NS},
        "spec": {"gatewayClassName": "kengine-bench",
            "listeners": [{"name": "http", "protocol": "HTTP", "port": PORT}]}}),
    )
    .await?;

    let log = dir.path().join("controller.log");
    let controller = Controller::start(&plane.kubeconfig, &log)?;
    let gateways = Api::<DynamicObject>::namespaced_with(client.clone(), NS, &gateway);
    until_attached(&gateways, 0, Instant::now())
        .await
        .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    // Let the first passes settle so that their writes are not counted.
    tokio::time::sleep(Duration::from_secs(2)).await;

    const PUSHES: &str = "kengine_gateway_pushes_total";
    const LOADED: &str = "outcome=\"loaded\"";
    let routes_api = Api::<DynamicObject>::namespaced_with(client.clone(), NS, &route);
    let writes = "kengine_gateway_status_writes_total{result=\"written\"}";
    let mut report = Vec::new();
    for (phase, want) in [("create", routes as i64), ("delete", 0)] {
        let before = controller.counter(writes).await;
        let reconciles = controller.counter("kengine_gateway_reconciles_total").await;
        let loads = controller.counter_with(PUSHES, LOADED).await;
        let start = Instant::now();
        let requests = (0..routes).map(|i| {
            let api = routes_api.clone();
            async move {
                let name = format!("r{i:05}");
                if phase == "create" {
                    let object: DynamicObject = serde_json::from_value(json!({
                        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                        "metadata": {"name": name, "namespace": NS},
                        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [format!("h{i}.bench.example")],
                            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]}}))?;
                    api.create(&PostParams::default(), &object).await?;
                } else {
                    api.delete(&name, &DeleteParams::default()).await?;
                }
                anyhow::Ok(())
            }
        });
        let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(requests)
            .buffer_unordered(16)
            .collect()
            .await;
        let sent = start.elapsed();
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            return Err(e.context(format!("{phase} routes")));
        }
        let converged = until_attached(&gateways, want, start).await?;
        // Writes that follow convergence (route status after the Gateway's)
        // belong to the phase too.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let written = controller.counter(writes).await - before;
        let passes = controller.counter("kengine_gateway_reconciles_total").await - reconciles;
        // Configs Kengine loaded for the burst: push pacing (one push in
        // flight per pod, the newest config replacing a queued one).
        let loads = controller.counter_with(PUSHES, LOADED).await - loads;
        let after_last = converged.saturating_sub(sent);
        // Route status on create; the Gateway's (and the instance's) either way.
        println!(
            "{phase:>6} {routes} routes: requests sent in {:.0} ms; attachedRoutes = {want} {:.0} ms after the \
             first request, {:.0} ms after the last (target < {} ms: {}); {written} status writes \
             ({:.2} per route), {passes} reconciles, {loads} Kengine loads",
            super::util::ms(sent),
            super::util::ms(converged),
            super::util::ms(after_last),
            TARGET.as_millis(),
            if converged < TARGET { "met" } else { "missed" },
            written / routes.max(1) as f64,
        );
        report.push(json!({"phase": phase, "routes": routes,
            "sent_ms": super::util::round3(super::util::ms(sent)),
            "converged_ms": super::util::round3(super::util::ms(converged)),
            "after_last_request_ms": super::util::round3(super::util::ms(after_last)),
            "status_writes": written, "reconciles": passes, "kengine_loads": loads}));
    }
    drop(controller);
    drop(plane);
    println!("{}", json!({"scenario": "attached", "results": report}));
    Ok(())
}
