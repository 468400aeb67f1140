//! `/healthz`, `/readyz` and `/metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use super::metrics::Metrics;

/// Ready once every watch has listed and this replica knows its role.
#[derive(Default)]
pub struct Health {
    pub ready: AtomicBool,
}

const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Serves until the task is dropped; fails only if `addr` cannot be bound. `metrics` is `None` on the health port.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Option<Arc<Metrics>>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    tracing::info!(%addr, "serving {}", if metrics.is_some() { "/metrics" } else { "/healthz and /readyz" });
    loop {
        let (stream, _) = accept(|| listener.accept(), addr).await;
        let (health, metrics) = (health.clone(), metrics.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (health, metrics) = (health.clone(), metrics.clone());
                async move { Ok::<_, Infallible>(route(req.uri().path(), &health, metrics.as_deref())) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The next connection. An accept error (EMFILE when out of file
/// descriptors, a connection reset before it was accepted) concerns one
/// connection, not the server: it is logged and accepting resumes after a
/// pause, which gives descriptors time to be freed.
async fn accept<S, F, Fut>(mut accept_one: F, addr: SocketAddr) -> S
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<S>>,
{
    loop {
        match accept_one().await {
            Ok(s) => return s,
            Err(e) => {
                tracing::warn!(%addr, "accepting a connection: {e}; retrying in 100 ms");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

fn route(path: &str, health: &Health, metrics: Option<&Metrics>) -> Response<Full<Bytes>> {
    let (status, body) = match (path, metrics) {
        ("/metrics", Some(m)) => (200, m.encode()),
        ("/healthz", _) => (200, "ok\n".to_string()),
        ("/readyz", _) if health.ready.load(Ordering::Relaxed) => (200, "ready\n".to_string()),
        ("/readyz", _) => (503, "caches not synced yet\n".to_string()),
        _ => (404, "not found\n".to_string()),
    };
    Response::builder()
        .status(status)
        .header(
            "Content-Type",
            if path == "/metrics" {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                "text/plain"
            },
        )
        .body(Full::new(Bytes::from(body)))
        .expect("static response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accept_errors_do_not_end_the_server() {
        let mut calls = 0;
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let got = accept(
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n <= 3 {
                        // EMFILE: too many open files.
                        Err(std::io::Error::from_raw_os_error(24))
                    } else {
                        Ok(n)
                    }
                }
            },
            addr,
        )
        .await;
        assert_eq!(got, 4, "three errors, then a connection");
    }
}
