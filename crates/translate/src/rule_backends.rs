//! A rule's backendRefs → the handlers that send requests to them.
//!
//! The rules of a namespace often name the same backends (an app's routes
//! share its Services), so a rule without per-backend filters or retries
//! reuses the handlers built for the same refs and timeouts: its backends
//! are resolved, and its shared proxy found, once per namespace.

use std::rc::Rc;

use foldhash::HashMap;

use gateway_api::apis::experimental::httproutes::{HttpRouteRules, HttpRouteRulesFilters};

use super::backend_client_cert::ClientCert;
use super::backends::{BackendRef, RefKey, Resolver};
use super::conditions::Cond;
use super::dispatch::{self, Proxies, Retry, SharedProxy, Target, Upstreams};
use super::filters;
use super::grpc_routes::RouteKind;
use crate::kengine::config::Handler;
use crate::snapshot::{ObjectRef, Snapshot};

/// The handlers of one rule's backends.
#[derive(Debug, Clone)]
pub struct RuleBackends {
    pub handlers: Vec<Handler>,
    /// The shared proxies `handlers` invoke.
    pub proxies: Rc<[Rc<SharedProxy>]>,
    /// Why the first unusable backendRef cannot be used (ResolvedRefs=False).
    pub unresolved: Option<Cond>,
}

/// What the compilations of one translate share.
#[derive(Default)]
pub struct Caches<'s> {
    resolver: Resolver<'s>,
    proxies: Proxies,
    /// The namespace `rules` holds answers for (refs without a namespace
    /// are relative to it).
    namespace: String,
    rules: HashMap<RuleKey<'s>, RuleBackends>,
}

/// A rule's kind, backendRefs, its two timeouts, and the id of the client
/// certificate its proxies present.
type RuleKey<'s> = (
    RouteKind,
    Vec<RefKey<'s>>,
    Option<&'s str>,
    Option<&'s str>,
    Option<Rc<ClientCert>>,
);

/// The handlers that send a request matching `rule` to its backends, or
/// why the rule cannot be served (Accepted=False).
pub fn handlers<'s>(
    snapshot: &Snapshot,
    kind: RouteKind,
    key: &ObjectRef,
    rule: &'s HttpRouteRules,
    client_cert: Option<&Rc<ClientCert>>,
    caches: &mut Caches<'s>,
) -> Result<RuleBackends, Cond> {
    let refs = rule.backend_refs.as_deref().unwrap_or_default();
    let plain = rule.retry.is_none()
        && refs
            .iter()
            .all(|r| r.filters.as_ref().is_none_or(Vec::is_empty));
    if !plain {
        return build(snapshot, kind, key, rule, client_cert, caches);
    }
    if caches.namespace != key.namespace {
        caches.rules.clear();
        caches.namespace.clone_from(&key.namespace);
    }
    let timeouts = rule.timeouts.as_ref();
    let rule_key = (
        kind,
        refs.iter()
            .map(|r| {
                (
                    r.group.as_deref(),
                    r.kind.as_deref(),
                    r.name.as_str(),
                    r.namespace.as_deref(),
                    r.port,
                    r.weight,
                )
            })
            .collect(),
        timeouts.and_then(|t| t.request.as_deref()),
        timeouts.and_then(|t| t.backend_request.as_deref()),
        client_cert.cloned(),
    );
    if let Some(known) = caches.rules.get(&rule_key) {
        return Ok(known.clone());
    }
    let built = build(snapshot, kind, key, rule, client_cert, caches)?;
    caches.rules.insert(rule_key, built.clone());
    Ok(built)
}

/// [`handlers`], computed.
fn build<'s>(
    snapshot: &Snapshot,
    kind: RouteKind,
    key: &ObjectRef,
    rule: &'s HttpRouteRules,
    client_cert: Option<&Rc<ClientCert>>,
    caches: &mut Caches<'s>,
) -> Result<RuleBackends, Cond> {
    let mut unresolved = None;
    let mut targets = Vec::new();
    for r in rule.backend_refs.iter().flatten() {
        let backend_ref = BackendRef {
            group: r.group.as_deref(),
            kind: r.kind.as_deref(),
            name: &r.name,
            namespace: r.namespace.as_deref(),
            port: r.port,
            weight: r.weight,
        };
        // backendRef filters have their own (identical) generated type.
        let own_filters: Vec<HttpRouteRulesFilters> = r
            .filters
            .iter()
            .flatten()
            .map(|f| serde_json::to_value(f).and_then(serde_json::from_value))
            .collect::<Result<_, _>>()
            .map_err(|e| filters::unsupported(format!("backendRef filter: {e}")))?;
        // A ReplacePrefixMatch here replaces the PathPrefix every match of
        // the rule shares (the handlers serve all of them).
        let prefix = match filters::uses_prefix(&own_filters) {
            true => Some(shared_prefix(rule).ok_or_else(|| {
                filters::unsupported(
                    "a backendRef's ReplacePrefixMatch needs every match of its rule to be the same PathPrefix",
                )
            })?),
            false => None,
        };
        if filters::needs_prefix_split(&own_filters) {
            return Err(filters::unsupported(
                "a backendRef's ReplacePrefixMatch cannot replace the prefix with `/` (put the rewrite on the rule)",
            ));
        }
        let ctx = filters::Context {
            port: 0,
            https: false,
            prefix,
            prefix_exact: false,
        };
        let (handlers, answered) = filters::handlers(&own_filters, ctx)?;
        if answered {
            return Err(filters::unsupported(
                "a redirect is not allowed as a backendRef filter",
            ));
        }
        let backend = match caches.resolver.resolve(snapshot, key, kind, &backend_ref) {
            Ok(b) => Some(b),
            Err(cond) => {
                unresolved.get_or_insert(cond);
                None
            }
        };
        let weight = u32::try_from(r.weight.unwrap_or(1)).unwrap_or(0);
        targets.push(Target {
            weight,
            handlers,
            backend,
        });
    }
    let retry = rule.retry.as_ref().map(|r| Retry {
        // Retries after errors cost nothing in the config, but each one may
        // wait for a timeout: bounded all the same.
        attempts: r.attempts.unwrap_or(1).clamp(0, MAX_ATTEMPTS) as u32,
        codes: r
            .codes
            .iter()
            .flatten()
            .filter_map(|c| u16::try_from(*c).ok())
            .collect(),
    });
    let settings = Upstreams {
        response_header_timeout: timeout(rule)?,
        retry,
        grpc: kind == RouteKind::Grpc,
        client_cert: client_cert.cloned(),
    };
    let mut used = Vec::new();
    let handlers = dispatch::handlers(&targets, &settings, &mut caches.proxies, &mut used);
    Ok(RuleBackends {
        handlers,
        proxies: used.into(),
        unresolved,
    })
}

/// The PathPrefix every match of `rule` has (a rule without matches is
/// PathPrefix `/`), or `None` when they differ or one is not a PathPrefix.
fn shared_prefix(rule: &HttpRouteRules) -> Option<&str> {
    use gateway_api::apis::experimental::httproutes::HttpRouteRulesMatchesPathType as PathType;
    let matches = rule.matches.as_deref().unwrap_or_default();
    let mut prefixes = matches.iter().map(|m| match &m.path {
        None => Some("/"),
        Some(p) if p.r#type.as_ref().is_none_or(|t| *t == PathType::PathPrefix) => {
            Some(p.value.as_deref().unwrap_or("/"))
        }
        Some(_) => None,
    });
    let Some(first) = prefixes.next() else {
        return Some("/");
    };
    let first = first?;
    prefixes.all(|p| p == Some(first)).then_some(first)
}

/// The most retries a rule gets (the spec sets no bound; the conformance
/// suite asks for 100 to be sure to reach a healthy endpoint).
const MAX_ATTEMPTS: i64 = 100;

/// Kengine cannot bound a whole request, only the wait for the upstream's
/// response headers; both timeouts map to that, the shorter one winning.
fn timeout(rule: &HttpRouteRules) -> Result<Option<String>, Cond> {
    let Some(t) = &rule.timeouts else {
        return Ok(None);
    };
    let mut shortest: Option<(u64, String)> = None;
    for value in [&t.request, &t.backend_request].into_iter().flatten() {
        let millis = duration_millis(value).ok_or_else(|| {
            filters::unsupported(format!(
                "timeout {value:?} is not a Gateway API duration: 1 to 4 numbers of \
                 at most 5 digits, each followed by h, m, s or ms"
            ))
        })?;
        if millis > 0 && shortest.as_ref().is_none_or(|(m, _)| millis < *m) {
            shortest = Some((millis, value.clone()));
        }
    }
    Ok(shortest.map(|(_, v)| v))
}

/// GEP-2257 durations (`1h`, `30s`, `500ms`, `1m30s`): one to four parts
/// of one to five digits and a unit (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`).
/// The bounds keep every value well inside what Go parses (about 2562047h).
fn duration_millis(value: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut rest = value;
    let mut parts = 0;
    while !rest.is_empty() {
        parts += 1;
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if parts > 4 || digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.chars().next()? {
                'h' => (3_600_000, 1),
                'm' => (60_000, 1),
                's' => (1_000, 1),
                _ => return None,
            }
        };
        total += n * unit;
        rest = &rest[len..];
    }
    (parts > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{Reason, Type};
    use crate::snapshot::Object;
    use serde_json::json;

    fn rule(refs: serde_json::Value) -> HttpRouteRules {
        serde_json::from_value(json!({"backendRefs": refs})).unwrap()
    }

    fn invoked(b: &RuleBackends) -> &str {
        match &b.handlers[..] {
            [Handler::Invoke { name }] => name,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rules_share_handlers_within_a_namespace_only() {
        let service = |ns: &str, ip: &str| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": ns},
                "spec": {"clusterIP": ip, "ports": [{"port": 80}]}})
        };
        let objects: Vec<Object> = [service("a", "10.0.0.1"), service("b", "10.0.0.2")]
            .into_iter()
            .filter_map(|d| kengine_gateway_model::manifests::object_from_value(d).unwrap())
            .collect();
        let snapshot = Snapshot::from_objects(objects);
        let plain = rule(json!([{"name": "svc", "port": 80}]));
        let same = rule(json!([{"name": "svc", "port": 80}]));
        let missing = rule(json!([{"name": "nope", "port": 80}]));
        let mut caches = Caches::default();
        let a = ObjectRef::new("a", "r1");
        let first = handlers(&snapshot, RouteKind::Http, &a, &plain, None, &mut caches).unwrap();
        let again = handlers(
            &snapshot,
            RouteKind::Http,
            &ObjectRef::new("a", "r2"),
            &same,
            None,
            &mut caches,
        )
        .unwrap();
        assert_eq!(invoked(&first), "proxy 10.0.0.1:80");
        assert!(Rc::ptr_eq(&first.proxies, &again.proxies), "computed once");
        // The same ref in another namespace is another Service.
        let b = handlers(
            &snapshot,
            RouteKind::Http,
            &ObjectRef::new("b", "r"),
            &plain,
            None,
            &mut caches,
        )
        .unwrap();
        assert_eq!(invoked(&b), "proxy 10.0.0.2:80");
        let bad = handlers(&snapshot, RouteKind::Http, &a, &missing, None, &mut caches).unwrap();
        assert_eq!(bad.handlers, [Handler::status(500)]);
        assert_eq!(bad.unresolved.unwrap().reason, Reason::BackendNotFound);
    }

    #[test]
    fn parses_gateway_api_durations() {
        assert_eq!(duration_millis("500ms"), Some(500));
        assert_eq!(duration_millis("1m30s"), Some(90_000));
        assert_eq!(duration_millis("1h"), Some(3_600_000));
        assert_eq!(duration_millis("1.5s"), None);
        assert_eq!(duration_millis(""), None);
        assert_eq!(duration_millis("10"), None);
        assert_eq!(
            duration_millis("99999h99999m99999s99999ms"),
            Some(366_096_438_999)
        );
        assert_eq!(duration_millis("1h1h"), Some(7_200_000));
    }

    #[test]
    fn durations_outside_the_grammar_are_refused_not_overflowed() {
        // Too many digits: would overflow (and panic in debug builds) or
        // exceed what Go's time.ParseDuration accepts.
        assert_eq!(
            duration_millis("999999999999999999999999999999999999h"),
            None
        );
        assert_eq!(duration_millis("2562048h"), None);
        assert_eq!(duration_millis("100000s"), None);
        assert_eq!(duration_millis("1h1m1s1ms1h"), None);
        assert_eq!(duration_millis("-1s"), None);
        let r: HttpRouteRules =
            serde_json::from_value(json!({"timeouts": {"request": "2562048h"}})).unwrap();
        let cond = timeout(&r).unwrap_err();
        assert_eq!(
            (cond.type_, cond.status, cond.reason),
            (Type::Accepted, false, Reason::UnsupportedValue)
        );
        assert!(cond.message.contains("2562048h"), "{}", cond.message);
    }

    #[test]
    fn a_backend_rewrite_replaces_the_prefix_the_rules_matches_share() {
        let objects: Vec<Object> = [json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "svc", "namespace": "a"},
            "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}})]
        .into_iter()
        .filter_map(|d| kengine_gateway_model::manifests::object_from_value(d).unwrap())
        .collect();
        let snapshot = Snapshot::from_objects(objects);
        let with = |matches: serde_json::Value, replacement: &str| -> HttpRouteRules {
            serde_json::from_value(
                json!({"matches": matches, "backendRefs": [{"name": "svc", "port": 80,
                "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
                    "type": "ReplacePrefixMatch", "replacePrefixMatch": replacement}}}]}]}),
            )
            .unwrap()
        };
        let key = ObjectRef::new("a", "r");
        let prefix = |v: &str| json!({"path": {"type": "PathPrefix", "value": v}});
        let rule = with(json!([prefix("/prefix"), prefix("/prefix")]), "/rewritten");
        let built = handlers(
            &snapshot,
            RouteKind::Http,
            &key,
            &rule,
            None,
            &mut Caches::default(),
        )
        .unwrap();
        // The backend's own handlers run in a subroute of their own.
        let rewrite = match &built.handlers[..] {
            [Handler::Subroute { routes }] => routes[0].handle.first(),
            other => other.first(),
        };
        let Some(Handler::Rewrite { path_regexp, .. }) = rewrite else {
            panic!("{:?}", built.handlers)
        };
        assert!(
            path_regexp[0].find.starts_with("^(?:/|%2[Ff])+(?:p|%70)"),
            "{}",
            path_regexp[0].find
        );
        assert_eq!(path_regexp[0].replace, "/rewritten$1");
        // Matches with other prefixes, or a replacement of `/`: refused.
        for rule in [
            with(json!([prefix("/a"), prefix("/b")]), "/x"),
            with(json!([{"path": {"type": "Exact", "value": "/a"}}]), "/x"),
            with(json!([prefix("/a")]), "/"),
        ] {
            let err = handlers(
                &snapshot,
                RouteKind::Http,
                &key,
                &rule,
                None,
                &mut Caches::default(),
            )
            .unwrap_err();
            assert_eq!(
                (err.type_, err.reason),
                (Type::Accepted, Reason::UnsupportedValue)
            );
        }
    }
}
