//! The Gateway API's `Programmed` condition after a push: translate says
//! what a Gateway would be once its config is loaded; these rules say what
//! it is, given what happened to its fleet's push.

use std::net::IpAddr;

use gateway_api::apis::experimental::gateways::{GatewayStatus, GatewayStatusAddresses};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::Status;
use crate::conditions::{Cond, Reason, Type, stamp};
use crate::snapshot::ObjectRef;

/// Why a fleet cannot be pushed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetProblem {
    /// Its KengineInstance does not exist (yet: the operator creates the
    /// one a Gateway gets unless fleets are not managed).
    InstanceMissing(ObjectRef),
    /// A managed instance whose parts (admin certificates) the operator
    /// is still making.
    InstanceNotReady(ObjectRef, String),
    /// The instance cannot be used as it is.
    InstanceInvalid(ObjectRef, String),
    /// A pod's admin API cannot be reached with what the instance gives.
    AdminClient { pod: String, error: String },
}

impl FleetProblem {
    /// Does it go away by itself (`Pending`), or does someone have to act (`Invalid`)?
    pub fn pending(&self) -> bool {
        matches!(
            self,
            FleetProblem::InstanceMissing(_) | FleetProblem::InstanceNotReady(..)
        )
    }
}

impl std::fmt::Display for FleetProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FleetProblem::InstanceMissing(key) => write!(
                f,
                "KengineInstance {key} does not exist yet: the operator creates it unless --manage-fleets=false; then create it, or point the Gateway's infrastructure.parametersRef or its class's parametersRef at one"
            ),
            FleetProblem::InstanceNotReady(key, why) | FleetProblem::InstanceInvalid(key, why) => {
                write!(f, "KengineInstance {key}: {why}")
            }
            FleetProblem::AdminClient { pod, error } => {
                write!(f, "pod {pod}: admin client: {error}")
            }
        }
    }
}

/// What became of a fleet's push, as far as its Gateways care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetPush<'a> {
    /// The fleet cannot be pushed to.
    Problem(&'a FleetProblem),
    /// No pod is ready to take the config yet.
    NoReadyPods,
    /// Some pods did not load the config: one line per pod.
    Failed(&'a str),
    /// Every pod loaded it.
    Loaded,
}

/// Why the fleet `key`'s Gateways are not Programmed, if they are not.
pub fn verdict(key: &ObjectRef, push: FleetPush<'_>) -> Option<(Reason, String)> {
    match push {
        FleetPush::Problem(problem) if problem.pending() => {
            Some((Reason::Pending, problem.to_string()))
        }
        FleetPush::Problem(problem) => Some((Reason::Invalid, problem.to_string())),
        FleetPush::NoReadyPods => Some((
            Reason::Pending,
            format!("KengineInstance {key} has no ready pods yet"),
        )),
        FleetPush::Failed(failures) => Some((Reason::Invalid, failures.to_string())),
        FleetPush::Loaded => None,
    }
}

/// An address a fleet's traffic reaches it at, typed as Gateway status
/// types addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetAddress {
    Ip(IpAddr),
    Hostname(String),
}

impl FleetAddress {
    pub fn value(&self) -> String {
        match self {
            FleetAddress::Ip(ip) => ip.to_string(),
            FleetAddress::Hostname(h) => h.clone(),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            FleetAddress::Ip(_) => "IPAddress",
            FleetAddress::Hostname(_) => "Hostname",
        }
    }
}

/// The addresses a fleet's Service gives its Gateways: its load
/// balancer's ingress (each an IP, else a hostname), else its ClusterIP.
/// (A fleet without a Service is reached at its pods' IPs.)
pub fn service_addresses(service: &Service) -> Vec<FleetAddress> {
    let ingress: Vec<FleetAddress> = (service.status.as_ref())
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| match (&i.ip, &i.hostname) {
            (Some(ip), _) => ip.parse().ok().map(FleetAddress::Ip),
            (None, Some(host)) => Some(FleetAddress::Hostname(host.clone())),
            _ => None,
        })
        .collect();
    if !ingress.is_empty() {
        return ingress;
    }
    (service.spec.as_ref())
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .map(|ip| vec![FleetAddress::Ip(ip)])
        .unwrap_or_default()
}

/// A Gateway whose addresses translate could not know (no static
/// addresses: its fleet's Service or pods decide them) takes its fleet's.
pub fn fleet_addresses(gateway: &mut GatewayStatus, fleet: &[FleetAddress]) {
    if gateway.addresses.is_none() && !fleet.is_empty() {
        gateway.addresses = Some(
            fleet
                .iter()
                .map(|a| GatewayStatusAddresses {
                    r#type: Some(a.type_name().into()),
                    value: a.value(),
                })
                .collect(),
        );
    }
}

/// Marks every Gateway not programmed, e.g. when Kengine rejected the config.
pub fn mark_not_programmed(status: &mut Status, message: &str, now: &Time) {
    for gateway in status.gateways.values_mut() {
        // Only the conditions decide the transition time.
        let computed = GatewayStatus {
            conditions: gateway.conditions.clone(),
            ..Default::default()
        };
        not_programmed(gateway, Reason::Invalid, message, Some(&computed), now);
    }
}

/// Overrides a Gateway's `Programmed` condition with what really happened
/// to its config. `previous` is the status the object has now, so a
/// condition that was already False keeps its `lastTransitionTime`
/// (stamped by the one rule, [`stamp`]).
pub fn not_programmed(
    gateway: &mut GatewayStatus,
    reason: Reason,
    message: &str,
    previous: Option<&GatewayStatus>,
    now: &Time,
) {
    let before = previous.and_then(|p| p.conditions.as_deref());
    for c in gateway
        .conditions
        .iter_mut()
        .flatten()
        .filter(|c| Type::Programmed == c.type_)
    {
        let generation = c.observed_generation;
        let cond = Cond::new(Type::Programmed, false, reason, message);
        if let Some(stamped) = stamp(vec![cond], generation, before, now).pop() {
            *c = stamped;
        }
    }
}

/// What can be said of a Gateway before its fleet's push: the computed
/// status, with the `Programmed` condition (and the addresses, when
/// translate leaves them to the push) it has live, since the config that
/// made it so still serves. `None` when it has no live `Programmed` yet.
pub fn before_push(
    computed: &GatewayStatus,
    live: Option<&GatewayStatus>,
) -> Option<GatewayStatus> {
    let live = live?;
    let programmed = live
        .conditions
        .iter()
        .flatten()
        .find(|c| Type::Programmed == c.type_)?;
    let mut early = computed.clone();
    for c in early
        .conditions
        .iter_mut()
        .flatten()
        .filter(|c| Type::Programmed == c.type_)
    {
        // Its observedGeneration too: the condition is about the config
        // pushed for that generation.
        *c = programmed.clone();
    }
    if early.addresses.is_none() {
        early.addresses.clone_from(&live.addresses);
    }
    Some(early)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gateway_status(programmed: &str, attached: i32, addresses: bool) -> GatewayStatus {
        let condition = |t: &str, s: &str, g: i64| {
            json!({"type": t, "status": s, "reason": "R", "message": "", "observedGeneration": g,
                "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        serde_json::from_value(json!({
            "conditions": [condition("Accepted", "True", 2), condition("Programmed", programmed, 1)],
            "listeners": [{"name": "http", "attachedRoutes": attached, "supportedKinds": [], "conditions": []}],
            "addresses": if addresses { json!([{"type": "IPAddress", "value": "10.0.0.9"}]) } else { json!(null) },
        }))
        .unwrap()
    }

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn before_a_push_gateways_keep_their_live_programmed_condition() {
        let live = gateway_status("False", 3, true);
        let computed = gateway_status("True", 1000, false);
        let early = before_push(&computed, Some(&live)).unwrap();
        let programmed = |s: &GatewayStatus| s.conditions.as_ref().unwrap()[1].status.clone();
        assert_eq!(programmed(&early), "False", "as live until the push says");
        assert_eq!(early.listeners.as_ref().unwrap()[0].attached_routes, 1000);
        assert_eq!(early.addresses, live.addresses);
        assert_eq!(
            early.conditions.as_ref().unwrap()[0],
            computed.conditions.as_ref().unwrap()[0]
        );
        assert!(
            before_push(&computed, None).is_none(),
            "a new Gateway waits for its push"
        );
    }

    #[test]
    fn a_failed_push_flips_programmed_and_keeps_an_older_false_time() {
        let programmed = |s: &GatewayStatus| s.conditions.as_ref().unwrap()[1].clone();
        // True until now: it flips now.
        let mut g = gateway_status("True", 1, false);
        let live = g.clone();
        not_programmed(&mut g, Reason::Invalid, "rejected", Some(&live), &t(50));
        let c = programmed(&g);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Invalid"));
        assert_eq!(c.message, "rejected");
        assert_eq!(c.last_transition_time, t(50));
        assert_eq!(c.observed_generation, Some(1));
        // Already False: it keeps the time it went False.
        let mut again = gateway_status("True", 1, false);
        not_programmed(&mut again, Reason::Pending, "no pods", Some(&g), &t(90));
        assert_eq!(programmed(&again).last_transition_time, t(50));
        assert_eq!(programmed(&again).reason, "Pending");
    }

    #[test]
    fn gateways_without_addresses_take_their_fleets() {
        let mut g = gateway_status("True", 1, false);
        let ip = FleetAddress::Ip("10.96.0.7".parse().unwrap());
        let host = FleetAddress::Hostname("lb.example.com".into());
        fleet_addresses(&mut g, &[ip.clone(), host]);
        let a = g.addresses.as_ref().unwrap();
        assert_eq!(
            (a[0].r#type.as_deref(), a[0].value.as_str()),
            (Some("IPAddress"), "10.96.0.7")
        );
        assert_eq!(
            (a[1].r#type.as_deref(), a[1].value.as_str()),
            (Some("Hostname"), "lb.example.com")
        );
        let mut own = gateway_status("True", 1, true);
        fleet_addresses(&mut own, &[ip]);
        assert_eq!(
            own.addresses.as_ref().unwrap()[0].value,
            "10.0.0.9",
            "translate's stay"
        );
    }

    #[test]
    fn a_fleets_service_gives_its_ingress_else_its_cluster_ip() {
        let service = |spec: serde_json::Value, status: serde_json::Value| -> Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "s"}, "spec": spec, "status": status
            }))
            .unwrap()
        };
        let lb = service(
            serde_json::json!({"clusterIP": "10.96.0.7"}),
            serde_json::json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"hostname": "lb.example.com"}]}}),
        );
        assert_eq!(
            service_addresses(&lb),
            [
                FleetAddress::Ip("203.0.113.7".parse().unwrap()),
                FleetAddress::Hostname("lb.example.com".into())
            ]
        );
        let cluster = service(
            serde_json::json!({"clusterIP": "10.96.0.7"}),
            serde_json::json!({}),
        );
        assert_eq!(
            service_addresses(&cluster),
            [FleetAddress::Ip("10.96.0.7".parse().unwrap())]
        );
        let headless = service(
            serde_json::json!({"clusterIP": "None"}),
            serde_json::json!({}),
        );
        assert_eq!(service_addresses(&headless), []);
    }

    #[test]
    fn verdicts_of_pushes() {
        let key = ObjectRef::new("ns", "k");
        let reason = |p| verdict(&key, p).map(|(r, _)| r);
        let missing = FleetProblem::InstanceMissing(key.clone());
        let not_ready = FleetProblem::InstanceNotReady(key.clone(), "no certificates".into());
        let invalid = FleetProblem::InstanceInvalid(key.clone(), "no spec.external".into());
        let client = FleetProblem::AdminClient {
            pod: "p".into(),
            error: "bad key".into(),
        };
        assert_eq!(reason(FleetPush::Problem(&missing)), Some(Reason::Pending));
        assert_eq!(
            reason(FleetPush::Problem(&not_ready)),
            Some(Reason::Pending)
        );
        assert_eq!(reason(FleetPush::Problem(&invalid)), Some(Reason::Invalid));
        assert_eq!(reason(FleetPush::Problem(&client)), Some(Reason::Invalid));
        assert_eq!(
            verdict(&key, FleetPush::Problem(&invalid)).unwrap().1,
            "KengineInstance ns/k: no spec.external"
        );
        assert_eq!(reason(FleetPush::NoReadyPods), Some(Reason::Pending));
        assert_eq!(
            reason(FleetPush::Failed("p: rejected")),
            Some(Reason::Invalid)
        );
        assert_eq!(reason(FleetPush::Loaded), None);
    }
}
