//! A gRPC echo backend mirroring the Gateway API conformance one
//! (`echo-basic`'s `grpcecho.proto`), and a client for it: tonic's framing
//! and prost messages written by hand (no protoc), over hyper's HTTP/2.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::http;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::body::Body;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

/// The service's full name: the proto's package and service.
pub const SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";
pub const ECHO: &str = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo";
pub const ECHO_TWO: &str = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/EchoTwo";
pub const ECHO_THREE: &str = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/EchoThree";

// The proto's messages, field numbers as in grpcecho.proto.

#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Context {
    #[prost(string, tag = "1")]
    pub namespace: String,
    #[prost(string, tag = "2")]
    pub ingress: String,
    #[prost(string, tag = "3")]
    pub service_name: String,
    #[prost(string, tag = "4")]
    pub pod: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TlsAssertions {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub negotiated_protocol: String,
    #[prost(string, tag = "3")]
    pub server_name: String,
    #[prost(string, tag = "4")]
    pub cipher_suite: String,
    #[prost(string, repeated, tag = "5")]
    pub peer_certificates: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Assertions {
    #[prost(string, tag = "1")]
    pub fully_qualified_method: String,
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<Header>,
    #[prost(string, tag = "3")]
    pub authority: String,
    #[prost(message, optional, tag = "4")]
    pub context: Option<Context>,
    #[prost(message, optional, tag = "5")]
    pub tls_assertions: Option<TlsAssertions>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoResponse {
    #[prost(message, optional, tag = "1")]
    pub assertions: Option<Assertions>,
    #[prost(message, optional, tag = "2")]
    pub request: Option<EchoRequest>,
}

impl EchoResponse {
    fn assertions(&self) -> &Assertions {
        self.assertions
            .as_ref()
            .expect("an echo answer has assertions")
    }

    /// The backend that answered (`context.pod`).
    pub fn pod(&self) -> &str {
        self.assertions()
            .context
            .as_ref()
            .map_or("", |c| c.pod.as_str())
    }

    pub fn method(&self) -> &str {
        &self.assertions().fully_qualified_method
    }

    pub fn authority(&self) -> &str {
        &self.assertions().authority
    }

    /// The SNI the backend received; empty over cleartext.
    pub fn server_name(&self) -> &str {
        self.assertions()
            .tls_assertions
            .as_ref()
            .map_or("", |t| t.server_name.as_str())
    }

    /// The ALPN protocol the backend negotiated; empty over cleartext.
    pub fn negotiated_protocol(&self) -> &str {
        self.assertions()
            .tls_assertions
            .as_ref()
            .map_or("", |t| t.negotiated_protocol.as_str())
    }

    /// Every value the backend received for header `key`, in order.
    pub fn header(&self, key: &str) -> Vec<&str> {
        self.assertions()
            .headers
            .iter()
            .filter(|h| h.key.eq_ignore_ascii_case(key))
            .map(|h| h.value.as_str())
            .collect()
    }
}

/// Starts a gRPC echo backend on `ip` (any free port) answering as `name`
/// (`context.pod` and `context.service_name`). Cleartext HTTP/2 with prior
/// knowledge only, like grpc-go's plaintext server: a proxy that dials it
/// with HTTP/1.1 gets no answer.
pub async fn serve(ip: &str, name: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name: Arc<str> = name.into();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let name = name.clone();
            let service = hyper::service::service_fn(move |req| handle(req, name.clone(), None));
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// [`serve`] over TLS with `config` (its certificate; ALPN is set to `h2`
/// only, like grpc-go's TLS server). Answers carry `tls_assertions`: the
/// SNI received, the ALPN protocol and the TLS version.
pub async fn serve_tls(
    ip: &str,
    name: &str,
    config: Arc<rustls::ServerConfig>,
) -> super::tls_echo::TlsBackend {
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name: Arc<str> = name.into();
    let requests = Arc::new(AtomicUsize::new(0));
    let answered = requests.clone();
    super::tls_echo::listen(ip, Arc::new(config), requests, move |tls, handshake| {
        let name = name.clone();
        let answered = answered.clone();
        let assertions = Arc::new(TlsAssertions {
            version: handshake.version,
            negotiated_protocol: handshake.alpn.unwrap_or_default(),
            server_name: handshake.sni.unwrap_or_default(),
            cipher_suite: String::new(),
            peer_certificates: Vec::new(),
        });
        let service = hyper::service::service_fn(move |req| {
            answered.fetch_add(1, Ordering::SeqCst);
            handle(req, name.clone(), Some(assertions.clone()))
        });
        async move {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        }
    })
    .await
}

/// Unlike the conformance server, EchoThree is implemented too: an
/// `Unimplemented` for it through a gateway is then the gateway's answer.
async fn handle(
    req: http::Request<Incoming>,
    name: Arc<str>,
    tls: Option<Arc<TlsAssertions>>,
) -> Result<http::Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if ![ECHO, ECHO_TWO, ECHO_THREE].contains(&path.as_str()) {
        return Ok(Status::unimplemented(format!("unknown method {path}")).into_http());
    }
    // HTTP/2 carries the authority in the URI; HTTP/1.1 (never expected) in Host.
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    // grpc-go's incoming metadata lists `:authority` with the headers.
    let headers = std::iter::once(Header {
        key: ":authority".into(),
        value: authority.clone(),
    })
    .chain(req.headers().iter().map(|(k, v)| Header {
        key: k.as_str().into(),
        value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
    }))
    .collect();
    let answer = EchoResponse {
        assertions: Some(Assertions {
            fully_qualified_method: path,
            headers,
            authority,
            context: Some(Context {
                namespace: "default".into(),
                ingress: String::new(),
                service_name: name.to_string(),
                pod: name.to_string(),
            }),
            tls_assertions: tls.as_deref().cloned(),
        }),
        request: None,
    };
    Ok(tonic::server::Grpc::new(ProstCodec::default())
        .unary(Answer(answer), req)
        .await)
}

/// Answers every call with one prepared response.
struct Answer(EchoResponse);

impl tonic::server::UnaryService<EchoRequest> for Answer {
    type Response = EchoResponse;
    type Future = std::future::Ready<Result<Response<EchoResponse>, Status>>;

    fn call(&mut self, _: Request<EchoRequest>) -> Self::Future {
        std::future::ready(Ok(Response::new(self.0.clone())))
    }
}

/// How long one call may take, connecting included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls `method` (a full path, e.g. [`ECHO`]) on `gateway` over cleartext
/// HTTP/2 (prior knowledge) with `:authority` `authority` and `metadata`.
pub async fn call(
    gateway: SocketAddr,
    authority: &str,
    method: &str,
    metadata: &[(&str, &str)],
) -> Result<EchoResponse, Status> {
    call_response(gateway, authority, method, metadata)
        .await
        .map(Response::into_inner)
}

/// [`call`], keeping the response metadata (headers and trailers).
pub async fn call_response(
    gateway: SocketAddr,
    authority: &str,
    method: &str,
    metadata: &[(&str, &str)],
) -> Result<Response<EchoResponse>, Status> {
    timed(async {
        let stream = tokio::net::TcpStream::connect(gateway)
            .await
            .map_err(unavailable)?;
        unary(stream, &format!("http://{authority}"), method, metadata).await
    })
    .await
}

/// Calls `method` on `gateway` over TLS, trusting only `ca_pem`, with
/// `authority` as `:authority` and its host as SNI, offering ALPN `h2` only.
pub async fn call_tls(
    gateway: SocketAddr,
    authority: &str,
    ca_pem: &str,
    method: &str,
    metadata: &[(&str, &str)],
) -> Result<Response<EchoResponse>, Status> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    kengine_gateway::kengine::admin::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("a PEM certificate")).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let host = authority
        .parse::<http::uri::Authority>()
        .expect("an authority")
        .host()
        .to_string();
    let sni = ServerName::try_from(host).expect("a server name");
    timed(async {
        let tcp = tokio::net::TcpStream::connect(gateway)
            .await
            .map_err(unavailable)?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(sni, tcp)
            .await
            .map_err(unavailable)?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(Status::unavailable("the server did not select ALPN h2"));
        }
        unary(tls, &format!("https://{authority}"), method, metadata).await
    })
    .await
}

async fn timed<T>(call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("call timed out")))
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("connecting: {e}"))
}

/// One unary call on a fresh HTTP/2 connection over `io`; `origin` gives
/// the request's `:scheme` and `:authority`.
async fn unary<IO>(
    io: IO,
    origin: &str,
    method: &str,
    metadata: &[(&str, &str)],
) -> Result<Response<EchoResponse>, Status>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(unavailable)?;
    // The connection ends when `send` is dropped.
    tokio::spawn(conn);
    let origin: http::Uri = origin.parse().expect("an origin");
    let mut client = tonic::client::Grpc::with_origin(H2(send), origin);
    client.ready().await.map_err(unavailable)?;
    let mut request = Request::new(EchoRequest {});
    for (key, value) in metadata {
        request.metadata_mut().append(
            MetadataKey::from_bytes(key.as_bytes()).expect("a metadata key"),
            MetadataValue::try_from(*value).expect("a metadata value"),
        );
    }
    let path = method.parse().expect("a method path");
    client
        .unary(
            request,
            path,
            ProstCodec::<EchoRequest, EchoResponse>::default(),
        )
        .await
}

/// hyper's HTTP/2 connection as the service tonic's client drives.
struct H2(hyper::client::conn::http2::SendRequest<Body>);

impl tower_service::Service<http::Request<Body>> for H2 {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

/// The gRPC code of a call's outcome, `Ok` for a success.
pub fn code<T>(result: &Result<T, Status>) -> Code {
    result.as_ref().map_or_else(Status::code, |_| Code::Ok)
}
