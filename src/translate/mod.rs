//! translate: `fn(&Snapshot, &Options) -> Output`. Pure and deterministic;
//! every Gateway API rule lives here and only here.

mod backends;
mod conditions;
mod dispatch;
mod filters;
pub mod fleets;
mod gateways;
pub mod hostnames;
mod layout;
mod refgrant;
mod routes;
mod rule_backends;
mod rules;
mod servers;
mod tls;
mod upstreams;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use gateway_api::apis::experimental::gatewayclasses::{
    GatewayClassStatus, GatewayClassStatusSupportedFeatures,
};
use gateway_api::apis::experimental::gateways::GatewayStatus;
use gateway_api::apis::experimental::httproutes::HttpRouteStatusParents;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::kengine::Flavor;
use crate::kengine::config::Config;
use crate::snapshot::{ObjectRef, Snapshot};
use conditions::{Cond, stamp};

#[derive(Debug, Clone)]
pub struct Options {
    /// GatewayClasses with this `spec.controllerName` are ours.
    pub controller_name: String,
    pub flavor: Flavor,
    /// Stamped as `lastTransitionTime` on conditions that changed.
    pub now: Time,
    /// The static Gateway addresses that can be bound here, when known
    /// (standalone probes them; in a cluster the load balancer decides).
    pub usable_addresses: Option<BTreeSet<IpAddr>>,
    /// Listen addresses another process holds (Kengine could not bind
    /// them); an unspecified IP stands for every interface. Listeners there
    /// are not Accepted (`PortUnavailable`), so the rest of the config loads.
    pub taken_listens: BTreeSet<SocketAddr>,
    pub fleets: FleetMode,
    /// Gateway API kinds whose CRDs the cluster lacks; reported on our
    /// GatewayClasses, and their features left out of `supportedFeatures`.
    pub missing_kinds: BTreeSet<String>,
}

impl Default for Options {
    /// Our default controller name, the Kengine flavor, the Unix epoch as
    /// "now", every address usable, one local fleet.
    fn default() -> Self {
        Options {
            controller_name: crate::cli::DEFAULT_CONTROLLER_NAME.into(),
            flavor: Flavor::default(),
            now: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            usable_addresses: None,
            taken_listens: BTreeSet::new(),
            fleets: FleetMode::Local,
            missing_kinds: BTreeSet::new(),
        }
    }
}

/// Stamps conditions of other objects (KengineInstance) the way ours are:
/// `(type, status, reason, message)`, keeping unchanged transition times.
pub fn stamp_conditions(
    conds: Vec<(&'static str, bool, &'static str, String)>,
    generation: Option<i64>,
    previous: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    now: &Time,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let conds = conds
        .into_iter()
        .map(|(t, s, r, m)| Cond::new(t, s, r, m))
        .collect();
    stamp(conds, generation, Some(previous), now)
}

/// Where Gateways are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FleetMode {
    /// Every Gateway on one local Kengine (`render`, `standalone`).
    #[default]
    Local,
    /// Each Gateway on the KengineInstance that serves it (the controller).
    Instances,
}

/// One fleet's share of the output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fleet {
    pub config: Config,
    /// The Gateways it serves.
    pub gateways: Vec<ObjectRef>,
    /// The ports its config listens on for traffic: only listeners that
    /// were accepted and placed on a server, so a rejected one (such as a
    /// listener on the admin sidecar's ports) never opens a port.
    pub ports: BTreeSet<ListenerPort>,
}

/// A data-plane port of a fleet, as a Service or NetworkPolicy names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerPort {
    pub port: u16,
    pub protocol: Transport,
}

/// The transport of a listener's port: HTTP and HTTPS both run on TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Tcp,
}

impl Transport {
    /// The Kubernetes `protocol` value.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
        }
    }
}

/// Everything translate decides.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// The config of each fleet, keyed by KengineInstance (or
    /// `fleets::local()`); every fleet a Gateway of ours maps to is present.
    pub fleets: BTreeMap<ObjectRef, Fleet>,
    pub status: Status,
}

impl Output {
    /// The one config serving every accepted Gateway of ours, in
    /// `FleetMode::Local` (empty when there is none).
    pub fn config(&self) -> &Config {
        static EMPTY: std::sync::LazyLock<Config> = std::sync::LazyLock::new(Config::default);
        self.fleets
            .get(&fleets::local())
            .map(|f| &f.config)
            .unwrap_or(&EMPTY)
    }
}

/// Computed status of the objects we own status for. Route entries are only
/// ours: other controllers' `status.parents` entries are never touched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub gateway_classes: BTreeMap<String, GatewayClassStatus>,
    pub gateways: BTreeMap<ObjectRef, GatewayStatus>,
    pub http_routes: BTreeMap<ObjectRef, Vec<HttpRouteStatusParents>>,
}

/// Features every conformance test of which passes in the replay
/// (e2e/conformance; CONFORMANCE.md lists them with the tests). Sorted.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "Gateway",
    "GatewayAddressEmpty",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayPort8080",
    "GatewayStaticAddresses",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteRetry",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
];

pub fn translate(snapshot: &Snapshot, options: &Options) -> Output {
    let mut status = Status::default();
    let ours: Vec<&String> = snapshot
        .gateway_classes
        .iter()
        .filter(|(_, c)| c.spec.controller_name == options.controller_name)
        .map(|(name, _)| name)
        .collect();
    for name in &ours {
        let class = &snapshot.gateway_classes[*name];
        let missing: Vec<&str> = options.missing_kinds.iter().map(String::as_str).collect();
        let accepted = match fleets::class_instance(snapshot, class) {
            Ok(_) if missing.is_empty() => Cond::ok("Accepted", "Accepted"),
            Ok(_) => Cond::new(
                "Accepted",
                true,
                "Accepted",
                format!(
                    "CRDs not installed, so their features are unavailable: {}",
                    missing.join(", ")
                ),
            ),
            Err(why) => Cond::new(
                "Accepted",
                false,
                "InvalidParameters",
                format!("parametersRef: {why}"),
            ),
        };
        let conds = vec![accepted, Cond::ok("SupportedVersion", "SupportedVersion")];
        let previous = class.status.as_ref().and_then(|s| s.conditions.as_deref());
        status.gateway_classes.insert(
            (*name).clone(),
            GatewayClassStatus {
                conditions: Some(stamp(
                    conds,
                    class.metadata.generation,
                    previous,
                    &options.now,
                )),
                supported_features: Some(
                    SUPPORTED_FEATURES
                        .iter()
                        .filter(|f| !missing.contains(f))
                        .map(|f| GatewayClassStatusSupportedFeatures {
                            name: f.to_string(),
                        })
                        .collect(),
                ),
            },
        );
    }

    let gateways: Vec<_> = gateways::ordered(snapshot.gateways.values())
        .into_iter()
        .filter(|g| ours.contains(&&g.spec.gateway_class_name))
        .collect();
    let mut models: Vec<gateways::GatewayModel> = gateways
        .iter()
        .map(|g| {
            gateways::model(
                snapshot,
                g,
                options.usable_addresses.as_ref(),
                &options.taken_listens,
                options.fleets,
            )
        })
        .collect();
    let plan = servers::assign(&mut models);
    let mut attachments = routes::attach(snapshot, &mut models);

    let mut fleets: BTreeMap<ObjectRef, Fleet> = BTreeMap::new();
    for model in &models {
        fleets
            .entry(model.fleet.clone())
            .or_default()
            .gateways
            .push(model.key.clone());
    }
    for (key, fleet) in &mut fleets {
        let plans: Vec<_> = plan.iter().filter(|p| &p.fleet == key).cloned().collect();
        fleet.ports = plans
            .iter()
            .map(|p| ListenerPort {
                port: p.port,
                protocol: Transport::Tcp,
            })
            .collect();
        fleet.config = servers::config(&plans, &models, &mut attachments.buckets);
        if upstreams::wanted(snapshot, key) {
            upstreams::to_endpoints(&mut fleet.config, snapshot);
        }
    }
    for (gateway, model) in gateways.iter().zip(&models) {
        status.gateways.insert(
            model.key.clone(),
            routes::gateway_status(gateway, model, &options.now),
        );
    }
    // The routes come in key order, so the map is built without searching.
    status.http_routes = attachments
        .parents
        .into_iter()
        .map(|(key, route, parents)| {
            let previous = route.status.as_ref().map(|s| &s.parents[..]);
            let generation = route.metadata.generation;
            let stamped = parents
                .into_iter()
                .map(|(parent_ref, conds)| {
                    let before = previous.and_then(|p| {
                        p.iter()
                            .find(|e| {
                                e.controller_name == options.controller_name
                                    && e.parent_ref == parent_ref
                            })
                            .map(|e| &e.conditions[..])
                    });
                    HttpRouteStatusParents {
                        conditions: stamp(conds, generation, before, &options.now),
                        controller_name: options.controller_name.clone(),
                        parent_ref,
                    }
                })
                .collect();
            (key.clone(), stamped)
        })
        .collect();
    Output { fleets, status }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{GROUP, KIND};
    use serde_json::json;

    /// Two Gateways on two fleets, each routing to its own Service.
    fn two_fleets() -> Snapshot {
        let mut docs = vec![
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "c"}, "spec": {"controllerName": crate::cli::DEFAULT_CONTROLLER_NAME}}),
        ];
        for (name, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2")] {
            docs.extend([
                json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
                    "metadata": {"name": name, "namespace": "n"},
                    "spec": {"mode": "External", "external": {"selector": {"fleet": name}}}}),
                json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                    "metadata": {"name": name, "namespace": "n"},
                    "spec": {"gatewayClassName": "c",
                        "infrastructure": {"parametersRef": {"group": GROUP, "kind": KIND, "name": name}},
                        "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}),
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "n"},
                    "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}),
                json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                    "metadata": {"name": name, "namespace": "n"},
                    "spec": {"parentRefs": [{"name": name}],
                        "rules": [{"backendRefs": [{"name": name, "port": 80}]}]}}),
            ]);
        }
        let objects: Vec<_> = docs
            .into_iter()
            .filter_map(|d| crate::providers::files::object_from_value(d).unwrap())
            .collect();
        Snapshot::from_objects(objects)
    }

    #[test]
    fn managed_fleets_reserve_the_sidecar_ports() {
        let mut snapshot = two_fleets();
        let mut managed = snapshot.kengine_instances[&ObjectRef::new("n", "a")].clone();
        managed.spec.mode = crate::crd::Mode::Deployment;
        managed.spec.external = None;
        snapshot
            .kengine_instances
            .insert(ObjectRef::new("n", "a"), managed);
        for gw in ["a", "b"] {
            let key = ObjectRef::new("n", gw);
            let mut gateway = snapshot.gateways[&key].clone();
            let mut admin = gateway.spec.listeners[0].clone();
            admin.name = "admin".into();
            admin.port = 2019;
            gateway.spec.listeners.push(admin);
            snapshot.gateways.insert(key, gateway);
        }
        let options = Options {
            fleets: FleetMode::Instances,
            ..Default::default()
        };
        let out = translate(&snapshot, &options);
        let accepted = |gw: &str, listener: usize| {
            let status = &out.status.gateways[&ObjectRef::new("n", gw)];
            let l = &status.listeners.as_ref().unwrap()[listener];
            let c = l.conditions.iter().find(|c| c.type_ == "Accepted").unwrap();
            (c.status.clone(), c.reason.clone())
        };
        assert_eq!(accepted("a", 0), ("True".into(), "Accepted".into()));
        assert_eq!(
            accepted("a", 1),
            ("False".into(), "PortUnavailable".into()),
            "managed pods run the admin proxy on 2019"
        );
        assert_eq!(
            accepted("b", 1),
            ("True".into(), "Accepted".into()),
            "External pods are not ours"
        );
        let servers = |fleet: &str| {
            let config = &out.fleets[&ObjectRef::new("n", fleet)].config;
            config.apps.http.as_ref().unwrap().servers.len()
        };
        assert_eq!(
            (servers("a"), servers("b")),
            (1, 2),
            "2019 is served on b only"
        );
        let ports = |fleet: &str| -> Vec<u16> {
            let fleet = &out.fleets[&ObjectRef::new("n", fleet)];
            fleet.ports.iter().map(|p| p.port).collect()
        };
        assert_eq!(ports("a"), [80], "the rejected listener opens no port");
        assert_eq!(ports("b"), [80, 2019]);
    }

    #[test]
    fn each_fleet_holds_only_the_proxies_its_routes_invoke() {
        let options = Options {
            fleets: FleetMode::Instances,
            ..Default::default()
        };
        let out = translate(&two_fleets(), &options);
        for (fleet, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2")] {
            let config = &out.fleets[&ObjectRef::new("n", fleet)].config;
            let servers = &config.apps.http.as_ref().expect("an http app").servers;
            let named: Vec<&String> = servers
                .values()
                .flat_map(|s| s.named_routes.keys())
                .collect();
            assert_eq!(named, [&format!("proxy {ip}:80")], "fleet {fleet}");
        }
    }
}
