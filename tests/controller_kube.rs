//! The controller against the real control plane, where the emulator could
//! not show it: RBAC denials (the chart's roles minus one grant), the API
//! server's length limits on what we write, a kube-apiserver restart and
//! watches that end in `410 Gone` after an etcd compaction. Each test runs
//! in its own network namespace (see `tests/controller_e2e.rs`).

use kengine_gateway_test_support as support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::{
    Cluster, apply, cluster, cluster_with_rbac, condition, eventually, external_cluster, get,
    local_address, resource,
};
use support::kubelet::FakePod;

const GW: &str = "gateway.networking.k8s.io";

fn gateways() -> kube::core::ApiResource {
    resource(GW, "v1", "Gateway", "gateways")
}

fn routes() -> kube::core::ApiResource {
    resource(GW, "v1", "HTTPRoute", "httproutes")
}

/// A fleet of the pods labelled `app: kengine` in `ns` (External, plain
/// HTTP admin on 2019), its GatewayClass `ns`, and Gateway `gw` with an
/// HTTP listener on 18095.
async fn fleet_and_gateway(cluster: &Cluster, ns: &str) {
    let c = &cluster.client;
    apply(c, &resource("kengine.khulnasoft.com", "v1alpha1", "KengineInstance", "kengineinstances"), Some(ns),
        json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
            "metadata": {"name": "fleet", "namespace": ns},
            "spec": {"mode": "External", "external": {"selector": {"app": "kengine"}, "adminPort": 2019, "allowPlainHttp": true}}}))
    .await;
    apply(c, &resource(GW, "v1", "GatewayClass", "gatewayclasses"), None,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": ns},
            "spec": {"controllerName": "kengine.khulnasoft.com/gateway-controller",
                "parametersRef": {"group": "kengine.khulnasoft.com", "kind": "KengineInstance", "name": "fleet", "namespace": ns}}}))
    .await;
    apply(c, &gateways(), Some(ns), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": ns},
        "spec": {"gatewayClassName": ns, "listeners": [{"name": "http", "protocol": "HTTP", "port": 18095}]}}))
    .await;
}

fn route_to(ns: &str, name: &str, host: &str, backend: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [host],
            "rules": [{"backendRefs": [{"name": backend, "port": 8080}]}]}})
}

/// GET `http://{addr}/` with `Host: host` on a fresh connection: the
/// status and the echo pod that answered.
async fn get_host(addr: SocketAddr, host: &str) -> Option<(u16, Option<String>)> {
    let resp = support::http()
        .get(format!("http://{addr}/"))
        .header("Host", host)
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_str(&resp.text().await.ok()?).unwrap_or(Value::Null);
    Some((status, body["pod"].as_str().map(str::to_string)))
}

fn log_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kengine-kube-")
        .tempdir()
        .unwrap()
}

/// The chart's ClusterRole without its `gateways/status` grant: the
/// controller's Gateway status writes get the API server's 403, which the
/// controller reports (log and metric) and the Gateway shows (no status of
/// ours), while what is still granted works.
#[test]
fn a_missing_grant_fails_with_the_real_403() {
    support::cluster::run(3, missing_grant());
}

async fn missing_grant() {
    if external_cluster() {
        eprintln!("skipped against an existing cluster: it changes the chart's RBAC");
        return;
    }
    const NS: &str = "rbac";
    let cluster = cluster_with_rbac(|docs| {
        let role = docs
            .iter_mut()
            .find(|d| d["kind"] == "ClusterRole")
            .unwrap();
        let rules = role["rules"].as_array_mut().unwrap();
        let mut removed = 0;
        for rule in rules.iter_mut() {
            let resources = rule["resources"].as_array_mut().unwrap();
            let before = resources.len();
            resources.retain(|r| r != "gateways/status");
            removed += before - resources.len();
        }
        assert_eq!(removed, 1, "the chart grants gateways/status once");
        rules.retain(|r| !r["resources"].as_array().unwrap().is_empty());
    })
    .await;
    let c = &cluster.client;
    cluster.namespace(NS).await;
    fleet_and_gateway(&cluster, NS).await;
    let dir = log_dir();
    let controller = cluster.controller("rbac", dir.path(), &[]);

    // Still granted: GatewayClass status.
    let classes = resource(GW, "v1", "GatewayClass", "gatewayclasses");
    eventually(
        "GatewayClass Accepted",
        Duration::from_secs(60),
        async || {
            let class = get(c, &classes, None, NS).await;
            (condition(&class["status"]["conditions"], "Accepted")?["status"] == "True")
                .then_some(())
        },
    )
    .await;
    // The API server's own words.
    let denied = format!(
        r#"gateways.gateway.networking.k8s.io "gw" is forbidden: User "system:serviceaccount:{}:{}" cannot patch resource "gateways/status""#,
        support::cluster::CHART_NAMESPACE,
        support::cluster::CHART_RELEASE
    );
    eventually(
        "the controller reports the 403",
        Duration::from_secs(30),
        async || {
            let log = controller.log_text();
            let line = log
                .lines()
                .find(|l| l.contains("status write failed") && l.contains(&denied))?;
            assert!(line.contains("403"), "{line}");
            Some(())
        },
    )
    .await;
    // Counted when the pass ends, which may be a moment after the log line.
    eventually(
        "the status write failure counted",
        Duration::from_secs(30),
        async || {
            let failed = controller
                .metric("kengine_gateway_status_writes_total{result=\"failed\"}")
                .await?;
            (failed >= 1.0).then_some(())
        },
    )
    .await;
    // The Gateway keeps the CRD's defaults: nothing of ours was written.
    let gw = get(c, &gateways(), Some(NS), "gw").await;
    let accepted = condition(&gw["status"]["conditions"], "Accepted").unwrap();
    assert_eq!(accepted["reason"], "Pending", "{gw}");
}

/// A Kengine whose `/load` answers with a huge error body (70,000
/// characters, two bytes each in UTF-8): the Gateway still gets its
/// Programmed=False status (a condition message is at most 32,768
/// characters in the CRD) and the Warning Event is still published (an
/// Event's note is at most 1,024 bytes), both cut.
#[test]
fn a_huge_push_error_cannot_break_status_or_events() {
    support::cluster::run(3, huge_push_error());
}

async fn huge_push_error() {
    const NS: &str = "huge";
    const POD_IP: &str = "10.244.0.30";
    let cluster = cluster().await;
    let c = &cluster.client;
    cluster.namespace(NS).await;
    cluster.echo_service(NS, "web", 8080).await;
    local_address(POD_IP);
    let admin: SocketAddr = format!("{POD_IP}:2019").parse().unwrap();
    let rejecting = rejecting_admin(admin, "é".repeat(70_000)).await;
    let _pod =
        FakePod::register(c.clone(), NS, "kengine-0", admin, json!({"app": "kengine"})).await;
    fleet_and_gateway(&cluster, NS).await;
    apply(
        c,
        &routes(),
        Some(NS),
        route_to(NS, "web", "www.example.com", "web"),
    )
    .await;
    let dir = log_dir();
    let controller = cluster.controller("huge", dir.path(), &[]);

    let message = eventually(
        "Programmed=False with the pod's error",
        Duration::from_secs(60),
        async || {
            let gw = get(c, &gateways(), Some(NS), "gw").await;
            let p = condition(&gw["status"]["conditions"], "Programmed")?;
            (p["status"] == "False").then(|| p["message"].as_str().unwrap().to_string())
        },
    )
    .await;
    assert!(rejecting.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert!(message.contains("éééé"), "{message}");
    assert!(message.chars().count() <= 32_768, "{}", message.len());
    let events = resource("events.k8s.io", "v1", "Event", "events");
    let note = eventually(
        "a Warning Event on the Gateway",
        Duration::from_secs(30),
        async || {
            let list = support::cluster::api(c, &events, Some(NS))
                .list(&Default::default())
                .await
                .unwrap();
            list.items.into_iter().find_map(|e| {
                let e = serde_json::to_value(e).unwrap();
                (e["regarding"]["name"] == "gw" && e["type"] == "Warning")
                    .then(|| e["note"].as_str().unwrap_or_default().to_string())
            })
        },
    )
    .await;
    assert!(note.contains("éééé"), "{note}");
    assert!(note.len() <= 1024, "{} bytes", note.len());
    let log = controller.log_text();
    assert!(
        !log.contains("status write failed") && !log.contains("publishing event"),
        "a write failed: {}",
        log.lines()
            .filter(|l| l.contains("failed") || l.contains("publishing"))
            .map(|l| l.chars().take(400).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// An admin API that answers every request with `400` and `body`; counts
/// the requests.
async fn rejecting_admin(
    addr: SocketAddr,
    body: String,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let body = body.clone();
            tokio::spawn(async move {
                // Read the request head and its body, then answer.
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let length = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= head_end + 4 + length {
                            break;
                        }
                    }
                }
                let answer = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    count
}

/// kube-apiserver restarts and etcd is compacted under a running
/// controller: its watches end (the restarted API server's watch cache, and
/// etcd after the compaction, no longer hold their resourceVersions: `410
/// Gone`), it lists again, and every change made across the outages is
/// served and reflected in status.
#[test]
fn the_controller_survives_an_apiserver_restart_and_compaction() {
    support::cluster::run(4, survives_restart_and_compaction());
}

async fn survives_restart_and_compaction() {
    if external_cluster() {
        eprintln!("skipped against an existing cluster: it restarts the API server");
        return;
    }
    const NS: &str = "restart";
    const POD_IP: &str = "10.244.0.40";
    let mut cluster = cluster().await;
    let c = cluster.client.clone();
    cluster.namespace(NS).await;
    cluster.echo_service(NS, "v1", 8080).await;
    cluster.echo_service(NS, "v2", 8080).await;
    local_address(POD_IP);
    let admin: SocketAddr = format!("{POD_IP}:2019").parse().unwrap();
    let gw_addr: SocketAddr = format!("{POD_IP}:18095").parse().unwrap();
    let _pod = FakePod::start(c.clone(), NS, "kengine-0", admin, json!({"app": "kengine"})).await;
    fleet_and_gateway(&cluster, NS).await;
    apply(
        &c,
        &routes(),
        Some(NS),
        route_to(NS, "a", "a.example.com", "v1"),
    )
    .await;
    let dir = log_dir();
    let controller = cluster.controller("restart", dir.path(), &["--resync-seconds=5"]);
    let serves = async |host: &str, pod: &str| {
        let want = Some((200, Some(pod.to_string())));
        eventually(
            &format!("{host} served by {pod}"),
            Duration::from_secs(60),
            async || (get_host(gw_addr, host).await == want).then_some(()),
        )
        .await
    };
    serves("a.example.com", "v1").await;
    let attached = async |n: i64| {
        eventually(
            &format!("{n} routes attached"),
            Duration::from_secs(60),
            async || {
                let g = get(&c, &gateways(), Some(NS), "gw").await;
                (g["status"]["listeners"][0]["attachedRoutes"] == n).then_some(())
            },
        )
        .await
    };
    let accepted = async |name: &str| {
        eventually(
            &format!("route {name} Accepted"),
            Duration::from_secs(60),
            async || {
                let r = get(&c, &routes(), Some(NS), name).await;
                let parent = &r["status"]["parents"][0];
                (condition(&parent["conditions"], "Accepted")?["status"] == "True").then_some(())
            },
        )
        .await
    };
    attached(1).await;

    // 1. The API server goes away: Kengine keeps serving, the controller
    //    keeps running. A change made as soon as it is back is picked up.
    let plane = cluster.plane.as_mut().unwrap();
    plane.stop("kube-apiserver");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        get_host(gw_addr, "a.example.com").await,
        Some((200, Some("v1".into()))),
        "Kengine serves while the API server is down"
    );
    plane.start_again("kube-apiserver").await;
    apply(
        &c,
        &routes(),
        Some(NS),
        route_to(NS, "a", "a.example.com", "v2"),
    )
    .await;
    apply(
        &c,
        &routes(),
        Some(NS),
        route_to(NS, "b", "b.example.com", "v1"),
    )
    .await;
    serves("a.example.com", "v2").await;
    serves("b.example.com", "v1").await;
    attached(2).await;
    accepted("b").await;

    // 2. Changes, then etcd is compacted to its current revision and the
    //    API server restarts without its watch cache: every watch resumes
    //    from a revision etcd no longer has. More changes as soon as it is
    //    back.
    let restarted = too_old(&controller.log_text());
    apply(
        &c,
        &routes(),
        Some(NS),
        route_to(NS, "c", "c.example.com", "v2"),
    )
    .await;
    support::cluster::api(&c, &routes(), Some(NS))
        .delete("b", &Default::default())
        .await
        .unwrap();
    let plane = cluster.plane.as_mut().unwrap();
    plane.stop("kube-apiserver");
    // Compacted while no API server runs, past revisions no client saw:
    // every watch the controller resumes is too old, whatever its type.
    let revision = plane.compact_etcd().await;
    eprintln!("etcd compacted at revision {revision}");
    plane
        .start_again_with("kube-apiserver", &["--watch-cache=false"])
        .await;
    apply(
        &c,
        &routes(),
        Some(NS),
        route_to(NS, "d", "d.example.com", "v1"),
    )
    .await;
    serves("c.example.com", "v2").await;
    serves("d.example.com", "v1").await;
    eventually("b is gone: 404", Duration::from_secs(60), async || {
        (get_host(gw_addr, "b.example.com").await?.0 == 404).then_some(())
    })
    .await;
    attached(3).await;
    accepted("c").await;
    accepted("d").await;
    let compacted = too_old(&controller.log_text());
    eprintln!(
        "watches ended in 410 Gone: {} after the restart, {} after the compaction, e.g. {:?}",
        restarted.len(),
        compacted.len() - restarted.len(),
        compacted.last()
    );
    assert!(
        compacted.len() > restarted.len(),
        "no watch ended in 410 Gone after the compaction: the test did not test it"
    );
    // A restarted API server may deny for a moment (its RBAC authorizer's
    // cache is still filling while it already answers): the controller
    // retries through it, as the changes above show.
    let denied = controller
        .log_text()
        .lines()
        .filter(|l| l.contains("watch error") && l.contains("is forbidden: User"))
        .count();
    eprintln!("watches denied (403) around the restarts: {denied}");
    assert_eq!(
        controller.metric("kengine_gateway_leader").await,
        Some(1.0),
        "the controller still leads"
    );
}

/// The controller's log lines of watches that ended in `410 Gone`.
fn too_old(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("watch error") && l.contains("too old"))
        .map(|l| l.chars().take(300).collect())
        .collect()
}
