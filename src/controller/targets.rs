//! The pods a fleet's config goes to, and how to reach their admin API.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::crd::{KengineInstance, Mode};
use crate::kengine::AdminClient;
use crate::kengine::admin::RemoteTls;
use crate::sinks::fleet::PodTarget;
use crate::snapshot::{ObjectRef, Snapshot};

/// A fleet's ready pods, or why there are none to push to.
#[derive(Default)]
pub struct Fleet {
    pub pods: Vec<PodTarget>,
    /// Addresses the fleet's traffic reaches it at: (type, value), the
    /// type as Gateway status names it (IPAddress or Hostname).
    pub addresses: Vec<(&'static str, String)>,
    pub problem: Option<String>,
    pub plain_http: bool,
}

/// Admin clients are kept per pod, rebuilt only when what they use changes.
#[derive(Default)]
pub struct Clients {
    cache: HashMap<String, (String, AdminClient)>,
}

impl Clients {
    pub fn fleet(
        &mut self,
        snapshot: &Snapshot,
        pods: &[Pod],
        key: &ObjectRef,
        timeout: Duration,
    ) -> Fleet {
        let Some(instance) = snapshot.kengine_instances.get(key) else {
            return problem(format!(
                "KengineInstance {key} does not exist: create it, or point the Gateway's infrastructure.parametersRef or its class's parametersRef at one"
            ));
        };
        match instance.spec.mode {
            Mode::External => self.external(snapshot, pods, key, instance, timeout),
            mode => problem(format!(
                "KengineInstance {key}: mode {mode:?} is not implemented yet; use External"
            )),
        }
    }

    fn external(
        &mut self,
        snapshot: &Snapshot,
        pods: &[Pod],
        key: &ObjectRef,
        instance: &KengineInstance,
        timeout: Duration,
    ) -> Fleet {
        let Some(ext) = &instance.spec.external else {
            return problem(format!(
                "KengineInstance {key}: mode External needs spec.external"
            ));
        };
        let tls = match &ext.admin_tls {
            Some(t) => match material(
                snapshot,
                &key.namespace,
                &t.client_certificate_secret,
                &t.ca_secret,
            ) {
                Ok(m) => Some((m, t.server_name.clone())),
                Err(why) => return problem(format!("KengineInstance {key}: {why}")),
            },
            None if ext.allow_plain_http => None,
            None => {
                return problem(format!(
                    "KengineInstance {key}: adminTls is required unless allowPlainHttp is set"
                ));
            }
        };
        let mut fleet = Fleet {
            plain_http: tls.is_none(),
            ..Fleet::default()
        };
        if let Some(name) = &ext.service {
            fleet.addresses = service_addresses(snapshot, &ObjectRef::new(&key.namespace, name));
        }
        for pod in pods
            .iter()
            .filter(|p| selected(p, &key.namespace, &ext.selector) && ready(p))
        {
            let Some(ip) = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok())
            else {
                continue;
            };
            // A restarted container lost its config: a new restart count makes it a new target.
            let restarts: i32 = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map(|cs| cs.iter().map(|c| c.restart_count).sum())
                .unwrap_or(0);
            let uid = format!(
                "{}/{restarts}",
                pod.metadata.uid.as_deref().unwrap_or_default()
            );
            let addr = SocketAddr::new(ip, u16::try_from(ext.admin_port).unwrap_or(2019));
            let fingerprint = format!(
                "{addr} {:?}",
                tls.as_ref().map(|(m, s)| (m.fingerprint(), s))
            );
            let client = match self.cache.get(&uid) {
                Some((f, c)) if *f == fingerprint => c.clone(),
                _ => {
                    let remote = tls.as_ref().map(|(m, server_name)| RemoteTls {
                        ca_pem: m.ca.as_bytes(),
                        identity_pem: m.identity.as_bytes(),
                        server_name: server_name.as_deref(),
                    });
                    match AdminClient::remote(addr, remote, timeout) {
                        Ok(c) => {
                            self.cache.insert(uid.clone(), (fingerprint, c.clone()));
                            c
                        }
                        Err(e) => {
                            fleet.problem = Some(format!(
                                "pod {}: admin client: {e}",
                                pod.metadata.name.as_deref().unwrap_or("?")
                            ));
                            continue;
                        }
                    }
                }
            };
            if ext.service.is_none() {
                fleet.addresses.push(("IPAddress", ip.to_string()));
            }
            fleet.pods.push(PodTarget {
                uid,
                name: pod.metadata.name.clone().unwrap_or_default(),
                client,
            });
        }
        fleet
    }

    /// Drops clients of pods that are gone.
    pub fn retain(&mut self, live: &[String]) {
        self.cache.retain(|uid, _| live.contains(uid));
    }
}

struct Material {
    ca: String,
    identity: String,
}

impl Material {
    fn fingerprint(&self) -> String {
        crate::sinks::fleet::short_hash(format!("{}{}", self.ca, self.identity).as_bytes())
    }
}

/// The client certificate and the CA, from `kubernetes.io/tls` Secrets (the
/// only Secrets the controller watches): `tls.crt`+`tls.key`, and `ca.crt`.
fn material(
    snapshot: &Snapshot,
    namespace: &str,
    client_secret: &str,
    ca_secret: &str,
) -> Result<Material, String> {
    let field = |secret: &str, name: &str| -> Result<String, String> {
        let s = snapshot
            .secrets
            .get(&ObjectRef::new(namespace, secret))
            .ok_or_else(|| {
                format!(
                    "Secret {namespace}/{secret} not found (it must be of type kubernetes.io/tls)"
                )
            })?;
        let bytes = s
            .data
            .as_ref()
            .and_then(|d| d.get(name))
            .map(|b| b.0.clone())
            .ok_or_else(|| format!("Secret {namespace}/{secret} has no {name}"))?;
        String::from_utf8(bytes)
            .map_err(|_| format!("Secret {namespace}/{secret} {name} is not text"))
    };
    Ok(Material {
        ca: field(ca_secret, "ca.crt")?,
        identity: format!(
            "{}\n{}",
            field(client_secret, "tls.crt")?,
            field(client_secret, "tls.key")?
        ),
    })
}

/// A Service's LoadBalancer ingress addresses, else its ClusterIP.
fn service_addresses(snapshot: &Snapshot, key: &ObjectRef) -> Vec<(&'static str, String)> {
    let Some(service) = snapshot.services.get(key) else {
        return Vec::new();
    };
    let ingress: Vec<(&'static str, String)> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| match (&i.ip, &i.hostname) {
            (Some(ip), _) => Some(("IPAddress", ip.clone())),
            (None, Some(host)) => Some(("Hostname", host.clone())),
            _ => None,
        })
        .collect();
    if !ingress.is_empty() {
        return ingress;
    }
    let cluster_ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .filter(|ip| !ip.is_empty() && ip != "None");
    cluster_ip
        .map(|ip| vec![("IPAddress", ip)])
        .unwrap_or_default()
}

fn selected(
    pod: &Pod,
    namespace: &str,
    selector: &std::collections::BTreeMap<String, String>,
) -> bool {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    pod.metadata.namespace.as_deref() == Some(namespace)
        && pod.metadata.deletion_timestamp.is_none()
        && !selector.is_empty()
        && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn problem(message: String) -> Fleet {
    Fleet {
        problem: Some(message),
        ..Fleet::default()
    }
}
