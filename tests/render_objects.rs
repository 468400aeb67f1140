//! `render --output objects`: what the operator would apply, without a cluster.

use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kengine-gateway");

const INPUT: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kengine}
spec: {controllerName: kengine.khulnasoft.com/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: apps}
spec:
  gatewayClassName: kengine
  listeners:
  - {name: http, protocol: HTTP, port: 80}
  - {name: admin, protocol: HTTP, port: 2019}
";

fn render(input: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.yaml");
    std::fs::write(&path, input).unwrap();
    let out = Command::new(BIN)
        .args(["render", "-o", "objects", "-f", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn documents(stream: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(stream)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

#[test]
fn a_gateway_on_80_and_2019_opens_only_80() {
    let (code, stdout, stderr) = render(INPUT);
    assert_eq!(code, 0, "{stderr}");
    let objects = documents(&stdout);
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "KengineInstance",
            "Secret",
            "Secret",
            "Secret",
            "ServiceAccount",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "NetworkPolicy"
        ]
    );
    let of = |kind: &str| objects.iter().find(|o| o["kind"] == kind).unwrap();
    assert_eq!(of("KengineInstance")["metadata"]["name"], "web");
    let service_ports: Vec<&Value> = of("Service")["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["port"])
        .collect();
    assert_eq!(service_ports, [80]);
    let ingress = of("NetworkPolicy")["spec"]["ingress"]
        .as_array()
        .unwrap()
        .clone();
    // Rules without `from` admit every source: only the data-plane ports.
    let open_to_all: Vec<u64> = ingress
        .iter()
        .filter(|rule| rule.get("from").is_none())
        .flat_map(|rule| rule["ports"].as_array().unwrap())
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(open_to_all, [80], "{ingress:?}");
    // The admin port is reachable only from the operator's pods.
    for rule in ingress.iter().filter(|rule| rule.get("from").is_some()) {
        assert_eq!(
            rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "controller"
        );
    }
    for secret in objects.iter().filter(|o| o["kind"] == "Secret") {
        let data = secret["data"].as_object().unwrap();
        assert!(data.contains_key("tls.crt"), "{secret}");
        assert!(data.values().all(|v| v == ""), "no key material: {secret}");
    }
    assert!(!stdout.contains("BEGIN"), "no PEM anywhere");
    assert_eq!(render(INPUT).1, stdout, "deterministic");
}

#[test]
fn a_gateway_not_ours_creates_nothing() {
    let input = INPUT.replace("gatewayClassName: kengine", "gatewayClassName: other");
    let (code, stdout, stderr) = render(&input);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "");
}
