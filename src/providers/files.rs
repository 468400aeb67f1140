//! The file provider: Gateway API and core objects from YAML files and
//! directories, and a watcher that says when they change.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{base64_data, yaml_depth};
use crate::snapshot::{Object, ObjectRef};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Bounds on what one `render` or `standalone` pass reads.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
pub const MAX_TOTAL_BYTES: u64 = 256 << 20;

/// Input that cannot be read or parsed. Invalid-but-parseable objects are not
/// errors: they surface in status.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", one_line(path), one_line(message))]
pub struct LoadError {
    pub path: String,
    pub message: String,
}

/// Folds a message onto one line: stderr lines are one error each.
pub fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Object>,
    /// Documents of kinds we do not read, skipped objects, duplicates: one line each.
    pub warnings: Vec<String>,
    /// Where each object was read, to name both places of a duplicate.
    seen: BTreeMap<(&'static str, ObjectRef), String>,
}

/// Reads every path: a file, or a directory searched recursively for
/// `*.yaml`, `*.yml` and `*.json`, in name order. Only regular files are
/// read (through symlinks), each up to [`MAX_FILE_BYTES`] and all together up
/// to [`MAX_TOTAL_BYTES`]; a directory that leads back to one of its own
/// ancestors is an error, one already read elsewhere is skipped.
pub fn load(paths: &[PathBuf]) -> Result<Loaded, LoadError> {
    let mut loaded = Loaded::default();
    let mut walk = Walk::default();
    for path in paths {
        walk.expand(path, true)?;
    }
    loaded.warnings.append(&mut walk.warnings);
    let mut budget = MAX_TOTAL_BYTES;
    for file in &walk.files {
        let text = read_regular(file, budget)?;
        budget -= text.len() as u64;
        parse_into(&text, file, &mut loaded)?;
    }
    Ok(loaded)
}

#[derive(Default)]
struct Walk {
    files: Vec<PathBuf>,
    /// Canonical directories already listed, and those being listed now.
    visited: BTreeMap<PathBuf, PathBuf>,
    ancestors: BTreeSet<PathBuf>,
    warnings: Vec<String>,
}

impl Walk {
    /// `explicit`: named on the command line, so read whatever its name.
    fn expand(&mut self, path: &Path, explicit: bool) -> Result<(), LoadError> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(_) if !explicit && !is_manifest(path) => return Ok(()),
            Err(e) => return Err(err(path, e)),
        };
        if meta.is_dir() {
            return self.expand_dir(path);
        }
        if !explicit && !is_manifest(path) {
            return Ok(());
        }
        // A FIFO would block and a device never end.
        if !meta.is_file() {
            return Err(err(path, not_regular(&meta)));
        }
        self.files.push(path.to_path_buf());
        Ok(())
    }

    fn expand_dir(&mut self, path: &Path) -> Result<(), LoadError> {
        let canonical = std::fs::canonicalize(path).map_err(|e| err(path, e))?;
        if self.ancestors.contains(&canonical) {
            return Err(err(
                path,
                format!(
                    "directory loop: this is {}, which contains it",
                    canonical.display()
                ),
            ));
        }
        if let Some(first) = self.visited.get(&canonical) {
            self.warnings.push(format!(
                "{}: skipping directory, already read as {}",
                path.display(),
                first.display()
            ));
            return Ok(());
        }
        self.visited.insert(canonical.clone(), path.to_path_buf());
        self.ancestors.insert(canonical.clone());
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| err(path, e))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(|e| err(path, e))?;
        entries.sort();
        for entry in entries {
            let name = entry
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if !name.starts_with('.') {
                self.expand(&entry, false)?;
            }
        }
        self.ancestors.remove(&canonical);
        Ok(())
    }
}

fn not_regular(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    let kind = meta.file_type();
    if kind.is_fifo() {
        "not a regular file (a FIFO)"
    } else if kind.is_char_device() || kind.is_block_device() {
        "not a regular file (a device)"
    } else if kind.is_socket() {
        "not a regular file (a socket)"
    } else {
        "not a regular file"
    }
}

/// Reads a file that is still a regular file once open, up to `budget`
/// bytes (the smaller of the per-file and the remaining total limit).
fn read_regular(path: &Path, budget: u64) -> Result<String, LoadError> {
    let file = std::fs::File::open(path).map_err(|e| err(path, e))?;
    let meta = file.metadata().map_err(|e| err(path, e))?;
    if !meta.is_file() {
        return Err(err(path, not_regular(&meta)));
    }
    let limit = budget.min(MAX_FILE_BYTES);
    let too_big = || {
        if limit < MAX_FILE_BYTES {
            err(
                path,
                format!("the input is larger than {} in total", mib(MAX_TOTAL_BYTES)),
            )
        } else {
            err(path, format!("larger than {}", mib(MAX_FILE_BYTES)))
        }
    };
    if meta.len() > limit {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    // The file may grow after the check.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|e| err(path, format!("not UTF-8: {e}")))
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Parses a YAML stream (JSON is YAML too) into `loaded`. An object read
/// twice (same kind, namespace and name) is warned about; the later one
/// wins, as with `kubectl apply` of the files in order.
pub fn parse_into(text: &str, file: &Path, loaded: &mut Loaded) -> Result<(), LoadError> {
    // Editors on Windows write a byte order mark; YAML allows it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(line) = yaml_depth::first_too_deep_line(text, yaml_depth::MAX_FLOW_DEPTH) {
        return Err(LoadError {
            path: format!("{} (line {line})", file.display()),
            message: format!(
                "YAML nested deeper than {} levels",
                yaml_depth::MAX_FLOW_DEPTH
            ),
        });
    }
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
            Ok(Some(object)) => {
                let key = object.key();
                if let Some(first) = loaded.seen.insert(key.clone(), at.clone()) {
                    let (kind, name) = key;
                    loaded.warnings.push(format!(
                        "{at}: {kind} {} is also in {first}; using this later one",
                        display_key(&name)
                    ));
                }
                loaded.objects.push(object)
            }
            Ok(None) => {}
            Err(Unread(what)) => loaded.warnings.push(format!("{at}: ignoring {what}")),
            Err(Skipped(what)) => loaded.warnings.push(format!("{at}: skipping {what}")),
            Err(Invalid(message)) => return Err(LoadError { path: at, message }),
        }
    }
    Ok(())
}

/// `ns/name`, or `name` for a cluster-scoped object.
fn display_key(name: &ObjectRef) -> String {
    if name.namespace.is_empty() {
        name.name.clone()
    } else {
        name.to_string()
    }
}

/// One already-parsed document as an object: `Ok(None)` for a kind we do
/// not read. Other providers (and test harnesses) feed values through here.
pub fn object_from_value(value: Value) -> Result<Option<Object>, String> {
    match parse_object(value) {
        Ok(o) => Ok(o),
        Err(Unread(_)) => Ok(None),
        Err(Invalid(message) | Skipped(message)) => Err(message),
    }
}

enum Failure {
    /// A kind we do not read.
    Unread(String),
    /// An object the API server would have rejected: reported, and the rest
    /// of the input is still served.
    Skipped(String),
    /// Input we cannot make sense of: the whole load fails.
    Invalid(String),
}
use Failure::{Invalid, Skipped, Unread};

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
    check_metadata(&value, &kind).map_err(Invalid)?;
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let namespaced = kind != "GatewayClass" && kind != "Namespace";
    if namespaced {
        default_namespace(&mut value);
    }
    let base64_field = match (group, kind.as_str()) {
        ("", "Secret") => Some("data"),
        ("", "ConfigMap") => Some("binaryData"),
        _ => None,
    };
    if let Some(field) = base64_field {
        base64_data::canonicalize(&mut value, field)
            .map_err(|e| Skipped(format!("{kind} {}: {e}", describe(&value))))?;
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

/// A name or namespace that is not a string would otherwise be defaulted
/// (the namespace to `default`) and serve under a name nobody wrote.
fn check_metadata(value: &Value, kind: &str) -> Result<(), String> {
    for field in ["name", "namespace"] {
        match value.get("metadata").and_then(|m| m.get(field)) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(other) => {
                return Err(format!(
                    "{kind} {}: metadata.{field} must be a string, not {other}",
                    describe(value)
                ));
            }
        }
    }
    Ok(())
}

/// `namespace/name` of a raw object, `?` where missing, for messages.
fn describe(value: &Value) -> String {
    let get = |field: &str| {
        value
            .get("metadata")
            .and_then(|m| m.get(field))
            .and_then(Value::as_str)
    };
    match (get("namespace"), get("name")) {
        (Some(ns), name) => format!("{ns}/{}", name.unwrap_or("?")),
        (None, name) => format!("{:?}", name.unwrap_or("?")),
    }
}

fn default_namespace(value: &mut Value) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        let missing = match meta.get("namespace") {
            None | Some(Value::Null) => true,
            Some(Value::String(ns)) => ns.is_empty(),
            // Rejected by check_metadata.
            Some(_) => false,
        };
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
    fn ns(name: &str) -> String {
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n")
    }

    #[test]
    fn symlink_loops_are_one_error_not_a_walk() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("a.yaml"), ns("a")).unwrap();
        // Two loops: 2^depth paths if followed naively.
        std::os::unix::fs::symlink("..", sub.join("up1")).unwrap();
        std::os::unix::fs::symlink("..", sub.join("up2")).unwrap();
        let e = load(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(e.to_string().contains("directory loop"), "{e}");
        assert!(e.path.ends_with("sub/up1"), "{e}");
    }

    #[test]
    fn a_directory_reached_twice_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("a.yaml"), ns("a")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("alias")).unwrap();
        let loaded = load(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(loaded.objects.len(), 1);
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(
            loaded.warnings[0].contains("real: skipping directory, already read as")
                && loaded.warnings[0].contains("alias"),
            "{:?}",
            loaded.warnings
        );
    }

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.yaml");
        mkfifo(&fifo);
        let e = load(std::slice::from_ref(&fifo)).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("pipe.yaml: not a regular file (a FIFO)"),
            "{e}"
        );
        // Found in a directory: also an error, since skipping it would serve
        // less than the input says.
        let e = load(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(e.to_string().contains("not a regular file (a FIFO)"), "{e}");
        let e = load(&[PathBuf::from("/dev/zero")]).unwrap_err();
        assert_eq!(e.to_string(), "/dev/zero: not a regular file (a device)");
        // A FIFO whose name is not a manifest's is not ours to read.
        std::fs::remove_file(&fifo).unwrap();
        mkfifo(&dir.path().join("pipe"));
        assert!(
            load(&[dir.path().to_path_buf()])
                .unwrap()
                .objects
                .is_empty()
        );
    }

    #[test]
    fn sizes_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        // Sparse: rejected by its size, without reading it.
        let file = std::fs::File::create(&big).unwrap();
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        let e = load(std::slice::from_ref(&big)).unwrap_err();
        assert!(
            e.to_string().ends_with("big.yaml: larger than 64 MiB"),
            "{e}"
        );
        file.set_len(10).unwrap();
        let e = read_regular(&big, 9).unwrap_err();
        assert!(
            e.to_string().ends_with("larger than 256 MiB in total"),
            "{e}"
        );
        assert_eq!(read_regular(&big, 10).unwrap().len(), 10);
    }

    #[test]
    fn deep_nesting_is_rejected_before_parsing() {
        let deep = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\ndata: {{x: {}}}\n",
            "[".repeat(100_000)
        );
        let started = std::time::Instant::now();
        let e = parse(&deep).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.yaml (line 4): YAML nested deeper than 128 levels"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let ok = format!(
            "apiVersion: v1\nkind: Other\nx: {}{}\n",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(parse(&ok).unwrap().warnings.len(), 1);
    }

    #[test]
    fn errors_are_one_line() {
        let e = LoadError {
            path: "a\nb.yaml".into(),
            message: "first\n  second\r\n".into(),
        };
        assert_eq!(e.to_string(), "a b.yaml: first second");
    }

    #[test]
    fn accepts_a_byte_order_mark() {
        let loaded = parse(&format!("\u{feff}{}", ns("a"))).unwrap();
        assert_eq!(loaded.objects.len(), 1);
    }

    #[test]
    fn a_name_or_namespace_must_be_a_string() {
        let e = parse("apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: 123}\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.yaml (document 1): Service \"a\": metadata.namespace must be a string, not 123"
        );
        let e = parse("apiVersion: v1\nkind: Namespace\nmetadata: {name: [x]}\n").unwrap_err();
        assert!(
            e.to_string().contains("metadata.name must be a string"),
            "{e}"
        );
        let loaded =
            parse("apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: null}\n").unwrap();
        assert_eq!(loaded.objects[0].key().1, ObjectRef::new("default", "a"));
    }

    #[test]
    fn duplicates_are_named_and_the_later_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let svc = |port: u16| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: x}}\nspec: {{ports: [{{port: {port}}}]}}\n"
            )
        };
        std::fs::write(dir.path().join("a.yaml"), svc(80)).unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            format!("{}---\n{}", ns("n"), svc(81)),
        )
        .unwrap();
        let loaded = load(&[dir.path().to_path_buf()]).unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        assert_eq!(
            loaded.warnings,
            [format!(
                "{} (document 2): Service x/web is also in {} (document 1); using this later one",
                b.display(),
                a.display()
            )]
        );
        let snapshot = crate::snapshot::Snapshot::from_objects(loaded.objects);
        let port = snapshot.services[&ObjectRef::new("x", "web")]
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()[0]
            .port;
        assert_eq!(port, 81);
        // Same name, other kind or namespace: no warning.
        let loaded = parse(&format!(
            "{}---\n{}",
            ns("web"),
            svc(80).replace("x}", "y}")
        ))
        .unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn wrapped_base64_is_read_and_invalid_base64_skips_only_its_object() {
        // A JSON string with an escaped line break.
        let wrapped = "aGVsbG8g\\nd29ybGQ=";
        let loaded = parse(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata:\n  k: |\n    aGVsbG8g\n    d29ybGQ=\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\nbinaryData: {{k: \"{wrapped}\"}}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: bad, namespace: x}}\ndata: {{k: \"not base64!\"}}\n---\n{}",
            ns("after")
        ))
        .unwrap();
        let secret = match &loaded.objects[0] {
            Object::Secret(s) => s,
            _ => panic!("not a secret"),
        };
        assert_eq!(secret.data.as_ref().unwrap()["k"].0, b"hello world");
        let map = match &loaded.objects[1] {
            Object::ConfigMap(c) => c,
            _ => panic!("not a config map"),
        };
        assert_eq!(map.binary_data.as_ref().unwrap()["k"].0, b"hello world");
        assert_eq!(
            loaded.objects.len(),
            3,
            "the bad Secret is skipped, the rest read"
        );
        assert_eq!(loaded.warnings.len(), 1);
        assert!(
            loaded.warnings[0].starts_with(
                "t.yaml (document 3): skipping Secret x/bad: data[\"k\"] is not base64"
            ),
            "{:?}",
            loaded.warnings
        );
    }
}
