//! The file provider: Gateway API and core objects from YAML files and
//! directories, and a watcher that says when they change.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::snapshot::Object;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Input that cannot be read or parsed. Invalid-but-parseable objects are not
/// errors: they surface in status.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LoadError {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Object>,
    /// Documents of kinds we do not read, one line each.
    pub warnings: Vec<String>,
}

/// Reads every path: a file, or a directory searched recursively for
/// `*.yaml`, `*.yml` and `*.json`, in name order.
pub fn load(paths: &[PathBuf]) -> Result<Loaded, LoadError> {
    let mut loaded = Loaded::default();
    for path in paths {
        for file in expand(path)? {
            let text = std::fs::read_to_string(&file).map_err(|e| err(&file, e))?;
            parse_into(&text, &file, &mut loaded)?;
        }
    }
    Ok(loaded)
}

fn expand(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let meta = std::fs::metadata(path).map_err(|e| err(path, e))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| err(path, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| err(path, e))?;
    entries.sort();
    let mut files = Vec::new();
    for entry in entries {
        let name = entry
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if entry.is_dir() {
            files.extend(expand(&entry)?);
        } else if is_manifest(&entry) {
            files.push(entry);
        }
    }
    Ok(files)
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Parses a YAML stream (JSON is YAML too) into `loaded`.
pub fn parse_into(text: &str, file: &Path, loaded: &mut Loaded) -> Result<(), LoadError> {
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let at = format!("{} (document {})", file.display(), index + 1);
        let value = Value::deserialize(document).map_err(|e| LoadError {
            path: at.clone(),
            message: format!("invalid YAML: {e}"),
        })?;
        if value.is_null() {
            continue;
        }
        match parse_object(value) {
            Ok(Some(object)) => loaded.objects.push(object),
            Ok(None) => {}
            Err(Unread(what)) => loaded.warnings.push(format!("{at}: ignoring {what}")),
            Err(Invalid(message)) => return Err(LoadError { path: at, message }),
        }
    }
    Ok(())
}

/// One already-parsed document as an object: `Ok(None)` for a kind we do
/// not read. Other providers (and test harnesses) feed values through here.
pub fn object_from_value(value: Value) -> Result<Option<Object>, String> {
    match parse_object(value) {
        Ok(o) => Ok(o),
        Err(Unread(_)) => Ok(None),
        Err(Invalid(message)) => Err(message),
    }
}

enum Failure {
    Unread(String),
    Invalid(String),
}
use Failure::{Invalid, Unread};

/// A `List` is unpacked; kinds we do not read are reported, not fatal.
fn parse_object(mut value: Value) -> Result<Option<Object>, Failure> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind.is_empty() || api_version.is_empty() {
        return Err(Invalid("document has no kind or apiVersion".into()));
    }
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let namespaced = kind != "GatewayClass" && kind != "Namespace";
    if namespaced {
        default_namespace(&mut value);
    }
    let object = match (group, kind.as_str()) {
        (GATEWAY_GROUP, "GatewayClass") => Object::GatewayClass(typed(value, &kind)?),
        (GATEWAY_GROUP, "Gateway") => Object::Gateway(typed(value, &kind)?),
        (GATEWAY_GROUP, "HTTPRoute") => Object::HttpRoute(typed(value, &kind)?),
        (GATEWAY_GROUP, "GRPCRoute") => Object::GrpcRoute(typed(value, &kind)?),
        (GATEWAY_GROUP, "ReferenceGrant") => Object::ReferenceGrant(typed(value, &kind)?),
        (GATEWAY_GROUP, "BackendTLSPolicy") => Object::BackendTlsPolicy(typed(value, &kind)?),
        ("", "Namespace") => Object::Namespace(typed(value, &kind)?),
        ("", "Service") => Object::Service(typed(value, &kind)?),
        ("", "Secret") => Object::Secret(typed(value, &kind)?),
        ("", "ConfigMap") => Object::ConfigMap(typed(value, &kind)?),
        ("discovery.k8s.io", "EndpointSlice") => Object::EndpointSlice(typed(value, &kind)?),
        (crate::crd::GROUP, crate::crd::KIND) => Object::KengineInstance(typed(value, &kind)?),
        _ => {
            let name = value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            return Err(Unread(format!(
                "unsupported kind {api_version}/{kind} {name:?}"
            )));
        }
    };
    Ok(Some(object))
}

fn default_namespace(value: &mut Value) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        let missing = meta
            .get("namespace")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if missing {
            meta.insert("namespace".into(), Value::String("default".into()));
        }
    }
}

/// The typed structs ignore apiVersion, so v1beta1 and v1 of a kind both fit.
fn typed<T: DeserializeOwned>(value: Value, kind: &str) -> Result<T, Failure> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    serde_json::from_value(value).map_err(|e| Invalid(format!("{kind} {name:?}: {e}")))
}

fn err(path: &Path, e: impl std::fmt::Display) -> LoadError {
    LoadError {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Watches `paths` and wakes `Changes` for every change under them, except
/// to the paths in `ignore` (our own output, e.g. the status file: its writes
/// would wake us again without end). Files are watched through their
/// directory, because editors replace files by rename. The returned watcher
/// must be kept alive.
pub fn watch(
    paths: &[PathBuf],
    ignore: &[PathBuf],
) -> notify::Result<(notify::RecommendedWatcher, Changes)> {
    use notify::{RecursiveMode, Watcher};
    use std::path::absolute;
    let (tx, rx) = mpsc::channel(1);
    let changed = ChangedPaths::default();
    let files: Vec<PathBuf> = paths.iter().filter(|p| !p.is_dir()).cloned().collect();
    let ignore: Vec<PathBuf> = ignore.iter().filter_map(|p| absolute(p).ok()).collect();
    let sink = changed.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        // A watched directory holding a watched file also reports its siblings.
        let relevant: Vec<&PathBuf> = event
            .paths
            .iter()
            .filter(|p| {
                is_manifest(p)
                    || files
                        .iter()
                        .any(|f| f == *p || f.file_name() == p.file_name())
            })
            .filter(|p| absolute(p).is_ok_and(|p| !ignore.contains(&p)))
            .collect();
        if relevant.is_empty() {
            return;
        }
        sink.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(relevant.into_iter().cloned());
        // A full channel already holds a pending wake-up: coalesced.
        let _ = tx.try_send(());
    })?;
    for path in paths {
        if path.is_dir() {
            watcher.watch(path, RecursiveMode::Recursive)?;
        } else {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
    }
    Ok((watcher, Changes { rx, changed }))
}

/// What the watcher saw: a wake-up, and the paths changed since the last
/// `take`.
pub struct Changes {
    rx: mpsc::Receiver<()>,
    changed: ChangedPaths,
}

type ChangedPaths = std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<PathBuf>>>;

impl Changes {
    /// Waits for the next change; `None` once the watcher is gone.
    pub async fn recv(&mut self) -> Option<()> {
        self.rx.recv().await
    }

    /// The paths changed since the last call.
    pub fn take(&mut self) -> std::collections::BTreeSet<PathBuf> {
        std::mem::take(&mut *self.changed.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Loaded, LoadError> {
        let mut loaded = Loaded::default();
        parse_into(text, Path::new("t.yaml"), &mut loaded).map(|_| loaded)
    }

    #[test]
    fn reads_multi_document_streams_and_defaults_namespace() {
        let loaded = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n# only a comment\n---\n\
             apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
             metadata: {name: g, namespace: x}\nspec: {from: [], to: []}\n",
        )
        .unwrap();
        assert_eq!(loaded.objects.len(), 2);
        let Object::Service(svc) = &loaded.objects[0] else {
            panic!("not a service")
        };
        assert_eq!(svc.metadata.namespace.as_deref(), Some("default"));
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn warns_about_other_kinds() {
        let loaded = parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n").unwrap();
        assert!(loaded.objects.is_empty());
        assert_eq!(loaded.warnings.len(), 1);
        assert!(
            loaded.warnings[0].contains("apps/v1/Deployment \"d\""),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn rejects_unparseable_input_with_location() {
        let e =
            parse("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n: : :\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.yaml (document 2): invalid YAML"),
            "{e}"
        );
        let e = parse("kind: Service\n").unwrap_err();
        assert!(e.to_string().contains("no kind or apiVersion"), "{e}");
        let e = parse("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {listeners: 3}\n")
            .unwrap_err();
        assert!(e.to_string().contains("Gateway \"g\""), "{e}");
    }

    #[test]
    fn reads_directories_recursively_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let ns = |n: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}\n");
        std::fs::write(dir.path().join("b.yaml"), ns("b")).unwrap();
        std::fs::write(dir.path().join("sub/a.yml"), ns("c")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), ns("a")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
        let loaded = load(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<_> = loaded
            .objects
            .iter()
            .map(|o| match o {
                Object::Namespace(n) => n.metadata.name.clone().unwrap(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        let e = load(&[dir.path().join("missing.yaml")]).unwrap_err();
        assert!(e.to_string().contains("missing.yaml"), "{e}");
    }
}
