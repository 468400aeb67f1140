//! The file provider: Gateway API and core objects from YAML files and
//! directories, and a watcher that says when they change.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

// Parsing is the model's (pure); reading and watching files is ours.
pub use kengine_gateway_model::manifests::{
    LoadError, Loaded, object_from_value, one_line, parse_into,
};

/// Bounds on what one `render` or `standalone` pass reads.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
pub const MAX_TOTAL_BYTES: u64 = 256 << 20;

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
    use crate::snapshot::{Object, ObjectRef};

    fn parse(text: &str) -> Result<Loaded, LoadError> {
        let mut loaded = Loaded::default();
        parse_into(text, Path::new("t.yaml"), &mut loaded).map(|_| loaded)
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
}
