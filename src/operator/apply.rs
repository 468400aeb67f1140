//! Server-side apply of generated objects, skipping what is already in
//! place. An object is applied when what we want changed, when it is
//! missing, or when someone else changed it (drift): its generation (or,
//! for kinds without one, its resourceVersion) differs from what our last
//! apply returned.

use std::collections::HashMap;

use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::Value;

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
    ) -> Result<Value, String> {
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
            .map_err(|e| format!("applying {key}: {e}"))?;
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
    ) -> Result<(), String> {
        let key = key(live);
        let api = api(client, live)?;
        let name = live["metadata"]["name"].as_str().unwrap_or_default();
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(format!("deleting {key}: {e}")),
        }
        self.applied.remove(&key);
        counts.deleted += 1;
        Ok(())
    }
}

fn api(client: &Client, object: &Value) -> Result<Api<DynamicObject>, String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or_default();
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let plural = match kind {
        "NetworkPolicy" => "networkpolicies".to_string(),
        "PodDisruptionBudget" => "poddisruptionbudgets".to_string(),
        k => format!("{}s", k.to_ascii_lowercase()),
    };
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .ok_or_else(|| format!("{} has no namespace", key(object)))?;
    Ok(Api::namespaced_with(client.clone(), namespace, &ar))
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
}
