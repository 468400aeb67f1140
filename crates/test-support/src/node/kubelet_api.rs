//! The part of the kubelet API that `kubectl logs` needs: kube-apiserver
//! proxies `pods/log` to `https://<InternalIP>:<kubeletEndpoint.Port>/
//! containerLogs/{namespace}/{pod}/{container}`, authenticating with its
//! kubelet client certificate (signed by the cluster CA, which this server
//! requires). The serving certificate is self-signed: kube-apiserver does not
//! verify a kubelet's certificate without `--kubelet-certificate-authority`.
//!
//! Supported query parameters: `tailLines`. `follow` returns what is there
//! and ends; `previous`, `timestamps`, `sinceSeconds` are ignored.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::Shared;
use super::containers::LOG_MARKER;

pub async fn serve(
    addr: SocketAddr,
    cluster_ca: &Path,
    shared: Arc<Mutex<Shared>>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let cert = rcgen::generate_simple_self_signed(vec![addr.ip().to_string()])
        .map_err(|e| format!("kubelet serving certificate: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cluster_ca).map_err(|e| format!("cluster CA: {e}"))? {
        roots
            .add(c.map_err(|e| format!("cluster CA: {e}"))?)
            .map_err(|e| format!("cluster CA: {e}"))?;
    }
    let clients = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(clients)
        .with_single_cert(
            vec![cert.cert.der().clone()],
            PrivateKeyDer::try_from(cert.signing_key.serialize_der())
                .map_err(|e| format!("kubelet key: {e}"))?,
        )
        .map_err(|e| format!("kubelet TLS config: {e}"))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("kubelet API on {addr}: {e}"))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, shared) = (acceptor.clone(), shared.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let answer = answer(&req, &shared);
                    async move { Ok::<_, std::convert::Infallible>(answer) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    }))
}

fn answer<B>(req: &hyper::Request<B>, shared: &Mutex<Shared>) -> hyper::Response<Full<Bytes>> {
    let reply = |status: u16, body: String| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let parts: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let ["containerLogs", ns, pod, container] = parts[..] else {
        return reply(404, format!("{} is not served here\n", req.uri().path()));
    };
    let file = super::lock(shared)
        .logs
        .iter()
        .rev()
        .find(|(n, p, c, _)| n == ns && p == pod && c == container)
        .map(|(.., path)| path.clone());
    let Some(file) = file else {
        return reply(404, format!("no container {container} in pod {ns}/{pod}\n"));
    };
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(LOG_MARKER))
        .collect();
    let tail = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("tailLines=")?.parse::<usize>().ok())
        .unwrap_or(lines.len());
    let mut body = lines[lines.len().saturating_sub(tail)..].join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    reply(200, body)
}
