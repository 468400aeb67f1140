//! Checks a config the way Kengine will before it is loaded, for the values
//! that make Kengine refuse a whole `/load`: every regexp compiles in Go's
//! RE2, every duration parses as Go's `time.ParseDuration`, and every
//! placeholder is one we emit on purpose (a user's braces are escaped).

use super::config::{Config, Handler, Provenance, Route};
use super::placeholders;
use super::re2::{self, Re2Error};

mod walk;

/// Placeholders our translator emits itself.
const OURS: &[&str] = &[
    "http.request.host",
    "http.request.uri",
    "http.request.uuid",
    "http.request.tls.server_name",
    "http.request.header.Origin",
    "http.request.header.Access-Control-Request-Method",
    "http.request.header.Access-Control-Request-Headers",
    "http.regexp.kg_path.1",
    "http.error.status_code",
];
/// Ours too, followed by a query parameter's name.
const QUERY_PREFIX: &str = "http.request.uri.query.";
/// Fields Kengine reads as a Go duration (`caddy.Duration`).
const DURATIONS: &[&str] = &[
    "dial_timeout",
    "read_timeout",
    "read_header_timeout",
    "write_timeout",
    "idle_timeout",
    "keepalive",
    "response_header_timeout",
    "expect_continue_timeout",
    "try_duration",
    "try_interval",
    "flush_interval",
    "stream_timeout",
    "stream_close_delay",
    "grace_period",
    "shutdown_delay",
];

/// The first value Kengine would refuse (or expand unintended), where, and
/// which Gateway API object it was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    /// JSON path of the value, e.g. `apps.http.servers.s0.routes[2].match[0]`.
    pub path: String,
    pub problem: Problem,
    /// The innermost route or server on the path that knows its origin.
    pub origin: Provenance,
}

impl std::error::Error for CheckError {}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at {}", self.path)?;
        if self.origin.is_known() {
            write!(f, " (from {})", self.origin)?;
        }
        write!(f, ": {}", self.problem)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(transparent)]
    Regexp(#[from] Re2Error),
    #[error("invalid duration {0:?}")]
    Duration(String),
    #[error("unintended placeholder {{{0}}}")]
    Placeholder(String),
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Checks a whole config, trusting nothing: the sinks' last line.
pub fn config(config: &Config) -> Result<(), CheckError> {
    config_walk(config, false)
}

/// Checks a config except the routes that passed [`route`] as built and
/// say so ([`Provenance::is_checked`]): translate's whole-config backstop,
/// which would otherwise walk every rule a second time.
pub fn unchecked_parts(config: &Config) -> Result<(), CheckError> {
    config_walk(config, true)
}

fn config_walk(config: &Config, skip_checked: bool) -> Result<(), CheckError> {
    walk::walk(config, Vec::new(), skip_checked).map_err(|(steps, problem)| CheckError {
        path: render(&steps),
        problem,
        origin: origin_in_config(config, &steps),
    })
}

/// Checks one route, as translate builds it.
pub fn route(route: &Route) -> Result<(), CheckError> {
    let prefix = vec![Step::Key("route".into())];
    walk::walk(route, prefix, false).map_err(|(steps, problem)| CheckError {
        path: render(&steps),
        problem,
        origin: origin_in_route(route, &steps[1..], &Provenance::default()),
    })
}

/// Is `name` (inside braces) one of our placeholders?
pub fn is_ours(name: &str) -> bool {
    OURS.contains(&name)
        || name
            .strip_prefix(QUERY_PREFIX)
            .is_some_and(|q| !q.is_empty() && !q.contains(['{', '}']))
}

fn render(steps: &[Step]) -> String {
    let mut path = String::new();
    for step in steps {
        match step {
            Step::Key(k) if path.is_empty() => path.push_str(k),
            Step::Key(k) => {
                path.push('.');
                path.push_str(k);
            }
            Step::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
}

/// The provenance of the innermost route (else server) on `steps`.
fn origin_in_config(config: &Config, steps: &[Step]) -> Provenance {
    fn key(s: &Step) -> Option<&str> {
        match s {
            Step::Key(k) => Some(k),
            Step::Index(_) => None,
        }
    }
    let servers = config.apps.http.as_ref().map(|h| &h.servers);
    let (Some(servers), [a, h, s, name, rest @ ..]) = (servers, steps) else {
        return Provenance::default();
    };
    if (key(a), key(h), key(s)) != (Some("apps"), Some("http"), Some("servers")) {
        return Provenance::default();
    }
    let Some(server) = key(name).and_then(|n| servers.get(n)) else {
        return Provenance::default();
    };
    let route = match rest {
        [Step::Key(k), Step::Index(i), rest @ ..] if k == "routes" => {
            server.routes.get(*i).map(|r| (r, rest))
        }
        [Step::Key(k), Step::Key(name), rest @ ..] if k == "named_routes" => {
            server.named_routes.get(name).map(|r| (r, rest))
        }
        _ => None,
    };
    match route {
        Some((route, rest)) => origin_in_route(route, rest, &server.provenance),
        None => server.provenance.clone(),
    }
}

fn origin_in_route(route: &Route, steps: &[Step], outer: &Provenance) -> Provenance {
    let known = if route.provenance.is_known() {
        &route.provenance
    } else {
        outer
    };
    if let [
        Step::Key(h),
        Step::Index(j),
        Step::Key(r),
        Step::Index(k),
        rest @ ..,
    ] = steps
        && h == "handle"
        && r == "routes"
        && let Some(Handler::Subroute { routes }) = route.handle.get(*j)
        && let Some(inner) = routes.get(*k)
    {
        return origin_in_route(inner, rest, known);
    }
    known.clone()
}

type Found = (Vec<Step>, Problem);

/// What Kengine would refuse in string `s`, the value of object key `key`
/// (`None` in an array).
fn string_problem(key: Option<&str>, s: &str) -> Option<Problem> {
    match key {
        Some("pattern") => re2::check(s).err().map(Problem::Regexp),
        Some(k) if DURATIONS.contains(&k) => go_duration(s)
            .is_none()
            .then(|| Problem::Duration(s.into())),
        Some("name") => None,
        _ => strings(s).err(),
    }
}

/// What Kengine would refuse in a map key it expands.
fn key_problem(key: &str) -> Option<Problem> {
    strings(key).err()
}

/// Kengine never expands the names of servers and named routes (nor
/// `invoke`'s), nor the header names its header matchers read.
fn literal_keys(map: Option<&str>) -> bool {
    map.is_some_and(|m| ["named_routes", "servers", "header", "header_regexp"].contains(&m))
}

fn strings(s: &str) -> Result<(), Problem> {
    if !s.contains('{') {
        return Ok(());
    }
    match placeholders::unescaped(s).into_iter().find(|n| !is_ours(n)) {
        Some(name) => Err(Problem::Placeholder(name.to_string())),
        None => Ok(()),
    }
}

/// Go's `time.ParseDuration`: nanoseconds, or `None` where Go fails
/// (syntax, unknown unit, or beyond an int64 of nanoseconds).
pub fn go_duration(s: &str) -> Option<i128> {
    const UNITS: &[(&str, u128)] = &[
        ("ns", 1),
        ("us", 1_000),
        ("\u{b5}s", 1_000),
        ("\u{3bc}s", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    let limit: u128 = 1 << 63;
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac = "";
        if let Some(after) = rest.strip_prefix('.') {
            let n = after.bytes().take_while(u8::is_ascii_digit).count();
            frac = &after[..n];
            rest = &after[n..];
        }
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_len = rest
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let unit = UNITS.iter().find(|(u, _)| *u == &rest[..unit_len])?.1;
        rest = &rest[unit_len..];
        let mut v: u128 = 0;
        for d in int.bytes() {
            v = v * 10 + u128::from(d - b'0');
            if v > limit {
                return None;
            }
        }
        v = v.checked_mul(unit).filter(|&v| v <= limit)?;
        // Go keeps the fraction's digits while they fit, then floors.
        let (mut f, mut scale) = (0u128, 1u128);
        for d in frac.bytes().take(20) {
            f = f * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        v += f * unit / scale;
        total += v;
        if total > limit {
            return None;
        }
    }
    if neg {
        Some(-(total as i128))
    } else if total == limit {
        None
    } else {
        Some(total as i128)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kengine::config::{HeaderOps, Headers, MatcherSet, RegexpMatcher};

    #[test]
    fn durations_follow_go() {
        for (s, ns) in [
            ("0", 0),
            ("1s", 1_000_000_000),
            ("1.5h", 5_400_000_000_000),
            ("-2m3s", -123_000_000_000),
            ("10us", 10_000),
            ("1\u{b5}s", 1_000),
            (".5s", 500_000_000),
            ("2562047h", 2_562_047 * 3_600_000_000_000),
            ("9223372036854775807ns", i64::MAX as i128),
        ] {
            assert_eq!(go_duration(s), Some(ns), "{s}");
        }
        for s in [
            "",
            "1",
            "s",
            "1x",
            "2562048h",
            "9223372036854775808ns",
            "1.s.",
            "--1s",
            ".s",
            "1d",
        ] {
            assert_eq!(go_duration(s), None, "{s}");
        }
    }

    #[test]
    fn finds_and_locates_each_kind_of_problem() {
        let header = |value: &str| {
            Route::handle(vec![Handler::Headers(Box::new(Headers {
                request: Some(HeaderOps {
                    set: Some([("X".to_string(), vec![value.to_string()])].into()),
                    ..Default::default()
                }),
                response: None,
            }))])
        };
        assert_eq!(route(&header("\\{env.HOME\\} {http.request.host}")), Ok(()));
        let err = route(&header("a{env.HOME}")).unwrap_err();
        assert_eq!(err.path, "route.handle[0].request.set.X[0]");
        assert_eq!(err.problem, Problem::Placeholder("env.HOME".into()));
        let regexp = Route {
            matchers: vec![MatcherSet {
                vars_regexp: Some(
                    [(
                        "{http.request.uri.query.q}".to_string(),
                        RegexpMatcher {
                            name: None,
                            pattern: "([".into(),
                        },
                    )]
                    .into(),
                ),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = route(&regexp).unwrap_err();
        assert_eq!(
            err.path,
            "route.match[0].vars_regexp.{http.request.uri.query.q}.pattern"
        );
        assert!(matches!(err.problem, Problem::Regexp(_)));
        let mut bad_key = regexp.clone();
        let set = bad_key.matchers[0].vars_regexp.as_mut().unwrap();
        let m = set.remove("{http.request.uri.query.q}").unwrap();
        set.insert(
            "{file./etc/passwd}".into(),
            RegexpMatcher {
                pattern: "x".into(),
                ..m
            },
        );
        assert!(matches!(
            route(&bad_key).unwrap_err().problem,
            Problem::Placeholder(_)
        ));
        // Header matchers read their names literally; their values expand.
        let header_match = |name: &str, value: &str| Route {
            matchers: vec![MatcherSet {
                header: Some([(name.to_string(), vec![value.to_string()])].into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(route(&header_match("{env.HOME}", "x")), Ok(()));
        assert!(route(&header_match("x", "{env.HOME}")).is_err());
        let json = serde_json::json!({"apps": {"http": {"servers": {"s": {"listen": [":1"],
            "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [],
            "transport": {"protocol": "http", "response_header_timeout": "2562048h"}}]}]}}}}});
        let config: Config = serde_json::from_value(json).unwrap();
        let err = super::config(&config).unwrap_err();
        assert_eq!(
            err.path,
            "apps.http.servers.s.routes[0].handle[0].transport.response_header_timeout"
        );
        assert_eq!(err.problem, Problem::Duration("2562048h".into()));
    }
}
