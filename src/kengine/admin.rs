//! Client for the Kengine admin API, over TCP or a unix socket.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;

use reqwest::StatusCode;

/// Where an admin API listens, in Kengine's own address notation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAddr {
    /// `host:port`, with or without an `http://` prefix.
    Tcp(String),
    /// `unix//absolute/path` (or `unix/relative/path`).
    Unix(PathBuf),
}

impl FromStr for AdminAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix/") {
            if path.is_empty() {
                return Err(format!("admin address {s:?} has no socket path"));
            }
            return Ok(AdminAddr::Unix(PathBuf::from(path)));
        }
        let hostport = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
        if hostport.contains("://") || !hostport.contains(':') {
            return Err(format!(
                "admin address {s:?} is not HOST:PORT, http://HOST:PORT or unix//PATH"
            ));
        }
        Ok(AdminAddr::Tcp(hostport.to_string()))
    }
}

impl std::fmt::Display for AdminAddr {
    /// The form Kengine's own `admin.listen` field accepts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAddr::Tcp(hostport) => f.write_str(hostport),
            AdminAddr::Unix(path) => write!(f, "unix/{}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Kengine answered and refused; the old config keeps serving.
    #[error("kengine rejected the request (HTTP {status}): {body}")]
    Rejected { status: StatusCode, body: String },
    #[error("kengine admin API unreachable: {0}")]
    Transport(#[from] reqwest::Error),
    /// Not sent: our check found a value Kengine would refuse.
    #[error("config not loaded: Kengine would refuse it {0}")]
    Unloadable(#[from] super::check::CheckError),
}

/// TLS material for a remote admin API.
#[derive(Debug, Clone, Copy)]
pub struct RemoteTls<'a> {
    pub ca_pem: &'a [u8],
    /// Client certificate chain followed by its private key, PEM.
    pub identity_pem: &'a [u8],
    pub server_name: Option<&'a str>,
}

impl AdminError {
    /// The request got no answer within the client's timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, AdminError::Transport(e) if e.is_timeout())
    }

    /// What kind of failure this is, for metrics.
    pub fn failure(&self) -> PushFailure {
        match self {
            AdminError::Rejected { .. } => PushFailure::Rejected,
            AdminError::Unloadable(_) => PushFailure::Unloadable,
            e if e.is_timeout() => PushFailure::Timeout,
            AdminError::Transport(_) => PushFailure::Unreachable,
        }
    }
}

/// Why a config push failed: a small fixed set, so it can label metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushFailure {
    /// Kengine answered and refused the config.
    Rejected,
    /// No answer within the client's timeout (hung or still loading).
    Timeout,
    /// No connection, or it broke.
    Unreachable,
    /// Our own check found a value Kengine would refuse: nothing was sent.
    Unloadable,
}

impl PushFailure {
    pub fn label(self) -> &'static str {
        match self {
            PushFailure::Rejected => "rejected",
            PushFailure::Timeout => "timeout",
            PushFailure::Unreachable => "unreachable",
            PushFailure::Unloadable => "unloadable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    addr: AdminAddr,
}

/// reqwest is built without a default crypto provider so that the whole
/// binary uses ring, the provider kube-rs uses too.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl AdminClient {
    /// `timeout` bounds every request; a full reload of a large config takes
    /// seconds, so keep it generous.
    pub fn new(addr: AdminAddr, timeout: Duration) -> Result<Self, AdminError> {
        install_crypto_provider();
        // No idle connections: a load that changes the admin settings restarts
        // Kengine's admin server, and a pooled connection would then be reset.
        let builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0);
        let (builder, base) = match &addr {
            AdminAddr::Tcp(hostport) => (builder, format!("http://{hostport}")),
            // On a socket Kengine allows the Host headers "" and loopback IPs only.
            AdminAddr::Unix(path) => (builder.unix_socket(path.clone()), "http://127.0.0.1".into()),
        };
        Ok(AdminClient {
            http: builder.build()?,
            base,
            addr,
        })
    }

    /// An admin API on a remote pod: `https` with the given CA and client
    /// identity (PEM certificate chain and key), or plain `http` without.
    /// `server_name`, when set, is what the server certificate is checked
    /// against instead of the IP.
    pub fn remote(
        addr: std::net::SocketAddr,
        tls: Option<RemoteTls<'_>>,
        timeout: Duration,
    ) -> Result<Self, AdminError> {
        install_crypto_provider();
        let builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0);
        let (builder, base) = match tls {
            None => (builder, format!("http://{addr}")),
            Some(tls) => {
                let ca = reqwest::Certificate::from_pem(tls.ca_pem)?;
                let identity = reqwest::Identity::from_pem(tls.identity_pem)?;
                let host = tls
                    .server_name
                    .map(str::to_string)
                    .unwrap_or_else(|| addr.ip().to_string());
                let builder = builder
                    .tls_certs_only([ca])
                    .identity(identity)
                    .resolve(&host, addr);
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                (builder, format!("https://{host}:{}", addr.port()))
            }
        };
        Ok(AdminClient {
            http: builder.build()?,
            base,
            addr: AdminAddr::Tcp(addr.to_string()),
        })
    }

    pub fn addr(&self) -> &AdminAddr {
        &self.addr
    }

    /// `POST /load`: atomically replace the running config. Kengine keeps the
    /// old config when it answers with an error.
    pub async fn load(&self, config_json: Vec<u8>) -> Result<(), AdminError> {
        let resp = self
            .http
            .post(format!("{}/load", self.base))
            .header("Content-Type", "application/json")
            .body(config_json)
            .send()
            .await?;
        check(resp).await.map(drop)
    }

    /// `PUT /kengine-gateway/files`: has a managed pod's admin proxy write
    /// the files a config names (name → content) before it is loaded.
    /// Only the admin-proxy sidecar answers it; Kengine itself does not.
    pub async fn put_files(
        &self,
        files: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), AdminError> {
        let resp = self
            .http
            .put(format!("{}{}", self.base, crate::admin_proxy::FILES_PATH))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(files).expect("strings serialize"))
            .send()
            .await?;
        check(resp).await.map(drop)
    }

    /// `GET /config/admin`: the admin settings Kengine runs with (`null` when
    /// they come from its defaults or environment).
    pub async fn admin_config(&self) -> Result<serde_json::Value, AdminError> {
        let resp = self
            .http
            .get(format!("{}/config/admin", self.base))
            .send()
            .await?;
        match check(resp).await {
            Ok(body) => Ok(serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)),
            // A config without an `admin` section cannot be traversed into.
            Err(AdminError::Rejected { .. }) => Ok(serde_json::Value::Null),
            Err(e) => Err(e),
        }
    }

    /// `GET /config/`: the config Kengine is running.
    pub async fn config(&self) -> Result<serde_json::Value, AdminError> {
        let resp = self
            .http
            .get(format!("{}/config/", self.base))
            .send()
            .await?;
        let body = check(resp).await?;
        Ok(serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
    }

    /// `POST /stop`: graceful shutdown of the Kengine process.
    pub async fn stop(&self) -> Result<(), AdminError> {
        let resp = self.http.post(format!("{}/stop", self.base)).send().await?;
        check(resp).await.map(drop)
    }
}

async fn check(resp: reqwest::Response) -> Result<String, AdminError> {
    let status = resp.status();
    let body = resp.text().await?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(AdminError::Rejected {
            status,
            body: error_message(&body),
        })
    }
}

/// Kengine answers errors as `{"error": "..."}`; keep just the message.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_admin_addresses() {
        assert_eq!(
            "unix//run/k.sock".parse(),
            Ok(AdminAddr::Unix("/run/k.sock".into()))
        );
        assert_eq!(
            "127.0.0.1:2019".parse(),
            Ok(AdminAddr::Tcp("127.0.0.1:2019".into()))
        );
        assert_eq!(
            "http://localhost:2019/".parse(),
            Ok(AdminAddr::Tcp("localhost:2019".into()))
        );
        assert!("localhost".parse::<AdminAddr>().is_err());
        assert!("https://x:1".parse::<AdminAddr>().is_err());
        assert!("unix/".parse::<AdminAddr>().is_err());
        assert_eq!(AdminAddr::Unix("/a/b".into()).to_string(), "unix//a/b");
    }

    #[test]
    fn keeps_kengine_error_message() {
        assert_eq!(
            error_message(r#"{"error":"loading config: bad"}"#),
            "loading config: bad"
        );
        assert_eq!(error_message("plain text\n"), "plain text");
    }
}
