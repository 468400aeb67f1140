//! The fleet reconciler: turns each managed `KengineInstance` into the
//! workloads, Services, Secrets and policies that run its Kengine pods, and
//! creates the per-Gateway instances of Gateways that name none.
//!
//! It runs inside the controller's reconcile pass (leader only), after
//! translate: the fleets translate assigns decide the Service ports and
//! the propagated infrastructure metadata.

mod apply;
pub mod inputs;
pub mod pki;
pub mod preview;
pub mod workloads;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use serde_json::Value;

use crate::crd::KengineInstance;
use crate::snapshot::{ObjectRef, Snapshot};
use crate::translate::Fleet;
use apply::Applier;
pub use apply::key as object_key;
pub use apply::{Counts, ObjectId};
use workloads::{INSTANCE_LABEL, Infrastructure, Names, Owned, Settings, Workload};

/// The kinds the operator generates (besides Secrets and KengineInstances),
/// as (apiVersion, kind).
pub const OWNED_KINDS: &[(&str, &str)] = &[
    kind::<ServiceAccount>(),
    kind::<Deployment>(),
    kind::<DaemonSet>(),
    kind::<Service>(),
    kind::<PodDisruptionBudget>(),
    kind::<NetworkPolicy>(),
];

const fn kind<K: k8s_openapi::Resource>() -> (&'static str, &'static str) {
    (K::API_VERSION, K::KIND)
}

/// What happened to one instance in a pass.
#[derive(Debug, Default, Clone)]
pub struct InstanceReport {
    /// Errors applying its objects or issuing its certificates.
    pub problems: Vec<String>,
    /// Secrets (re)issued in this pass.
    pub issued: Vec<String>,
    /// The live Deployment or DaemonSet after the pass: the API server's
    /// answer, or the watched copy when it was in place.
    pub workload: Option<Workload>,
}

pub struct Operator {
    client: Client,
    settings: Settings,
    lifetimes: pki::Lifetimes,
    applier: Applier,
    /// Secrets written but not yet seen in the watch cache: (resourceVersion,
    /// when). Certificates are never planned from a stale cache, which would
    /// mint a second CA.
    pending: HashMap<ObjectId, (String, Instant)>,
}

impl Operator {
    pub fn new(client: Client, settings: Settings, lifetimes: pki::Lifetimes) -> Self {
        Operator {
            client,
            settings,
            lifetimes,
            applier: Applier::default(),
            pending: HashMap::new(),
        }
    }

    /// One pass. `live` holds every watched object the operator generated,
    /// by [`apply::key`].
    pub async fn reconcile(
        &mut self,
        snapshot: &Snapshot,
        live: &HashMap<ObjectId, Value>,
        fleets: &BTreeMap<ObjectRef, Fleet>,
    ) -> (BTreeMap<ObjectRef, InstanceReport>, Counts) {
        let mut counts = Counts::default();
        let mut reports: BTreeMap<ObjectRef, InstanceReport> = BTreeMap::new();
        let client = self.client.clone();

        for (key, desired) in inputs::gateway_instances(snapshot, fleets) {
            if snapshot.kengine_instances.contains_key(&key) {
                continue;
            }
            // JSON: only the fields the operator owns (see `inputs`).
            let id = apply::key(&desired);
            if let Err(e) = self
                .applier
                .apply_as::<KengineInstance>(&client, &id, &desired, None, &mut counts)
                .await
            {
                tracing::warn!(gateway = %key, "creating its KengineInstance: {e}");
            }
        }
        for key in inputs::orphaned_instances(snapshot, fleets) {
            let id = ObjectId::new::<KengineInstance>(&key.namespace, &key.name);
            if let Err(e) = self.applier.delete(&client, &id, &mut counts).await {
                tracing::warn!(instance = %key, "{e}");
            }
        }

        let mut wanted: HashSet<ObjectId> = HashSet::new();
        for (id, instance) in &snapshot.kengine_instances {
            if !instance.spec.mode.managed() || instance.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let fleet = fleets.get(id);
            let infra = inputs::infrastructure(fleet);
            let mut report = InstanceReport::default();
            let names = Names::of(instance);
            match self
                .certificates(snapshot, instance, &names, &infra, &mut counts)
                .await
            {
                Ok(issued) => report.issued = issued,
                Err(e) => report.problems.push(e),
            }
            let ports = fleet.map(|f| f.ports.clone()).unwrap_or_default();
            let desired = workloads::desired(instance, &ports, &infra, &self.settings);
            for object in desired.into_objects() {
                let id = object.id();
                let live = live.get(&id);
                wanted.insert(id);
                match self
                    .applier
                    .apply_owned(&client, &object, live, &mut counts)
                    .await
                {
                    Ok(written) if object.is_workload() => {
                        report.workload = written
                            .or_else(|| live.and_then(|l| object.typed(l)))
                            .and_then(Owned::into_workload);
                    }
                    Ok(_) => {}
                    Err(e) => report.problems.push(e.to_string()),
                }
            }
            reports.insert(id.clone(), report);
        }

        // Generated objects nothing wants any more: a Service whose
        // Gateways have no listeners left, a Deployment after a switch to
        // DaemonSet, everything of an instance switched to External.
        // Objects of deleted instances are left to the garbage collector.
        let instances: HashSet<(String, String)> = snapshot
            .kengine_instances
            .iter()
            .map(|(k, i)| (k.namespace.clone(), Names::of(i).label))
            .collect();
        for (id, object) in live {
            let meta = &object["metadata"];
            let Some(label) = meta["labels"][INSTANCE_LABEL].as_str() else {
                continue;
            };
            let namespace = meta["namespace"].as_str().unwrap_or_default();
            let ours = instances.contains(&(namespace.to_string(), label.to_string()));
            if ours
                && !wanted.contains(id)
                && id.kind != "Secret"
                && let Err(e) = self.applier.delete(&client, id, &mut counts).await
            {
                tracing::warn!("{e}");
            }
        }
        (reports, counts)
    }

    /// Issues or renews the instance's admin certificates.
    async fn certificates(
        &mut self,
        snapshot: &Snapshot,
        instance: &KengineInstance,
        names: &Names,
        infra: &Infrastructure,
        counts: &mut Counts,
    ) -> Result<Vec<String>, String> {
        let namespace = instance.metadata.namespace.clone().unwrap_or_default();
        let secret_key = |name: &str| ObjectId::new::<Secret>(&namespace, name);
        let read = |name: &str| snapshot.secrets.get(&ObjectRef::new(&namespace, name));
        // Wait for our own writes to reach the cache.
        for name in [&names.ca_secret, &names.server_secret, &names.client_secret] {
            let k = secret_key(name);
            if let Some((rv, since)) = self.pending.get(&k) {
                let seen =
                    read(name).and_then(|s| s.metadata.resource_version.as_ref()) == Some(rv);
                if seen || since.elapsed() > Duration::from_secs(10) {
                    self.pending.remove(&k);
                } else {
                    return Ok(Vec::new());
                }
            }
        }
        let current = pki::Current {
            ca: read(&names.ca_secret).map(pki::secret_data),
            server: read(&names.server_secret).map(pki::secret_data),
            client: read(&names.client_secret).map(pki::secret_data),
        };
        let plan = pki::plan(
            &current,
            &ca_subject(instance),
            &names.server_name,
            &self.lifetimes,
            SystemTime::now(),
        )?;
        // Renewal needs no timer of its own: leaves are renewed with a
        // third of their life left, and a pass runs at least every
        // --resync-seconds.
        let mut issued = Vec::new();
        for (name, data) in [
            (&names.ca_secret, &plan.ca),
            (&names.server_secret, &plan.server),
            (&names.client_secret, &plan.client),
        ] {
            let Some(data) = data else { continue };
            let secret = workloads::secret(instance, name, data, infra);
            let written = self
                .applier
                .apply(&self.client, &secret, None, counts)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(rv) = written.and_then(|s| s.metadata.resource_version) {
                self.pending.insert(secret_key(name), (rv, Instant::now()));
            }
            tracing::info!(secret = %ObjectId::of(&secret), "admin certificate issued");
            issued.push(name.clone());
        }
        Ok(issued)
    }
}

/// The subject of an instance's admin CA.
fn ca_subject(instance: &KengineInstance) -> String {
    format!(
        "kengine-gateway admin CA for {}/{}",
        instance.metadata.namespace.as_deref().unwrap_or_default(),
        instance.metadata.name.as_deref().unwrap_or_default()
    )
}
