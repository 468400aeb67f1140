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

/// Serves until the task is dropped. `metrics` is `None` on the health port.
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
        let (stream, _) = listener.accept().await?;
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
