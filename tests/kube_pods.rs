//! Pods with real addresses on the real control plane: the node agent
//! (`crates/test-support/src/node/`) runs a real Deployment's pods in their own network
//! namespaces, the real EndpointSlice controller publishes them, and the
//! real kube-proxy sends a ClusterIP Service's traffic to them.

use kengine_gateway_test_support as support;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams};
use serde_json::json;

use support::control_plane::ControlPlane;
use support::node::containers::LOG_MARKER;
use support::node::{NODE_IP, NODE_NAME, Node};

const NS: &str = "default";
const TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn deployment_pods_get_addresses_endpoints_and_cluster_ip_traffic() {
    support::netns::run(2, pods_on_a_real_node());
}

/// Polls `f` until it returns `Some`, or panics with `what` and the node's
/// diagnostics (at once when the node agent stopped).
async fn until<T, F, Fut>(node: &Node, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        // Panics at once if the agent stopped on a fatal error.
        let _ = node.pods();
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > TIMEOUT {
            panic!("{what}: not within {TIMEOUT:?}\n{}", node.diagnostics());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real kubectl: `.tools/helm/kubectl` (scripts/get-helm.sh puts it
/// there), else `kubectl` on PATH.
fn kubectl() -> Option<std::path::PathBuf> {
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/helm/kubectl");
    if local.is_file() {
        return Some(local);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

fn pods_of(client: kube::Client) -> Api<Pod> {
    Api::namespaced(client, NS)
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

/// The ready endpoint addresses of the Service's EndpointSlices.
async fn ready_endpoints(slices: &Api<EndpointSlice>) -> BTreeSet<String> {
    let lp = ListParams::default().labels("kubernetes.io/service-name=echo");
    let list = slices.list(&lp).await.unwrap();
    list.items
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.clone())
        .collect()
}

async fn echo_pods(pods: &Api<Pod>) -> Vec<Pod> {
    let lp = ListParams::default().labels("app=echo");
    pods.list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

async fn pods_on_a_real_node() {
    let plane = ControlPlane::start().await;
    let node = Node::start(&plane).await;
    let client = plane.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let pp = PatchParams::apply("e2e-test").force();

    let labels = json!({"app": "echo"});
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "echo", "namespace": NS},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "echo", "image": "kengine-gateway:test",
                        "command": ["kengine-gateway"],
                        "args": ["echo", "--listen", "0.0.0.0:8080", "--name", "$(POD_NAME)"],
                        "env": [{"name": "POD_NAME",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                           "periodSeconds": 1},
                    }],
                },
            },
        },
    });
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), NS);
    deployments
        .patch("echo", &pp, &Patch::Apply(deployment))
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let service = services
        .patch(
            "echo",
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "echo", "namespace": NS},
                "spec": {"selector": labels,
                         "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            })),
        )
        .await
        .unwrap();
    let cluster_ip: Ipv4Addr = service
        .spec
        .unwrap()
        .cluster_ip
        .expect("a cluster IP")
        .parse()
        .unwrap();

    // The real ReplicaSet controller creates three Pods; the agent binds
    // them, gives each its own address, and the EndpointSlice controller
    // publishes them once their readiness probes pass.
    let ready = until(&node, "3 ready pods in the EndpointSlice", async || {
        let live = echo_pods(&pods).await;
        let ips: BTreeSet<String> = live
            .iter()
            .filter(|p| is_ready(p))
            .filter_map(pod_ip)
            .collect();
        (live.len() == 3 && ips.len() == 3 && ready_endpoints(&slices).await == ips).then_some(live)
    })
    .await;
    for pod in &ready {
        let status = pod.status.as_ref().unwrap();
        let ip: Ipv4Addr = pod_ip(pod).unwrap().parse().unwrap();
        assert_eq!(
            ip.octets()[..3],
            [10, 244, 0],
            "{ip} is not in the pod range"
        );
        assert_eq!(
            status.host_ip.as_deref(),
            Some(NODE_IP.to_string().as_str())
        );
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some(NODE_NAME)
        );
        let info = node
            .pod(NS, pod.metadata.name.as_deref().unwrap())
            .expect("the node runs it");
        assert_eq!(info.ip, ip);
    }
    // The ServiceAccount admission plugin gave each Pod a projected
    // kube-api-access volume; its token is a real one of the Pod's account.
    let info = node
        .pod(NS, ready[0].metadata.name.as_deref().unwrap())
        .unwrap();
    let (volume, dir) = info
        .volumes
        .iter()
        .find(|(name, _)| name.starts_with("kube-api-access-"))
        .expect("a kube-api-access volume");
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{volume}/{f}: {e}"))
    };
    assert_eq!(read("namespace"), NS);
    assert_eq!(read("ca.crt"), std::fs::read_to_string(plane.ca()).unwrap());
    let as_pod = support::control_plane::client_for(
        &plane.token_kubeconfig("pod-token", read("token").trim()),
    )
    .await;
    match pods_of(as_pod).list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert!(
            status.code == 403
                && status
                    .message
                    .contains("system:serviceaccount:default:default"),
            "{status:?}"
        ),
        other => panic!("the pod's token listed pods: {other:?}"),
    }

    let names: BTreeSet<String> = ready
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();

    // kube-proxy's NAT spreads new connections over all three pods; each
    // answers with its own name.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let url = format!("http://{cluster_ip}/");
    let mut seen = BTreeSet::new();
    let start = std::time::Instant::now();
    while seen != names {
        if let Ok(resp) = http.get(&url).send().await
            && let Ok(body) = resp.json::<serde_json::Value>().await
            && let Some(pod) = body["pod"].as_str()
        {
            assert!(names.contains(pod), "{pod} answered, not one of {names:?}");
            seen.insert(pod.to_string());
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "answers through the cluster IP came only from {seen:?}\n{}",
            node.diagnostics()
        );
    }

    // A crashed container is restarted; its Pod is unready in between.
    let victim = names.iter().next().unwrap().clone();
    let old_pid = node.pod(NS, &victim).unwrap().containers[0].pid.unwrap();
    node.kill(NS, &victim, "echo");
    until(&node, "the killed pod turns unready", async || {
        (!is_ready(&pods.get(&victim).await.unwrap())).then_some(())
    })
    .await;
    let restarted = until(&node, "the killed pod is restarted and ready", async || {
        let pod = pods.get(&victim).await.unwrap();
        let restarts = pod.status.as_ref()?.container_statuses.as_ref()?[0].restart_count;
        (is_ready(&pod) && restarts == 1).then_some(pod)
    })
    .await;
    let status = &restarted.status.unwrap().container_statuses.unwrap()[0];
    let terminated = status.last_state.as_ref().unwrap().terminated.as_ref();
    assert_eq!(terminated.map(|t| t.exit_code), Some(128 + 9), "{status:?}");
    assert_ne!(
        node.pod(NS, &victim).unwrap().containers[0].pid,
        Some(old_pid)
    );

    // A deleted Pod is replaced by the ReplicaSet; the new Pod's address
    // replaces the old one in the EndpointSlice.
    let gone = names.iter().nth(1).unwrap().clone();
    let gone_ip = pod_ip(&pods.get(&gone).await.unwrap()).unwrap();
    pods.delete(&gone, &DeleteParams::default()).await.unwrap();
    let (new_pod, new_ip) = until(
        &node,
        "a replacement pod in the EndpointSlice",
        async || {
            let live = echo_pods(&pods).await;
            let fresh = live
                .iter()
                .find(|p| !names.contains(p.metadata.name.as_deref().unwrap()) && is_ready(p))?;
            let ip = pod_ip(fresh)?;
            let endpoints = ready_endpoints(&slices).await;
            let deleted = pods.get_opt(&gone).await.unwrap().is_none();
            (deleted
                && endpoints.len() == 3
                && endpoints.contains(&ip)
                && !endpoints.contains(&gone_ip))
            .then(|| (fresh.metadata.name.clone().unwrap(), ip))
        },
    )
    .await;
    assert_ne!(new_ip, gone_ip);
    until(
        &node,
        "the replacement answers through the cluster IP",
        async || {
            let body: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            (body["pod"] == new_pod.as_str()).then_some(())
        },
    )
    .await;
    // Container logs through the kubelet API, as kube-apiserver proxies
    // them for `pods/log` (what `kubectl logs` reads).
    let logs = pods
        .logs(
            &new_pod,
            &LogParams {
                container: Some("echo".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("pods/log: {e}\n{}", node.diagnostics()));
    assert!(
        logs.contains("echo backend listening") && logs.contains(&new_pod),
        "{logs}"
    );
    assert!(
        !logs.contains(LOG_MARKER),
        "the agent's own lines leaked:\n{logs}"
    );
    let last = pods
        .logs(
            &victim,
            &LogParams {
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(last.lines().count(), 1, "{last}");
    match kubectl() {
        Some(kubectl) => {
            let out = tokio::process::Command::new(&kubectl)
                .arg(format!("--kubeconfig={}", plane.kubeconfig.display()))
                .args(["logs", "-n", NS, &new_pod, "-c", "echo"])
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "kubectl logs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Later probes add lines; what pods/log returned comes first.
            let printed = String::from_utf8_lossy(&out.stdout);
            assert!(
                printed.starts_with(&logs),
                "kubectl logs printed:\n{printed}"
            );
        }
        None => eprintln!(
            "no kubectl (scripts/get-helm.sh .tools/helm installs it): `kubectl logs` not run"
        ),
    }

    // Stopping the node ends every process and removes every pod network.
    let mut pids: Vec<u32> = node
        .pods()
        .iter()
        .flat_map(|p| p.containers.iter().filter_map(|c| c.pid))
        .collect();
    pids.extend(node.kube_proxy_pid());
    assert_eq!(pids.len(), 4, "three echo processes and kube-proxy");
    let namespaces: BTreeSet<String> = node.pods().into_iter().map(|p| p.netns).collect();
    assert_eq!(namespaces.len(), 3, "{namespaces:?}");
    for pid in &pids[..3] {
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        assert!(
            namespaces.contains(&ns.display().to_string()),
            "process {pid} runs in {ns:?}, not in its pod's namespace"
        );
    }
    node.stop().await;
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} outlived the node"
        );
    }
    // A namespace lives while a process runs in it or a descriptor holds
    // it: no process and no descriptor of this test refers to one any more.
    let mut refs: Vec<std::path::PathBuf> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for entry in std::fs::read_dir("/proc").unwrap() {
        refs.push(entry.unwrap().path().join("ns/net"));
    }
    for r in refs {
        if let Ok(target) = std::fs::read_link(&r) {
            let target = target.display().to_string();
            assert!(
                !namespaces.contains(&target),
                "{} still holds pod namespace {target}",
                r.display()
            );
        }
    }
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.lines().any(|l| l.contains(": kp")),
        "veth pairs outlived the node:\n{links}"
    );
}
