//! translate: `fn(&Snapshot, &Options) -> Output`. Pure and deterministic;
//! every Gateway API rule lives here and only here. It depends on the model
//! crate only: no runtime, no Kubernetes client, no I/O.

mod backend_client_cert;
mod backend_tls;
mod backends;
mod backstop;
mod conditions;
mod dispatch;
mod filters;
pub mod fleets;
mod frontend_tls;
mod gateways;
mod grpc_errors;
mod grpc_routes;
pub mod hostnames;
mod layout;
mod literals;
pub mod programmed;
mod refgrant;
mod route_status;
mod routes;
mod rule_backends;
mod rules;
mod servers;
mod tls;
mod upstreams;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

// The model's modules, under the names the rest of this crate uses.
use kengine_gateway_model::{crd, kengine, snapshot};

use gateway_api::apis::experimental::gatewayclasses::{
    GatewayClassStatus, GatewayClassStatusSupportedFeatures,
};
use gateway_api::apis::experimental::gateways::GatewayStatus;
use gateway_api::apis::experimental::grpcroutes::GrpcRouteStatusParents;
use gateway_api::apis::experimental::httproutes::HttpRouteStatusParents;
use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicyStatusAncestors;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::kengine::Flavor;
use crate::kengine::config::{Config, OriginPart};
use crate::snapshot::{ObjectRef, Snapshot};
use conditions::{Cond, stamp};
pub use conditions::{Reason, Type};
pub use gateways::unicast_address;
use routes::RouteObject;

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
    /// Where a local Kengine finds the files a config names (backend client
    /// certificates), in `FleetMode::Local`; managed fleets have theirs at
    /// [`kengine_gateway_model::names::FLEET_FILES_DIR`].
    pub files_dir: String,
}

impl Default for Options {
    /// Our default controller name, the Kengine flavor, the Unix epoch as
    /// "now", every address usable, one local fleet.
    fn default() -> Self {
        Options {
            controller_name: kengine_gateway_model::DEFAULT_CONTROLLER_NAME.into(),
            flavor: Flavor::default(),
            now: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            usable_addresses: None,
            taken_listens: BTreeSet::new(),
            fleets: FleetMode::Local,
            missing_kinds: BTreeSet::new(),
            files_dir: kengine_gateway_model::names::FLEET_FILES_DIR.into(),
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
    conditions::stamp_named(conds, generation, Some(previous), now)
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
    /// Static Gateway addresses its Service answers on (`externalIPs`),
    /// for a managed fleet.
    pub external_ips: BTreeSet<IpAddr>,
    /// Labels for everything that serves the fleet's Gateways:
    /// [`GATEWAY_NAME_LABEL`] when it serves one, then the Gateways'
    /// `infrastructure.labels` (on a shared fleet the first Gateway by
    /// namespace/name wins a clash; none replaces ours).
    pub labels: BTreeMap<String, String>,
    /// The Gateways' `infrastructure.annotations`, merged the same way.
    pub annotations: BTreeMap<String, String>,
    /// The fleet is the instance of its own that a Gateway without a
    /// `parametersRef` gets, named like it (the fleet's key): the operator
    /// creates it, owned by the Gateway, unless someone else's instance of
    /// that name exists.
    pub own_instance: bool,
    /// Files its config names, by name in the fleet's files directory:
    /// written there before the config is loaded (PEM client certificates
    /// and keys; the names are content hashes).
    pub files: BTreeMap<String, String>,
}

/// The Gateway API's label for the infrastructure of one Gateway.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

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
    /// Our entries of routes of kinds we do not serve.
    pub grpc_routes: BTreeMap<ObjectRef, Vec<GrpcRouteStatusParents>>,
    /// Our `status.ancestors` entries: policies we do not apply.
    pub backend_tls_policies: BTreeMap<ObjectRef, Vec<BackendTlsPolicyStatusAncestors>>,
}

/// Features every test of which passes in the official conformance suites
/// v1.6.1 and v1.7.0 (tests/official_conformance.rs; CONFORMANCE.md lists
/// them with the tests). A feature v1.7.0 renamed is listed under both
/// names (GatewayInfrastructurePropagation → GatewayInfrastructure,
/// HTTPRouteRetry → HTTPRouteRetryCodes): each suite reads its own. Sorted.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "BackendTLSPolicy",
    "GRPCRoute",
    "GRPCRouteNamedRouteRule",
    "GRPCRouteRequestHeaderModifier",
    "Gateway",
    "GatewayAddressEmpty",
    "GatewayBackendClientCertificate",
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayInfrastructure",
    "GatewayInfrastructurePropagation",
    "GatewayPort8080",
    "GatewayRouteHostnameIntersectionPrecedence",
    "GatewayStaticAddresses",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteBackendURLRewrite",
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
    "HTTPRouteRetryCodes",
    "HTTPRouteRetryConnectionError",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
];

pub fn translate(snapshot: &Snapshot, options: &Options) -> Output {
    let mut status = Status::default();
    // Our classes that are not Accepted, with why: their Gateways are not
    // served (only Gateways of Accepted classes are reconciled).
    let mut rejected_classes: BTreeMap<&String, String> = BTreeMap::new();
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
            Ok(_) if missing.is_empty() => Cond::ok(Type::Accepted, Reason::Accepted),
            Ok(_) => Cond::new(
                Type::Accepted,
                true,
                Reason::Accepted,
                format!(
                    "CRDs not installed, so their features are unavailable: {}",
                    missing.join(", ")
                ),
            ),
            Err(why) => {
                rejected_classes.insert(*name, format!("parametersRef: {why}"));
                Cond::new(
                    Type::Accepted,
                    false,
                    Reason::InvalidParameters,
                    format!("parametersRef: {why}"),
                )
            }
        };
        let conds = vec![
            accepted,
            Cond::ok(Type::SupportedVersion, Reason::SupportedVersion),
        ];
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
                        // A missing kind takes the features named after it.
                        .filter(|f| !missing.iter().any(|m| f.starts_with(m)))
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
            let mut model = gateways::model(
                snapshot,
                g,
                options.usable_addresses.as_ref(),
                &options.taken_listens,
                options.fleets,
                &options.files_dir,
            );
            if let Some(why) = rejected_classes.get(&g.spec.gateway_class_name) {
                model.rejected = Some(gateways::class_not_accepted(
                    &g.spec.gateway_class_name,
                    why,
                ));
            }
            model
        })
        .collect();
    let plan = servers::assign(&mut models);
    let grpc = grpc_routes::convert_all(snapshot);
    let mut attachments = routes::attach(snapshot, &grpc, &mut models);

    let mut fleets: BTreeMap<ObjectRef, Fleet> = BTreeMap::new();
    let mut refused = Vec::new();
    for model in &models {
        let fleet = fleets.entry(model.fleet.clone()).or_default();
        fleet.gateways.push(model.key.clone());
        fleet.own_instance |= model.own_fleet;
        if model.rejected.is_none() {
            fleet.external_ips.extend(model.service_ips.iter().copied());
            fleet
                .files
                .extend(model.client_cert.iter().flat_map(|c| c.files()));
        }
    }
    for fleet in fleets.values_mut() {
        // A fleet shared by several Gateways belongs to none of them; a
        // label value has at most 63 characters, a Gateway name up to 253.
        if let [only] = fleet.gateways.as_slice()
            && only.name.len() <= 63
        {
            fleet
                .labels
                .insert(GATEWAY_NAME_LABEL.into(), only.name.clone());
        }
        fleets::propagate_infrastructure(snapshot, fleet);
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
        #[cfg(test)]
        backstop::tests::INJECT.with(|f| f.get().map(|f| f(&mut fleet.config)));
        let cut = backstop::cut(&mut fleet.config);
        if !cut.is_empty() {
            let servers = fleet.config.apps.http.as_ref().map(|h| &h.servers);
            fleet.ports = (plans.iter())
                .filter(|p| servers.is_some_and(|s| s.contains_key(&servers::server_name(p))))
                .map(|p| ListenerPort {
                    port: p.port,
                    protocol: Transport::Tcp,
                })
                .collect();
            refused.extend(cut);
        }
    }
    // What Kengine would have refused is reported on the object it came from.
    for e in &refused {
        for origin in e.origin.origins() {
            let Some(model) = (models.iter_mut())
                .find(|m| m.key.namespace == origin.namespace && m.key.name == origin.name)
            else {
                continue;
            };
            let OriginPart::Listener(name) = &origin.part else {
                continue;
            };
            if origin.kind != "Gateway" {
                continue;
            }
            for listener in model.listeners.iter_mut().filter(|l| &l.name == name) {
                listener.problems.push(filters::unsupported(format!(
                    "not served: Kengine would refuse its server's config at {}: {}",
                    e.path, e.problem
                )));
            }
        }
    }
    for (gateway, model) in gateways.iter().zip(&models) {
        status.gateways.insert(
            model.key.clone(),
            routes::gateway_status(gateway, model, &options.now),
        );
    }
    if !snapshot.backend_tls_policies.is_empty() {
        let mut uses = BTreeMap::new();
        for (r, entries) in &attachments.parents {
            let gateways: Vec<ObjectRef> = entries
                .iter()
                .map(|(p, _)| {
                    let namespace = p.namespace.as_deref().unwrap_or(&r.key.namespace);
                    ObjectRef::new(namespace, &p.name)
                })
                .collect();
            backend_tls::route_uses(snapshot, r.key, r.rules, &gateways, &mut uses);
        }
        status.backend_tls_policies =
            backend_tls::policy_status(snapshot, &uses, &options.controller_name, &options.now);
    }
    let (mut http_routes, mut grpc_routes) = (Vec::new(), Vec::new());
    for (r, mut parents) in attachments.parents {
        if let Some(cond) = refused_rule(&refused, r.kind(), r.key) {
            for (_, conds) in &mut parents {
                for c in conds
                    .iter_mut()
                    .filter(|c| c.type_ == Type::Accepted && c.status)
                {
                    *c = cond.clone();
                }
            }
        }
        let (controller, now) = (&options.controller_name, &options.now);
        match r.object {
            RouteObject::Http(route) => {
                let previous = route.status.as_ref().map(|s| &s.parents[..]);
                let generation = route.metadata.generation;
                let stamped = route_status::stamped(parents, previous, generation, controller, now);
                http_routes.push((r.key.clone(), stamped));
            }
            RouteObject::Grpc(route) => {
                let previous = route.status.as_ref().map(|s| &s.parents[..]);
                let generation = route.metadata.generation;
                let stamped = route_status::stamped(parents, previous, generation, controller, now);
                grpc_routes.push((r.key.clone(), stamped));
            }
        }
    }
    // Built at once from the entries (in key order): cheaper than
    // inserting them one by one.
    status.http_routes = http_routes.into_iter().collect();
    status.grpc_routes = grpc_routes.into_iter().collect();
    Output { fleets, status }
}

/// The first rule of `route` whose config Kengine would have refused, as
/// an Accepted=False condition.
fn refused_rule(
    refused: &[crate::kengine::check::CheckError],
    kind: grpc_routes::RouteKind,
    route: &ObjectRef,
) -> Option<Cond> {
    refused.iter().find_map(|e| {
        let origin = e.origin.origins().iter().find(|o| {
            o.kind == kind.name() && o.namespace == route.namespace && o.name == route.name
        })?;
        let OriginPart::Rule(rule) = origin.part else {
            return None;
        };
        Some(filters::unsupported(format!(
            "rule {rule} is not served: Kengine would refuse it at {}: {}",
            e.path, e.problem
        )))
    })
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
            "metadata": {"name": "c"}, "spec": {"controllerName": kengine_gateway_model::DEFAULT_CONTROLLER_NAME}}),
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
            .filter_map(|d| kengine_gateway_model::manifests::object_from_value(d).unwrap())
            .collect();
        Snapshot::from_objects(objects)
    }

    fn snapshot_of(docs: Vec<serde_json::Value>) -> Snapshot {
        let objects: Vec<_> = docs
            .into_iter()
            .filter_map(|d| kengine_gateway_model::manifests::object_from_value(d).unwrap())
            .collect();
        Snapshot::from_objects(objects)
    }

    fn class(spec: serde_json::Value) -> serde_json::Value {
        let mut spec = spec;
        spec["controllerName"] = json!(kengine_gateway_model::DEFAULT_CONTROLLER_NAME);
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "c"}, "spec": spec})
    }

    fn gateway(name: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut spec = json!({"gatewayClassName": "c",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": "n"}, "spec": spec})
    }

    /// (status, reason, message) of a condition.
    fn cond(
        conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
        type_: &str,
    ) -> (String, String, String) {
        let c = conds.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn gateway_cond(out: &Output, gw: &str, type_: &str) -> (String, String, String) {
        let status = &out.status.gateways[&ObjectRef::new("n", gw)];
        cond(status.conditions.as_ref().unwrap(), type_)
    }

    fn listener_cond(out: &Output, gw: &str, type_: &str) -> (String, String, String) {
        let status = &out.status.gateways[&ObjectRef::new("n", gw)];
        cond(&status.listeners.as_ref().unwrap()[0].conditions, type_)
    }

    #[test]
    fn gateways_of_a_class_we_do_not_accept_are_not_served() {
        let params =
            json!({"parametersRef": {"group": "example.com", "kind": "Config", "name": "x"}});
        let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "n"},
            "spec": {"parentRefs": [{"name": "g"}], "rules": [{}]}});
        let out = translate(
            &snapshot_of(vec![class(params), gateway("g", json!({})), route]),
            &Options::default(),
        );
        let class = &out.status.gateway_classes["c"];
        let (status, reason, message) = cond(class.conditions.as_ref().unwrap(), "Accepted");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "InvalidParameters")
        );
        assert!(
            message.contains("example.com/Config is not supported"),
            "{message}"
        );
        let (status, reason, message) = gateway_cond(&out, "g", "Accepted");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "InvalidParameters")
        );
        assert!(
            message.contains("GatewayClass c is not accepted"),
            "{message}"
        );
        assert_eq!(gateway_cond(&out, "g", "Programmed").0, "False");
        let (status, _, message) = listener_cond(&out, "g", "Programmed");
        assert_eq!(status, "False");
        assert!(
            message.contains("GatewayClass c is not accepted"),
            "{message}"
        );
        assert!(out.config().apps.http.is_none(), "nothing is served");
        let parents = &out.status.http_routes[&ObjectRef::new("n", "r")];
        assert_eq!(cond(&parents[0].conditions, "Accepted").0, "False");
    }

    #[test]
    fn only_unicast_static_addresses_are_supported() {
        let bad = ["0.0.0.0", "::", "255.255.255.255", "224.0.0.1", "ff02::1"];
        let mut docs = vec![class(json!({}))];
        for (i, ip) in bad.iter().chain(&["127.0.0.1"]).enumerate() {
            docs.push(gateway(
                &format!("g{i}"),
                json!({"addresses": [{"type": "IPAddress", "value": ip}],
                    "listeners": [{"name": "http", "port": 8000 + i, "protocol": "HTTP"}]}),
            ));
        }
        let out = translate(&snapshot_of(docs), &Options::default());
        for (i, ip) in bad.iter().enumerate() {
            let (status, reason, message) = gateway_cond(&out, &format!("g{i}"), "Accepted");
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "UnsupportedAddress"),
                "{ip}"
            );
            assert!(message.contains("not a unicast address"), "{message}");
        }
        assert_eq!(gateway_cond(&out, "g5", "Accepted").0, "True");
        let servers = &out.config().apps.http.as_ref().unwrap().servers;
        assert_eq!(servers.keys().collect::<Vec<_>>(), ["port-8005-127.0.0.1"]);
    }

    #[test]
    fn a_fleet_of_one_gateway_is_labelled_with_its_name() {
        let long = "g".repeat(64);
        let docs = vec![
            class(json!({})),
            gateway("one", json!({})),
            gateway(
                &long,
                json!({"listeners": [{"name": "http", "port": 81, "protocol": "HTTP"}]}),
            ),
        ];
        let options = Options {
            fleets: FleetMode::Instances,
            ..Default::default()
        };
        let out = translate(&snapshot_of(docs), &options);
        let labels = |name: &str| out.fleets[&ObjectRef::new("n", name)].labels.clone();
        assert_eq!(labels("one")[GATEWAY_NAME_LABEL], "one");
        assert!(
            labels(&long).is_empty(),
            "a label value has at most 63 characters"
        );
        let shared = translate(
            &snapshot_of(vec![
                class(
                    json!({"parametersRef": {"group": GROUP, "kind": KIND, "name": "edge", "namespace": "n"}}),
                ),
                json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
                    "metadata": {"name": "edge", "namespace": "n"}, "spec": {"mode": "Deployment"}}),
                gateway("a", json!({})),
                gateway(
                    "b",
                    json!({"listeners": [{"name": "http", "port": 81, "protocol": "HTTP"}]}),
                ),
            ]),
            &options,
        );
        let fleet = &shared.fleets[&ObjectRef::new("n", "edge")];
        assert_eq!(fleet.gateways.len(), 2);
        assert!(
            fleet.labels.is_empty(),
            "a shared fleet is no one Gateway's"
        );
    }

    #[test]
    fn a_managed_fleets_static_addresses_go_on_its_service_not_into_its_binds() {
        let docs = vec![
            class(json!({})),
            gateway(
                "g",
                json!({"addresses": [{"type": "IPAddress", "value": "10.1.2.3"}, {"value": "10.1.2.4"}]}),
            ),
            gateway(
                "lo",
                json!({"addresses": [{"value": "127.0.0.2"}, {"value": "169.254.1.1"}],
                    "listeners": [{"name": "http", "port": 81, "protocol": "HTTP"}]}),
            ),
        ];
        let options = Options {
            fleets: FleetMode::Instances,
            ..Default::default()
        };
        let out = translate(&snapshot_of(docs), &options);
        let fleet = &out.fleets[&ObjectRef::new("n", "g")];
        let ips: Vec<String> = fleet.external_ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.1.2.3", "10.1.2.4"]);
        let listen = &fleet.config.apps.http.as_ref().unwrap().servers["port-80"].listen;
        assert_eq!(listen, &[":80"], "the pods listen on every interface");
        let status = &out.status.gateways[&ObjectRef::new("n", "g")];
        let addresses: Vec<&str> = (status.addresses.iter().flatten())
            .map(|a| a.value.as_str())
            .collect();
        assert_eq!(addresses, ["10.1.2.3", "10.1.2.4"]);
        assert_eq!(gateway_cond(&out, "g", "Programmed").0, "True");
        // Loopback and link-local addresses cannot be external IPs.
        let (status, reason, message) = gateway_cond(&out, "lo", "Programmed");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "AddressNotUsable")
        );
        assert!(message.contains("127.0.0.2, 169.254.1.1"), "{message}");
        assert!(
            out.fleets[&ObjectRef::new("n", "lo")]
                .external_ips
                .is_empty()
        );
    }

    #[test]
    fn a_valid_listener_of_a_rejected_gateway_says_why_it_is_not_programmed() {
        let out = translate(
            &snapshot_of(vec![
                class(json!({})),
                gateway(
                    "g",
                    json!({"addresses": [{"type": "Hostname", "value": "gw.example"}]}),
                ),
            ]),
            &Options::default(),
        );
        assert_eq!(listener_cond(&out, "g", "Accepted").0, "True");
        let (status, _, message) = listener_cond(&out, "g", "Programmed");
        assert_eq!(status, "False");
        assert_eq!(
            message,
            "the Gateway is not accepted: address type Hostname is not supported; only IPAddress is"
        );
        let (_, _, message) = gateway_cond(&out, "g", "Programmed");
        assert!(message.contains("address type Hostname"), "{message}");
    }

    #[test]
    fn conflicts_name_the_gateway_and_listener_that_won() {
        let hostname = json!({"listeners": [{"name": "http", "port": 80, "protocol": "HTTP", "hostname": "a.example"}]});
        let out = translate(
            &snapshot_of(vec![
                class(json!({})),
                gateway("a", hostname.clone()),
                gateway("b", hostname),
            ]),
            &Options::default(),
        );
        let (status, reason, message) = listener_cond(&out, "b", "Conflicted");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "HostnameConflict")
        );
        assert_eq!(
            message,
            "hostname a.example on port 80 is already used by listener \"http\" of Gateway n/a"
        );
        assert_eq!(listener_cond(&out, "a", "Conflicted").0, "False");
    }

    #[test]
    fn a_missing_crd_takes_the_features_named_after_its_kind() {
        let options = Options {
            missing_kinds: ["GRPCRoute".to_string()].into(),
            ..Options::default()
        };
        let out = translate(&snapshot_of(vec![class(json!({}))]), &options);
        let features: Vec<String> = (out.status.gateway_classes.values())
            .flat_map(|s| s.supported_features.iter().flatten())
            .map(|f| f.name.clone())
            .collect();
        assert!(features.contains(&"HTTPRoute".to_string()), "{features:?}");
        assert!(
            !features.iter().any(|f| f.starts_with("GRPCRoute")),
            "{features:?}"
        );
    }

    /// testdata/fail_closed/unapplicable-security: what we do not implement
    /// is not served.
    #[test]
    fn unimplemented_security_features_fail_closed() {
        let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/fail_closed/unapplicable-security/input.yaml");
        let mut loaded = kengine_gateway_model::manifests::Loaded::default();
        let text = std::fs::read_to_string(&input).unwrap();
        kengine_gateway_model::manifests::parse_into(&text, &input, &mut loaded).unwrap();
        let snapshot = Snapshot::from_objects(loaded.objects);
        let out = translate(&snapshot, &Options::default());
        let gateway = &out.status.gateways[&ObjectRef::new("web", "mtls")];
        let listener = |name: &str, type_: &str| {
            let l = gateway.listeners.iter().flatten().find(|l| l.name == name);
            let (status, reason, _) = cond(&l.unwrap().conditions, type_);
            (status, reason)
        };
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        // Its client CA bundle does not exist: not served without it.
        assert_eq!(
            listener("secure", "Accepted"),
            pair("False", "NoValidCACertificate")
        );
        assert_eq!(
            listener("secure", "ResolvedRefs"),
            pair("False", "InvalidCACertificateRef")
        );
        assert_eq!(listener("secure", "Programmed").0, "False");
        assert_eq!(
            listener("other-port", "Accepted"),
            pair("True", "Accepted"),
            "perPort without validation replaces the default"
        );
        assert_eq!(listener("plain", "Accepted").0, "True");
        let servers = &out.config().apps.http.as_ref().unwrap().servers;
        assert_eq!(
            servers.keys().collect::<Vec<_>>(),
            ["port-80", "port-8443"],
            "port 443 would serve without client authentication"
        );
        let config = serde_json::to_string(out.config()).unwrap();
        assert!(!config.contains("10.2.0.2:443"), "dialed in plaintext");
        assert!(
            config.contains("10.2.0.2:80"),
            "the port the policy does not name"
        );
        let route = &out.status.http_routes[&ObjectRef::new("web", "split")];
        let (status, reason, _) = cond(&route[0].conditions, "ResolvedRefs");
        assert_eq!(
            pair(&status, &reason),
            pair("False", "InvalidBackendTLSPolicy")
        );
        let policy = &out.status.backend_tls_policies[&ObjectRef::new("web", "tls-app")];
        assert_eq!(policy.len(), 1);
        assert_eq!(policy[0].ancestor_ref.name, "mtls");
        let (status, reason, _) = cond(&policy[0].conditions, "Accepted");
        assert_eq!(
            pair(&status, &reason),
            pair("False", "NoValidCACertificate")
        );
        let (status, reason, _) = cond(&policy[0].conditions, "ResolvedRefs");
        assert_eq!(
            pair(&status, &reason),
            pair("False", "InvalidCACertificateRef")
        );
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
