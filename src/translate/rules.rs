//! HTTPRoute rules → Kengine routes, with the precedence key the spec
//! orders them by.

use std::collections::BTreeMap;

use gateway_api::apis::experimental::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesFiltersType,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType,
    HttpRouteRulesMatchesPathType as PathType, HttpRouteRulesMatchesQueryParamsType,
};

use super::backends::{self, Backend, BackendRef};
use super::conditions::Cond;
use crate::kengine::config::{
    Handler, HeaderOps, Headers, LoadBalancing, MatcherSet, RegexpMatcher, ReverseProxy, Route,
    SelectionPolicy, Upstream,
};
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
    route: ObjectRef,
    rule: usize,
    match_index: usize,
}

/// One match of one rule, ready to sort among every route on a host.
#[derive(Debug, Clone)]
pub struct CompiledMatch {
    pub precedence: Precedence,
    pub route: Route,
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

pub fn compile(snapshot: &Snapshot, route: &HttpRoute) -> CompiledRoute {
    let key = ObjectRef::of(route);
    let created = route.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let mut out = CompiledRoute::default();
    for (rule_index, rule) in route.spec.rules.iter().flatten().enumerate() {
        let handlers = match handlers(snapshot, &key, rule, &mut out.unresolved) {
            Ok(h) => h,
            Err(cond) => {
                out.unsupported.get_or_insert(cond);
                continue;
            }
        };
        let default_match = [HttpRouteRulesMatches::default()];
        let matches = rule
            .matches
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or(&default_match);
        for (match_index, m) in matches.iter().enumerate() {
            let (matcher, mut precedence) = match matcher(m) {
                Ok(x) => x,
                Err(cond) => {
                    out.unsupported.get_or_insert(cond);
                    continue;
                }
            };
            precedence.created = created;
            precedence.route = key.clone();
            precedence.rule = rule_index;
            precedence.match_index = match_index;
            let matchers = if matcher == MatcherSet::default() {
                vec![]
            } else {
                vec![matcher]
            };
            out.matches.push(CompiledMatch {
                precedence,
                route: Route {
                    matchers,
                    handle: handlers.clone(),
                    terminal: false,
                },
            });
        }
    }
    out
}

fn matcher(m: &HttpRouteRulesMatches) -> Result<(MatcherSet, Precedence), Cond> {
    let mut set = MatcherSet::default();
    let (kind, value) = match &m.path {
        Some(p) => (
            p.r#type.clone().unwrap_or(PathType::PathPrefix),
            p.value.clone().unwrap_or_else(|| "/".into()),
        ),
        None => (PathType::PathPrefix, "/".into()),
    };
    let path_kind = match kind {
        PathType::Exact => {
            set.path_regexp = Some(regexp(format!("^{}$", escape(&value))));
            0
        }
        PathType::PathPrefix => {
            // Segment-aware: `/foo` matches `/foo` and `/foo/x`, never `/foobar`.
            let trimmed = value.trim_end_matches('/');
            if !trimmed.is_empty() {
                set.path_regexp = Some(regexp(format!("^{}(/.*)?$", escape(trimmed))));
            }
            1
        }
        PathType::RegularExpression => {
            set.path_regexp = Some(regexp(format!("^(?:{value})$")));
            2
        }
    };
    if let Some(method) = &m.method {
        let name = serde_json::to_value(method)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        set.method = Some(vec![name]);
    }
    for h in m.headers.iter().flatten() {
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
                    .insert(name, vec![h.value.clone()]);
            }
            HttpRouteRulesMatchesHeadersType::Exact => {
                set.header_regexp
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name, regexp(format!("^{}$", escape(&h.value))));
            }
            HttpRouteRulesMatchesHeadersType::RegularExpression => {
                set.header_regexp
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name, regexp(h.value.clone()));
            }
        }
    }
    for q in m.query_params.iter().flatten() {
        let pattern = match q
            .r#type
            .clone()
            .unwrap_or(HttpRouteRulesMatchesQueryParamsType::Exact)
        {
            HttpRouteRulesMatchesQueryParamsType::Exact => format!("^{}$", escape(&q.value)),
            HttpRouteRulesMatchesQueryParamsType::RegularExpression => q.value.clone(),
        };
        let placeholder = format!("{{http.request.uri.query.{}}}", q.name);
        set.vars_regexp
            .get_or_insert_with(BTreeMap::new)
            .insert(placeholder, regexp(pattern));
    }
    let precedence = Precedence {
        path_kind,
        path_len: std::cmp::Reverse(value.len()),
        no_method: m.method.is_none(),
        headers: std::cmp::Reverse(m.headers.as_ref().map_or(0, Vec::len)),
        query: std::cmp::Reverse(m.query_params.as_ref().map_or(0, Vec::len)),
        created: None,
        route: ObjectRef::new("", ""),
        rule: 0,
        match_index: 0,
    };
    Ok((set, precedence))
}

fn handlers(
    snapshot: &Snapshot,
    key: &ObjectRef,
    rule: &HttpRouteRules,
    unresolved: &mut Option<Cond>,
) -> Result<Vec<Handler>, Cond> {
    let mut handle = Vec::new();
    for filter in rule.filters.iter().flatten() {
        handle.push(filter_handler(filter)?);
    }
    let mut live: Vec<Backend> = Vec::new();
    for r in rule.backend_refs.iter().flatten() {
        if r.filters.as_ref().is_some_and(|f| !f.is_empty()) {
            return Err(unsupported("filters on backendRefs are not supported yet"));
        }
        let backend_ref = BackendRef {
            group: r.group.as_deref(),
            kind: r.kind.as_deref(),
            name: &r.name,
            namespace: r.namespace.as_deref(),
            port: r.port,
            weight: r.weight,
        };
        match backends::resolve(snapshot, key, "HTTPRoute", &backend_ref) {
            Ok(b) => live.push(b),
            Err(cond) => {
                unresolved.get_or_insert(cond);
            }
        }
    }
    let upstreams = backends::upstream_weights(&live);
    if upstreams.is_empty() {
        // No usable backend (none given, all invalid, or all weight 0): the spec's 500.
        handle.push(Handler::status(500));
        return Ok(handle);
    }
    let load_balancing = (upstreams.len() > 1).then(|| LoadBalancing {
        selection_policy: SelectionPolicy::WeightedRoundRobin {
            weights: upstreams.iter().map(|u| u.1).collect(),
        },
    });
    handle.push(Handler::ReverseProxy(ReverseProxy {
        upstreams: upstreams
            .into_iter()
            .map(|(dial, _)| Upstream { dial })
            .collect(),
        load_balancing,
    }));
    Ok(handle)
}

fn filter_handler(filter: &HttpRouteRulesFilters) -> Result<Handler, Cond> {
    let ops = |add: Option<BTreeMap<String, Vec<String>>>,
               set: Option<BTreeMap<String, Vec<String>>>,
               delete: Option<Vec<String>>| HeaderOps { add, set, delete };
    match filter.r#type {
        HttpRouteRulesFiltersType::RequestHeaderModifier => {
            let m = filter
                .request_header_modifier
                .as_ref()
                .ok_or_else(|| unsupported("RequestHeaderModifier without settings"))?;
            Ok(Handler::Headers(Headers {
                request: Some(ops(
                    m.add.as_ref().map(|v| {
                        v.iter()
                            .map(|h| (h.name.clone(), vec![h.value.clone()]))
                            .collect()
                    }),
                    m.set.as_ref().map(|v| {
                        v.iter()
                            .map(|h| (h.name.clone(), vec![h.value.clone()]))
                            .collect()
                    }),
                    m.remove.clone(),
                )),
                response: None,
            }))
        }
        HttpRouteRulesFiltersType::ResponseHeaderModifier => {
            let m = filter
                .response_header_modifier
                .as_ref()
                .ok_or_else(|| unsupported("ResponseHeaderModifier without settings"))?;
            Ok(Handler::Headers(Headers {
                request: None,
                response: Some(ops(
                    m.add.as_ref().map(|v| {
                        v.iter()
                            .map(|h| (h.name.clone(), vec![h.value.clone()]))
                            .collect()
                    }),
                    m.set.as_ref().map(|v| {
                        v.iter()
                            .map(|h| (h.name.clone(), vec![h.value.clone()]))
                            .collect()
                    }),
                    m.remove.clone(),
                )),
            }))
        }
        ref other => Err(unsupported(&format!(
            "filter {other:?} is not supported yet"
        ))),
    }
}

fn unsupported(message: &str) -> Cond {
    Cond::new("Accepted", false, "UnsupportedValue", message)
}

fn regexp(pattern: String) -> RegexpMatcher {
    RegexpMatcher {
        name: None,
        pattern,
    }
}

/// Escapes a literal for Go's RE2 syntax.
pub fn escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(json: serde_json::Value) -> (MatcherSet, Precedence) {
        matcher(&serde_json::from_value(json).unwrap()).unwrap()
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
    fn literal_stars_in_header_values_are_not_wildcards() {
        let (set, _) = m(
            serde_json::json!({"headers": [{"name": "X", "value": "*a"}, {"name": "Y", "value": "b"}]}),
        );
        assert_eq!(set.header_regexp.unwrap()["X"].pattern, "^\\*a$");
        assert_eq!(set.header.unwrap()["Y"], vec!["b".to_string()]);
    }
}
