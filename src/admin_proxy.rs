//! `kengine-gateway admin-proxy`: the sidecar in each managed Kengine pod.
//!
//! Kengine's own admin API listens on a unix socket in a pod-local emptyDir.
//! This proxy serves the pod's admin port with mutual TLS and forwards every
//! request to that socket:
//!
//! - The server certificate and key, and the CA that client certificates must
//!   chain to, come from files (the instance's Secret, mounted).
//! - A client certificate must also name the controller's identity
//!   (`--client-name`) as a DNS SAN or as its subject CN, compared exactly.
//!   Anything else fails the TLS handshake, and the refusal is logged.
//! - `/readyz` on the plain-HTTP health port answers 200 only once a
//!   `POST /load` through the proxy has succeeded, so a new pod takes no
//!   traffic before it has its config; and again 503 when Kengine restarted
//!   since (its socket is new and it runs no config) until the next load.
//!   `/healthz` answers 200 while running.
//!
//! - `PUT /kengine-gateway/files` is answered by the proxy itself: it
//!   writes the files a config names (backend client certificates) into
//!   `--files-dir`, shared with Kengine, before the controller loads it.
//!
//! **Rotation.** The files are re-read every `--reload-interval` seconds and
//! compared with what was last read; when they changed and form a valid set,
//! new handshakes use them, and connections already established keep going.
//! Polling rather than `notify`: Kubernetes updates a mounted Secret by
//! swapping a `..data` symlink, which inotify reports on the directory, not
//! on the files the flags name (a watch on those follows the old target and
//! dies with it), and a `subPath` mount is never updated in place at all.
//! Reading three small files every few seconds is cheap, works the same on
//! every filesystem, and kubelet itself takes up to a minute or more to
//! propagate a Secret change, so the delay is noise.

mod tls;
mod x509;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cli::AdminProxyArgs;
use crate::kengine::files::{self, Files};
use tls::CertReloader;
pub use tls::TlsFiles;

/// The path of the files request; Kengine's admin API has nothing under it.
pub const FILES_PATH: &str = "/kengine-gateway/files";

/// The largest files body accepted: a few certificate chains and keys.
const MAX_FILES_BODY: usize = 1 << 20;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy needs besides its listeners.
#[derive(Debug, Clone)]
pub struct Options {
    /// Kengine's admin unix socket.
    pub socket: PathBuf,
    pub tls: TlsFiles,
    /// The identity a client certificate must name (DNS SAN or subject CN).
    pub client_name: String,
    /// How often the TLS files are checked for changes.
    pub reload_interval: Duration,
    /// On shutdown, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
    /// Where [`FILES_PATH`] writes (shared with Kengine).
    pub files_dir: Option<PathBuf>,
}

impl From<&AdminProxyArgs> for Options {
    fn from(args: &AdminProxyArgs) -> Self {
        Options {
            socket: args.socket.clone(),
            tls: TlsFiles {
                cert: args.tls_cert.clone(),
                key: args.tls_key.clone(),
                client_ca: args.client_ca.clone(),
            },
            client_name: args.client_name.clone(),
            reload_interval: Duration::from_secs(args.reload_interval),
            // Kubernetes' default termination grace period is 30 s.
            shutdown_grace: Duration::from_secs(25),
            files_dir: args.files_dir.clone(),
        }
    }
}

/// The `admin-proxy` command: bind both ports and serve until `shutdown`.
pub async fn run(args: AdminProxyArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let options = Options::from(&args);
    // Unusable files are reported before anything is bound.
    let tls = CertReloader::load(options.tls.clone(), &options.client_name)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let health = TcpListener::bind(args.health_addr)
        .await
        .with_context(|| format!("binding {}", args.health_addr))?;
    serve_with(listener, health, tls, options, shutdown).await
}

/// Serve mutual-TLS admin on `listener` and `/healthz` + `/readyz` on
/// `health` until `shutdown` resolves; then let requests in flight finish
/// (up to [`Options::shutdown_grace`]).
pub async fn serve(
    listener: TcpListener,
    health: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let tls = CertReloader::load(options.tls.clone(), &options.client_name)?;
    serve_with(listener, health, tls, options, shutdown).await
}

/// Device, inode and change time: a freed inode number is often reused at
/// once, the change time tells a new file apart.
type SocketId = (u64, u64, i64, i64);

struct State {
    socket: PathBuf,
    files_dir: Option<PathBuf>,
    /// The admin socket's identity when a `POST /load` through us last
    /// succeeded. A restarted Kengine makes a new socket and has no config:
    /// the pod is not ready until the controller pushes again.
    loaded: Mutex<Option<SocketId>>,
}

impl State {
    fn socket_id(&self) -> Option<SocketId> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.socket)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SocketId>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn ready(&self) -> bool {
        let Some(loaded) = *self.lock() else {
            return false;
        };
        let current = self.socket_id();
        if current == Some(loaded) {
            return true;
        }
        // A new socket: either Kengine restarted (no config) or a load
        // changed its admin settings and restarted only the admin server
        // (config kept). Asking tells them apart; it happens once per change.
        if current.is_some() && has_config(&self.socket).await {
            *self.lock() = current;
            return true;
        }
        false
    }
}

/// Kengine behind `socket` runs a config (`GET /config/` is not `null`).
async fn has_config(socket: &Path) -> bool {
    let get = async {
        let stream = UnixStream::connect(socket).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = Request::get("/config/")
            .header(header::HOST, "127.0.0.1")
            .body(http_body_util::Empty::<Bytes>::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(body.trim_ascii() != b"null")
    };
    tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

async fn serve_with(
    listener: TcpListener,
    health: TcpListener,
    tls: CertReloader,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let tls = Arc::new(tls);
    let state = Arc::new(State {
        socket: options.socket.clone(),
        files_dir: options.files_dir.clone(),
        loaded: Mutex::new(None),
    });
    tracing::info!(
        addr = %listener.local_addr()?,
        health = %health.local_addr()?,
        socket = %options.socket.display(),
        client = %options.client_name,
        "serving the Kengine admin API over mutual TLS"
    );
    let mut background = JoinSet::new();
    background.spawn(tls.clone().watch(options.reload_interval));
    background.spawn(serve_health(health, state.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(
                        stream,
                        peer,
                        tls.current(),
                        state.clone(),
                        stop_rx.clone(),
                    ));
                }
                // E.g. out of file descriptors: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an admin connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tracing::info!(
        connections = connections.len(),
        "shutting down: finishing requests in flight"
    );
    let drained = tokio::time::timeout(options.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "shutdown grace period over: closing the remaining admin connections"
        );
    }
    connections.shutdown().await;
    background.shutdown().await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "refused admin connection");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "refused admin connection: TLS handshake timed out");
                return;
            }
        },
        () = stopped(&mut stop) => return,
    };
    tracing::debug!(%peer, "admin client authenticated");
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, peer, req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Resolves once shutdown has begun.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // Dropping the `Ref` here keeps the caller's future `Send`.
    let _ = stop.wait_for(|stop| *stop).await;
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

async fn handle(state: &State, peer: SocketAddr, req: Request<Incoming>) -> Response<ProxyBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if path == FILES_PATH {
        return write_files(state, peer, req).await;
    }
    let is_load = method == Method::POST && path == "/load";
    match forward(&state.socket, req).await {
        Ok(resp) => {
            let status = resp.status();
            tracing::debug!(%peer, %method, %path, status = status.as_u16(), "forwarded");
            if is_load && status.is_success() {
                let id = state.socket_id();
                if state.lock().replace(id.unwrap_or_default()).is_none() {
                    tracing::info!("first config loaded: ready");
                }
            }
            resp
        }
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!(%peer, %method, %path, error = %message, "forwarding to Kengine's admin socket");
            // Kengine's own error shape, so clients show the message.
            let body = serde_json::json!({ "error": format!("admin proxy: {message}") });
            json_response(StatusCode::BAD_GATEWAY, body.to_string())
        }
    }
}

/// [`FILES_PATH`]: answered here, never forwarded.
async fn write_files(
    state: &State,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let error = |status: StatusCode, message: String| {
        tracing::warn!(%peer, error = %message, "refused to write files");
        let body = serde_json::json!({ "error": format!("admin proxy: {message}") });
        json_response(status, body.to_string())
    };
    if req.method() != Method::PUT {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{FILES_PATH} takes PUT only"),
        );
    }
    let Some(dir) = state.files_dir.clone() else {
        return error(StatusCode::NOT_FOUND, "started without --files-dir".into());
    };
    let body = match http_body_util::Limited::new(req.into_body(), MAX_FILES_BODY)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("reading the body: {e}"),
            );
        }
    };
    let files: Files = match serde_json::from_slice(&body) {
        Ok(files) => files,
        Err(e) => {
            let why = format!("the body is not a JSON object of file name to content: {e}");
            return error(StatusCode::BAD_REQUEST, why);
        }
    };
    let write = move || {
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        files::replace(&dir, &files)
    };
    match tokio::task::spawn_blocking(write).await {
        Ok(Ok(count)) => {
            tracing::info!(%peer, files = count, "files written");
            json_response(StatusCode::OK, "{}".into())
        }
        Ok(Err(message)) => error(StatusCode::BAD_REQUEST, message),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Send `req` to the admin socket over a fresh HTTP/1.1 connection: a
/// `/load` that changes the admin settings restarts Kengine's admin server,
/// so a pooled connection could be cut.
async fn forward(socket: &Path, req: Request<Incoming>) -> anyhow::Result<Response<ProxyBody>> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "admin socket connection");
        }
    });

    let (mut parts, body) = req.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse()
        .context("request target")?;
    parts.version = Version::HTTP_11;
    remove_hop_by_hop(&mut parts.headers);
    // We already answered any `Expect: 100-continue` by reading the body.
    parts.headers.remove(header::EXPECT);
    // On a unix socket Kengine accepts only an empty or loopback Host.
    parts
        .headers
        .insert(header::HOST, HeaderValue::from_static("127.0.0.1"));
    let resp = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .context("sending the request")?;

    let (mut parts, body) = resp.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.boxed()))
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn json_response(status: StatusCode, body: String) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
        .expect("static response")
}

/// Plain HTTP `/healthz` and `/readyz`, until the task is dropped.
async fn serve_health(listener: TcpListener, state: Arc<State>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a health connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    let ready = req.uri().path() == "/readyz" && state.ready().await;
                    Ok::<_, Infallible>(health_response(req.uri().path(), ready))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn health_response(path: &str, ready: bool) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/healthz" => (StatusCode::OK, "ok\n"),
        "/readyz" if ready => (StatusCode::OK, "ready\n"),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no config loaded through the admin proxy since Kengine started\n",
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn readiness_follows_the_first_load() {
        assert_eq!(health_response("/healthz", false).status(), 200);
        assert_eq!(health_response("/readyz", false).status(), 503);
        assert_eq!(health_response("/readyz", true).status(), 200);
        assert_eq!(health_response("/other", true).status(), 404);
    }
}
