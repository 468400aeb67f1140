//! BackendTLSPolicy: which policy applies to a Service port, whether it can
//! be applied, and the status it gets. A usable policy makes Kengine dial
//! the port over TLS, sending the policy's hostname as SNI and verifying
//! the backend's certificate against it and the policy's CAs (or the
//! system's roots). A policy that cannot be applied is never bypassed: its
//! targets' share of requests is answered 500, never sent in plaintext.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use foldhash::HashMap;

use gateway_api::apis::experimental::httproutes::HttpRouteRules;
use gateway_api::apis::standard::backendtlspolicies::{
    BackendTlsPolicy, BackendTlsPolicyStatusAncestors, BackendTlsPolicyStatusAncestorsAncestorRef,
    BackendTlsPolicyValidationSubjectAltNamesType as SanType,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use kengine_gateway_model::short_hash;

use super::conditions::{Cond, Reason, Type, stamp};
use super::gateways::GROUP;
use super::hostnames;
use crate::snapshot::{ObjectRef, Snapshot};

/// The spec's limit on a policy's `status.ancestors`.
const MAX_ANCESTORS: usize = 16;

/// TLS to a backend, as a usable policy asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendTls {
    /// The SNI, and the name the certificate must carry.
    pub server_name: String,
    /// Base64 DER CA certificates; `None`: the system's roots.
    pub trusted_ca_certs: Option<Vec<String>>,
    /// Names this TLS setup in a proxy's name, stable across translations:
    /// the server name and a hash of the CAs.
    pub id: String,
}

/// What one policy amounts to, whatever it targets.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub accepted: Cond,
    pub resolved_refs: Cond,
    /// Set when the policy can be applied: accepted, every ref resolved.
    pub tls: Option<BackendTls>,
}

/// The policies one translate has looked at, each judged once: the routes
/// of many namespaces may send requests to one policy's Service.
#[derive(Default)]
pub struct Judged {
    known: HashMap<ObjectRef, Result<Rc<BackendTls>, String>>,
}

impl Judged {
    /// The TLS `policy` asks for, or why it cannot be applied.
    pub fn tls(
        &mut self,
        snapshot: &Snapshot,
        policy: &ObjectRef,
    ) -> Result<Rc<BackendTls>, String> {
        (self.known.entry(policy.clone()))
            .or_insert_with(|| {
                let Some(object) = snapshot.backend_tls_policies.get(policy) else {
                    return Err("it does not exist".into());
                };
                let verdict = verdict(snapshot, policy, object);
                match (verdict.tls, verdict.accepted.status) {
                    (Some(tls), _) => Ok(Rc::new(tls)),
                    (None, true) => Err(verdict.resolved_refs.message),
                    (None, false) => Err(verdict.accepted.message),
                }
            })
            .clone()
    }
}

/// Judges a policy on its own: its CA references, hostname, names and options.
pub fn verdict(snapshot: &Snapshot, key: &ObjectRef, policy: &BackendTlsPolicy) -> Verdict {
    let validation = &policy.spec.validation;
    let refs = validation
        .ca_certificate_refs
        .as_deref()
        .unwrap_or_default();
    let mut resolved_refs = Cond::ok(Type::ResolvedRefs, Reason::ResolvedRefs);
    let mut certs = Vec::new();
    let mut invalid = 0;
    for r in refs {
        let kind = match r.group.as_str() {
            "" => r.kind.clone(),
            group => format!("{group}/{}", r.kind),
        };
        let target = format!("{kind} {}/{}", key.namespace, r.name);
        let found = match (r.group.as_str(), r.kind.as_str()) {
            ("", "ConfigMap") => {
                let map = snapshot
                    .config_maps
                    .get(&ObjectRef::new(&key.namespace, &r.name));
                super::tls::ca_certificates(map).map_err(|why| {
                    (
                        Reason::InvalidCACertificateRef,
                        format!("caCertificateRef {target} {why}"),
                    )
                })
            }
            _ => Err((
                Reason::InvalidKind,
                format!("caCertificateRef {target} is not a core ConfigMap"),
            )),
        };
        match found {
            Ok(found) => certs.extend(found),
            Err((reason, message)) => {
                invalid += 1;
                if resolved_refs.status {
                    resolved_refs = Cond::new(Type::ResolvedRefs, false, reason, message);
                }
            }
        }
    }
    let well_known = validation.well_known_ca_certificates.as_deref();
    let problem = if !refs.is_empty() && invalid == refs.len() {
        Some((
            Reason::NoValidCACertificate,
            format!("no caCertificateRef is usable: {}", resolved_refs.message),
        ))
    } else if !refs.is_empty() && well_known.is_some() {
        Some((
            Reason::Invalid,
            "caCertificateRefs and wellKnownCACertificates are both set; set one".into(),
        ))
    } else if refs.is_empty() && well_known != Some("System") {
        Some((
            Reason::Invalid,
            match well_known {
                Some(other) => {
                    format!("wellKnownCACertificates {other:?} is not supported; use System")
                }
                None => "neither caCertificateRefs nor wellKnownCACertificates is set".into(),
            },
        ))
    } else {
        hostname_problem(&validation.hostname)
            .or_else(|| san_problem(policy))
            .or_else(|| {
                (policy.spec.options.as_ref())
                    .filter(|o| !o.is_empty())
                    .map(|_| (Reason::Invalid, "options are not supported".into()))
            })
    };
    let accepted = match problem {
        Some((reason, message)) => Cond::new(Type::Accepted, false, reason, message),
        None => Cond::ok(Type::Accepted, Reason::Accepted),
    };
    let tls = (accepted.status && resolved_refs.status).then(|| {
        let server_name = validation.hostname.to_ascii_lowercase();
        let id = match refs.is_empty() {
            true => format!("{server_name}/system"),
            false => format!("{server_name}/{}", short_hash(certs.concat().as_bytes())),
        };
        BackendTls {
            server_name,
            trusted_ca_certs: (!refs.is_empty()).then_some(certs),
            id,
        }
    });
    Verdict {
        accepted,
        resolved_refs,
        tls,
    }
}

fn hostname_problem(hostname: &str) -> Option<(Reason, String)> {
    match hostnames::validate(hostname) {
        Err(why) => Some((Reason::Invalid, format!("validation.hostname: {why}"))),
        Ok(()) if hostname.starts_with("*.") => Some((
            Reason::Invalid,
            "validation.hostname must be a name, not a wildcard".into(),
        )),
        Ok(()) => None,
    }
}

/// Kengine verifies the backend's certificate against one name, the one it
/// sends as SNI: a `subjectAltNames` list is expressible only when it says
/// the same as `hostname`.
fn san_problem(policy: &BackendTlsPolicy) -> Option<(Reason, String)> {
    let validation = &policy.spec.validation;
    let sans = validation.subject_alt_names.as_deref().unwrap_or_default();
    let expressible = sans.iter().all(|s| {
        s.r#type == SanType::Hostname
            && (s.hostname.as_deref()).is_some_and(|h| h.eq_ignore_ascii_case(&validation.hostname))
    });
    (!expressible).then(|| {
        (
            Reason::Invalid,
            "subjectAltNames other than validation.hostname are not supported: Kengine verifies the backend's certificate against the hostname it sends as SNI".into(),
        )
    })
}

/// The policies with a targetRef to `service` with exactly this
/// sectionName (`None`: the Service as a whole), the winner first: the
/// oldest, then the first by namespace/name (GEP-713).
fn competing<'s>(
    snapshot: &'s Snapshot,
    service: &ObjectRef,
    section: Option<&str>,
) -> Vec<&'s ObjectRef> {
    let mut found: Vec<(&ObjectRef, &BackendTlsPolicy)> = (snapshot.backend_tls_policies.iter())
        .filter(|(key, _)| key.namespace == service.namespace)
        .filter(|(_, p)| {
            p.spec.target_refs.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == "Service"
                    && t.name == service.name
                    && t.section_name.as_deref() == section
            })
        })
        .collect();
    found.sort_by_key(|(key, p)| (p.metadata.creation_timestamp.as_ref().map(|t| t.0), *key));
    found.into_iter().map(|(key, _)| key).collect()
}

/// The name of the Service port `port`, if it has one.
fn port_name(service: &Service, port: i32) -> Option<&str> {
    (service.spec.iter().flat_map(|s| s.ports.iter().flatten()))
        .find(|p| p.port == port)
        .and_then(|p| p.name.as_deref())
        .filter(|n| !n.is_empty())
}

/// The policy that applies to port `port` of `service`: the winner among
/// those naming the port by its name, else among those naming the Service.
pub fn for_port<'s>(
    snapshot: &'s Snapshot,
    key: &ObjectRef,
    service: &Service,
    port: i32,
) -> Option<&'s ObjectRef> {
    if snapshot.backend_tls_policies.is_empty() {
        return None;
    }
    let named =
        port_name(service, port).and_then(|n| competing(snapshot, key, Some(n)).first().copied());
    named.or_else(|| competing(snapshot, key, None).first().copied())
}

/// Every policy that targets port `port` of `service` (the one applied,
/// and those it takes precedence over): all of them get status.
fn targeting<'s>(
    snapshot: &'s Snapshot,
    key: &ObjectRef,
    service: &Service,
    port: i32,
) -> Vec<&'s ObjectRef> {
    let mut all = competing(snapshot, key, None);
    if let Some(name) = port_name(service, port) {
        all.extend(competing(snapshot, key, Some(name)));
    }
    all
}

/// The policy that beats `key` on one of its targetRefs, if any.
fn conflicted_by<'s>(
    snapshot: &'s Snapshot,
    key: &ObjectRef,
    policy: &BackendTlsPolicy,
) -> Option<&'s ObjectRef> {
    policy.spec.target_refs.iter().find_map(|t| {
        let service = ObjectRef::new(&key.namespace, &t.name);
        let winner = *competing(snapshot, &service, t.section_name.as_deref()).first()?;
        (winner != key).then_some(winner)
    })
}

/// Records, for each BackendTLSPolicy a backendRef of `route` runs into,
/// the Gateways of ours the route names.
pub fn route_uses(
    snapshot: &Snapshot,
    key: &ObjectRef,
    rules: &[HttpRouteRules],
    gateways: &[ObjectRef],
    uses: &mut BTreeMap<ObjectRef, BTreeSet<ObjectRef>>,
) {
    let refs = (rules.iter()).flat_map(|r| r.backend_refs.iter().flatten());
    for r in refs {
        if !r.group.as_deref().unwrap_or("").is_empty()
            || r.kind.as_deref().unwrap_or("Service") != "Service"
        {
            continue;
        }
        let service_key = ObjectRef::new(r.namespace.as_deref().unwrap_or(&key.namespace), &r.name);
        let (Some(service), Some(port)) = (snapshot.services.get(&service_key), r.port) else {
            continue;
        };
        for policy in targeting(snapshot, &service_key, service, port) {
            uses.entry(policy.clone())
                .or_default()
                .extend(gateways.iter().cloned());
        }
    }
}

/// Our `status.ancestors` entries of each BackendTLSPolicy a backendRef of
/// a route of ours runs into: one per Gateway of ours the route names.
pub fn policy_status(
    snapshot: &Snapshot,
    uses: &BTreeMap<ObjectRef, BTreeSet<ObjectRef>>,
    controller_name: &str,
    now: &Time,
) -> BTreeMap<ObjectRef, Vec<BackendTlsPolicyStatusAncestors>> {
    uses.iter()
        .filter_map(|(key, gateways)| {
            let policy = snapshot.backend_tls_policies.get(key)?;
            let verdict = verdict(snapshot, key, policy);
            let accepted = match conflicted_by(snapshot, key, policy) {
                Some(winner) => Cond::new(
                    Type::Accepted,
                    false,
                    Reason::Conflicted,
                    format!("BackendTLSPolicy {winner} targets the same Service port and takes precedence (older, or first by namespace/name)"),
                ),
                None => verdict.accepted,
            };
            let previous = policy.status.as_ref().map(|s| &s.ancestors[..]);
            let entries = (gateways.iter().take(MAX_ANCESTORS))
                .map(|gateway| {
                    let ancestor_ref = BackendTlsPolicyStatusAncestorsAncestorRef {
                        group: Some(GROUP.into()),
                        kind: Some("Gateway".into()),
                        name: gateway.name.clone(),
                        namespace: Some(gateway.namespace.clone()),
                        port: None,
                        section_name: None,
                    };
                    let before = (previous.into_iter().flatten())
                        .find(|e| e.controller_name == controller_name && e.ancestor_ref == ancestor_ref)
                        .map(|e| &e.conditions[..]);
                    let conds = vec![accepted.clone(), verdict.resolved_refs.clone()];
                    BackendTlsPolicyStatusAncestors {
                        ancestor_ref,
                        conditions: stamp(conds, policy.metadata.generation, before, now),
                        controller_name: controller_name.to_string(),
                    }
                })
                .collect();
            Some((key.clone(), entries))
        })
        .collect()
}
