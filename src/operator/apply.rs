//! Server-side apply of generated objects, skipping what is already in
//! place. An object is applied when what we want changed, when it is
//! missing, or when someone else changed it (drift): its generation (or,
//! for kinds without one, its resourceVersion) differs from what our last
//! apply returned.

use std::collections::HashMap;

use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use crate::crd::KengineInstance;

use kengine_gateway_model::names::FIELD_MANAGER;

/// `apiVersion/kind namespace/name`.
pub fn key(object: &Value) -> String {
    format!(
        "{}/{} {}/{}",
        object["apiVersion"].as_str().unwrap_or_default(),
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

/// What tells us whether a live object changed since we applied it.
fn marker(live: &Value) -> String {
    match live["metadata"]["generation"].as_i64() {
        Some(g) => format!("g{g}"),
        None => format!(
            "rv{}",
            live["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
        ),
    }
}

/// Why a generated object could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}: not a kind the operator writes")]
    UnknownKind(String),
    #[error("{0} has no namespace")]
    NoNamespace(String),
    #[error("applying {key}: {source}")]
    Apply {
        key: String,
        source: Box<kube::Error>,
    },
    #[error("deleting {key}: {source}")]
    Delete {
        key: String,
        source: Box<kube::Error>,
    },
}

#[derive(Default)]
pub struct Applier {
    /// Per object key: hash of what we applied, and the live marker it got.
    applied: HashMap<String, (String, String)>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub applied: u64,
    pub unchanged: u64,
    pub deleted: u64,
}

impl Applier {
    /// Applies `desired` unless `live` (the watched copy) shows it in place.
    pub async fn apply(
        &mut self,
        client: &Client,
        desired: &Value,
        live: Option<&Value>,
        counts: &mut Counts,
    ) -> Result<Value, ApplyError> {
        let key = key(desired);
        let hash = crate::sinks::fleet::short_hash(desired.to_string().as_bytes());
        if let (Some(live), Some((h, m))) = (live, self.applied.get(&key))
            && *h == hash
            && *m == marker(live)
        {
            counts.unchanged += 1;
            return Ok(live.clone());
        }
        let api = api(client, desired)?;
        let name = desired["metadata"]["name"].as_str().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let result = api
            .patch(name, &params, &Patch::Apply(desired))
            .await
            .map_err(|source| ApplyError::Apply {
                key: key.clone(),
                source: Box::new(source),
            })?;
        let result = serde_json::to_value(&result).unwrap_or_default();
        self.applied.insert(key, (hash, marker(&result)));
        counts.applied += 1;
        Ok(result)
    }

    /// Deletes a generated object that is no longer wanted.
    pub async fn delete(
        &mut self,
        client: &Client,
        live: &Value,
        counts: &mut Counts,
    ) -> Result<(), ApplyError> {
        let key = key(live);
        let api = api(client, live)?;
        let name = live["metadata"]["name"].as_str().unwrap_or_default();
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(ApplyError::Delete {
                    key,
                    source: Box::new(source),
                });
            }
        }
        self.applied.remove(&key);
        counts.deleted += 1;
        Ok(())
    }
}

fn api(client: &Client, object: &Value) -> Result<Api<DynamicObject>, ApplyError> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let ar = resource(api_version, kind).ok_or_else(|| ApplyError::UnknownKind(key(object)))?;
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .ok_or_else(|| ApplyError::NoNamespace(key(object)))?;
    Ok(Api::namespaced_with(client.clone(), namespace, &ar))
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

    #[test]
    fn marker_prefers_generation() {
        let with = serde_json::json!({"metadata": {"generation": 3, "resourceVersion": "9"}});
        let without = serde_json::json!({"metadata": {"resourceVersion": "9"}});
        assert_eq!(marker(&with), "g3");
        assert_eq!(marker(&without), "rv9");
        assert_eq!(
            key(
                &serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": "a", "name": "b"}})
            ),
            "apps/v1/Deployment a/b"
        );
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
