//! The shape of one Kengine server: dispatch that stays cheap as routes grow.
//!
//! Kengine matches routes linearly, so a flat list of 5,000 host routes makes
//! the last one ten times slower than the first. Instead:
//!
//! 1. Exact hostnames are sorted and split into host-matcher buckets of
//!    fan-out 16, each with a subroute beneath it. Kengine binary-searches
//!    host lists longer than 100, so buckets stay that long while they can
//!    (see `chunk_sizes`). Both the first and the last host cost a few cheap
//!    lookups. The fan-out weighs dispatch against reload: Kengine decodes
//!    a subroute by re-encoding its whole JSON, so each level of the tree
//!    costs a pass over the hosts beneath it on every load. At 5,000 routes
//!    fan-out 4 (7 levels) loaded 10% slower than 16 (3 levels), with the
//!    same dispatch cost within the bench's noise (BENCHMARKS.md, scenario 6).
//! 2. Wildcard hostnames follow, most specific first, each one regexp.
//! 3. A catch-all comes last, then a 404.
//!
//! Each leaf runs the hostname buckets that apply to it, most specific first
//! (the spec orders rules by hostname before path): a bucket used by one
//! host inline, a rule list shared by many hosts (a wildcard or catch-all
//! route) stored once as a *named route* and reached with `invoke`.
//! Listener isolation is decided here: a host only ever reaches the buckets
//! of its most specific listener. The shared proxies the routes invoke
//! (see `dispatch`) are named routes of the server too.

use std::collections::BTreeMap;
use std::rc::Rc;

use foldhash::HashSet;

use super::dispatch::SharedProxy;
use super::hostnames::{Host, OriginRank};
use super::rules::CompiledMatch;
use crate::kengine::config::{Handler, MatcherSet, RegexpMatcher, Route};

const FAN_OUT: usize = 16;

/// The matches one route brings under one effective hostname, with the
/// rank of the route's own hostname it came from: routes that share the
/// hostname are ordered by that rank first, then by their matches' precedence.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub host: Host,
    pub origin: OriginRank,
    pub matches: Vec<CompiledMatch>,
}

/// A listener as the layout sees it: its hostname and its route buckets.
#[derive(Debug, Clone)]
pub struct PlannedListener<'a> {
    /// Unique and stable: `namespace/gateway/listener`.
    pub id: String,
    pub host: Host,
    /// Effective hostname → every match attached under it. The routes move
    /// from owned buckets into the config; a match shared by several
    /// hostnames, or a borrowed bucket, is copied where it is used.
    pub buckets: std::borrow::Cow<'a, [Bucket]>,
}

/// Routes and named routes of one server. On a TLS server a request whose
/// Host belongs to another listener than its SNI does is answered 421.
/// The listeners are taken by value so their routes move into the config
/// (a borrowed slice is cloned, which shares rather than copies the routes).
pub fn routes<'a>(
    listeners: impl Into<Vec<PlannedListener<'a>>>,
    tls: bool,
    not_found: &Handler,
) -> (Vec<Route>, BTreeMap<String, Route>) {
    let mut listeners: Vec<PlannedListener<'a>> = listeners.into();
    let mut named = BTreeMap::new();
    // The shared proxies of every match placed on this server (seen: by
    // address, cheaper than by name).
    let mut proxies: BTreeMap<String, Route> = BTreeMap::new();
    let mut seen: HashSet<*const SharedProxy> = HashSet::default();
    let mut chains: Vec<Chain> = Vec::with_capacity(listeners.len());
    for listener in &mut listeners {
        let mut buckets = std::mem::take(&mut listener.buckets).into_owned();
        // Buckets of one hostname next to each other, in their order.
        buckets.sort_by(|a, b| a.host.cmp(&b.host));
        let mut buckets = buckets.into_iter().peekable();
        let mut chain = Chain::default();
        while let Some(Bucket {
            host,
            origin,
            matches,
        }) = buckets.next()
        {
            let mut ranked: Vec<(OriginRank, CompiledMatch)> =
                matches.into_iter().map(|m| (origin, m)).collect();
            while let Some(more) = buckets.next_if(|b| b.host == host) {
                ranked.extend(more.matches.into_iter().map(|m| (more.origin, m)));
            }
            ranked.sort_by(|a, b| (a.0, a.1.precedence()).cmp(&(b.0, b.1.precedence())));
            for proxy in ranked.iter().flat_map(|(_, m)| m.proxies()) {
                if seen.insert(Rc::as_ptr(proxy)) {
                    proxies.insert(proxy.name.clone(), proxy.route.clone());
                }
            }
            let routes: Vec<Route> = ranked.into_iter().map(|(_, m)| m.into_route()).collect();
            match host {
                // Only the leaf of this very host can reach an exact
                // bucket, so it is never named: the leaf holds it. (They
                // come first, by name: the order of `Host`.)
                Host::Exact(h) => chain.exact.push((h, Some(bucket_handlers(routes)))),
                other => {
                    let name = format!("{}|{other}", listener.id);
                    named.insert(
                        name.clone(),
                        Route::handle(vec![Handler::Subroute { routes }]),
                    );
                    chain.others.push((other, name));
                }
            }
        }
        chain.others.sort_by(|a, b| a.0.specificity_cmp(&b.0));
        chains.push(chain);
    }

    let mut patterns: Vec<Host> = listeners
        .iter()
        .map(|l| l.host.clone())
        .chain(chains.iter().flat_map(|c| {
            c.exact
                .iter()
                .map(|(h, _)| Host::Exact(h.clone()))
                .chain(c.others.iter().map(|(host, _)| host.clone()))
        }))
        .collect();
    // Exact hostnames first, by name (the order of the leaves); then the
    // others, most specific first.
    patterns.sort_unstable();
    patterns.dedup();
    let exact = patterns.partition_point(|p| matches!(p, Host::Exact(_)));
    patterns[exact..].sort_by(Host::specificity_cmp);
    let catch_all = patterns.last() == Some(&Host::Any);

    let mut leaves = Vec::with_capacity(exact);
    let mut routes = Vec::new();
    for pattern in patterns {
        // The most specific listener wins the host (listener isolation).
        let winner = listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| l.host.covers(&pattern))
            .min_by(|a, b| a.1.host.specificity_cmp(&b.1.host))
            .map(|(i, _)| i);
        let mut handlers = match winner {
            Some(i) => chains[i].handlers(&pattern, not_found),
            None => vec![not_found.clone()],
        };
        if let (true, Some(w)) = (tls && listeners.len() > 1, winner) {
            handlers.insert(0, misdirected_guard(&listeners, w));
        }
        match pattern {
            Host::Exact(h) => leaves.push((h, handlers)),
            Host::Wildcard(suffix) => routes.push(Route {
                matchers: vec![MatcherSet {
                    vars_regexp: Some(
                        [(
                            "{http.request.host}".to_string(),
                            RegexpMatcher {
                                name: None,
                                pattern: Host::wildcard_regexp(&suffix),
                            },
                        )]
                        .into(),
                    ),
                    ..Default::default()
                }],
                handle: handlers,
                terminal: false,
                ..Default::default()
            }),
            Host::Any => routes.push(Route::handle(handlers)),
        }
    }
    // A shared bucket invoked from one place only is inlined there:
    // `invoke` compiles its route on every request. Buckets that listener
    // isolation made unreachable are left out.
    let mut uses: BTreeMap<String, usize> = BTreeMap::new();
    for h in leaves
        .iter()
        .flat_map(|(_, handlers)| handlers)
        .chain(routes.iter().flat_map(|r| &r.handle))
    {
        if let Handler::Invoke { name } = h {
            *uses.entry(name.clone()).or_default() += 1;
        }
    }
    let mut inline = |handlers: &mut Vec<Handler>| {
        for h in handlers.iter_mut() {
            if let Handler::Invoke { name } = h
                && uses.get(name) == Some(&1)
                && let Some(mut route) = named.remove(name)
            {
                *h = route.handle.remove(0);
            }
        }
    };
    for (_, handlers) in &mut leaves {
        inline(handlers);
    }
    for route in &mut routes {
        inline(&mut route.handle);
    }
    named.retain(|name, _| uses.contains_key(name));
    named.extend(proxies);
    // Up to FAN_OUT leaves are routes of the server itself, decoded once.
    if leaves.len() > FAN_OUT {
        leaves = leaves
            .into_iter()
            .map(|(host, handlers)| {
                let handlers = name_heavy_leaf(&host, handlers, &mut named);
                (host, handlers)
            })
            .collect();
    }
    let mut all = tree(leaves);
    all.extend(routes);
    if !catch_all {
        all.push(Route::handle(vec![not_found.clone()]));
    }
    (all, named)
}

/// Answers 421 unless the TLS server name picks `winner` too: the SNI must
/// match its hostname and no more specific listener's.
fn misdirected_guard(listeners: &[PlannedListener<'_>], winner: usize) -> Handler {
    let sni = |host: &Host| {
        let pattern = match host {
            Host::Exact(h) => format!("^(?i){}$", super::literals::escape(h)),
            Host::Wildcard(suffix) => Host::wildcard_regexp(suffix),
            Host::Any => "".into(),
        };
        MatcherSet {
            vars_regexp: Some(
                [(
                    "{http.request.tls.server_name}".to_string(),
                    RegexpMatcher {
                        name: None,
                        pattern,
                    },
                )]
                .into(),
            ),
            ..Default::default()
        }
    };
    let own = &listeners[winner].host;
    let mut mismatch = Vec::new();
    if *own != Host::Any {
        mismatch.push(MatcherSet {
            not: Some(vec![sni(own)]),
            ..Default::default()
        });
    }
    for (i, l) in listeners.iter().enumerate() {
        if i != winner && own.covers(&l.host) {
            mismatch.push(sni(&l.host));
        }
    }
    Handler::Subroute {
        routes: vec![Route {
            matchers: mismatch,
            handle: vec![Handler::status(421)],
            terminal: false,
            ..Default::default()
        }],
    }
}

/// A listener's buckets: exact hostnames sorted by name, each held until
/// its leaf takes it; the rest (wildcards, then the catch-all) named, most
/// specific first. Looking exact ones up by name keeps the layout linear in
/// the number of hostnames.
#[derive(Default)]
struct Chain {
    exact: Vec<(String, Option<Vec<Handler>>)>,
    others: Vec<(Host, String)>,
}

impl Chain {
    /// Run every bucket that covers `pattern`, most specific first: its own
    /// exact bucket inline, shared ones invoked; a request no rule matched
    /// ends in 404.
    fn handlers(&mut self, pattern: &Host, not_found: &Handler) -> Vec<Handler> {
        let exact = match pattern {
            Host::Exact(h) => self
                .exact
                .binary_search_by(|(name, _)| name.cmp(h))
                .ok()
                .and_then(|i| self.exact[i].1.take()),
            _ => None,
        };
        // The host's own handlers, extended in place.
        let mut handlers = exact.unwrap_or_default();
        handlers.extend(
            (self.others.iter())
                .filter(|(host, _)| host.covers(pattern))
                .map(|(_, name)| Handler::Invoke { name: name.clone() }),
        );
        handlers.push(not_found.clone());
        handlers
    }
}

/// The handlers that run a host's own bucket. Kengine compiles a
/// subroute's routes on every request, so a bucket of one unconditional
/// route (a route with a single catch-all rule, the common case) runs its
/// handlers in the leaf itself: the same chain, one compile less.
fn bucket_handlers(mut routes: Vec<Route>) -> Vec<Handler> {
    match routes.as_mut_slice() {
        [only] if only.matchers.is_empty() && !only.terminal => std::mem::take(&mut only.handle),
        _ => {
            // Room for the 404 the leaf ends with (`Chain::handlers`).
            let mut handlers = Vec::with_capacity(2);
            handlers.push(Handler::Subroute { routes });
            handlers
        }
    }
}

/// A leaf of a nested tree that runs a subroute (several rules, or
/// conditional ones) moves into a named route that the leaf invokes.
/// Kengine decodes a subroute by re-encoding all of its JSON, so every
/// level of the tree above a leaf pays for the leaf's bytes again: named,
/// they are decoded once, and the tree carries only hosts and `invoke`s
/// (5,000 routes: 2.2 s → 1.6 s per load). Leaves without a subroute are a
/// few handlers, cheaper inline than the route `invoke` compiles on every
/// request.
fn name_heavy_leaf(
    host: &str,
    handlers: Vec<Handler>,
    named: &mut BTreeMap<String, Route>,
) -> Vec<Handler> {
    if !handlers
        .iter()
        .any(|h| matches!(h, Handler::Subroute { .. }))
    {
        return handlers;
    }
    // Other named routes are `proxy …` or `<namespace>/…|…`: no collision.
    let name = format!("host {host}");
    named.insert(name.clone(), Route::handle(handlers));
    vec![Handler::Invoke { name }]
}

/// Sorted exact hosts → a host-matcher tree of fan-out [`FAN_OUT`]. Below
/// the top, a request has already matched its subtree's hosts, so the last
/// child of a node needs no matcher: whoever failed its siblings is its.
/// (The top level keeps every matcher: unknown hosts fall through to the
/// wildcard and catch-all routes after the tree.)
fn tree(leaves: Vec<(String, Vec<Handler>)>) -> Vec<Route> {
    subtree(leaves, false)
}

fn subtree(leaves: Vec<(String, Vec<Handler>)>, nested: bool) -> Vec<Route> {
    let mut routes: Vec<Route> = if leaves.len() <= FAN_OUT {
        leaves
            .into_iter()
            .map(|(host, handle)| host_route(vec![host], handle))
            .collect()
    } else {
        let mut leaves = leaves.into_iter();
        chunk_sizes(leaves.len())
            .into_iter()
            .map(|size| {
                let mut chunk: Vec<_> = leaves.by_ref().take(size).collect();
                // A chunk of one host is its leaf, not a node above it.
                if let [_] = chunk.as_slice() {
                    let (host, handle) = chunk.remove(0);
                    return host_route(vec![host], handle);
                }
                let hosts = chunk.iter().map(|(h, _)| h.clone()).collect();
                host_route(
                    hosts,
                    vec![Handler::Subroute {
                        routes: subtree(chunk, true),
                    }],
                )
            })
            .collect()
    };
    if nested && let Some(last) = routes.last_mut() {
        last.matchers.clear();
    }
    routes
}

/// Kengine binary-searches a host list longer than this and scans a
/// shorter one, comparing every host on the way.
const LARGE: usize = 100;

/// How `n > FAN_OUT` sorted hosts are split among children, as evenly as
/// possible. A request for the last host scans every sibling list that is
/// not [`LARGE`], so children stay large as long as they can: 313 hosts
/// become 3 × 104 (three binary searches) rather than 4 × 79 (up to 316
/// compares).
fn chunk_sizes(n: usize) -> Vec<usize> {
    let large_children = n / (LARGE + 1);
    let k = if (2..FAN_OUT).contains(&large_children) {
        large_children
    } else {
        FAN_OUT
    };
    (0..k).map(|i| n / k + usize::from(i < n % k)).collect()
}

fn host_route(hosts: Vec<String>, handle: Vec<Handler>) -> Route {
    Route {
        matchers: vec![MatcherSet {
            host: Some(hosts),
            ..Default::default()
        }],
        handle,
        terminal: false,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(id: &str, host: Option<&str>, buckets: &[&str]) -> PlannedListener<'static> {
        PlannedListener {
            id: id.into(),
            host: Host::from_option(host),
            buckets: buckets
                .iter()
                .map(|b| {
                    let host = Host::from_option(Some(b).filter(|b| **b != "*").copied());
                    Bucket {
                        origin: host.origin_rank(),
                        host,
                        matches: vec![],
                    }
                })
                .collect::<Vec<_>>()
                .into(),
        }
    }

    fn invoked(route: &Route) -> Vec<String> {
        route
            .handle
            .iter()
            .filter_map(|h| match h {
                Handler::Invoke { name } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_bucket_of_one_unconditional_route_runs_inline() {
        let plain = Route::handle(vec![Handler::status(200)]);
        assert_eq!(
            bucket_handlers(vec![plain.clone()]),
            vec![Handler::status(200)]
        );
        // A matcher, a terminal flag or a second route needs the subroute's
        // route semantics.
        let matched = Route {
            matchers: vec![MatcherSet {
                path: Some(vec!["/a".into()]),
                ..Default::default()
            }],
            ..plain.clone()
        };
        let terminal = Route {
            terminal: true,
            ..plain.clone()
        };
        for routes in [
            vec![matched],
            vec![terminal],
            vec![plain.clone(), plain.clone()],
        ] {
            assert_eq!(
                bucket_handlers(routes.clone()),
                vec![Handler::Subroute { routes }]
            );
        }
    }

    #[test]
    fn exact_hosts_form_a_shallow_tree() {
        let hosts: Vec<String> = (0..100).map(|i| format!("h{i:03}.example.com")).collect();
        let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let (routes, named) = routes(
            &[listener("ns/gw/http", None, &refs)],
            false,
            &Handler::status(404),
        );
        assert!(
            named.keys().all(|name| name.starts_with("host ")),
            "buckets used once are inlined, not invoked: {:?}",
            named.keys()
        );
        // FAN_OUT buckets, then the catch-all listener's route (it has no catch-all bucket).
        assert_eq!(routes.len(), FAN_OUT + 1);
        let mut depth = 0;
        let mut level = &routes[..FAN_OUT];
        // Descend while the routes still dispatch on the host.
        while let Some(Handler::Subroute { routes }) = level[0].handle.first() {
            if level.len() == 1
                || routes
                    .first()
                    .is_none_or(|r| r.matchers.first().is_none_or(|m| m.host.is_none()))
            {
                break;
            }
            depth += 1;
            level = routes;
        }
        assert!(depth <= 4, "depth {depth}");
        assert_eq!(
            level[0].matchers[0].host.as_deref(),
            Some(&["h000.example.com".to_string()][..])
        );
    }

    /// Where Kengine sends `host` in `routes`: the first route whose host
    /// matcher has it (or that has none), descending into tree nodes.
    fn dispatch<'r>(routes: &'r [Route], host: &str) -> Option<&'r [Handler]> {
        for route in routes {
            let hosts = route.matchers.first().and_then(|m| m.host.as_ref());
            if hosts.is_some_and(|h| !h.iter().any(|x| x == host)) {
                continue;
            }
            return match &route.handle[..] {
                [Handler::Subroute { routes }] => dispatch(routes, host),
                leaf => Some(leaf),
            };
        }
        None
    }

    #[test]
    fn every_host_reaches_its_own_leaf_and_unknown_hosts_none() {
        for n in [1, 4, 5, 17, 100, 313, 1000] {
            let hosts: Vec<String> = (0..n).map(|i| format!("h{i:04}.example.com")).collect();
            let mark = |h: &str| {
                vec![Handler::Rewrite {
                    uri: h.to_string(),
                    path_regexp: vec![],
                }]
            };
            let routes = tree(hosts.iter().map(|h| (h.clone(), mark(h))).collect());
            assert!(
                routes.iter().all(|r| r.matchers.len() == 1),
                "{n}: the top level filters unknown hosts"
            );
            for h in &hosts {
                assert_eq!(dispatch(&routes, h), Some(&mark(h)[..]), "{n}: {h}");
            }
            for unknown in ["a.example.com", "h0000.example.co", "zzz"] {
                assert_eq!(dispatch(&routes, unknown), None, "{n}: {unknown}");
            }
        }
    }

    #[test]
    fn leaves_with_a_subroute_are_named_and_others_stay_inline() {
        let mut named = BTreeMap::new();
        let light = vec![Handler::status(200), Handler::status(404)];
        assert_eq!(name_heavy_leaf("a.com", light.clone(), &mut named), light);
        assert!(named.is_empty());
        let heavy = vec![Handler::Subroute { routes: vec![] }, Handler::status(404)];
        assert_eq!(
            name_heavy_leaf("b.com", heavy.clone(), &mut named),
            [Handler::Invoke {
                name: "host b.com".into()
            }]
        );
        assert_eq!(named["host b.com"].handle, heavy);
    }

    #[test]
    fn children_stay_binary_searchable_while_they_can() {
        assert_eq!(
            chunk_sizes(5000),
            [
                313, 313, 313, 313, 313, 313, 313, 313, 312, 312, 312, 312, 312, 312, 312, 312
            ]
        );
        assert_eq!(chunk_sizes(313), [105, 104, 104]);
        assert_eq!(chunk_sizes(202), [101, 101]);
        assert_eq!(
            chunk_sizes(201),
            [
                13, 13, 13, 13, 13, 13, 13, 13, 13, 12, 12, 12, 12, 12, 12, 12
            ]
        );
        assert_eq!(chunk_sizes(404), [101; 4]);
        assert_eq!(
            chunk_sizes(17),
            [2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
        );
        for n in FAN_OUT + 1..3000 {
            let sizes = chunk_sizes(n);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes.len() <= FAN_OUT && sizes.len() >= 2);
            if n >= 2 * (LARGE + 1) {
                assert!(sizes.iter().all(|&s| s > LARGE), "{n}: {sizes:?}");
            }
        }
    }

    #[test]
    fn hosts_fall_through_to_wildcard_buckets_of_the_same_listener_only() {
        let ls = [
            listener("ns/gw/any", None, &["a.example.com", "*.example.com", "*"]),
            listener(
                "ns/gw/foo",
                Some("*.foo.example.com"),
                &["*.foo.example.com"],
            ),
        ];
        let (routes, _) = routes(&ls, false, &Handler::status(404));
        let leaf = routes
            .iter()
            .find(|r| r.matchers.first().and_then(|m| m.host.as_ref()).is_some())
            .unwrap();
        // Its own bucket is inlined; the shared ones are invoked.
        assert!(matches!(leaf.handle[0], Handler::Subroute { .. }));
        assert_eq!(invoked(leaf), ["ns/gw/any|*.example.com", "ns/gw/any|*"]);
        let wild: Vec<_> = routes
            .iter()
            .filter(|r| r.matchers.first().is_some_and(|m| m.vars_regexp.is_some()))
            .collect();
        // *.foo.example.com belongs to the foo listener alone: no fall-through to the other listener.
        // (its one bucket is inlined, then the 404).
        assert!(invoked(wild[0]).is_empty());
        assert!(matches!(
            wild[0].handle[..],
            [Handler::Subroute { .. }, Handler::StaticResponse(_)]
        ));
        assert_eq!(invoked(wild[1]), ["ns/gw/any|*.example.com", "ns/gw/any|*"]);
        assert_eq!(invoked(routes.last().unwrap()), ["ns/gw/any|*"]);
    }

    #[test]
    fn an_exact_listener_without_routes_still_owns_its_host() {
        let ls = [
            listener("ns/gw/any", None, &["*"]),
            listener("ns/gw/x", Some("x.com"), &[]),
        ];
        let (routes, _) = routes(&ls, false, &Handler::status(404));
        assert_eq!(
            routes[0].matchers[0].host.as_deref(),
            Some(&["x.com".to_string()][..])
        );
        assert!(invoked(&routes[0]).is_empty());
        assert_eq!(routes[0].handle, vec![Handler::status(404)]);
    }
}
