//! The pure steps of a reconcile pass: what the pushes and the status lane
//! mean for the Gateway and KengineInstance status a pass writes.
//!
//! `reconcile.rs` runs the pass and does its I/O (writes, pushes, Events)
//! between these steps; they take what it read and return what it writes,
//! with no client and no await, so each is tested here without an API
//! server or a Kengine pod.

use std::collections::BTreeMap;

use gateway_api::apis::experimental::gateways::GatewayStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::crd::{InstanceCondition, InstanceReason, KengineInstanceStatus, PodConfigStatus};
use crate::operator::InstanceReport;
use crate::operator::workloads::Workload;
use crate::sinks::fleet::{PodResult, config_hash};
use crate::snapshot::{ObjectRef, Snapshot};
use crate::translate::programmed::{self, FleetAddress};
use crate::translate::{self, Reason};

/// What happened to one fleet's config.
pub struct FleetOutcome {
    /// The push of this pass's config is done; until it is, the fleet's
    /// Gateways keep their live `Programmed` condition and its
    /// KengineInstance its status.
    pub pushed: bool,
    /// Why its Gateways are not Programmed, if they are not: (reason, message).
    pub not_programmed: Option<(Reason, String)>,
    pub addresses: Vec<FleetAddress>,
    pub results: Vec<PodResult>,
    pub plain_http: bool,
}

/// The fleets a pass pushes to: translate's, and every managed fleet
/// without Gateways, with an empty config (its pods turn Ready only after a
/// first load).
pub fn fleets<'a>(
    mut fleets: BTreeMap<ObjectRef, translate::Fleet>,
    managed: impl IntoIterator<Item = &'a ObjectRef>,
) -> BTreeMap<ObjectRef, translate::Fleet> {
    for key in managed {
        fleets.entry(key.clone()).or_default();
    }
    fleets
}

/// The Gateway status a pass writes before its pushes: what translate
/// computed, with the `Programmed` condition each Gateway has live (a
/// burst's attachedRoutes need not wait for a reload). A Gateway with no
/// live `Programmed` yet waits for its push.
pub fn early_gateways(
    snapshot: &Snapshot,
    computed: &BTreeMap<ObjectRef, GatewayStatus>,
) -> BTreeMap<ObjectRef, GatewayStatus> {
    computed
        .iter()
        .filter_map(|(key, computed)| {
            let live = snapshot.gateways.get(key).and_then(|g| g.status.as_ref());
            programmed::before_push(computed, live).map(|s| (key.clone(), s))
        })
        .collect()
}

/// What one fleet's push outcome makes of its Gateways' status: the
/// fleet's addresses, and `Programmed` as the push decided, or as it is
/// live while the push is in flight. Returns the fleet's Gateways that
/// have no status to write until their push is done.
pub fn after_push(
    gateways: &mut BTreeMap<ObjectRef, GatewayStatus>,
    snapshot: &Snapshot,
    fleet: &[ObjectRef],
    outcome: &FleetOutcome,
    now: &Time,
) -> Vec<ObjectRef> {
    let mut waiting = Vec::new();
    for gw in fleet {
        let previous = snapshot.gateways.get(gw).and_then(|g| g.status.as_ref());
        let Some(gs) = gateways.get_mut(gw) else {
            continue;
        };
        programmed::fleet_addresses(gs, &outcome.addresses);
        if !outcome.pushed {
            // In flight: Programmed stays as it is live (a new Gateway
            // waits) until the lane's result comes.
            match programmed::before_push(gs, previous) {
                Some(early) => *gs = early,
                None => waiting.push(gw.clone()),
            }
            continue;
        }
        if let Some((reason, message)) = &outcome.not_programmed {
            programmed::not_programmed(gs, *reason, message, previous, now);
        }
    }
    waiting
}

/// The Gateway status the pass writes last. Gateways still waiting for
/// their push are left out. What the status lane wrote is newer than this
/// pass's translate: it is kept, with the `Programmed` condition (and
/// addresses) the push decided.
pub fn merge_lane(
    gateways: &mut BTreeMap<ObjectRef, GatewayStatus>,
    waiting: &[ObjectRef],
    lane: &BTreeMap<ObjectRef, GatewayStatus>,
) {
    for gw in waiting {
        gateways.remove(gw);
    }
    for (key, latest) in lane {
        if let Some(gs) = gateways.get_mut(key)
            && let Some(merged) = programmed::before_push(latest, Some(gs))
        {
            *gs = merged;
        }
    }
}

/// The KengineInstance's status after this pass.
pub fn instance(
    snapshot: &Snapshot,
    key: &ObjectRef,
    fleet: &translate::Fleet,
    outcome: &FleetOutcome,
    report: Option<&InstanceReport>,
    now: &Time,
) -> KengineInstanceStatus {
    let current = snapshot.kengine_instances.get(key);
    let previous = current
        .and_then(|i| i.status.as_ref())
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = current.and_then(|i| i.metadata.generation);
    let hash = config_hash(&fleet.config);
    let loaded = outcome
        .results
        .iter()
        .filter(|r| r.error.is_none() && r.loaded.as_deref() == Some(hash.as_str()))
        .count();
    let failed = outcome.results.iter().filter(|r| r.error.is_some()).count();
    let rollout = report.and_then(|r| r.workload.as_ref()).map(Rollout::of);
    let problems = report.map(|r| r.problems.join("; ")).unwrap_or_default();
    let not_programmed = outcome.not_programmed.as_ref().map(|(_, m)| m.clone());
    let (ready, reason, message) = if !problems.is_empty() {
        (false, InstanceReason::ApplyFailed, problems.clone())
    } else if let Some(message) = not_programmed.clone() {
        (false, InstanceReason::NotReady, message)
    } else if let Some(r) = rollout.filter(|r| r.ready < r.desired || r.desired == 0) {
        (
            false,
            InstanceReason::PodsNotReady,
            format!("{} of {} pods ready", r.ready, r.desired),
        )
    } else {
        (true, InstanceReason::AllPodsLoaded, String::new())
    };
    let progressing = rollout.is_some_and(|r| !r.settled());
    let degraded = if failed > 0 {
        Some((
            InstanceReason::PushFailed,
            not_programmed.unwrap_or_default(),
        ))
    } else if !problems.is_empty() {
        Some((InstanceReason::ApplyFailed, problems))
    } else {
        None
    };
    let mut conditions = vec![
        condition(InstanceCondition::Ready, ready, reason, &message),
        match rollout {
            Some(r) if progressing => condition(
                InstanceCondition::Progressing,
                true,
                InstanceReason::RollingOut,
                &format!(
                    "{} of {} pods updated, {} ready",
                    r.updated, r.desired, r.ready
                ),
            ),
            _ => condition(
                InstanceCondition::Progressing,
                false,
                InstanceReason::Settled,
                "",
            ),
        },
        match &degraded {
            Some((reason, message)) => {
                condition(InstanceCondition::Degraded, true, *reason, message)
            }
            None => condition(
                InstanceCondition::Degraded,
                false,
                InstanceReason::NoFailures,
                "",
            ),
        },
    ];
    if outcome.plain_http {
        conditions.push(condition(
            InstanceCondition::PlainHttpAdmin,
            true,
            InstanceReason::PlainHttpAllowed,
            "allowPlainHttp is set: the admin API and the TLS keys in configs travel unencrypted",
        ));
    }
    let conditions = crate::translate::stamp_conditions(conditions, generation, &previous, now);
    KengineInstanceStatus {
        conditions,
        observed_generation: generation,
        ready_replicas: loaded as i32,
        addresses: outcome.addresses.iter().map(FleetAddress::value).collect(),
        gateways: fleet.gateways.iter().map(ToString::to_string).collect(),
        pods: outcome
            .results
            .iter()
            .map(|r| PodConfigStatus {
                name: r.name.clone(),
                config_hash: r.loaded.clone(),
                message: r.error.clone(),
            })
            .collect(),
    }
}

/// Where a managed fleet's Deployment or DaemonSet stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rollout {
    desired: i64,
    ready: i64,
    updated: i64,
    observed: bool,
}

impl Rollout {
    fn of(workload: &Workload) -> Rollout {
        // Its controller has seen its latest spec.
        let observed =
            |status: Option<i64>, meta: &ObjectMeta| status.is_some() && status == meta.generation;
        let n = |v: Option<i32>| v.map_or(0, i64::from);
        match workload {
            Workload::DaemonSet(ds) => {
                let status = ds.status.as_ref();
                Rollout {
                    desired: n(status.map(|s| s.desired_number_scheduled)),
                    ready: n(status.map(|s| s.number_ready)),
                    updated: n(status.and_then(|s| s.updated_number_scheduled)),
                    observed: observed(status.and_then(|s| s.observed_generation), &ds.metadata),
                }
            }
            Workload::Deployment(d) => {
                let status = d.status.as_ref();
                Rollout {
                    desired: d
                        .spec
                        .as_ref()
                        .and_then(|s| s.replicas)
                        .map_or(1, i64::from),
                    ready: n(status.and_then(|s| s.ready_replicas)),
                    updated: n(status.and_then(|s| s.updated_replicas)),
                    observed: observed(status.and_then(|s| s.observed_generation), &d.metadata),
                }
            }
        }
    }

    fn settled(self) -> bool {
        self.observed && self.updated >= self.desired && self.ready >= self.desired
    }
}

fn condition(
    type_: InstanceCondition,
    status: bool,
    reason: InstanceReason,
    message: &str,
) -> (&'static str, bool, &'static str, String) {
    (type_.as_str(), status, reason.as_str(), message.to_string())
}

#[cfg(test)]
mod tests {
    use gateway_api::apis::experimental::gateways::Gateway;
    use serde_json::{Value, json};

    use super::*;

    fn key(name: &str) -> ObjectRef {
        ObjectRef::new("ns", name)
    }

    /// A Gateway status with `Programmed` as given (`None`: no such
    /// condition), its listener's attachedRoutes, and an address if given.
    fn status(programmed: Option<&str>, attached: i32, address: Option<&str>) -> GatewayStatus {
        let condition = |t: &str, s: &str| {
            json!({"type": t, "status": s, "reason": "R", "message": t, "observedGeneration": 1,
                "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        let mut conditions = vec![condition("Accepted", "True")];
        conditions.extend(programmed.map(|p| condition("Programmed", p)));
        serde_json::from_value(json!({
            "conditions": conditions,
            "listeners": [{"name": "http", "attachedRoutes": attached, "supportedKinds": [], "conditions": []}],
            "addresses": address.map(|a| json!([{"type": "IPAddress", "value": a}])),
        }))
        .unwrap()
    }

    fn programmed(s: &GatewayStatus) -> Option<(String, String)> {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Programmed")
            .map(|c| (c.status.clone(), c.reason.clone()))
    }

    fn attached(s: &GatewayStatus) -> i32 {
        s.listeners.as_ref().unwrap()[0].attached_routes
    }

    /// A snapshot of Gateways with their live status.
    fn snapshot(live: &[(&str, Option<GatewayStatus>)]) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for (name, status) in live {
            let gateway: Gateway = serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": {"namespace": "ns", "name": name},
                "spec": {"gatewayClassName": "kengine", "listeners": []},
                "status": status,
            }))
            .unwrap();
            snapshot.gateways.insert(key(name), gateway);
        }
        snapshot
    }

    fn outcome(pushed: bool, not_programmed: Option<(Reason, &str)>) -> FleetOutcome {
        FleetOutcome {
            pushed,
            not_programmed: not_programmed.map(|(r, m)| (r, m.to_string())),
            addresses: vec![FleetAddress::Ip("10.96.0.7".parse().unwrap())],
            results: Vec::new(),
            plain_http: false,
        }
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    #[test]
    fn managed_fleets_without_gateways_get_an_empty_config() {
        let mut translated = BTreeMap::new();
        translated.insert(
            key("shared"),
            translate::Fleet {
                gateways: vec![key("a")],
                ..Default::default()
            },
        );
        let managed = [key("shared"), key("idle")];
        let fleets = fleets(translated, &managed);
        assert_eq!(
            fleets.keys().collect::<Vec<_>>(),
            [&key("idle"), &key("shared")]
        );
        assert_eq!(
            fleets[&key("shared")].gateways,
            [key("a")],
            "translate's kept"
        );
        assert!(fleets[&key("idle")].gateways.is_empty());
    }

    #[test]
    fn early_status_keeps_live_programmed_and_leaves_new_gateways_out() {
        let live = snapshot(&[
            ("old", Some(status(Some("False"), 1, Some("10.0.0.1")))),
            ("new", None),
            ("unprogrammed", Some(status(None, 1, None))),
        ]);
        let computed: BTreeMap<_, _> = ["old", "new", "unprogrammed", "unwatched"]
            .into_iter()
            .map(|n| (key(n), status(Some("True"), 7, None)))
            .collect();
        let early = early_gateways(&live, &computed);
        assert_eq!(early.keys().collect::<Vec<_>>(), [&key("old")]);
        let old = &early[&key("old")];
        assert_eq!(programmed(old).unwrap().0, "False", "as live");
        assert_eq!(attached(old), 7, "as computed");
        assert_eq!(old.addresses, status(None, 0, Some("10.0.0.1")).addresses);
    }

    #[test]
    fn a_done_push_decides_programmed_and_one_in_flight_keeps_it_live() {
        let live = snapshot(&[("a", Some(status(Some("True"), 1, None))), ("b", None)]);
        let fleet = [key("a"), key("b"), key("gone")];
        let computed = || -> BTreeMap<_, _> {
            [key("a"), key("b")]
                .into_iter()
                .map(|k| (k, status(Some("True"), 5, None)))
                .collect()
        };

        // Done and failed: Programmed False, with the fleet's addresses.
        let mut gateways = computed();
        let failed = outcome(true, Some((Reason::Invalid, "rejected")));
        let waiting = after_push(&mut gateways, &live, &fleet, &failed, &now());
        assert!(waiting.is_empty());
        for gs in gateways.values() {
            assert_eq!(programmed(gs).unwrap(), ("False".into(), "Invalid".into()));
            assert_eq!(gs.addresses.as_ref().unwrap()[0].value, "10.96.0.7");
        }

        // Done and loaded: as translate computed it.
        let mut gateways = computed();
        let waiting = after_push(&mut gateways, &live, &fleet, &outcome(true, None), &now());
        assert!(waiting.is_empty());
        assert_eq!(programmed(&gateways[&key("b")]).unwrap().0, "True");

        // In flight: a keeps its live Programmed (with this pass's
        // attachedRoutes); b, new, waits for its push.
        let mut gateways = computed();
        let live_a = status(Some("False"), 1, None);
        let live = snapshot(&[("a", Some(live_a)), ("b", None)]);
        let waiting = after_push(&mut gateways, &live, &fleet, &outcome(false, None), &now());
        assert_eq!(waiting, [key("b")]);
        assert_eq!(programmed(&gateways[&key("a")]).unwrap().0, "False");
        assert_eq!(attached(&gateways[&key("a")]), 5);
    }

    #[test]
    fn the_lanes_newer_status_is_kept_with_the_pushs_programmed() {
        let mut gateways: BTreeMap<_, _> = [
            (key("a"), status(Some("False"), 1, Some("10.96.0.7"))),
            (key("waiting"), status(Some("True"), 1, None)),
            (key("unprogrammed"), status(None, 1, None)),
        ]
        .into_iter()
        .collect();
        let lane: BTreeMap<_, _> = [
            (key("a"), status(Some("True"), 9, None)),
            (key("waiting"), status(Some("True"), 9, None)),
            (key("unprogrammed"), status(Some("True"), 9, None)),
            (key("lane-only"), status(Some("True"), 9, None)),
        ]
        .into_iter()
        .collect();
        merge_lane(&mut gateways, &[key("waiting")], &lane);
        assert_eq!(
            gateways.keys().collect::<Vec<_>>(),
            [&key("a"), &key("unprogrammed")],
            "waiting Gateways are left out, and nothing is added"
        );
        let a = &gateways[&key("a")];
        assert_eq!(attached(a), 9, "the lane's is newer");
        assert_eq!(programmed(a).unwrap().0, "False", "as the push decided");
        assert_eq!(a.addresses.as_ref().unwrap()[0].value, "10.96.0.7");
        // Without a Programmed condition to keep, the pass's own stays.
        assert_eq!(attached(&gateways[&key("unprogrammed")]), 1);
    }

    fn workload(value: Value) -> Workload {
        match value["kind"].as_str() {
            Some("DaemonSet") => Workload::DaemonSet(serde_json::from_value(value).unwrap()),
            _ => Workload::Deployment(serde_json::from_value(value).unwrap()),
        }
    }

    #[test]
    fn rollouts_read_deployments_and_daemonsets() {
        let deployment = workload(json!({
            "kind": "Deployment",
            "metadata": {"name": "d", "generation": 3},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": {"observedGeneration": 3, "readyReplicas": 2, "updatedReplicas": 3},
        }));
        let r = Rollout::of(&deployment);
        assert_eq!(
            r,
            Rollout {
                desired: 3,
                ready: 2,
                updated: 3,
                observed: true
            }
        );
        assert!(!r.settled(), "a pod is not ready");
        // No replicas: one; no status: nothing observed.
        let fresh = workload(json!({
            "kind": "Deployment",
            "metadata": {"name": "d", "generation": 1},
            "spec": {"selector": {}, "template": {}},
        }));
        assert_eq!(
            Rollout::of(&fresh),
            Rollout {
                desired: 1,
                ready: 0,
                updated: 0,
                observed: false
            }
        );
        let daemonset = workload(json!({
            "kind": "DaemonSet",
            "metadata": {"name": "d", "generation": 2},
            "spec": {"selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 4, "numberReady": 4,
                "updatedNumberScheduled": 4, "currentNumberScheduled": 4, "numberMisscheduled": 0},
        }));
        let r = Rollout::of(&daemonset);
        assert_eq!((r.desired, r.ready, r.updated), (4, 4, 4));
        assert!(!r.observed, "generation 2 not seen yet");
        assert!(!r.settled());
    }

    #[test]
    fn an_instance_rolling_out_is_progressing_and_not_ready() {
        let fleet = translate::Fleet {
            gateways: vec![key("a")],
            ..Default::default()
        };
        let report = InstanceReport {
            workload: Some(workload(json!({
                "kind": "Deployment",
                "metadata": {"name": "d", "generation": 2},
                "spec": {"replicas": 2, "selector": {}, "template": {}},
                "status": {"observedGeneration": 2, "readyReplicas": 1, "updatedReplicas": 1},
            }))),
            ..Default::default()
        };
        let status = instance(
            &Snapshot::default(),
            &key("fleet"),
            &fleet,
            &outcome(true, None),
            Some(&report),
            &now(),
        );
        let find = |t: &str| {
            let c = status.conditions.iter().find(|c| c.type_ == t).unwrap();
            (c.status.as_str(), c.reason.as_str(), c.message.as_str())
        };
        assert_eq!(
            find("Ready"),
            ("False", "PodsNotReady", "1 of 2 pods ready")
        );
        assert_eq!(
            find("Progressing"),
            ("True", "RollingOut", "1 of 2 pods updated, 1 ready")
        );
        assert_eq!(find("Degraded").0, "False");
        assert_eq!(status.gateways, ["ns/a"]);
        assert_eq!(status.addresses, ["10.96.0.7"]);
    }
}
