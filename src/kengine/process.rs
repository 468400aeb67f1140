//! A local Kengine (or Caddy) process with its admin API on a private unix
//! socket: what `standalone --kengine` and the integration tests run.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use super::Flavor;
use super::admin::{AdminAddr, AdminClient};

const DIR_PREFIX: &str = "kengine-gateway-";
const OWNER_FILE: &str = "owner.pid";

pub struct KengineProcess {
    child: Child,
    admin: AdminClient,
    // Holds the socket, the autosave dir and the log; removed on drop.
    _dir: tempfile::TempDir,
}

impl KengineProcess {
    /// Start `bin run` and wait until its admin API answers. Its output goes
    /// to `log` when given, else to our stderr.
    pub async fn start(bin: &Path, flavor: Flavor, log: Option<&Path>) -> anyhow::Result<Self> {
        remove_stale_dirs(&std::env::temp_dir());
        let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir()?;
        // Names the process that owns the dir, so a later run can tell a
        // dir left behind by a killed one (see `remove_stale_dirs`).
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())?;
        let socket = dir.path().join("admin.sock");
        let admin_addr = AdminAddr::Unix(socket.clone());
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                (Stdio::from(file.try_clone()?), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::inherit()),
        };
        let mut command = Command::new(bin);
        die_with_parent(&mut command);
        let child = command
            .arg("run")
            // Kengine autosaves configs and stores certificates under these.
            .env("XDG_CONFIG_HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env(flavor.admin_env(), admin_addr.to_string())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let admin = AdminClient::new(admin_addr, Duration::from_secs(60))?;
        let mut process = KengineProcess {
            child,
            admin,
            _dir: dir,
        };
        process.wait_ready(Duration::from_secs(20)).await?;
        Ok(process)
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("kengine exited during startup ({status})");
            }
            if self.admin.config().await.is_ok() {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!("kengine admin API did not answer within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the process exits on its own (or is killed).
    pub async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    pub fn admin(&self) -> &AdminClient {
        &self.admin
    }

    pub fn admin_addr(&self) -> &AdminAddr {
        self.admin.addr()
    }

    /// The process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Ask Kengine to stop gracefully; kill it if it does not within 10 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.admin.stop().await;
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => self.child.kill().await?,
        }
        Ok(())
    }
}

/// Linux: the kernel sends the child SIGKILL when we die, even by SIGKILL,
/// so no orphaned Kengine keeps serving (and sharing ports through
/// SO_REUSEPORT with the next run's).
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // We died between fork and prctl: nothing would kill the child.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

/// Removes the temp dirs of earlier runs whose owner is gone (killed before
/// it could clean up). Dirs without an owner file may be being created right
/// now by another run, so they are left alone.
fn remove_stale_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let Some(owner) = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if !process_alive(owner) && std::fs::remove_dir_all(&path).is_ok() {
            tracing::info!(dir = %path.display(), owner, "removed a stale kengine dir");
        }
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let ok = unsafe { libc::kill(pid, 0) } == 0;
    // EPERM: it exists but belongs to someone else.
    ok || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_dirs_of_dead_owners_are_removed_and_others_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = |name: &str, owner: Option<String>| {
            let path = tmp.path().join(name);
            std::fs::create_dir(&path).unwrap();
            if let Some(owner) = owner {
                std::fs::write(path.join(OWNER_FILE), owner).unwrap();
            }
            path
        };
        // A child that has exited and been reaped: its pid is free.
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        dead.wait().unwrap();
        let stale = dir("kengine-gateway-stale", Some(dead.id().to_string()));
        let live = dir("kengine-gateway-live", Some(std::process::id().to_string()));
        let starting = dir("kengine-gateway-starting", None);
        let other = dir("other-dir", Some(dead.id().to_string()));
        remove_stale_dirs(tmp.path());
        assert!(!stale.exists());
        assert!(live.exists() && starting.exists() && other.exists());
    }
}
