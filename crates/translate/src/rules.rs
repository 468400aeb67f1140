//! HTTPRoute rules → Kengine routes, with the precedence key the spec
//! orders them by.

use std::collections::BTreeMap;
use std::rc::Rc;

use gateway_api::apis::experimental::httproutes::{
    HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType,
    HttpRouteRulesMatchesMethod, HttpRouteRulesMatchesPathType as PathType,
    HttpRouteRulesMatchesQueryParamsType,
};

use super::backend_client_cert::ClientCert;
use super::conditions::Cond;
use super::dispatch::SharedProxy;
use super::filters::{self, PREFIX_CAPTURE};
use super::grpc_routes::RouteKind;
use super::literals::{anchored, decode_path, escape};
use super::routes::RouteRef;
use super::rule_backends::{self, RuleBackends};
use crate::kengine::config::{MatcherSet, Origin, OriginPart, Provenance, RegexpMatcher, Route};
use crate::kengine::placeholders::escape as literal;
use crate::kengine::{check, re2};
use crate::snapshot::{ObjectRef, Snapshot};

/// Sorts ascending: the first key wins. Hostname specificity is handled by
/// the layout, so this covers the rest of the spec's order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    /// 0 Exact, 1 PathPrefix, 2 RegularExpression.
    path_kind: u8,
    path_len: std::cmp::Reverse<usize>,
    no_method: bool,
    headers: std::cmp::Reverse<usize>,
    query: std::cmp::Reverse<usize>,
    created: Option<k8s_openapi::jiff::Timestamp>,
    /// Shared by the matches of a route (always set once compiled).
    route: Option<Rc<ObjectRef>>,
    rule: usize,
    match_index: usize,
    /// A match split in two (see `filters::needs_prefix_split`) keeps its order.
    part: u8,
}

/// One match of one rule, ready to sort among every route on a host.
/// Cloning it is cheap: a route attached under several hostnames (or
/// listeners) shares its compiled matches, and the layout takes each route
/// out without a copy when it is the only user left.
#[derive(Debug, Clone)]
pub struct CompiledMatch(Rc<(Precedence, Route)>, Rc<[Rc<SharedProxy>]>);

impl CompiledMatch {
    fn new(precedence: Precedence, route: Route, proxies: Rc<[Rc<SharedProxy>]>) -> Self {
        CompiledMatch(Rc::new((precedence, route)), proxies)
    }

    pub fn precedence(&self) -> &Precedence {
        &self.0.0
    }

    /// It serves a GRPCRoute's rule.
    pub fn is_grpc(&self) -> bool {
        let grpc = RouteKind::Grpc.name();
        (self.0.1.provenance.origins().iter()).any(|o| o.kind == grpc)
    }

    /// The shared proxies the route invokes: its server must hold them.
    pub fn proxies(&self) -> &[Rc<SharedProxy>] {
        &self.1
    }

    /// The Kengine route: moved out when no one else holds this match,
    /// else copied.
    pub fn into_route(self) -> Route {
        match Rc::try_unwrap(self.0) {
            Ok((_, route)) => route,
            Err(shared) => shared.1.clone(),
        }
    }
}

/// A compiled HTTPRoute: its matches, and conditions about its contents.
#[derive(Debug, Clone, Default)]
pub struct CompiledRoute {
    pub matches: Vec<CompiledMatch>,
    /// First unresolvable backendRef, for ResolvedRefs=False.
    pub unresolved: Option<Cond>,
    /// A rule we cannot express, for Accepted=False.
    pub unsupported: Option<Cond>,
}

/// Where the route is being attached; redirects default to its port and scheme.
#[derive(Debug, Clone, Copy)]
pub struct ListenerContext {
    pub port: u16,
    pub https: bool,
}

/// Does compiling `route` depend on the listener it attaches to? When it
/// does not, one compilation serves every listener.
pub fn depends_on_listener(rules: &[HttpRouteRules]) -> bool {
    rules
        .iter()
        .any(|rule| filters::uses_listener(rule.filters.as_deref().unwrap_or_default()))
}

/// Compiles `route`'s rules for a listener; `client_cert` is presented to
/// backends dialed over TLS.
pub fn compile<'s>(
    snapshot: &Snapshot,
    route: RouteRef<'s>,
    listener: ListenerContext,
    client_cert: Option<&Rc<ClientCert>>,
    caches: &mut rule_backends::Caches<'s>,
) -> CompiledRoute {
    let (kind, created) = (route.kind(), route.created());
    let key = Rc::new(route.key.clone());
    let mut out = CompiledRoute::default();
    let mut parts = Vec::new();
    for (rule_index, rule) in route.rules.iter().enumerate() {
        let RuleBackends {
            handlers: mut backend,
            proxies,
            unresolved,
        } = match rule_backends::handlers(snapshot, kind, &key, rule, client_cert, caches) {
            Ok(b) => b,
            Err(cond) => {
                out.unsupported.get_or_insert(cond);
                continue;
            }
        };
        if let Some(cond) = unresolved {
            out.unresolved.get_or_insert(cond);
        }
        let rule_filters = rule.filters.as_deref().unwrap_or_default();
        let default_match = [HttpRouteRulesMatches::default()];
        let matches = rule
            .matches
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or(&default_match);
        parts.clear();
        for (match_index, m) in matches.iter().enumerate() {
            if let Err(cond) = compile_match(m, match_index, rule_filters, listener, &mut parts) {
                out.unsupported.get_or_insert(cond);
            }
        }
        // The backend handlers end every part no filter answers: copied
        // into all but the last of them, moved into that one.
        let last = parts.iter().rposition(|p| p.needs_backend);
        let first = out.matches.len();
        // Names this rule if Kengine would still refuse what it became.
        let provenance = Provenance::new([Origin {
            kind: kind.name(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            part: OriginPart::Rule(rule_index),
        }]);
        for (i, part) in parts.drain(..).enumerate() {
            let Part {
                mut precedence,
                mut route,
                needs_backend,
            } = part;
            if needs_backend {
                let tail = if Some(i) == last {
                    std::mem::take(&mut backend)
                } else {
                    backend.clone()
                };
                if route.handle.is_empty() {
                    route.handle = tail;
                } else {
                    route.handle.extend(tail);
                }
            }
            route.provenance = provenance.clone();
            precedence.created = created;
            precedence.route = Some(key.clone());
            precedence.rule = rule_index;
            let proxies = if needs_backend {
                proxies.clone()
            } else {
                Rc::from([])
            };
            out.matches
                .push(CompiledMatch::new(precedence, route, proxies));
        }
        // Checked the way Kengine will load it: a value it would refuse
        // (a translate bug) drops this rule alone, not everyone's config.
        let refused = out.matches[first..]
            .iter()
            .map(|m| &m.0.1)
            // A shared proxy was checked when first made (`dispatch`).
            .chain((proxies.iter().map(|p| &p.route)).filter(|r| !r.provenance.is_checked()))
            .find_map(|r| check::route(r).err());
        if let Some(err) = refused {
            out.matches.truncate(first);
            out.unsupported.get_or_insert(filters::unsupported(format!(
                "rule {rule_index} is not served: Kengine would refuse it at {}: {}",
                err.path, err.problem
            )));
        } else {
            // Passed: the whole-config check need not walk them again.
            for m in &mut out.matches[first..] {
                let (_, route) = Rc::get_mut(&mut m.0).expect("built just above");
                route.provenance.set_checked(true);
            }
        }
    }
    out
}

/// One Kengine route of a match, before the rule's backends are added.
struct Part {
    precedence: Precedence,
    route: Route,
    /// No filter answers the request: the backend handlers follow.
    needs_backend: bool,
}

/// The Kengine route(s) of one match, added to `out`: usually one; two
/// when a prefix replacement must tell "exactly the prefix" from "the
/// prefix and more". On error nothing is added.
fn compile_match(
    m: &HttpRouteRulesMatches,
    match_index: usize,
    rule_filters: &[HttpRouteRulesFilters],
    listener: ListenerContext,
    out: &mut Vec<Part>,
) -> Result<(), Cond> {
    let (matcher, mut precedence, prefix) = matcher(m, filters::uses_prefix(rule_filters))?;
    precedence.match_index = match_index;
    let (first, second) = match prefix {
        Some(p) if filters::needs_prefix_split(rule_filters) => {
            let escaped = escape(decode_path(p).trim_end_matches('/'));
            let with = |pattern: String| MatcherSet {
                path_regexp: Some(RegexpMatcher {
                    name: Some(PREFIX_CAPTURE.into()),
                    pattern,
                }),
                ..matcher.clone()
            };
            (
                (with(format!("^{escaped}/?$")), true),
                Some((with(format!("^{escaped}(/.+)$")), false)),
            )
        }
        _ => ((matcher, false), None),
    };
    let start = out.len();
    for (part, (set, prefix_exact)) in std::iter::once(first).chain(second).enumerate() {
        let ctx = filters::Context {
            port: listener.port,
            https: listener.https,
            prefix,
            prefix_exact,
        };
        let (handle, answered) = match filters::handlers(rule_filters, ctx) {
            Ok(h) => h,
            Err(cond) => {
                out.truncate(start);
                return Err(cond);
            }
        };
        let matchers = if set == MatcherSet::default() {
            vec![]
        } else {
            vec![set]
        };
        out.push(Part {
            precedence: Precedence {
                part: part as u8,
                ..precedence.clone()
            },
            route: Route {
                matchers,
                handle,
                terminal: false,
                ..Default::default()
            },
            needs_backend: !answered,
        });
    }
    Ok(())
}

/// The matcher set of one match, its precedence, and the PathPrefix value
/// when it is one. `capture` names the path regexp so filters can read
/// what followed the prefix.
fn matcher(
    m: &HttpRouteRulesMatches,
    capture: bool,
) -> Result<(MatcherSet, Precedence, Option<&str>), Cond> {
    let mut set = MatcherSet::default();
    let (kind, value) = match &m.path {
        Some(p) => (
            p.r#type.clone().unwrap_or(PathType::PathPrefix),
            p.value.as_deref().unwrap_or("/"),
        ),
        None => (PathType::PathPrefix, "/"),
    };
    let name = capture.then(|| PREFIX_CAPTURE.to_string());
    let mut prefix = None;
    let path_kind = match kind {
        PathType::Exact => {
            set.path_regexp = Some(regexp(anchored("^", &decode_path(value), "$")));
            0
        }
        PathType::PathPrefix => {
            // Segment-aware: `/foo` matches `/foo` and `/foo/x`, never `/foobar`.
            let decoded = decode_path(value);
            let trimmed = decoded.trim_end_matches('/');
            if !trimmed.is_empty() || capture {
                set.path_regexp = Some(RegexpMatcher {
                    name,
                    pattern: anchored("^", trimmed, "(/.*)?$"),
                });
            }
            prefix = Some(value);
            1
        }
        PathType::RegularExpression => {
            set.path_regexp = Some(regexp(user_regexp(value, |v| format!("^(?:{v})$"))?));
            2
        }
    };
    if let Some(method) = &m.method {
        set.method = Some(vec![method_name(method).into()]);
    }
    // The spec: of entries with an equivalent name only the first counts
    // (header names are case-insensitive, query names are not).
    let mut seen = std::collections::BTreeSet::new();
    let headers: Vec<_> = (m.headers.iter().flatten())
        .filter(|h| seen.insert(h.name.to_ascii_lowercase()))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let query_params: Vec<_> = (m.query_params.iter().flatten())
        .filter(|q| seen.insert(q.name.as_str()))
        .collect();
    for h in &headers {
        let name = h.name.clone();
        match h
            .r#type
            .clone()
            .unwrap_or(HttpRouteRulesMatchesHeadersType::Exact)
        {
            // Kengine's header matcher treats a leading or trailing `*` as a wildcard.
            HttpRouteRulesMatchesHeadersType::Exact if !h.value.contains('*') => {
                set.header
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name, vec![literal(&h.value)]);
            }
            HttpRouteRulesMatchesHeadersType::Exact => {
                set.header_regexp
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name, regexp(anchored("^", &h.value, "$")));
            }
            HttpRouteRulesMatchesHeadersType::RegularExpression => {
                set.header_regexp
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name, regexp(user_regexp(&h.value, str::to_string)?));
            }
        }
    }
    // `query` ANDs its keys; `vars_regexp` ORs its keys, so a second regexp
    // is ANDed in as not(any(not(regexp))).
    let mut regexps = Vec::new();
    for q in &query_params {
        match q
            .r#type
            .clone()
            .unwrap_or(HttpRouteRulesMatchesQueryParamsType::Exact)
        {
            // A `*` value is the query matcher's wildcard, so match it literally by regexp.
            HttpRouteRulesMatchesQueryParamsType::Exact if q.value != "*" => {
                set.query
                    .get_or_insert_with(BTreeMap::new)
                    .insert(literal(&q.name), vec![literal(&q.value)]);
            }
            HttpRouteRulesMatchesQueryParamsType::Exact => {
                regexps.push((q.name.clone(), anchored("^", &q.value, "$")))
            }
            HttpRouteRulesMatchesQueryParamsType::RegularExpression => {
                regexps.push((q.name.clone(), user_regexp(&q.value, str::to_string)?))
            }
        }
    }
    // The CRD's rule for header and query names, which files skip: a
    // query name sits inside our placeholder, where it must be a token.
    let names = (headers.iter().map(|h| ("header", &h.name)))
        .chain(query_params.iter().map(|q| ("query parameter", &q.name)));
    for (what, name) in names {
        if !filters::http_token(name) {
            return Err(filters::bad_name(what, name));
        }
    }
    let query_regexp = |(name, pattern): (String, String)| MatcherSet {
        vars_regexp: Some(BTreeMap::from([(
            format!("{{http.request.uri.query.{name}}}"),
            regexp(pattern),
        )])),
        ..Default::default()
    };
    if regexps.len() == 1 {
        set.vars_regexp = query_regexp(regexps.remove(0)).vars_regexp;
    } else if !regexps.is_empty() {
        let negated = regexps.into_iter().map(|r| MatcherSet {
            not: Some(vec![query_regexp(r)]),
            ..Default::default()
        });
        set.not = Some(negated.collect());
    }
    let precedence = Precedence {
        path_kind,
        path_len: std::cmp::Reverse(value.len()),
        no_method: m.method.is_none(),
        headers: std::cmp::Reverse(headers.len()),
        query: std::cmp::Reverse(query_params.len()),
        created: None,
        route: None,
        rule: 0,
        match_index: 0,
        part: 0,
    };
    Ok((set, precedence, prefix))
}

/// The method as HTTP spells it (its serde name).
fn method_name(method: &HttpRouteRulesMatchesMethod) -> &'static str {
    use HttpRouteRulesMatchesMethod as M;
    match method {
        M::Get => "GET",
        M::Head => "HEAD",
        M::Post => "POST",
        M::Put => "PUT",
        M::Delete => "DELETE",
        M::Connect => "CONNECT",
        M::Options => "OPTIONS",
        M::Trace => "TRACE",
        M::Patch => "PATCH",
    }
}

/// A user's RegularExpression, checked with Kengine's (Go RE2) syntax,
/// then wrapped as `wrap` says.
fn user_regexp(value: &str, wrap: impl Fn(&str) -> String) -> Result<String, Cond> {
    re2::check(value).map_err(|e| super::filters::unsupported(e.to_string()))?;
    Ok(wrap(value))
}

fn regexp(pattern: String) -> RegexpMatcher {
    RegexpMatcher {
        name: None,
        pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(json: serde_json::Value) -> (MatcherSet, Precedence) {
        let (set, precedence, _) = matcher(&serde_json::from_value(json).unwrap(), false).unwrap();
        (set, precedence)
    }

    #[test]
    fn paths_are_case_sensitive_and_segment_aware() {
        let (set, _) = m(serde_json::json!({"path": {"type": "PathPrefix", "value": "/foo/"}}));
        assert_eq!(set.path_regexp.unwrap().pattern, "^/foo(/.*)?$");
        let (set, _) = m(serde_json::json!({"path": {"type": "Exact", "value": "/a.b"}}));
        assert_eq!(set.path_regexp.unwrap().pattern, "^/a\\.b$");
        let (set, _) = m(serde_json::json!({}));
        assert_eq!(set, MatcherSet::default());
    }

    #[test]
    fn precedence_prefers_exact_then_longer_prefixes_then_more_conditions() {
        let exact = m(serde_json::json!({"path": {"type": "Exact", "value": "/"}})).1;
        let long = m(serde_json::json!({"path": {"type": "PathPrefix", "value": "/abc"}})).1;
        let short = m(serde_json::json!({"path": {"type": "PathPrefix", "value": "/a"}})).1;
        let method =
            m(serde_json::json!({"path": {"type": "PathPrefix", "value": "/a"}, "method": "GET"}))
                .1;
        let headers = m(serde_json::json!({"path": {"type": "PathPrefix", "value": "/a"}, "method": "GET", "headers": [{"name": "x", "value": "1"}]})).1;
        let mut v = vec![
            short.clone(),
            method.clone(),
            long.clone(),
            exact.clone(),
            headers.clone(),
        ];
        v.sort();
        assert_eq!(v, vec![exact, long, headers, method, short]);
    }

    #[test]
    fn header_and_query_names_are_http_tokens() {
        let err = |json: serde_json::Value| {
            let m = serde_json::from_value(json).unwrap();
            matcher(&m, false).unwrap_err().message
        };
        // Found by tests/fuzz.rs: an empty query name made the placeholder
        // `{http.request.uri.query.}`, which only the check caught.
        for (kind, name) in [
            ("queryParams", ""),
            ("queryParams", "a{b"),
            ("queryParams", "a b"),
            ("headers", ""),
            ("headers", "X:Y"),
            ("headers", "\u{e9}"),
        ] {
            for type_ in ["Exact", "RegularExpression"] {
                let message =
                    err(serde_json::json!({kind: [{"name": name, "type": type_, "value": "v"}]}));
                assert!(
                    message.contains("name") && message.contains("is not valid"),
                    "{message}"
                );
            }
        }
        let long = "a".repeat(257);
        assert!(
            err(serde_json::json!({"headers": [{"name": long, "value": "v"}]})).contains("256")
        );
        let (set, _) = m(serde_json::json!({"queryParams": [{"name": "a-b.c_~!", "value": "v"}]}));
        assert_eq!(set.query.unwrap()["a-b.c_~!"], vec!["v".to_string()]);
    }

    #[test]
    fn literal_stars_in_header_values_are_not_wildcards() {
        let (set, _) = m(
            serde_json::json!({"headers": [{"name": "X", "value": "*a"}, {"name": "Y", "value": "b"}]}),
        );
        assert_eq!(set.header_regexp.unwrap()["X"].pattern, "^\\*a$");
        assert_eq!(set.header.unwrap()["Y"], vec!["b".to_string()]);
    }

    #[test]
    fn percent_encoded_path_values_match_the_decoded_path() {
        let (set, _) =
            m(serde_json::json!({"path": {"type": "Exact", "value": "/a%20b/caf%C3%A9"}}));
        assert_eq!(set.path_regexp.unwrap().pattern, "^/a b/caf\u{e9}$");
        let (set, _) =
            m(serde_json::json!({"path": {"type": "PathPrefix", "value": "/100%25/x%2fy/"}}));
        assert_eq!(set.path_regexp.unwrap().pattern, "^/100%/x/y(/.*)?$");
        assert_eq!(decode_path("/%zz%4"), "/%zz%4");
    }

    #[test]
    fn only_the_first_entry_of_a_repeated_name_counts() {
        let (set, precedence) = m(serde_json::json!({
            "headers": [
                {"name": "X-A", "value": "1"},
                {"name": "x-a", "value": "2"},
                {"name": "X-A", "type": "RegularExpression", "value": "3"}
            ],
            "queryParams": [
                {"name": "q", "value": "1"},
                {"name": "q", "value": "2"},
                {"name": "Q", "value": "3"}
            ]
        }));
        let header = set.header.unwrap();
        assert_eq!(header.len(), 1);
        assert_eq!(header["X-A"], vec!["1".to_string()]);
        assert_eq!(set.header_regexp, None);
        let query = set.query.unwrap();
        assert_eq!(query.len(), 2);
        assert_eq!(query["q"], vec!["1".to_string()]);
        assert_eq!(query["Q"], vec!["3".to_string()]);
        assert_eq!(precedence.headers, std::cmp::Reverse(1));
        assert_eq!(precedence.query, std::cmp::Reverse(2));
    }
}
