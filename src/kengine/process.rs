//! A local Kengine (or Caddy) process with its admin API on a private unix
//! socket: what `standalone --kengine` and the integration tests run.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use super::Flavor;
use super::admin::{AdminAddr, AdminClient};

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
        let dir = tempfile::Builder::new()
            .prefix("kengine-gateway-")
            .tempdir()?;
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
        let child = Command::new(bin)
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
