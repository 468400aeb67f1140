//! Writes status to the API server: our own entries only, and only what
//! changed.
//!
//! GatewayClass and Gateway status are ours alone, written by server-side
//! apply with our field manager. An HTTPRoute's `status.parents` list is
//! shared with other controllers and is an atomic list in the CRD, so it is
//! written by a merge patch carrying the entries of others untouched, with
//! a resourceVersion precondition: a concurrent change fails the write,
//! which the next reconcile redoes on fresh data. We never rewrite another
//! controller's entry.

use std::collections::BTreeMap;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::json;

use crate::crd::KengineInstanceStatus;
use crate::snapshot::{ObjectRef, Snapshot};
use crate::translate::Status;

pub const FIELD_MANAGER: &str = "kengine-gateway";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Writes {
    pub written: u64,
    pub unchanged: u64,
    pub failed: u64,
}

pub struct StatusWriter {
    client: Client,
    controller: String,
    /// kind → the resource at the version the cluster serves.
    resources: BTreeMap<String, ApiResource>,
}

impl StatusWriter {
    pub fn new(client: Client, controller: String, resources: &[ApiResource]) -> Self {
        let resources = resources
            .iter()
            .map(|r| (r.kind.clone(), r.clone()))
            .collect();
        StatusWriter {
            client,
            controller,
            resources,
        }
    }

    pub async fn write(&self, snapshot: &Snapshot, status: &Status) -> Writes {
        let mut writes = Writes::default();
        for (name, computed) in &status.gateway_classes {
            let current = snapshot
                .gateway_classes
                .get(name)
                .and_then(|c| c.status.as_ref());
            if current == Some(computed) {
                writes.unchanged += 1;
                continue;
            }
            self.apply("GatewayClass", None, name, json!(computed), &mut writes)
                .await;
        }
        for (key, computed) in &status.gateways {
            let current = snapshot.gateways.get(key).and_then(|g| g.status.as_ref());
            if current == Some(computed) {
                writes.unchanged += 1;
                continue;
            }
            self.apply(
                "Gateway",
                Some(&key.namespace),
                &key.name,
                json!(computed),
                &mut writes,
            )
            .await;
        }
        for (key, ours) in &status.http_routes {
            let Some(route) = snapshot.http_routes.get(key) else {
                continue;
            };
            let current = route
                .status
                .as_ref()
                .map(|s| s.parents.clone())
                .unwrap_or_default();
            let mut parents: Vec<_> = current
                .iter()
                .filter(|p| p.controller_name != self.controller)
                .cloned()
                .collect();
            parents.extend(ours.iter().cloned());
            if parents == current {
                writes.unchanged += 1;
                continue;
            }
            let patch = json!({
                "metadata": {"resourceVersion": route.metadata.resource_version},
                "status": {"parents": parents},
            });
            self.patch("HTTPRoute", key, Patch::Merge(patch), &mut writes)
                .await;
        }
        writes
    }

    /// KengineInstance status, ours alone: server-side apply when changed.
    pub async fn write_instances(
        &self,
        snapshot: &Snapshot,
        computed: &[(ObjectRef, KengineInstanceStatus)],
    ) -> Writes {
        let mut writes = Writes::default();
        for (key, status) in computed {
            let current = snapshot
                .kengine_instances
                .get(key)
                .and_then(|i| i.status.as_ref());
            if current == Some(status) {
                writes.unchanged += 1;
                continue;
            }
            self.apply(
                "KengineInstance",
                Some(&key.namespace),
                &key.name,
                json!(status),
                &mut writes,
            )
            .await;
        }
        writes
    }

    async fn apply(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        status: serde_json::Value,
        writes: &mut Writes,
    ) {
        let Some(ar) = self.resources.get(kind) else {
            return;
        };
        let object = json!({"apiVersion": ar.api_version, "kind": ar.kind, "metadata": {"name": name}, "status": status});
        let key = ObjectRef::new(namespace.unwrap_or_default(), name);
        self.patch(kind, &key, Patch::Apply(object), writes).await;
    }

    async fn patch(
        &self,
        kind: &str,
        key: &ObjectRef,
        patch: Patch<serde_json::Value>,
        writes: &mut Writes,
    ) {
        let Some(ar) = self.resources.get(kind) else {
            return;
        };
        let api: Api<DynamicObject> = if key.namespace.is_empty() {
            Api::all_with(self.client.clone(), ar)
        } else {
            Api::namespaced_with(self.client.clone(), &key.namespace, ar)
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let params = if matches!(patch, Patch::Apply(_)) {
            params
        } else {
            PatchParams {
                force: false,
                ..params
            }
        };
        match api.patch_status(&key.name, &params, &patch).await {
            Ok(_) => writes.written += 1,
            Err(e) => {
                writes.failed += 1;
                tracing::warn!(kind, object = %key, "status write failed (retried on the next reconcile): {e}");
            }
        }
    }
}
