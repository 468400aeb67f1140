//! The `admin-proxy` sidecar in front of a real Caddy 2.8.4 admin socket:
//! mutual TLS, forwarding, readiness, certificate rotation and shutdown.

use kengine_gateway_test_support as support;

use support::tls_echo::TestCa;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use kengine_gateway::admin_proxy::{self, Options, TlsFiles};
use kengine_gateway::kengine::admin::{AdminClient, RemoteTls, install_crypto_provider};
use kengine_gateway::kengine::{AdminAddr, AdminError};
use rcgen::ExtendedKeyUsagePurpose;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const CLIENT_NAME: &str = "kengine-gateway-controller";
const SERVER_NAME: &str = "admin.kengine.test";

// ---------------------------------------------------------------- PKI

/// The certificate of the admin endpoint: (certificate PEM, key PEM).
fn server(ca: &TestCa) -> (String, String) {
    ca.leaf_pem(
        "kengine admin",
        &[SERVER_NAME],
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

/// Certificate chain and key in one PEM, as `RemoteTls::identity_pem` wants.
fn client_identity(ca: &TestCa, cn: &str, dns: &[&str]) -> String {
    let (cert, key) = ca.leaf_pem(cn, dns, ExtendedKeyUsagePurpose::ClientAuth);
    cert + &key
}

/// A directory laid out like a mounted Secret: `name -> ..data/name`, with
/// `..data` a symlink swapped atomically on every update, as kubelet does.
struct SecretDir {
    dir: tempfile::TempDir,
    generation: usize,
}

impl SecretDir {
    fn new() -> SecretDir {
        SecretDir {
            dir: tempfile::tempdir().unwrap(),
            generation: 0,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&mut self, files: &[(&str, &str)]) {
        let root = self.dir.path();
        let old = format!("..gen{}", self.generation);
        self.generation += 1;
        let new = format!("..gen{}", self.generation);
        std::fs::create_dir(root.join(&new)).unwrap();
        for (name, content) in files {
            std::fs::write(root.join(&new).join(name), content).unwrap();
        }
        std::os::unix::fs::symlink(&new, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        for (name, _) in files {
            if std::fs::symlink_metadata(root.join(name)).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), root.join(name))
                    .unwrap();
            }
        }
        let _ = std::fs::remove_dir_all(root.join(old));
    }

    fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.path("tls.crt"),
            key: self.path("tls.key"),
            client_ca: self.path("ca.crt"),
        }
    }
}

// ---------------------------------------------------------------- logs

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter("kengine_gateway=debug")
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .init();
    });
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------- harness

struct Proxy {
    addr: SocketAddr,
    health: SocketAddr,
    /// Its `--files-dir`.
    files: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Proxy {
    async fn start(socket: &Path, secret: &SecretDir) -> Proxy {
        capture_logs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let health = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, health_addr) = (listener.local_addr().unwrap(), health.local_addr().unwrap());
        let files = tempfile::tempdir().unwrap();
        let options = Options {
            socket: socket.to_path_buf(),
            tls: secret.tls_files(),
            client_name: CLIENT_NAME.to_string(),
            reload_interval: Duration::from_millis(100),
            shutdown_grace: Duration::from_secs(10),
            files_dir: Some(files.path().to_path_buf()),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(admin_proxy::serve(listener, health, options, async move {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            health: health_addr,
            files,
            stop: Some(stop),
            task,
        }
    }

    fn client(&self, ca_pem: &str, identity_pem: &str) -> AdminClient {
        AdminClient::remote(
            self.addr,
            Some(RemoteTls {
                ca_pem: ca_pem.as_bytes(),
                identity_pem: identity_pem.as_bytes(),
                server_name: Some(SERVER_NAME),
            }),
            Duration::from_secs(30),
        )
        .unwrap()
    }

    async fn health_status(&self, path: &str) -> u16 {
        reqwest::get(format!("http://{}{path}", self.health))
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("proxy did not stop")
            .unwrap()
    }
}

fn socket_of(caddy: &support::Kengine) -> PathBuf {
    match caddy.process.admin_addr() {
        AdminAddr::Unix(path) => path.clone(),
        other => panic!("caddy admin is not on a socket: {other}"),
    }
}

/// Secret files for `ca` with a fresh server certificate.
fn secret_for(ca: &TestCa) -> SecretDir {
    let mut secret = SecretDir::new();
    let (cert, key) = server(ca);
    secret.write(&[("tls.crt", &cert), ("tls.key", &key), ("ca.crt", &ca.pem)]);
    secret
}

/// Retry `check` every 50 ms for up to 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A raw TLS client, for what `AdminClient` hides: the server's certificate,
/// no client certificate, and one connection reused across requests.
fn rustls_client(ca_pem: &str, identity_pem: Option<&str>) -> tokio_rustls::TlsConnector {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match identity_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_connect(connector: &tokio_rustls::TlsConnector, addr: SocketAddr) -> TlsStream {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .unwrap()
}

fn server_cert_of(stream: &TlsStream) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn pem_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// HTTP/1.1 over an established TLS stream, kept open for more requests.
async fn http1(stream: TlsStream) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> Result<(u16, String), hyper::Error> {
    sender.ready().await?;
    let req = hyper::Request::get(path)
        .header("Host", SERVER_NAME)
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn refused<T: std::fmt::Debug>(result: Result<T, AdminError>, who: &str) {
    match result {
        Err(AdminError::Transport(_)) => {}
        other => panic!("{who} was not refused at the TLS layer: {other:?}"),
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_for_the_controller_and_becomes_ready_after_the_first_load() {
    let caddy = support::kengine().await;
    let ca = TestCa::new("instance CA");
    let secret = secret_for(&ca);
    let proxy = Proxy::start(&socket_of(&caddy), &secret).await;
    let client = proxy.client(&ca.pem, &client_identity(&ca, CLIENT_NAME, &[CLIENT_NAME]));

    assert_eq!(proxy.health_status("/healthz").await, 200);
    assert_eq!(proxy.health_status("/readyz").await, 503);

    // Reads pass through, and do not make the pod ready.
    assert_eq!(client.config().await.unwrap(), serde_json::Value::Null);
    assert_eq!(proxy.health_status("/readyz").await, 503);

    // Kengine's refusal comes back as is, and does not make the pod ready.
    match client
        .load(br#"{"apps":{"no_such_app":{}}}"#.to_vec())
        .await
    {
        Err(AdminError::Rejected { status, body }) => {
            assert_eq!(status.as_u16(), 400);
            assert!(body.contains("no_such_app"), "{body}");
        }
        other => panic!("bad config was not rejected: {other:?}"),
    }
    assert_eq!(proxy.health_status("/readyz").await, 503);

    let config = serde_json::json!({"apps": {"http": {"servers": {}}}});
    client.load(config.to_string().into_bytes()).await.unwrap();
    assert_eq!(proxy.health_status("/readyz").await, 200);
    assert_eq!(client.config().await.unwrap(), config);
    // What the proxy forwarded is what Kengine runs.
    assert_eq!(caddy.process.admin().config().await.unwrap(), config);

    // Paths, query strings and other methods pass through too.
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
        .identity(
            reqwest::Identity::from_pem(client_identity(&ca, "x", &[CLIENT_NAME]).as_bytes())
                .unwrap(),
        )
        .resolve(SERVER_NAME, proxy.addr)
        .build()
        .unwrap();
    let base = format!("https://{SERVER_NAME}:{}", proxy.addr.port());
    let resp = http
        .put(format!("{base}/config/apps/http/servers/probe?unused=1"))
        .header("Content-Type", "application/json")
        .body(r#"{"listen":["127.0.0.1:0"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let resp = http
        .get(format!("{base}/config/apps/http/servers/probe/listen"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!(["127.0.0.1:0"])
    );
    let resp = http
        .get(format!("{base}/no/such/endpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    proxy.shutdown().await.unwrap();
}

/// The files a config names are written by the proxy (never forwarded),
/// so a config that names them loads; bad names write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_the_files_a_config_names_before_it_is_loaded() {
    use std::os::unix::fs::PermissionsExt as _;
    let caddy = support::kengine().await;
    let ca = TestCa::new("instance CA");
    let secret = secret_for(&ca);
    let proxy = Proxy::start(&socket_of(&caddy), &secret).await;
    let client = proxy.client(&ca.pem, &client_identity(&ca, CLIENT_NAME, &[CLIENT_NAME]));
    let backends = TestCa::new("backend clients CA");
    let (cert, key) = backends.leaf_pem("gateway", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let files = std::collections::BTreeMap::from([
        ("client-1.crt".to_string(), cert.clone()),
        ("client-1.key".to_string(), key),
    ]);
    client.put_files(&files).await.unwrap();
    let written = proxy.files.path().join("client-1.key");
    assert_eq!(
        std::fs::read_to_string(proxy.files.path().join("client-1.crt")).unwrap(),
        cert
    );
    assert_eq!(
        std::fs::metadata(&written).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Kengine reads them while loading a config that names them.
    let dir = proxy.files.path().display();
    let config = serde_json::json!({"apps": {"http": {"servers": {"s": {
        "listen": ["127.0.0.1:0"],
        "routes": [{"handle": [{"handler": "reverse_proxy",
            "upstreams": [{"dial": "127.0.0.1:1"}],
            "transport": {"protocol": "http", "tls": {
                "client_certificate_file": format!("{dir}/client-1.crt"),
                "client_certificate_key_file": format!("{dir}/client-1.key"),
            }}}]}],
    }}}}});
    client.load(config.to_string().into_bytes()).await.unwrap();
    // A name that leaves the directory is refused, and nothing changes.
    let bad = std::collections::BTreeMap::from([("../x".to_string(), "x".to_string())]);
    match client.put_files(&bad).await {
        Err(AdminError::Rejected { status, body }) => {
            assert_eq!(status.as_u16(), 400);
            assert!(body.contains("../x"), "{body}");
        }
        other => panic!("a bad name was not refused: {other:?}"),
    }
    assert!(written.exists());
    // The newest set replaces the old one.
    client.put_files(&Default::default()).await.unwrap();
    assert!(!written.exists());
    proxy.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_other_names_other_cas_and_missing_client_certificates() {
    let caddy = support::kengine().await;
    let ca = TestCa::new("instance CA");
    let other_ca = TestCa::new("some other CA");
    let secret = secret_for(&ca);
    let proxy = Proxy::start(&socket_of(&caddy), &secret).await;

    // The name may be a DNS SAN or the subject CN.
    let by_san = proxy.client(&ca.pem, &client_identity(&ca, "someone", &[CLIENT_NAME]));
    by_san.config().await.unwrap();
    let by_cn = proxy.client(&ca.pem, &client_identity(&ca, CLIENT_NAME, &[]));
    by_cn.config().await.unwrap();

    let wrong_name = proxy.client(
        &ca.pem,
        &client_identity(&ca, "intruder", &["intruder.test"]),
    );
    refused(wrong_name.config().await, "a client with another name");
    refused(
        wrong_name.load(b"{}".to_vec()).await,
        "a client with another name",
    );
    // Names are compared exactly: no prefixes, no wildcards.
    let near_miss = proxy.client(
        &ca.pem,
        &client_identity(
            &ca,
            "kengine-gateway",
            &[
                "*.kengine-gateway-controller",
                "kengine-gateway-controller.evil",
            ],
        ),
    );
    refused(near_miss.config().await, "a client with a similar name");

    let other = proxy.client(
        &ca.pem,
        &client_identity(&other_ca, CLIENT_NAME, &[CLIENT_NAME]),
    );
    refused(other.config().await, "a client of another CA");

    // No client certificate: TLS 1.3 finishes the client's side of the
    // handshake first, so the refusal shows on the first request.
    let anonymous = rustls_client(&ca.pem, None);
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let server_name = ServerName::try_from(SERVER_NAME).unwrap();
    if let Ok(stream) = anonymous.connect(server_name, tcp).await {
        let mut sender = http1(stream).await;
        assert!(
            get(&mut sender, "/config/").await.is_err(),
            "a client without certificate was answered"
        );
    }

    // A plain-HTTP request on the TLS port gets nothing either.
    assert!(
        reqwest::get(format!("http://{}/config/", proxy.addr))
            .await
            .is_err()
    );

    // None of them reached Kengine, and the pod is still not ready.
    assert_eq!(
        caddy.process.admin().config().await.unwrap(),
        serde_json::Value::Null
    );
    assert_eq!(proxy.health_status("/readyz").await, 503);

    let logs = logs();
    assert!(
        logs.contains(
            "certificate not valid for name \"kengine-gateway-controller\"; \
             certificate is only valid for CN intruder or DNS intruder.test"
        ),
        "{logs}"
    );
    assert!(logs.contains("UnknownIssuer"), "{logs}");
    assert!(logs.contains("peer sent no certificates"), "{logs}");
    assert!(logs.contains("refused admin connection"), "{logs}");

    proxy.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_files_serve_new_handshakes_without_cutting_established_ones() {
    let caddy = support::kengine().await;
    let ca = TestCa::new("instance CA");
    let next_ca = TestCa::new("next instance CA");
    let mut secret = secret_for(&ca);
    let first_cert = pem_der(&std::fs::read_to_string(secret.path("tls.crt")).unwrap());
    let proxy = Proxy::start(&socket_of(&caddy), &secret).await;
    let identity = client_identity(&ca, CLIENT_NAME, &[CLIENT_NAME]);
    let connector = rustls_client(&ca.pem, Some(&identity));

    // A connection established before the rotation.
    let stream = tls_connect(&connector, proxy.addr).await;
    assert_eq!(server_cert_of(&stream), first_cert);
    let mut established = http1(stream).await;
    assert_eq!(get(&mut established, "/config/").await.unwrap().0, 200);

    // The operator rotates the server certificate and adds the next CA.
    let (cert, key) = server(&ca);
    let bundle = format!("{}{}", ca.pem, next_ca.pem);
    secret.write(&[("tls.crt", &cert), ("tls.key", &key), ("ca.crt", &bundle)]);
    let new_cert = pem_der(&cert);
    assert_ne!(new_cert, first_cert);
    eventually("new handshakes present the new certificate", || async {
        server_cert_of(&tls_connect(&connector, proxy.addr).await) == new_cert
    })
    .await;

    // Clients of the next CA are now accepted, and old ones still are.
    let next = proxy.client(
        &bundle,
        &client_identity(&next_ca, CLIENT_NAME, &[CLIENT_NAME]),
    );
    next.config().await.unwrap();
    proxy.client(&ca.pem, &identity).config().await.unwrap();

    // The connection from before the rotation was not cut.
    let (status, body) = get(&mut established, "/config/").await.unwrap();
    assert_eq!((status, body.trim()), (200, "null"));

    // A broken update (a key that does not match) is ignored: the last
    // good files keep serving.
    let (_, other_key) = server(&ca);
    secret.write(&[
        ("tls.crt", &cert),
        ("tls.key", &other_key),
        ("ca.crt", &bundle),
    ]);
    eventually("the broken update is reported", || async {
        logs().contains("new admin TLS files are not usable yet")
    })
    .await;
    let stream = tls_connect(&connector, proxy.addr).await;
    assert_eq!(server_cert_of(&stream), new_cert);
    next.config().await.unwrap();

    proxy.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting() {
    let caddy = support::kengine().await;
    let ca = TestCa::new("instance CA");
    let secret = secret_for(&ca);
    let proxy = Proxy::start(&socket_of(&caddy), &secret).await;
    let addr = proxy.addr;
    // An idle keep-alive connection does not hold the shutdown up.
    let connector = rustls_client(
        &ca.pem,
        Some(&client_identity(&ca, CLIENT_NAME, &[CLIENT_NAME])),
    );
    let mut idle = http1(tls_connect(&connector, addr).await).await;
    assert_eq!(get(&mut idle, "/config/").await.unwrap().0, 200);

    proxy.shutdown().await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_files_fail_at_startup() {
    let ca = TestCa::new("instance CA");
    let mut secret = secret_for(&ca);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = Options {
        socket: secret.path("admin.sock"),
        tls: TlsFiles {
            cert: secret.path("missing.crt"),
            ..secret.tls_files()
        },
        client_name: CLIENT_NAME.to_string(),
        reload_interval: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(1),
        files_dir: None,
    };
    let err = admin_proxy::serve(listener, health, options.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("missing.crt"), "{err:#}");

    // A key that does not belong to the certificate.
    let (cert, _) = server(&ca);
    let (_, key) = server(&ca);
    secret.write(&[("tls.crt", &cert), ("tls.key", &key), ("ca.crt", &ca.pem)]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = Options {
        tls: secret.tls_files(),
        ..options
    };
    let err = admin_proxy::serve(listener, health, options, std::future::pending())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("tls.key"), "{err:#}");
}

// ---------------------------------------------------------------- the binary

const BIN: &str = env!("CARGO_BIN_EXE_kengine-gateway");

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn proxy_command(
    secret: &SecretDir,
    socket: &Path,
    listen: SocketAddr,
    health: SocketAddr,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("admin-proxy")
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--socket")
        .arg(socket)
        .arg("--tls-cert")
        .arg(secret.path("tls.crt"))
        .arg("--tls-key")
        .arg(secret.path("tls.key"))
        .arg("--client-ca")
        .arg(secret.path("ca.crt"))
        .arg("--client-name")
        .arg(CLIENT_NAME)
        .arg("--health-addr")
        .arg(health.to_string())
        .env_remove("KENGINE_GATEWAY_HEALTH_ADDR")
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reports_bad_arguments_in_one_line() {
    let ca = TestCa::new("instance CA");
    let secret = secret_for(&ca);
    std::fs::remove_file(secret.path("ca.crt")).unwrap();
    let out = proxy_command(
        &secret,
        &secret.path("admin.sock"),
        free_port(),
        free_port(),
    )
    .output()
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("kengine-gateway: reading "), "{stderr}");
    assert!(stderr.contains("ca.crt"), "{stderr}");

    let out = tokio::process::Command::new(BIN)
        .args([
            "admin-proxy",
            "--listen",
            "127.0.0.1:1",
            "--client-name",
            "",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_and_stops_on_sigterm() {
    let caddy = support::kengine().await;
    let ca = TestCa::new("instance CA");
    let secret = secret_for(&ca);
    let (listen, health) = (free_port(), free_port());
    let mut child = proxy_command(&secret, &socket_of(&caddy), listen, health)
        .spawn()
        .unwrap();
    let ready = |path: &'static str| async move {
        reqwest::get(format!("http://{health}{path}"))
            .await
            .map(|r| r.status().as_u16())
            .ok()
    };
    eventually("the health port answers", || async {
        ready("/healthz").await == Some(200)
    })
    .await;
    assert_eq!(ready("/readyz").await, Some(503));

    let client = AdminClient::remote(
        listen,
        Some(RemoteTls {
            ca_pem: ca.pem.as_bytes(),
            identity_pem: client_identity(&ca, CLIENT_NAME, &[CLIENT_NAME]).as_bytes(),
            server_name: Some(SERVER_NAME),
        }),
        Duration::from_secs(30),
    )
    .unwrap();
    client.load(br#"{"apps":{}}"#.to_vec()).await.unwrap();
    assert_eq!(ready("/readyz").await, Some(200));

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("admin-proxy did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let _ = std::io::stderr().flush();
}

/// Caddy with its admin API on `socket`, like the Kengine container of a pod.
fn caddy_on(socket: &Path, dir: &Path) -> std::process::Child {
    std::process::Command::new(support::caddy_bin())
        .arg("run")
        .env("CADDY_ADMIN", format!("unix/{}", socket.display()))
        .env("XDG_CONFIG_HOME", dir)
        .env("XDG_DATA_HOME", dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_kengine_is_not_ready_until_it_is_loaded_again() {
    let dir = tempfile::Builder::new().prefix("k").tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let mut caddy = caddy_on(&socket, dir.path());
    let ca = TestCa::new("instance CA");
    let secret = secret_for(&ca);
    let proxy = Proxy::start(&socket, &secret).await;
    let client = proxy.client(&ca.pem, &client_identity(&ca, CLIENT_NAME, &[CLIENT_NAME]));
    let config = serde_json::json!({"apps": {"http": {"servers": {}}}});
    eventually("the first load", || async {
        client.load(config.to_string().into_bytes()).await.is_ok()
    })
    .await;
    assert_eq!(proxy.health_status("/readyz").await, 200);

    // The container dies and the kubelet starts it again: no config.
    caddy.kill().unwrap();
    caddy.wait().unwrap();
    caddy = caddy_on(&socket, dir.path());
    eventually("the new Kengine's admin API", || async {
        client.config().await.is_ok_and(|c| c.is_null())
    })
    .await;
    assert_eq!(proxy.health_status("/readyz").await, 503);
    client.load(config.to_string().into_bytes()).await.unwrap();
    assert_eq!(proxy.health_status("/readyz").await, 200);

    // A load that changes only the admin settings restarts the admin
    // server (a new socket) but keeps the config: still ready.
    let with_admin = serde_json::json!({"admin": {"listen": format!("unix/{}", socket.display()), "config": {"persist": false}},
        "apps": {"http": {"servers": {}}}});
    client
        .load(with_admin.to_string().into_bytes())
        .await
        .unwrap();
    eventually("ready after an admin restart", || async {
        proxy.health_status("/readyz").await == 200 && client.config().await.is_ok()
    })
    .await;
    caddy.kill().unwrap();
    caddy.wait().unwrap();
    proxy.shutdown().await.unwrap();
}
