//! An in-memory stand-in for the API server, just enough for the replay:
//! objects keyed by kind/namespace/name, generations bumped on spec changes,
//! creation order kept as `creationTimestamp`, status written back.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use kengine_gateway::providers::files;
use kengine_gateway::snapshot::Snapshot;

pub type Key = (String, String, String);

const CLUSTER_SCOPED: &[&str] = &["GatewayClass", "Namespace"];

#[derive(Default)]
pub struct Cluster {
    pub objects: BTreeMap<Key, Value>,
    created: i64,
}

pub fn key_of(v: &Value) -> Key {
    let kind = v["kind"].as_str().unwrap_or_default().to_string();
    let ns = if CLUSTER_SCOPED.contains(&kind.as_str()) {
        String::new()
    } else {
        v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    };
    (
        kind,
        ns,
        v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn without_meta(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

impl Cluster {
    /// Creates or updates an object, as `kubectl apply` would; returns its key.
    pub fn apply(&mut self, mut object: Value, merge_patch: bool) -> Key {
        let key = key_of(&object);
        if !CLUSTER_SCOPED.contains(&key.0.as_str()) {
            object["metadata"]["namespace"] = json!(key.1);
        }
        match self.objects.get(&key).cloned() {
            Some(old) => {
                let mut new = if merge_patch {
                    let mut merged = old.clone();
                    merge(&mut merged, &object);
                    merged
                } else {
                    let mut replaced = object;
                    replaced["metadata"]["creationTimestamp"] =
                        old["metadata"]["creationTimestamp"].clone();
                    replaced["status"] = old["status"].clone();
                    replaced
                };
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let changed = without_meta(&old) != without_meta(&new);
                new["metadata"]["generation"] =
                    json!(if changed { generation + 1 } else { generation });
                self.objects.insert(key.clone(), new);
            }
            None => {
                self.created += 1;
                // Creation order decides route precedence ties, so keep it.
                let ts = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + self.created)
                    .unwrap();
                object["metadata"]["creationTimestamp"] = json!(ts.to_string());
                object["metadata"]["generation"] = json!(1);
                self.objects.insert(key.clone(), object);
            }
        }
        key
    }

    pub fn delete(&mut self, key: &Key) -> bool {
        self.objects.remove(key).is_some()
    }

    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<&Value> {
        let ns = if CLUSTER_SCOPED.contains(&kind) {
            ""
        } else {
            ns
        };
        self.objects
            .get(&(kind.to_string(), ns.to_string(), name.to_string()))
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |(k, _)| k.0 == kind)
            .map(|(_, v)| v)
    }

    pub fn snapshot(&self) -> Result<Snapshot, String> {
        let mut objects = Vec::new();
        for value in self.objects.values() {
            if let Some(o) = files::object_from_value(value.clone())? {
                objects.push(o);
            }
        }
        Ok(Snapshot::from_objects(objects))
    }

    /// Writes back the status of every object in `with_status`.
    pub fn store_status(&mut self, with_status: Vec<Value>) {
        for v in with_status {
            let key = key_of(&v);
            if let Some(obj) = self.objects.get_mut(&key) {
                obj["status"] = v["status"].clone();
            }
        }
    }
}
