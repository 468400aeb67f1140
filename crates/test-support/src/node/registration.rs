//! The Node object and its heartbeat: created Ready with the node's address
//! and pod range, kept Ready by renewing its Lease in `kube-node-lease`
//! (the node lifecycle controller of kube-controller-manager reads the
//! Lease; a Node whose Lease goes stale is marked unreachable).

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::containers::now;
use super::network::{NODE_IP, POD_CIDR};

/// Seconds a Lease is valid; renewed every [`super::LEASE_RENEW`].
const LEASE_SECONDS: i32 = 40;
/// The port the Node advertises for its kubelet API.
pub const KUBELET_PORT: u16 = 10250;
const MANAGER: &str = "kengine-e2e-node";

pub async fn register(client: &kube::Client, name: &str) -> kube::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::apply(MANAGER).force();
    nodes
        .patch(
            name,
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": std::env::consts::ARCH,
                }},
                "spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR]},
            })),
        )
        .await?;
    let capacity = json!({"cpu": "8", "memory": "16Gi", "pods": "110"});
    let at = now();
    nodes
        .patch_status(
            name,
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name},
                "status": {
                    "conditions": [{
                        "type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "the test's node agent is ready",
                        "lastHeartbeatTime": at, "lastTransitionTime": at,
                    }],
                    "addresses": [
                        {"type": "InternalIP", "address": NODE_IP.to_string()},
                        {"type": "Hostname", "address": name},
                    ],
                    "capacity": capacity, "allocatable": capacity,
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
                    "nodeInfo": {
                        "machineID": "", "systemUUID": "", "bootID": "",
                        "kernelVersion": "", "osImage": "kengine-e2e",
                        "containerRuntimeVersion": "local-process://0",
                        "kubeletVersion": "v1.35.4", "kubeProxyVersion": "",
                        "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
                    },
                },
            })),
        )
        .await?;
    renew_lease(client, name).await
}

pub async fn renew_lease(client: &kube::Client, name: &str) -> kube::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renew = serde_json::to_value(MicroTime(k8s_openapi::jiff::Timestamp::now())).unwrap();
    leases
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS,
                         "renewTime": renew},
            })),
        )
        .await
        .map(drop)
}
