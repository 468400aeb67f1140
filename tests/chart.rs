//! Ties the Helm chart and `deploy/` to the code. The chart's own tests (lint,
//! render, schema validation) need helm and live in `scripts/chart-test.sh`;
//! these need only the binary: the chart ships the generated CRD, the install
//! manifest carries it and the crate's version, the controller accepts the
//! arguments the chart gives it, and the examples translate.

use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kengine-gateway");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn chart_ships_the_generated_crd() {
    assert!(
        read("charts/kengine-gateway/crds/kengineinstances.yaml")
            == read("crds/kengineinstances.yaml"),
        "charts/kengine-gateway/crds/kengineinstances.yaml differs from crds/kengineinstances.yaml: copy it"
    );
}

#[test]
fn install_manifest_carries_the_crd_and_the_version() {
    let install = read("deploy/install.yaml");
    let stale = "deploy/install.yaml is stale: run ./scripts/chart-test.sh --update";
    assert!(
        install.contains(&read("crds/kengineinstances.yaml")),
        "{stale}"
    );
    let version = env!("CARGO_PKG_VERSION");
    let app_version = format!("appVersion: \"{version}\"");
    assert!(
        read("charts/kengine-gateway/Chart.yaml")
            .lines()
            .any(|l| l.trim() == app_version),
        "charts/kengine-gateway/Chart.yaml: appVersion must be the crate version, {version}"
    );
    assert!(
        install.contains(&format!("image: \"khulnasoft/kengine-gateway:{version}\"")),
        "{stale}"
    );
}

/// The arguments of the controller container in deploy/install.yaml.
fn install_args() -> Vec<String> {
    let install = read("deploy/install.yaml");
    let mut lines = install
        .lines()
        .skip_while(|l| *l != "          args:")
        .skip(1);
    let mut args = Vec::new();
    for line in lines.by_ref() {
        let Some(quoted) = line.strip_prefix("            - ") else {
            break;
        };
        args.push(quoted.trim_matches('"').to_string());
    }
    args
}

#[test]
fn controller_accepts_the_chart_arguments() {
    let args = install_args();
    assert_eq!(
        args.first().map(String::as_str),
        Some("controller"),
        "no controller arguments found in deploy/install.yaml: {args:?}"
    );
    // Parsing stops at --help, after every argument before it was checked.
    let out = Command::new(BIN)
        .args(&args)
        .arg("--help")
        .env_remove("KENGINE_GATEWAY_LOG")
        .env_remove("KENGINE_GATEWAY_LOG_FORMAT")
        .output()
        .expect("running kengine-gateway");
    assert!(
        out.status.success(),
        "kengine-gateway rejects the chart's arguments {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn examples_translate_and_routes_are_accepted() {
    // The chart creates GatewayClass `kengine`; the examples use it.
    let class =
        std::env::temp_dir().join(format!("kengine-gateway-chart-{}.yaml", std::process::id()));
    std::fs::write(
        &class,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: kengine}\n\
         spec: {controllerName: kengine.khulnasoft.com/gateway-controller}\n",
    )
    .unwrap();
    let examples = repo().join("deploy/examples");
    let out = Command::new(BIN)
        .arg("render")
        .arg("-f")
        .arg(&class)
        .arg("-f")
        .arg(examples.join("gateway.yaml"))
        .arg("-f")
        .arg(examples.join("httproutes.yaml"))
        .args(["--output", "status"])
        .output()
        .expect("running kengine-gateway render");
    let _ = std::fs::remove_file(&class);
    assert!(
        out.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8(out.stdout).unwrap();
    let routes: Vec<&str> = status
        .split("\n---\n")
        .filter(|doc| doc.contains("\nkind: HTTPRoute\n"))
        .collect();
    assert_eq!(routes.len(), 2, "{status}");
    for route in routes {
        assert!(
            route.contains("type: Accepted") && route.contains("status: 'True'"),
            "{route}"
        );
        assert!(
            !route.contains("status: 'False'"),
            "a route is not accepted:\n{route}"
        );
    }
}
