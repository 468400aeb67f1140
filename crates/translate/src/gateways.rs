//! Gateways and their listeners: validation, certificates, bind addresses
//! and conflicts. Produces the listener models routes attach to.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use gateway_api::apis::experimental::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From,
    GatewayListenersAllowedRoutesNamespacesSelector as Selector, GatewayListenersTlsMode,
};
use kengine_gateway_model::names::FLEET_FILES_DIR;
use kube::ResourceExt;

use super::backend_client_cert::ClientCert;
use super::conditions::{Cond, Reason, Type};
use super::grpc_routes::RouteKind;
use super::hostnames::{self, Host};
use super::refgrant;
use super::tls::{PemPair, pem_pair};
use crate::snapshot::{ObjectRef, Snapshot};

pub const GROUP: &str = "gateway.networking.k8s.io";
/// The route kinds an HTTP or HTTPS listener carries, in `supportedKinds` order.
pub const HTTP_KINDS: [RouteKind; 2] = [RouteKind::Http, RouteKind::Grpc];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    Https,
}

#[derive(Debug, Clone)]
pub enum AllowedNamespaces {
    Same,
    All,
    Selector(Selector),
}

#[derive(Debug, Clone)]
pub struct ListenerModel {
    pub name: String,
    pub port: u16,
    pub protocol: Option<Protocol>,
    pub host: Host,
    pub namespaces: AllowedNamespaces,
    /// Route kinds this listener accepts and we support.
    pub kinds: Vec<String>,
    pub certificates: Vec<PemPair>,
    /// The client certificates an HTTPS listener validates.
    pub client_auth: Option<super::frontend_tls::ClientAuth>,
    /// Accepted/ResolvedRefs/Conflicted problems; empty means usable.
    pub problems: Vec<Cond>,
    pub attached_routes: i32,
}

impl ListenerModel {
    /// A valid listener on any hostname, for tests.
    #[cfg(test)]
    pub fn test(name: &str, port: u16, protocol: Protocol) -> Self {
        ListenerModel {
            name: name.into(),
            port,
            protocol: Some(protocol),
            host: Host::Any,
            namespaces: AllowedNamespaces::Same,
            kinds: HTTP_KINDS.map(|k| k.name().to_string()).to_vec(),
            certificates: match protocol {
                Protocol::Https => vec![PemPair {
                    certificate: String::new(),
                    key: String::new(),
                }],
                Protocol::Http => Vec::new(),
            },
            client_auth: None,
            problems: Vec::new(),
            attached_routes: 0,
        }
    }

    /// May routes attach? Unresolved refs do not stop that.
    pub fn accepts_routes(&self) -> bool {
        self.problems.iter().all(|c| c.type_ == Type::ResolvedRefs)
    }

    /// Can traffic flow? An HTTPS listener also needs a certificate.
    pub fn usable(&self) -> bool {
        self.accepts_routes()
            && (self.protocol != Some(Protocol::Https) || !self.certificates.is_empty())
    }
}

#[derive(Debug, Clone)]
pub struct GatewayModel {
    pub key: ObjectRef,
    /// IPs the listeners bind; empty means every interface.
    pub binds: Vec<IpAddr>,
    /// Static addresses its managed fleet's Service answers on
    /// (`externalIPs`); the pods themselves listen on every interface.
    pub service_ips: Vec<IpAddr>,
    /// Served by a managed fleet (the operator runs its pods).
    pub managed: bool,
    /// A listener lets clients through without a valid certificate
    /// (`AllowInsecureFallback`).
    pub insecure_frontend: bool,
    pub listeners: Vec<ListenerModel>,
    /// A problem that stops the whole Gateway (Accepted=False).
    pub rejected: Option<Cond>,
    /// Requested addresses this host (or, for a managed fleet, its
    /// Service) cannot take (Programmed=False).
    pub unusable: Vec<IpAddr>,
    /// The fleet that serves this Gateway.
    pub fleet: ObjectRef,
    /// That fleet is the Gateway's own instance, which the operator creates.
    pub own_fleet: bool,
    /// A Gateway-level reference we cannot use (ResolvedRefs=False).
    pub unresolved: Option<Cond>,
    /// The client certificate presented to backends dialed over TLS.
    pub client_cert: Option<Rc<ClientCert>>,
}

/// Builds the model of one Gateway of ours, before cross-Gateway conflicts.
/// `usable` is the set of bindable addresses when the caller knows it.
pub fn model(
    snapshot: &Snapshot,
    gateway: &Gateway,
    usable: Option<&BTreeSet<IpAddr>>,
    taken: &BTreeSet<SocketAddr>,
    fleets: super::FleetMode,
    local_files_dir: &str,
) -> GatewayModel {
    let key = ObjectRef::of(gateway);
    let (binds, mut rejected) = match bind_addresses(gateway) {
        Ok(binds) => (binds, None),
        Err(message) => (
            Vec::new(),
            Some(Cond::new(
                Type::Accepted,
                false,
                Reason::UnsupportedAddress,
                message,
            )),
        ),
    };
    let (fleet, own_fleet) = match super::fleets::fleet_of(snapshot, gateway, fleets) {
        Ok(chosen) => chosen,
        Err(cond) => {
            rejected.get_or_insert(cond);
            (ObjectRef::new(&key.namespace, &key.name), false)
        }
    };
    let mut listeners: Vec<ListenerModel> = gateway
        .spec
        .listeners
        .iter()
        .map(|l| listener(snapshot, &key, l))
        .collect();
    let insecure_frontend = super::frontend_tls::apply(snapshot, gateway, &mut listeners);
    mark_conflicts_within(&key, &mut listeners);
    let managed = fleets == super::FleetMode::Instances && super::fleets::managed(snapshot, &fleet);
    if managed {
        reserve_sidecar_ports(&mut listeners);
    }
    let (binds, service_ips, unusable) = if managed {
        // A pod has none of these addresses, and binding one would make
        // Kengine refuse the fleet's whole config: the pods listen on
        // every interface and the fleet's Service takes the addresses.
        let (ips, unusable) = binds.into_iter().partition(service_address);
        (Vec::new(), ips, unusable)
    } else {
        // Binding an address the host lacks would make Kengine refuse the
        // whole config, so such addresses are left out and reported instead.
        let (binds, unusable) = binds
            .into_iter()
            .partition(|ip| usable.is_none_or(|u| u.contains(ip)));
        (binds, Vec::new(), unusable)
    };
    mark_taken_ports(&mut listeners, &binds, taken);
    // Files reach a local Kengine (standalone writes them) and a managed
    // fleet's pods (its admin proxy does); nothing reaches other fleets.
    let files_dir = match fleets {
        super::FleetMode::Local => Some(local_files_dir),
        super::FleetMode::Instances => managed.then_some(FLEET_FILES_DIR),
    };
    let (client_cert, unresolved) =
        match super::backend_client_cert::resolve(snapshot, gateway, files_dir) {
            Ok(cert) => (cert, None),
            Err(cond) => (None, Some(cond)),
        };
    GatewayModel {
        key,
        binds,
        service_ips,
        managed,
        insecure_frontend,
        listeners,
        rejected,
        unusable,
        fleet,
        own_fleet,
        unresolved,
        client_cert,
    }
}

/// Does a route's parentRef name a Gateway? Group and kind default to
/// the Gateway API's group and `Gateway`; one rule for every route kind.
pub fn names_a_gateway(group: Option<&str>, kind: Option<&str>) -> bool {
    group.unwrap_or(GROUP) == GROUP && kind.unwrap_or("Gateway") == "Gateway"
}

/// Another process holds the port on an address a listener binds: Kengine
/// would refuse the whole config, so only that listener is left out.
fn mark_taken_ports(
    listeners: &mut [ListenerModel],
    binds: &[IpAddr],
    taken: &BTreeSet<SocketAddr>,
) {
    for l in listeners {
        let hit = if binds.is_empty() {
            taken
                .iter()
                .find(|a| a.port() == l.port && a.ip().is_unspecified())
                .copied()
        } else {
            binds
                .iter()
                .map(|ip| SocketAddr::new(*ip, l.port))
                .find(|a| taken.contains(a))
        };
        if let Some(addr) = hit {
            let place = if addr.ip().is_unspecified() {
                format!("port {}", l.port)
            } else {
                addr.to_string()
            };
            l.problems.push(Cond::new(
                Type::Accepted,
                false,
                Reason::PortUnavailable,
                format!("{place} is in use by another process on this host"),
            ));
        }
    }
}

/// A Gateway of a class we do not accept is not served. The spec has no
/// Gateway reason for it; the class's problem is its parameters.
pub fn class_not_accepted(class: &str, why: &str) -> Cond {
    Cond::new(
        Type::Accepted,
        false,
        Reason::InvalidParameters,
        format!("GatewayClass {class} is not accepted ({why}), so its Gateways are not served"),
    )
}

/// Managed pods run the admin-proxy sidecar on these ports: a listener
/// there would make Kengine refuse the fleet's whole config.
fn reserve_sidecar_ports(listeners: &mut [ListenerModel]) {
    for l in listeners {
        if [crate::crd::ADMIN_PORT, crate::crd::HEALTH_PORT].contains(&l.port) {
            l.problems.push(Cond::new(
                Type::Accepted,
                false,
                Reason::PortUnavailable,
                format!(
                    "port {} is taken by the admin proxy on managed KengineInstance pods ({} admin API, {} health)",
                    l.port,
                    crate::crd::ADMIN_PORT,
                    crate::crd::HEALTH_PORT
                ),
            ));
        }
    }
}

fn bind_addresses(gateway: &Gateway) -> Result<Vec<IpAddr>, String> {
    let mut binds = Vec::new();
    for address in gateway.spec.addresses.iter().flatten() {
        let kind = address.r#type.as_deref().unwrap_or("IPAddress");
        let value = address.value.as_deref().unwrap_or("");
        if kind != "IPAddress" {
            return Err(format!(
                "address type {kind} is not supported; only IPAddress is"
            ));
        }
        // An empty value asks us to pick one: every interface.
        if value.is_empty() {
            continue;
        }
        let ip = value
            .parse()
            .map_err(|_| format!("{value:?} is not an IP address"))?;
        if !unicast_address(&ip) {
            return Err(format!(
                "{value} is not a unicast address (unspecified, broadcast and multicast addresses cannot receive a connection)"
            ));
        }
        if !binds.contains(&ip) {
            binds.push(ip);
        }
    }
    binds.sort();
    Ok(binds)
}

/// Can a Service take this address as an external IP? The API server
/// refuses loopback and link-local ones (and translate has already refused
/// unspecified, broadcast and multicast addresses).
fn service_address(ip: &IpAddr) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    !(ip.is_loopback() || link_local)
}

/// Can a client connect to this address? Unspecified (every interface),
/// broadcast and multicast addresses are no destination of a TCP connection.
pub fn unicast_address(ip: &IpAddr) -> bool {
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !(ip.is_unspecified() || ip.is_multicast() || broadcast)
}

fn listener(snapshot: &Snapshot, gateway: &ObjectRef, spec: &GatewayListeners) -> ListenerModel {
    let mut problems = Vec::new();
    let protocol = match spec.protocol.as_str() {
        "HTTP" => Some(Protocol::Http),
        "HTTPS" => Some(Protocol::Https),
        other => {
            problems.push(Cond::new(
                Type::Accepted,
                false,
                Reason::UnsupportedProtocol,
                format!("protocol {other} is not supported; use HTTP or HTTPS"),
            ));
            None
        }
    };
    let port = u16::try_from(spec.port).unwrap_or(0);
    if port == 0 {
        problems.push(Cond::new(
            Type::Accepted,
            false,
            Reason::PortUnavailable,
            format!("port {} is invalid", spec.port),
        ));
    }
    if let Some(Err(why)) = spec.hostname.as_deref().map(hostnames::validate) {
        problems.push(Cond::new(Type::Accepted, false, Reason::Invalid, why));
    }
    let allowed = spec.allowed_routes.as_ref();
    let namespaces = match allowed.and_then(|a| a.namespaces.as_ref()) {
        Some(ns) => match ns.from {
            Some(From::All) => AllowedNamespaces::All,
            Some(From::Selector) => {
                AllowedNamespaces::Selector(ns.selector.clone().unwrap_or_default())
            }
            Some(From::Same) | None => AllowedNamespaces::Same,
        },
        None => AllowedNamespaces::Same,
    };
    let mut kinds = Vec::new();
    match allowed.and_then(|a| a.kinds.as_ref()) {
        Some(requested) if !requested.is_empty() => {
            for k in requested {
                let group = k.group.as_deref().unwrap_or(GROUP);
                if group == GROUP
                    && HTTP_KINDS.iter().any(|kind| kind.name() == k.kind)
                    && protocol.is_some()
                {
                    kinds.push(k.kind.clone());
                } else {
                    problems.push(Cond::new(
                        Type::ResolvedRefs,
                        false,
                        Reason::InvalidRouteKinds,
                        format!(
                            "route kind {group}/{} is not supported on this listener",
                            k.kind
                        ),
                    ));
                }
            }
        }
        _ if protocol.is_some() => kinds.extend(HTTP_KINDS.map(|k| k.name().to_string())),
        _ => {}
    }
    kinds.dedup();
    let certificates = if protocol == Some(Protocol::Https) {
        certificates(snapshot, gateway, spec, &mut problems)
    } else {
        Vec::new()
    };
    ListenerModel {
        name: spec.name.clone(),
        port,
        protocol,
        host: Host::from_option(spec.hostname.as_deref()),
        namespaces,
        kinds,
        certificates,
        client_auth: None,
        problems,
        attached_routes: 0,
    }
}

fn certificates(
    snapshot: &Snapshot,
    gateway: &ObjectRef,
    spec: &GatewayListeners,
    problems: &mut Vec<Cond>,
) -> Vec<PemPair> {
    let tls = spec.tls.as_ref();
    if matches!(
        tls.and_then(|t| t.mode.as_ref()),
        Some(GatewayListenersTlsMode::Passthrough)
    ) {
        problems.push(Cond::new(
            Type::Accepted,
            false,
            Reason::UnsupportedValue,
            "TLS mode Passthrough is not valid for HTTPS",
        ));
        return Vec::new();
    }
    let refs = tls
        .and_then(|t| t.certificate_refs.as_deref())
        .unwrap_or_default();
    if refs.is_empty() {
        problems.push(Cond::new(
            Type::ResolvedRefs,
            false,
            Reason::InvalidCertificateRef,
            "HTTPS listener has no certificateRefs",
        ));
        return Vec::new();
    }
    let mut pairs = Vec::new();
    for r in refs {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        let namespace = r.namespace.as_deref().unwrap_or(&gateway.namespace);
        let target = format!("{namespace}/{}", r.name);
        if !group.is_empty() || kind != "Secret" {
            problems.push(Cond::new(
                Type::ResolvedRefs,
                false,
                Reason::InvalidCertificateRef,
                format!("certificateRef {group}/{kind} {target} is not a core Secret"),
            ));
            continue;
        }
        if !refgrant::gateway_may_use(snapshot, gateway, "Secret", namespace, &r.name) {
            problems.push(Cond::new(
                Type::ResolvedRefs,
                false,
                Reason::RefNotPermitted,
                format!(
                    "no ReferenceGrant in {namespace} allows this Gateway to use Secret {target}"
                ),
            ));
            continue;
        }
        match snapshot.secrets.get(&ObjectRef::new(namespace, &r.name)) {
            None => problems.push(Cond::new(
                Type::ResolvedRefs,
                false,
                Reason::InvalidCertificateRef,
                format!("Secret {target} not found"),
            )),
            Some(secret) => match pem_pair(secret) {
                Ok(pair) => pairs.push(pair),
                Err(why) => problems.push(Cond::new(
                    Type::ResolvedRefs,
                    false,
                    Reason::InvalidCertificateRef,
                    format!("Secret {target} {why}"),
                )),
            },
        }
    }
    pairs
}

/// Listeners of one Gateway on the same port must agree on the protocol and
/// differ in hostname; the later listener loses.
fn mark_conflicts_within(gateway: &ObjectRef, listeners: &mut [ListenerModel]) {
    for i in 0..listeners.len() {
        let (earlier, rest) = listeners.split_at_mut(i);
        let this = &mut rest[0];
        if let Some(problem) = earlier
            .iter()
            .filter(|e| e.usable())
            .find_map(|e| conflict(gateway, e, this))
        {
            this.problems.push(problem);
        }
    }
}

/// Why `later` cannot share a port with `earlier` (of Gateway `winner`), if
/// it cannot. The message names the listener that won, with its Gateway:
/// listener names repeat across Gateways.
pub fn conflict(
    winner: &ObjectRef,
    earlier: &ListenerModel,
    later: &ListenerModel,
) -> Option<Cond> {
    if earlier.port != later.port {
        return None;
    }
    if earlier.protocol != later.protocol {
        return Some(Cond::new(
            Type::Conflicted,
            true,
            Reason::ProtocolConflict,
            format!(
                "port {} is already used with another protocol by listener {:?} of Gateway {winner}",
                later.port, earlier.name
            ),
        ));
    }
    (earlier.host == later.host).then(|| {
        Cond::new(
            Type::Conflicted,
            true,
            Reason::HostnameConflict,
            format!(
                "hostname {} on port {} is already used by listener {:?} of Gateway {winner}",
                later.host, later.port, earlier.name
            ),
        )
    })
}

/// May a route in `namespace` attach to this listener of `gateway`?
pub fn namespace_allowed(
    snapshot: &Snapshot,
    listener: &ListenerModel,
    gateway: &ObjectRef,
    namespace: &str,
) -> bool {
    match &listener.namespaces {
        AllowedNamespaces::Same => namespace == gateway.namespace,
        AllowedNamespaces::All => true,
        AllowedNamespaces::Selector(selector) => {
            selects(selector, &snapshot.namespace_labels(namespace))
        }
    }
}

fn selects(selector: &Selector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Gateways in precedence order: oldest first, then by namespace/name.
pub fn ordered<'a>(gateways: impl Iterator<Item = &'a Gateway>) -> Vec<&'a Gateway> {
    let mut v: Vec<&Gateway> = gateways.collect();
    v.sort_by_key(|g| (g.creation_timestamp().map(|t| t.0), ObjectRef::of(*g)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
        let sel: Selector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"env": "prod"},
            "matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        assert!(selects(&sel, &labels));
        let sel: Selector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]
        }))
        .unwrap();
        assert!(!selects(&sel, &labels));
    }
}
