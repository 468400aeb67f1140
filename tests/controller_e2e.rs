//! End to end: the real `kengine-gateway controller` binary, with the
//! chart's RBAC, against a real control plane (`support::control_plane`;
//! or the cluster `KUBECONFIG` points at when
//! `KENGINE_GATEWAY_E2E_CLUSTER=1`), with real Caddy 2.8.4 processes as the
//! Kengine pods of an External KengineInstance and real HTTP traffic. Each
//! test runs in its own network namespace, where the Services' cluster IPs
//! (echo backends listen there) and the Pods' IPs (Caddy's admin API and
//! listeners) are local addresses.

use kengine_gateway_test_support as support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::{Value, json};
use support::cluster::{api, apply, cluster, condition, eventually, get, local_address, resource};
use support::kubelet::FakePod;

const NS: &str = "e2e";
const GW: &str = "gateway.networking.k8s.io";
/// The Kengine pod's IP (the test's namespace makes it local).
const POD_IP: &str = "10.244.0.10";

#[test]
fn controller_end_to_end() {
    support::cluster::run(4, end_to_end());
}

async fn end_to_end() {
    let cluster = cluster().await;
    let c = &cluster.client;
    let dir = log_dir("kengine-e2e-");
    let Kinds {
        ns,
        svc,
        secret,
        ki,
        class,
        gateway,
        route,
    } = kinds();
    cluster.namespace(NS).await;
    let lease = resource("coordination.k8s.io", "v1", "Lease", "leases");

    // Backends and one Kengine pod.
    let v1 = cluster.echo_service(NS, "v1", 8080).await;
    let v2 = cluster.echo_service(NS, "v2", 8080).await;
    // The Service in front of the fleet: Gateways report its address.
    apply(
        c,
        &svc,
        Some(NS),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "edge", "namespace": NS},
        "spec": {"selector": {"app": "kengine"}, "ports": [{"port": 18095}]}}),
    )
    .await;
    let edge_ip = get(c, &svc, Some(NS), "edge").await["spec"]["clusterIP"].clone();
    let admin: SocketAddr = format!("{POD_IP}:2019").parse().unwrap();
    local_address(POD_IP);
    let mut pod =
        FakePod::start(c.clone(), NS, "kengine-0", admin, json!({"app": "kengine"})).await;
    apply(c, &ki, Some(NS), json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
        "metadata": {"name": "fleet", "namespace": NS},
        "spec": {"mode": "External", "external": {"selector": {"app": "kengine"}, "adminPort": 2019, "allowPlainHttp": true, "service": "edge"}}}))
    .await;
    apply(c, &class, None, json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "kengine-e2e"},
        "spec": {"controllerName": "kengine.khulnasoft.com/gateway-controller",
                 "parametersRef": {"group": "kengine.khulnasoft.com", "kind": "KengineInstance", "name": "fleet", "namespace": NS}}}))
    .await;
    apply(c, &gateway, Some(NS), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "gw", "namespace": NS},
        "spec": {"gatewayClassName": "kengine-e2e", "listeners": [{"name": "http", "protocol": "HTTP", "port": 18095}]}}))
    .await;
    let route_to = |weights: (u16, u16)| {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web", "namespace": NS},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
                {"name": "v1", "port": v1.port(), "weight": weights.0},
                {"name": "v2", "port": v2.port(), "weight": weights.1}]}]}})
    };
    apply(c, &route, Some(NS), route_to((1, 0))).await;

    // Two replicas: one leads.
    let a = cluster.controller("a", &dir, &[]);
    let b = cluster.controller("b", &dir, &[]);
    let programmed = async |c: &kube::Client| {
        let g = get(c, &gateway, Some(NS), "gw").await;
        let ok = condition(&g["status"]["conditions"], "Programmed")
            .is_some_and(|p| p["status"] == "True");
        ok.then_some(g)
    };
    let g = eventually("Gateway Programmed", Duration::from_secs(60), async || {
        programmed(c).await
    })
    .await;
    assert_eq!(
        g["status"]["addresses"][0]["value"], edge_ip,
        "the fleet Service's ClusterIP"
    );
    // A LoadBalancer ingress address takes over (the API server allows
    // one on a Service of type LoadBalancer only).
    apply(c, &svc, Some(NS), json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "edge", "namespace": NS},
        "spec": {"type": "LoadBalancer", "selector": {"app": "kengine"}, "ports": [{"port": 18095}]}}))
    .await;
    let lb = json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}});
    api(c, &svc, Some(NS))
        .patch_status("edge", &PatchParams::default(), &Patch::Merge(lb))
        .await
        .unwrap();
    eventually(
        "the LoadBalancer address in Gateway status",
        Duration::from_secs(20),
        async || {
            let g = get(c, &gateway, Some(NS), "gw").await;
            (g["status"]["addresses"][0]["value"] == "203.0.113.9").then_some(())
        },
    )
    .await;
    let listener = &g["status"]["listeners"][0];
    assert_eq!(listener["attachedRoutes"], 1);
    // A grant the chart lacks shows here by name, not as a missing status.
    a.assert_no_denials();
    b.assert_no_denials();
    let r = get(c, &route, Some(NS), "web").await;
    let parent = &r["status"]["parents"][0];
    assert_eq!(
        parent["controllerName"],
        "kengine.khulnasoft.com/gateway-controller"
    );
    assert_eq!(
        condition(&parent["conditions"], "Accepted").unwrap()["status"],
        "True"
    );
    // Status is what `render --output status` computes for the same objects,
    // but for Programmed (which follows pushes) and the addresses.
    let rendered = render_status(c, &[&class, &gateway, &route, &svc, &ki, &ns]).await;
    let conds = |v: &Value| -> Vec<(String, String, String)> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["type"] != "Programmed")
            .map(|c| {
                (
                    c["type"].to_string(),
                    c["status"].to_string(),
                    c["reason"].to_string(),
                )
            })
            .collect()
    };
    let want_route =
        &rendered.http_routes[&kengine_gateway::snapshot::ObjectRef::new(NS, "web")][0];
    assert_eq!(
        conds(&parent["conditions"]),
        conds(&serde_json::to_value(&want_route.conditions).unwrap())
    );
    let want_gw = serde_json::to_value(
        &rendered.gateways[&kengine_gateway::snapshot::ObjectRef::new(NS, "gw")],
    )
    .unwrap();
    assert_eq!(
        conds(&g["status"]["conditions"]),
        conds(&want_gw["conditions"])
    );
    assert_eq!(
        conds(&listener["conditions"]),
        conds(&want_gw["listeners"][0]["conditions"])
    );
    assert_eq!(
        listener["attachedRoutes"],
        want_gw["listeners"][0]["attachedRoutes"]
    );
    let gw_addr: SocketAddr = format!("{POD_IP}:18095").parse().unwrap();
    assert_eq!(get_pod(gw_addr).await, (200, Some("v1".into())));
    let leaders = eventually("exactly one leader", Duration::from_secs(30), async || {
        let (la, lb) = (
            a.metric("kengine_gateway_leader").await?,
            b.metric("kengine_gateway_leader").await?,
        );
        (la + lb == 1.0).then_some((la, lb))
    })
    .await;
    let (leader, follower) = if leaders.0 == 1.0 { (&a, &b) } else { (&b, &a) };
    // The real Lease names the leader.
    let holder = async || {
        let lease = get(
            c,
            &lease,
            Some(&cluster.lease_namespace),
            "kengine-gateway-leader",
        )
        .await;
        lease["spec"]["holderIdentity"].as_str().map(str::to_string)
    };
    let leader_id = if leaders.0 == 1.0 { "a" } else { "b" };
    assert_eq!(holder().await.as_deref(), Some(leader_id));
    // The follower never led: it never wrote.
    let follower_writes = async || {
        follower
            .metric("kengine_gateway_status_writes_total{result=\"written\"}")
            .await
            .unwrap_or(0.0)
    };
    assert_eq!(follower_writes().await, 0.0, "the follower wrote status");

    // The KengineInstance reports its pod and the config it loaded.
    let fleet = eventually(
        "KengineInstance Ready",
        Duration::from_secs(30),
        async || {
            let i = get(c, &ki, Some(NS), "fleet").await;
            (condition(&i["status"]["conditions"], "Ready")?["status"] == "True").then_some(i)
        },
    )
    .await;
    assert_eq!(fleet["status"]["readyReplicas"], 1);
    assert_eq!(
        condition(&fleet["status"]["conditions"], "PlainHttpAdmin").unwrap()["status"],
        "True"
    );
    let first_hash = fleet["status"]["pods"][0]["configHash"]
        .as_str()
        .unwrap()
        .to_string();

    // Changes under traffic: weights flip while requests flow; no errors.
    let bad = Arc::new(AtomicU64::new(0));
    let resets = Arc::new(AtomicU64::new(0));
    let seen_v2 = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (bad, resets, seen_v2, stop) =
            (bad.clone(), resets.clone(), seen_v2.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match get_pod(gw_addr).await {
                    (200, Some(p)) if p == "v2" => {
                        seen_v2.fetch_add(1, Ordering::Relaxed);
                    }
                    (200, _) => {}
                    // Kengine binds a new SO_REUSEPORT socket on every reload and
                    // closes the old one; connections still queued on the old
                    // socket are reset by the kernel. Counted, not hidden.
                    (0, Some(e)) if e.contains("reset by peer") => {
                        resets.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("bad answer during changes: {other:?}");
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
            }
            n
        })
    };
    for i in 0..10u16 {
        apply(c, &route, Some(NS), route_to((1 + i % 2, 1))).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(follower_writes().await, 0.0, "only the leader writes");
    let sent = load.await.unwrap();
    assert!(sent > 20, "only {sent} requests during the changes");
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "non-2xx answers while routes changed ({sent} sent)"
    );
    let resets = resets.load(Ordering::Relaxed);
    eprintln!(
        "{sent} requests during 10 route changes: {resets} connection resets from Kengine's listener swap"
    );
    assert!(resets * 50 <= sent, "{resets} of {sent} connections reset");
    assert!(
        seen_v2.load(Ordering::Relaxed) > 0,
        "the new weights took effect"
    );

    // A burst of 100 new routes coalesces into a handful of pushes.
    let pushes = async || {
        leader
            .metric("kengine_gateway_pushes_total")
            .await
            .unwrap_or(0.0)
    };
    let before_burst = pushes().await;
    for i in 0..100 {
        let mut r = route_to((1, 0));
        r["metadata"]["name"] = json!(format!("burst-{i}"));
        r["spec"]["hostnames"] = json!([format!("burst-{i}.example.com")]);
        apply(c, &route, Some(NS), r).await;
    }
    eventually(
        "the whole burst attached",
        Duration::from_secs(30),
        async || {
            let g = get(c, &gateway, Some(NS), "gw").await;
            (g["status"]["listeners"][0]["attachedRoutes"] == 101).then_some(())
        },
    )
    .await;
    let burst_pushes = pushes().await - before_burst;
    eprintln!("100 routes created: {burst_pushes} pushes");
    assert!(
        burst_pushes <= 10.0,
        "{burst_pushes} pushes for a burst of 100 routes"
    );

    // A BackendTLSPolicy change re-triggers reconciliation (the seed's bug).
    let before = leader
        .metric("kengine_gateway_reconciles_total")
        .await
        .unwrap();
    let btlsp = resource(GW, "v1", "BackendTLSPolicy", "backendtlspolicies");
    apply(c, &btlsp, Some(NS), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy", "metadata": {"name": "tls", "namespace": NS},
        "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "v1"}],
                 "validation": {"hostname": "v1.example.com", "wellKnownCACertificates": "System"}}}))
    .await;
    eventually(
        "a reconcile after the BackendTLSPolicy change",
        Duration::from_secs(20),
        async || (leader.metric("kengine_gateway_reconciles_total").await? > before).then_some(()),
    )
    .await;

    // A Secret change reaches the pods: an HTTPS listener, then a new certificate.
    let cert = |host: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![host.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "cert", "namespace": NS},
               "stringData": {"tls.crt": cert.pem(), "tls.key": key.serialize_pem()}})
    };
    apply(c, &secret, Some(NS), cert("secure.example.com")).await;
    apply(c, &gateway, Some(NS), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "gw", "namespace": NS},
        "spec": {"gatewayClassName": "kengine-e2e", "listeners": [
            {"name": "http", "protocol": "HTTP", "port": 18095},
            {"name": "https", "protocol": "HTTPS", "port": 18096, "hostname": "secure.example.com", "tls": {"certificateRefs": [{"name": "cert"}]}}]}}))
    .await;
    let hash_after = |previous: String| {
        let c = c.clone();
        let ki = ki.clone();
        async move || {
            let i = get(&c, &ki, Some(NS), "fleet").await;
            let h = i["status"]["pods"][0]["configHash"].as_str()?.to_string();
            (h != previous).then_some(h)
        }
    };
    let with_https = eventually(
        "config with the HTTPS listener",
        Duration::from_secs(20),
        hash_after(first_hash),
    )
    .await;
    apply(c, &secret, Some(NS), cert("secure.example.com")).await;
    eventually(
        "config with the new certificate",
        Duration::from_secs(20),
        hash_after(with_https),
    )
    .await;

    // The Kengine pod dies: not Programmed; it comes back empty: pushed again.
    pod.kill().await;
    eventually(
        "Programmed=False while the pod is down",
        Duration::from_secs(20),
        async || {
            let g = get(c, &gateway, Some(NS), "gw").await;
            (condition(&g["status"]["conditions"], "Programmed")?["status"] == "False")
                .then_some(())
        },
    )
    .await;
    pod.restart().await;
    eventually(
        "Programmed again after the restart",
        Duration::from_secs(30),
        async || programmed(c).await,
    )
    .await;
    eventually(
        "traffic after the restart",
        Duration::from_secs(20),
        async || (get_pod(gw_addr).await.0 == 200).then_some(()),
    )
    .await;

    // Failover: the leader stops; the other replica takes over without
    // making Kengine reload an unchanged config.
    // Kengine logs "server running" for each server of a config it really
    // loads; an identical config is answered "config is unchanged".
    let reloads = |log: &str| log.matches("\"msg\":\"server running\"").count();
    let reloads_before = reloads(&pod.log_text());
    let (mut leader, follower) = if leaders.0 == 1.0 { (a, b) } else { (b, a) };
    leader.stop();
    eventually(
        "the other replica leads",
        Duration::from_secs(40),
        async || (follower.metric("kengine_gateway_leader").await? == 1.0).then_some(()),
    )
    .await;
    let follower_id = if leader_id == "a" { "b" } else { "a" };
    assert_eq!(
        holder().await.as_deref(),
        Some(follower_id),
        "the Lease changed hands"
    );
    eventually(
        "the new leader reconciled",
        Duration::from_secs(20),
        async || (follower.metric("kengine_gateway_reconciles_total").await? >= 1.0).then_some(()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = pod.log_text();
    let tail: Vec<&str> = log.lines().rev().take(12).collect();
    assert_eq!(
        reloads(&log),
        reloads_before,
        "a new leader must not make Kengine reload the same config: {tail:#?}"
    );

    // Deleting the route: 404.
    api(c, &route, Some(NS))
        .delete("web", &Default::default())
        .await
        .unwrap();
    eventually(
        "404 after the route is deleted",
        Duration::from_secs(20),
        async || (get_pod(gw_addr).await.0 == 404).then_some(()),
    )
    .await;
    leader.assert_no_denials();
    follower.assert_no_denials();
    drop(follower);
}

/// The API resources the tests write.
struct Kinds {
    ns: ApiResource,
    svc: ApiResource,
    secret: ApiResource,
    ki: ApiResource,
    class: ApiResource,
    gateway: ApiResource,
    route: ApiResource,
}

fn kinds() -> Kinds {
    Kinds {
        ns: resource("", "v1", "Namespace", "namespaces"),
        svc: resource("", "v1", "Service", "services"),
        secret: resource("", "v1", "Secret", "secrets"),
        ki: resource(
            "kengine.khulnasoft.com",
            "v1alpha1",
            "KengineInstance",
            "kengineinstances",
        ),
        class: resource(GW, "v1", "GatewayClass", "gatewayclasses"),
        gateway: resource(GW, "v1", "Gateway", "gateways"),
        route: resource(GW, "v1", "HTTPRoute", "httproutes"),
    }
}

/// Controller logs stay here for a failed run to be read.
fn log_dir(prefix: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap()
        .keep();
    eprintln!("controller logs in {}", dir.display());
    dir
}

/// A fleet whose Kengine hangs holds its push, and with it the pass, for
/// up to a minute. Other fleets' pushes of the same pass go through
/// meanwhile, other Gateways' status keeps up (the status lane), changes
/// that came later are pushed once the hung push gives up, and only the
/// hung fleet's Gateway reports it.
#[test]
fn other_fleets_keep_up_while_one_hangs() {
    support::cluster::run(4, keep_up_while_one_hangs());
}

async fn keep_up_while_one_hangs() {
    const NS: &str = "e2e-lane";
    let cluster = cluster().await;
    let c = &cluster.client;
    let dir = log_dir("kengine-e2e-lane-");
    let Kinds {
        ki,
        class,
        gateway,
        route,
        ..
    } = kinds();
    cluster.namespace(NS).await;
    let backend = cluster.echo_service(NS, "backend", 8080).await;
    // Fleets "a" and "b", one pod each, a Gateway each.
    let mut pods = Vec::new();
    for (fleet, ip, port) in [("a", "10.244.0.21", 18096), ("b", "10.244.0.22", 18097)] {
        local_address(ip);
        let admin: SocketAddr = format!("{ip}:2019").parse().unwrap();
        let labels = json!({"app": format!("lane-{fleet}")});
        pods.push(
            FakePod::start(
                c.clone(),
                NS,
                &format!("kengine-{fleet}"),
                admin,
                labels.clone(),
            )
            .await,
        );
        apply(c, &ki, Some(NS), json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
            "metadata": {"name": fleet, "namespace": NS},
            "spec": {"mode": "External", "external": {"selector": labels, "adminPort": 2019, "allowPlainHttp": true}}}))
        .await;
        apply(c, &class, None, json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": format!("lane-{fleet}")},
            "spec": {"controllerName": "kengine.khulnasoft.com/gateway-controller",
                     "parametersRef": {"group": "kengine.khulnasoft.com", "kind": "KengineInstance", "name": fleet, "namespace": NS}}}))
        .await;
        apply(c, &gateway, Some(NS), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": fleet, "namespace": NS},
            "spec": {"gatewayClassName": format!("lane-{fleet}"), "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]}}))
        .await;
    }
    let route_to = |name: &str, gw: &str, host: &str| {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name, "namespace": NS},
            "spec": {"parentRefs": [{"name": gw}], "hostnames": [host],
                     "rules": [{"backendRefs": [{"name": "backend", "port": backend.port()}]}]}})
    };
    apply(c, &route, Some(NS), route_to("b1", "b", "b1.example.com")).await;
    let controller = cluster.controller("lane", &dir, &[]);
    let gateway_status = async |name: &str| {
        let g = get(c, &gateway, Some(NS), name).await;
        let programmed =
            condition(&g["status"]["conditions"], "Programmed").map(|p| p["status"].clone());
        (
            programmed,
            g["status"]["listeners"][0]["attachedRoutes"].as_i64(),
        )
    };
    for fleet in ["a", "b"] {
        eventually(
            "both Gateways Programmed",
            Duration::from_secs(60),
            async || (gateway_status(fleet).await.0 == Some(json!("True"))).then_some(()),
        )
        .await;
    }

    // Fleet a hangs. A route on both Gateways starts a pass whose push to
    // a hangs; b (pushed after a before) gets it all the same.
    let hang = pods[0].hang().await;
    let mut both = route_to("both", "a", "both.example.com");
    both["spec"]["parentRefs"] = json!([{"name": "a"}, {"name": "b"}]);
    apply(c, &route, Some(NS), both).await;
    eventually(
        "the push to the hung pod",
        Duration::from_secs(30),
        async || (hang.accepted.load(Ordering::Relaxed) > 0).then_some(()),
    )
    .await;
    let get = async |host: &str| {
        reqwest::Client::new()
            .get("http://10.244.0.22:18097/")
            .header("Host", host)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
    };
    // Long before the hung push (a minute) gives up.
    eventually(
        "b serves the route while a's push hangs",
        Duration::from_secs(20),
        async || (get("both.example.com").await == Some(200)).then_some(()),
    )
    .await;
    // A new route on b: counted at once, pushed by the next pass.
    apply(c, &route, Some(NS), route_to("b2", "b", "b2.example.com")).await;
    eventually(
        "Gateway b counts its new route while a's push hangs",
        Duration::from_secs(20),
        async || (gateway_status("b").await == (Some(json!("True")), Some(3))).then_some(()),
    )
    .await;

    // a's Kengine goes away: its push fails, b2 is pushed, and only a's
    // Gateway says so.
    drop(hang);
    eventually("a not Programmed", Duration::from_secs(60), async || {
        (gateway_status("a").await.0 == Some(json!("False"))).then_some(())
    })
    .await;
    eventually("b2 served", Duration::from_secs(30), async || {
        (get("b2.example.com").await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(gateway_status("b").await, (Some(json!("True")), Some(3)));
    controller.assert_no_denials();
}

/// Translates what the API holds, as `render` would.
async fn render_status(
    c: &kube::Client,
    kinds: &[&ApiResource],
) -> kengine_gateway::translate::Status {
    let mut objects = Vec::new();
    for ar in kinds {
        for o in Api::<DynamicObject>::all_with(c.clone(), ar)
            .list(&Default::default())
            .await
            .unwrap()
        {
            let mut v = serde_json::to_value(o).unwrap();
            v["apiVersion"] = ar.api_version.clone().into();
            v["kind"] = ar.kind.clone().into();
            if let Some(object) = kengine_gateway::providers::files::object_from_value(v).unwrap() {
                objects.push(object);
            }
        }
    }
    let snapshot = kengine_gateway::snapshot::Snapshot::from_objects(objects);
    kengine_gateway::translate::translate(&snapshot, &Default::default()).status
}

/// One request on a fresh connection: a reload closes idle keep-alive
/// connections, and a request racing that close is a client-side retry
/// matter, not an answer from the gateway.
async fn get_pod(gateway: SocketAddr) -> (u16, Option<String>) {
    kengine_gateway::kengine::admin::install_crypto_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    match client
        .get(format!("http://{gateway}/"))
        .header("Host", "www.example.com")
        .send()
        .await
    {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body: Value =
                serde_json::from_str(&resp.text().await.unwrap_or_default()).unwrap_or(Value::Null);
            (status, body["pod"].as_str().map(str::to_string))
        }
        Err(e) => {
            let mut chain = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                chain.push_str(&format!(": {s}"));
                source = s.source();
            }
            (0, Some(chain))
        }
    }
}

/// The oldest Gateway API release we support: v1.1.0 CRDs serve
/// ReferenceGrant as v1beta1 only and have no BackendTLSPolicy.
#[test]
fn discovery_handles_v1_1_crds() {
    support::netns::run(2, discovers_v1_1_crds());
}

async fn discovers_v1_1_crds() {
    let plane = support::control_plane::ControlPlane::start().await;
    plane
        .install_crds(&[PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/e2e/gateway-api/v1.1.0/config/crd/standard"
        ))])
        .await;
    let client = plane.client().await;
    let served = kengine_gateway::providers::kubernetes::discover(&client, true)
        .await
        .unwrap();
    let version = |kind: &str| {
        served
            .resources
            .iter()
            .find(|r| r.kind == kind)
            .map(|r| r.version.clone())
    };
    assert_eq!(version("ReferenceGrant").as_deref(), Some("v1beta1"));
    assert_eq!(version("Gateway").as_deref(), Some("v1"));
    assert!(
        served.missing.contains("BackendTLSPolicy"),
        "{:?}",
        served.missing
    );
    assert!(
        served.missing.contains("KengineInstance"),
        "our CRD is not installed here"
    );
    assert!(served.required_missing().is_empty());
}

/// A health server that cannot serve (its port is taken) ends the
/// controller with an error, instead of leaving it running without probes.
#[test]
fn a_health_server_that_cannot_serve_ends_the_controller() {
    support::cluster::run(2, health_server_that_cannot_serve());
}

async fn health_server_that_cannot_serve() {
    let cluster = cluster().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = std::process::Command::new(support::cluster::bin())
        .args(["controller", "--leader-elect", "false"])
        .args(["--health-addr", &taken.local_addr().unwrap().to_string()])
        .args(["--metrics-addr", &metrics.to_string()])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the controller kept running without its health server");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{status}: {stderr}");
    assert!(stderr.contains("binding"), "{stderr}");
}
