//! The real control plane (`crates/test-support/src/control_plane.rs`): what the
//! emulator could not show. The API server's schema and CEL validation of
//! our CRD and the Gateway API's, RBAC with service-account tokens, and the
//! real garbage collector.

use kengine_gateway_test_support as support;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use support::cluster::{apply, eventually, resource};
use support::control_plane::{ControlPlane, client_for};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Server-side apply that is expected to fail: the API server's message.
async fn rejected(
    client: &kube::Client,
    ar: &kube::core::ApiResource,
    object: serde_json::Value,
) -> String {
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), "default", ar);
    match api
        .patch(
            &name,
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(object),
        )
        .await
    {
        Ok(o) => panic!(
            "{name} was accepted: {}",
            serde_json::to_string(&o).unwrap()
        ),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

#[test]
fn real_control_plane_validates_authorizes_and_collects() {
    // Its own network namespace: the fixed ports of other suites cannot collide with it.
    support::netns::run(2, validates_authorizes_and_collects());
}

async fn validates_authorizes_and_collects() {
    // A non-loopback address exists only inside this test's namespace.
    support::netns::add_local_address("10.96.0.77");
    let probe = tokio::net::TcpListener::bind("10.96.0.77:0").await.unwrap();
    tokio::net::TcpStream::connect(probe.local_addr().unwrap())
        .await
        .unwrap();
    drop(probe);

    let plane = ControlPlane::start().await;
    plane
        .install_crds(&[
            repo("e2e/gateway-api/v1.6.1/config/crd/experimental"),
            repo("crds"),
        ])
        .await;
    let client = plane.client().await;

    // Our CRD's OpenAPI schema and CEL rules, enforced by the API server;
    // a valid instance is accepted.
    let instances = resource(
        "kengine.khulnasoft.com",
        "v1alpha1",
        "KengineInstance",
        "kengineinstances",
    );
    every_kengine_instance_rule_rejects(&client, &instances).await;
    apply(
        &client,
        &instances,
        Some("default"),
        json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
               "metadata": {"name": "good"}, "spec": {"mode": "Deployment"}}),
    )
    .await;

    // A CEL rule of the Gateway API CRDs: no `tls` on an HTTP listener.
    let gateways = resource("gateway.networking.k8s.io", "v1", "Gateway", "gateways");
    let message = rejected(
        &client,
        &gateways,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "bad"},
               "spec": {"gatewayClassName": "kengine",
                        "listeners": [{"name": "web", "protocol": "HTTP", "port": 80,
                                       "tls": {"certificateRefs": [{"name": "cert"}]}}]}}),
    )
    .await;
    assert!(
        message.contains("tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']"),
        "{message}"
    );

    // RBAC is on: a service account without grants gets a real 403.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let account = ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some("nobody".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let token = accounts
        .create_token_request(
            "nobody",
            &PostParams::default(),
            &TokenRequest {
                spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
                    audiences: vec![],
                    expiration_seconds: Some(600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let nobody = client_for(&plane.token_kubeconfig("nobody", &token)).await;
    match Api::<Pod>::namespaced(nobody, "default")
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status
                    .message
                    .contains("system:serviceaccount:default:nobody"),
                "{}",
                status.message
            );
        }
        other => panic!("listing pods without a grant: {other:?}"),
    }

    // The real garbage collector deletes an object whose owner is gone.
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owner = maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let uid = owner.metadata.uid.unwrap();
    maps.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "dependent", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    maps.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually(
        "the garbage collector deletes the dependent",
        Duration::from_secs(60),
        async || {
            maps.get_opt("dependent")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

/// One invalid KengineInstance per rule of our CRD's schema, each rejected
/// by the API server with its own message; a rule added to `crds/` without
/// a case here fails the test.
async fn every_kengine_instance_rule_rejects(
    client: &kube::Client,
    instances: &kube::core::ApiResource,
) {
    let external = json!({"selector": {"app": "kengine"}});
    // (rule, spec (`null`: none), what the message must say)
    let cases: Vec<(&str, serde_json::Value, &[&str])> = vec![
        (":required:spec", json!(null), &["spec: Required value"]),
        (
            ":rule:spec.external is required with mode External and forbidden otherwise",
            json!({"mode": "External"}),
            &["spec.external is required with mode External and forbidden otherwise"],
        ),
        (
            ":rule:spec.external is required with mode External and forbidden otherwise",
            json!({"mode": "Deployment", "external": external}),
            &["spec.external is required with mode External and forbidden otherwise"],
        ),
        (
            ":rule:replicas applies to mode Deployment only",
            json!({"mode": "DaemonSet", "replicas": 2}),
            &["replicas applies to mode Deployment only"],
        ),
        (
            ".spec.mode:enum",
            json!({"mode": "Bogus"}),
            &["spec.mode", "Unsupported value: \"Bogus\""],
        ),
        (
            ".spec.external:required:selector",
            json!({"mode": "External", "external": {"adminPort": 2019}}),
            &["spec.external.selector: Required value"],
        ),
        (
            ".spec.external.adminPort:minimum",
            json!({"mode": "External", "external": {"selector": {"a": "b"}, "adminPort": 0}}),
            &["spec.external.adminPort", "greater than or equal to 1"],
        ),
        (
            ".spec.external.adminPort:maximum",
            json!({"mode": "External", "external": {"selector": {"a": "b"}, "adminPort": 70000}}),
            &["spec.external.adminPort", "less than or equal to 65535"],
        ),
        (
            ".spec.external.adminTls:required:caSecret",
            json!({"mode": "External", "external": {"selector": {"a": "b"},
                   "adminTls": {"clientCertificateSecret": "client"}}}),
            &["spec.external.adminTls.caSecret: Required value"],
        ),
        (
            ".spec.external.adminTls:required:clientCertificateSecret",
            json!({"mode": "External", "external": {"selector": {"a": "b"},
                   "adminTls": {"caSecret": "ca"}}}),
            &["spec.external.adminTls.clientCertificateSecret: Required value"],
        ),
        (
            ".spec.image:minLength",
            json!({"mode": "Deployment", "image": ""}),
            &["spec.image", "at least 1 chars long"],
        ),
        (
            ".spec.replicas:minimum",
            json!({"mode": "Deployment", "replicas": -1}),
            &["spec.replicas", "greater than or equal to 0"],
        ),
        (
            ".spec.replicas:maximum",
            json!({"mode": "Deployment", "replicas": 1001}),
            &["spec.replicas", "less than or equal to 1000"],
        ),
        (
            ".spec.podDisruptionBudget:rule:set minAvailable or maxUnavailable, not both",
            json!({"mode": "Deployment", "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}),
            &[
                "spec.podDisruptionBudget",
                "set minAvailable or maxUnavailable, not both",
            ],
        ),
        (
            ".spec.service:rule:loadBalancerClass needs type LoadBalancer",
            json!({"mode": "Deployment", "service": {"type": "NodePort", "loadBalancerClass": "lb"}}),
            &["spec.service", "loadBalancerClass needs type LoadBalancer"],
        ),
        (
            ".spec.service:rule:externalTrafficPolicy needs type NodePort or LoadBalancer",
            json!({"mode": "Deployment", "service": {"type": "ClusterIP", "externalTrafficPolicy": "Local"}}),
            &[
                "spec.service",
                "externalTrafficPolicy needs type NodePort or LoadBalancer",
            ],
        ),
        (
            ".spec.service.type:enum",
            json!({"mode": "Deployment", "service": {"type": "ExternalName"}}),
            &["spec.service.type", "Unsupported value: \"ExternalName\""],
        ),
        (
            ".spec.service.externalTrafficPolicy:enum",
            json!({"mode": "Deployment", "service": {"type": "NodePort", "externalTrafficPolicy": "Nearest"}}),
            &[
                "spec.service.externalTrafficPolicy",
                "Unsupported value: \"Nearest\"",
            ],
        ),
        (
            ".spec.upstreamMode:enum",
            json!({"mode": "Deployment", "upstreamMode": "NodePort"}),
            &["spec.upstreamMode", "Unsupported value: \"NodePort\""],
        ),
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (rule, spec, wanted) in &cases {
        let mut object = json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1",
            "kind": "KengineInstance", "metadata": {"name": "bad"}});
        if !spec.is_null() {
            object["spec"] = spec.clone();
        }
        let message = rejected(client, instances, object).await;
        for w in *wanted {
            assert!(message.contains(w), "{rule}: {spec}: {message}");
        }
        covered.insert(rule.to_string());
    }
    let text = std::fs::read_to_string(repo("crds/kengineinstances.yaml")).unwrap();
    let crd: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut rules = std::collections::BTreeSet::new();
    schema_rules(
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        "",
        &mut rules,
    );
    let missing: Vec<&String> = rules.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "rules of crds/kengineinstances.yaml without an invalid case: {missing:?}"
    );
    let unknown: Vec<&String> = covered.difference(&rules).collect();
    assert!(
        unknown.is_empty(),
        "cases for rules the CRD does not have: {unknown:?}"
    );
}

/// Fields whose schema is a Kubernetes type (`k8s-openapi`'s, validated by
/// the API server like any Pod field), not a rule of ours; and `status`,
/// which only the controller writes.
const EMBEDDED: &[&str] = &[
    "affinity",
    "tolerations",
    "resources",
    "topologySpreadConstraints",
    "status",
];

/// Every validation of our own in a schema, named `path:keyword[:what]`.
fn schema_rules(
    schema: &serde_json::Value,
    path: &str,
    rules: &mut std::collections::BTreeSet<String>,
) {
    for keyword in [
        "maximum",
        "minimum",
        "enum",
        "pattern",
        "maxLength",
        "minLength",
        "maxItems",
        "minItems",
        "maxProperties",
    ] {
        if schema.get(keyword).is_some() {
            rules.insert(format!("{path}:{keyword}"));
        }
    }
    for field in schema["required"].as_array().into_iter().flatten() {
        rules.insert(format!("{path}:required:{}", field.as_str().unwrap()));
    }
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        rules.insert(format!("{path}:rule:{}", rule["message"].as_str().unwrap()));
    }
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        if !EMBEDDED.contains(&name.as_str()) {
            schema_rules(property, &format!("{path}.{name}"), rules);
        }
    }
    if let Some(items) = schema.get("items") {
        schema_rules(items, &format!("{path}[]"), rules);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        schema_rules(values, &format!("{path}{{}}"), rules);
    }
}
