//! A small echo backend in the spirit of the Gateway API's echo-basic: it
//! answers every request with JSON describing what it received.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::TcpListener;

/// Who this backend says it is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub namespace: String,
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

/// Binds `addr` and serves until `shutdown` resolves.
pub async fn run(
    addr: SocketAddr,
    identity: Identity,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    tracing::info!(%addr, name = %identity.name, "echo backend listening");
    serve(listener, identity, shutdown).await
}

/// Serves HTTP/1.1 and cleartext HTTP/2 (h2c) on an already bound listener.
pub async fn serve(
    listener: TcpListener,
    identity: Identity,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let identity = Arc::new(identity);
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let identity = identity.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let identity = identity.clone();
                async move { Ok::<_, Infallible>(respond(&req, &identity)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(req: &Request<Incoming>, identity: &Identity) -> Response<Full<Bytes>> {
    let echoed = describe(req, identity);
    let mut response = Response::builder().header("Content-Type", "application/json");
    for (name, value) in requested_headers(req) {
        response = response.header(name, value);
    }
    let body = serde_json::to_vec(&echoed).expect("echo serializes");
    response
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| {
            Response::builder()
                .status(400)
                .body(Full::new(Bytes::from_static(b"bad X-Echo-Set-Header")))
                .unwrap()
        })
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

/// `X-Echo-Set-Header: K:V,K2:V2` asks for those response headers.
fn requested_headers<B>(req: &Request<B>) -> Vec<(String, String)> {
    req.headers()
        .get_all("x-echo-set-header")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|pair| pair.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
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

    #[test]
    fn describes_requests_and_parses_set_header() {
        let req = Request::builder()
            .uri("/a/b?x=1")
            .header("host", "foo.example.com")
            .header("x-echo-set-header", "X-One: 1, X-Two:2")
            .body(())
            .unwrap();
        let id = Identity {
            name: "v1".into(),
            namespace: "ns".into(),
        };
        let e = describe(&req, &id);
        assert_eq!(e.path, "/a/b?x=1");
        assert_eq!(e.host, "foo.example.com");
        assert_eq!(e.proto, "HTTP/1.1");
        assert_eq!(e.pod, "v1");
        assert!(e.headers.contains_key("X-Echo-Set-Header"));
        assert_eq!(
            requested_headers(&req),
            [("X-One".into(), "1".into()), ("X-Two".into(), "2".into())]
        );
    }
}
