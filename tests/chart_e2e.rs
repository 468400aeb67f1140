//! The chart journey: `helm install` of `charts/kengine-gateway` with its
//! default values into the real control plane, the controller running as
//! the chart's own pods on the node agent (`support::node`), an in-cluster
//! client of the API server through the `kubernetes` Service and kube-proxy,
//! with the token of the chart's ServiceAccount. Then what a user does next:
//! a Gateway of the chart's GatewayClass gets its own managed fleet, traffic
//! flows through it to an echo pod, the leader pod is deleted and the other
//! replica takes over, and `helm uninstall` removes the controller.
//!
//! Needs root (network namespaces) and real helm (`$HELM`, else
//! `.tools/helm/helm`, which `scripts/ensure-helm.sh` installs).

use kengine_gateway_test_support as support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams};
use kube::core::ApiResource;
use serde_json::{Value, json};
use support::cluster::{apply, condition, external_cluster, get, get_opt, resource};
use support::control_plane::ControlPlane;
use support::node::{Node, PodInfo};

const RELEASE: &str = "kengine-gateway";
const RELEASE_NS: &str = "kengine-system";
const NS: &str = "apps";
const GW: &str = "gateway.networking.k8s.io";
const LISTENER_PORT: u16 = 8080;
const LIMIT: Duration = Duration::from_secs(90);

fn gateway() -> ApiResource {
    resource(GW, "v1", "Gateway", "gateways")
}
fn route() -> ApiResource {
    resource(GW, "v1", "HTTPRoute", "httproutes")
}
fn service() -> ApiResource {
    resource("", "v1", "Service", "services")
}
fn deployment() -> ApiResource {
    resource("apps", "v1", "Deployment", "deployments")
}

/// The controller's pods on the node.
fn controllers(node: &Node) -> Vec<PodInfo> {
    node.pods()
        .into_iter()
        .filter(|p| p.namespace == RELEASE_NS && p.workload == RELEASE)
        .collect()
}

async fn lease_holder(client: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), RELEASE_NS);
    let lease = leases.get_opt("kengine-gateway-leader").await.ok()??;
    lease.spec?.holder_identity
}

/// `GET /` with `Host: host` at `addr`: the status and the echo pod that
/// answered.
async fn answer(addr: SocketAddr, host: &str) -> Option<(u16, Option<String>)> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = http
        .get(format!("http://{addr}/"))
        .header("Host", host)
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_str(&resp.text().await.ok()?).unwrap_or(Value::Null);
    Some((status, body["pod"].as_str().map(str::to_string)))
}

async fn cluster_ip(client: &kube::Client, ns: &str, name: &str) -> Option<Ipv4Addr> {
    let svc = get_opt(client, &service(), Some(ns), name).await?;
    svc["spec"]["clusterIP"].as_str()?.parse().ok()
}

/// Fails the test if the API server denied a controller pod anything.
fn assert_no_denials(node: &Node) {
    for pod in controllers(node) {
        let log = node.logs(RELEASE_NS, &pod.name);
        let denied: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("is forbidden: User"))
            .take(5)
            .collect();
        assert!(
            denied.is_empty(),
            "the API server denied controller pod {} (RBAC):\n{}",
            pod.name,
            denied.join("\n")
        );
    }
}

#[test]
fn helm_install_serves_a_gateway() {
    if external_cluster() {
        eprintln!(
            "helm_install_serves_a_gateway: skipped against a real cluster (runs its own node)"
        );
        return;
    }
    support::netns::run(4, journey());
}

async fn journey() {
    kengine_gateway::kengine::admin::install_crypto_provider();
    let plane = ControlPlane::start_for_pods().await;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The chart expects the Gateway API CRDs; it brings its own (crds/).
    plane
        .install_crds(&[repo.join("e2e/gateway-api/v1.6.1/config/crd/experimental")])
        .await;
    let node = Node::start(&plane).await;
    let c = &plane.client().await;
    let home = tempfile::tempdir().unwrap();

    // 1. The install, with the chart's defaults: two controller replicas,
    //    leader election, managed fleets, the `kengine` GatewayClass.
    support::helm::install_chart(&plane.kubeconfig, home.path());
    let pods = controllers(&node);
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(pods.iter().all(|p| p.ready), "{pods:?}");
    let leader = node
        .until("a controller pod holding the Lease", LIMIT, async || {
            let holder = lease_holder(c).await?;
            pods.iter().any(|p| p.name == holder).then_some(holder)
        })
        .await;
    // The leader accepts the class on its first pass, which may come a
    // moment after it took the Lease.
    node.until("the chart's GatewayClass Accepted", LIMIT, async || {
        let class = get(
            c,
            &resource(GW, "v1", "GatewayClass", "gatewayclasses"),
            None,
            "kengine",
        )
        .await;
        (condition(&class["status"]["conditions"], "Accepted")?["status"] == "True").then_some(())
    })
    .await;

    // 2. An echo backend, a Gateway of the chart's class and a route: the
    //    Gateway gets a fleet of its own, which serves through its Service.
    apply(
        c,
        &resource("", "v1", "Namespace", "namespaces"),
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .await;
    support::cluster::echo_backend(c, NS, "web").await;
    apply(
        c,
        &gateway(),
        Some(NS),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": NS},
        "spec": {"gatewayClassName": "kengine",
            "listeners": [{"name": "http", "protocol": "HTTP", "port": LISTENER_PORT}]}}),
    )
    .await;
    let web_route = |host: &str| {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [host],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}})
    };
    apply(c, &route(), Some(NS), web_route("chart.example")).await;
    node.until("the Gateway Programmed", LIMIT, async || {
        let g = get(c, &gateway(), Some(NS), "gw").await;
        (condition(&g["status"]["conditions"], "Programmed")?["status"] == "True").then_some(())
    })
    .await;
    let fleet = node
        .until("the fleet's Service", LIMIT, async || {
            let ip = cluster_ip(c, NS, "kengine-gw").await?;
            Some(SocketAddr::from((ip, LISTENER_PORT)))
        })
        .await;
    node.until("traffic through the fleet", LIMIT, async || {
        (answer(fleet, "chart.example").await? == (200, Some("web".into()))).then_some(())
    })
    .await;
    let fleet_pods: Vec<PodInfo> = node
        .pods()
        .into_iter()
        .filter(|p| p.namespace == NS && p.workload == "kengine-gw")
        .collect();
    assert!(!fleet_pods.is_empty());
    assert!(
        fleet_pods.iter().all(|p| p.workload_kind == "Deployment"),
        "{fleet_pods:?}"
    );

    // 3. The leader pod goes away: the other replica takes the Lease, and
    //    a route change still reaches the fleet.
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(c.clone(), RELEASE_NS)
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    let next = node
        .until(
            "another controller pod holding the Lease",
            LIMIT,
            async || lease_holder(c).await.filter(|h| *h != leader),
        )
        .await;
    apply(c, &route(), Some(NS), web_route("chart2.example")).await;
    node.until("the new leader's route change served", LIMIT, async || {
        (answer(fleet, "chart2.example").await? == (200, Some("web".into()))).then_some(())
    })
    .await;
    assert_eq!(answer(fleet, "chart.example").await.map(|a| a.0), Some(404));
    assert_no_denials(&node);
    eprintln!("leader {leader} deleted, {next} took over");

    // 4. `helm uninstall` removes the controller, its RBAC and its
    //    GatewayClass. (What becomes of the Gateway's fleet depends on
    //    whether the controller saw its class go before it stopped.)
    support::helm::run(
        &plane.kubeconfig,
        home.path(),
        &[
            "uninstall",
            RELEASE,
            "--namespace",
            RELEASE_NS,
            "--wait",
            "--timeout",
            "120s",
        ],
    );
    node.until("the controller pods gone", LIMIT, async || {
        let gone = get_opt(c, &deployment(), Some(RELEASE_NS), RELEASE)
            .await
            .is_none()
            && controllers(&node).is_empty();
        gone.then_some(())
    })
    .await;
    let cluster_role = resource(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
    );
    assert!(get_opt(c, &cluster_role, None, RELEASE).await.is_none());
    let class = resource(GW, "v1", "GatewayClass", "gatewayclasses");
    assert!(get_opt(c, &class, None, "kengine").await.is_none());
    node.stop().await;
    drop(plane);
}
