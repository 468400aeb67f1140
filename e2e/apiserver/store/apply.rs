//! Server-side apply, approximated with per-manager sets of applied fields.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{Managed, Managers, Store, WriteOptions, meta, meta_mut};
use crate::errors::{ApiError, ApiResult};
use crate::patch::{self, FieldPath};
use crate::resources::ResourceType;
use crate::util;

/// Applied fields that count for ownership (not type or identity).
fn owned_paths(cfg: &Value) -> BTreeSet<FieldPath> {
    patch::leaf_paths(cfg)
        .into_iter()
        .filter(|p| match p[0].as_str() {
            "apiVersion" | "kind" => false,
            "metadata" => {
                p.len() > 1
                    && matches!(
                        p[1].as_str(),
                        "labels" | "annotations" | "finalizers" | "ownerReferences"
                    )
            }
            _ => true,
        })
        .collect()
}

/// Drops ownership of fields that are gone, and, after a write that is not
/// an apply (an update takes ownership), of fields whose value changed.
pub(super) fn prune_managers(managers: &mut Managers, old: &Value, new: &Value, changed_too: bool) {
    for m in managers.values_mut() {
        m.paths.retain(|p| {
            let now = patch::get_path(new, p);
            now.is_some() && (!changed_too || now == patch::get_path(old, p))
        });
    }
    managers.retain(|_, m| !m.paths.is_empty());
}

impl Store {
    /// Server-side apply, approximated: the applied configuration is merged
    /// into the object; fields the same manager applied before and left out
    /// now are removed; a field another apply manager owns with a different
    /// value is a conflict unless forced. Lists are atomic.
    pub(super) fn apply(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut cfg: Value,
        status_only: bool,
        opts: &WriteOptions,
    ) -> ApiResult<(Value, bool)> {
        let manager = opts.field_manager.clone().ok_or_else(|| {
            ApiError::bad_request("PatchOptions.fieldManager is required for apply requests")
        })?;
        if !cfg.is_object() {
            return Err(ApiError::bad_request(
                "an applied configuration must be an object",
            ));
        }
        for f in ["apiVersion", "kind"] {
            if cfg.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(format!(
                    "invalid object type: {f} must be set in an applied configuration"
                )));
            }
        }
        Self::check_type_meta(rt, &mut cfg)?;
        Self::check_namespace(rt, &cfg, ns)?;
        if let Some(n) = meta(&cfg, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let precondition = meta(&cfg, "resourceVersion");
        {
            let m = meta_mut(&mut cfg);
            for f in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
                "managedFields",
                "selfLink",
            ] {
                m.remove(f);
            }
        }
        let mut scoped = cfg.clone();
        if status_only {
            scoped = json!({"metadata": {}});
            if let Some(s) = cfg.get("status") {
                scoped["status"] = s.clone();
            }
        } else if rt.status
            && let Some(o) = scoped.as_object_mut()
        {
            o.remove("status");
        }
        let new_paths = owned_paths(&scoped);
        let gr = rt.group_resource();
        let key = Self::key(rt, ns, name);
        let now = util::now_rfc3339();
        let Some(stored) = self.lookup(&gr, &key).cloned() else {
            if status_only {
                return Err(ApiError::not_found(rt, name));
            }
            let mut managers = Managers::new();
            managers.insert(
                (manager, false),
                Managed {
                    paths: new_paths,
                    time: now,
                },
            );
            let created = self.create_named(rt, ns, name, cfg, managers, opts)?;
            return Ok((created, true));
        };
        if let Some(rv) = precondition
            && Some(&rv) != meta(&stored.obj, "resourceVersion").as_ref()
        {
            return Err(ApiError::stale(rt, name));
        }
        let mut managers = stored.managers.clone();
        let mut conflicts = Vec::new();
        for p in &new_paths {
            if patch::get_path(&scoped, p) == patch::get_path(&stored.obj, p) {
                continue;
            }
            for ((other, sub), m) in managers.iter_mut() {
                if *other != manager && *sub == status_only && m.paths.contains(p) {
                    if opts.force {
                        m.paths.remove(p);
                    } else {
                        conflicts.push(format!("conflict with \"{other}\": .{}", p.join(".")));
                    }
                }
            }
        }
        if !conflicts.is_empty() {
            let mut err = ApiError::conflict(rt, name, "apply conflict");
            err.message = format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                conflicts.join(", ")
            );
            return Err(err);
        }
        let mut candidate = stored.obj.clone();
        let previous = managers
            .get(&(manager.clone(), status_only))
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        for p in previous.difference(&new_paths) {
            let owned_elsewhere = managers
                .iter()
                .any(|((o, s), m)| *o != manager && *s == status_only && m.paths.contains(p));
            if !owned_elsewhere {
                patch::remove_path(&mut candidate, p);
            }
        }
        patch::merge_patch(&mut candidate, &scoped);
        let time = match managers.get(&(manager.clone(), status_only)) {
            Some(m) if m.paths == new_paths => m.time.clone(),
            _ => now,
        };
        managers.insert(
            (manager, status_only),
            Managed {
                paths: new_paths,
                time,
            },
        );
        managers.retain(|_, m| !m.paths.is_empty());
        let out = self.write_existing(
            rt,
            &key,
            stored,
            candidate,
            managers,
            true,
            status_only,
            opts,
        )?;
        Ok((out, false))
    }
}
