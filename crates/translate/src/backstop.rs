//! The whole-config check at the end of translate. Each rule is checked as
//! it is built; this catches whatever still slips through (a translate
//! bug, or a value placed outside any rule): the part that Kengine would
//! refuse is cut out with the object part that made it, and reported on
//! that object, so one object's mistake never stops a fleet's whole config
//! from loading. Routes that passed the per-rule check, and say so, are not
//! walked again. The sinks still run the full check as the last line.

use crate::kengine::check::{self, CheckError};
use crate::kengine::config::{Config, Handler, OriginPart, Provenance, Route};

/// Enough for every route of a large config to be cut once; each round
/// cuts at least one thing.
const MAX_ROUNDS: usize = 100_000;

/// Cuts out of `config` every part Kengine would refuse: the routes of a
/// rule, or (for a value outside any rule) the server of its listeners.
/// Returns what was refused, in order. A value of unknown origin is left
/// in place (and returned last): the sinks refuse that config and say so.
pub fn cut(config: &mut Config) -> Vec<CheckError> {
    let mut refused = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let Err(e) = check::unchecked_parts(config) else {
            break;
        };
        let cut = match e.origin.origins().first().map(|o| &o.part) {
            Some(OriginPart::Rule(_)) => cut_routes(config, &e.origin),
            Some(OriginPart::Listener(_)) => cut_server(config, &e.origin),
            None => false,
        };
        refused.push(e);
        if !cut {
            break;
        }
    }
    refused
}

fn cut_server(config: &mut Config, provenance: &Provenance) -> bool {
    let Some(http) = config.apps.http.as_mut() else {
        return false;
    };
    let before = http.servers.len();
    http.servers.retain(|_, s| !s.provenance.same(provenance));
    if http.servers.is_empty() {
        config.apps.http = None;
        return before > 0;
    }
    http.servers.len() < before
}

/// Removes every route cloned from `provenance`, wherever it is nested.
fn cut_routes(config: &mut Config, provenance: &Provenance) -> bool {
    let mut cut = false;
    for server in config
        .apps
        .http
        .iter_mut()
        .flat_map(|h| h.servers.values_mut())
    {
        cut |= retain(&mut server.routes, provenance);
        for route in server.named_routes.values_mut() {
            cut |= within(route, provenance);
        }
    }
    cut
}

fn retain(routes: &mut Vec<Route>, provenance: &Provenance) -> bool {
    let before = routes.len();
    routes.retain(|r| !r.provenance.same(provenance));
    let mut cut = routes.len() < before;
    for route in routes {
        cut |= within(route, provenance);
    }
    cut
}

fn within(route: &mut Route, provenance: &Provenance) -> bool {
    let mut cut = false;
    for handler in &mut route.handle {
        match handler {
            Handler::Subroute { routes } => cut |= retain(routes, provenance),
            Handler::ReverseProxy(proxy) => {
                for response in &mut proxy.handle_response {
                    cut |= retain(&mut response.routes, provenance);
                }
            }
            _ => {}
        }
    }
    cut
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::kengine::config::{MatcherSet, RegexpMatcher};
    use crate::snapshot::ObjectRef;
    use crate::snapshot::Snapshot;
    use crate::{Options, translate};

    thread_local! {
        /// Breaks each fleet's config just before the backstop runs.
        pub static INJECT: std::cell::Cell<Option<fn(&mut Config)>> =
            const { std::cell::Cell::new(None) };
    }

    thread_local! {
        /// False: the injected bug also breaks the contract, leaving the
        /// route it grew marked as checked.
        static UNMARK: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
    }

    fn snapshot() -> Snapshot {
        let yaml = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: c}
spec: {controllerName: kengine.khulnasoft.com/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: n}
spec:
  gatewayClassName: c
  listeners: [{name: web, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: n}
spec:
  parentRefs: [{name: gw}]
  hostnames: [a.example.com, '*.example.com']
  rules:
  - matches: [{path: {type: PathPrefix, value: /ok}}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X, value: ok}]}}]
  - matches: [{path: {type: PathPrefix, value: /bad}}]
";
        let mut loaded = kengine_gateway_model::manifests::Loaded::default();
        kengine_gateway_model::manifests::parse_into(
            yaml,
            std::path::Path::new("t.yaml"),
            &mut loaded,
        )
        .unwrap();
        Snapshot::from_objects(loaded.objects)
    }

    /// Breaks every route built from rule 1 of n/r (under each hostname) the
    /// way a translate bug would: past the per-rule check.
    fn break_rule_1(routes: &mut [Route]) -> usize {
        let mut n = 0;
        for route in routes {
            if route
                .provenance
                .origins()
                .iter()
                .any(|o| o.name == "r" && o.part == OriginPart::Rule(1))
            {
                route.matchers.push(MatcherSet {
                    path_regexp: Some(RegexpMatcher {
                        name: None,
                        pattern: "([".into(),
                    }),
                    ..Default::default()
                });
                // As the contract asks of code that grows a checked route.
                if UNMARK.get() {
                    route.provenance.set_checked(false);
                }
                n += 1;
            }
            for handler in &mut route.handle {
                if let Handler::Subroute { routes } = handler {
                    n += break_rule_1(routes);
                }
            }
        }
        n
    }

    fn broken() -> Config {
        let mut config = translate(&snapshot(), &Options::default()).config().clone();
        inject(&mut config);
        config
    }

    fn inject(config: &mut Config) {
        let mut n = 0;
        for server in config.apps.http.as_mut().unwrap().servers.values_mut() {
            n += break_rule_1(&mut server.routes);
            for route in server.named_routes.values_mut() {
                n += break_rule_1(std::slice::from_mut(route));
            }
        }
        assert!(n >= 2, "one copy per hostname, got {n}");
    }

    #[test]
    fn translate_reports_what_kengine_would_refuse_on_its_rule() {
        INJECT.with(|f| f.set(Some(inject)));
        let out = translate(&snapshot(), &Options::default());
        INJECT.with(|f| f.set(None));
        assert_eq!(check::config(out.config()), Ok(()));
        let json = out.config().to_json();
        assert!(!String::from_utf8_lossy(&json).contains("/bad"));
        let parents = &out.status.http_routes[&ObjectRef::new("n", "r")];
        let accepted = (parents[0].conditions.iter())
            .find(|c| c.type_ == "Accepted")
            .unwrap();
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", "UnsupportedValue")
        );
        assert!(
            accepted.message.starts_with(
                "rule 1 is not served: Kengine would refuse it at apps.http.servers.port-80."
            ),
            "{}",
            accepted.message
        );
        let gateway = &out.status.gateways[&ObjectRef::new("n", "gw")];
        let programmed = (gateway.conditions.iter().flatten())
            .find(|c| c.type_ == "Programmed")
            .unwrap();
        assert_eq!(programmed.status, "True", "the Gateway still serves rule 0");
    }

    #[test]
    fn a_refused_config_names_the_rule_that_caused_it() {
        let e = check::config(&broken()).unwrap_err();
        assert!(e.path.ends_with(".path_regexp.pattern"), "{e}");
        assert!(
            e.to_string().contains("(from HTTPRoute n/r rule 1): "),
            "{e}"
        );
    }

    #[test]
    fn a_checked_route_is_trusted_by_the_backstop_not_by_the_sinks() {
        let mut config = translate(&snapshot(), &Options::default()).config().clone();
        UNMARK.set(false);
        inject(&mut config);
        UNMARK.set(true);
        assert_eq!(check::unchecked_parts(&config), Ok(()), "skipped");
        let e = check::config(&config).unwrap_err();
        assert!(e.path.ends_with(".path_regexp.pattern"), "{e}");
    }

    #[test]
    fn what_kengine_would_refuse_is_cut_with_its_rule_alone() {
        let mut config = broken();
        let refused = cut(&mut config);
        assert!(!refused.is_empty());
        for e in &refused {
            assert_eq!(e.origin.to_string(), "HTTPRoute n/r rule 1", "{e}");
        }
        assert_eq!(check::config(&config), Ok(()));
        let json = config.to_json();
        let json = String::from_utf8_lossy(&json);
        assert!(!json.contains("/bad"), "rule 1 is cut: {json}");
        assert!(json.contains("/ok"), "rule 0 stays: {json}");
    }

    #[test]
    fn a_value_outside_any_rule_cuts_its_server() {
        let mut config = broken();
        cut(&mut config);
        let http = config.apps.http.as_mut().unwrap();
        let server = http.servers.values_mut().next().unwrap();
        server.listen.push("{env.HOME}".into());
        let refused = cut(&mut config);
        assert_eq!(refused.len(), 1);
        assert_eq!(
            refused[0].origin.to_string(),
            "Gateway n/gw listener \"web\""
        );
        assert!(config.apps.http.is_none(), "its only server is cut");
    }
}
