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

use futures_util::StreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::json;

use gateway_api::apis::experimental::gatewayclasses::GatewayClassStatus;
use gateway_api::apis::experimental::gateways::GatewayStatus;
use gateway_api::apis::experimental::grpcroutes::GrpcRouteStatusParents;
use gateway_api::apis::experimental::httproutes::HttpRouteStatusParents;
use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicyStatusAncestors;

use crate::crd::KengineInstanceStatus;
use crate::sinks::status;
use crate::snapshot::{ObjectRef, Snapshot};

pub use kengine_gateway_model::names::FIELD_MANAGER;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Writes {
    pub written: u64,
    pub unchanged: u64,
    pub failed: u64,
}

impl std::ops::AddAssign for Writes {
    fn add_assign(&mut self, other: Writes) {
        self.written += other.written;
        self.unchanged += other.unchanged;
        self.failed += other.failed;
    }
}

/// Route status writes sent at once (client-go's default QPS is 5 with a
/// burst of 10; kube-rs has no client-side limit, the API server's priority
/// and fairness has the last word).
const ROUTE_WRITES_IN_FLIGHT: usize = 16;

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

    pub async fn write_classes(
        &self,
        snapshot: &Snapshot,
        classes: &BTreeMap<String, GatewayClassStatus>,
    ) -> Writes {
        let mut writes = Writes::default();
        for (name, computed) in classes {
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
        writes
    }

    /// Gateway status. `written` is what this pass already wrote: it is
    /// compared instead of the snapshot's (older) status, and what is
    /// written now is added to it.
    pub async fn write_gateways(
        &self,
        snapshot: &Snapshot,
        gateways: &BTreeMap<ObjectRef, GatewayStatus>,
        written: &mut BTreeMap<ObjectRef, GatewayStatus>,
    ) -> Writes {
        let mut writes = Writes::default();
        for (key, computed) in gateways {
            let current = match written.get(key) {
                Some(w) => Some(w),
                None => snapshot.gateways.get(key).and_then(|g| g.status.as_ref()),
            };
            if current == Some(computed) {
                writes.unchanged += 1;
                continue;
            }
            let before = writes.written;
            self.apply(
                "Gateway",
                Some(&key.namespace),
                &key.name,
                json!(computed),
                &mut writes,
            )
            .await;
            if writes.written > before {
                written.insert(key.clone(), computed.clone());
            }
        }
        writes
    }

    /// Our entries of each HTTPRoute's `status.parents`.
    pub async fn write_routes(
        &self,
        snapshot: &Snapshot,
        routes: &BTreeMap<ObjectRef, Vec<HttpRouteStatusParents>>,
    ) -> Writes {
        let items = routes.iter().filter_map(|(key, ours)| {
            let route = snapshot.http_routes.get(key)?;
            let current = route.status.as_ref().map(|s| &s.parents[..]);
            Some((
                key,
                current,
                route.metadata.resource_version.clone(),
                &ours[..],
            ))
        });
        self.write_shared("HTTPRoute", "parents", items, |p| &p.controller_name)
            .await
    }

    /// Our entries of each GRPCRoute's `status.parents`.
    pub async fn write_grpc_routes(
        &self,
        snapshot: &Snapshot,
        routes: &BTreeMap<ObjectRef, Vec<GrpcRouteStatusParents>>,
    ) -> Writes {
        let items = routes.iter().filter_map(|(key, ours)| {
            let route = snapshot.grpc_routes.get(key)?;
            let current = route.status.as_ref().map(|s| &s.parents[..]);
            Some((
                key,
                current,
                route.metadata.resource_version.clone(),
                &ours[..],
            ))
        });
        self.write_shared("GRPCRoute", "parents", items, |p| &p.controller_name)
            .await
    }

    /// Our entries of each BackendTLSPolicy's `status.ancestors`.
    pub async fn write_backend_tls_policies(
        &self,
        snapshot: &Snapshot,
        policies: &BTreeMap<ObjectRef, Vec<BackendTlsPolicyStatusAncestors>>,
    ) -> Writes {
        let items = policies.iter().filter_map(|(key, ours)| {
            let policy = snapshot.backend_tls_policies.get(key)?;
            let current = policy.status.as_ref().map(|s| &s.ancestors[..]);
            Some((
                key,
                current,
                policy.metadata.resource_version.clone(),
                &ours[..],
            ))
        });
        self.write_shared("BackendTLSPolicy", "ancestors", items, |p| {
            &p.controller_name
        })
        .await
    }

    /// Writes a status list shared with other controllers (`field`): our
    /// entries replace our old ones, every other entry is kept as it is.
    async fn write_shared<'a, T, I>(
        &self,
        kind: &str,
        field: &str,
        items: I,
        controller_of: fn(&T) -> &String,
    ) -> Writes
    where
        T: serde::Serialize + Clone + PartialEq + 'a,
        I: Iterator<Item = (&'a ObjectRef, Option<&'a [T]>, Option<String>, &'a [T])>,
    {
        let mut writes = Writes::default();
        // Routes are many and independent: several writes in flight, so a
        // burst of new routes is not one API round trip per route.
        let mut patches = Vec::new();
        for (key, current, resource_version, ours) in items {
            let merged =
                status::merged_entries(current, ours, |e| controller_of(e) == &self.controller);
            if current == Some(&merged[..]) {
                writes.unchanged += 1;
                continue;
            }
            let patch = json!({
                "metadata": {"resourceVersion": resource_version},
                "status": {field: merged},
            });
            patches.push(async move {
                let mut one = Writes::default();
                self.patch(kind, key, Patch::Merge(patch), &mut one).await;
                one
            });
        }
        let done: Vec<Writes> = futures_util::stream::iter(patches)
            .buffer_unordered(ROUTE_WRITES_IN_FLIGHT)
            .collect()
            .await;
        for one in done {
            writes += one;
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
        let mut patch = patch;
        if let Patch::Apply(v) | Patch::Merge(v) = &mut patch {
            super::message::bound_all(v);
        }
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

#[cfg(test)]
mod tests {
    use gateway_api::apis::experimental::gateways::{Gateway, GatewayStatus};
    use gateway_api::apis::experimental::httproutes::{HttpRoute, HttpRouteStatusParents};
    use kube::Resource;

    use super::*;
    use crate::translate::Status;

    /// Every status of `status` that differs from the snapshot's, in the
    /// order the reconciler writes it (it splits this around the pushes).
    async fn write(writer: &StatusWriter, snapshot: &Snapshot, status: &Status) -> Writes {
        let mut writes = writer
            .write_classes(snapshot, &status.gateway_classes)
            .await;
        writes += writer
            .write_gateways(snapshot, &status.gateways, &mut BTreeMap::new())
            .await;
        writes += writer.write_routes(snapshot, &status.http_routes).await;
        writes
    }
    use crate::snapshot::Object;

    const OURS: &str = "kengine.khulnasoft.com/gateway-controller";

    fn objects() -> (Gateway, HttpRoute) {
        let gw: Gateway = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "default"},
            "spec": {"gatewayClassName": "c", "listeners": []}
        }))
        .unwrap();
        let route: HttpRoute = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gw"}, {"name": "theirs"}]},
            "status": {"parents": [{"parentRef": {"name": "theirs"}, "controllerName": "example.com/other",
                "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}]}
        }))
        .unwrap();
        (gw, route)
    }

    fn computed() -> Status {
        let condition = json!([{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "observedGeneration": 1, "lastTransitionTime": "2025-01-01T00:00:00Z"}]);
        let mut status = Status::default();
        status.gateways.insert(
            ObjectRef::new("default", "gw"),
            serde_json::from_value::<GatewayStatus>(json!({"conditions": condition})).unwrap(),
        );
        let parent: HttpRouteStatusParents = serde_json::from_value(json!({
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
            "controllerName": OURS, "conditions": condition}))
        .unwrap();
        status
            .http_routes
            .insert(ObjectRef::new("default", "r"), vec![parent]);
        status
    }

    async fn read(client: &Client) -> Snapshot {
        let gw = Api::<Gateway>::namespaced(client.clone(), "default")
            .get("gw")
            .await
            .unwrap();
        let route = Api::<HttpRoute>::namespaced(client.clone(), "default")
            .get("r")
            .await
            .unwrap();
        Snapshot::from_objects([Object::Gateway(gw), Object::HttpRoute(route)])
    }

    #[tokio::test]
    async fn writes_our_status_once_and_keeps_other_controllers_entries() {
        let (gw, route) = objects();
        let client = kube_fake_client::ClientBuilder::new()
            .with_resource::<Gateway>()
            .with_resource::<HttpRoute>()
            .with_status_subresource::<Gateway>()
            .with_status_subresource::<HttpRoute>()
            .with_object(gw)
            .with_object(route)
            .build()
            .await
            .unwrap();
        let resources = [
            ApiResource::erase::<Gateway>(&()),
            ApiResource::erase::<HttpRoute>(&()),
        ];
        let writer = StatusWriter::new(client.clone(), OURS.into(), &resources);
        let status = computed();

        let writes = write(&writer, &read(&client).await, &status).await;
        assert_eq!(
            writes,
            Writes {
                written: 2,
                unchanged: 0,
                failed: 0
            }
        );
        let after = read(&client).await;
        assert_eq!(
            after.gateways[&ObjectRef::new("default", "gw")]
                .status
                .as_ref(),
            status.gateways.values().next()
        );
        let parents = &after.http_routes[&ObjectRef::new("default", "r")]
            .status
            .as_ref()
            .unwrap()
            .parents;
        let controllers: Vec<&str> = parents.iter().map(|p| p.controller_name.as_str()).collect();
        assert_eq!(
            controllers,
            ["example.com/other", OURS],
            "the other controller's entry is untouched"
        );

        let again = write(&writer, &after, &status).await;
        assert_eq!(
            again,
            Writes {
                written: 0,
                unchanged: 2,
                failed: 0
            },
            "no write when nothing changed"
        );

        // A write based on a stale read fails (and is redone next pass) rather
        // than overwriting a concurrent change.
        let mut stale = after.clone();
        let route = stale
            .http_routes
            .get_mut(&ObjectRef::new("default", "r"))
            .unwrap();
        route.meta_mut().resource_version = Some("1".into());
        route.status = None;
        let conflict = write(&writer, &stale, &status).await;
        assert_eq!(conflict.failed, 1, "{conflict:?}");
    }

    #[tokio::test]
    async fn writes_grpc_route_parents_next_to_other_controllers() {
        use gateway_api::apis::experimental::grpcroutes::GrpcRoute;
        let route: GrpcRoute = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "g", "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gw"}, {"name": "theirs"}]},
            "status": {"parents": [{"parentRef": {"name": "theirs"}, "controllerName": "example.com/other",
                "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}]}
        }))
        .unwrap();
        let client = kube_fake_client::ClientBuilder::new()
            .with_resource::<GrpcRoute>()
            .with_status_subresource::<GrpcRoute>()
            .with_object(route)
            .build()
            .await
            .unwrap();
        let writer = StatusWriter::new(
            client.clone(),
            OURS.into(),
            &[ApiResource::erase::<GrpcRoute>(&())],
        );
        let read = || async {
            let route = Api::<GrpcRoute>::namespaced(client.clone(), "default")
                .get("g")
                .await
                .unwrap();
            Snapshot::from_objects([Object::GrpcRoute(route)])
        };
        let ours = serde_json::from_value(json!({
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
            "controllerName": OURS,
            "conditions": [{"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners", "message": "m", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}))
        .unwrap();
        let routes = BTreeMap::from([(ObjectRef::new("default", "g"), vec![ours])]);
        let writes = writer.write_grpc_routes(&read().await, &routes).await;
        assert_eq!(writes.written, 1, "{writes:?}");
        let after = read().await;
        let parents = &after.grpc_routes[&ObjectRef::new("default", "g")]
            .status
            .as_ref()
            .unwrap()
            .parents;
        let controllers: Vec<&str> = parents.iter().map(|p| p.controller_name.as_str()).collect();
        assert_eq!(controllers, ["example.com/other", OURS]);
        assert_eq!(parents[1].conditions[0].reason, "NotAllowedByListeners");
        let again = writer.write_grpc_routes(&after, &routes).await;
        assert_eq!(again.unchanged, 1, "{again:?}");
    }
}
