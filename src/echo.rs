//! A small echo backend in the spirit of the Gateway API's echo-basic: it
//! answers every request with JSON describing what it received.
//!
//! Besides the plain echo it understands what the conformance suite asks of
//! echo-basic:
//!
//! - `?delay=<duration>` (Go syntax: `1s`, `500ms`, `1m30s`) waits before answering;
//! - `X-Echo-Set-Header: Name:value,Name2:value2` sets response headers, a
//!   repeated name appending `,value`;
//! - `/status/<ddd>` answers with that status and an empty body;
//! - `/retry/...?uuid=U&succeedAfter=N[&responseCode=C][&delayRetry=D]` fails
//!   the first N attempts per uuid (with status C, or by resetting the TCP
//!   connection), then echoes;
//! - `/ws` echoes websocket text and binary messages;
//! - `/health` answers `OK`;
//! - in h2c-only mode ([`Options::h2c_only`]) every request that is not
//!   HTTP/2 gets 400, as on echo-basic's h2c port.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// Who this backend says it is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub namespace: String,
}

/// How the backend behaves beyond echoing.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Answer 400 "Expected h2c request" to anything but HTTP/2 (or an
    /// HTTP/1.1 request carrying `Upgrade: h2c`), and echo everything else
    /// without the special paths, like echo-basic's h2c port.
    pub h2c_only: bool,
}

impl Options {
    pub fn h2c_only(mut self, enabled: bool) -> Self {
        self.h2c_only = enabled;
        self
    }
}

#[derive(Debug, Serialize)]
pub struct Echoed {
    /// Path including the query string.
    pub path: String,
    pub host: String,
    pub method: String,
    pub proto: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub namespace: String,
    pub pod: String,
}

type Body = Full<Bytes>;

/// Binds `addr` and serves until `shutdown` resolves.
pub async fn run(
    addr: SocketAddr,
    identity: Identity,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with(addr, identity, Options::default(), shutdown).await
}

/// [`run`] with [`Options`].
pub async fn run_with(
    addr: SocketAddr,
    identity: Identity,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    tracing::info!(%addr, name = %identity.name, h2c_only = options.h2c_only, "echo backend listening");
    serve_with(listener, identity, options, shutdown).await
}

/// Serves HTTP/1.1 and cleartext HTTP/2 (h2c) on an already bound listener.
pub async fn serve(
    listener: TcpListener,
    identity: Identity,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_with(listener, identity, Options::default(), shutdown).await
}

/// [`serve`] with [`Options`].
pub async fn serve_with(
    listener: TcpListener,
    identity: Identity,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let server = Arc::new(Server {
        identity,
        options,
        attempts: Mutex::new(HashMap::new()),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let server = server.clone();
        tokio::spawn(async move {
            let conn = Arc::new(Conn {
                remote,
                reset: AtomicBool::new(false),
                abort: Notify::new(),
            });
            let io = TokioIo::new(ResettableStream {
                inner: stream,
                conn: conn.clone(),
            });
            let service = {
                let conn = conn.clone();
                hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    let conn = conn.clone();
                    async move { Ok::<_, Infallible>(server.handle(req, &conn).await) }
                })
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // hyper cannot keep arbitrary header-name casing; Title-Case is
            // what Go's server sends for canonical names.
            builder.http1().title_case_headers(true);
            let serving = builder.serve_connection_with_upgrades(io, service);
            tokio::select! {
                _ = serving => {}
                // Dropping the connection drops the socket, which resets it.
                () = conn.abort.notified() => {}
            }
        });
    }
}

struct Server {
    identity: Identity,
    options: Options,
    /// Failed attempts so far per `/retry/` uuid. Held for a whole retry
    /// request, as echo-basic holds its mutex.
    attempts: Mutex<HashMap<String, i64>>,
}

/// One accepted connection.
struct Conn {
    remote: SocketAddr,
    /// Close with a TCP RST (SO_LINGER 0) rather than a FIN.
    reset: AtomicBool,
    /// Tells the connection task to drop the connection now.
    abort: Notify,
}

impl Conn {
    fn reset(&self) {
        self.reset.store(true, Ordering::SeqCst);
        self.abort.notify_one();
    }
}

/// A TCP stream that is reset rather than closed when its connection asked so.
struct ResettableStream {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.conn.reset.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Server {
    async fn handle(&self, req: Request<Incoming>, conn: &Conn) -> Response<Body> {
        if self.options.h2c_only {
            let h2c_upgrade = req
                .headers()
                .get(header::UPGRADE)
                .is_some_and(|v| v == "h2c");
            if req.version() != Version::HTTP_2 && !h2c_upgrade {
                return text(StatusCode::BAD_REQUEST, "Expected h2c request");
            }
            return self.echo(&req, conn.remote).await;
        }
        // echo-basic folds `//` before routing (but echoes the original path).
        let path = req.uri().path().replace("//", "/");
        match path.as_str() {
            "/health" => text(StatusCode::OK, "OK"),
            "/ws" => websocket(req, conn.remote),
            p if p.starts_with("/status/") => status(&req),
            p if p.starts_with("/retry/") => self.retry(&req, conn).await,
            _ => self.echo(&req, conn.remote).await,
        }
    }

    async fn echo<B>(&self, req: &Request<B>, remote: SocketAddr) -> Response<Body> {
        println!(
            "Echoing back request made to {} to client ({remote})",
            request_uri(req)
        );
        if let Err(e) = delay(req, "delay").await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, &e);
        }
        respond(req, &self.identity)
    }

    /// A flaky backend for retry tests: the first `succeedAfter` attempts of
    /// a `uuid` fail, later ones echo.
    async fn retry<B>(&self, req: &Request<B>, conn: &Conn) -> Response<Body> {
        let uuid = query_value(req, "uuid").unwrap_or_default();
        if uuid.is_empty() {
            return text(StatusCode::BAD_REQUEST, "uuid is required");
        }
        let Ok(succeed_after) = query_value(req, "succeedAfter")
            .unwrap_or_default()
            .parse::<i64>()
        else {
            return text(StatusCode::BAD_REQUEST, "succeedAfter is required");
        };
        let response_code =
            query_value(req, "responseCode").and_then(|code| code.parse::<i64>().ok());

        let mut attempts = self.attempts.lock().await;
        let done = attempts.get(&uuid).copied().unwrap_or(0);
        if done >= succeed_after {
            return self.echo(req, conn.remote).await;
        }
        attempts.insert(uuid, done + 1);
        if let Err(e) = delay(req, "delayRetry").await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, &e);
        }
        match response_code {
            Some(code) => match final_status(code) {
                Some(status) => empty(status),
                None => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("invalid status code {code}"),
                ),
            },
            // There is no socket of its own to reset under an HTTP/2 stream.
            None if req.version() == Version::HTTP_2 => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "response writer does not support hijacking",
            ),
            None => {
                drop(attempts);
                conn.reset();
                // The connection task drops this future with the connection.
                std::future::pending().await
            }
        }
    }
}

/// `/status/<ddd>`: that status and no body; anything else under `/status/` is 400.
fn status<B>(req: &Request<B>) -> Response<Body> {
    let code = request_uri(req)
        .strip_prefix("/status/")
        .filter(|d| d.len() == 3 && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<i64>().ok());
    match code {
        None => empty(StatusCode::BAD_REQUEST),
        Some(code) => match final_status(code) {
            Some(status) => empty(status),
            None => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("invalid status code {code}"),
            ),
        },
    }
}

/// The status Go's server ends up sending for `WriteHeader(code)`: an
/// informational code is followed by an implicit 200.
fn final_status(code: i64) -> Option<StatusCode> {
    match code {
        100..=199 => Some(StatusCode::OK),
        200..=999 => StatusCode::from_u16(code as u16).ok(),
        _ => None,
    }
}

/// `/ws`: accepts a websocket and sends every text or binary message back.
fn websocket(mut req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
    let has_token = |name: HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let is_websocket = req.version() == Version::HTTP_11
        && req.method() == hyper::Method::GET
        && has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade")
        && req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let Some(key) = key.filter(|_| is_websocket) else {
        return text(StatusCode::BAD_REQUEST, "not websocket protocol");
    };
    let protocol = req
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .and_then(|p| HeaderValue::from_str(p).ok());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        println!("established websocket connection {remote}");
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        // Pings are answered and a close is returned by tungstenite itself;
        // the loop ends when the peer is gone.
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        );
    if let Some(protocol) = protocol {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
        .body(Body::default())
        .expect("valid upgrade response")
}

fn respond<B>(req: &Request<B>, identity: &Identity) -> Response<Body> {
    let echoed = describe(req, identity);
    let body = serde_json::to_vec(&echoed).expect("echo serializes");
    let mut response = Response::new(Body::new(Bytes::from(body)));
    let headers = response.headers_mut();
    for (name, value) in requested_headers(req) {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            continue;
        };
        headers.insert(name, value);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub fn describe<B>(req: &Request<B>, identity: &Identity) -> Echoed {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(canonical(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    Echoed {
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into()),
        host,
        method: req.method().to_string(),
        proto: format!("{:?}", req.version()),
        headers,
        namespace: identity.namespace.clone(),
        pod: identity.name.clone(),
    }
}

/// `X-Echo-Set-Header: K:V,K2:V2` asks for those response headers; a name
/// asked for again gets `,V2` appended. Names keep their first casing.
fn requested_headers<B>(req: &Request<B>) -> Vec<(String, String)> {
    let mut wanted: Vec<(String, String)> = Vec::new();
    let pairs = req
        .headers()
        .get_all("x-echo-set-header")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|pair| pair.split_once(':').unwrap_or((pair, "")))
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| !k.is_empty());
    for (name, value) in pairs {
        match wanted
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, values)) => {
                values.push(',');
                values.push_str(value);
            }
            None => wanted.push((name.to_string(), value.to_string())),
        }
    }
    wanted
}

/// What Go calls the request URI: the request target as sent (the `:path`
/// in HTTP/2).
fn request_uri<B>(req: &Request<B>) -> String {
    let uri = req.uri();
    match (req.version(), uri.path_and_query()) {
        (Version::HTTP_2, Some(path)) => path.to_string(),
        _ => uri.to_string(),
    }
}

/// Sleeps for the Go duration in query parameter `key`, if there is one.
async fn delay<B>(req: &Request<B>, key: &str) -> Result<(), String> {
    let Some(value) = query_value(req, key).filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    tokio::time::sleep(parse_go_duration(&value)?).await;
    Ok(())
}

/// The first value of query parameter `key`, decoded as Go's `url.ParseQuery`
/// does (pairs with `;` or bad escapes are skipped).
fn query_value<B>(req: &Request<B>, key: &str) -> Option<String> {
    req.uri()
        .query()?
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((unescape(k)?, unescape(v)?))
        })
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn unescape(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            b => out.push(b),
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Parses Go's `time.ParseDuration` syntax (`300ms`, `1.5h`, `2h45m`, `-1s`).
/// Negative durations come back as zero, since sleeping them is a no-op.
fn parse_go_duration(orig: &str) -> Result<Duration, String> {
    const MAX_NANOS: u128 = i64::MAX as u128;
    let invalid = || format!("time: invalid duration {orig:?}");
    let (negative, mut s) = match orig.as_bytes().first() {
        Some(b'-') => (true, &orig[1..]),
        Some(b'+') => (false, &orig[1..]),
        _ => (false, orig),
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let (int, rest) = s.split_at(digits(s));
        s = rest;
        let mut frac = "";
        if let Some(rest) = s.strip_prefix('.') {
            let (f, rest) = rest.split_at(digits(rest));
            frac = f;
            s = rest;
        }
        if int.is_empty() && frac.is_empty() {
            return Err(invalid());
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let scale: u128 = match unit {
            "" => return Err(format!("time: missing unit in duration {orig:?}")),
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {orig:?}")),
        };
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| invalid())?
        };
        let mut nanos = int.checked_mul(scale).ok_or_else(invalid)?;
        if !frac.is_empty() {
            // Digits past the 20th cannot matter at nanosecond precision.
            let frac = &frac[..frac.len().min(20)];
            let value: u128 = frac.parse().map_err(|_| invalid())?;
            nanos += value * scale / 10u128.pow(frac.len() as u32);
        }
        total = total.checked_add(nanos).ok_or_else(invalid)?;
        if total > MAX_NANOS + u128::from(negative) {
            return Err(invalid());
        }
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    Ok(Duration::from_nanos(total as u64))
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = status;
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// echo-basic's error body: `{"message": ...}`.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `x-forwarded-for` → `X-Forwarded-For`, as Go's echo server reports names.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_tungstenite::tungstenite::Message;

    fn identity() -> Identity {
        Identity {
            name: "v1".into(),
            namespace: "ns".into(),
        }
    }

    async fn start(options: Options) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_with(
            listener,
            identity(),
            options,
            std::future::pending(),
        ));
        addr
    }

    fn client() -> reqwest::Client {
        crate::kengine::admin::install_crypto_provider();
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    async fn json(response: reqwest::Response) -> serde_json::Value {
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    }

    /// Sends one raw HTTP/1.1 request and reads until the server closes.
    async fn raw(addr: SocketAddr, request: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn describes_requests_and_parses_set_header() {
        let req = Request::builder()
            .uri("/a/b?x=1")
            .header("host", "foo.example.com")
            .header("x-echo-set-header", "X-One: 1, X-Two:2")
            .header("x-echo-set-header", "x-one:3")
            .body(())
            .unwrap();
        let e = describe(&req, &identity());
        assert_eq!(e.path, "/a/b?x=1");
        assert_eq!(e.host, "foo.example.com");
        assert_eq!(e.proto, "HTTP/1.1");
        assert_eq!(e.pod, "v1");
        assert!(e.headers.contains_key("X-Echo-Set-Header"));
        assert_eq!(
            requested_headers(&req),
            [("X-One".into(), "1,3".into()), ("X-Two".into(), "2".into())]
        );
    }

    #[test]
    fn parses_go_durations_and_queries() {
        let ms = Duration::from_millis;
        assert_eq!(parse_go_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_go_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_go_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_go_duration(".5us"), Ok(Duration::from_nanos(500)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("-3s"), Ok(Duration::ZERO));
        assert_eq!(
            parse_go_duration("10"),
            Err(r#"time: missing unit in duration "10""#.into())
        );
        assert!(parse_go_duration("1x").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration(".s").is_err());
        assert!(parse_go_duration("9999999999h").is_err());

        let req = Request::get("/r?a=1&b=x%20y+z&a=2&bad;=3")
            .body(())
            .unwrap();
        assert_eq!(query_value(&req, "a").as_deref(), Some("1"));
        assert_eq!(query_value(&req, "b").as_deref(), Some("x y z"));
        assert_eq!(query_value(&req, "bad"), None);
    }

    #[tokio::test]
    async fn delays_when_asked() {
        let addr = start(Options::default()).await;
        let client = client();
        let started = Instant::now();
        let response = client
            .get(format!("http://{addr}/x?delay=300ms"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
        let body = json(response).await;
        assert_eq!(body["path"], "/x?delay=300ms");

        let response = client
            .get(format!("http://{addr}/x?delay=soon"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
        let body = json(response).await;
        assert_eq!(body["message"], r#"time: invalid duration "soon""#);
    }

    #[tokio::test]
    async fn answers_status_paths() {
        let addr = start(Options::default()).await;
        let client = client();
        let get = |path: &str| client.get(format!("http://{addr}{path}")).send();
        let response = get("/status/418").await.unwrap();
        assert_eq!(response.status(), 418);
        assert!(response.bytes().await.unwrap().is_empty());
        assert_eq!(get("/status/503").await.unwrap().status(), 503);
        assert_eq!(get("/status/5000").await.unwrap().status(), 400);
        assert_eq!(get("/status/404?x=1").await.unwrap().status(), 400);
        assert_eq!(get("/status//204").await.unwrap().status(), 400);
        let response = get("/health").await.unwrap();
        assert_eq!(response.text().await.unwrap(), "OK");
    }

    #[tokio::test]
    async fn appends_repeated_set_headers_keeping_case() {
        let addr = start(Options::default()).await;
        let response = client()
            .get(format!("http://{addr}/"))
            .header("X-Echo-Set-Header", "X-Foo:a, X-Bar: b")
            .header("X-Echo-Set-Header", "X-Foo: c")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-foo"], "a,c");
        assert_eq!(response.headers()["x-bar"], "b");
        assert_eq!(response.headers()["content-type"], "application/json");

        let head = raw(
            addr,
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\
             X-Echo-Set-Header: X-Foo:1,X-Foo:2\r\n\r\n",
        )
        .await
        .unwrap();
        assert!(head.contains("\r\nX-Foo: 1,2\r\n"), "{head}");
    }

    #[tokio::test]
    async fn retry_fails_the_first_attempts_per_uuid() {
        let addr = start(Options::default()).await;
        let client = client();
        let url = |uuid: &str| {
            format!("http://{addr}/retry/x?responseCode=503&succeedAfter=2&uuid={uuid}")
        };
        for expected in [503, 503, 200, 200] {
            let response = client.get(url("a")).send().await.unwrap();
            assert_eq!(response.status(), expected);
            if expected == 503 {
                assert!(response.bytes().await.unwrap().is_empty());
            }
        }
        // Counted per uuid.
        assert_eq!(client.get(url("b")).send().await.unwrap().status(), 503);

        let missing = client
            .get(format!("http://{addr}/retry/x?succeedAfter=1"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 400);
        assert_eq!(missing.text().await.unwrap(), "uuid is required");
    }

    #[tokio::test]
    async fn retry_without_response_code_resets_the_connection() {
        let addr = start(Options::default()).await;
        let request = "GET /retry/x?succeedAfter=1&uuid=r HTTP/1.1\r\nHost: h\r\n\
                       Connection: close\r\n\r\n";
        let first = raw(addr, request).await;
        assert_eq!(
            first.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionReset
        );
        let second = raw(addr, request).await.unwrap();
        assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{second}");
    }

    #[tokio::test]
    async fn h2c_only_rejects_http1() {
        let addr = start(Options::default().h2c_only(true)).await;
        let response = client()
            .get(format!("http://{addr}/status/500"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(response.text().await.unwrap(), "Expected h2c request");

        crate::kengine::admin::install_crypto_provider();
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let response = h2
            .get(format!("http://{addr}/status/500"))
            .send()
            .await
            .unwrap();
        // The h2c port echoes every path.
        assert_eq!(response.status(), 200);
        let body = json(response).await;
        assert_eq!(body["proto"], "HTTP/2.0");
        assert_eq!(body["path"], "/status/500");
    }

    #[tokio::test]
    async fn websocket_echoes_messages() {
        let addr = start(Options::default()).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
            .await
            .unwrap();
        assert_eq!(response.status(), 101);
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![1, 2, 3])
        );
        ws.close(None).await.unwrap();

        let plain = client()
            .get(format!("http://{addr}/ws"))
            .send()
            .await
            .unwrap();
        assert_eq!(plain.status(), 400);
    }
}
