//! TLS backends for BackendTLSPolicy tests: a test CA made with rcgen (the
//! admin-proxy tests use it too), and
//! an echo backend serving a certificate it issued, over HTTP/1.1 or HTTP/2
//! (chosen by ALPN). The backend reports the SNI it received and counts
//! accepted TCP connections, so a test can tell "never dialed" from
//! "dialed, handshake refused".

use std::convert::Infallible;

use base64::Engine as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

/// A private CA no system trusts.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, as a ConfigMap's `ca.crt` holds it.
    pub pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf certificate for common name `cn` and `dns` names, for
    /// `usage`, and its key.
    fn leaf(
        &self,
        cn: &str,
        dns: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert, key)
    }

    /// [`TestCa::leaf`] as PEM: (certificate, key).
    pub fn leaf_pem(
        &self,
        cn: &str,
        dns: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let (cert, key) = self.leaf(cn, dns, usage);
        (cert.pem(), key.serialize_pem())
    }

    /// A server certificate for `dns` names and its key.
    pub fn issue(&self, dns: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let cn = dns.first().copied().unwrap_or("backend");
        let (cert, key) = self.leaf(cn, dns, ExtendedKeyUsagePurpose::ServerAuth);
        (
            cert.der().clone(),
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
    }

    /// A rustls server config presenting a certificate for `dns`, offering
    /// the `alpn` protocols.
    pub fn server_config(&self, dns: &[&str], alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        self.server_config_for(dns, alpn, None)
    }

    /// [`TestCa::server_config`], also requiring a client certificate that
    /// chains to `clients` when given.
    pub fn server_config_for(
        &self,
        dns: &[&str],
        alpn: &[&[u8]],
        clients: Option<&TestCa>,
    ) -> Arc<rustls::ServerConfig> {
        kengine_gateway::kengine::admin::install_crypto_provider();
        let (cert, key) = self.issue(dns);
        let builder = rustls::ServerConfig::builder();
        let builder = match clients {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.issuer_der()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(vec![cert], key).unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// The CA certificate (DER).
    fn issuer_der(&self) -> CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject as _;
        CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap()
    }

    /// A ConfigMap `name` in `default` holding this CA as `ca.crt`.
    pub fn config_map(&self, name: &str) -> String {
        let pem: String = self.pem.lines().map(|l| format!("    {l}\n")).collect();
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\n\
             data:\n  ca.crt: |\n{pem}---\n"
        )
    }
}

/// A running TLS backend.
pub struct TlsBackend {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    hellos: Arc<Mutex<Vec<Option<String>>>>,
    requests: Arc<AtomicUsize>,
}

impl TlsBackend {
    /// TCP connections accepted so far, completed handshakes or not.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The SNI of every ClientHello received, in order, including those of
    /// handshakes the client then abandoned (a failed verification).
    pub fn client_hellos(&self) -> Vec<Option<String>> {
        self.hellos.lock().unwrap().clone()
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// What a connection's handshake settled.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    pub sni: Option<String>,
    pub alpn: Option<String>,
    pub version: String,
    /// The client's certificate (base64 DER), when it presented one.
    pub client_cert: Option<String>,
}

impl Handshake {
    fn of(stream: &TlsStream<TcpStream>) -> Handshake {
        let conn = stream.get_ref().1;
        Handshake {
            sni: conn.server_name().map(str::to_string),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            version: conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            client_cert: (conn.peer_certificates())
                .and_then(|certs| certs.first())
                .map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
        }
    }
}

/// Binds `ip` (any free port), counts every accepted connection, records
/// each ClientHello's SNI and hands each completed handshake to `serve`;
/// failed handshakes are dropped.
pub async fn listen<F, Fut>(
    ip: &str,
    config: Arc<rustls::ServerConfig>,
    requests: Arc<AtomicUsize>,
    serve: F,
) -> TlsBackend
where
    F: Fn(TlsStream<TcpStream>, Handshake) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let hellos = Arc::new(Mutex::new(Vec::new()));
    let serve = Arc::new(serve);
    let (counted, heard) = (connections.clone(), hellos.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let (config, heard, serve) = (config.clone(), heard.clone(), serve.clone());
            tokio::spawn(async move {
                // Lazy: the ClientHello's SNI is recorded even when the
                // client aborts the handshake later.
                let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
                let Ok(start) = acceptor.await else { return };
                let sni = start.client_hello().server_name().map(str::to_string);
                heard.lock().unwrap().push(sni);
                if let Ok(tls) = start.into_stream(config).await {
                    let handshake = Handshake::of(&tls);
                    serve(tls, handshake).await;
                }
            });
        }
    });
    TlsBackend {
        addr,
        connections,
        hellos,
        requests,
    }
}

/// Starts a TLS echo backend on `ip` (any free port) answering as `name`,
/// with a certificate for `dns` issued by `ca`, offering ALPN `h2` and
/// `http/1.1`. Every answer is JSON: `pod` (the name), `path`, `host`,
/// `proto`, and the handshake's `sni`, `alpn` and `tls`.
pub async fn serve(ip: &str, name: &str, ca: &TestCa, dns: &[&str]) -> TlsBackend {
    serve_for(ip, name, ca, dns, None).await
}

/// [`serve`], also requiring a client certificate issued by `clients`
/// when given; the answer's `client_cert` is the one presented (base64 DER).
pub async fn serve_for(
    ip: &str,
    name: &str,
    ca: &TestCa,
    dns: &[&str],
    clients: Option<&TestCa>,
) -> TlsBackend {
    let config = ca.server_config_for(dns, &[b"h2", b"http/1.1"], clients);
    let name: Arc<str> = name.into();
    let requests = Arc::new(AtomicUsize::new(0));
    let answered = requests.clone();
    listen(ip, config, requests, move |tls, handshake| {
        let name = name.clone();
        let answered = answered.clone();
        let handshake = Arc::new(handshake);
        let service = hyper::service::service_fn(move |req| {
            answered.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, Infallible>(answer(&req, &name, &handshake)))
        });
        async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        }
    })
    .await
}

fn answer(req: &Request<Incoming>, name: &str, handshake: &Handshake) -> Response<Full<Bytes>> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(hyper::header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    let body = serde_json::json!({
        "pod": name,
        "path": req.uri().path_and_query().map_or("/", |p| p.as_str()),
        "host": host,
        "proto": format!("{:?}", req.version()),
        "sni": handshake.sni,
        "alpn": handshake.alpn,
        "tls": handshake.version,
        "client_cert": handshake.client_cert,
    });
    Response::builder()
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// One echo answer, as the gateway relayed it.
#[derive(Debug)]
pub struct Echoed {
    pub status: u16,
    /// The JSON body; `Null` when the answer was not the backend's.
    pub body: serde_json::Value,
}

impl Echoed {
    pub fn pod(&self) -> Option<&str> {
        self.body["pod"].as_str()
    }

    pub fn sni(&self) -> Option<&str> {
        self.body["sni"].as_str()
    }
}

/// GET `http://{gateway}{path}` with `Host: host`.
pub async fn get(client: &reqwest::Client, gateway: SocketAddr, host: &str, path: &str) -> Echoed {
    let resp = client
        .get(format!("http://{gateway}{path}"))
        .header("Host", host)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or_default();
    Echoed { status, body }
}
