//! Route attachment (parentRefs × listeners) and the statuses it decides.

use std::collections::BTreeMap;

use foldhash::HashSet;

use gateway_api::apis::experimental::gateways::{
    Gateway, GatewayStatus, GatewayStatusAddresses, GatewayStatusListeners,
    GatewayStatusListenersSupportedKinds,
};
use gateway_api::apis::experimental::grpcroutes::GrpcRoute;
use gateway_api::apis::experimental::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteStatusParentsParentRef,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::conditions::{Cond, Reason, Type, stamp};
use super::gateways::{self, GROUP, GatewayModel, Protocol};
use super::grpc_routes::{Converted, RouteKind};
use super::hostnames::{self, Effective, Host, effective_hostnames};
use super::layout::Bucket;
use super::rule_backends;
use super::rules::{self, CompiledMatch, ListenerContext};
use super::servers::ListenerId;
use crate::snapshot::{ObjectRef, Snapshot};

#[derive(Debug, Default)]
pub struct Attachments<'s> {
    /// What each listener serves: effective hostname → matches.
    pub buckets: BTreeMap<ListenerId, Vec<Bucket>>,
    /// Our `status.parents` entries per route, before stamping: HTTPRoutes
    /// in key order, then GRPCRoutes in key order.
    pub parents: Vec<RouteParents<'s>>,
}

/// A route of either kind, as the rules compile it: a GRPCRoute's rules
/// converted, the rest borrowed from the object itself.
#[derive(Debug, Clone, Copy)]
pub struct RouteRef<'s> {
    pub key: &'s ObjectRef,
    pub object: RouteObject<'s>,
    /// The HTTPRoute's rules, or the GRPCRoute's converted.
    pub rules: &'s [HttpRouteRules],
    /// What the conversion of a GRPCRoute could not express.
    unsupported: Option<&'s Cond>,
}

/// The object a [`RouteRef`] is read from; its status is that one's.
#[derive(Debug, Clone, Copy)]
pub enum RouteObject<'s> {
    Http(&'s HttpRoute),
    Grpc(&'s GrpcRoute),
}

/// A parentRef of either kind of route (both have the same fields).
#[derive(Debug, Clone, Copy)]
pub struct ParentRef<'s> {
    group: Option<&'s str>,
    kind: Option<&'s str>,
    name: &'s str,
    namespace: Option<&'s str>,
    port: Option<i32>,
    section_name: Option<&'s str>,
}

impl<'s> RouteRef<'s> {
    pub fn kind(&self) -> RouteKind {
        match self.object {
            RouteObject::Http(_) => RouteKind::Http,
            RouteObject::Grpc(_) => RouteKind::Grpc,
        }
    }

    fn meta(&self) -> &'s ObjectMeta {
        match self.object {
            RouteObject::Http(r) => &r.metadata,
            RouteObject::Grpc(r) => &r.metadata,
        }
    }

    pub fn created(&self) -> Option<Timestamp> {
        self.meta().creation_timestamp.as_ref().map(|t| t.0)
    }

    fn hostnames(&self) -> &'s [String] {
        let hostnames = match self.object {
            RouteObject::Http(r) => &r.spec.hostnames,
            RouteObject::Grpc(r) => &r.spec.hostnames,
        };
        hostnames.as_deref().unwrap_or_default()
    }

    fn parent_refs(&self) -> impl Iterator<Item = ParentRef<'s>> + use<'s> {
        // The two generated parentRef types have the same fields.
        macro_rules! borrowed {
            ($p:expr) => {
                ParentRef {
                    group: $p.group.as_deref(),
                    kind: $p.kind.as_deref(),
                    name: &$p.name,
                    namespace: $p.namespace.as_deref(),
                    port: $p.port,
                    section_name: $p.section_name.as_deref(),
                }
            };
        }
        let (http, grpc) = match self.object {
            RouteObject::Http(r) => (r.spec.parent_refs.as_deref(), None),
            RouteObject::Grpc(r) => (None, r.spec.parent_refs.as_deref()),
        };
        let http = (http.unwrap_or_default().iter()).map(|p| borrowed!(p));
        let grpc = (grpc.unwrap_or_default().iter()).map(|p| borrowed!(p));
        http.chain(grpc)
    }
}

/// A route of either kind, by kind and key.
type RouteId<'s> = (RouteKind, &'s ObjectRef);

/// A route of ours and its `status.parents` entries, before stamping.
pub type RouteParents<'s> = (
    RouteRef<'s>,
    Vec<(HttpRouteStatusParentsParentRef, Vec<Cond>)>,
);

/// Every route of both kinds: HTTPRoutes, then the converted GRPCRoutes.
fn all_routes<'s>(
    snapshot: &'s Snapshot,
    grpc: &'s [(&'s ObjectRef, &'s GrpcRoute, Converted)],
) -> impl Iterator<Item = RouteRef<'s>> {
    let http = snapshot.http_routes.iter().map(|(key, route)| RouteRef {
        key,
        object: RouteObject::Http(route),
        rules: route.spec.rules.as_deref().unwrap_or_default(),
        unsupported: None,
    });
    http.chain(grpc.iter().map(|&(key, route, ref c)| RouteRef {
        key,
        object: RouteObject::Grpc(route),
        rules: &c.rules,
        unsupported: c.unsupported.as_ref(),
    }))
}

/// The parentRefs of `route` that name a Gateway of ours, with its index.
fn our_parents<'s, 'i>(
    route: &RouteRef<'s>,
    index: &'i BTreeMap<(&str, &str), usize>,
) -> impl Iterator<Item = (ParentRef<'s>, usize)> + use<'s, 'i> {
    let namespace = route.key.namespace.as_str();
    (route.parent_refs())
        .filter(|p| gateways::names_a_gateway(p.group, p.kind))
        .filter_map(move |p| {
            let namespace = p.namespace.unwrap_or(namespace);
            index.get(&(namespace, p.name)).map(|&g| (p, g))
        })
}

pub fn attach<'s>(
    snapshot: &'s Snapshot,
    grpc: &'s [(&'s ObjectRef, &'s GrpcRoute, Converted)],
    models: &mut [GatewayModel],
) -> Attachments<'s> {
    let index: BTreeMap<(&str, &str), usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| ((m.key.namespace.as_str(), m.key.name.as_str()), i))
        .collect();
    let mut conflicts = match snapshot.http_routes.is_empty() || grpc.is_empty() {
        true => KindConflicts::default(),
        false => kind_conflicts(snapshot, models, &index, all_routes(snapshot, grpc)),
    };
    let mut out = Attachments::default();
    // Routes attached to each listener: how many, and the last one counted
    // (a route's attachments come one after the other).
    let mut attached: BTreeMap<ListenerId, (i32, Option<RouteId>)> = BTreeMap::new();
    let mut caches = rule_backends::Caches::default();
    // `pos` is the route's place in `all_routes`, as the conflict pass saw it.
    for (pos, r) in all_routes(snapshot, grpc).enumerate() {
        let key = r.key;
        let mut parents = our_parents(&r, &index).peekable();
        if parents.peek().is_none() {
            continue; // Not ours: leave its status to whoever owns its parents.
        }
        // Conditions do not depend on the listener; redirect defaults do.
        // Without a redirect, this one compilation serves every listener.
        let anywhere = ListenerContext {
            port: 0,
            https: false,
        };
        let mut compiled = rules::compile(snapshot, r, anywhere, None, &mut caches);
        // The CRD schema would refuse the whole route; files skip it.
        let bad_hostname = (r.hostnames().iter())
            .find_map(|h| hostnames::validate(h).err())
            .map(|why| Cond::new(Type::Accepted, false, Reason::UnsupportedValue, why));
        let unsupported = (bad_hostname.as_ref())
            .or(r.unsupported)
            .or(compiled.unsupported.as_ref())
            .cloned();
        let per_port = rules::depends_on_listener(r.rules);
        let shared = (!per_port).then(|| std::mem::take(&mut compiled.matches));
        // Compilations for a listener's port and scheme (when the route's
        // redirects depend on them) and its Gateway's backend client
        // certificate (when it has one), by (port, https, certificate).
        let mut per_listener: BTreeMap<(u16, bool, Option<&str>), Vec<CompiledMatch>> =
            BTreeMap::new();
        let mut entries = Vec::new();
        for (i, (parent, g)) in parents.enumerate() {
            let parent_ref = HttpRouteStatusParentsParentRef {
                group: Some(GROUP.into()),
                kind: Some("Gateway".into()),
                name: parent.name.into(),
                namespace: parent.namespace.map(Into::into),
                port: parent.port,
                section_name: parent.section_name.map(Into::into),
            };
            let accepted = match (&unsupported, &models[g].rejected) {
                (Some(cond), _) => cond.clone(),
                (None, Some(_)) => Cond::new(
                    Type::Accepted,
                    false,
                    Reason::NotAllowedByListeners,
                    format!("Gateway {} is not accepted", models[g].key),
                ),
                (None, None) => {
                    let listeners = conflicts
                        .take_candidates(pos, i)
                        .unwrap_or_else(|| {
                            candidate_listeners(
                                snapshot,
                                &models[g],
                                r.kind(),
                                key,
                                r.hostnames(),
                                parent.section_name,
                                parent.port,
                            )
                        })
                        .and_then(|found| keep_won(found, &conflicts.lost, pos, r.kind(), g));
                    match listeners {
                        Err(cond) => cond,
                        Ok(found) => {
                            for (l, hosts) in found {
                                let (count, last) = attached.entry((g, l)).or_default();
                                if *last != Some((r.kind(), key)) {
                                    *count += 1;
                                    *last = Some((r.kind(), key));
                                }
                                let listener = &models[g].listeners[l];
                                let ctx = ListenerContext {
                                    port: listener.port,
                                    https: listener.protocol == Some(Protocol::Https),
                                };
                                let cert = models[g].client_cert.as_ref();
                                let matches = match (&shared, cert) {
                                    (Some(matches), None) => matches,
                                    _ => {
                                        let ctx = if per_port { ctx } else { anywhere };
                                        let id = cert.map(|c| c.id.as_str());
                                        (per_listener.entry((ctx.port, ctx.https, id)))
                                            .or_insert_with(|| {
                                                rules::compile(snapshot, r, ctx, cert, &mut caches)
                                                    .matches
                                            })
                                    }
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
        out.parents.push((r, entries));
    }
    for ((g, l), (count, _)) in attached {
        models[g].listeners[l].attached_routes = count;
    }
    out
}

/// Attachments a route loses to a route of the other kind (HTTPRoute or
/// GRPCRoute) on the same listener with an intersecting hostname. The spec
/// accepts exactly one of the two: the oldest, then the first by
/// `namespace/name`. Routes are taken in that order, so a route loses a
/// listener when one taken before it, of the other kind, holds an
/// intersecting hostname there. Routes are known by their place in
/// `routes` (the order of [`all_routes`]).
fn kind_conflicts<'s>(
    snapshot: &Snapshot,
    models: &[GatewayModel],
    index: &BTreeMap<(&str, &str), usize>,
    routes: impl Iterator<Item = RouteRef<'s>>,
) -> KindConflicts {
    let mut routes: Vec<(usize, RouteRef<'s>)> = routes.enumerate().collect();
    let mut out = KindConflicts {
        candidates: Vec::with_capacity(routes.len()),
        ..Default::default()
    };
    out.candidates.resize_with(routes.len(), Vec::new);
    routes.sort_by_key(|(_, r)| (r.created(), r.key));
    let mut held: BTreeMap<ListenerId, Held> = BTreeMap::new();
    for (pos, r) in routes {
        for (i, (parent, g)) in our_parents(&r, index).enumerate() {
            if models[g].rejected.is_some() {
                continue;
            }
            let candidates = candidate_listeners(
                snapshot,
                &models[g],
                r.kind(),
                r.key,
                r.hostnames(),
                parent.section_name,
                parent.port,
            );
            for (l, hosts) in candidates.iter().flatten() {
                let held = held.entry((g, *l)).or_default();
                if hosts
                    .iter()
                    .any(|(h, _)| held.of(other_kind(r.kind())).intersects(h))
                {
                    out.lost.insert((pos, (g, *l)));
                } else {
                    let own = held.of_mut(r.kind());
                    for (h, _) in hosts {
                        own.insert(h.clone());
                    }
                }
            }
            let slots = &mut out.candidates[pos];
            if slots.len() <= i {
                slots.resize_with(i + 1, || None);
            }
            slots[i] = Some(candidates);
        }
    }
    out
}

/// What the kind-conflict pass found, by route (its place in
/// [`all_routes`]): the attachments routes lose, and each parentRef's
/// candidate listeners (by index among the route's parentRefs of ours),
/// computed once for both passes.
#[derive(Default)]
struct KindConflicts {
    lost: HashSet<(usize, ListenerId)>,
    candidates: Vec<Vec<Option<Candidates>>>,
}

impl KindConflicts {
    /// The candidates of parentRef `i` of route `pos`, if the pass
    /// computed them.
    fn take_candidates(&mut self, pos: usize, i: usize) -> Option<Candidates> {
        self.candidates.get_mut(pos)?.get_mut(i)?.take()
    }
}

/// The listeners a parentRef selects that accept a route, with its
/// effective hostnames on each; or the Accepted=False condition.
type Candidates = Result<Vec<(usize, Vec<Effective>)>, Cond>;

/// The hostnames the routes of each kind hold on one listener.
#[derive(Default)]
struct Held {
    http: HostSet,
    grpc: HostSet,
}

impl Held {
    fn of(&self, kind: RouteKind) -> &HostSet {
        match kind {
            RouteKind::Http => &self.http,
            RouteKind::Grpc => &self.grpc,
        }
    }

    fn of_mut(&mut self, kind: RouteKind) -> &mut HostSet {
        match kind {
            RouteKind::Http => &mut self.http,
            RouteKind::Grpc => &mut self.grpc,
        }
    }
}

/// Hostnames, exact ones looked up by name: most routes have their own,
/// and a listener may hold thousands.
#[derive(Default)]
struct HostSet {
    exact: HashSet<String>,
    /// Wildcards and the catch-all.
    patterns: Vec<Host>,
}

impl HostSet {
    fn insert(&mut self, host: Host) {
        match host {
            Host::Exact(name) => {
                self.exact.insert(name);
            }
            pattern => self.patterns.push(pattern),
        }
    }

    /// Does a request exist that `host` and a hostname held here both take?
    fn intersects(&self, host: &Host) -> bool {
        let overlap = |p: &Host| p.intersect(host).is_some();
        match host {
            Host::Exact(name) => self.exact.contains(name) || self.patterns.iter().any(overlap),
            pattern => {
                self.patterns.iter().any(overlap) || self.exact.iter().any(|e| pattern.matches(e))
            }
        }
    }
}

fn other_kind(kind: RouteKind) -> RouteKind {
    match kind {
        RouteKind::Http => RouteKind::Grpc,
        RouteKind::Grpc => RouteKind::Http,
    }
}

/// The listeners of Gateway `g` that route `pos`, of `kind`, did not lose
/// to a route of the other kind; Accepted=False when it lost all of them.
fn keep_won(
    found: Vec<(usize, Vec<Effective>)>,
    lost: &HashSet<(usize, ListenerId)>,
    pos: usize,
    kind: RouteKind,
    g: usize,
) -> Candidates {
    if lost.is_empty() {
        return Ok(found);
    }
    let won: Vec<_> = (found.into_iter())
        .filter(|(l, _)| !lost.contains(&(pos, (g, *l))))
        .collect();
    match won.is_empty() {
        false => Ok(won),
        true => Err(Cond::new(
            Type::Accepted,
            false,
            Reason::NotAllowedByListeners,
            format!(
                "an older {} holds an intersecting hostname on every selected listener (a listener serves HTTPRoutes or GRPCRoutes for a hostname, not both)",
                other_kind(kind).name()
            ),
        )),
    }
}

/// The listeners a parentRef selects that accept the route, with the
/// route's effective hostnames on each; or the Accepted=False condition.
fn candidate_listeners(
    snapshot: &Snapshot,
    gateway: &GatewayModel,
    kind: RouteKind,
    route: &ObjectRef,
    route_hostnames: &[String],
    section: Option<&str>,
    port: Option<i32>,
) -> Candidates {
    // Why nothing matched, in the order the checks apply.
    let (mut selected, mut allowed) = (false, false);
    let mut matched: Vec<(usize, Vec<Effective>)> = Vec::new();
    for (i, l) in gateway.listeners.iter().enumerate() {
        if !(section.is_none_or(|s| s == l.name) && port.is_none_or(|p| p == i32::from(l.port))) {
            continue;
        }
        selected = true;
        if !(l.accepts_routes()
            && l.kinds.iter().any(|k| k == kind.name())
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
                // The Gateway's only reference is its backend client
                // certificate: said when it has one.
                .chain(model.unresolved.clone().or_else(|| {
                    (model.client_cert.as_ref())
                        .map(|_| Cond::ok(Type::ResolvedRefs, Reason::ResolvedRefs))
                }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_routes_parent_refs_are_read_from_the_object() {
        let route: GrpcRoute = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "g", "namespace": "n"},
            "spec": {"parentRefs": [
                {"name": "gw", "sectionName": "grpc", "port": 443},
                {"name": "other", "namespace": "infra", "kind": "Gateway"},
            ]}
        }))
        .unwrap();
        let key = ObjectRef::new("n", "g");
        let r = RouteRef {
            key: &key,
            object: RouteObject::Grpc(&route),
            rules: &[],
            unsupported: None,
        };
        let refs: Vec<_> = (r.parent_refs())
            .map(|p| (p.name, p.namespace, p.kind, p.section_name, p.port))
            .collect();
        assert_eq!(
            refs,
            [
                ("gw", None, None, Some("grpc"), Some(443)),
                ("other", Some("infra"), Some("Gateway"), None, None),
            ]
        );
        assert_eq!(r.kind(), RouteKind::Grpc);
    }
}
