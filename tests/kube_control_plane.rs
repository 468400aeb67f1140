//! The real control plane (`tests/support/control_plane.rs`): what the
//! emulator could not show. The API server's schema and CEL validation of
//! our CRD and the Gateway API's, RBAC with service-account tokens, and the
//! real garbage collector.

mod support;

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

    // Our CRD's OpenAPI schema, enforced by the API server.
    let instances = resource(
        "kengine.khulnasoft.com",
        "v1alpha1",
        "KengineInstance",
        "kengineinstances",
    );
    let instance = |spec: serde_json::Value| {
        json!({"apiVersion": "kengine.khulnasoft.com/v1alpha1", "kind": "KengineInstance",
               "metadata": {"name": "bad"}, "spec": spec})
    };
    let message = rejected(&client, &instances, instance(json!({"mode": "Bogus"}))).await;
    assert!(
        message.contains("spec.mode") && message.contains("Unsupported value"),
        "{message}"
    );
    let message = rejected(
        &client,
        &instances,
        instance(
            json!({"mode": "External", "external": {"selector": {"a": "b"}, "adminPort": 70000}}),
        ),
    )
    .await;
    assert!(
        message.contains("spec.external.adminPort") && message.contains("65535"),
        "{message}"
    );
    apply(
        &client,
        &instances,
        Some("default"),
        instance(json!({"mode": "Deployment"})),
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
