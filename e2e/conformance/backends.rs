//! Echo backends standing in for the suite's Deployments, and the addresses
//! a cluster would assign: pod IPs, Service ClusterIPs and Gateway addresses,
//! all on loopback.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use kengine_gateway::echo::{self, Identity};

/// Hands out loopback addresses that are never reused within a run.
pub struct Addresses {
    next: u32,
}

impl Addresses {
    pub fn new() -> Self {
        Addresses { next: 0 }
    }

    /// `127.<block>.x.y`: separate blocks keep pods, services and gateways apart in logs.
    pub fn take(&mut self, block: u8) -> Ipv4Addr {
        self.next += 1;
        Ipv4Addr::new(
            127,
            block,
            (self.next / 250) as u8,
            (self.next % 250 + 1) as u8,
        )
    }
}

/// (namespace, service, port name).
type PortKey = (String, String, String);

pub const POD_BLOCK: u8 = 11;
pub const SERVICE_BLOCK: u8 = 12;
pub const GATEWAY_BLOCK: u8 = 13;

pub struct Pod {
    pub name: String,
    pub ip: Ipv4Addr,
}

/// Running echo servers of one test; dropped servers stop.
pub struct Backends {
    /// (namespace, deployment) → its one pod.
    pub pods: BTreeMap<(String, String), Pod>,
    tasks: Vec<JoinHandle<()>>,
    /// kube-proxy stand-in for Services without a selector: (namespace,
    /// service, port name) → where their EndpointSlices point now.
    routes: Arc<RwLock<BTreeMap<PortKey, Vec<SocketAddr>>>>,
    ipv6_pod: Option<String>,
}

impl Drop for Backends {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Ports the suite's echo image serves: HTTP/1.1 on 3000, h2c on 3001.
const H2C_PORT: i64 = 3001;

pub async fn start(cluster: &mut Cluster, addresses: &mut Addresses) -> Result<Backends, String> {
    let mut backends = Backends::empty();
    let deployments: Vec<Value> = cluster.of_kind("Deployment").cloned().collect();
    for d in &deployments {
        let ns = d["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let pod = Pod {
            name: format!("{name}-0"),
            ip: addresses.take(POD_BLOCK),
        };
        for port in [3000, H2C_PORT] {
            backends
                .listen(pod.ip.into(), port as u16, &pod.name, &ns, port == H2C_PORT)
                .await?;
        }
        backends.pods.insert((ns, name), pod);
    }
    let services: Vec<Value> = cluster.of_kind("Service").cloned().collect();
    for svc in services {
        let ns = svc["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = svc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let headless = svc["spec"]["clusterIP"].as_str() == Some("None");
        let selector = svc["spec"]["selector"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
        let pod = deployments.iter().find_map(|d| {
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            let same_ns = d["metadata"]["namespace"].as_str() == Some(&ns);
            let selected = !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v);
            let deployment = d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (same_ns && selected)
                .then(|| backends.pods.get(&(ns.clone(), deployment)))
                .flatten()
        });
        match (headless, pod) {
            // The endpoints controller's part: a slice for the selected pod.
            (true, Some(pod)) => {
                let slice_ports: Vec<Value> = ports
                    .iter()
                    .map(|p| json!({"name": p["name"], "port": p["targetPort"], "protocol": "TCP"}))
                    .collect();
                cluster.apply(
                    json!({
                        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": format!("{name}-auto"), "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
                        "addressType": "IPv4", "ports": slice_ports,
                        "endpoints": [{"addresses": [pod.ip.to_string()], "conditions": {"ready": true}}]
                    }),
                    false,
                );
            }
            (true, None) => {}
            (false, Some(pod)) => {
                let pod_name = pod.name.clone();
                let ip = addresses.take(SERVICE_BLOCK);
                for port in &ports {
                    let number = port["port"].as_i64().unwrap_or(80) as u16;
                    let h2c = port["targetPort"].as_i64() == Some(H2C_PORT);
                    backends
                        .listen(ip.into(), number, &pod_name, &ns, h2c)
                        .await?;
                }
                set_cluster_ip(cluster, svc, ip);
            }
            // No selector: kube-proxy forwards to whatever the slices say.
            (false, None) => {
                let ip = addresses.take(SERVICE_BLOCK);
                for port in &ports {
                    let number = port["port"].as_i64().unwrap_or(80) as u16;
                    let key = (
                        ns.clone(),
                        name.clone(),
                        port["name"].as_str().unwrap_or_default().to_string(),
                    );
                    backends
                        .forward(SocketAddr::new(ip.into(), number), key)
                        .await?;
                }
                set_cluster_ip(cluster, svc, ip);
            }
        }
    }
    Ok(backends)
}

fn set_cluster_ip(cluster: &mut Cluster, mut svc: Value, ip: Ipv4Addr) {
    svc["spec"]["clusterIP"] = json!(ip.to_string());
    cluster.apply(svc, false);
}

impl Backends {
    pub fn empty() -> Self {
        Backends {
            pods: BTreeMap::new(),
            tasks: Vec::new(),
            routes: Default::default(),
            ipv6_pod: None,
        }
    }

    /// Points the kube-proxy stand-in at the endpoints the slices list now.
    pub fn refresh(&self, cluster: &Cluster) {
        let mut routes = self.routes.write().unwrap();
        for (key, targets) in routes.iter_mut() {
            let (ns, svc, port_name) = key;
            targets.clear();
            for slice in cluster.of_kind("EndpointSlice") {
                if slice["metadata"]["namespace"] != ns.as_str()
                    || slice["metadata"]["labels"]["kubernetes.io/service-name"] != svc.as_str()
                {
                    continue;
                }
                let port = slice["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"].as_str().unwrap_or_default() == port_name);
                let Some(port) = port.and_then(|p| p["port"].as_u64()) else {
                    continue;
                };
                for e in slice["endpoints"].as_array().into_iter().flatten() {
                    for a in e["addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        if let Ok(ip) = a.parse::<IpAddr>() {
                            targets.push(SocketAddr::new(ip, port as u16));
                        }
                    }
                }
            }
        }
    }

    async fn forward(
        &mut self,
        at: SocketAddr,
        key: (String, String, String),
    ) -> Result<(), String> {
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .map_err(|e| format!("proxy on {at}: {e}"))?;
        self.routes.write().unwrap().insert(key.clone(), Vec::new());
        let routes = self.routes.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut inbound, _)) = listener.accept().await {
                let targets = routes
                    .read()
                    .unwrap()
                    .get(&key)
                    .cloned()
                    .unwrap_or_default();
                if targets.is_empty() {
                    continue; // Dropped, as with no endpoints.
                }
                next += 1;
                let target = targets[next % targets.len()];
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
        Ok(())
    }

    async fn listen(
        &mut self,
        ip: IpAddr,
        port: u16,
        pod: &str,
        ns: &str,
        h2c_only: bool,
    ) -> Result<(), String> {
        let listener = tokio::net::TcpListener::bind((ip, port))
            .await
            .map_err(|e| format!("echo on {ip}:{port}: {e}"))?;
        let identity = Identity {
            name: pod.to_string(),
            namespace: ns.to_string(),
        };
        let options = echo::Options::default().h2c_only(h2c_only);
        self.tasks.push(tokio::spawn(async move {
            let _ = echo::serve_with(listener, identity, options, std::future::pending()).await;
        }));
        Ok(())
    }

    /// The endpoints of a Deployment's pod, as an EndpointSlice would list
    /// them. Loopback has one IPv6 address, so one pod can have it.
    pub async fn endpoints(
        &mut self,
        namespace: &str,
        deployment: &str,
        ipv6: bool,
    ) -> Result<Value, String> {
        let pod = self
            .pods
            .get(&(namespace.to_string(), deployment.to_string()))
            .ok_or("no such deployment")?;
        let (name, ip) = (pod.name.clone(), pod.ip);
        let address = if ipv6 {
            if self.ipv6_pod.is_none() {
                self.listen("::1".parse().unwrap(), 3000, &name, namespace, false)
                    .await?;
                self.ipv6_pod = Some(name.clone());
            }
            if self.ipv6_pod.as_deref() != Some(name.as_str()) {
                return Err("only one pod can have the IPv6 loopback address".into());
            }
            "::1".to_string()
        } else {
            ip.to_string()
        };
        Ok(
            json!([{ "addresses": [address], "conditions": { "ready": true }, "targetRef": { "kind": "Pod", "name": name } }]),
        )
    }
}
