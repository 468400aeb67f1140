//! Route attachment (parentRefs × listeners) and the statuses it decides.

use std::collections::BTreeMap;

use gateway_api::apis::experimental::gateways::{
    Gateway, GatewayStatus, GatewayStatusAddresses, GatewayStatusListeners,
    GatewayStatusListenersSupportedKinds,
};
use gateway_api::apis::experimental::httproutes::{HttpRoute, HttpRouteStatusParentsParentRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{Cond, Reason, Type, stamp};
use super::gateways::{self, GROUP, GatewayModel, HTTP_ROUTE, Protocol};
use super::hostnames::{self, Effective, effective_hostnames};
use super::layout::Bucket;
use super::rule_backends;
use super::rules::{self, CompiledMatch, ListenerContext};
use super::servers::ListenerId;
use crate::snapshot::{ObjectRef, Snapshot};

#[derive(Debug, Default)]
pub struct Attachments<'s> {
    /// What each listener serves: effective hostname → matches.
    pub buckets: BTreeMap<ListenerId, Vec<Bucket>>,
    /// Our `status.parents` entries per route, before stamping, in the
    /// snapshot's order of routes.
    pub parents: Vec<RouteParents<'s>>,
}

/// A route of ours and its `status.parents` entries, before stamping.
pub type RouteParents<'s> = (
    &'s ObjectRef,
    &'s HttpRoute,
    Vec<(HttpRouteStatusParentsParentRef, Vec<Cond>)>,
);

pub fn attach<'s>(snapshot: &'s Snapshot, models: &mut [GatewayModel]) -> Attachments<'s> {
    let index: BTreeMap<(&str, &str), usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| ((m.key.namespace.as_str(), m.key.name.as_str()), i))
        .collect();
    let mut out = Attachments::default();
    // Routes attached to each listener: how many, and the last one counted
    // (a route's attachments come one after the other).
    let mut attached: BTreeMap<ListenerId, (i32, Option<&ObjectRef>)> = BTreeMap::new();
    let mut caches = rule_backends::Caches::default();
    for (key, route) in &snapshot.http_routes {
        let parents: Vec<_> = route
            .spec
            .parent_refs
            .iter()
            .flatten()
            .filter(|p| gateways::names_a_gateway(p.group.as_deref(), p.kind.as_deref()))
            .filter_map(|p| {
                let namespace = p.namespace.as_deref().unwrap_or(&key.namespace);
                index.get(&(namespace, p.name.as_str())).map(|&g| (p, g))
            })
            .collect();
        if parents.is_empty() {
            continue; // Not ours: leave its status to whoever owns its parents.
        }
        // Conditions do not depend on the listener; redirect defaults do.
        // Without a redirect, this one compilation serves every listener.
        let mut compiled = rules::compile(
            snapshot,
            route,
            ListenerContext {
                port: 0,
                https: false,
            },
            &mut caches,
        );
        // The CRD schema would refuse the whole route; files skip it.
        let bad_hostname = (route.spec.hostnames.iter().flatten())
            .find_map(|h| hostnames::validate(h).err())
            .map(|why| Cond::new(Type::Accepted, false, Reason::UnsupportedValue, why));
        let shared =
            (!rules::depends_on_listener(route)).then(|| std::mem::take(&mut compiled.matches));
        let mut per_listener: BTreeMap<(u16, bool), Vec<CompiledMatch>> = BTreeMap::new();
        let mut entries = Vec::new();
        for (parent, g) in parents {
            let parent_ref = HttpRouteStatusParentsParentRef {
                group: Some(GROUP.into()),
                kind: Some("Gateway".into()),
                name: parent.name.clone(),
                namespace: parent.namespace.clone(),
                port: parent.port,
                section_name: parent.section_name.clone(),
            };
            let accepted = match (
                bad_hostname.as_ref().or(compiled.unsupported.as_ref()),
                &models[g].rejected,
            ) {
                (Some(cond), _) => cond.clone(),
                (None, Some(_)) => Cond::new(
                    Type::Accepted,
                    false,
                    Reason::NotAllowedByListeners,
                    format!("Gateway {} is not accepted", models[g].key),
                ),
                (None, None) => {
                    let listeners = candidate_listeners(
                        snapshot,
                        &models[g],
                        key,
                        route.spec.hostnames.as_deref().unwrap_or_default(),
                        parent.section_name.as_deref(),
                        parent.port,
                    );
                    match listeners {
                        Err(cond) => cond,
                        Ok(found) => {
                            for (l, hosts) in found {
                                let (count, last) = attached.entry((g, l)).or_default();
                                if *last != Some(key) {
                                    *count += 1;
                                    *last = Some(key);
                                }
                                let listener = &models[g].listeners[l];
                                let ctx = ListenerContext {
                                    port: listener.port,
                                    https: listener.protocol == Some(Protocol::Https),
                                };
                                let matches = match &shared {
                                    Some(matches) => matches,
                                    None => per_listener
                                        .entry((ctx.port, ctx.https))
                                        .or_insert_with(|| {
                                            rules::compile(snapshot, route, ctx, &mut caches)
                                                .matches
                                        }),
                                };
                                let bucket = out.buckets.entry((g, l)).or_default();
                                for (host, origin) in hosts {
                                    bucket.push(Bucket {
                                        host,
                                        origin,
                                        matches: matches.clone(),
                                    });
                                }
                            }
                            Cond::ok(Type::Accepted, Reason::Accepted)
                        }
                    }
                }
            };
            let mut conds = vec![accepted];
            conds.push(
                compiled
                    .unresolved
                    .clone()
                    .unwrap_or_else(|| Cond::ok(Type::ResolvedRefs, Reason::ResolvedRefs)),
            );
            entries.push((parent_ref, conds));
        }
        out.parents.push((key, route, entries));
    }
    for ((g, l), (count, _)) in attached {
        models[g].listeners[l].attached_routes = count;
    }
    out
}

/// The listeners a parentRef selects that accept the route, with the
/// route's effective hostnames on each; or the Accepted=False condition.
fn candidate_listeners(
    snapshot: &Snapshot,
    gateway: &GatewayModel,
    route: &ObjectRef,
    route_hostnames: &[String],
    section: Option<&str>,
    port: Option<i32>,
) -> Result<Vec<(usize, Vec<Effective>)>, Cond> {
    // Why nothing matched, in the order the checks apply.
    let (mut selected, mut allowed) = (false, false);
    let mut matched: Vec<(usize, Vec<Effective>)> = Vec::new();
    for (i, l) in gateway.listeners.iter().enumerate() {
        if !(section.is_none_or(|s| s == l.name) && port.is_none_or(|p| p == i32::from(l.port))) {
            continue;
        }
        selected = true;
        if !(l.accepts_routes()
            && l.kinds.iter().any(|k| k == HTTP_ROUTE)
            && gateways::namespace_allowed(snapshot, l, &gateway.key, &route.namespace))
        {
            continue;
        }
        allowed = true;
        if let Some(hosts) = effective_hostnames(&l.host, route_hostnames) {
            matched.push((i, hosts));
        }
    }
    if !selected {
        return Err(Cond::new(
            Type::Accepted,
            false,
            Reason::NoMatchingParent,
            "no listener matches the parentRef's sectionName and port",
        ));
    }
    if !allowed {
        return Err(Cond::new(
            Type::Accepted,
            false,
            Reason::NotAllowedByListeners,
            "no selected listener allows this route",
        ));
    }
    if matched.is_empty() {
        return Err(Cond::new(
            Type::Accepted,
            false,
            Reason::NoMatchingListenerHostname,
            "no hostname of this route matches a selected listener's hostname",
        ));
    }
    Ok(matched)
}

pub fn gateway_status(gateway: &Gateway, model: &GatewayModel, now: &Time) -> GatewayStatus {
    let previous = gateway.status.as_ref();
    let generation = gateway.metadata.generation;
    let listeners: Vec<GatewayStatusListeners> = model
        .listeners
        .iter()
        .map(|l| {
            let problem = |t: Type| l.problems.iter().find(|c| c.type_ == t).cloned();
            let programmed = l.usable() && model.rejected.is_none();
            let conds = vec![
                problem(Type::Accepted)
                    .unwrap_or_else(|| Cond::ok(Type::Accepted, Reason::Accepted)),
                problem(Type::ResolvedRefs)
                    .unwrap_or_else(|| Cond::ok(Type::ResolvedRefs, Reason::ResolvedRefs)),
                problem(Type::Conflicted)
                    .unwrap_or_else(|| Cond::new(Type::Conflicted, false, Reason::NoConflicts, "")),
                match (&model.rejected, programmed) {
                    (_, true) => Cond::ok(Type::Programmed, Reason::Programmed),
                    // Its own conditions may all be True: say what stops it.
                    (Some(rejected), _) if l.usable() => Cond::new(
                        Type::Programmed,
                        false,
                        Reason::Invalid,
                        format!("the Gateway is not accepted: {}", rejected.message),
                    ),
                    _ => Cond::new(
                        Type::Programmed,
                        false,
                        Reason::Invalid,
                        "listener is not valid; see its other conditions",
                    ),
                },
            ];
            let before = previous
                .and_then(|s| s.listeners.as_ref())
                .and_then(|ls| ls.iter().find(|p| p.name == l.name))
                .map(|p| &p.conditions[..]);
            GatewayStatusListeners {
                attached_routes: l.attached_routes,
                conditions: stamp(conds, generation, before, now),
                name: l.name.clone(),
                supported_kinds: Some(
                    l.kinds
                        .iter()
                        .map(|k| GatewayStatusListenersSupportedKinds {
                            group: Some(GROUP.into()),
                            kind: k.clone(),
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    let usable = model.listeners.iter().filter(|l| l.usable()).count();
    let accepted = match &model.rejected {
        Some(cond) => cond.clone(),
        None if usable == model.listeners.len() => Cond::ok(Type::Accepted, Reason::Accepted),
        None => Cond::new(
            Type::Accepted,
            usable > 0,
            Reason::ListenersNotValid,
            format!(
                "{} of {} listeners are not valid",
                model.listeners.len() - usable,
                model.listeners.len()
            ),
        ),
    };
    let programmed = if !model.unusable.is_empty() {
        let list: Vec<String> = model.unusable.iter().map(ToString::to_string).collect();
        Cond::new(
            Type::Programmed,
            false,
            Reason::AddressNotUsable,
            match model.managed {
                true => format!(
                    "the fleet's Service cannot take {} (the API server refuses loopback and link-local external IPs)",
                    list.join(", ")
                ),
                false => format!("cannot bind {}", list.join(", ")),
            },
        )
    } else if accepted.status && usable > 0 {
        Cond::ok(Type::Programmed, Reason::Programmed)
    } else if let Some(rejected) = &model.rejected {
        Cond::new(
            Type::Programmed,
            false,
            Reason::Invalid,
            format!("the Gateway is not accepted: {}", rejected.message),
        )
    } else {
        Cond::new(
            Type::Programmed,
            false,
            Reason::Invalid,
            "no listener can be programmed",
        )
    };
    let before = previous.and_then(|s| s.conditions.as_deref());
    GatewayStatus {
        addresses: (!model.binds.is_empty() || !model.service_ips.is_empty()).then(|| {
            (model.binds.iter().chain(&model.service_ips))
                .map(|ip| GatewayStatusAddresses {
                    r#type: Some("IPAddress".into()),
                    value: ip.to_string(),
                })
                .collect()
        }),
        attached_listener_sets: None,
        conditions: Some(stamp(
            [accepted, programmed]
                .into_iter()
                .chain(model.unresolved.clone())
                .chain(
                    model
                        .insecure_frontend
                        .then(super::frontend_tls::insecure_condition),
                )
                .collect(),
            generation,
            before,
            now,
        )),
        listeners: Some(listeners),
    }
}
