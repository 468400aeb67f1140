//! The files a config names (backend client certificates and keys):
//! Kengine reads them while it loads the config, so they are written into
//! the directory it reads them from first, by the admin-proxy sidecar of a
//! managed pod or by `standalone`. Files the newest set lacks are removed:
//! the config running keeps what it read.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

/// A file name to its content.
pub type Files = BTreeMap<String, String>;

/// A plain file name of ours: lowercase letters, digits, `-` and `.`, not
/// starting with `.` (no path, no hidden or temporary file).
fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && (name.bytes())
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Makes `dir` (which must exist) hold exactly `files`, each written
/// atomically with mode 0600. Returns how many there are.
pub fn replace(dir: &Path, files: &Files) -> Result<usize, String> {
    if let Some(bad) = files.keys().find(|n| !valid_name(n)) {
        return Err(format!("{bad:?} is not a file name the config can name"));
    }
    for (name, content) in files {
        let path = dir.join(name);
        if std::fs::read(&path).is_ok_and(|old| old == content.as_bytes()) {
            continue;
        }
        let temp = dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(content.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)
        };
        write().map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !files.contains_key(&*name.to_string_lossy()) && entry.path().is_file() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> Files {
        (pairs.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_directory_holds_exactly_the_newest_set() {
        let dir = tempfile::tempdir().unwrap();
        let first = files(&[("a.crt", "A"), ("a.key", "K")]);
        assert_eq!(replace(dir.path(), &first), Ok(2));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.key")).unwrap(),
            "K"
        );
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("a.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(replace(dir.path(), &files(&[("b.crt", "B")])), Ok(1));
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["b.crt"]);
    }

    #[test]
    fn names_that_leave_the_directory_or_hide_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../x", "a/b", ".hidden", "", "UPPER.crt"] {
            assert!(
                replace(dir.path(), &files(&[(bad, "x")])).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing written"
        );
    }
}
