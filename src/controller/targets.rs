//! The pods a fleet's config goes to, and how to reach their admin API.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::crd::{KengineInstance, Mode};
use crate::kengine::AdminClient;
use crate::kengine::admin::RemoteTls;
use crate::operator::workloads::{self, Names};
use crate::sinks::fleet::PodTarget;
use crate::snapshot::{ObjectRef, Snapshot};
use crate::translate::programmed::{self, FleetAddress, FleetProblem};

/// A fleet's ready pods, or why there are none to push to.
#[derive(Default)]
pub struct Fleet {
    pub pods: Vec<PodTarget>,
    /// Addresses the fleet's traffic reaches it at.
    pub addresses: Vec<FleetAddress>,
    pub problem: Option<FleetProblem>,
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
            return problem(FleetProblem::InstanceMissing(key.clone()));
        };
        let reach = match instance.spec.mode {
            Mode::External => external(snapshot, key, instance),
            Mode::Deployment | Mode::DaemonSet => managed(snapshot, key, instance),
        };
        match reach {
            Ok(reach) => self.pods(pods, key, &reach, timeout),
            // The operator is making a managed instance's parts.
            Err(why) if instance.spec.mode.managed() => {
                problem(FleetProblem::InstanceNotReady(key.clone(), why))
            }
            Err(why) => problem(FleetProblem::InstanceInvalid(key.clone(), why)),
        }
    }

    fn pods(&mut self, pods: &[Pod], key: &ObjectRef, reach: &Reach, timeout: Duration) -> Fleet {
        let tls = &reach.tls;
        let mut fleet = Fleet {
            plain_http: tls.is_none(),
            ..Fleet::default()
        };
        if let Some(addresses) = &reach.service_addresses {
            fleet.addresses = addresses.clone();
        }
        for pod in pods.iter().filter(|p| {
            selected(p, &key.namespace, &reach.selector)
                && if reach.managed {
                    admin_proxy_running(p)
                } else {
                    ready(p)
                }
        }) {
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
            let addr = SocketAddr::new(ip, reach.admin_port);
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
                            fleet.problem = Some(FleetProblem::AdminClient {
                                pod: pod.metadata.name.clone().unwrap_or_default(),
                                error: e.to_string(),
                            });
                            continue;
                        }
                    }
                }
            };
            if reach.service_addresses.is_none() {
                fleet.addresses.push(FleetAddress::Ip(ip));
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

/// How to find a fleet's pods and reach their admin API.
struct Reach {
    selector: BTreeMap<String, String>,
    admin_port: u16,
    /// Client material and the server name to check (else the pod IP);
    /// `None`: plain HTTP.
    tls: Option<(Material, Option<String>)>,
    /// The addresses of the fleet's Service, when it has one; else the pod IPs.
    service_addresses: Option<Vec<FleetAddress>>,
    /// Managed pods are pushed to before they are Ready: their readiness
    /// waits for the first config.
    managed: bool,
}

fn external(
    snapshot: &Snapshot,
    key: &ObjectRef,
    instance: &KengineInstance,
) -> Result<Reach, String> {
    let ext = instance
        .spec
        .external
        .as_ref()
        .ok_or("mode External needs spec.external")?;
    let tls = match &ext.admin_tls {
        Some(t) => Some((
            material(
                snapshot,
                &key.namespace,
                &t.client_certificate_secret,
                &t.ca_secret,
            )?,
            t.server_name.clone(),
        )),
        None if ext.allow_plain_http => None,
        None => return Err("adminTls is required unless allowPlainHttp is set".into()),
    };
    Ok(Reach {
        selector: ext.selector.clone(),
        admin_port: u16::try_from(ext.admin_port).unwrap_or(2019),
        tls,
        service_addresses: ext
            .service
            .as_ref()
            .map(|name| service_addresses(snapshot, &ObjectRef::new(&key.namespace, name))),
        managed: false,
    })
}

fn managed(
    snapshot: &Snapshot,
    key: &ObjectRef,
    instance: &KengineInstance,
) -> Result<Reach, String> {
    let names = Names::of(instance);
    let material = material(
        snapshot,
        &key.namespace,
        &names.client_secret,
        &names.client_secret,
    )
    .map_err(|why| format!("admin certificates not issued yet ({why})"))?;
    Ok(Reach {
        selector: workloads::selector(&names),
        admin_port: workloads::ADMIN_PORT,
        tls: Some((material, Some(names.server_name.clone()))),
        service_addresses: Some(service_addresses(
            snapshot,
            &ObjectRef::new(&key.namespace, &names.workload),
        )),
        managed: true,
    })
}

/// The admin-proxy container runs: the pod can take its config.
fn admin_proxy_running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.name == "admin-proxy" && c.state.as_ref().is_some_and(|s| s.running.is_some())
            })
        })
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

/// The addresses of the fleet's Service (none while it does not exist).
fn service_addresses(snapshot: &Snapshot, key: &ObjectRef) -> Vec<FleetAddress> {
    (snapshot.services.get(key))
        .map(programmed::service_addresses)
        .unwrap_or_default()
}

fn selected(pod: &Pod, namespace: &str, selector: &BTreeMap<String, String>) -> bool {
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

fn problem(problem: FleetProblem) -> Fleet {
    Fleet {
        problem: Some(problem),
        ..Fleet::default()
    }
}
