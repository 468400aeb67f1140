//! The official Gateway API conformance suite (v1.6.1, built from the Go
//! modules pinned in `e2e/conformance-suite` by
//! `scripts/ensure-conformance.sh`) against the controller as users install
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
//! - `KENGINE_GATEWAY_CONFORMANCE_PROFILES` (default `GATEWAY-HTTP`);
//! - `KENGINE_GATEWAY_CONFORMANCE_RUN_TEST`: one test (the suite then
//!   ignores the supported features);
//! - `KENGINE_GATEWAY_CONFORMANCE_REPORT`: where the ConformanceReport goes
//!   (default: a temporary file, printed);
//! - `KENGINE_GATEWAY_CONFORMANCE_BIN`: the suite's binaries (default
//!   `.conformance-bin`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use support::cluster::external_cluster;
use support::control_plane::ControlPlane;
use support::node::Node;

/// A static Gateway address a fleet's Service can take.
const USABLE_ADDRESS: &str = "10.10.0.200";
/// The suite's CRDs must be exactly its own bundle version.
const CRDS: &str = "e2e/gateway-api/v1.6.1/config/crd/experimental";

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
fn official_gateway_api_conformance() {
    if external_cluster() {
        eprintln!("official conformance: skipped against a real cluster (runs its own node)");
        return;
    }
    support::netns::run(4, run());
}

async fn run() {
    kengine_gateway::kengine::admin::install_crypto_provider();
    let suite = suite_dir();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plane = ControlPlane::start_for_pods().await;
    plane.install_crds(&[repo.join(CRDS)]).await;
    let node = Node::start(&plane).await;
    let work = tempfile::tempdir().unwrap();

    let started = Instant::now();
    support::helm::install_chart(&plane.kubeconfig, work.path());
    eprintln!("helm install: {:.0} s", started.elapsed().as_secs_f64());

    let profiles = std::env::var("KENGINE_GATEWAY_CONFORMANCE_PROFILES")
        .unwrap_or_else(|_| "GATEWAY-HTTP".into());
    let report = std::env::var_os("KENGINE_GATEWAY_CONFORMANCE_REPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| work.path().join("report.yaml"));
    let log = work.path().join("suite.log");
    let mut suite_cmd = Command::new(suite.join("conformance.test"));
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
    if let Ok(test) = std::env::var("KENGINE_GATEWAY_CONFORMANCE_RUN_TEST") {
        suite_cmd.arg(format!("--run-test={test}"));
    }
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || suite_cmd.status())
        .await
        .unwrap()
        .expect("running conformance.test");
    eprintln!(
        "conformance suite ({profiles}): {:.0} s, {status}",
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
        panic!(
            "the conformance suite failed ({status}): {failed:?}\n{}\n---- the log's last lines\n{}\n---- stderr\n{}\n---- node\n{}",
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
    if let Some(path) = std::env::var_os("KENGINE_GATEWAY_CONFORMANCE_MARKDOWN") {
        let report: serde_json::Value =
            serde_yaml_ng::from_str(&report_text).expect("the report is YAML");
        let passed: Vec<&str> = verdicts
            .iter()
            .filter_map(|v| v.strip_prefix("--- PASS: TestConformance/"))
            .filter_map(|v| v.split_whitespace().next())
            .filter(|name| !name.contains('/'))
            .collect();
        std::fs::write(&path, markdown(&report, &passed)).expect("writing CONFORMANCE.md");
        eprintln!("wrote {}", Path::new(&path).display());
    }
    node.stop().await;
    drop(plane);
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
        "BackendTLSPolicy",
        "not implemented yet (Kengine can express it: `reverse_proxy`'s TLS transport with trusted CAs and a server name)",
    ),
    (
        "BackendTLSPolicySANValidation",
        "not implemented yet, with BackendTLSPolicy",
    ),
    (
        "GatewayBackendClientCertificate",
        "not implemented yet (Kengine can express it: a client certificate in `reverse_proxy`'s TLS transport)",
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
        "v1.6.1 has no conformance test for it, so it is not claimed",
    ),
    (
        "HTTPRouteRetryConnectionError",
        "v1.6.1 has no conformance test for it, so it is not claimed",
    ),
    ("ListenerSet", "not implemented yet"),
];

/// CONFORMANCE.md from the suite's report and the tests that passed.
fn markdown(report: &serde_json::Value, passed: &[&str]) -> String {
    use std::fmt::Write as _;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|i| i.as_str().unwrap_or_default().to_string())
            .collect()
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Conformance: Gateway API {} ({} channel)\n",
        text(&report["gatewayAPIVersion"]),
        text(&report["gatewayAPIChannel"])
    );
    let _ = writeln!(
        md,
        "Generated by `scripts/conformance.sh` from the official ConformanceReport it wrote, \
         [`{REPORT_DIR}/`]({REPORT_DIR}/), on {}. The official Gateway API conformance suite \
         (`sigs.k8s.io/gateway-api/conformance`, built from the modules pinned in \
         `e2e/conformance-suite/`) ran against the controller as `helm install` sets it up with \
         the chart's default values, on a local real control plane (etcd, kube-apiserver, \
         kube-controller-manager and kube-proxy built from pinned modules; \
         `tests/official_conformance.rs`). Every Gateway was served by a managed fleet of its \
         own; the suite's backends were the real `echo-basic` and CoreDNS programs. The suite \
         read the supported features from our GatewayClass's `status.supportedFeatures`.\n",
        text(&report["date"])
    );
    for profile in report["profiles"].as_array().into_iter().flatten() {
        let _ = writeln!(md, "## {}\n", text(&profile["name"]));
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
            "### Supported extended features ({})\n",
            supported.len()
        );
        for f in &supported {
            let _ = writeln!(md, "- {f}");
        }
        let unsupported = list(&profile["extended"]["unsupportedFeatures"]);
        let _ = writeln!(
            md,
            "\n### Unsupported extended features ({})\n",
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
    let provisional = list(&report["succeededProvisionalTests"]);
    if !provisional.is_empty() {
        let _ = writeln!(
            md,
            "Provisional tests that passed: {}.\n",
            provisional.join(", ")
        );
    }
    let _ = writeln!(md, "## Tests that passed ({})\n", passed.len());
    for t in passed {
        let _ = writeln!(md, "- {t}");
    }
    let _ = writeln!(
        md,
        "\n## The standalone replay\n\n`e2e/conformance` replays the same suite's \
         GATEWAY-HTTP tests through `render`/`standalone`'s path (the translator in Local mode, \
         every Gateway on one local Kengine), which the official suite, run against the \
         controller, does not exercise: `cargo test --test conformance` (its expected passes are \
         in `e2e/conformance/expected-pass.txt`)."
    );
    md
}

const REPORT_DIR: &str = "conformance/reports/v1.6.1/kengine-gateway";
