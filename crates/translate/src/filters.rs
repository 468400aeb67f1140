//! HTTPRoute filters → Kengine handlers.

use std::collections::BTreeMap;

use gateway_api::apis::experimental::httproutes::{
    HttpRouteRulesFilters as Filter,
    HttpRouteRulesFiltersRequestRedirectPathType as RedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme as Scheme, HttpRouteRulesFiltersType as Type,
    HttpRouteRulesFiltersUrlRewritePathType as RewritePathType,
};

use super::conditions::{Cond, Reason, Type as CondType};
use crate::kengine::config::{
    Handler, HeaderOps, Headers, MatcherSet, PathReplace, RegexpMatcher, Route, StaticResponse,
};
use crate::kengine::placeholders::escape as literal;

/// The placeholder holding what follows a PathPrefix match (named capture 1).
pub const PREFIX_REST: &str = "{http.regexp.kg_path.1}";
/// Name of the path regexp whose capture [`PREFIX_REST`] reads.
pub const PREFIX_CAPTURE: &str = "kg_path";

/// What filters need to know about where they run.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Listener port and whether it terminates TLS: the redirect defaults.
    pub port: u16,
    pub https: bool,
    /// The PathPrefix value the request matched, when it matched one.
    pub prefix: Option<&'a str>,
    /// The request path is known to equal the prefix (nothing follows it).
    pub prefix_exact: bool,
}

/// Handlers for a rule's filters, in order. `Ok(true)` in the second place
/// means a filter answers the request itself (a redirect): no backend runs.
pub fn handlers(filters: &[Filter], ctx: Context) -> Result<(Vec<Handler>, bool), Cond> {
    let mut out = Vec::new();
    for filter in filters {
        match filter.r#type {
            Type::RequestHeaderModifier => {
                let m = filter
                    .request_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("requestHeaderModifier"))?;
                let names = (m.add.iter().flatten().map(|h| &h.name))
                    .chain(m.set.iter().flatten().map(|h| &h.name))
                    .chain(m.remove.iter().flatten());
                header_names("requestHeaderModifier", names)?;
                out.push(Handler::Headers(Box::new(Headers {
                    request: Some(ops(
                        m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                        m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                        m.remove.clone(),
                    )),
                    response: None,
                })));
            }
            Type::ResponseHeaderModifier => {
                let m = filter
                    .response_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("responseHeaderModifier"))?;
                let names = (m.add.iter().flatten().map(|h| &h.name))
                    .chain(m.set.iter().flatten().map(|h| &h.name))
                    .chain(m.remove.iter().flatten());
                header_names("responseHeaderModifier", names)?;
                let response = ops(
                    m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.remove.clone(),
                );
                out.push(Handler::Headers(Box::new(Headers {
                    request: None,
                    response: Some(HeaderOps {
                        deferred: true,
                        ..response
                    }),
                })));
            }
            Type::UrlRewrite => {
                let m = filter
                    .url_rewrite
                    .as_ref()
                    .ok_or_else(|| missing("urlRewrite"))?;
                if let Some(path) = &m.path {
                    let full = path.r#type == RewritePathType::ReplaceFullPath;
                    let uri = new_path(
                        full,
                        &path.replace_full_path,
                        &path.replace_prefix_match,
                        ctx,
                    )?;
                    out.push(rewrite(uri, ctx));
                }
                if let Some(host) = &m.hostname {
                    precise_hostname("urlRewrite", host)?;
                    let set = BTreeMap::from([("Host".to_string(), vec![literal(host)])]);
                    out.push(Handler::Headers(Box::new(Headers {
                        request: Some(HeaderOps {
                            set: Some(set),
                            ..Default::default()
                        }),
                        response: None,
                    })));
                }
            }
            Type::RequestRedirect => {
                let m = filter
                    .request_redirect
                    .as_ref()
                    .ok_or_else(|| missing("requestRedirect"))?;
                // Rewriting first lets `{http.request.uri}` carry the new path
                // with the original query string.
                if let Some(path) = &m.path {
                    let full = path.r#type == RedirectPathType::ReplaceFullPath;
                    let uri = new_path(
                        full,
                        &path.replace_full_path,
                        &path.replace_prefix_match,
                        ctx,
                    )?;
                    out.push(rewrite(uri, ctx));
                }
                let scheme = match m.scheme {
                    Some(Scheme::Http) => "http",
                    Some(Scheme::Https) => "https",
                    None if ctx.https => "https",
                    None => "http",
                };
                let port = match (m.port, &m.scheme) {
                    (Some(p), _) => u16::try_from(p).ok(),
                    // A new scheme implies its well-known port.
                    (None, Some(_)) => None,
                    (None, None) => Some(ctx.port),
                };
                let port = port.filter(|p| !matches!((scheme, p), ("http", 80) | ("https", 443)));
                if let Some(host) = &m.hostname {
                    precise_hostname("requestRedirect", host)?;
                }
                let host = m
                    .hostname
                    .as_deref()
                    .map_or_else(|| "{http.request.host}".into(), literal);
                let location = match port {
                    Some(p) => format!("{scheme}://{host}:{p}{{http.request.uri}}"),
                    None => format!("{scheme}://{host}{{http.request.uri}}"),
                };
                let status = m.status_code.unwrap_or(302);
                if ![301, 302, 303, 307, 308].contains(&status) {
                    return Err(unsupported(format!(
                        "redirect status code {status} is not supported"
                    )));
                }
                out.push(Handler::StaticResponse(StaticResponse {
                    status_code: status as u16,
                    body: None,
                    headers: Some(BTreeMap::from([("Location".to_string(), vec![location])])),
                }));
                return Ok((out, true));
            }
            Type::Cors => {
                let c = filter.cors.as_ref().ok_or_else(|| missing("cors"))?;
                out.push(cors(c));
            }
            Type::RequestMirror => {
                return Err(unsupported(
                    "RequestMirror is not supported: stock Kengine has no request mirroring handler",
                ));
            }
            ref other => {
                return Err(unsupported(format!(
                    "filter {other:?} is not supported yet"
                )));
            }
        }
    }
    Ok((out, false))
}

/// CORS from stock handlers: a preflight is answered here, with the
/// allowed origin, methods and headers echoed where the filter allows any;
/// other requests from an allowed origin get the response headers.
fn cors(c: &gateway_api::apis::experimental::httproutes::HttpRouteRulesFiltersCors) -> Handler {
    let origins = c.allow_origins.clone().unwrap_or_default();
    let any =
        |list: &Option<Vec<String>>| list.as_ref().is_some_and(|l| l.iter().any(|v| v == "*"));
    let credentials = c.allow_credentials == Some(true);
    let origin_pattern = if origins.iter().any(|o| o == "*") {
        ".+".to_string()
    } else {
        origins
            .iter()
            .map(|o| origin_regexp(o))
            .collect::<Vec<_>>()
            .join("|")
    };
    let allowed_origin = MatcherSet {
        header_regexp: Some(BTreeMap::from([(
            "Origin".to_string(),
            RegexpMatcher {
                name: None,
                pattern: format!("^(?:{origin_pattern})$"),
            },
        )])),
        ..Default::default()
    };
    let preflight = MatcherSet {
        method: Some(vec!["OPTIONS".into()]),
        header: Some(BTreeMap::from([(
            "Access-Control-Request-Method".to_string(),
            vec!["*".to_string()],
        )])),
        ..Default::default()
    };
    let header = |name: &str, value: String| (name.to_string(), vec![value]);
    let mut common = BTreeMap::from([header(
        "Access-Control-Allow-Origin",
        "{http.request.header.Origin}".into(),
    )]);
    if credentials {
        common.extend([header("Access-Control-Allow-Credentials", "true".into())]);
    }
    if let Some(expose) = c.expose_headers.as_ref().filter(|e| !e.is_empty()) {
        common.extend([header(
            "Access-Control-Expose-Headers",
            literal(&expose.join(", ")),
        )]);
    }
    let mut answer = common.clone();
    let methods = if any(&c.allow_methods) {
        "{http.request.header.Access-Control-Request-Method}".to_string()
    } else {
        literal(&c.allow_methods.clone().unwrap_or_default().join(", "))
    };
    answer.extend([header("Access-Control-Allow-Methods", methods)]);
    if any(&c.allow_headers) {
        answer.extend([header(
            "Access-Control-Allow-Headers",
            "{http.request.header.Access-Control-Request-Headers}".into(),
        )]);
    } else if let Some(h) = c.allow_headers.as_ref().filter(|h| !h.is_empty()) {
        answer.extend([header(
            "Access-Control-Allow-Headers",
            literal(&h.join(", ")),
        )]);
    }
    if let Some(age) = c.max_age {
        answer.extend([header("Access-Control-Max-Age", age.to_string())]);
    }
    let respond = |headers: Option<BTreeMap<String, Vec<String>>>| {
        Handler::StaticResponse(StaticResponse {
            status_code: 204,
            body: None,
            headers,
        })
    };
    let both = |a: &MatcherSet, b: &MatcherSet| MatcherSet {
        method: a.method.clone().or(b.method.clone()),
        header: a.header.clone().or(b.header.clone()),
        header_regexp: a.header_regexp.clone().or(b.header_regexp.clone()),
        ..Default::default()
    };
    Handler::Subroute {
        routes: vec![
            Route {
                matchers: vec![both(&preflight, &allowed_origin)],
                handle: vec![respond(Some(answer))],
                terminal: false,
                ..Default::default()
            },
            // A preflight from an origin that is not allowed gets no CORS headers.
            Route {
                matchers: vec![preflight],
                handle: vec![respond(None)],
                terminal: false,
                ..Default::default()
            },
            Route {
                matchers: vec![allowed_origin],
                handle: vec![Handler::Headers(Box::new(Headers {
                    request: None,
                    response: Some(HeaderOps {
                        set: Some(common),
                        deferred: true,
                        ..Default::default()
                    }),
                }))],
                terminal: false,
                ..Default::default()
            },
        ],
    }
}

/// `https://*.example.com` matches any number of labels in place of `*`.
fn origin_regexp(origin: &str) -> String {
    origin
        .split('*')
        .map(super::literals::escape)
        .collect::<Vec<_>>()
        .join("[^/]+")
}

/// The path a rewrite or redirect asks for: ReplaceFullPath or
/// ReplacePrefixMatch (the two filters have separate generated types).
fn new_path(
    full: bool,
    full_path: &Option<String>,
    prefix: &Option<String>,
    ctx: Context,
) -> Result<String, Cond> {
    if full {
        Ok(literal(full_path.as_deref().unwrap_or("/")))
    } else {
        replaced_prefix(&literal(prefix.as_deref().unwrap_or("/")), ctx)
    }
}

/// The new path for ReplacePrefixMatch: the replacement, then whatever
/// followed the matched prefix (segment-aware).
fn replaced_prefix(replacement: &str, ctx: Context) -> Result<String, Cond> {
    if ctx.prefix.is_none() {
        return Err(unsupported("ReplacePrefixMatch needs a PathPrefix match"));
    }
    let trimmed = replacement.trim_end_matches('/');
    Ok(match (trimmed.is_empty(), ctx.prefix_exact) {
        (_, true) if trimmed.is_empty() => "/".into(),
        (_, true) => trimmed.into(),
        _ => format!("{trimmed}{PREFIX_REST}"),
    })
}

/// The rewrite to `uri`. One that keeps what followed the prefix replaces
/// the prefix within the escaped path: rebuilding the URI would decode
/// `%2F` and the like in the rest, and only the prefix may change.
fn rewrite(uri: String, ctx: Context) -> Handler {
    let (Some(replacement), Some(prefix)) = (uri.strip_suffix(PREFIX_REST), ctx.prefix) else {
        return Handler::Rewrite {
            uri,
            path_regexp: vec![],
        };
    };
    Handler::Rewrite {
        uri: String::new(),
        path_regexp: vec![PathReplace {
            find: format!(
                "^{}(/.*)?$",
                escaped_path_regexp(prefix.trim_end_matches('/'))
            ),
            // `$` is the expansion's metacharacter; `$1` the rest (last, so
            // no name can follow it; `${1}` would be read as a placeholder).
            replace: format!("{}$1", replacement.replace('$', "$$")),
        }],
    }
}

/// A regexp for `value` as it appears in an escaped request path: each
/// octet of the decoded value either as itself or as `%XX` (any case),
/// the same octets the decoded-path matcher accepted.
fn escaped_path_regexp(value: &str) -> String {
    let decoded = super::literals::percent_decode(value);
    let mut out = String::new();
    for b in decoded {
        let case = |d: u8| {
            let (u, l) = (format!("{d:X}"), format!("{d:x}"));
            if u == l { u } else { format!("[{u}{l}]") }
        };
        let encoded = format!("%{}{}", case(b >> 4), case(b & 15));
        if b == b'/' {
            // The matcher folded doubled slashes; so does this.
            out.push_str("(?:/|%2[Ff])+");
        } else if b.is_ascii_graphic() {
            let literal = super::literals::escape(&(b as char).to_string());
            out.push_str(&format!("(?:{literal}|{encoded})"));
        } else {
            out.push_str(&encoded);
        }
    }
    out
}

/// Does a ReplacePrefixMatch in these filters need the request path split
/// into "exactly the prefix" and "prefix plus more"? Only when the
/// replacement is `/`, where the two give different shapes.
pub fn needs_prefix_split(filters: &[Filter]) -> bool {
    filters.iter().any(|f| {
        let redirect = f
            .request_redirect
            .as_ref()
            .and_then(|r| r.path.as_ref())
            .and_then(|p| p.replace_prefix_match.as_deref());
        let rewrite = f
            .url_rewrite
            .as_ref()
            .and_then(|r| r.path.as_ref())
            .and_then(|p| p.replace_prefix_match.as_deref());
        redirect
            .or(rewrite)
            .is_some_and(|r| r.trim_end_matches('/').is_empty())
    })
}

/// Do these filters depend on the listener ([`Context::port`] and
/// [`Context::https`])? Only a redirect does, for its default scheme and port.
pub fn uses_listener(filters: &[Filter]) -> bool {
    filters
        .iter()
        .any(|f| matches!(f.r#type, Type::RequestRedirect))
}

/// Does any filter read the text after the matched prefix?
pub fn uses_prefix(filters: &[Filter]) -> bool {
    filters.iter().any(|f| {
        f.request_redirect
            .as_ref()
            .and_then(|r| r.path.as_ref())
            .is_some_and(|p| p.r#type == RedirectPathType::ReplacePrefixMatch)
            || f.url_rewrite
                .as_ref()
                .and_then(|r| r.path.as_ref())
                .is_some_and(|p| p.r#type == RewritePathType::ReplacePrefixMatch)
    })
}

fn ops<'a>(
    add: impl Iterator<Item = (&'a String, &'a String)>,
    set: impl Iterator<Item = (&'a String, &'a String)>,
    delete: Option<Vec<String>>,
) -> HeaderOps {
    let collect = |it: &mut dyn Iterator<Item = (&'a String, &'a String)>| {
        let map: BTreeMap<String, Vec<String>> =
            it.map(|(k, v)| (literal(k), vec![literal(v)])).collect();
        (!map.is_empty()).then_some(map)
    };
    let mut add = add;
    let mut set = set;
    HeaderOps {
        add: collect(&mut add),
        set: collect(&mut set),
        delete: delete
            .filter(|d| !d.is_empty())
            .map(|d| d.iter().map(|n| literal(n)).collect()),
        deferred: false,
    }
}

fn missing(field: &str) -> Cond {
    unsupported(format!("filter has no {field} settings"))
}

/// The Gateway API's `HTTPHeaderName` (used for query names too), which
/// files skip: an HTTP token of at most 256 characters. Anything else the
/// proxy refuses to send (502) or cannot match.
pub fn http_token(name: &str) -> bool {
    (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The error for a name that is not [`http_token`].
pub fn bad_name(what: &str, name: &str) -> Cond {
    unsupported(format!(
        "{what} name {name:?} is not valid: it needs 1 to 256 letters, digits or !#$%&'*+-.^_`|~"
    ))
}

fn header_names<'a>(filter: &str, names: impl Iterator<Item = &'a String>) -> Result<(), Cond> {
    match names.into_iter().find(|n| !http_token(n)) {
        Some(name) => Err(bad_name(&format!("{filter} header"), name)),
        None => Ok(()),
    }
}

/// A filter's hostname is a `PreciseHostname` (files skip the CRD): a
/// Host the proxy would refuse to send answers 502 instead of being reported.
fn precise_hostname(filter: &str, host: &str) -> Result<(), Cond> {
    let wildcard = host
        .starts_with("*.")
        .then(|| "a wildcard is not allowed".to_string());
    match wildcard.map_or_else(|| super::hostnames::validate(host), Err) {
        Ok(()) => Ok(()),
        Err(why) => Err(unsupported(format!("{filter} hostname {host:?}: {why}"))),
    }
}

pub fn unsupported(message: impl Into<String>) -> Cond {
    Cond::new(CondType::Accepted, false, Reason::UnsupportedValue, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(filter: serde_json::Value) -> Result<(Vec<Handler>, bool), Cond> {
        let filter: Filter = serde_json::from_value(filter).unwrap();
        let ctx = Context {
            port: 80,
            https: false,
            prefix: None,
            prefix_exact: false,
        };
        handlers(&[filter], ctx)
    }

    /// Found by tests/hostile.rs in real Caddy: a Host or header name the
    /// proxy cannot send made the rule answer 502 while Accepted=True.
    #[test]
    fn filter_hostnames_and_header_names_are_what_the_crd_allows() {
        for kind in ["requestHeaderModifier", "responseHeaderModifier"] {
            let type_ = format!("{}{}", kind[..1].to_uppercase(), &kind[1..]);
            for ops in [
                serde_json::json!({"set": [{"name": "X{env.HOME}", "value": "v"}]}),
                serde_json::json!({"add": [{"name": "", "value": "v"}]}),
                serde_json::json!({"remove": ["X Y"]}),
            ] {
                let err = compile(serde_json::json!({"type": type_, kind: ops})).unwrap_err();
                assert_eq!(err.reason, Reason::UnsupportedValue);
                assert!(err.message.contains("header name"), "{}", err.message);
            }
            let ok = serde_json::json!({"set": [{"name": "X-A", "value": "{env.HOME}"}]});
            assert!(compile(serde_json::json!({"type": type_, kind: ok})).is_ok());
        }
        for host in ["{env.HOME}", "*.example.com", "a b", "10.0.0.1"] {
            for filter in [
                serde_json::json!({"type": "URLRewrite", "urlRewrite": {"hostname": host}}),
                serde_json::json!({"type": "RequestRedirect", "requestRedirect": {"hostname": host}}),
            ] {
                let err = compile(filter).unwrap_err();
                assert!(err.message.contains("hostname"), "{}", err.message);
            }
        }
        let ok = serde_json::json!({"type": "URLRewrite", "urlRewrite": {"hostname": "a.example"}});
        assert!(compile(ok).is_ok());
    }
}
