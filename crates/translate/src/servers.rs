//! Listeners of every Gateway → Kengine servers, one per port and bind set.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::conditions::{Cond, Reason, Type};
use super::gateways::{GatewayModel, Protocol, conflict};
use super::grpc_errors;
use super::hostnames::Host;
use super::layout::{self, Bucket, PlannedListener};
use super::rules::CompiledMatch;
use crate::kengine::config::{
    Apps, AutomaticHttps, CaPool, CertificateSelection, Certificates, ClientAuthentication, Config,
    HttpApp, Origin, OriginPart, PemCertificate, Provenance, Server, TlsApp, TlsConnectionPolicy,
    TlsMatch,
};
use crate::snapshot::ObjectRef;

/// (gateway index, listener index) in translate's ordered Gateway list.
pub type ListenerId = (usize, usize);

#[derive(Debug, Clone)]
pub struct ServerPlan {
    /// The KengineInstance (or the local Kengine) the server runs on.
    pub fleet: ObjectRef,
    pub port: u16,
    /// Empty: every interface.
    pub binds: Vec<IpAddr>,
    pub members: Vec<ListenerId>,
}

/// Places every usable listener on a server. Gateways come oldest first, so
/// a listener that collides with an earlier one is the one marked.
pub fn assign(models: &mut [GatewayModel]) -> Vec<ServerPlan> {
    let mut plans: Vec<ServerPlan> = Vec::new();
    for g in 0..models.len() {
        if models[g].rejected.is_some() {
            continue;
        }
        for l in 0..models[g].listeners.len() {
            let listener = &models[g].listeners[l];
            if !listener.usable() {
                continue;
            }
            let binds = models[g].binds.clone();
            let mut problem = None;
            let mut target = None;
            for (i, plan) in plans
                .iter()
                .enumerate()
                .filter(|(_, p)| p.port == listener.port && p.fleet == models[g].fleet)
            {
                if plan.binds == binds {
                    problem = plan.members.iter().find_map(|&(pg, pl)| {
                        conflict(&models[pg].key, &models[pg].listeners[pl], listener)
                    });
                    target = Some(i);
                } else if plan.binds.is_empty()
                    || binds.is_empty()
                    || plan.binds.iter().any(|b| binds.contains(b))
                {
                    let (pg, pl) = plan.members[0];
                    problem = Some(Cond::new(
                        Type::Accepted,
                        false,
                        Reason::PortUnavailable,
                        format!(
                            "port {} is already bound on overlapping addresses by listener {:?} of Gateway {}",
                            listener.port, models[pg].listeners[pl].name, models[pg].key
                        ),
                    ));
                }
                if problem.is_some() {
                    break;
                }
            }
            match (problem, target) {
                (Some(p), _) => models[g].listeners[l].problems.push(p),
                (None, Some(i)) => plans[i].members.push((g, l)),
                (None, None) => plans.push(ServerPlan {
                    fleet: models[g].fleet.clone(),
                    port: listener.port,
                    binds,
                    members: vec![(g, l)],
                }),
            }
        }
    }
    plans
}

/// The Kengine config for every planned server. Takes the buckets of the
/// listeners it places.
pub fn config(
    plans: &[ServerPlan],
    models: &[GatewayModel],
    buckets: &mut BTreeMap<ListenerId, Vec<Bucket>>,
) -> Config {
    let mut servers = BTreeMap::new();
    let mut certificates: BTreeMap<String, PemCertificate> = BTreeMap::new();
    for plan in plans {
        let planned: Vec<PlannedListener> = plan
            .members
            .iter()
            .map(|&(g, l)| PlannedListener {
                id: format!("{}/{}", models[g].key, models[g].listeners[l].name),
                host: models[g].listeners[l].host.clone(),
                // A listener is on one server only: its buckets move there.
                buckets: buckets
                    .remove(&(g, l))
                    .map(std::borrow::Cow::Owned)
                    .unwrap_or_default(),
            })
            .collect();
        let https = plan
            .members
            .iter()
            .any(|&(g, l)| models[g].listeners[l].protocol == Some(Protocol::Https));
        let grpc = (planned.iter().flat_map(|l| l.buckets.iter()))
            .any(|b| b.matches.iter().any(CompiledMatch::is_grpc));
        let not_found = grpc_errors::not_found(grpc);
        let (routes, named_routes) = layout::routes(planned, https, &not_found);
        let mut policies = Vec::new();
        if https {
            let mut members = plan.members.clone();
            members.sort_by(|a, b| {
                models[a.0].listeners[a.1]
                    .host
                    .specificity_cmp(&models[b.0].listeners[b.1].host)
            });
            for (g, l) in members {
                let listener = &models[g].listeners[l];
                let mut tags = Vec::new();
                for pair in &listener.certificates {
                    let tag = certificate_tag(&pair.certificate, &pair.key);
                    certificates
                        .entry(tag.clone())
                        .or_insert_with(|| PemCertificate {
                            certificate: pair.certificate.clone(),
                            key: pair.key.clone(),
                            tags: vec![tag.clone()],
                        });
                    tags.push(tag);
                }
                policies.push(TlsConnectionPolicy {
                    matchers: sni(&listener.host).map(|sni| TlsMatch { sni }),
                    certificate_selection: Some(CertificateSelection { any_tag: tags }),
                    client_authentication: listener.client_auth.as_ref().map(|a| {
                        ClientAuthentication {
                            ca: Some(CaPool {
                                provider: "inline".into(),
                                trusted_ca_certs: a.trusted_ca_certs.clone(),
                            }),
                            mode: a.mode().into(),
                        }
                    }),
                });
            }
        }
        let name = server_name(plan);
        servers.insert(
            name,
            Server {
                listen: listen_addresses(plan),
                routes,
                named_routes,
                tls_connection_policies: policies,
                automatic_https: Some(AutomaticHttps { disable: true }),
                // Cleartext HTTP/2 (h2c) on HTTP listeners; no HTTP/3 (it needs UDP).
                protocols: if https {
                    vec!["h1".into(), "h2".into()]
                } else {
                    vec!["h1".into(), "h2".into(), "h2c".into()]
                },
                errors: grpc.then(grpc_errors::routes),
                provenance: Provenance::new(plan.members.iter().map(|&(g, l)| Origin {
                    kind: "Gateway",
                    namespace: models[g].key.namespace.clone(),
                    name: models[g].key.name.clone(),
                    part: OriginPart::Listener(models[g].listeners[l].name.clone()),
                })),
            },
        );
    }
    let tls = (!certificates.is_empty()).then(|| TlsApp {
        certificates: Some(Certificates {
            load_pem: certificates.into_values().collect(),
        }),
    });
    let http = (!servers.is_empty()).then_some(HttpApp { servers });
    Config {
        admin: None,
        apps: Apps { http, tls },
    }
}

/// SNI patterns for a listener hostname. Kengine's SNI `*` covers one label,
/// so a wildcard is spelled out for up to three labels; `None` matches any.
fn sni(host: &Host) -> Option<Vec<String>> {
    match host {
        Host::Exact(h) => Some(vec![h.clone()]),
        Host::Wildcard(s) => Some((1..=3).map(|n| format!("{}{s}", "*.".repeat(n))).collect()),
        Host::Any => None,
    }
}

fn certificate_tag(certificate: &str, key: &str) -> String {
    format!(
        "cert-{}",
        kengine_gateway_model::short_hash(format!("{certificate}{key}").as_bytes())
    )
}

pub fn server_name(plan: &ServerPlan) -> String {
    let mut name = format!("port-{}", plan.port);
    for ip in &plan.binds {
        name.push('-');
        name.push_str(&ip.to_string());
    }
    name
}

fn listen_addresses(plan: &ServerPlan) -> Vec<String> {
    if plan.binds.is_empty() {
        return vec![format!(":{}", plan.port)];
    }
    plan.binds
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => format!("{v4}:{}", plan.port),
            IpAddr::V6(v6) => format!("[{v6}]:{}", plan.port),
        })
        .collect()
}
