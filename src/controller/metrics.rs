//! Prometheus metrics of the controller.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FleetLabel {
    pub fleet: String,
}

/// Per fleet and outcome, never per pod: pod names change on every
/// rollout, so their series would grow without bound.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabel {
    pub fleet: String,
    /// `PushOutcome::label`: loaded, unchanged, rejected, timeout, unreachable.
    pub outcome: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub status_lane_passes: Counter,
    pub reconcile_seconds: Histogram,
    pub pushes: Family<PushLabel, Counter>,
    pub config_bytes: Family<FleetLabel, Gauge>,
    pub status_writes: Family<ResultLabel, Counter>,
    pub generated_writes: Family<ResultLabel, Counter>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kengine_gateway");
        let reconciles = Counter::default();
        let status_lane_passes = Counter::default();
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let pushes = Family::<PushLabel, Counter>::default();
        let config_bytes = Family::<FleetLabel, Gauge>::default();
        let status_writes = Family::<ResultLabel, Counter>::default();
        let generated_writes = Family::<ResultLabel, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "status_lane_passes",
            "Gateway status passes run while a reconcile's pushes were in flight",
            status_lane_passes.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time from snapshot to the last status write",
            reconcile_seconds.clone(),
        );
        registry.register(
            "pushes",
            "Config pushes to pods, per fleet and outcome (loaded, unchanged, rejected, timeout, unreachable)",
            pushes.clone(),
        );
        registry.register(
            "config_bytes",
            "Size of each fleet's config",
            config_bytes.clone(),
        );
        registry.register(
            "status_writes",
            "Status writes by result (written, unchanged, failed)",
            status_writes.clone(),
        );
        registry.register(
            "generated_writes",
            "Writes of objects the operator generates for managed fleets (applied, deleted)",
            generated_writes.clone(),
        );
        registry.register("leader", "1 while this replica leads", leader.clone());
        Metrics {
            registry,
            reconciles,
            status_lane_passes,
            reconcile_seconds,
            pushes,
            config_bytes,
            status_writes,
            generated_writes,
            leader,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("metrics encode");
        out
    }
}
