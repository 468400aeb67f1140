//! A real Kubernetes control plane for the end-to-end tests: etcd,
//! kube-apiserver and kube-controller-manager, built from the Go modules
//! pinned in `e2e/kube/` by `scripts/ensure-kube.sh`, listening on loopback
//! with certificates generated here, RBAC authorization on and
//! service-account token signing. Every process is killed when the handle
//! is dropped; a failing test prints the tail of each process's log.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

fn repo_root() -> PathBuf {
    crate::repo()
}

/// The folder with the pinned binaries: `$KENGINE_GATEWAY_KUBE_BIN`, else
/// the repo's `.kube-bin` that `scripts/ensure-kube.sh` fills.
pub fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("KENGINE_GATEWAY_KUBE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".kube-bin"));
    for c in ["etcd", "kube-apiserver", "kube-controller-manager"] {
        assert!(
            dir.join(c).is_file(),
            "{} has no {c}: run scripts/ensure-kube.sh (it builds the pinned control plane)",
            dir.display()
        );
    }
    dir
}

/// The IP range Services get their ClusterIPs from. Only the node agent
/// (`node/`) routes it, to kube-proxy's NAT rules.
pub const SERVICE_CIDR: &str = "10.96.0.0/24";
/// The `kubernetes` Service's cluster IP: the first of [`SERVICE_CIDR`].
pub const KUBERNETES_SERVICE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 96, 0, 1);

pub struct ControlPlane {
    /// A kubeconfig with cluster-admin rights (group `system:masters`).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    pub etcd_url: String,
    // Dropped in this order: the processes, then their folder.
    processes: Vec<Process>,
    dir: tempfile::TempDir,
}

struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// How it was started, to start it again.
    command: PathBuf,
    args: Vec<String>,
}

impl Process {
    /// Starts `command ARGS`; its output is appended to `log`.
    fn spawn(name: &'static str, command: PathBuf, args: Vec<String>, log: PathBuf) -> Process {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(&command)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Process {
            name,
            child,
            log,
            command,
            args,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!(
                "--- {} log (last lines, newest first) ---\n{}",
                self.name,
                tail.join("\n")
            );
        }
    }
}

/// A loopback port nothing listens on, below the kernel's ephemeral range
/// (32768 and up by default) and never one handed out before in this
/// process. A port from `bind(:0)` is ephemeral: until the component bound
/// it, an outgoing connection (kube-apiserver to etcd) could take it as its
/// source port, and kube-controller-manager once failed to listen that way.
fn free_port() -> u16 {
    use std::hash::BuildHasher as _;
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let seed = std::collections::hash_map::RandomState::new();
    for attempt in 0u32.. {
        let port = 20_000 + (seed.hash_one(attempt) % 12_000) as u16;
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    unreachable!("no free port in 20000..32000")
}

fn name(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

/// The cluster's PKI, written as PEM files into a folder.
struct Pki {
    ca: PathBuf,
}

impl Pki {
    fn write(dir: &Path) -> Pki {
        let write = |file: &str, text: String| {
            std::fs::write(dir.join(file), text).unwrap();
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name = name("kengine-gateway-test-ca", None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        write("ca.crt", ca.self_signed(&ca_key).unwrap().pem());
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |file: &str, params: CertificateParams| {
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            write(&format!("{file}.crt"), cert.pem());
            write(&format!("{file}.key"), key.serialize_pem());
        };
        let mut server = CertificateParams::default();
        server.distinguished_name = name("kube-apiserver", None);
        server.subject_alt_names = vec![
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::DnsName("kubernetes.default.svc".try_into().unwrap()),
            SanType::DnsName("kubernetes.default".try_into().unwrap()),
            SanType::DnsName("kubernetes".try_into().unwrap()),
            // What pods dial: the `kubernetes` Service, or the node.
            SanType::IpAddress(KUBERNETES_SERVICE_IP.into()),
            SanType::IpAddress(POD_REACHABLE_ADDRESS.into()),
        ];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf("apiserver", server);
        let mut admin = CertificateParams::default();
        admin.distinguished_name = name("test-admin", Some("system:masters"));
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        leaf("admin", admin);
        // kube-apiserver's identity towards kubelets (pods/log, exec).
        let mut kubelet_client = CertificateParams::default();
        kubelet_client.distinguished_name =
            name("kube-apiserver-kubelet-client", Some("system:masters"));
        kubelet_client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        leaf("kubelet-client", kubelet_client);
        // Service-account tokens are signed with this key and checked
        // with its public half.
        let sa = KeyPair::generate().unwrap();
        write("sa.key", sa.serialize_pem());
        write("sa.pub", sa.public_key_pem());
        Pki {
            ca: dir.join("ca.crt"),
        }
    }
}

/// A kubeconfig for `url` that authenticates with a client certificate or
/// a bearer token.
pub fn kubeconfig(url: &str, ca: &Path, user: KubeUser<'_>) -> String {
    let user = match user {
        KubeUser::Certificate { cert, key } => format!(
            "    client-certificate: {}\n    client-key: {}\n",
            cert.display(),
            key.display()
        ),
        KubeUser::Token(token) => format!("    token: {token}\n"),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    \
         certificate-authority: {}\nusers:\n- name: test\n  user:\n{user}contexts:\n- name: test\n  \
         context:\n    cluster: test\n    user: test\n    namespace: default\n\
         current-context: test\n",
        ca.display()
    )
}

pub enum KubeUser<'a> {
    Certificate { cert: &'a Path, key: &'a Path },
    Token(&'a str),
}

/// The address the API server advertises when pods must reach it
/// ([`ControlPlane::start_for_pods`]): the node agent's node address.
pub const POD_REACHABLE_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 10, 0, 1);

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager, and waits
    /// until the apiserver is ready. kube-apiserver listens on loopback
    /// only, and the `kubernetes` Service has no endpoints.
    pub async fn start() -> ControlPlane {
        Self::start_with(false).await
    }

    /// [`ControlPlane::start`] for a cluster with pods (the node agent):
    /// kube-apiserver listens on every address of the test's network
    /// namespace and advertises [`POD_REACHABLE_ADDRESS`], so its endpoint
    /// reconciler publishes the `kubernetes` Service's endpoints and pods
    /// reach it through kube-proxy, as in-cluster clients do. Only for a
    /// test inside its own network namespace (`netns.rs`).
    pub async fn start_for_pods() -> ControlPlane {
        Self::start_with(true).await
    }

    async fn start_with(for_pods: bool) -> ControlPlane {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pki = Pki::write(d);
        let path = |f: &str| d.join(f).display().to_string();
        let mut processes = Vec::new();
        let mut spawn = |name: &'static str, args: Vec<String>| {
            let log = d.join(format!("{name}.log"));
            processes.push(Process::spawn(name, bin.join(name), args, log));
        };

        let (client_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        spawn(
            "etcd",
            [
                "--name=test",
                &format!("--data-dir={}", path("etcd")),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer}"),
                &format!("--initial-advertise-peer-urls={peer}"),
                &format!("--initial-cluster=test={peer}"),
                // Tests need no durability; fsync is most of etcd's latency.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ]
            .map(String::from)
            .to_vec(),
        );

        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        spawn(
            "kube-apiserver",
            [
                format!("--etcd-servers={etcd_url}"),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", path("apiserver-certs")),
                format!("--tls-cert-file={}", path("apiserver.crt")),
                format!("--tls-private-key-file={}", path("apiserver.key")),
                format!("--client-ca-file={}", path("ca.crt")),
                "--authorization-mode=RBAC".into(),
                // The node agent's kubelet API (crates/test-support/src/node) checks
                // this certificate; its address is the Node's InternalIP.
                format!(
                    "--kubelet-client-certificate={}",
                    path("kubelet-client.crt")
                ),
                format!("--kubelet-client-key={}", path("kubelet-client.key")),
                "--kubelet-preferred-address-types=InternalIP".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", path("sa.pub")),
                format!("--service-account-signing-key-file={}", path("sa.key")),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--enable-priority-and-fairness=false".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ]
            .into_iter()
            .chain(match for_pods {
                true => [
                    "--bind-address=0.0.0.0".into(),
                    format!("--advertise-address={POD_REACHABLE_ADDRESS}"),
                ]
                .to_vec(),
                // The `kubernetes` Endpoints may not point at loopback;
                // without pods nobody needs them.
                false => [
                    "--bind-address=127.0.0.1".into(),
                    "--advertise-address=127.0.0.1".into(),
                    "--endpoint-reconciler-type=none".into(),
                ]
                .to_vec(),
            })
            .collect(),
        );

        let kubeconfig = d.join("admin.kubeconfig");
        std::fs::File::create(&kubeconfig)
            .unwrap()
            .write_all(
                self::kubeconfig(
                    &url,
                    &pki.ca,
                    KubeUser::Certificate {
                        cert: &d.join("admin.crt"),
                        key: &d.join("admin.key"),
                    },
                )
                .as_bytes(),
            )
            .unwrap();
        // kube-controller-manager exits when the API server cannot serve
        // its authentication ConfigMap yet, so it starts after /readyz.
        wait_apiserver_ready(&kubeconfig).await;
        spawn(
            "kube-controller-manager",
            [
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()),
                format!("--cert-dir={}", path("kcm-certs")),
                format!("--service-account-private-key-file={}", path("sa.key")),
                format!("--root-ca-file={}", path("ca.crt")),
                "--use-service-account-credentials=true".into(),
                "--leader-elect=false".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ]
            .to_vec(),
        );

        let plane = ControlPlane {
            kubeconfig,
            url,
            etcd_url,
            processes,
            dir,
        };
        plane.wait_ready().await;
        plane
    }

    /// A kube client with cluster-admin rights.
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig).await
    }

    /// The cluster CA's certificate file.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A kubeconfig that authenticates with `token`, written beside the
    /// admin's.
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(
            &path,
            kubeconfig(&self.url, &self.ca(), KubeUser::Token(token)),
        )
        .unwrap();
        path
    }

    async fn wait_ready(&self) {
        wait_apiserver_ready(&self.kubeconfig).await;
        let start = Instant::now();
        // The default ServiceAccount of `default` appears when the
        // controller manager runs; Pods need it.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(self.client().await, "default");
        loop {
            if sa.get_opt("default").await.ok().flatten().is_some() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "kube-controller-manager created no default ServiceAccount in 120 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Applies every CRD in the YAML files under `paths` and waits until
    /// each is Established.
    pub async fn install_crds(&self, paths: &[PathBuf]) {
        let api: Api<CustomResourceDefinition> = Api::all(self.client().await);
        let mut names = Vec::new();
        for file in paths.iter().flat_map(|p| yaml_files(p)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let value: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
                if value["kind"] != "CustomResourceDefinition" {
                    continue;
                }
                let name = value["metadata"]["name"].as_str().unwrap().to_string();
                api.patch(
                    &name,
                    &PatchParams::apply("e2e-test").force(),
                    &Patch::Apply(value),
                )
                .await
                .unwrap_or_else(|e| panic!("install CRD {name} from {}: {e}", file.display()));
                names.push(name);
            }
        }
        let start = Instant::now();
        for name in names {
            loop {
                let crd = api.get(&name).await.unwrap();
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "CRD {name} not Established in 60 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Kills one component (`etcd`, `kube-apiserver`,
    /// `kube-controller-manager`); [`ControlPlane::start_again`] brings it
    /// back with the same flags, ports and data.
    pub fn stop(&mut self, component: &str) {
        let p = self.process(component);
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    /// Starts a stopped component again; for kube-apiserver, waits until
    /// it is ready.
    pub async fn start_again(&mut self, component: &str) {
        self.start_again_with(component, &[]).await;
    }

    /// [`ControlPlane::start_again`] with `extra` flags added (kept for
    /// later restarts).
    pub async fn start_again_with(&mut self, component: &str, extra: &[&str]) {
        let p = self.process(component);
        let mut args = p.args.clone();
        args.extend(extra.iter().map(|a| a.to_string()));
        let (name, command, log) = (p.name, p.command.clone(), p.log.clone());
        *p = Process::spawn(name, command, args, log);
        if component == "kube-apiserver" {
            self.wait_ready().await;
        }
    }

    fn process(&mut self, component: &str) -> &mut Process {
        self.processes
            .iter_mut()
            .find(|p| p.name == component)
            .unwrap_or_else(|| panic!("no component {component}"))
    }

    /// Compacts etcd's history up to its current revision (through etcd's
    /// HTTP/JSON gateway): a watch resumed from an older resourceVersion
    /// then ends in `410 Gone`. Returns the revision.
    ///
    /// Two writes to a key outside the API server's prefix come first, so
    /// the compacted revision is newer than any a client can hold when
    /// kube-apiserver is stopped meanwhile: every watch it resumes is then
    /// too old, not only those of busy resource types. (Two, because a
    /// watch from revision R-1 asks for R, which compaction at R keeps.)
    pub async fn compact_etcd(&self) -> i64 {
        for value in ["1", "2"] {
            self.etcd_post(
                "kv/put",
                serde_json::json!({
                    "key": b64("kengine-gateway-test/compaction-marker"),
                    "value": b64(value),
                }),
            )
            .await;
        }
        // Any range read answers with the current revision in its header.
        let range = self
            .etcd_post(
                "kv/range",
                serde_json::json!({"key": b64("/"), "count_only": true}),
            )
            .await;
        let revision: i64 = range["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no revision in {range}"));
        self.etcd_post(
            "kv/compaction",
            serde_json::json!({"revision": revision.to_string(), "physical": true}),
        )
        .await;
        revision
    }

    /// POSTs `body` to etcd's JSON gateway at `/v3/{path}`; its answer.
    async fn etcd_post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let text = reqwest::Client::new()
            .post(format!("{}/v3/{path}", self.etcd_url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("etcd {path}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("etcd {path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("etcd {path}: {e}: {text}"))
    }

    /// The address kube-apiserver listens on.
    pub fn addr(&self) -> SocketAddr {
        self.url.trim_start_matches("https://").parse().unwrap()
    }

    /// The log of one component, for assertions and debugging.
    pub fn log(&self, component: &str) -> String {
        self.processes
            .iter()
            .find(|p| p.name == component)
            .map(|p| std::fs::read_to_string(&p.log).unwrap_or_default())
            .unwrap_or_default()
    }
}

/// Waits until kube-apiserver answers `/readyz` with `ok` (its post-start
/// hooks, which create what the controllers read at startup, have run).
async fn wait_apiserver_ready(kubeconfig: &Path) {
    let client = client_for(kubeconfig).await;
    let start = Instant::now();
    loop {
        let req = hyper::Request::get("/readyz").body(Vec::new()).unwrap();
        match client.request_text(req).await {
            Ok(body) if body.trim() == "ok" => return,
            result => {
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "kube-apiserver not ready after 120 s: {result:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    // Test builds enable two rustls providers (a dev-dependency brings
    // aws-lc-rs), so the process-wide default must be chosen explicitly.
    kengine_gateway::kengine::admin::install_crypto_provider();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
    kube::Client::try_from(config).expect("kube client")
}

fn yaml_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.unwrap().path())
        .flat_map(|p| {
            if p.is_dir() {
                yaml_files(&p)
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                vec![p]
            } else {
                vec![]
            }
        })
        .collect();
    files.sort();
    files
}

/// etcd's JSON gateway takes keys and values in base64.
fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
