//! backendRefs → addresses Kengine dials.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::rc::Rc;

use k8s_openapi::api::core::v1::Service;

use super::backend_tls::Judged;
use super::conditions::{Cond, Reason, Type};
use super::grpc_routes::RouteKind;
use super::refgrant;
use crate::snapshot::{ObjectRef, Snapshot};

/// The fields a backendRef has on every route kind.
pub struct BackendRef<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub port: Option<i32>,
    pub weight: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub weight: u32,
    /// `host:port` of every address to dial, sorted.
    pub dials: Vec<String>,
    /// HTTP/2 only: the Service port's appProtocol asks for cleartext
    /// HTTP/2, or the route is a GRPCRoute (over TLS, HTTP/2 through ALPN).
    pub h2c: bool,
    /// Dialed over TLS, as a BackendTLSPolicy asks.
    pub tls: Option<Rc<super::backend_tls::BackendTls>>,
}

/// Resolves the backendRefs of one translate, remembering the answers for
/// the routes of one namespace and kind: they tend to share their Services,
/// and with the snapshot fixed an answer depends only on those and the ref.
#[derive(Default)]
pub struct Resolver<'s> {
    namespace: String,
    route_kind: Option<RouteKind>,
    known: BTreeMap<RefKey<'s>, Result<Rc<Backend>, Cond>>,
    /// BackendTLSPolicies, each judged once per translate.
    judged: Judged,
}

/// The ref's group, kind, name, namespace, port and weight.
pub type RefKey<'s> = (
    Option<&'s str>,
    Option<&'s str>,
    &'s str,
    Option<&'s str>,
    Option<i32>,
    Option<i32>,
);

impl<'s> Resolver<'s> {
    /// [`resolve`], remembered.
    pub fn resolve(
        &mut self,
        snapshot: &Snapshot,
        route: &ObjectRef,
        route_kind: RouteKind,
        r: &BackendRef<'s>,
    ) -> Result<Rc<Backend>, Cond> {
        if self.namespace != route.namespace || self.route_kind != Some(route_kind) {
            self.known.clear();
            self.namespace.clone_from(&route.namespace);
            self.route_kind = Some(route_kind);
        }
        let key = (r.group, r.kind, r.name, r.namespace, r.port, r.weight);
        self.known
            .entry(key)
            .or_insert_with(|| {
                resolve(snapshot, &mut self.judged, route, route_kind, r).map(Rc::new)
            })
            .clone()
    }
}

/// A resolved backendRef, or why it cannot be used (a ResolvedRefs=False condition).
pub fn resolve(
    snapshot: &Snapshot,
    judged: &mut Judged,
    route: &ObjectRef,
    kind_of_route: RouteKind,
    r: &BackendRef,
) -> Result<Backend, Cond> {
    let route_kind = kind_of_route.name();
    let group = r.group.unwrap_or("");
    let kind = r.kind.unwrap_or("Service");
    let namespace = r.namespace.unwrap_or(&route.namespace);
    let target = || format!("{namespace}/{}", r.name);
    if !group.is_empty() || kind != "Service" {
        return Err(Cond::new(
            Type::ResolvedRefs,
            false,
            Reason::InvalidKind,
            format!(
                "backendRef {group}/{kind} {} is not a core Service",
                target()
            ),
        ));
    }
    let from = refgrant::From {
        group: super::gateways::GROUP,
        kind: route_kind,
        namespace: &route.namespace,
    };
    let to = refgrant::To {
        group: "",
        kind: "Service",
        namespace,
        name: r.name,
    };
    if !refgrant::permitted(snapshot, &from, &to) {
        return Err(Cond::new(
            Type::ResolvedRefs,
            false,
            Reason::RefNotPermitted,
            format!(
                "no ReferenceGrant in {namespace} allows this {route_kind} to use Service {}",
                target()
            ),
        ));
    }
    let not_found =
        |why: String| Cond::new(Type::ResolvedRefs, false, Reason::BackendNotFound, why);
    let key = ObjectRef::new(namespace, r.name);
    let service = snapshot
        .services
        .get(&key)
        .ok_or_else(|| not_found(format!("Service {} not found", target())))?;
    let port = r
        .port
        .ok_or_else(|| not_found(format!("backendRef to Service {} has no port", target())))?;
    let tls = match super::backend_tls::for_port(snapshot, &key, service, port) {
        None => None,
        Some(policy) => match judged.tls(snapshot, policy) {
            Ok(tls) => Some(tls),
            // Never plaintext to a backend that asks for TLS.
            Err(why) => {
                return Err(Cond::new(
                    Type::ResolvedRefs,
                    false,
                    Reason::InvalidBackendTLSPolicy,
                    format!(
                        "Service {} port {port} needs TLS, but BackendTLSPolicy {policy} cannot be applied ({why}); its share of requests is answered 500",
                        target()
                    ),
                ));
            }
        },
    };
    let dials = dials(snapshot, &key, service, port)
        .map_err(|why| not_found(format!("Service {} {why}", target())))?;
    let weight = u32::try_from(r.weight.unwrap_or(1)).unwrap_or(0);
    // gRPC is HTTP/2: a GRPCRoute's backends speak it whatever their
    // appProtocol says (in cleartext h2c, over TLS through ALPN).
    let h2c = kind_of_route == RouteKind::Grpc
        || (service.spec.iter().flat_map(|s| s.ports.iter().flatten()))
            .any(|p| p.port == port && p.app_protocol.as_deref() == Some("kubernetes.io/h2c"));
    Ok(Backend {
        weight,
        dials,
        h2c,
        tls,
    })
}

/// ClusterIP services are dialed at `clusterIP:port` so kube-proxy balances
/// and pod churn causes no reload; headless ones through their ready endpoints.
fn dials(
    snapshot: &Snapshot,
    key: &ObjectRef,
    service: &Service,
    port: i32,
) -> Result<Vec<String>, String> {
    let spec = service.spec.as_ref().ok_or("has no spec")?;
    let service_port = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == port)
        .ok_or_else(|| format!("has no port {port}"))?;
    if spec.type_.as_deref() == Some("ExternalName") {
        let name = spec
            .external_name
            .as_deref()
            .ok_or("is ExternalName without externalName")?;
        dns_subdomain(name.strip_suffix('.').unwrap_or(name)).map_err(|why| {
            format!("has externalName {name:?}, which is not a DNS-1123 subdomain: {why}")
        })?;
        return Ok(vec![format!("{name}:{port}")]);
    }
    match spec.cluster_ip.as_deref() {
        Some(ip) if !ip.is_empty() && ip != "None" => Ok(vec![join(ip, port)]),
        // No ready endpoints is not a broken reference: requests get 503.
        _ => Ok(ready_endpoints(snapshot, key, service_port.name.as_deref())),
    }
}

/// `ip:port` of every ready endpoint of a Service's port (by its name, as
/// EndpointSlices name ports), sorted.
pub fn ready_endpoints(
    snapshot: &Snapshot,
    key: &ObjectRef,
    port_name: Option<&str>,
) -> Vec<String> {
    let mut dials: Vec<String> = snapshot
        .endpoint_slices_of(key)
        .flat_map(|slice| {
            // An unnamed Service port is `name: ""` in the slices the
            // EndpointSlice controller writes, and absent in hand-written ones.
            let target = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or_default() == port_name.unwrap_or_default())
                .and_then(|p| p.port);
            slice
                .endpoints
                .iter()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                .flat_map(move |e| {
                    e.addresses
                        .iter()
                        .filter_map(move |a| target.map(|p| join(a, p)))
                })
        })
        .collect();
    dials.sort();
    dials.dedup();
    dials
}

/// The API server's rule for `externalName` (a trailing dot aside): lowercase
/// letters, digits, '-' and '.', labels that start and end alphanumeric, at
/// most 253 characters. Files skip that validation, and the name reaches a
/// `dial` string, where Kengine expands placeholders.
fn dns_subdomain(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("it needs 1 to 253 characters");
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    for label in name.split('.') {
        let b = label.as_bytes();
        let inner = b.iter().all(|&c| alnum(c) || c == b'-');
        if b.is_empty() || !inner || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return Err("labels are lowercase letters, digits and inner '-'");
        }
    }
    Ok(())
}

pub fn join(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The largest total of the weights [`upstream_weights`] emits. Kengine's
/// weighted round robin serves each weight as a run of consecutive
/// requests, so a small total also keeps the split fine-grained.
pub const MAX_TOTAL_WEIGHT: u64 = 10_000;

/// Per-dial weights for weighted round robin: each backend gets
/// `weight / total` of the traffic, split evenly over its addresses.
/// Returns `(dial, weight)` pairs in backend order.
///
/// Exact (smallest integers) when those sum to at most
/// [`MAX_TOTAL_WEIGHT`]; otherwise each dial's share is rounded to a
/// multiple of `1 / MAX_TOTAL_WEIGHT` (at least 1), so a backend's share
/// is off by at most `dials / (2 * MAX_TOTAL_WEIGHT)` before the minimum
/// of 1 per dial. No step overflows.
pub fn upstream_weights<B: Borrow<Backend>>(backends: &[B]) -> Vec<(String, u32)> {
    let live: Vec<&Backend> = backends
        .iter()
        .map(Borrow::borrow)
        .filter(|b| b.weight > 0 && !b.dials.is_empty())
        .collect();
    let per_dial = exact_weights(&live).unwrap_or_else(|| rounded_weights(&live));
    live.iter()
        .zip(per_dial)
        .flat_map(|(b, weight)| b.dials.iter().map(move |d| (d.clone(), weight)))
        .collect()
}

/// The smallest integer per-dial weights of each backend, if they sum to
/// at most [`MAX_TOTAL_WEIGHT`].
fn exact_weights(live: &[&Backend]) -> Option<Vec<u32>> {
    let lcm = live
        .iter()
        .try_fold(1u128, |acc, b| lcm(acc, b.dials.len() as u128))?;
    let each: Vec<u128> = live
        .iter()
        .map(|b| u128::from(b.weight).checked_mul(lcm / b.dials.len() as u128))
        .collect::<Option<_>>()?;
    let g = each.iter().fold(0, |acc, &e| gcd(acc, e)).max(1);
    let mut total = 0u128;
    for (b, e) in live.iter().zip(&each) {
        total = total.checked_add((e / g).checked_mul(b.dials.len() as u128)?)?;
    }
    if total > u128::from(MAX_TOTAL_WEIGHT) {
        return None;
    }
    each.iter().map(|e| u32::try_from(e / g).ok()).collect()
}

/// Per-dial weights rounded to a total of about [`MAX_TOTAL_WEIGHT`].
fn rounded_weights(live: &[&Backend]) -> Vec<u32> {
    let sum: u128 = live.iter().map(|b| u128::from(b.weight)).sum();
    let scale = u128::from(MAX_TOTAL_WEIGHT);
    live.iter()
        .map(|b| {
            let share = u128::from(b.weight) * scale;
            let den = sum * b.dials.len() as u128;
            // Round to nearest; every live dial keeps some traffic.
            let w = (2 * share + den) / (2 * den);
            u32::try_from(w.max(1)).unwrap_or(u32::MAX)
        })
        .collect()
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: u128, b: u128) -> Option<u128> {
    (a / gcd(a, b)).checked_mul(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unnamed_port_matches_the_empty_name_the_endpointslice_controller_writes() {
        let objects = [
            serde_json::json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "n"},
                "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80, "targetPort": "http"}]}}),
            serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-abcde", "namespace": "n", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.244.0.7"], "conditions": {"ready": true}}]}),
            serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-hand", "namespace": "n", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "ports": [{"port": 8081}],
                "endpoints": [{"addresses": ["10.244.0.8"]}]}),
        ];
        let snapshot = Snapshot::from_objects(
            objects
                .into_iter()
                .filter_map(|o| kengine_gateway_model::manifests::object_from_value(o).unwrap())
                .collect::<Vec<_>>(),
        );
        let web = ObjectRef::new("n", "web");
        assert_eq!(
            ready_endpoints(&snapshot, &web, None),
            ["10.244.0.7:8080", "10.244.0.8:8081"]
        );
        assert!(ready_endpoints(&snapshot, &web, Some("http")).is_empty());
    }

    #[test]
    fn external_names_are_dns_subdomains() {
        let service = |name: &str| {
            serde_json::json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "ext", "namespace": "n"},
                "spec": {"type": "ExternalName", "externalName": name, "ports": [{"port": 80}]}})
        };
        let resolved = |name: &str| {
            let object = kengine_gateway_model::manifests::object_from_value(service(name));
            let snapshot = Snapshot::from_objects(object.unwrap());
            let r = BackendRef {
                group: None,
                kind: None,
                name: "ext",
                namespace: None,
                port: Some(80),
                weight: None,
            };
            resolve(
                &snapshot,
                &mut Judged::default(),
                &ObjectRef::new("n", "r"),
                RouteKind::Http,
                &r,
            )
        };
        for good in ["api.example.com", "api.example.com.", "a-1.b2", "x"] {
            assert_eq!(resolved(good).unwrap().dials, [format!("{good}:80")]);
        }
        for bad in [
            "{env.HOME}",
            "a{system.hostname}.example",
            "Api.example.com",
            "-a.example",
            "a..b",
            "a.example:81",
            "",
            "10.0.0.1/8",
        ] {
            let cond = resolved(bad).unwrap_err();
            assert_eq!(cond.reason, Reason::BackendNotFound, "{bad}");
            assert!(
                cond.message.contains("not a DNS-1123 subdomain"),
                "{bad}: {}",
                cond.message
            );
        }
    }

    #[test]
    fn weights_split_over_endpoints_and_reduce() {
        let b = |w, n: usize| Backend {
            weight: w,
            dials: (0..n).map(|i| format!("10.0.0.{i}:80")).collect(),
            h2c: false,
            tls: None,
        };
        assert_eq!(
            upstream_weights(&[b(80, 1), b(20, 1)])
                .iter()
                .map(|x| x.1)
                .collect::<Vec<_>>(),
            [4, 1]
        );
        assert_eq!(
            upstream_weights(&[b(1, 2), b(1, 1)])
                .iter()
                .map(|x| x.1)
                .collect::<Vec<_>>(),
            [1, 1, 2]
        );
        assert_eq!(upstream_weights(&[b(0, 1), b(5, 1)]).len(), 1);
    }

    /// Each backend's share of the traffic, from the per-dial weights.
    fn shares(backends: &[Backend]) -> Vec<f64> {
        let weights = upstream_weights(backends);
        let total: f64 = weights.iter().map(|w| f64::from(w.1)).sum();
        backends
            .iter()
            .map(|b| {
                let mine: f64 = weights
                    .iter()
                    .filter(|(d, _)| b.dials.contains(d))
                    .map(|w| f64::from(w.1))
                    .sum();
                mine / total
            })
            .collect()
    }

    #[test]
    fn many_endpoint_counts_do_not_overflow_and_keep_proportions() {
        // 16 headless Services with 2, 3, 5, ... 53 endpoints: the exact
        // weights need their product (about 3e19) as a common multiple.
        let primes = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53];
        let backends: Vec<Backend> = primes
            .iter()
            .enumerate()
            .map(|(i, &n)| Backend {
                weight: 1,
                dials: (0..n).map(|j| format!("10.{i}.0.{j}:80")).collect(),
                h2c: false,
                tls: None,
            })
            .collect();
        let weights = upstream_weights(&backends);
        let total: u64 = weights.iter().map(|w| u64::from(w.1)).sum();
        assert!(total <= MAX_TOTAL_WEIGHT + 400, "{total}");
        for (share, n) in shares(&backends).iter().zip(primes) {
            // Within the documented bound: dials / (2 * MAX_TOTAL_WEIGHT).
            let bound = n as f64 / (2.0 * MAX_TOTAL_WEIGHT as f64) + 0.002;
            assert!((share - 1.0 / 16.0).abs() < bound, "{n}: {share}");
        }
    }

    #[test]
    fn large_weights_do_not_overflow_and_keep_proportions() {
        let b = |w, n: usize, k: usize| Backend {
            weight: w,
            dials: (0..n).map(|i| format!("10.{k}.0.{i}:80")).collect(),
            h2c: false,
            tls: None,
        };
        // 13 refs of weight 1,000,000 over 2, 3, 5, ... 41 endpoints: the
        // weight times the common multiple overflowed 64 bits.
        let primes = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41];
        let backends: Vec<Backend> = (primes.iter().enumerate())
            .map(|(k, &n)| b(1_000_000, n, k))
            .collect();
        for share in shares(&backends) {
            assert!((share - 1.0 / 13.0).abs() < 0.002, "{share}");
        }
        let uneven = [b(1_000_000, 7, 0), b(1, 1, 1), b(999_999, 3, 2)];
        let s = shares(&uneven);
        assert!(
            (s[0] - 0.5).abs() < 0.001 && (s[2] - 0.5).abs() < 0.001,
            "{s:?}"
        );
        assert!(s[1] > 0.0 && s[1] < 0.001, "{s:?}");
    }
}
