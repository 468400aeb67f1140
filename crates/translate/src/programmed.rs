//! The Gateway API's `Programmed` condition after a push: translate says
//! what a Gateway would be once its config is loaded; these rules say what
//! it is, given what happened to its fleet's push.

use gateway_api::apis::experimental::gateways::{GatewayStatus, GatewayStatusAddresses};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::Status;
use crate::conditions::{Cond, Reason, Type, stamp};
use crate::snapshot::ObjectRef;

/// What became of a fleet's push, as far as its Gateways care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetPush<'a> {
    /// The fleet cannot be pushed to (its instance is missing, invalid, or
    /// not ready yet when `pending`).
    Problem { pending: bool, message: &'a str },
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
        FleetPush::Problem {
            pending: true,
            message,
        } => Some((Reason::Pending, message.to_string())),
        FleetPush::Problem { message, .. } => Some((Reason::Invalid, message.to_string())),
        FleetPush::NoReadyPods => Some((
            Reason::Pending,
            format!("KengineInstance {key} has no ready pods yet"),
        )),
        FleetPush::Failed(failures) => Some((Reason::Invalid, failures.to_string())),
        FleetPush::Loaded => None,
    }
}

/// A Gateway whose addresses translate could not know (no static
/// addresses: its fleet's Service or pods decide them) takes its fleet's,
/// `(type, value)` as the fleet reports them.
pub fn fleet_addresses(gateway: &mut GatewayStatus, fleet: &[(&str, String)]) {
    if gateway.addresses.is_none() && !fleet.is_empty() {
        gateway.addresses = Some(
            fleet
                .iter()
                .map(|(t, v)| GatewayStatusAddresses {
                    r#type: Some(t.to_string()),
                    value: v.clone(),
                })
                .collect(),
        );
    }
}

/// Marks every Gateway not programmed, e.g. when Kengine rejected the config.
pub fn mark_not_programmed(status: &mut Status, message: &str, now: &Time) {
    for gateway in status.gateways.values_mut() {
        let computed = gateway.clone();
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
        fleet_addresses(&mut g, &[("IPAddress", "10.96.0.7".into())]);
        let a = g.addresses.as_ref().unwrap();
        assert_eq!(
            (a[0].r#type.as_deref(), a[0].value.as_str()),
            (Some("IPAddress"), "10.96.0.7")
        );
        let mut own = gateway_status("True", 1, true);
        fleet_addresses(&mut own, &[("IPAddress", "10.96.0.7".into())]);
        assert_eq!(
            own.addresses.as_ref().unwrap()[0].value,
            "10.0.0.9",
            "translate's stay"
        );
    }

    #[test]
    fn verdicts_of_pushes() {
        let key = ObjectRef::new("ns", "k");
        let reason = |p| verdict(&key, p).map(|(r, _)| r);
        assert_eq!(
            reason(FleetPush::Problem {
                pending: true,
                message: "x"
            }),
            Some(Reason::Pending)
        );
        assert_eq!(
            reason(FleetPush::Problem {
                pending: false,
                message: "x"
            }),
            Some(Reason::Invalid)
        );
        assert_eq!(reason(FleetPush::NoReadyPods), Some(Reason::Pending));
        assert_eq!(
            reason(FleetPush::Failed("p: rejected")),
            Some(Reason::Invalid)
        );
        assert_eq!(reason(FleetPush::Loaded), None);
    }
}
