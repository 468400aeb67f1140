//! The official Gateway API conformance suite (v1.6.1 and v1.7.0, built
//! from the Go modules pinned in `e2e/conformance-suite` and
//! `e2e/conformance-suite-v1.7` by `scripts/ensure-conformance.sh`) against the controller as users install
//! it: the real control plane, `helm install` of the chart with its default
//! values, the controller as the chart's pods and every conformance Gateway
//! served by its own managed fleet on the node agent. The suite runs on the
//! node and reaches each Gateway at the address in its status (the fleet
//! Service's cluster IP, through kube-proxy). Its backends are the real
//! `echo-basic` and CoreDNS programs (the node agent runs them for the
//! suite's images).
//!
//! Supported features are read by the suite from our GatewayClass's
//! `status.supportedFeatures`. The test fails when the suite reports a
//! failed test. Environment:
//!
//! - `KENGINE_GATEWAY_CONFORMANCE_PROFILES` (default `GATEWAY-HTTP,GATEWAY-GRPC`);
//! - `KENGINE_GATEWAY_CONFORMANCE_RUN_TEST`: one test (the suite then
//!   ignores the supported features);
//! - `KENGINE_GATEWAY_CONFORMANCE_REPORT`: where the ConformanceReport goes
//!   (default: a temporary file, printed); needs a chosen version;
//! - `KENGINE_GATEWAY_CONFORMANCE_PUBLISH=1`: each report goes to
//!   `conformance/reports/<version>/kengine-gateway/`, and CONFORMANCE.md's
//!   section of that version is written from it;
//! - `KENGINE_GATEWAY_CONFORMANCE_BIN`: the suite's binaries (default
//!   `.conformance-bin`);
//! - `KENGINE_GATEWAY_CONFORMANCE_LOG`: where the suite's `go test -v`
//!   output goes (default: a temporary file);
//! - `KENGINE_GATEWAY_CONFORMANCE_VERSION`: `v1.6.1` (default) or `v1.7.0`,
//!   which suite runs. `cargo test` runs both, one test each.

use kengine_gateway_test_support as support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use support::cluster::external_cluster;
use support::control_plane::ControlPlane;
use support::node::Node;

/// A static Gateway address a fleet's Service can take.
const USABLE_ADDRESS: &str = "10.10.0.200";
/// The suites this test can run.
const VERSIONS: &[&str] = &["v1.6.1", "v1.7.0"];

/// One suite version: its test binary and the CRDs it must run against
/// (exactly its own bundle's).
struct Suite {
    version: &'static str,
    binary: PathBuf,
    crds: PathBuf,
    /// Tests of features we claim that the suite must skip, with why.
    skip: &'static [(&'static str, &'static str)],
}

/// v1.7.0's provisional test of a request timeout across retries: it claims
/// HTTPRouteRetryCodes and HTTPRouteRequestTimeout, both of which pass their
/// own tests.
const SKIPPED_V1_7: &[(&str, &str)] = &[(
    "HTTPRouteRetryWithRequestTimeout",
    "provisional; stock Kengine cannot bound a request across retries: `timeouts.request` becomes \
     the proxy's `response_header_timeout`, which bounds each attempt, and no stock handler bounds \
     the whole exchange",
)];

impl Suite {
    fn new(version: &'static str) -> Suite {
        let dir = suite_dir();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (binary, crds) = match version {
            "v1.6.1" => (
                dir.join("conformance.test"),
                repo.join("e2e/gateway-api/v1.6.1/config/crd/experimental"),
            ),
            _ => (
                dir.join(version).join("conformance.test"),
                dir.join(version).join("crd"),
            ),
        };
        assert!(
            binary.is_file(),
            "{} is missing: run scripts/ensure-conformance.sh",
            binary.display()
        );
        Suite {
            version,
            binary,
            crds,
            skip: if version == "v1.6.1" {
                &[]
            } else {
                SKIPPED_V1_7
            },
        }
    }
}

/// The suite version chosen by `KENGINE_GATEWAY_CONFORMANCE_VERSION`, if
/// any; `None` runs both.
fn chosen_version() -> Option<&'static str> {
    let wanted = std::env::var("KENGINE_GATEWAY_CONFORMANCE_VERSION").ok()?;
    Some(
        VERSIONS
            .iter()
            .copied()
            .find(|v| *v == wanted)
            .unwrap_or_else(|| {
                panic!("KENGINE_GATEWAY_CONFORMANCE_VERSION={wanted}: one of {VERSIONS:?}")
            }),
    )
}

fn suite_dir() -> PathBuf {
    let dir = std::env::var_os("KENGINE_GATEWAY_CONFORMANCE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".conformance-bin"));
    assert!(
        dir.join("conformance.test").is_file(),
        "{} has no conformance.test: run scripts/ensure-conformance.sh",
        dir.display()
    );
    dir
}

#[test]
fn official_gateway_api_conformance_v1_6_1() {
    run_version("v1.6.1");
}

#[test]
fn official_gateway_api_conformance_v1_7_0() {
    run_version("v1.7.0");
}

/// The two suites run one after the other: each starts its own control
/// plane and node, and two at once would share the machine's two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_version(version: &'static str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if external_cluster() {
        eprintln!("official conformance: skipped against a real cluster (runs its own node)");
        return;
    }
    if chosen_version().is_some_and(|v| v != version) {
        eprintln!("official conformance {version}: not the chosen version");
        return;
    }
    support::netns::run(4, run(Suite::new(version)));
}

async fn run(suite: Suite) {
    kengine_gateway::kengine::admin::install_crypto_provider();
    let plane = ControlPlane::start_for_pods().await;
    plane.install_crds(std::slice::from_ref(&suite.crds)).await;
    let node = Node::start(&plane).await;
    let work = tempfile::tempdir().unwrap();

    let started = Instant::now();
    support::helm::install_chart(&plane.kubeconfig, work.path());
    eprintln!("helm install: {:.0} s", started.elapsed().as_secs_f64());
    // The suite reads the supported features once, at its start: a ready
    // Deployment is not yet a controller that has written them.
    let features = supported_features(&plane).await;
    eprintln!(
        "GatewayClass kengine: {} supported features after {:.0} s",
        features,
        started.elapsed().as_secs_f64()
    );

    let profiles = std::env::var("KENGINE_GATEWAY_CONFORMANCE_PROFILES")
        .unwrap_or_else(|_| "GATEWAY-HTTP,GATEWAY-GRPC".into());
    let publish = std::env::var("KENGINE_GATEWAY_CONFORMANCE_PUBLISH").is_ok_and(|v| v == "1");
    let report = match std::env::var_os("KENGINE_GATEWAY_CONFORMANCE_REPORT") {
        Some(path) => {
            assert!(
                chosen_version().is_some(),
                "KENGINE_GATEWAY_CONFORMANCE_REPORT needs KENGINE_GATEWAY_CONFORMANCE_VERSION"
            );
            PathBuf::from(path)
        }
        None if publish => {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(report_dir(suite.version));
            std::fs::create_dir_all(&dir).unwrap();
            dir.join(format!(
                "experimental-v{}-default-report.yaml",
                env!("CARGO_PKG_VERSION")
            ))
        }
        None => work.path().join("report.yaml"),
    };
    let log = std::env::var_os("KENGINE_GATEWAY_CONFORMANCE_LOG")
        .map(PathBuf::from)
        .unwrap_or_else(|| work.path().join("suite.log"));
    let mut suite_cmd = Command::new(&suite.binary);
    suite_cmd
        .args([
            "-test.run",
            "^TestConformance$",
            "-test.v",
            "-test.timeout",
            "0",
            "--gateway-class=kengine",
            "--organization=khulnasoft",
            "--project=kengine-gateway",
            "--url=https://github.com/khulnasoft/kengine-gateway",
            &format!("--version=v{}", env!("CARGO_PKG_VERSION")),
            "--contact=https://github.com/khulnasoft/kengine-gateway/issues",
            "--mode=default",
            // GatewayStaticAddresses: a managed fleet's Service takes any
            // address the API server allows as an external IP, and it
            // refuses loopback ones. (Nothing is sent to either; kube-proxy
            // would answer the first only inside the test's namespace.)
            &format!("--usable-address={USABLE_ADDRESS}"),
            "--unusable-address=127.0.0.2",
        ])
        .arg(format!("--conformance-profiles={profiles}"))
        .arg(format!("--report-output={}", report.display()))
        .current_dir(work.path())
        .env("KUBECONFIG", &plane.kubeconfig)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(work.path().join("suite.err")).unwrap());
    if !suite.skip.is_empty() {
        let names: Vec<&str> = suite.skip.iter().map(|(name, _)| *name).collect();
        suite_cmd.arg(format!("--skip-tests={}", names.join(",")));
    }
    if let Ok(test) = std::env::var("KENGINE_GATEWAY_CONFORMANCE_RUN_TEST") {
        suite_cmd.arg(format!("--run-test={test}"));
    }
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || suite_cmd.status())
        .await
        .unwrap()
        .expect("running conformance.test");
    eprintln!(
        "conformance suite {} ({profiles}): {:.0} s, {status}",
        suite.version,
        started.elapsed().as_secs_f64()
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let errors = std::fs::read_to_string(work.path().join("suite.err")).unwrap_or_default();
    // The suite's verdict per test, as `go test -v` prints it.
    let verdicts: Vec<&str> = text
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("--- PASS") || l.starts_with("--- FAIL"))
        .collect();
    for v in &verdicts {
        eprintln!("{v}");
    }
    let report_text = std::fs::read_to_string(&report).unwrap_or_default();
    eprintln!("---- report {}\n{report_text}", report.display());
    if !status.success() {
        let failed: Vec<&str> = verdicts
            .iter()
            .filter_map(|v| v.strip_prefix("--- FAIL: "))
            .filter_map(|v| v.split_whitespace().next())
            .filter(|name| *name != "TestConformance")
            .collect();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let namespaces = terminating_namespaces(&plane).await;
        panic!(
            "the conformance suite failed ({status}): {failed:?}\n{}\n---- the log's last lines\n{}\n---- stderr\n{}\n---- terminating namespaces\n{namespaces}\n---- node\n{}",
            failed
                .iter()
                .map(|name| format!("---- {name}\n{}", test_log(&text, name)))
                .collect::<Vec<_>>()
                .join("\n"),
            tail.join("\n"),
            errors.lines().rev().take(40).collect::<Vec<_>>().join("\n"),
            node.diagnostics()
        );
    }
    assert!(
        !report_text.is_empty(),
        "the suite passed but wrote no report"
    );
    if publish {
        let report: serde_json::Value =
            serde_yaml_ng::from_str(&report_text).expect("the report is YAML");
        let passed: Vec<&str> = verdicts
            .iter()
            .filter_map(|v| v.strip_prefix("--- PASS: TestConformance/"))
            .filter_map(|v| v.split_whitespace().next())
            .filter(|name| !name.contains('/'))
            .collect();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("CONFORMANCE.md");
        let before = std::fs::read_to_string(&path).unwrap_or_default();
        let section = markdown(&suite, &report, &passed);
        std::fs::write(&path, conformance_md(&before, suite.version, &section))
            .expect("writing CONFORMANCE.md");
        eprintln!("wrote {} and {}", report_dir(suite.version), path.display());
    }
    node.stop().await;
    drop(plane);
}

/// Namespaces still terminating, with their conditions and pods: the suite
/// waits for its namespaces to be gone.
/// Waits until the controller has written the `kengine` GatewayClass's
/// `status.supportedFeatures`, and returns how many it lists.
async fn supported_features(plane: &ControlPlane) -> usize {
    use gateway_api::apis::experimental::gatewayclasses::GatewayClass;
    let api = kube::Api::<GatewayClass>::all(plane.client().await);
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let class = api.get_opt("kengine").await.ok().flatten();
        let count = class
            .as_ref()
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.supported_features.as_ref())
            .map_or(0, Vec::len);
        if count > 0 {
            return count;
        }
        assert!(
            Instant::now() < deadline,
            "the controller did not write the GatewayClass's supportedFeatures in 120 s: {class:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

async fn terminating_namespaces(plane: &ControlPlane) -> String {
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{Api, ListParams};
    let client = plane.client().await;
    let mut out = String::new();
    let all: Api<Namespace> = Api::all(client.clone());
    for ns in all.list(&ListParams::default()).await.unwrap().items {
        if ns.metadata.deletion_timestamp.is_none() {
            continue;
        }
        let name = ns.metadata.name.clone().unwrap_or_default();
        let conditions = serde_json::to_string(&ns.status.and_then(|s| s.conditions)).unwrap();
        out += &format!("{name}: {conditions}\n");
        let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
        for pod in pods.list(&ListParams::default()).await.unwrap().items {
            out += &format!(
                "  pod {} deleting since {:?}, phase {:?}\n",
                pod.metadata.name.unwrap_or_default(),
                pod.metadata.deletion_timestamp.map(|t| t.0.to_string()),
                pod.status.and_then(|s| s.phase)
            );
        }
    }
    out
}

/// The lines `go test -v` printed for test `name` (and its subtests): the
/// output of parallel tests is interleaved, each stretch headed by a
/// `=== RUN`, `=== NAME`, `=== CONT` or `=== PAUSE` line naming its test.
fn test_log(text: &str, name: &str) -> String {
    let mut current = "";
    let mut out = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = ["=== RUN", "=== NAME", "=== CONT", "=== PAUSE"]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p))
        {
            current = rest.trim();
        }
        if current == name || current.starts_with(&format!("{name}/")) {
            out.push(line);
        }
    }
    out.join("\n")
}

/// Why a feature of the suite is not in our GatewayClass's
/// `supportedFeatures`.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "BackendTLSPolicySANValidation",
        "stock Kengine verifies a backend's certificate against one name, the SNI it sends (`reverse_proxy`'s TLS `server_name`): `subjectAltNames` other than `validation.hostname` (URI SANs among them) cannot be checked, so such a policy is `Accepted=False`, reason `Invalid`",
    ),
    (
        "HTTPRouteRequestMirror",
        "stock Kengine has no mirroring handler: `reverse_proxy` sends a request to one upstream and no other stock handler duplicates a request; such a route is `Accepted=False`, reason `UnsupportedValue`",
    ),
    (
        "HTTPRouteRequestMultipleMirrors",
        "as HTTPRouteRequestMirror",
    ),
    (
        "HTTPRouteRequestPercentageMirror",
        "as HTTPRouteRequestMirror",
    ),
    (
        "HTTPRouteRetryBackendTimeout",
        "v1.6.1 has no conformance test for it, so it is not claimed (v1.7.0 dropped the name)",
    ),
    (
        "HTTPRouteRetryConnectionError",
        "v1.6.1 has no conformance test for it; claimed and tested with v1.7.0",
    ),
    (
        "ClusterTrustBundle",
        "not implemented yet (a `caCertificateRefs` kind of BackendTLSPolicy); v1.7.0 has no conformance test for it",
    ),
    (
        "GatewayAddressRoutability",
        "v1.7.0 has no conformance test for it, so it is not claimed",
    ),
    (
        "GatewayAddressRoutabilityCluster",
        "v1.7.0 has no conformance test for it, so it is not claimed",
    ),
    (
        "GatewayListenerFilters",
        "not implemented yet; v1.7.0 has no conformance test for it",
    ),
    ("ListenerSet", "not implemented yet"),
];

/// Where a version's reports are published, relative to the repository.
fn report_dir(version: &str) -> String {
    format!("conformance/reports/{version}/kengine-gateway")
}

/// CONFORMANCE.md: the common introduction, then one section per suite
/// version (newest first), each between markers so that a run of one
/// version replaces its own section and keeps the others.
fn conformance_md(before: &str, version: &str, section: &str) -> String {
    let mut out = String::from(
        "# Conformance\n\n\
         Generated by `scripts/conformance.sh` from the official ConformanceReports it wrote. \
         The official Gateway API conformance suite (`sigs.k8s.io/gateway-api/conformance`, \
         built from the modules pinned in `e2e/conformance-suite/` (v1.6.1) and \
         `e2e/conformance-suite-v1.7/` (v1.7.0)) ran against the controller as `helm install` \
         sets it up with the chart's default values, on a local real control plane (etcd, \
         kube-apiserver, kube-controller-manager and kube-proxy built from pinned modules; \
         `tests/official_conformance.rs`). Every Gateway was served by a managed fleet of its \
         own; the suite's backends were the real `echo-basic` and CoreDNS programs. The suite \
         read the supported features from our GatewayClass's `status.supportedFeatures`.\n\n",
    );
    for v in VERSIONS.iter().rev() {
        let (begin, end) = (
            format!("<!-- {v} begin -->\n"),
            format!("<!-- {v} end -->\n"),
        );
        let body = if *v == version {
            Some(section.to_string())
        } else {
            before
                .split_once(&begin)
                .and_then(|(_, rest)| rest.split_once(&end))
                .map(|(body, _)| body.to_string())
        };
        if let Some(body) = body {
            out += &begin;
            out += &body;
            out += &end;
            out.push('\n');
        }
    }
    out += "## The standalone replay\n\n`e2e/conformance` replays the v1.6.1 suite's \
            GATEWAY-HTTP tests through `render`/`standalone`'s path (the translator in Local mode, \
            every Gateway on one local Kengine), which the official suite, run against the \
            controller, does not exercise: `cargo test --test conformance` (its expected passes \
            are in `e2e/conformance/expected-pass.txt`).\n";
    out
}

/// One version's section of CONFORMANCE.md, from its report and the tests
/// that passed.
fn markdown(suite: &Suite, report: &serde_json::Value, passed: &[&str]) -> String {
    use std::fmt::Write as _;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|i| i.as_str().unwrap_or_default().to_string())
            .collect()
    };
    let dir = report_dir(suite.version);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Gateway API {} ({} channel)\n",
        text(&report["gatewayAPIVersion"]),
        text(&report["gatewayAPIChannel"])
    );
    let _ = writeln!(
        md,
        "Report: [`{dir}/`]({dir}/), run on {}.\n",
        text(&report["date"])
    );
    for profile in report["profiles"].as_array().into_iter().flatten() {
        let _ = writeln!(md, "### {}\n", text(&profile["name"]));
        let _ = writeln!(md, "{}\n", text(&profile["summary"]));
        let _ = writeln!(md, "| level | result | passed | failed | skipped |");
        let _ = writeln!(md, "| --- | --- | ---: | ---: | ---: |");
        for level in ["core", "extended"] {
            let l = &profile[level];
            if l.is_null() {
                continue;
            }
            let n = |k: &str| l["statistics"][k].as_u64().unwrap_or(0);
            let _ = writeln!(
                md,
                "| {level} | {} | {} | {} | {} |",
                text(&l["result"]),
                n("Passed"),
                n("Failed"),
                n("Skipped")
            );
        }
        md.push('\n');
        for level in ["core", "extended"] {
            for (key, title) in [("failedTests", "failed"), ("skippedTests", "skipped")] {
                let tests = list(&profile[level][key]);
                if !tests.is_empty() {
                    let _ = writeln!(md, "{level} tests {title}: {}\n", tests.join(", "));
                }
            }
        }
        let supported = list(&profile["extended"]["supportedFeatures"]);
        let _ = writeln!(
            md,
            "#### Supported extended features ({})\n",
            supported.len()
        );
        for f in &supported {
            let _ = writeln!(md, "- {f}");
        }
        let unsupported = list(&profile["extended"]["unsupportedFeatures"]);
        let _ = writeln!(
            md,
            "\n#### Unsupported extended features ({})\n",
            unsupported.len()
        );
        for f in &unsupported {
            let why = UNSUPPORTED
                .iter()
                .find(|(name, _)| name == f)
                .map_or("not implemented yet", |(_, why)| why);
            let _ = writeln!(md, "- **{f}**: {why}");
        }
        md.push('\n');
    }
    if !suite.skip.is_empty() {
        let _ = writeln!(md, "Tests skipped on purpose (`--skip-tests`):\n");
        for (name, why) in suite.skip {
            let _ = writeln!(md, "- **{name}**: {why}");
        }
        md.push('\n');
    }
    let provisional = list(&report["succeededProvisionalTests"]);
    if !provisional.is_empty() {
        let _ = writeln!(
            md,
            "Provisional tests that passed: {}.\n",
            provisional.join(", ")
        );
    }
    let _ = writeln!(md, "### Tests that passed ({})\n", passed.len());
    for t in passed {
        let _ = writeln!(md, "- {t}");
    }
    md
}
