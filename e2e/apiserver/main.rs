//! A Kubernetes API emulator for tests: an in-memory subset of the
//! Kubernetes API (discovery, CRUD, patch, server-side apply, status
//! subresources, watches, garbage collection) over plain HTTP without
//! authentication, enough for kube-rs clients, reflectors and controllers.
//! It is not a Kubernetes API server: see `e2e/apiserver/README.md` for
//! what it does not emulate.

mod discovery;
mod errors;
mod patch;
mod resources;
mod schema;
mod selectors;
mod server;
mod store;
mod util;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use serde_json::Value;

use crate::store::{Store, WriteOptions};

#[derive(Parser, Debug)]
#[command(
    name = "kube-api-emulator",
    about = "Kubernetes API emulator for tests: an in-memory subset of the Kubernetes API over plain HTTP (not a real API server)"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// CustomResourceDefinition YAML files or directories to load at start.
    #[arg(long, num_args = 1..)]
    crds: Vec<PathBuf>,
    /// Write a kubeconfig for the emulator here.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Create this file once the emulator accepts connections.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Number of watch events kept; watches from older resourceVersions get 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    watch_history: usize,
    /// Seconds between BOOKMARK events on idle watches that asked for them.
    #[arg(long, default_value_t = 15)]
    bookmark_interval: u64,
}

fn yaml_files(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                yaml_files(&e, out)?;
            } else if matches!(
                e.extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(e);
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Loads every CustomResourceDefinition document found; other documents are skipped.
fn load_crds(store: &mut Store, paths: &[PathBuf]) -> anyhow::Result<usize> {
    let crd_type = store
        .find_type("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .expect("CRD type");
    let mut files = Vec::new();
    for p in paths {
        yaml_files(p, &mut files)?;
    }
    let mut loaded = 0;
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v =
                Value::deserialize(doc).with_context(|| format!("parsing {}", file.display()))?;
            if v.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
                continue;
            }
            if v.get("apiVersion").and_then(Value::as_str) != Some("apiextensions.k8s.io/v1") {
                bail!(
                    "{}: only apiextensions.k8s.io/v1 CRDs are supported",
                    file.display()
                );
            }
            let name = v
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let opts = WriteOptions::default();
            let result = match store.get(&crd_type, "", &name) {
                Ok(_) => store
                    .update(&crd_type, "", &name, v, false, &opts)
                    .map(|_| ()),
                Err(_) => store.create(&crd_type, "", v, &opts).map(|_| ()),
            };
            result.map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.message))?;
            loaded += 1;
        }
    }
    Ok(loaded)
}

fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kube-api-emulator
  cluster:
    server: {server}
contexts:
- name: kube-api-emulator
  context:
    cluster: kube-api-emulator
    user: kube-api-emulator
    namespace: default
current-context: kube-api-emulator
users:
- name: kube-api-emulator
  user: {{}}
preferences: {{}}
"
    )
}

/// Writes through a temporary file and a rename, so readers never see half a file.
fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp-kube-api-emulator");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KUBE_API_EMULATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let mut store = Store::new(args.watch_history);
    let crds = load_crds(&mut store, &args.crds)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let server = format!("http://{addr}");
    let app = server::App::new(
        store,
        addr.to_string(),
        Duration::from_secs(args.bookmark_interval.max(1)),
    );

    // The kubeconfig and ready file exist before the address is announced.
    if let Some(path) = &args.kubeconfig_out {
        write_atomically(path, &kubeconfig(&server))?;
    }
    if let Some(path) = &args.ready_file {
        write_atomically(path, &format!("{server}\n"))?;
    }
    println!("listening on {server}");
    std::io::stdout().flush()?;
    tracing::info!(%server, crds, "Kubernetes API emulator ready");

    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| server::handle(app.clone(), req));
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection: {e}");
            }
        });
    }
}
