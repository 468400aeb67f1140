//! A GRPCRoute's rules as the HTTPRoute rules that serve them. gRPC is
//! HTTP/2 with the method in the path (`/package.Service/Method`), so a
//! method match is a path match; header matches, filters and backendRefs
//! are the same fields.
//! The rest of translate then treats both kinds alike, with
//! [`RouteKind::Grpc`] for what differs: backends spoken to over HTTP/2, and
//! errors answered as gRPC statuses.

use gateway_api::apis::experimental::grpcroutes::{
    GrpcRoute, GrpcRouteRules, GrpcRouteRulesMatches, GrpcRouteRulesMatchesHeadersType,
    GrpcRouteRulesMatchesMethodType,
};
use gateway_api::apis::experimental::httproutes::{
    HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesMatches, HttpRouteRulesMatchesHeaders,
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPath, HttpRouteRulesMatchesPathType,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::conditions::{Cond, Reason, Type};
use super::literals::escape;
use crate::snapshot::{ObjectRef, Snapshot};

/// The route kinds we serve, all compiled as HTTPRoute rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    Http,
    Grpc,
}

impl RouteKind {
    pub const fn name(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }
}

/// A GRPCRoute's rules rewritten as HTTPRoute rules, and the first part
/// that could not be (Accepted=False); the rest is served. Its metadata,
/// hostnames and parentRefs are read from the GRPCRoute itself.
#[derive(Debug, Clone)]
pub struct Converted {
    pub rules: Vec<HttpRouteRules>,
    pub unsupported: Option<Cond>,
}

/// Every GRPCRoute of the snapshot with its conversion, in key order.
pub fn convert_all(snapshot: &Snapshot) -> Vec<(&ObjectRef, &GrpcRoute, Converted)> {
    (snapshot.grpc_routes.iter())
        .map(|(key, route)| (key, route, convert(route)))
        .collect()
}

pub fn convert(route: &GrpcRoute) -> Converted {
    let mut unsupported = None;
    let rules = route.spec.rules.as_deref().unwrap_or_default();
    let rules = (rules.iter().enumerate())
        .filter_map(|(i, rule)| match convert_rule(rule) {
            Ok(rule) => Some(rule),
            Err(why) => {
                unsupported.get_or_insert(Cond::new(
                    Type::Accepted,
                    false,
                    Reason::UnsupportedValue,
                    format!("rule {i} is not served: {why}"),
                ));
                None
            }
        })
        .collect();
    Converted { rules, unsupported }
}

fn convert_rule(rule: &GrpcRouteRules) -> Result<HttpRouteRules, String> {
    let matches = rule
        .matches
        .as_ref()
        .map(|ms| ms.iter().map(convert_match).collect::<Result<Vec<_>, _>>())
        .transpose()?;
    let backend_refs = rule
        .backend_refs
        .as_ref()
        .map(|refs| {
            refs.iter()
                .map(|r| {
                    Ok(HttpRouteRulesBackendRefs {
                        filters: r.filters.as_ref().map(recast).transpose()?,
                        group: r.group.clone(),
                        kind: r.kind.clone(),
                        name: r.name.clone(),
                        namespace: r.namespace.clone(),
                        port: r.port,
                        weight: r.weight,
                    })
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .transpose()?;
    Ok(HttpRouteRules {
        name: rule.name.clone(),
        matches,
        // Same fields and types (header modifiers, mirror, extensionRef).
        filters: rule.filters.as_ref().map(recast).transpose()?,
        backend_refs,
        session_persistence: rule.session_persistence.as_ref().map(recast).transpose()?,
        ..Default::default()
    })
}

/// A method match as a path match: `/service/method`, a service alone as
/// its path prefix, a method alone or a regular expression as a path
/// regexp. The precedence of HTTP paths (exact, then the longest prefix,
/// then regexps) is the spec's order for gRPC: service and method before
/// service alone before method alone.
fn convert_match(m: &GrpcRouteRulesMatches) -> Result<HttpRouteRulesMatches, String> {
    let path = match &m.method {
        None => None,
        Some(method) => {
            let service = method.service.as_deref().filter(|s| !s.is_empty());
            let name = method.method.as_deref().filter(|s| !s.is_empty());
            let (kind, value) = match method.r#type {
                Some(GrpcRouteRulesMatchesMethodType::RegularExpression) => (
                    HttpRouteRulesMatchesPathType::RegularExpression,
                    format!(
                        "/(?:{})/(?:{})",
                        service.unwrap_or("[^/]+"),
                        name.unwrap_or("[^/]+")
                    ),
                ),
                Some(GrpcRouteRulesMatchesMethodType::Exact) | None => {
                    for value in service.iter().chain(&name) {
                        exact_name(value)?;
                    }
                    match (service, name) {
                        (Some(s), Some(n)) => (
                            HttpRouteRulesMatchesPathType::Exact,
                            ["/", s, "/", n].concat(),
                        ),
                        (Some(s), None) => {
                            (HttpRouteRulesMatchesPathType::PathPrefix, ["/", s].concat())
                        }
                        (None, Some(n)) => (
                            HttpRouteRulesMatchesPathType::RegularExpression,
                            format!("/[^/]+/{}", escape(n)),
                        ),
                        (None, None) => {
                            return Err("a method match needs a service or a method".into());
                        }
                    }
                }
            };
            Some(HttpRouteRulesMatchesPath {
                r#type: Some(kind),
                value: Some(value),
            })
        }
    };
    let headers = m.headers.as_ref().map(|hs| {
        hs.iter()
            .map(|h| HttpRouteRulesMatchesHeaders {
                name: h.name.clone(),
                r#type: Some(match h.r#type {
                    Some(GrpcRouteRulesMatchesHeadersType::RegularExpression) => {
                        HttpRouteRulesMatchesHeadersType::RegularExpression
                    }
                    Some(GrpcRouteRulesMatchesHeadersType::Exact) | None => {
                        HttpRouteRulesMatchesHeadersType::Exact
                    }
                }),
                value: h.value.clone(),
            })
            .collect()
    });
    Ok(HttpRouteRulesMatches {
        path,
        headers,
        ..Default::default()
    })
}

/// An exact service or method name: what the CRD's patterns allow (dotted
/// identifiers), so that it cannot reach into another path segment.
fn exact_name(value: &str) -> Result<(), String> {
    let ok = value.split('.').all(|part| {
        let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
        (part.as_bytes().first()).is_some_and(|b| !b.is_ascii_digit() && word(b))
            && part.bytes().all(|b| word(&b))
    });
    match ok {
        true => Ok(()),
        false => Err(format!(
            "{value:?} is not a gRPC service or method name (dotted identifiers); use type RegularExpression"
        )),
    }
}

/// The same field in the HTTPRoute's generated type (identical schema).
fn recast<A: Serialize, B: DeserializeOwned>(a: &A) -> Result<B, String> {
    serde_json::to_value(a)
        .and_then(serde_json::from_value)
        .map_err(|e| format!("cannot be read as its HTTPRoute equivalent: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(rules: serde_json::Value) -> GrpcRoute {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "g", "namespace": "n"},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": rules}
        }))
        .unwrap()
    }

    fn paths(c: &Converted) -> Vec<(String, String)> {
        (c.rules.iter().flat_map(|r| r.matches.iter().flatten()))
            .map(|m| {
                let p = m.path.as_ref().unwrap();
                (
                    format!("{:?}", p.r#type.as_ref().unwrap()),
                    p.value.clone().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn method_matches_become_path_matches() {
        let c = convert(&route(json!([{"matches": [
            {"method": {"service": "pkg.Svc", "method": "Echo"}},
            {"method": {"service": "pkg.Svc"}},
            {"method": {"method": "Echo"}},
            {"method": {"type": "RegularExpression", "service": "pkg\\..*", "method": "Ec.o"}},
            {"method": {"type": "RegularExpression", "method": "Ec.o"}},
        ]}])));
        assert!(c.unsupported.is_none(), "{:?}", c.unsupported);
        assert_eq!(
            paths(&c),
            [
                ("Exact", "/pkg.Svc/Echo"),
                ("PathPrefix", "/pkg.Svc"),
                ("RegularExpression", "/[^/]+/Echo"),
                ("RegularExpression", "/(?:pkg\\..*)/(?:Ec.o)"),
                ("RegularExpression", "/(?:[^/]+)/(?:Ec.o)"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn headers_filters_and_backends_carry_over() {
        let c = convert(&route(json!([{
            "name": "named",
            "matches": [{"headers": [{"name": "version", "value": "two"},
                                     {"type": "RegularExpression", "name": "color", "value": "re.*"}]}],
            "filters": [{"type": "RequestHeaderModifier",
                         "requestHeaderModifier": {"set": [{"name": "x", "value": "y"}]}}],
            "backendRefs": [{"name": "svc", "port": 8080, "weight": 3,
                             "filters": [{"type": "ResponseHeaderModifier",
                                          "responseHeaderModifier": {"remove": ["z"]}}]}]
        }])));
        let rule = &c.rules[0];
        assert_eq!(rule.name.as_deref(), Some("named"));
        let headers = rule.matches.as_ref().unwrap()[0].headers.as_ref().unwrap();
        assert_eq!(
            headers[1].r#type,
            Some(HttpRouteRulesMatchesHeadersType::RegularExpression)
        );
        assert_eq!(
            headers[0].r#type,
            Some(HttpRouteRulesMatchesHeadersType::Exact)
        );
        let set = &rule.filters.as_ref().unwrap()[0].request_header_modifier;
        assert_eq!(set.as_ref().unwrap().set.as_ref().unwrap()[0].value, "y");
        let backend = &rule.backend_refs.as_ref().unwrap()[0];
        assert_eq!(
            (backend.name.as_str(), backend.port, backend.weight),
            ("svc", Some(8080), Some(3))
        );
        assert!(
            backend.filters.as_ref().unwrap()[0]
                .response_header_modifier
                .is_some()
        );
    }

    #[test]
    fn an_exact_name_that_is_no_identifier_drops_its_rule() {
        let c = convert(&route(json!([
            {"matches": [{"method": {"service": "a/b", "method": "M"}}]},
            {"matches": [{"method": {"service": "ok.Svc"}}]},
        ])));
        let cond = c.unsupported.clone().expect("refused");
        assert_eq!(
            (cond.type_, cond.reason),
            (Type::Accepted, Reason::UnsupportedValue)
        );
        assert!(
            cond.message.contains("rule 0") && cond.message.contains("a/b"),
            "{}",
            cond.message
        );
        assert_eq!(
            paths(&c),
            [("PathPrefix".to_string(), "/ok.Svc".to_string())]
        );
    }
}
