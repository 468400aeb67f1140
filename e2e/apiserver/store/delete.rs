//! Deletion: finalizers, garbage collection, namespaces and CRDs.
use serde_json::{Value, json};

use super::{EventType, Key, Store, Stored, has_finalizers, meta, meta_mut, owner_uids};
use crate::errors::{ApiError, ApiResult};
use crate::resources::{CRDS, NAMESPACES, ResourceType};
use crate::selectors::Selectors;
use crate::util;

impl Store {
    /// Deletes an object (finalizers and garbage collection included).
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let gr = rt.group_resource();
        let key = Self::key(rt, ns, name);
        let stored = self
            .lookup(&gr, &key)
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            let pointer = format!("/preconditions/{field}");
            if let Some(want) = options.pointer(&pointer).and_then(Value::as_str) {
                let have = meta(&stored.obj, field).unwrap_or_default();
                if want != have {
                    return Err(ApiError::conflict(
                        rt,
                        name,
                        &format!(
                            "Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}"
                        ),
                    ));
                }
            }
        }
        if dry_run {
            return Ok(Self::present(rt, &stored.obj));
        }
        let orphan = options.get("propagationPolicy").and_then(Value::as_str) == Some("Orphan")
            || options.get("orphanDependents").and_then(Value::as_bool) == Some(true);
        let obj = self.delete_internal(&gr, &key, orphan);
        Ok(Self::present(rt, &obj))
    }

    /// Deletes all matching objects of a kind.
    pub fn delete_collection(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        sel: &Selectors,
        options: &Value,
        dry_run: bool,
    ) -> ApiResult<Vec<Value>> {
        let names: Vec<(String, String)> = self
            .list(rt, ns, sel)
            .iter()
            .map(|o| {
                (
                    meta(o, "namespace").unwrap_or_default(),
                    meta(o, "name").unwrap_or_default(),
                )
            })
            .collect();
        let mut out = Vec::new();
        for (n, name) in names {
            if let Ok(o) = self.delete(rt, &n, &name, options, dry_run) {
                out.push(o);
            }
        }
        Ok(out)
    }

    /// Starts deletion: marks objects with finalizers, removes the others.
    pub(super) fn delete_internal(&mut self, gr: &str, key: &Key, orphan: bool) -> Value {
        let Some(stored) = self.lookup(gr, key).cloned() else {
            return Value::Null;
        };
        let is_namespace = gr == NAMESPACES;
        if !has_finalizers(&stored.obj) && !is_namespace {
            return self.remove_object(gr, key, orphan);
        }
        let mut obj = stored.obj.clone();
        if meta(&obj, "deletionTimestamp").is_none() {
            let generation = obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let m = meta_mut(&mut obj);
            m.insert(
                "deletionTimestamp".into(),
                Value::String(util::now_rfc3339()),
            );
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            m.insert("generation".into(), json!(generation + 1));
            if is_namespace {
                obj["status"] = json!({"phase": "Terminating"});
            }
            let rv = self.bump();
            meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
            if let Some(objs) = self.objects.get_mut(gr) {
                objs.insert(
                    key.clone(),
                    Stored {
                        obj: obj.clone(),
                        managers: stored.managers,
                    },
                );
            }
            self.record(gr, EventType::Modified, &obj, Some(stored.obj));
        }
        if is_namespace {
            let ns = key.1.clone();
            let contents: Vec<(String, Key)> = self
                .objects
                .iter()
                .flat_map(|(g, objs)| {
                    objs.keys()
                        .filter(|(n, _)| *n == ns)
                        .map(|k| (g.clone(), k.clone()))
                        .collect::<Vec<_>>()
                })
                .collect();
            for (g, k) in contents {
                self.delete_internal(&g, &k, false);
            }
            if !has_finalizers(&obj) && !self.namespace_has_objects(&ns) {
                return self.remove_object(gr, key, false);
            }
            return self.lookup(gr, key).map(|s| s.obj.clone()).unwrap_or(obj);
        }
        obj
    }

    fn namespace_has_objects(&self, ns: &str) -> bool {
        self.objects
            .values()
            .any(|objs| objs.keys().any(|(n, _)| n == ns))
    }

    /// Removes an object for good, then what depends on it.
    pub(super) fn remove_object(&mut self, gr: &str, key: &Key, orphan: bool) -> Value {
        let Some(stored) = self.objects.get_mut(gr).and_then(|m| m.remove(key)) else {
            return Value::Null;
        };
        let mut obj = stored.obj;
        let rv = self.bump();
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        self.record(gr, EventType::Deleted, &obj, None);

        if gr == CRDS {
            let name = key.1.clone();
            let owned_gr = self
                .types
                .iter()
                .find(|t| t.crd.as_deref() == Some(name.as_str()))
                .map(ResourceType::group_resource);
            if let Some(owned_gr) = owned_gr {
                let keys: Vec<Key> = self
                    .objects
                    .get(&owned_gr)
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                for k in keys {
                    self.remove_object(&owned_gr, &k, false);
                }
            }
            self.types
                .retain(|t| t.crd.as_deref() != Some(name.as_str()));
        }

        if !orphan && let Some(uid) = meta(&obj, "uid") {
            // One allocation-free pass finds the objects this one owns; the
            // set of live owners is built only when there are some.
            let mut dependents: Vec<(String, Key)> = self
                .objects
                .iter()
                .flat_map(|(g, objs)| {
                    objs.iter()
                        .filter(|(_, s)| owned_by(&s.obj, &uid))
                        .map(|(k, _)| (g.clone(), k.clone()))
                })
                .collect();
            if !dependents.is_empty() {
                let alive = self.live_uids();
                dependents.retain(|(g, k)| {
                    let owners = self.lookup(g, k).map(|s| owner_uids(&s.obj));
                    !owners.unwrap_or_default().iter().any(|o| alive.contains(o))
                });
            }
            for (g, k) in dependents {
                self.delete_internal(&g, &k, false);
            }
        }

        let ns = key.0.clone();
        if !ns.is_empty() {
            let ns_key = (String::new(), ns.clone());
            let terminating = self.lookup(NAMESPACES, &ns_key).is_some_and(|n| {
                meta(&n.obj, "deletionTimestamp").is_some() && !has_finalizers(&n.obj)
            });
            if terminating && !self.namespace_has_objects(&ns) {
                self.remove_object(NAMESPACES, &ns_key, false);
            }
        }
        obj
    }
}

/// (`Value::pointer` would allocate per path segment, per object, per delete.)
fn owned_by(obj: &Value, uid: &str) -> bool {
    obj.get("metadata")
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        })
}
