//! The Kubernetes provider: reflectors over every kind translate reads, and
//! a signal on every change. Gateway API kinds are watched at whatever
//! version the cluster serves (v1.1.0 CRDs have ReferenceGrant only as
//! v1beta1), through dynamic objects converted to our typed model.
//!
//! Scope choices: Secrets are watched with the field selector
//! `type=kubernetes.io/tls` (only those can be listener certificates), so
//! service-account tokens and other secrets are never cached. ConfigMaps
//! (CA bundles for BackendTLSPolicy) are watched only with a label selector.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::discovery::Discovery;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::crd::{GROUP as KENGINE_GROUP, KIND as KENGINE_KIND};
use crate::providers::files;
use crate::snapshot::{Object, Snapshot};
use kengine_gateway_model::names::MANAGED_BY_SELECTOR as MANAGED_BY;

pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Gateway API kinds we read, and whether we can do without them.
pub const GATEWAY_KINDS: &[(&str, bool)] = &[
    ("GatewayClass", false),
    ("Gateway", false),
    ("HTTPRoute", false),
    ("ReferenceGrant", true),
    ("GRPCRoute", true),
    ("BackendTLSPolicy", true),
];

/// Kinds watched only where the operator generated them.
const GENERATED_ONLY: &[&str] = &[
    "ServiceAccount",
    "Deployment",
    "DaemonSet",
    "PodDisruptionBudget",
    "NetworkPolicy",
];

/// What the cluster serves, found by discovery.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// Kinds to watch, each at its preferred version.
    pub resources: Vec<ApiResource>,
    /// Gateway API kinds whose CRDs are missing.
    pub missing: BTreeSet<String>,
}

/// `generated`: also watch the kinds the operator generates (managed fleets).
pub async fn discover(client: &Client, generated: bool) -> Result<Served, kube::Error> {
    let discovery = Discovery::new(client.clone())
        .filter(&[GATEWAY_GROUP, KENGINE_GROUP])
        .run()
        .await?;
    // The most stable version that serves the kind: v1.1.0 CRDs prefer v1
    // for the group but serve ReferenceGrant only as v1beta1.
    let find = |group: &str, kind: &str| {
        discovery
            .groups()
            .find(|g| g.name() == group)?
            .resources_by_stability()
            .into_iter()
            .find(|(ar, _)| ar.kind == kind && !ar.plural.contains('/'))
            .map(|(ar, _)| ar)
    };
    let mut resources = Vec::new();
    let mut missing = BTreeSet::new();
    for (kind, _) in GATEWAY_KINDS {
        match find(GATEWAY_GROUP, kind) {
            Some(ar) => resources.push(ar),
            None => {
                missing.insert(kind.to_string());
            }
        }
    }
    if let Some(ar) = find(KENGINE_GROUP, KENGINE_KIND) {
        resources.push(ar);
    } else {
        missing.insert(KENGINE_KIND.to_string());
    }
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    resources.push(ApiResource::erase::<Namespace>(&()));
    resources.push(ApiResource::erase::<Service>(&()));
    resources.push(ApiResource::erase::<EndpointSlice>(&()));
    resources.push(ApiResource::erase::<Secret>(&()));
    resources.push(ApiResource::erase::<ConfigMap>(&()));
    resources.push(ApiResource::erase::<Pod>(&()));
    if generated {
        generated_kinds(&mut resources);
    }
    Ok(Served { resources, missing })
}

/// What the operator generates, for drift correction and fleet status.
fn generated_kinds(resources: &mut Vec<ApiResource>) {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    resources.push(ApiResource::erase::<ServiceAccount>(&()));
    resources.push(ApiResource::erase::<Deployment>(&()));
    resources.push(ApiResource::erase::<DaemonSet>(&()));
    resources.push(ApiResource::erase::<PodDisruptionBudget>(&()));
    resources.push(ApiResource::erase::<NetworkPolicy>(&()));
}

impl Served {
    /// Kinds without which nothing can be served.
    pub fn required_missing(&self) -> Vec<&str> {
        GATEWAY_KINDS
            .iter()
            .filter(|(k, optional)| !optional && self.missing.contains(*k))
            .map(|(k, _)| *k)
            .collect()
    }
}

/// Running reflectors; dropping it stops them.
pub struct Watches {
    stores: Vec<(ApiResource, Store<DynamicObject>)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub struct Scope<'a> {
    pub namespace: Option<&'a str>,
    pub configmap_selector: &'a str,
}

/// Starts a reflector per resource; `changed` gets a unit per change
/// (a full channel already means "something changed").
pub fn watch(
    client: &Client,
    served: &Served,
    scope: &Scope,
    changed: mpsc::Sender<()>,
) -> Watches {
    let mut watches = Watches {
        stores: Vec::new(),
        tasks: Vec::new(),
    };
    for ar in &served.resources {
        let cluster_scoped = matches!(ar.kind.as_str(), "GatewayClass" | "Namespace");
        let api: Api<DynamicObject> = match (cluster_scoped, scope.namespace) {
            (false, Some(ns)) => Api::namespaced_with(client.clone(), ns, ar),
            _ => Api::all_with(client.clone(), ar),
        };
        let config = match ar.kind.as_str() {
            "Secret" => watcher::Config::default().fields("type=kubernetes.io/tls"),
            "ConfigMap" => watcher::Config::default().labels(scope.configmap_selector),
            k if GENERATED_ONLY.contains(&k) => watcher::Config::default().labels(MANAGED_BY),
            _ => watcher::Config::default(),
        };
        let writer = reflector::store::Writer::new(ar.clone());
        let store = writer.as_reader();
        let tx = changed.clone();
        let kind = ar.kind.clone();
        let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
        watches.tasks.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(_) => {
                        let _ = tx.try_send(());
                    }
                    Err(e) => tracing::warn!(kind, "watch error (retrying): {e}"),
                }
            }
        }));
        watches.stores.push((ar.clone(), store));
    }
    watches
}

impl Watches {
    /// Resolves when every reflector has listed once.
    pub async fn wait_synced(&self) {
        for (_, store) in &self.stores {
            let _ = store.wait_until_ready().await;
        }
    }

    /// Every object of one kind, as JSON with apiVersion and kind set.
    pub fn values(&self, kind: &str) -> Vec<serde_json::Value> {
        self.stores
            .iter()
            .filter(|(ar, _)| ar.kind == kind)
            .flat_map(|(ar, store)| {
                store.state().into_iter().map(move |o| {
                    let mut v = serde_json::to_value(o.as_ref()).unwrap_or_default();
                    v["apiVersion"] = ar.api_version.clone().into();
                    v["kind"] = ar.kind.clone().into();
                    v
                })
            })
            .collect()
    }

    /// The snapshot translate reads. Objects that do not parse into our
    /// model are skipped with a warning; they cannot stop the others.
    pub fn snapshot(&self) -> Snapshot {
        let mut objects: Vec<Object> = Vec::new();
        for (ar, store) in &self.stores {
            if ar.kind == "Pod" || GENERATED_ONLY.contains(&ar.kind.as_str()) {
                continue;
            }
            for o in store.state() {
                let mut v = serde_json::to_value(o.as_ref()).unwrap_or_default();
                v["apiVersion"] = ar.api_version.clone().into();
                v["kind"] = ar.kind.clone().into();
                match files::object_from_value(v) {
                    Ok(Some(object)) => objects.push(object),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("skipping {}: {e}", ar.kind),
                }
            }
        }
        Snapshot::from_objects(objects)
    }
}
