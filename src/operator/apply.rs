//! Server-side apply of generated objects, skipping what is already in
//! place. An object is applied when what we want changed, when it is
//! missing, or when someone else changed it (drift): its generation (or,
//! for kinds without one, its resourceVersion) differs from what our last
//! apply returned.

use std::collections::HashMap;
use std::fmt;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::workloads::Owned;
use crate::crd::KengineInstance;

use kengine_gateway_model::names::FIELD_MANAGER;

/// A kind the operator writes: namespaced, with its API path taken from
/// its type (`Resource::plural`), never guessed from its name.
pub trait Object:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Serialize
    + DeserializeOwned
    + Clone
    + fmt::Debug
{
}

impl<K> Object for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + fmt::Debug
{
}

/// One object across kinds: the key of the watched copies and of what the
/// applier remembers. Shown as `apiVersion/kind namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectId {
    /// The `K` of that namespace and name.
    pub fn new<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> Self {
        ObjectId {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn of<K: Resource<DynamicType = ()>>(object: &K) -> Self {
        let meta = object.meta();
        Self::new::<K>(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ObjectId {
            api_version,
            kind,
            namespace,
            name,
        } = self;
        write!(f, "{api_version}/{kind} {namespace}/{name}")
    }
}

/// The id of a watched copy (the watches hold objects of every kind as
/// JSON).
pub fn key(object: &Value) -> ObjectId {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    ObjectId {
        api_version: text(&object["apiVersion"]),
        kind: text(&object["kind"]),
        namespace: text(&object["metadata"]["namespace"]),
        name: text(&object["metadata"]["name"]),
    }
}

/// What tells us whether a live object changed since we applied it.
fn marker(generation: Option<i64>, resource_version: Option<&str>) -> String {
    match generation {
        Some(g) => format!("g{g}"),
        None => format!("rv{}", resource_version.unwrap_or_default()),
    }
}

fn live_marker(live: &Value) -> String {
    let meta = &live["metadata"];
    marker(
        meta["generation"].as_i64(),
        meta["resourceVersion"].as_str(),
    )
}

fn written_marker(meta: &ObjectMeta) -> String {
    marker(meta.generation, meta.resource_version.as_deref())
}

/// Why a generated object could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}: not a kind the operator writes")]
    UnknownKind(ObjectId),
    #[error("{0} has no namespace")]
    NoNamespace(ObjectId),
    #[error("applying {id}: {source}")]
    Apply {
        id: ObjectId,
        source: Box<kube::Error>,
    },
    #[error("deleting {id}: {source}")]
    Delete {
        id: ObjectId,
        source: Box<kube::Error>,
    },
}

#[derive(Default)]
pub struct Applier {
    /// Per object: hash of what we applied, and the live marker it got.
    applied: HashMap<ObjectId, (String, String)>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub applied: u64,
    pub unchanged: u64,
    pub deleted: u64,
}

impl Applier {
    /// Applies `desired` unless `live` (the watched copy) shows it in
    /// place. Returns what the API server answered, `None` when nothing was
    /// written.
    pub async fn apply<K: Object>(
        &mut self,
        client: &Client,
        desired: &K,
        live: Option<&Value>,
        counts: &mut Counts,
    ) -> Result<Option<K>, ApplyError> {
        self.apply_as(client, &ObjectId::of(desired), desired, live, counts)
            .await
    }

    /// [`Applier::apply`] of the `K` `id` as `body`, an apply configuration
    /// that holds only the fields the operator means to own.
    pub async fn apply_as<K: Object>(
        &mut self,
        client: &Client,
        id: &ObjectId,
        body: &(impl Serialize + fmt::Debug),
        live: Option<&Value>,
        counts: &mut Counts,
    ) -> Result<Option<K>, ApplyError> {
        // A body that does not serialize fails in `patch` below, and is
        // then never remembered.
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let hash = crate::sinks::fleet::short_hash(&bytes);
        if let (Some(live), Some((h, m))) = (live, self.applied.get(id))
            && *h == hash
            && *m == live_marker(live)
        {
            counts.unchanged += 1;
            return Ok(None);
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let result = api::<K>(client, id)?
            .patch(&id.name, &params, &Patch::Apply(body))
            .await
            .map_err(|source| ApplyError::Apply {
                id: id.clone(),
                source: Box::new(source),
            })?;
        self.applied
            .insert(id.clone(), (hash, written_marker(result.meta())));
        counts.applied += 1;
        Ok(Some(result))
    }

    /// [`Applier::apply`] of whichever object `object` holds.
    pub async fn apply_owned(
        &mut self,
        client: &Client,
        object: &Owned,
        live: Option<&Value>,
        counts: &mut Counts,
    ) -> Result<Option<Owned>, ApplyError> {
        Ok(match object {
            Owned::ServiceAccount(o) => self
                .apply(client, o, live, counts)
                .await?
                .map(Owned::ServiceAccount),
            Owned::Deployment(o) => self
                .apply(client, o, live, counts)
                .await?
                .map(Owned::Deployment),
            Owned::DaemonSet(o) => self
                .apply(client, o, live, counts)
                .await?
                .map(Owned::DaemonSet),
            Owned::Service(o) => self
                .apply(client, o, live, counts)
                .await?
                .map(Owned::Service),
            Owned::PodDisruptionBudget(o) => self
                .apply(client, o, live, counts)
                .await?
                .map(Owned::PodDisruptionBudget),
            Owned::NetworkPolicy(o) => self
                .apply(client, o, live, counts)
                .await?
                .map(Owned::NetworkPolicy),
        })
    }

    /// Deletes a generated object that is no longer wanted. By id: the
    /// kind of a watched copy is known only at run time.
    pub async fn delete(
        &mut self,
        client: &Client,
        id: &ObjectId,
        counts: &mut Counts,
    ) -> Result<(), ApplyError> {
        let api = dynamic_api(client, id)?;
        match api.delete(&id.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(ApplyError::Delete {
                    id: id.clone(),
                    source: Box::new(source),
                });
            }
        }
        self.applied.remove(id);
        counts.deleted += 1;
        Ok(())
    }
}

fn api<K: Object>(client: &Client, id: &ObjectId) -> Result<Api<K>, ApplyError> {
    namespace(id).map(|ns| Api::namespaced(client.clone(), ns))
}

fn dynamic_api(client: &Client, id: &ObjectId) -> Result<Api<DynamicObject>, ApplyError> {
    let ar =
        resource(&id.api_version, &id.kind).ok_or_else(|| ApplyError::UnknownKind(id.clone()))?;
    namespace(id).map(|ns| Api::namespaced_with(client.clone(), ns, &ar))
}

/// Every kind the operator writes is namespaced: without a namespace the
/// path would be the cluster-wide collection.
fn namespace(id: &ObjectId) -> Result<&str, ApplyError> {
    match id.namespace.as_str() {
        "" => Err(ApplyError::NoNamespace(id.clone())),
        ns => Ok(ns),
    }
}

/// The API resource of a kind the operator writes, taken from its type
/// (never a plural guessed from the kind's name); `None` for any other.
fn resource(api_version: &str, kind: &str) -> Option<ApiResource> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
    use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    fn of<K: kube::Resource<DynamicType = ()>>() -> ApiResource {
        ApiResource::erase::<K>(&())
    }
    let ar = match kind {
        "Deployment" => of::<Deployment>(),
        "DaemonSet" => of::<DaemonSet>(),
        "Service" => of::<Service>(),
        "ServiceAccount" => of::<ServiceAccount>(),
        "Secret" => of::<Secret>(),
        "NetworkPolicy" => of::<NetworkPolicy>(),
        "PodDisruptionBudget" => of::<PodDisruptionBudget>(),
        "KengineInstance" => of::<KengineInstance>(),
        _ => return None,
    };
    (ar.api_version == api_version).then_some(ar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;

    #[test]
    fn marker_prefers_generation() {
        let with = serde_json::json!({"metadata": {"generation": 3, "resourceVersion": "9"}});
        let without = serde_json::json!({"metadata": {"resourceVersion": "9"}});
        assert_eq!(live_marker(&with), "g3");
        assert_eq!(live_marker(&without), "rv9");
        let mut meta = ObjectMeta {
            resource_version: Some("9".into()),
            ..Default::default()
        };
        assert_eq!(written_marker(&meta), "rv9");
        meta.generation = Some(3);
        assert_eq!(written_marker(&meta), "g3");
    }

    #[test]
    fn ids_of_typed_objects_and_watched_copies_agree() {
        let watched = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": "a", "name": "b"}});
        let id = key(&watched);
        assert_eq!(id.to_string(), "apps/v1/Deployment a/b");
        assert_eq!(ObjectId::new::<Deployment>("a", "b"), id);
        let typed: Deployment = serde_json::from_value(watched).unwrap();
        assert_eq!(ObjectId::of(&typed), id);
    }

    #[test]
    fn every_kind_written_has_its_resource() {
        let mut kinds: Vec<(&str, &str)> = super::super::OWNED_KINDS.to_vec();
        kinds.extend([
            ("v1", "Secret"),
            ("kengine.khulnasoft.com/v1alpha1", "KengineInstance"),
        ]);
        for (api_version, kind) in kinds {
            let ar = resource(api_version, kind).unwrap_or_else(|| panic!("{api_version} {kind}"));
            assert_eq!(ar.kind, kind);
        }
        assert_eq!(
            resource("networking.k8s.io/v1", "NetworkPolicy")
                .unwrap()
                .plural,
            "networkpolicies"
        );
        assert_eq!(
            resource("policy/v1", "PodDisruptionBudget").unwrap().plural,
            "poddisruptionbudgets"
        );
        assert!(resource("v1", "ConfigMap").is_none(), "not ours to write");
        assert!(
            resource("apps/v1beta1", "Deployment").is_none(),
            "another version"
        );
    }
}
