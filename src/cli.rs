//! Command-line interface: one binary, one subcommand per job.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::kengine::Flavor;

/// The controller name a GatewayClass must carry to be served by us.
pub use kengine_gateway_model::DEFAULT_CONTROLLER_NAME;

#[derive(Debug, Parser)]
#[command(
    name = "kengine-gateway",
    version,
    about = "Kubernetes Gateway API for Kengine"
)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain, env = "KENGINE_GATEWAY_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax, e.g. `info` or `kengine_gateway=debug`.
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = "KENGINE_GATEWAY_LOG"
    )]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Translate YAML files into one Kengine config (or status) and print it.
    Render(RenderArgs),
    /// Serve YAML files through a local Kengine, reloading when they change.
    Standalone(StandaloneArgs),
    /// Run a small HTTP echo backend (for the quickstart and tests).
    Echo(EchoArgs),
    /// Run the Kubernetes controller: watch Gateway API objects, push configs
    /// to Kengine pods, write status.
    Controller(Box<ControllerArgs>),
    /// Print the KengineInstance CustomResourceDefinition (YAML).
    Crd,
    /// Serve Kengine's unix-socket admin API on a mutual-TLS port (the
    /// sidecar in each managed Kengine pod).
    AdminProxy(AdminProxyArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    /// Only GatewayClasses with this `spec.controllerName` are served.
    #[arg(long, default_value = DEFAULT_CONTROLLER_NAME, env = "KENGINE_GATEWAY_CONTROLLER_NAME")]
    pub controller_name: String,
    /// Watch namespaced objects in this namespace only (default: all namespaces).
    #[arg(long, value_name = "NS", env = "KENGINE_GATEWAY_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Which build of the data plane the fleets run.
    #[arg(long, value_enum, default_value_t = Flavor::Kengine)]
    pub flavor: Flavor,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:9090",
        env = "KENGINE_GATEWAY_METRICS_ADDR"
    )]
    pub metrics_addr: SocketAddr,
    /// Address of the `/healthz` and `/readyz` endpoints.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:8081",
        env = "KENGINE_GATEWAY_HEALTH_ADDR"
    )]
    pub health_addr: SocketAddr,
    /// Elect a leader through a Lease; only the leader pushes and writes status.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "KENGINE_GATEWAY_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        default_value = "kengine-gateway-leader",
        env = "KENGINE_GATEWAY_LEASE_NAME"
    )]
    pub lease_name: String,
    /// Namespace of the Lease (default: the pod's own namespace, else `default`).
    #[arg(long, value_name = "NS", env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: the pod name or host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Pods of one fleet pushed to at once (fleets are pushed concurrently).
    #[arg(long, default_value_t = 16)]
    pub push_concurrency: usize,
    /// Quiet period that coalesces a burst of changes into one reconcile.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub debounce_ms: u64,
    /// A burst that never quiets is reconciled at the latest this long
    /// after its first change.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub max_delay_ms: u64,
    /// Full resync period: failed pushes are retried at least this often.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub resync_seconds: u64,
    /// Only ConfigMaps with this label selector are watched (CA bundles of
    /// client certificate validation); empty: every ConfigMap.
    #[arg(long, default_value = "")]
    pub configmap_selector: String,
    /// Run managed fleets (KengineInstance modes Deployment and DaemonSet)
    /// and create per-Gateway instances; `false` serves External instances only.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "KENGINE_GATEWAY_MANAGE_FLEETS")]
    pub manage_fleets: bool,
    /// Kengine image of managed fleets that name none.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_KENGINE_IMAGE, env = "KENGINE_GATEWAY_KENGINE_IMAGE")]
    pub kengine_image: String,
    /// Image of the admin-proxy sidecar in managed pods (the operator's own image).
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_PROXY_IMAGE, env = "KENGINE_GATEWAY_ADMIN_PROXY_IMAGE")]
    pub admin_proxy_image: String,
    /// `imagePullPolicy` of managed pods' containers (default: the cluster's).
    #[arg(long, value_name = "POLICY", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub fleet_image_pull_policy: Option<String>,
    /// Image pull Secrets of managed pods, `name,name` (they must exist in
    /// each instance's namespace).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub fleet_image_pull_secrets: Vec<String>,
    /// The operator's namespace: with `--operator-pod-labels`, the only
    /// client the managed pods' NetworkPolicy lets reach their admin port.
    #[arg(
        long,
        value_name = "NS",
        default_value = "kengine-gateway-system",
        env = "KENGINE_GATEWAY_OPERATOR_NAMESPACE"
    )]
    pub operator_namespace: String,
    /// Labels of the operator's pods, as `key=value,key=value`.
    #[arg(
        long,
        value_name = "LABELS",
        default_value = "app.kubernetes.io/name=kengine-gateway,app.kubernetes.io/component=controller",
        value_parser = parse_labels
    )]
    pub operator_pod_labels: BTreeMap<String, String>,
    /// Lifetime of the admin server and client certificates of managed
    /// fleets; they are renewed when a third of it remains.
    #[arg(long, value_name = "SECONDS", default_value_t = 90 * 24 * 3600, value_parser = clap::value_parser!(u64).range(60..))]
    pub admin_cert_lifetime: u64,
    /// Lifetime of each managed fleet's admin CA.
    #[arg(long, value_name = "SECONDS", default_value_t = 10 * 365 * 24 * 3600, value_parser = clap::value_parser!(u64).range(3600..))]
    pub admin_ca_lifetime: u64,
}

/// Kengine image of managed fleets, built from `Containerfile.kengine`.
pub const DEFAULT_KENGINE_IMAGE: &str = "khulnasoft/kengine:v2.8.4";
/// The operator image, which also runs the admin-proxy sidecar.
pub const DEFAULT_PROXY_IMAGE: &str =
    concat!("khulnasoft/kengine-gateway:", env!("CARGO_PKG_VERSION"));

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{pair:?} is not key=value")),
        })
        .collect::<Result<_, _>>()
        .and_then(|m: BTreeMap<_, _>| {
            if m.is_empty() {
                Err("at least one label is required".into())
            } else {
                Ok(m)
            }
        })
}

/// Options shared by every command that translates Gateway API objects.
#[derive(Debug, Clone, Args)]
pub struct TranslateArgs {
    /// A YAML file or a directory of them (read recursively). Repeatable.
    #[arg(short = 'f', long = "file", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// Which build of the data plane the config targets: module IDs and env differ slightly.
    #[arg(long, value_enum, default_value_t = Flavor::Kengine)]
    pub flavor: Flavor,
    /// Only GatewayClasses with this `spec.controllerName` are served.
    #[arg(long, default_value = DEFAULT_CONTROLLER_NAME, env = "KENGINE_GATEWAY_CONTROLLER_NAME")]
    pub controller_name: String,
    /// Where the local Kengine reads the files the config names (a
    /// Gateway's backend client certificate and key): `standalone` writes
    /// them there (mode 0600, in a directory of mode 0700) before each load.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_FILES_DIR, value_parser = absolute_dir)]
    pub files_dir: PathBuf,
}

/// `--files-dir`'s default.
pub const DEFAULT_FILES_DIR: &str = "/tmp/kengine-gateway-files";

/// Kengine resolves a relative path against its own working directory.
fn absolute_dir(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if !path.is_absolute() {
        return Err(format!("{s:?} is not an absolute path"));
    }
    Ok(path)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RenderOutput {
    /// One Kengine JSON config.
    Config,
    /// A YAML stream of every Gateway API object with its computed status.
    Status,
    /// A YAML stream of the Kubernetes objects the operator would apply for
    /// every managed fleet (Secrets with their keys but no key material).
    Objects,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub translate: TranslateArgs,
    /// What to print.
    #[arg(short, long, value_enum, default_value_t = RenderOutput::Config)]
    pub output: RenderOutput,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["kengine", "admin"])))]
pub struct StandaloneArgs {
    #[command(flatten)]
    pub translate: TranslateArgs,
    /// Start this kengine (or caddy) binary, with its admin API on a private unix socket.
    #[arg(long, value_name = "BIN")]
    pub kengine: Option<PathBuf>,
    /// Use an already running admin API: `HOST:PORT`, `http://HOST:PORT` or `unix//PATH`.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Also write every object's status, as YAML, to this file after each push.
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    /// Quiet period: push once no file has changed for this long.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub debounce_ms: u64,
    /// Push at the latest this long after the first change of a burst that never quiets.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub max_delay_ms: u64,
}

#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Pod name reported in responses.
    #[arg(long, default_value = "echo", env = "POD_NAME")]
    pub name: String,
    /// Namespace reported in responses.
    #[arg(long, default_value = "default", env = "NAMESPACE")]
    pub namespace: String,
    /// Answer 400 to anything but cleartext HTTP/2 (h2c), like echo-basic's h2c port.
    #[arg(long)]
    pub h2c_only: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AdminProxyArgs {
    /// Address of the mutual-TLS admin port.
    #[arg(long, value_name = "ADDR", env = "KENGINE_GATEWAY_ADMIN_LISTEN")]
    pub listen: SocketAddr,
    /// Kengine's admin unix socket, where requests are forwarded.
    #[arg(long, value_name = "PATH", env = "KENGINE_GATEWAY_ADMIN_SOCKET")]
    pub socket: PathBuf,
    /// Server certificate chain (PEM); re-read when it changes.
    #[arg(long, value_name = "FILE", env = "KENGINE_GATEWAY_ADMIN_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// The server certificate's private key (PEM); re-read when it changes.
    #[arg(long, value_name = "FILE", env = "KENGINE_GATEWAY_ADMIN_TLS_KEY")]
    pub tls_key: PathBuf,
    /// CA certificates (PEM) client certificates must chain to; re-read when it changes.
    #[arg(long, value_name = "FILE", env = "KENGINE_GATEWAY_ADMIN_CLIENT_CA")]
    pub client_ca: PathBuf,
    /// The identity a client certificate must name, as a DNS SAN or its subject CN.
    #[arg(
        long,
        value_name = "NAME",
        env = "KENGINE_GATEWAY_ADMIN_CLIENT_NAME",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub client_name: String,
    /// Address of the plain-HTTP `/healthz` and `/readyz` (ready after the first `/load`).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:2020",
        env = "KENGINE_GATEWAY_HEALTH_ADDR"
    )]
    pub health_addr: SocketAddr,
    /// How often the certificate, key and CA files are checked for changes.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub reload_interval: u64,
    /// Where `PUT /kengine-gateway/files` writes the files a config names
    /// (a directory Kengine reads); without it that request is refused.
    #[arg(long, value_name = "DIR", env = "KENGINE_GATEWAY_FILES_DIR")]
    pub files_dir: Option<PathBuf>,
}
