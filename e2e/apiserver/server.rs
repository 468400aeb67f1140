//! HTTP routing: discovery, the resource verbs, and watch streams.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, header};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::discovery;
use crate::errors::{ApiError, ApiResult};
use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector, Selectors};
use crate::store::{EventType, PatchType, Store, WatchRecord, WriteOptions};
use crate::util;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Shared state of the server.
pub struct App {
    store: Mutex<Store>,
    /// Carries the newest resourceVersion to waiting watches.
    changed: watch::Sender<u64>,
    /// `host:port` clients reach the server at.
    pub server_address: String,
    pub bookmark_interval: Duration,
}

impl App {
    pub fn new(store: Store, server_address: String, bookmark_interval: Duration) -> Arc<Self> {
        let (changed, _) = watch::channel(store.resource_version());
        Arc::new(Self {
            store: Mutex::new(store),
            changed,
            server_address,
            bookmark_interval,
        })
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a write and wakes the watches.
    fn write<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let mut store = self.store();
        let out = f(&mut store);
        self.changed.send_replace(store.resource_version());
        out
    }
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    fn selectors(&self) -> ApiResult<Selectors> {
        Ok(Selectors {
            labels: LabelSelector::parse(self.get("labelSelector").unwrap_or(""))
                .map_err(ApiError::bad_request)?,
            fields: FieldSelector::parse(self.get("fieldSelector").unwrap_or(""))
                .map_err(ApiError::bad_request)?,
        })
    }

    fn write_options(&self) -> WriteOptions {
        WriteOptions {
            dry_run: self.get("dryRun") == Some("All"),
            field_manager: self
                .get("fieldManager")
                .filter(|s| !s.is_empty())
                .map(String::from),
            force: self.flag("force"),
        }
    }
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes)).boxed_unsync()
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    json_response_typed(code, v, "application/json")
}

fn json_response_typed(code: u16, v: &Value, content_type: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(full(serde_json::to_vec(v).unwrap_or_default()))
        .expect("response")
}

/// Serves one request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Query(util::parse_query(req.uri().query().unwrap_or("")));
    let header_str = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let accept = header_str(header::ACCEPT);
    let content_type = header_str(header::CONTENT_TYPE);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let err = ApiError::bad_request(format!("reading the request body: {e}"));
            return Ok(json_response(err.code, &err.status()));
        }
    };
    let request = Req {
        method: &method,
        path: &path,
        query: &query,
        accept: &accept,
        content_type: &content_type,
        body: &body,
    };
    let response = match route(&app, &request) {
        Ok(r) => r,
        Err(e) => json_response(e.code, &e.status()),
    };
    tracing::debug!(
        method = %method,
        path = %path,
        query = ?query.0,
        status = response.status().as_u16(),
        "request"
    );
    Ok(response)
}

struct Req<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a Query,
    accept: &'a str,
    content_type: &'a str,
    body: &'a [u8],
}

fn route(app: &Arc<App>, req: &Req) -> ApiResult<Response<Body>> {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let discovery_get = || -> ApiResult<()> {
        if req.method == Method::GET {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({})",
                req.path
            )))
        }
    };
    let aggregated = req.accept.contains("as=APIGroupDiscoveryList");
    const AGGREGATED_TYPE: &str =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    match segs.as_slice() {
        ["version"] => {
            discovery_get()?;
            Ok(json_response(200, &discovery::version()))
        }
        ["healthz" | "livez" | "readyz"] => Ok(Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(full(b"ok".to_vec()))
            .expect("response")),
        ["api"] => {
            discovery_get()?;
            if aggregated {
                let doc = discovery::aggregated(app.store().types(), true);
                return Ok(json_response_typed(200, &doc, AGGREGATED_TYPE));
            }
            Ok(json_response(
                200,
                &discovery::core_versions(&app.server_address),
            ))
        }
        ["apis"] => {
            discovery_get()?;
            let store = app.store();
            if aggregated {
                let doc = discovery::aggregated(store.types(), false);
                return Ok(json_response_typed(200, &doc, AGGREGATED_TYPE));
            }
            Ok(json_response(200, &discovery::group_list(store.types())))
        }
        ["api", version] => {
            discovery_get()?;
            discovery::resource_list(app.store().types(), "", version)
                .map(|d| json_response(200, &d))
                .ok_or_else(|| ApiError::path_not_found(req.path))
        }
        ["apis", group] => {
            discovery_get()?;
            discovery::group(app.store().types(), group)
                .map(|d| json_response(200, &d))
                .ok_or_else(|| ApiError::path_not_found(req.path))
        }
        ["apis", group, version] => {
            discovery_get()?;
            discovery::resource_list(app.store().types(), group, version)
                .map(|d| json_response(200, &d))
                .ok_or_else(|| ApiError::path_not_found(req.path))
        }
        ["api", version, rest @ ..] => resource(app, req, "", version, rest),
        ["apis", group, version, rest @ ..] => resource(app, req, group, version, rest),
        _ => Err(ApiError::path_not_found(req.path)),
    }
}

fn parse_body(req: &Req, yaml: bool) -> ApiResult<Value> {
    if req.body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let parsed = if yaml || req.content_type.contains("yaml") {
        serde_yaml_ng::from_slice::<Value>(req.body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<Value>(req.body).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| ApiError::bad_request(format!("the request body is not valid: {e}")))
}

fn partial(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

fn resource(
    app: &Arc<App>,
    req: &Req,
    group: &str,
    version: &str,
    rest: &[&str],
) -> ApiResult<Response<Body>> {
    let namespace_subresource = group.is_empty()
        && rest.len() == 3
        && rest[0] == "namespaces"
        && matches!(rest[2], "status" | "finalize");
    let (ns, rest) = if rest.len() >= 3 && rest[0] == "namespaces" && !namespace_subresource {
        (Some(rest[1]), &rest[2..])
    } else {
        (None, rest)
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, s] => (*p, Some(*n), Some(*s)),
        _ => return Err(ApiError::path_not_found(req.path)),
    };
    let not_found = || ApiError::path_not_found(req.path);
    let rt = app
        .store()
        .find_type(group, version, plural)
        .ok_or_else(not_found)?;
    if ns.is_some() && !rt.namespaced {
        return Err(not_found());
    }
    if rt.namespaced && ns.is_none() && name.is_some() {
        return Err(not_found());
    }
    let status_only = match sub {
        None => false,
        Some("status") if rt.status => true,
        Some(_) => return Err(not_found()),
    };
    let ns_str = ns.unwrap_or("");
    let q = req.query;
    let opts = q.write_options();
    let wants_partial = req.accept.contains("as=PartialObjectMetadata");
    let respond = |code: u16, obj: Value| {
        let obj = if wants_partial { partial(&obj) } else { obj };
        Ok(json_response(code, &obj))
    };
    let method_not_allowed = || {
        Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({})",
            req.path
        )))
    };
    match (req.method.clone(), name) {
        (Method::GET, None) => {
            let sel = q.selectors()?;
            if q.flag("watch") {
                return watch(app, &rt, ns, sel, q, wants_partial);
            }
            let store = app.store();
            let items: Vec<Value> = store
                .list(&rt, ns, &sel)
                .iter()
                .map(|o| if wants_partial { partial(o) } else { o.clone() })
                .collect();
            let (kind, api_version) = if wants_partial {
                (
                    "PartialObjectMetadataList".to_string(),
                    "meta.k8s.io/v1".to_string(),
                )
            } else {
                (rt.list_kind.clone(), rt.api_version())
            };
            Ok(json_response(
                200,
                &json!({
                    "kind": kind,
                    "apiVersion": api_version,
                    "metadata": {"resourceVersion": store.resource_version().to_string()},
                    "items": items,
                }),
            ))
        }
        (Method::POST, None) => {
            if rt.namespaced && ns.is_none() {
                return method_not_allowed();
            }
            let body = parse_body(req, false)?;
            let obj = app.write(|s| s.create(&rt, ns_str, body, &opts))?;
            respond(201, obj)
        }
        (Method::DELETE, None) => {
            let sel = q.selectors()?;
            let options = parse_body(req, false).unwrap_or(json!({}));
            let items =
                app.write(|s| s.delete_collection(&rt, ns, &sel, &options, opts.dry_run))?;
            let rv = app.store().resource_version();
            Ok(json_response(
                200,
                &json!({
                    "kind": rt.list_kind,
                    "apiVersion": rt.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()},
                    "items": items,
                }),
            ))
        }
        (Method::GET, Some(name)) => {
            let obj = app.store().get(&rt, ns_str, name)?;
            respond(200, obj)
        }
        (Method::PUT, Some(name)) => {
            let body = parse_body(req, false)?;
            let (obj, created) =
                app.write(|s| s.update(&rt, ns_str, name, body, status_only, &opts))?;
            respond(if created { 201 } else { 200 }, obj)
        }
        (Method::PATCH, Some(name)) => {
            let ct = req.content_type.split(';').next().unwrap_or("").trim();
            let kind = match ct {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    PatchType::Merge
                }
                "application/json-patch+json" => PatchType::Json,
                "application/apply-patch+yaml" | "application/apply-patch+json" => PatchType::Apply,
                other => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!(
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                        ),
                    ));
                }
            };
            let body = parse_body(req, kind == PatchType::Apply)?;
            let (obj, created) =
                app.write(|s| s.patch(&rt, ns_str, name, kind, body, status_only, &opts))?;
            respond(if created { 201 } else { 200 }, obj)
        }
        (Method::DELETE, Some(name)) if !status_only => {
            let options = parse_body(req, false).unwrap_or(json!({}));
            let obj = app.write(|s| s.delete(&rt, ns_str, name, &options, opts.dry_run))?;
            respond(200, obj)
        }
        _ => method_not_allowed(),
    }
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

struct WatchState {
    app: Arc<App>,
    rt: ResourceType,
    ns: Option<String>,
    sel: Selectors,
    partial: bool,
    last: u64,
    pending: VecDeque<Bytes>,
    rx: watch::Receiver<u64>,
    deadline: Instant,
    bookmarks: bool,
    done: bool,
}

impl WatchState {
    fn object(&self, obj: &Value) -> Value {
        let obj = Store::present(&self.rt, obj);
        if self.partial { partial(&obj) } else { obj }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let (kind, api_version) = if self.partial {
            (
                "PartialObjectMetadata".to_string(),
                "meta.k8s.io/v1".to_string(),
            )
        } else {
            (self.rt.kind.clone(), self.rt.api_version())
        };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            json!({"kind": kind, "apiVersion": api_version, "metadata": metadata}),
        )
    }

    fn expired(&mut self, rv: u64) {
        let err = ApiError::expired(format!("too old resource version: {rv}"));
        self.pending.push_back(line("ERROR", err.status()));
        self.done = true;
    }

    fn convert(&self, r: &WatchRecord) -> Option<Bytes> {
        let now = self.sel.matches(&r.obj);
        let kind = match r.event {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => now.then_some("DELETED"),
            EventType::Modified => {
                let before = r.old.as_ref().is_some_and(|o| self.sel.matches(o));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }?;
        Some(line(kind, self.object(&r.obj)))
    }

    /// Queues what happened since `last`.
    fn poll_store(&mut self) {
        let app = self.app.clone();
        let store = app.store();
        match store.events_since(self.last, &self.rt.group_resource(), self.ns.as_deref()) {
            None => self.expired(self.last),
            Some(records) => {
                for r in &records {
                    if let Some(b) = self.convert(r) {
                        self.pending.push_back(b);
                    }
                }
                self.last = self.last.max(store.resource_version());
            }
        }
    }
}

async fn next_chunk(mut st: WatchState) -> Option<(Result<Frame<Bytes>, Infallible>, WatchState)> {
    loop {
        if let Some(b) = st.pending.pop_front() {
            return Some((Ok(Frame::data(b)), st));
        }
        if st.done {
            return None;
        }
        st.poll_store();
        if !st.pending.is_empty() || st.done {
            continue;
        }
        let interval = st.app.bookmark_interval;
        tokio::select! {
            r = st.rx.changed() => {
                if r.is_err() {
                    st.done = true;
                }
            }
            _ = tokio::time::sleep_until(st.deadline) => st.done = true,
            _ = tokio::time::sleep(interval), if st.bookmarks => {
                let b = st.bookmark(st.last, false);
                st.pending.push_back(b);
            }
        }
    }
}

fn watch(
    app: &Arc<App>,
    rt: &ResourceType,
    ns: Option<&str>,
    sel: Selectors,
    q: &Query,
    partial: bool,
) -> ApiResult<Response<Body>> {
    let rv_param = q.get("resourceVersion").unwrap_or("");
    let send_initial = q.flag("sendInitialEvents");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let requested: u64 = if rv_param.is_empty() {
        0
    } else {
        rv_param.parse().map_err(|_| {
            ApiError::invalid(
                rt,
                "",
                format!("resourceVersion: Invalid value: {rv_param:?}: must be a number"),
            )
        })?
    };
    let mut st = WatchState {
        app: app.clone(),
        rt: rt.clone(),
        ns: ns.map(String::from),
        sel,
        partial,
        last: requested,
        pending: VecDeque::new(),
        rx: app.changed.subscribe(),
        deadline: Instant::now() + Duration::from_secs(timeout),
        bookmarks: q.flag("allowWatchBookmarks"),
        done: false,
    };
    if requested == 0 || send_initial {
        let store = app.store();
        for obj in store.list(rt, ns, &st.sel) {
            let obj = if partial { self::partial(&obj) } else { obj };
            st.pending.push_back(line("ADDED", obj));
        }
        st.last = store.resource_version();
        if send_initial {
            let b = st.bookmark(st.last, true);
            st.pending.push_back(b);
        }
    } else if app
        .store()
        .events_since(requested, &rt.group_resource(), ns)
        .is_none()
    {
        st.expired(requested);
    }
    let stream = futures_util::stream::unfold(st, next_chunk);
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(StreamBody::new(stream).boxed_unsync())
        .expect("response"))
}
