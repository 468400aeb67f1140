//! One reconcile pass: snapshot → translate → apply infrastructure → push
//! every fleet → status. This is the pass's I/O; the steps between, which
//! only compute, are in [`super::pass`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_api::apis::experimental::gateways::GatewayStatus;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::Instrument as _;

use super::metrics::{FleetLabel, Metrics, PushLabel, ResultLabel};
use super::pass::{self, FleetOutcome};
use super::status_lane;
use super::targets::Clients;
use crate::cli::ControllerArgs;
use crate::crd::KengineInstanceStatus;
use crate::kengine::Flavor;
use crate::kengine::PushFailure;
use crate::operator::workloads::Settings;
use crate::operator::{self, InstanceReport, OWNED_KINDS, Operator, pki};
use crate::providers::kubernetes::{Served, Watches};
use crate::sinks::fleet::{PodResult, PushOutcome};
use crate::sinks::fleet_lanes::{Done, Lanes, Progress};
use crate::sinks::status_writer::{StatusWriter, Writes};
use crate::snapshot::{ObjectRef, Snapshot};
use crate::translate::programmed::{self, FleetPush};
use crate::translate::{self, FleetMode, Options};

pub struct Reconciler {
    client: Client,
    controller_name: String,
    flavor: Flavor,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    writer: Option<Arc<StatusWriter>>,
    missing: BTreeSet<String>,
    /// One push task per fleet; a pass never waits for a push.
    lanes: Lanes,
    clients: Clients,
    /// Runs managed fleets; `None` with `--manage-fleets=false`.
    operator: Option<Operator>,
    /// Last error reported per pod, so an Event is emitted once per problem.
    reported: BTreeMap<String, String>,
}

/// What the status writes that do not wait for a push came to.
struct GatewayWrites {
    writes: Writes,
    /// Each Gateway's status as last written in this pass.
    written: BTreeMap<ObjectRef, GatewayStatus>,
    lane: status_lane::Lane,
}

/// What handing every fleet its config came to.
#[derive(Default)]
struct PushResults {
    /// The fleets' target pods, by uid: their admin clients are kept.
    live_pods: Vec<String>,
    /// The status of each KengineInstance whose push is done.
    instance_status: Vec<(ObjectRef, KengineInstanceStatus)>,
    /// Gateways with no status to write until their push is done.
    waiting: Vec<ObjectRef>,
}

impl Reconciler {
    pub fn new(client: Client, args: &ControllerArgs, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: "kengine-gateway".into(),
            instance: args.identity.clone(),
        };
        Reconciler {
            recorder: Recorder::new(client.clone(), reporter),
            client: client.clone(),
            controller_name: args.controller_name.clone(),
            flavor: args.flavor,
            lanes: Lanes::new(args.push_concurrency, observer(metrics.clone())),
            metrics,
            writer: None,
            missing: BTreeSet::new(),
            clients: Clients::default(),
            operator: args
                .manage_fleets
                .then(|| Operator::new(client.clone(), settings(args), lifetimes(args))),
            reported: BTreeMap::new(),
        }
    }

    /// Fires when a fleet's push finished with a new result: a pass
    /// should run to write what it means.
    pub fn pushed(&self) -> Arc<Notify> {
        self.lanes.pushed()
    }

    /// Stops every push (this replica no longer leads).
    pub fn stand_down(&mut self) {
        self.lanes.clear();
    }

    pub fn set_served(&mut self, served: &Served) {
        self.missing = served.missing.clone();
        self.writer = Some(Arc::new(StatusWriter::new(
            self.client.clone(),
            self.controller_name.clone(),
            &served.resources,
        )));
    }

    /// One pass, in steps: translate, apply the fleets' infrastructure,
    /// write the status that does not wait for a push while the pushes run,
    /// then the status the pushes decide. Changes that arrive while its
    /// pushes run are taken by the status lane; `true` means it took some
    /// and another pass must follow.
    #[tracing::instrument(name = "reconcile", skip_all)]
    pub async fn reconcile(
        &mut self,
        watches: &Watches,
        changes: &mut mpsc::Receiver<()>,
        debounce: Duration,
    ) -> bool {
        let started = Instant::now();
        self.metrics.reconciles.inc();
        let snapshot = watches.snapshot();
        let pods = pods(watches);
        let now = super::now();
        let options = self.options(&now);
        let mut output =
            tracing::info_span!("translate").in_scope(|| translate::translate(&snapshot, &options));
        let reports = self
            .apply_infrastructure(&snapshot, watches, &output.fleets)
            .instrument(tracing::info_span!("apply_infrastructure"))
            .await;
        let fleets = pass::fleets(std::mem::take(&mut output.fleets), reports.keys());
        let mut gateways = std::mem::take(&mut output.status.gateways);
        let early = pass::early_gateways(&snapshot, &gateways);

        // While the pushes and the route writes (many) run, classes and
        // Gateways are written as they stand before a push, and the status
        // lane keeps the Gateways current until `pass_done`.
        let writer = self.writer.clone();
        let (pass_done, pass_done_rx) = oneshot::channel();
        let lane = status_lane::Inputs {
            watches,
            options: &options,
            debounce,
            changes,
        };
        let gateway_writes = write_early(
            writer.as_deref(),
            &snapshot,
            &output.status,
            &early,
            lane,
            pass_done_rx,
        );
        let route_writes = write_routes(writer.as_deref(), &snapshot, &output.status);
        let pushes = self.push_fleets(&snapshot, &pods, &fleets, &mut gateways, &reports, &now);
        let in_flight = async {
            let done = tokio::join!(route_writes, pushes);
            let _ = pass_done.send(());
            done
        };
        let (mut status_writes, (route_writes, pushed)) = tokio::join!(gateway_writes, in_flight);

        status_writes.writes += route_writes;
        let lane_passes = status_writes.lane.iterations;
        self.metrics.status_lane_passes.inc_by(lane_passes as u64);
        pass::merge_lane(&mut gateways, &pushed.waiting, &status_writes.lane.latest);
        // Lanes of fleets that are gone end (each lane forgets its own
        // pods that are gone).
        self.lanes.retain(|k| fleets.contains_key(k));
        self.clients.retain(&pushed.live_pods);
        self.write_status(
            &snapshot,
            &gateways,
            status_writes,
            &pushed.instance_status,
            fleets.len(),
            started,
        )
        .await;
        self.metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        lane_passes > 0
    }

    /// Hands every fleet its config and reads what each push came to:
    /// its Gateways' status (in `gateways`), an Event per new pod failure,
    /// and its KengineInstance's status once the push is done.
    async fn push_fleets(
        &mut self,
        snapshot: &Snapshot,
        pods: &[Pod],
        fleets: &BTreeMap<ObjectRef, translate::Fleet>,
        gateways: &mut BTreeMap<ObjectRef, GatewayStatus>,
        reports: &BTreeMap<ObjectRef, InstanceReport>,
        now: &Time,
    ) -> PushResults {
        let mut pushed = PushResults::default();
        let outcomes = self.submit_all(snapshot, pods, fleets, &mut pushed.live_pods);
        for ((key, fleet), outcome) in fleets.iter().zip(outcomes) {
            let waiting = pass::after_push(gateways, snapshot, &fleet.gateways, &outcome, now);
            pushed.waiting.extend(waiting);
            if !outcome.pushed {
                continue;
            }
            self.report(snapshot, &fleet.gateways, &outcome.results)
                .await;
            if snapshot.kengine_instances.contains_key(key) {
                let report = reports.get(key);
                let status = pass::instance(snapshot, key, fleet, &outcome, report, now);
                pushed.instance_status.push((key.clone(), status));
            }
        }
        pushed
    }

    /// The status the pushes decide: each Gateway's (compared with what
    /// this pass wrote already) and each KengineInstance's; then the
    /// pass's status writes are counted.
    async fn write_status(
        &self,
        snapshot: &Snapshot,
        gateways: &BTreeMap<ObjectRef, GatewayStatus>,
        done: GatewayWrites,
        instance_status: &[(ObjectRef, KengineInstanceStatus)],
        fleets: usize,
        started: Instant,
    ) {
        let Some(writer) = &self.writer else {
            return;
        };
        let GatewayWrites {
            mut writes,
            mut written,
            lane,
        } = done;
        writes += lane.writes;
        writes += writer
            .write_gateways(snapshot, gateways, &mut written)
            .instrument(tracing::info_span!("write_status"))
            .await;
        let instances = writer.write_instances(snapshot, instance_status).await;
        tracing::debug!(fleets, ?writes, ?instances, lane = lane.iterations, elapsed = ?started.elapsed(), "reconciled");
        self.count_status_writes(writes, instances);
    }

    /// Translate's options for a pass of the controller.
    fn options(&self, now: &Time) -> Options {
        Options {
            controller_name: self.controller_name.clone(),
            flavor: self.flavor,
            now: now.clone(),
            usable_addresses: None,
            fleets: FleetMode::Instances,
            missing_kinds: self.missing.clone(),
            taken_listens: Default::default(),
            // Managed fleets' files are at FLEET_FILES_DIR; no local Kengine.
            files_dir: Default::default(),
        }
    }

    /// The operator's step: the objects of every managed fleet, as
    /// translate planned them; what each instance's objects came to.
    async fn apply_infrastructure(
        &mut self,
        snapshot: &Snapshot,
        watches: &Watches,
        fleets: &BTreeMap<ObjectRef, translate::Fleet>,
    ) -> BTreeMap<ObjectRef, InstanceReport> {
        let Some(operator) = &mut self.operator else {
            return BTreeMap::new();
        };
        let live = generated(watches);
        let (reports, counts) = operator.reconcile(snapshot, &live, fleets).await;
        for (result, n) in [("applied", counts.applied), ("deleted", counts.deleted)] {
            self.metrics
                .generated_writes
                .get_or_create(&ResultLabel {
                    result: result.into(),
                })
                .inc_by(n);
        }
        self.instance_events(snapshot, &reports).await;
        reports
    }

    fn count_status_writes(&self, writes: Writes, instances: Writes) {
        for (result, n) in [
            ("written", writes.written + instances.written),
            ("unchanged", writes.unchanged + instances.unchanged),
            ("failed", writes.failed + instances.failed),
        ] {
            self.metrics
                .status_writes
                .get_or_create(&ResultLabel {
                    result: result.into(),
                })
                .inc_by(n);
        }
    }

    /// Hands every fleet's config to its lane, never waiting for a push,
    /// so a slow or hung fleet holds up no other fleet's config. One
    /// outcome per fleet, in `fleets` order: the push's, when the lane has
    /// pushed this config to these pods.
    fn submit_all(
        &mut self,
        snapshot: &Snapshot,
        pods: &[Pod],
        fleets: &BTreeMap<ObjectRef, translate::Fleet>,
        live: &mut Vec<String>,
    ) -> Vec<FleetOutcome> {
        let mut outcomes = Vec::with_capacity(fleets.len());
        for (key, fleet) in fleets {
            let targets = self
                .clients
                .fleet(snapshot, pods, key, Duration::from_secs(60));
            live.extend(targets.pods.iter().map(|p| p.uid.clone()));
            self.metrics
                .config_bytes
                .get_or_create(&FleetLabel {
                    fleet: key.to_string(),
                })
                .set(fleet.config.to_json().len() as i64);
            let progress = self
                .lanes
                .submit(key, &fleet.config, &fleet.files, &targets.pods);
            outcomes.push(match progress {
                Progress::Pushed(done) => outcome(key, targets, done.results.clone()),
                // Nothing to push to: the outcome is known now.
                Progress::InFlight if targets.pods.is_empty() => outcome(key, targets, Vec::new()),
                Progress::InFlight => FleetOutcome {
                    pushed: false,
                    not_programmed: None,
                    addresses: targets.addresses,
                    results: Vec::new(),
                    plain_http: targets.plain_http,
                },
            });
        }
        outcomes
    }

    /// Events on managed KengineInstances: certificates issued, and a
    /// Warning once per new apply problem.
    async fn instance_events(
        &mut self,
        snapshot: &Snapshot,
        reports: &BTreeMap<ObjectRef, InstanceReport>,
    ) {
        for (key, report) in reports {
            let Some(instance) = snapshot.kengine_instances.get(key) else {
                continue;
            };
            let reference = kube::Resource::object_ref(instance, &());
            let mut events = Vec::new();
            for secret in &report.issued {
                events.push(event(
                    EventType::Normal,
                    "CertificateIssued",
                    "IssueCertificate",
                    &format!("admin certificate written to Secret {secret}"),
                ));
            }
            let problem = report.problems.join("; ");
            let seen = format!("instance {key}");
            if problem.is_empty() {
                self.reported.remove(&seen);
            } else if self.reported.get(&seen) != Some(&problem) {
                self.reported.insert(seen, problem.clone());
                tracing::warn!(instance = %key, "{problem}");
                events.push(event(
                    EventType::Warning,
                    "ApplyFailed",
                    "Reconcile",
                    &problem,
                ));
            }
            for event in events {
                if let Err(e) = self.recorder.publish(&event, &reference).await {
                    tracing::warn!("publishing event: {e}");
                }
            }
        }
    }

    /// A Warning Event on each Gateway of the fleet when a pod's push fails
    /// with a new error.
    async fn report(&mut self, snapshot: &Snapshot, gateways: &[ObjectRef], results: &[PodResult]) {
        for r in results {
            let Some(error) = &r.error else {
                self.reported.remove(&r.name);
                continue;
            };
            if self.reported.get(&r.name) == Some(error) {
                continue;
            }
            self.reported.insert(r.name.clone(), error.clone());
            let event = push_failed(&r.name, r.outcome, error);
            for gw in gateways {
                let Some(gateway) = snapshot.gateways.get(gw) else {
                    continue;
                };
                let reference = kube::Resource::object_ref(gateway, &());
                if let Err(e) = self.recorder.publish(&event, &reference).await {
                    tracing::warn!("publishing event: {e}");
                }
            }
            tracing::warn!(pod = r.name, "{error}");
        }
    }
}

/// The watched Pods, typed.
fn pods(watches: &Watches) -> Vec<Pod> {
    watches
        .values("Pod")
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

/// The status that does not wait for a push: classes, then each Gateway
/// as it stands before its push (`early`); then the status lane keeps the
/// Gateways current until `pass_done` fires.
async fn write_early(
    writer: Option<&StatusWriter>,
    snapshot: &Snapshot,
    status: &translate::Status,
    early: &BTreeMap<ObjectRef, GatewayStatus>,
    lane: status_lane::Inputs<'_>,
    pass_done: oneshot::Receiver<()>,
) -> GatewayWrites {
    let mut done = GatewayWrites {
        writes: Writes::default(),
        written: BTreeMap::new(),
        lane: status_lane::Lane::default(),
    };
    if let Some(writer) = writer {
        done.writes += writer
            .write_classes(snapshot, &status.gateway_classes)
            .await;
        done.writes += writer
            .write_gateways(snapshot, early, &mut done.written)
            .await;
        done.lane = status_lane::run(writer, lane, &mut done.written, pass_done).await;
    }
    done
}

/// The routes' and policies' status (it does not wait for a push).
async fn write_routes(
    writer: Option<&StatusWriter>,
    snapshot: &Snapshot,
    status: &translate::Status,
) -> Writes {
    let Some(writer) = writer else {
        return Writes::default();
    };
    let mut writes = writer.write_routes(snapshot, &status.http_routes).await;
    writes += writer
        .write_grpc_routes(snapshot, &status.grpc_routes)
        .await;
    writes += writer
        .write_backend_tls_policies(snapshot, &status.backend_tls_policies)
        .await;
    writes
}

/// What one fleet's push means for its Gateways.
fn outcome(
    key: &ObjectRef,
    targets: super::targets::Fleet,
    results: Vec<PodResult>,
) -> FleetOutcome {
    if let Some(problem) = &targets.problem {
        tracing::debug!(fleet = %key, "{problem}");
    }
    let failures = failure_summary(&results);
    let push = match (&targets.problem, targets.pods.is_empty()) {
        (Some(problem), _) => FleetPush::Problem(problem),
        (None, true) => FleetPush::NoReadyPods,
        (None, false) if !failures.is_empty() => FleetPush::Failed(&failures),
        (None, false) => FleetPush::Loaded,
    };
    let not_programmed = programmed::verdict(key, push);
    FleetOutcome {
        pushed: true,
        not_programmed,
        addresses: targets.addresses,
        results,
        plain_http: targets.plain_http,
    }
}

/// Counts and logs each finished push, in its fleet's lane: once per push,
/// however many passes read the result.
fn observer(metrics: Arc<Metrics>) -> crate::sinks::fleet_lanes::Observer {
    Arc::new(move |key: &ObjectRef, done: &Done| {
        if done.counts.loaded > 0 {
            tracing::info!(fleet = %key, pods = done.counts.loaded, "config loaded");
        }
        for r in &done.results {
            metrics
                .pushes
                .get_or_create(&PushLabel {
                    fleet: key.to_string(),
                    outcome: r.outcome.label().into(),
                })
                .inc();
        }
    })
}

/// An Event whose note the API server accepts: a longer one would be
/// refused, and the warning lost.
fn event(type_: EventType, reason: &str, action: &str, note: &str) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(crate::sinks::message::event_note(note)),
        action: action.into(),
        secondary: None,
    }
}

/// The Warning on a fleet's Gateways when a pod's push fails: Kengine's
/// refusal is told apart from a push that did not get through.
fn push_failed(pod: &str, outcome: PushOutcome, error: &str) -> Event {
    let reason = match outcome {
        PushOutcome::Failed(PushFailure::Rejected | PushFailure::Unloadable) => "ConfigRejected",
        _ => "PushFailed",
    };
    event(
        EventType::Warning,
        reason,
        "PushConfig",
        &format!("pod {pod}: {error}"),
    )
}

/// The operator's settings from the controller's flags (also what `render
/// --output objects` uses, with the flags' defaults).
pub fn settings(args: &ControllerArgs) -> Settings {
    Settings {
        flavor: args.flavor,
        kengine_image: args.kengine_image.clone(),
        proxy_image: args.admin_proxy_image.clone(),
        operator_namespace: args.operator_namespace.clone(),
        operator_labels: args.operator_pod_labels.clone(),
        client_name: pki::CLIENT_NAME.to_string(),
        pull_policy: args.fleet_image_pull_policy.clone(),
        pull_secrets: args.fleet_image_pull_secrets.clone(),
    }
}

fn lifetimes(args: &ControllerArgs) -> pki::Lifetimes {
    pki::Lifetimes {
        ca: Duration::from_secs(args.admin_ca_lifetime),
        leaf: Duration::from_secs(args.admin_cert_lifetime),
    }
}

/// The watched objects the operator generated, by `apiVersion/kind ns/name`.
fn generated(watches: &Watches) -> HashMap<operator::ObjectId, Value> {
    let kinds = OWNED_KINDS.iter().map(|(_, k)| *k).chain(["Secret"]);
    kinds
        .flat_map(|kind| watches.values(kind))
        .filter(|v| v["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kengine-gateway")
        .map(|v| (operator::object_key(&v), v))
        .collect()
}

/// The pods' push failures in one message of bounded size: how many
/// failed, then the first error of each kind (Kengine's body, cut), so a
/// fleet of many pods failing alike says it once. Empty when none failed.
fn failure_summary(results: &[PodResult]) -> String {
    const EACH: usize = 2048;
    let failed: Vec<&PodResult> = results.iter().filter(|r| r.error.is_some()).collect();
    let error = |r: &PodResult| {
        crate::sinks::message::bounded(r.error.as_deref().unwrap_or_default(), EACH)
    };
    if let [only] = failed[..] {
        return format!("pod {}: {}", only.name, error(only));
    }
    if failed.is_empty() {
        return String::new();
    }
    let mut seen = Vec::new();
    let mut parts = Vec::new();
    for r in &failed {
        if seen.contains(&r.outcome) {
            continue;
        }
        seen.push(r.outcome);
        let alike = failed.iter().filter(|o| o.outcome == r.outcome).count() - 1;
        let others = if alike > 0 {
            format!(" (and {alike} more alike)")
        } else {
            String::new()
        };
        parts.push(format!("pod {}: {}{others}", r.name, error(r)));
    }
    format!(
        "{} of {} pods failed: {}",
        failed.len(),
        results.len(),
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kengine::PushFailure;
    use crate::sinks::fleet::PushOutcome;

    fn result(name: &str, failure: Option<PushFailure>, body: &str) -> PodResult {
        PodResult {
            name: name.into(),
            loaded: None,
            error: failure.map(|_| body.to_string()),
            outcome: failure.map_or(PushOutcome::Loaded, PushOutcome::Failed),
        }
    }

    #[test]
    fn many_failing_pods_make_one_short_message() {
        // Kengine's full error body, from every pod of a large fleet.
        let body = format!(
            "kengine rejected the config (HTTP 400): {}",
            "x".repeat(50_000)
        );
        let mut results: Vec<PodResult> = (0..100)
            .map(|i| result(&format!("pod-{i}"), Some(PushFailure::Rejected), &body))
            .collect();
        results.push(result("slow", Some(PushFailure::Timeout), "timed out"));
        results.push(result("fine", None, ""));
        let message = failure_summary(&results);
        assert!(message.chars().count() < 5_000, "{}", message.len());
        assert!(
            message.starts_with("101 of 102 pods failed: pod pod-0: kengine rejected"),
            "{message}"
        );
        assert!(message.contains("(and 99 more alike)"), "{message}");
        assert!(message.contains("pod slow: timed out"), "{message}");
        assert_eq!(failure_summary(&results[100..]), "pod slow: timed out");
        assert_eq!(failure_summary(&results[101..]), "");
    }

    #[test]
    fn event_notes_of_a_long_multi_pod_failure_fit_the_api_servers_limit() {
        let body = format!(
            "kengine rejected the config (HTTP 400): {}",
            "é".repeat(50_000)
        );
        let results: Vec<PodResult> = (0..50)
            .map(|i| result(&format!("pod-{i}"), Some(PushFailure::Rejected), &body))
            .collect();
        for r in &results {
            let event = push_failed(&r.name, r.outcome, r.error.as_deref().unwrap());
            let note = event.note.unwrap();
            assert!(note.len() <= 1024, "{} bytes", note.len());
            assert!(
                note.starts_with(&format!("pod {}: kengine rejected", r.name)),
                "{note}"
            );
            assert_eq!(event.reason, "ConfigRejected");
        }
        let timeout = result("slow", Some(PushFailure::Timeout), "timed out");
        let slow = push_failed("slow", timeout.outcome, "timed out");
        assert_eq!(slow.reason, "PushFailed", "not a refusal");
        // The operator's problems of a fleet, joined.
        let problems = vec!["applying Deployment: ".to_string() + &"x".repeat(5_000); 10];
        let event = event(
            EventType::Warning,
            "ApplyFailed",
            "Reconcile",
            &problems.join("; "),
        );
        assert!(event.note.unwrap().len() <= 1024);
    }
}
