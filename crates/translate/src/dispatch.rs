//! From a rule's weighted backends to the handlers that pick one.
//!
//! The common case, plain backends, is one `reverse_proxy` with weighted
//! round robin: deterministic and cheap. When backends differ in more than
//! their address (per-backend filters, an invalid backend whose share must
//! get 500, a different upstream protocol), each gets its own handler chain
//! and a request picks one by the first two hex digits of its random
//! `{http.request.uuid}`: 256 slots shared out by weight.
//!
//! Every `reverse_proxy` is stored once per server as a named route and
//! reached with `invoke`. Kengine provisions each proxy handler on every
//! load (its transport and upstream state), and the routes of a namespace
//! tend to share their backends: on 5,000 routes of the benchmark shape
//! this halves the reload (BENCHMARKS.md, scenario 6).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::rc::Rc;

use foldhash::HashMap;

use super::backend_client_cert::ClientCert;
use super::backends::{Backend, upstream_weights};
use crate::kengine::check;
use crate::kengine::config::{
    CaPool, Handler, HttpTransport, LoadBalancing, MatcherSet, RegexpMatcher, ResponseHandler,
    ResponseMatcher, ReverseProxy, Route, SelectionPolicy, TransportTls, Upstream,
};

const SLOTS: u32 = 256;

/// One backendRef of a rule, resolved.
#[derive(Debug, Clone)]
pub struct Target {
    pub weight: u32,
    /// Handlers that run for this backend only (its filters).
    pub handlers: Vec<Handler>,
    /// `None`: the ref is invalid and its share of requests gets 500.
    pub backend: Option<Rc<Backend>>,
}

/// Upstream settings shared by every backend of a rule.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    /// Go duration: how long to wait for response headers (rule timeouts).
    pub response_header_timeout: Option<String>,
    /// How often to try again, and on which response codes.
    pub retry: Option<Retry>,
    /// The rule is a GRPCRoute's: a request that cannot be sent gets a gRPC
    /// status (`UNAVAILABLE`, as the spec asks), not an HTTP error.
    pub grpc: bool,
    /// Presented to backends dialed over TLS: the Gateway's backend client
    /// certificate.
    pub client_cert: Option<Rc<ClientCert>>,
}

#[derive(Debug, Clone, Default)]
pub struct Retry {
    /// Retries after an error (an upstream that cannot be reached): a
    /// number in the proxy's load balancing, cheap at any size.
    pub attempts: u32,
    /// Retries on these response codes, each one a nested proxy: at most
    /// [`MAX_CODE_RETRIES`] of them.
    pub codes: Vec<u16>,
}

/// Each retry on a response code nests a proxy in the config; more than a
/// few is no retry policy but a config that grows.
pub const MAX_CODE_RETRIES: u32 = 5;

/// A proxy shared by every route that sends requests the same way.
#[derive(Debug)]
pub struct SharedProxy {
    /// Derived from what the proxy does, so equal proxies get one name in
    /// every route, listener and translate.
    pub name: String,
    /// The named route: the proxy alone.
    pub route: Route,
}

/// The proxies of one translate, by what they do.
#[derive(Debug, Default)]
pub struct Proxies {
    known: HashMap<String, Rc<SharedProxy>>,
}

/// The handlers that send a request to `targets`. The shared proxies they
/// invoke are added to `used`; each server that holds these handlers must
/// hold those named routes.
pub fn handlers(
    targets: &[Target],
    settings: &Upstreams,
    proxies: &mut Proxies,
    used: &mut Vec<Rc<SharedProxy>>,
) -> Vec<Handler> {
    let live = || targets.iter().filter(|t| t.weight > 0);
    let reachable = |t: &Target| t.backend.as_ref().is_some_and(|b| !b.dials.is_empty());
    if !live().any(reachable) {
        // Nothing to send to. Invalid refs (or none, or all weight 0) are
        // the spec's 500; a valid Service without endpoints is unavailable.
        let unavailable =
            live().any(|t| t.backend.is_some()) && live().all(|t| t.backend.is_some());
        return vec![refusal(settings, if unavailable { 503 } else { 500 })];
    }
    // How a backend is spoken to: one proxy serves backends that agree.
    let protocol = |t: &Target| t.backend.as_ref().map(|b| (b.h2c, b.tls.clone()));
    let first = live().next().and_then(protocol);
    let uniform = live().all(|t| t.handlers.is_empty() && reachable(t) && protocol(t) == first);
    if uniform {
        let backends: Vec<&Backend> = live().filter_map(|t| t.backend.as_deref()).collect();
        return vec![proxies.invoke(&backends, settings, used)];
    }
    let live: Vec<&Target> = live().collect();
    let slots = share(&live.iter().map(|t| t.weight).collect::<Vec<_>>());
    let mut routes = Vec::new();
    let mut start = 0;
    for (i, (target, n)) in live.iter().zip(slots).enumerate() {
        let mut handle = target.handlers.clone();
        handle.push(match &target.backend {
            Some(b) if b.dials.is_empty() => refusal(settings, 503),
            Some(b) => proxies.invoke(std::slice::from_ref(b), settings, used),
            None => refusal(settings, 500),
        });
        // The last target takes whatever is left, so every request lands somewhere.
        let matchers = if i + 1 == live.len() {
            vec![]
        } else {
            vec![MatcherSet {
                vars_regexp: Some(BTreeMap::from([(
                    "{http.request.uuid}".to_string(),
                    RegexpMatcher {
                        name: None,
                        pattern: slot_regexp(start, start + n),
                    },
                )])),
                ..Default::default()
            }]
        };
        start += n;
        routes.push(Route {
            matchers,
            handle,
            terminal: false,
            ..Default::default()
        });
    }
    vec![Handler::Subroute { routes }]
}

/// The answer to a request that has no backend to go to: `code` (500 for
/// an invalid backendRef, 503 for a Service without endpoints), or for gRPC
/// the status `UNAVAILABLE`.
fn refusal(settings: &Upstreams, code: u16) -> Handler {
    match settings.grpc {
        true => Handler::grpc_status(
            GRPC_UNAVAILABLE,
            match code {
                503 => "no ready endpoints",
                _ => "invalid backendRef",
            },
        ),
        false => Handler::status(code),
    }
}

/// gRPC's status code `UNAVAILABLE`.
const GRPC_UNAVAILABLE: u8 = 14;

impl Proxies {
    /// `invoke` of the shared proxy to `backends`, made on first use.
    fn invoke<B: Borrow<Backend>>(
        &mut self,
        backends: &[B],
        settings: &Upstreams,
        used: &mut Vec<Rc<SharedProxy>>,
    ) -> Handler {
        let key = proxy_key(&upstream_weights(backends), backends, settings);
        let shared = match self.known.get(&key) {
            Some(shared) => shared.clone(),
            None => {
                let attempts = settings.retry.as_ref().map_or(0, |r| r.attempts);
                let proxy = proxy_with_retries(
                    backends,
                    settings,
                    attempts,
                    attempts.min(MAX_CODE_RETRIES),
                );
                let mut route = Route::handle(vec![proxy]);
                // Checked once here, not again by every rule that uses it
                // (`rules::compile` checks the ones that fail, and refuses
                // those rules).
                let passed = check::route(&route).is_ok();
                route.provenance.set_checked(passed);
                let shared = Rc::new(SharedProxy {
                    name: proxy_name(&key),
                    route,
                });
                self.known.insert(key, shared.clone());
                shared
            }
        };
        let handler = Handler::Invoke {
            name: shared.name.clone(),
        };
        if !used.iter().any(|u| Rc::ptr_eq(u, &shared)) {
            used.push(shared);
        }
        handler
    }
}

/// Everything [`proxy_with_retries`] builds a proxy from, spelt out:
/// `proxy 10.0.0.1:80*4,10.0.0.2:80*1 h2c timeout=5s retries=2:500,503`.
fn proxy_key<B: Borrow<Backend>>(
    weights: &[(String, u32)],
    backends: &[B],
    settings: &Upstreams,
) -> String {
    let mut key = String::with_capacity(48);
    key.push_str("proxy ");
    for (i, (dial, weight)) in weights.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        key.push_str(dial);
        if weights.len() > 1 {
            let _ = write!(key, "*{weight}");
        }
    }
    let tls = backends.first().and_then(|b| b.borrow().tls.clone());
    if backends.iter().any(|b| b.borrow().h2c) {
        key.push_str(if tls.is_some() { " h2" } else { " h2c" });
    }
    if let Some(tls) = tls {
        let _ = write!(key, " tls={}", tls.id);
        if let Some(cert) = &settings.client_cert {
            let _ = write!(key, " cert={}", cert.id);
        }
    }
    if let Some(timeout) = &settings.response_header_timeout {
        let _ = write!(key, " timeout={timeout}");
    }
    if let Some(retry) = settings.retry.as_ref().filter(|r| r.attempts > 0) {
        let _ = write!(key, " retries={}", retry.attempts);
        for (i, code) in retry.codes.iter().enumerate() {
            let _ = write!(key, "{}{code}", if i == 0 { ':' } else { ',' });
        }
    }
    key
}

/// The key itself when it is short enough to read in a config, else a
/// hash of it (64-bit FNV-1a: a collision among a fleet's few thousand
/// proxies is not a practical concern).
fn proxy_name(key: &str) -> String {
    const MAX: usize = 96;
    if key.len() <= MAX {
        return key.to_string();
    }
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("proxy #{hash:016x}")
}

/// Kengine retries by itself only after errors (an upstream it cannot
/// reach; a GET whose upstream timed out): `load_balancing.retries` takes
/// the attempts left. Retrying on a response code nests a proxy in
/// `handle_response` per code retry left, with one attempt less: the
/// request is sent again when the answer matches. (Bodies are not buffered, so this is for requests
/// without one, as Gateway API retries usually are.)
fn proxy_with_retries<B: Borrow<Backend>>(
    backends: &[B],
    settings: &Upstreams,
    attempts_left: u32,
    code_retries_left: u32,
) -> Handler {
    let weights = upstream_weights(backends);
    let selection_policy = (weights.len() > 1).then(|| SelectionPolicy::WeightedRoundRobin {
        weights: weights.iter().map(|w| w.1).collect(),
    });
    let retries = (attempts_left > 0).then_some(attempts_left);
    let load_balancing =
        (selection_policy.is_some() || retries.is_some()).then_some(LoadBalancing {
            selection_policy,
            retries,
        });
    let h2c = backends.iter().any(|b| b.borrow().h2c);
    // Backends of one proxy agree on TLS (see `handlers`).
    let tls = backends.first().and_then(|b| b.borrow().tls.clone());
    let transport =
        (h2c || tls.is_some() || settings.response_header_timeout.is_some()).then(|| {
            HttpTransport {
                protocol: "http".into(),
                // Over TLS, HTTP/2 is negotiated (ALPN); in cleartext it is h2c.
                versions: match (h2c, &tls) {
                    (false, _) => vec![],
                    (true, Some(_)) => vec!["2".into()],
                    (true, None) => vec!["h2c".into(), "2".into()],
                },
                response_header_timeout: settings.response_header_timeout.clone(),
                tls: tls.map(|t| TransportTls {
                    ca: t.trusted_ca_certs.clone().map(|certs| CaPool {
                        provider: "inline".into(),
                        trusted_ca_certs: certs,
                    }),
                    server_name: t.server_name.clone(),
                    client_certificate_file: (settings.client_cert.as_ref())
                        .map(|c| c.cert_path.clone())
                        .unwrap_or_default(),
                    client_certificate_key_file: (settings.client_cert.as_ref())
                        .map(|c| c.key_path.clone())
                        .unwrap_or_default(),
                }),
            }
        });
    let codes = settings
        .retry
        .as_ref()
        .map(|r| r.codes.clone())
        .unwrap_or_default();
    let handle_response = if code_retries_left > 0 && !codes.is_empty() {
        let again =
            proxy_with_retries(backends, settings, attempts_left - 1, code_retries_left - 1);
        vec![ResponseHandler {
            matcher: ResponseMatcher { status_code: codes },
            routes: vec![Route::handle(vec![again])],
        }]
    } else {
        vec![]
    };
    Handler::ReverseProxy(Box::new(ReverseProxy {
        transport,
        upstreams: weights
            .into_iter()
            .map(|(dial, _)| Upstream { dial })
            .collect(),
        load_balancing,
        handle_response,
    }))
}

/// Shares [`SLOTS`] out in proportion to `weights` (largest remainder),
/// every nonzero weight getting at least one slot.
fn share(weights: &[u32]) -> Vec<u32> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let mut slots: Vec<u32> = weights
        .iter()
        .map(|&w| ((u64::from(w) * u64::from(SLOTS)) / total) as u32)
        .collect();
    for (s, &w) in slots.iter_mut().zip(weights) {
        if w > 0 && *s == 0 {
            *s = 1;
        }
    }
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((u64::from(weights[i]) * u64::from(SLOTS)) % total));
    let mut used: u32 = slots.iter().sum();
    let mut k = 0;
    while used < SLOTS {
        slots[order[k % order.len()]] += 1;
        used += 1;
        k += 1;
    }
    while used > SLOTS {
        let i = (0..slots.len()).max_by_key(|&i| slots[i]).unwrap();
        slots[i] -= 1;
        used -= 1;
    }
    slots
}

/// A regexp matching UUIDs whose first byte (two hex digits) is in `lo..hi`.
fn slot_regexp(lo: u32, hi: u32) -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    let mut alternatives = Vec::new();
    let mut full_rows = String::new();
    for first in 0..16u32 {
        let (row_lo, row_hi) = ((first * 16).max(lo), (first * 16 + 16).min(hi));
        if row_lo >= row_hi {
            continue;
        }
        if row_hi - row_lo == 16 {
            full_rows.push(HEX[first as usize] as char);
        } else {
            let seconds: String = (row_lo..row_hi)
                .map(|v| HEX[(v % 16) as usize] as char)
                .collect();
            alternatives.push(format!("{}[{seconds}]", HEX[first as usize] as char));
        }
    }
    if !full_rows.is_empty() {
        alternatives.insert(0, format!("[{full_rows}][0-9a-f]"));
    }
    format!("^(?:{})", alternatives.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_weights() {
        assert_eq!(share(&[1, 1]), [128, 128]);
        assert_eq!(share(&[80, 20]).iter().sum::<u32>(), 256);
        assert_eq!(share(&[80, 20])[0], 205);
        assert_eq!(share(&[1000, 1]), [255, 1]);
        assert_eq!(share(&[70, 30, 0]).iter().sum::<u32>(), 256);
    }

    #[test]
    fn slot_regexps_cover_exactly_their_range() {
        let re = slot_regexp(0, 205);
        assert_eq!(re, "^(?:[0123456789ab][0-9a-f]|c[0123456789abc])");
        // Every first byte is matched by exactly one of the complementary patterns.
        for v in 0..256u32 {
            let s = format!("{v:02x}");
            let in_first = matches_simple(&slot_regexp(0, 100), &s);
            let in_second = matches_simple(&slot_regexp(100, 256), &s);
            assert!(in_first ^ in_second, "{s}");
            assert_eq!(in_first, v < 100, "{s}");
        }
    }

    fn target(ip: &str, weight: u32, h2c: bool) -> Target {
        Target {
            weight,
            handlers: vec![],
            backend: Some(Rc::new(Backend {
                weight,
                dials: vec![format!("{ip}:80")],
                h2c,
                tls: None,
            })),
        }
    }

    fn invoked(handlers: &[Handler]) -> &str {
        match handlers {
            [Handler::Invoke { name }] => name,
            other => panic!("not one invoke: {other:?}"),
        }
    }

    #[test]
    fn equal_proxies_are_shared_and_different_ones_are_not() {
        let mut proxies = Proxies::default();
        let mut used = Vec::new();
        let plain = Upstreams::default();
        let mut run = |targets: &[Target], settings: &Upstreams| {
            invoked(&handlers(targets, settings, &mut proxies, &mut used)).to_string()
        };
        let first = run(&[target("10.0.0.1", 1, false)], &plain);
        assert_eq!(first, "proxy 10.0.0.1:80");
        assert_eq!(run(&[target("10.0.0.1", 1, false)], &plain), first);
        let timeout = Upstreams {
            response_header_timeout: Some("5s".into()),
            ..Default::default()
        };
        let retry = Upstreams {
            response_header_timeout: None,
            retry: Some(Retry {
                attempts: 2,
                codes: vec![500, 503],
            }),
            ..Default::default()
        };
        let names = [
            first.clone(),
            run(&[target("10.0.0.1", 1, false)], &timeout),
            run(&[target("10.0.0.1", 1, false)], &retry),
            run(&[target("10.0.0.1", 1, true)], &plain),
            run(
                &[target("10.0.0.1", 4, false), target("10.0.0.2", 1, false)],
                &plain,
            ),
            run(
                &[target("10.0.0.1", 1, false), target("10.0.0.2", 4, false)],
                &plain,
            ),
        ];
        assert_eq!(
            names[2], "proxy 10.0.0.1:80 retries=2:500,503",
            "settings are part of the name"
        );
        let distinct: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        assert_eq!(proxies.known.len(), names.len());
        assert_eq!(used.len(), names.len(), "each shared proxy is listed once");
        let weighted = &proxies.known[&names[4]].route.handle[0];
        let Handler::ReverseProxy(p) = weighted else {
            panic!("{weighted:?}")
        };
        assert_eq!(p.upstreams.len(), 2);
    }

    #[test]
    fn a_proxy_is_checked_once_and_one_kengine_would_refuse_says_so() {
        let mut proxies = Proxies::default();
        let mut used = Vec::new();
        let bad = Upstreams {
            response_header_timeout: Some("soon".into()),
            ..Default::default()
        };
        for settings in [Upstreams::default(), bad] {
            handlers(
                &[target("10.0.0.1", 1, false)],
                &settings,
                &mut proxies,
                &mut used,
            );
        }
        let checked: Vec<bool> = (used.iter())
            .map(|p| p.route.provenance.is_checked())
            .collect();
        // `rules::compile` checks an unmarked proxy again, with each rule.
        assert_eq!(checked, [true, false]);
    }

    #[test]
    fn many_attempts_retry_errors_but_nest_few_code_retries() {
        let backend = Backend {
            weight: 1,
            dials: vec!["10.0.0.1:80".into()],
            h2c: false,
            tls: None,
        };
        let settings = Upstreams {
            response_header_timeout: None,
            retry: Some(Retry {
                attempts: 100,
                codes: vec![503],
            }),
            ..Default::default()
        };
        // Walk the nested proxies: (retries, depth).
        let mut proxy = proxy_with_retries(&[&backend], &settings, 100, MAX_CODE_RETRIES);
        let mut seen = Vec::new();
        loop {
            let Handler::ReverseProxy(p) = proxy else {
                panic!("not a proxy: {proxy:?}")
            };
            seen.push(p.load_balancing.and_then(|lb| lb.retries));
            let Some(next) = p.handle_response.into_iter().next() else {
                break;
            };
            proxy = next.routes.into_iter().next().unwrap().handle.remove(0);
        }
        assert_eq!(
            seen,
            [100, 99, 98, 97, 96, 95].map(Some),
            "every level retries errors; {MAX_CODE_RETRIES} code retries nest"
        );
    }

    #[test]
    fn long_keys_get_short_stable_names() {
        let many: Vec<(String, u32)> = (0..50).map(|i| (format!("10.0.1.{i}:8080"), 1)).collect();
        let backends: [Backend; 0] = [];
        let key = proxy_key(&many, &backends, &Upstreams::default());
        let name = proxy_name(&key);
        assert!(name.starts_with("proxy #") && name.len() == 23, "{name}");
        assert_eq!(proxy_name(&key), name);
        assert_ne!(proxy_name(&key.replace("10.0.1.7:", "10.0.1.70:")), name);
    }

    /// Enough of regexp semantics for the patterns `slot_regexp` makes.
    fn matches_simple(re: &str, s: &str) -> bool {
        let body = re.trim_start_matches("^(?:").trim_end_matches(')');
        body.split('|').any(|alt| {
            let (first, second) = if let Some(rest) = alt.strip_prefix('[') {
                let (class, tail) = rest.split_once(']').unwrap();
                (class.to_string(), tail.to_string())
            } else {
                (alt[..1].to_string(), alt[1..].to_string())
            };
            let second = second
                .trim_start_matches('[')
                .trim_end_matches(']')
                .replace("0-9a-f", "0123456789abcdef");
            first.contains(&s[..1]) && second.contains(&s[1..2])
        })
    }
}
