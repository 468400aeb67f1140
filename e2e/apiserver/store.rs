//! The object store: every object of every kind in memory, a global
//! resourceVersion counter, and a bounded history of watch events.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{Map, Value, json};

use crate::errors::{ApiError, ApiResult};
use crate::patch::{self, FieldPath};
use crate::resources::{self, CRDS, DEPLOYMENTS, NAMESPACES, ResourceType, SERVICES};
use crate::schema;

mod apply;
mod delete;
#[cfg(test)]
mod tests;

use crate::selectors::Selectors;
use crate::util;

/// (namespace, name); the namespace is empty for cluster-scoped objects.
type Key = (String, String);

/// Fields one server-side apply manager set last time.
#[derive(Debug, Clone, PartialEq)]
struct Managed {
    paths: BTreeSet<FieldPath>,
    time: String,
}

/// (field manager, applied to the status subresource).
type Managers = BTreeMap<(String, bool), Managed>;

#[derive(Debug, Clone)]
struct Stored {
    obj: Value,
    managers: Managers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One entry of the watch history.
#[derive(Debug, Clone)]
pub struct WatchRecord {
    pub rv: u64,
    pub group_resource: String,
    pub namespace: String,
    pub event: EventType,
    pub obj: Value,
    /// The object before a modification (for selector transitions).
    pub old: Option<Value>,
}

/// How a write is to be done.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Apply,
}

pub struct Store {
    rv: u64,
    types: Vec<ResourceType>,
    objects: BTreeMap<String, BTreeMap<Key, Stored>>,
    history: VecDeque<WatchRecord>,
    history_limit: usize,
    /// The newest resourceVersion dropped from the history.
    compacted: u64,
    next_cluster_ip: u32,
}

fn meta(obj: &Value, field: &str) -> Option<String> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    obj["metadata"].as_object_mut().expect("metadata object")
}

fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The object with everything that is not desired state removed, for
/// generation bumps.
fn desired_state(obj: &Value, ignore_status: bool) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        for k in ["metadata", "apiVersion", "kind"] {
            m.remove(k);
        }
        if ignore_status {
            m.remove("status");
        }
    }
    v
}

/// Equality that ignores what a no-op write would change anyway.
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("apiVersion");
        }
        meta_mut(&mut v).remove("resourceVersion");
        v
    };
    strip(a) == strip(b)
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let mut store = Self {
            rv: 0,
            types: resources::builtin_types(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            next_cluster_ip: 1,
        };
        let ns_type = store.find_type("", "v1", "namespaces").expect("namespaces");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store
                .create(
                    &ns_type,
                    "",
                    json!({"metadata": {"name": ns}}),
                    &WriteOptions::default(),
                )
                .expect("initial namespace");
        }
        store
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    pub fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    pub fn present(rt: &ResourceType, obj: &Value) -> Value {
        let mut v = obj.clone();
        v["apiVersion"] = Value::String(rt.api_version());
        v["kind"] = Value::String(rt.kind.clone());
        v
    }

    fn lookup(&self, gr: &str, key: &Key) -> Option<&Stored> {
        self.objects.get(gr).and_then(|m| m.get(key))
    }

    fn key(rt: &ResourceType, ns: &str, name: &str) -> Key {
        let ns = if rt.namespaced { ns } else { "" };
        (ns.to_string(), name.to_string())
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, gr: &str, event: EventType, obj: &Value, old: Option<Value>) {
        self.history.push_back(WatchRecord {
            rv: self.rv,
            group_resource: gr.to_string(),
            namespace: meta(obj, "namespace").unwrap_or_default(),
            event,
            obj: obj.clone(),
            old,
        });
        while self.history.len() > self.history_limit {
            if let Some(r) = self.history.pop_front() {
                self.compacted = r.rv;
            }
        }
    }

    /// Watch events after `rv` for one group-resource, or `None` when the
    /// history no longer reaches back that far.
    pub fn events_since(&self, rv: u64, gr: &str, ns: Option<&str>) -> Option<Vec<WatchRecord>> {
        if rv < self.compacted {
            return None;
        }
        let start = self.history.partition_point(|r| r.rv <= rv);
        Some(
            self.history
                .range(start..)
                .filter(|r| r.group_resource == gr && ns.is_none_or(|n| n == r.namespace))
                .cloned()
                .collect(),
        )
    }

    pub fn list(&self, rt: &ResourceType, ns: Option<&str>, sel: &Selectors) -> Vec<Value> {
        let Some(objs) = self.objects.get(&rt.group_resource()) else {
            return Vec::new();
        };
        objs.iter()
            .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
            .filter(|(_, s)| sel.matches(&s.obj))
            .map(|(_, s)| Self::present(rt, &s.obj))
            .collect()
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<Value> {
        self.lookup(&rt.group_resource(), &Self::key(rt, ns, name))
            .map(|s| Self::present(rt, &s.obj))
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    fn check_type_meta(rt: &ResourceType, obj: &mut Value) -> ApiResult<()> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
            && !av.is_empty()
            && av != rt.api_version()
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                rt.api_version()
            )));
        }
        if let Some(kind) = obj.get("kind").and_then(Value::as_str)
            && !kind.is_empty()
            && kind != rt.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        obj["apiVersion"] = Value::String(rt.api_version());
        obj["kind"] = Value::String(rt.kind.clone());
        meta_mut(obj);
        Ok(())
    }

    fn check_namespace(rt: &ResourceType, obj: &Value, ns: &str) -> ApiResult<()> {
        if rt.namespaced
            && let Some(n) = meta(obj, "namespace")
            && n != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Ok(())
    }

    /// Creates an object (POST).
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        Self::check_type_meta(rt, &mut obj)?;
        Self::check_namespace(rt, &obj, ns)?;
        let name = match meta(&obj, "name") {
            Some(n) => n,
            None => match meta(&obj, "generateName") {
                Some(prefix) => loop {
                    let candidate = format!("{prefix}{}", util::random_suffix());
                    if self
                        .lookup(&rt.group_resource(), &Self::key(rt, ns, &candidate))
                        .is_none()
                    {
                        break candidate;
                    }
                },
                None => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        self.create_named(rt, ns, &name, obj, Managers::new(), opts)
    }

    fn create_named(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut obj: Value,
        managers: Managers,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let valid = if rt.group_resource() == NAMESPACES {
            util::is_dns_label(name)
        } else {
            util::is_dns_subdomain(name)
        };
        if !valid {
            return Err(ApiError::invalid(
                rt,
                name,
                format!(
                    "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            ));
        }
        if rt.namespaced {
            match self.lookup(NAMESPACES, &(String::new(), ns.to_string())) {
                None => {
                    let ns_type = self.find_type("", "v1", "namespaces").expect("namespaces");
                    return Err(ApiError::not_found(&ns_type, ns));
                }
                Some(n) if meta(&n.obj, "deletionTimestamp").is_some() => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        rt.group_resource()
                    )));
                }
                Some(_) => {}
            }
        }
        let gr = rt.group_resource();
        let key = Self::key(rt, ns, name);
        if self.lookup(&gr, &key).is_some() {
            return Err(ApiError::already_exists(rt, name));
        }
        let m = meta_mut(&mut obj);
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
            "selfLink",
        ] {
            m.remove(f);
        }
        m.insert("name".into(), Value::String(name.to_string()));
        if rt.namespaced {
            m.insert("namespace".into(), Value::String(ns.to_string()));
        } else {
            m.remove("namespace");
        }
        if rt.status
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        self.admit(rt, None, &mut obj)?;
        let m = meta_mut(&mut obj);
        m.insert("uid".into(), Value::String(util::new_uid()));
        m.insert(
            "creationTimestamp".into(),
            Value::String(util::now_rfc3339()),
        );
        m.insert("generation".into(), json!(1));
        Self::render_managed_fields(rt, &mut obj, &managers);
        if opts.dry_run {
            return Ok(Self::present(rt, &obj));
        }
        let rv = self.bump();
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        self.objects.entry(gr.clone()).or_default().insert(
            key.clone(),
            Stored {
                obj: obj.clone(),
                managers,
            },
        );
        self.record(&gr, EventType::Added, &obj, None);
        self.after_write(&gr, &obj);
        // The real garbage collector also deletes an object created after
        // all its owners were gone (a controller acting on a stale cache).
        let owners = owner_uids(&obj);
        if !owners.is_empty() {
            let alive = self.live_uids();
            if !owners.iter().any(|o| alive.contains(o)) {
                self.delete_internal(&gr, &key, false);
            }
        }
        Ok(Self::present(rt, &obj))
    }

    /// The uid of every stored object: the owners the garbage collector
    /// counts as present.
    fn live_uids(&self) -> std::collections::HashSet<String> {
        self.objects
            .values()
            .flat_map(|m| m.values().filter_map(|s| meta(&s.obj, "uid")))
            .collect()
    }

    /// Kind-specific defaulting and validation, for creates and updates.
    fn admit(&mut self, rt: &ResourceType, old: Option<&Value>, obj: &mut Value) -> ApiResult<()> {
        let name = meta(obj, "name").unwrap_or_default();
        match rt.group_resource().as_str() {
            NAMESPACES => {
                let m = meta_mut(obj);
                if !m.get("labels").is_some_and(Value::is_object) {
                    m.insert("labels".into(), json!({}));
                }
                m["labels"]["kubernetes.io/metadata.name"] = Value::String(name);
                if obj.pointer("/status/phase").is_none() {
                    obj["status"] = json!({"phase": "Active"});
                }
            }
            SERVICES => self.default_service(old, obj),
            DEPLOYMENTS
                if obj.get("spec").is_some_and(Value::is_object)
                    && obj.pointer("/spec/replicas").is_none() =>
            {
                obj["spec"]["replicas"] = json!(1);
            }
            CRDS => {
                resources::crd_types(obj).map_err(|e| ApiError::invalid(rt, &name, e))?;
                if let Some(existing) = self
                    .types
                    .iter()
                    .find(|t| t.group_resource() == name && t.crd.is_none())
                {
                    return Err(ApiError::invalid(
                        rt,
                        &name,
                        format!("{} is a built-in resource", existing.group_resource()),
                    ));
                }
                Self::crd_status(obj);
            }
            _ => {}
        }
        if let Some(schema) = &rt.schema {
            schema::apply_defaults(obj, schema);
        }
        Ok(())
    }

    fn default_service(&mut self, old: Option<&Value>, obj: &mut Value) {
        if !obj.get("spec").is_some_and(Value::is_object) {
            obj["spec"] = json!({});
        }
        let spec = &mut obj["spec"];
        if spec.get("type").is_none() {
            spec["type"] = json!("ClusterIP");
        }
        if spec.get("sessionAffinity").is_none() {
            spec["sessionAffinity"] = json!("None");
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                if p.get("protocol").is_none() {
                    p["protocol"] = json!("TCP");
                }
                if p.get("targetPort").is_none()
                    && let Some(port) = p.get("port").cloned()
                {
                    p["targetPort"] = port;
                }
            }
        }
        if spec["type"] == "ExternalName" {
            return;
        }
        let ip_missing = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if ip_missing {
            let ip = match old.and_then(|o| o.pointer("/spec/clusterIP")) {
                Some(Value::String(ip)) if !ip.is_empty() => ip.clone(),
                _ => {
                    let n = self.next_cluster_ip;
                    self.next_cluster_ip += 1;
                    format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff)
                }
            };
            spec["clusterIP"] = Value::String(ip);
        }
        if spec.get("clusterIPs").is_none() {
            spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
        }
    }

    /// What the real apiextensions server reports once a CRD is served.
    fn crd_status(obj: &mut Value) {
        let now = util::now_rfc3339();
        let mut stored: Vec<Value> = obj
            .pointer("/status/storedVersions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(versions) = obj.pointer("/spec/versions").and_then(Value::as_array) {
            for v in versions {
                if v.get("storage").and_then(Value::as_bool) == Some(true)
                    && let Some(name) = v.get("name")
                    && !stored.contains(name)
                {
                    stored.push(name.clone());
                }
            }
        }
        let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
        if !obj.get("status").is_some_and(Value::is_object) {
            obj["status"] = json!({});
        }
        let status = &mut obj["status"];
        if status.get("conditions").is_none() {
            status["conditions"] = json!([
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ]);
        }
        status["acceptedNames"] = names;
        status["storedVersions"] = Value::Array(stored);
    }

    /// Registers the types of a CRD after it was written.
    fn after_write(&mut self, gr: &str, obj: &Value) {
        if gr != CRDS {
            return;
        }
        let name = meta(obj, "name").unwrap_or_default();
        self.types
            .retain(|t| t.crd.as_deref() != Some(name.as_str()));
        if let Ok(types) = resources::crd_types(obj) {
            self.types.extend(types);
        }
    }

    fn render_managed_fields(rt: &ResourceType, obj: &mut Value, managers: &Managers) {
        let entries: Vec<Value> = managers
            .iter()
            .map(|((manager, status), m)| {
                let mut e = json!({
                    "manager": manager,
                    "operation": "Apply",
                    "apiVersion": rt.api_version(),
                    "time": m.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": patch::fields_v1(&m.paths),
                });
                if *status {
                    e["subresource"] = json!("status");
                }
                e
            })
            .collect();
        let m = meta_mut(obj);
        if entries.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(entries));
        }
    }

    /// Replaces an object (PUT), or its status.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut obj: Value,
        status_only: bool,
        opts: &WriteOptions,
    ) -> ApiResult<(Value, bool)> {
        Self::check_type_meta(rt, &mut obj)?;
        Self::check_namespace(rt, &obj, ns)?;
        if let Some(n) = meta(&obj, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let gr = rt.group_resource();
        let key = Self::key(rt, ns, name);
        let Some(stored) = self.lookup(&gr, &key).cloned() else {
            let create_on_update =
                matches!(gr.as_str(), "leases.coordination.k8s.io" | "endpoints");
            if create_on_update && !status_only {
                let created = self.create_named(rt, ns, name, obj, Managers::new(), opts)?;
                return Ok((created, true));
            }
            return Err(ApiError::not_found(rt, name));
        };
        match meta(&obj, "resourceVersion") {
            Some(rv) if Some(&rv) != meta(&stored.obj, "resourceVersion").as_ref() => {
                return Err(ApiError::stale(rt, name));
            }
            None if rt.crd.is_some() => {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                ));
            }
            _ => {}
        }
        let managers = stored.managers.clone();
        let out = self.write_existing(rt, &key, stored, obj, managers, false, status_only, opts)?;
        Ok((out, false))
    }

    /// Stores a new state of an existing object. `candidate` is the whole
    /// desired object; for a status write only its status is taken.
    #[allow(clippy::too_many_arguments)]
    fn write_existing(
        &mut self,
        rt: &ResourceType,
        key: &Key,
        old: Stored,
        candidate: Value,
        mut managers: Managers,
        applied: bool,
        status_only: bool,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let gr = rt.group_resource();
        let old_obj = &old.obj;
        let mut new = if status_only {
            let mut n = old_obj.clone();
            match candidate.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(o) = n.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            n
        } else {
            let mut n = candidate;
            if rt.status {
                match old_obj.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(o) = n.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            n
        };
        set_type_meta(rt, &mut new);
        {
            let old_meta = old_obj["metadata"].as_object().cloned().unwrap_or_default();
            let m = meta_mut(&mut new);
            for f in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ] {
                match old_meta.get(f) {
                    Some(v) => {
                        m.insert(f.into(), v.clone());
                    }
                    None => {
                        m.remove(f);
                    }
                }
            }
            m.remove("selfLink");
        }
        self.admit(rt, Some(old_obj), &mut new)?;
        if desired_state(old_obj, rt.status) != desired_state(&new, rt.status) {
            let generation = old_obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(generation + 1));
        }
        apply::prune_managers(&mut managers, old_obj, &new, !applied);
        Self::render_managed_fields(rt, &mut new, &managers);
        if same_object(old_obj, &new) {
            return Ok(Self::present(rt, old_obj));
        }
        if opts.dry_run {
            return Ok(Self::present(rt, &new));
        }
        if meta(&new, "deletionTimestamp").is_some() && !has_finalizers(&new) {
            if let Some(objs) = self.objects.get_mut(&gr) {
                objs.insert(key.clone(), Stored { obj: new, managers });
            }
            let removed = self.remove_object(&gr, key, false);
            return Ok(Self::present(rt, &removed));
        }
        let rv = self.bump();
        meta_mut(&mut new).insert("resourceVersion".into(), Value::String(rv.to_string()));
        self.objects.entry(gr.clone()).or_default().insert(
            key.clone(),
            Stored {
                obj: new.clone(),
                managers,
            },
        );
        self.record(&gr, EventType::Modified, &new, Some(old.obj));
        self.after_write(&gr, &new);
        Ok(Self::present(rt, &new))
    }

    /// Patches an object or its status.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        kind: PatchType,
        body: Value,
        status_only: bool,
        opts: &WriteOptions,
    ) -> ApiResult<(Value, bool)> {
        if kind == PatchType::Apply {
            return self.apply(rt, ns, name, body, status_only, opts);
        }
        let gr = rt.group_resource();
        let key = Self::key(rt, ns, name);
        let stored = self
            .lookup(&gr, &key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let mut candidate = stored.obj.clone();
        match kind {
            PatchType::Merge => {
                if !body.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                patch::merge_patch(&mut candidate, &body);
            }
            PatchType::Json => patch::json_patch(&mut candidate, &body).map_err(|e| {
                if e.invalid {
                    ApiError::invalid(rt, name, e.message)
                } else {
                    ApiError::bad_request(e.message)
                }
            })?,
            PatchType::Apply => unreachable!(),
        }
        if let Some(rv) = meta(&candidate, "resourceVersion")
            && Some(&rv) != meta(&stored.obj, "resourceVersion").as_ref()
        {
            return Err(ApiError::stale(rt, name));
        }
        let managers = stored.managers.clone();
        let out = self.write_existing(
            rt,
            &key,
            stored,
            candidate,
            managers,
            false,
            status_only,
            opts,
        )?;
        Ok((out, false))
    }
}

fn set_type_meta(rt: &ResourceType, obj: &mut Value) {
    obj["apiVersion"] = Value::String(rt.api_version());
    obj["kind"] = Value::String(rt.kind.clone());
}
