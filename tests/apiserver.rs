//! The Kubernetes API emulator (`e2e/apiserver/`) driven by kube-rs clients
//! the way the controller uses them.

#[path = "../e2e/apiserver/harness.rs"]
mod apiserver_harness;

use std::time::Duration;

use apiserver_harness::{EmulatorOptions, KubeApiEmulator};
use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::discovery::{Discovery, Scope};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

fn gateway_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway"),
        "gateways",
    )
}

fn gateway(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name},
        "spec": {
            "gatewayClassName": "kengine",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]
        },
        "status": {"addresses": [{"value": "ignored"}]}
    }))
    .unwrap()
}

fn gateways(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), "default", &gateway_resource())
}

fn api_error(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn discovery_finds_gateway_api_and_builtins() {
    let emu = KubeApiEmulator::start();
    let client = emu.client().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");

    for discovery in [
        Discovery::new(client.clone()).run().await.unwrap(),
        Discovery::new(client.clone())
            .run_aggregated()
            .await
            .unwrap(),
    ] {
        let group = discovery
            .get("gateway.networking.k8s.io")
            .expect("gateway group");
        assert_eq!(group.preferred_version_or_latest(), "v1");
        let (ar, caps) = group.recommended_kind("Gateway").expect("Gateway kind");
        assert_eq!(ar.plural, "gateways");
        assert_eq!(ar.version, "v1");
        assert_eq!(caps.scope, Scope::Namespaced);
        assert!(
            caps.subresources
                .iter()
                .any(|(sub, _)| sub.plural == "status")
        );
        assert!(caps.supports_operation("watch"));
        let (ar, caps) = discovery
            .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Namespace"))
            .expect("Namespace");
        assert_eq!(ar.plural, "namespaces");
        assert_eq!(caps.scope, Scope::Cluster);
        for (group, kind) in [
            ("apps", "Deployment"),
            ("apps", "DaemonSet"),
            ("coordination.k8s.io", "Lease"),
            ("discovery.k8s.io", "EndpointSlice"),
            ("events.k8s.io", "Event"),
            ("policy", "PodDisruptionBudget"),
            ("networking.k8s.io", "NetworkPolicy"),
            ("apiextensions.k8s.io", "CustomResourceDefinition"),
            ("gateway.networking.k8s.io", "HTTPRoute"),
            ("gateway.networking.k8s.io", "ListenerSet"),
        ] {
            assert!(
                discovery
                    .get(group)
                    .and_then(|g| g.recommended_kind(kind))
                    .is_some(),
                "{group} {kind}"
            );
        }
    }
    // Older versions are served too.
    let v1beta1 = client
        .list_api_group_resources("gateway.networking.k8s.io/v1beta1")
        .await
        .unwrap();
    assert!(v1beta1.resources.iter().any(|r| r.name == "httproutes"));
    // Unknown kinds are not.
    let widgets = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &widgets);
    assert_eq!(api_error(api.get("x").await.unwrap_err()).0, 404);
    assert_eq!(
        api_error(api.list(&ListParams::default()).await.unwrap_err()).0,
        404
    );
}

#[tokio::test]
async fn create_get_list_with_selectors() {
    let emu = KubeApiEmulator::start();
    let client = emu.client().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    let a = cms
        .create(&pp, &config_map("a", &[("app", "web"), ("tier", "fe")]))
        .await
        .unwrap();
    cms.create(&pp, &config_map("b", &[("app", "db")]))
        .await
        .unwrap();
    cms.create(&pp, &config_map("c", &[])).await.unwrap();
    assert_eq!(a.metadata.generation, Some(1));
    assert!(a.metadata.uid.is_some() && a.metadata.creation_timestamp.is_some());
    assert_eq!(a.metadata.namespace.as_deref(), Some("default"));

    let err = cms.create(&pp, &config_map("a", &[])).await.unwrap_err();
    assert_eq!(api_error(err), (409, "AlreadyExists".into()));

    let mut generated = config_map("", &[]);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let generated = cms.create(&pp, &generated).await.unwrap();
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() == 9);

    assert_eq!(cms.get("a").await.unwrap().metadata.uid, a.metadata.uid);
    assert_eq!(
        api_error(cms.get("nope").await.unwrap_err()),
        (404, "NotFound".into())
    );

    let names = |l: kube::core::ObjectList<ConfigMap>| {
        let mut n: Vec<String> = l.items.iter().map(|c| c.name_any()).collect();
        n.sort();
        n.join(",")
    };
    for (selector, want) in [
        ("app=web", "a"),
        ("app!=web", "b,c,GEN"),
        ("app in (web,db)", "a,b"),
        ("app notin (web)", "b,c,GEN"),
        ("app", "a,b"),
        ("!app", "c,GEN"),
        ("app=web,tier=fe", "a"),
    ] {
        let want = want.replace("GEN", &generated.name_any());
        let list = cms
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        assert_eq!(names(list), want, "{selector}");
    }
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(names(by_name), "b");
    let paged = cms.list(&ListParams::default().limit(1)).await.unwrap();
    assert!(!paged.items.is_empty());
    assert!(paged.metadata.resource_version.is_some());

    // Across namespaces; and objects need their namespace.
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        4
    );
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "missing");
    assert_eq!(
        api_error(
            elsewhere
                .create(&pp, &config_map("x", &[]))
                .await
                .unwrap_err()
        )
        .0,
        404
    );

    // Field selectors on other fields.
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    for (name, ty) in [("s1", "Opaque"), ("s2", "kubernetes.io/tls")] {
        let s = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            type_: Some(ty.into()),
            ..Default::default()
        };
        secrets.create(&pp, &s).await.unwrap();
    }
    let tls = secrets
        .list(&ListParams::default().fields("type=kubernetes.io/tls"))
        .await
        .unwrap();
    assert_eq!(tls.items.len(), 1);
    assert_eq!(tls.items[0].name_any(), "s2");
}

#[tokio::test]
async fn update_conflicts_and_generation() {
    let emu = KubeApiEmulator::start();
    let client = emu.client().await;
    let api = gateways(&client);
    let created = api
        .create(&PostParams::default(), &gateway("gw"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    let mut changed = created.clone();
    changed.data["spec"]["gatewayClassName"] = json!("other");
    let updated = api
        .replace("gw", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    assert_ne!(updated.resource_version(), created.resource_version());

    // The old resourceVersion is stale now.
    let err = api
        .replace("gw", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    assert_eq!(api_error(err), (409, "Conflict".into()));

    // Metadata-only changes do not bump the generation.
    let mut labelled = updated.clone();
    labelled.labels_mut().insert("a".into(), "b".into());
    let labelled = api
        .replace("gw", &PostParams::default(), &labelled)
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    assert_eq!(labelled.labels()["a"], "b");
}

#[tokio::test]
async fn merge_and_json_patches() {
    let emu = KubeApiEmulator::start();
    let client = emu.client().await;
    let api = gateways(&client);
    api.create(&PostParams::default(), &gateway("gw"))
        .await
        .unwrap();

    let patched = api
        .patch(
            "gw",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"x": "1"}}, "spec": {"gatewayClassName": "merged"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["gatewayClassName"], "merged");
    assert_eq!(patched.labels()["x"], "1");
    assert_eq!(patched.metadata.generation, Some(2));

    let strategic = api
        .patch(
            "gw",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"annotations": {"y": "2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(strategic.annotations()["y"], "2");

    // RFC 6902 (sent by hand: kube's Patch::Json needs its jsonpatch feature).
    let json_patch = |ops: Value| {
        hyper::Request::builder()
            .method("PATCH")
            .uri("/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways/gw")
            .header("content-type", "application/json-patch+json")
            .body(serde_json::to_vec(&ops).unwrap())
            .unwrap()
    };
    let out: Value = client
        .request(json_patch(json!([
            {"op": "test", "path": "/spec/gatewayClassName", "value": "merged"},
            {"op": "replace", "path": "/spec/gatewayClassName", "value": "json"},
            {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/f"]},
            {"op": "add", "path": "/spec/listeners/-", "value": {"name": "b", "port": 8080, "protocol": "HTTP"}}
        ])))
        .await
        .unwrap();
    assert_eq!(out["spec"]["gatewayClassName"], "json");
    assert_eq!(out["spec"]["listeners"].as_array().unwrap().len(), 2);
    assert_eq!(out["metadata"]["finalizers"][0], "example.com/f");
    let err = client
        .request::<Value>(json_patch(
            json!([{"op": "test", "path": "/spec/gatewayClassName", "value": "nope"}]),
        ))
        .await
        .unwrap_err();
    assert_eq!(api_error(err).0, 422);

    // A merge patch with a stale resourceVersion is a conflict.
    let err = api
        .patch(
            "gw",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"resourceVersion": "1"}, "spec": {"gatewayClassName": "x"}}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(api_error(err).0, 409);
    assert_eq!(
        api_error(
            api.patch("missing", &PatchParams::default(), &Patch::Merge(json!({})))
                .await
                .unwrap_err()
        )
        .0,
        404
    );
}

#[tokio::test]
async fn server_side_apply() {
    let emu = KubeApiEmulator::start();
    let client = emu.client().await;
    let api = gateways(&client);
    let pp = PatchParams::apply("kengine-gateway");
    let mut desired = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "labels": {"a": "1", "b": "2"}},
        "spec": {"gatewayClassName": "kengine", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}
    });
    let created = api.patch("gw", &pp, &Patch::Apply(&desired)).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.labels().len(), 2);

    // Re-applying the same configuration changes nothing.
    let same = api.patch("gw", &pp, &Patch::Apply(&desired)).await.unwrap();
    assert_eq!(same.resource_version(), created.resource_version());

    // Dropping a field the manager applied removes it; changes bump the generation.
    desired["metadata"]["labels"] = json!({"a": "1"});
    desired["spec"]["listeners"][0]["port"] = json!(8080);
    let updated = api.patch("gw", &pp, &Patch::Apply(&desired)).await.unwrap();
    assert_eq!(updated.labels().len(), 1);
    assert_eq!(updated.data["spec"]["listeners"][0]["port"], 8080);
    assert_eq!(updated.metadata.generation, Some(2));
    assert_eq!(
        updated.metadata.creation_timestamp,
        created.metadata.creation_timestamp
    );
    let managed = updated.metadata.managed_fields.as_ref().unwrap();
    assert_eq!(managed[0].manager.as_deref(), Some("kengine-gateway"));

    // Another manager changing an owned field conflicts unless it forces.
    let other = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw"},
        "spec": {"gatewayClassName": "someone-else"}
    });
    let err = api
        .patch("gw", &PatchParams::apply("other"), &Patch::Apply(&other))
        .await
        .unwrap_err();
    assert_eq!(api_error(err).0, 409);
    let forced = api
        .patch(
            "gw",
            &PatchParams::apply("other").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["gatewayClassName"], "someone-else");
    assert_eq!(forced.data["spec"]["listeners"][0]["port"], 8080);
}

#[tokio::test]
async fn status_subresource() {
    let emu = KubeApiEmulator::start();
    let client = emu.client().await;
    let api = gateways(&client);
    let created = api
        .create(&PostParams::default(), &gateway("gw"))
        .await
        .unwrap();
    // Status sent on create is dropped; the CRD's status default applies instead.
    assert!(created.data["status"].get("addresses").is_none());
    assert_eq!(created.data["status"]["conditions"][0]["reason"], "Pending");
    // Defaults from the CRD schema are applied.
    assert_eq!(
        created.data["spec"]["listeners"][0]["allowedRoutes"]["namespaces"]["from"],
        "Same"
    );

    let status = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "spec": {"gatewayClassName": "changed-through-status"},
        "status": {"conditions": [{
            "type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
            "observedGeneration": 1, "lastTransitionTime": "2025-01-01T00:00:00Z"
        }]}
    });
    let after = api
        .patch_status(
            "gw",
            &PatchParams::apply("kengine-gateway").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(after.data["status"]["conditions"][0]["type"], "Accepted");
    assert_eq!(after.data["spec"]["gatewayClassName"], "kengine");
    assert_eq!(after.metadata.generation, Some(1));
    assert_ne!(after.resource_version(), created.resource_version());

    let merged = api
        .patch_status(
            "gw",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"addresses": [{"type": "IPAddress", "value": "127.0.0.2"}]}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(merged.data["status"]["addresses"][0]["value"], "127.0.0.2");
    assert_eq!(merged.data["status"]["conditions"][0]["type"], "Accepted");

    // Writes to the main resource ignore status.
    let mut main = merged.clone();
    main.data["status"] = json!({"conditions": []});
    main.data["spec"]["gatewayClassName"] = json!("new");
    let replaced = api
        .replace("gw", &PostParams::default(), &main)
        .await
        .unwrap();
    assert_eq!(replaced.data["spec"]["gatewayClassName"], "new");
    assert_eq!(replaced.data["status"]["conditions"][0]["type"], "Accepted");
    assert_eq!(replaced.metadata.generation, Some(2));
    let got = api.get_status("gw").await.unwrap();
    assert_eq!(got.data["status"]["addresses"][0]["value"], "127.0.0.2");

    // replace_status with a stale resourceVersion conflicts.
    let err = api
        .replace_status("gw", &PostParams::default(), &merged)
        .await
        .unwrap_err();
    assert_eq!(api_error(err).0, 409);
}

async fn next_event<S>(events: &mut S) -> watcher::Event<DynamicObject>
where
    S: futures_util::Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("watch event in time")
        .expect("stream open")
        .expect("no watch error")
}

#[tokio::test]
async fn watcher_and_reflector_see_changes() {
    let emu = KubeApiEmulator::start_with(EmulatorOptions {
        crds: vec![apiserver_harness::gateway_api_crds()],
        bookmark_interval: Some(1),
        ..Default::default()
    });
    let client = emu.client().await;
    let api = gateways(&client);
    api.create(&PostParams::default(), &gateway("before"))
        .await
        .unwrap();

    let writer = reflector::store::Writer::new(gateway_resource());
    let reader = writer.as_reader();
    let mut events = Box::pin(reflector(
        writer,
        watcher(api.clone(), watcher::Config::default()),
    ));
    // The initial list.
    assert!(matches!(
        next_event(&mut events).await,
        watcher::Event::Init
    ));
    match next_event(&mut events).await {
        watcher::Event::InitApply(o) => assert_eq!(o.name_any(), "before"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        next_event(&mut events).await,
        watcher::Event::InitDone
    ));
    reader.wait_until_ready().await.unwrap();

    api.create(&PostParams::default(), &gateway("gw"))
        .await
        .unwrap();
    match next_event(&mut events).await {
        watcher::Event::Apply(o) => assert_eq!(o.name_any(), "gw"),
        other => panic!("{other:?}"),
    }
    api.patch(
        "gw",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"gatewayClassName": "m"}})),
    )
    .await
    .unwrap();
    match next_event(&mut events).await {
        watcher::Event::Apply(o) => assert_eq!(o.data["spec"]["gatewayClassName"], "m"),
        other => panic!("{other:?}"),
    }
    api.delete("gw", &DeleteParams::default()).await.unwrap();
    match next_event(&mut events).await {
        watcher::Event::Delete(o) => assert_eq!(o.name_any(), "gw"),
        other => panic!("{other:?}"),
    }
    let names: Vec<String> = reader.state().iter().map(|o| o.name_any()).collect();
    assert_eq!(names, vec!["before".to_string()]);

    // A label-selected raw watch sees objects enter and leave the selection.
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut raw = cms
        .watch(&WatchParams::default().labels("app=web").timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &config_map("c", &[("app", "db")]))
        .await
        .unwrap();
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match raw.next().await.expect("event").unwrap() {
            WatchEvent::Added(_) => seen.push("ADDED"),
            WatchEvent::Modified(_) => seen.push("MODIFIED"),
            WatchEvent::Deleted(_) => seen.push("DELETED"),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(seen, ["ADDED", "MODIFIED", "DELETED"]);

    // Applied objects through the runtime helpers, with a field selector.
    let mut applied = Box::pin(
        watcher(
            cms.clone(),
            watcher::Config::default().fields("metadata.name=d"),
        )
        .applied_objects(),
    );
    cms.create(&PostParams::default(), &config_map("d", &[]))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), applied.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.name_any(), "d");
}

#[tokio::test]
async fn watch_from_expired_resource_version_is_gone() {
    let emu = KubeApiEmulator::start_with(EmulatorOptions {
        watch_history: Some(5),
        ..Default::default()
    });
    let client = emu.client().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let first = cms
        .create(&PostParams::default(), &config_map("c0", &[]))
        .await
        .unwrap();
    for i in 1..20 {
        cms.create(&PostParams::default(), &config_map(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    let mut stream = cms
        .watch(&WatchParams::default(), &first.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    match stream.next().await.expect("an event").unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    // A recent resourceVersion still works.
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    cms.delete("c3", &DeleteParams::default()).await.unwrap();
    assert!(matches!(
        stream.next().await.unwrap().unwrap(),
        WatchEvent::Deleted(_)
    ));
    // And the runtime watcher recovers by relisting.
    let mut applied = Box::pin(watcher(cms.clone(), watcher::Config::default()).applied_objects());
    let first = tokio::time::timeout(Duration::from_secs(10), applied.next())
        .await
        .unwrap();
    assert!(first.unwrap().is_ok());
}

#[tokio::test]
async fn owner_references_are_garbage_collected() {
    let emu = KubeApiEmulator::start();
    let client = emu.client().await;
    let api = gateways(&client);
    let owner = api
        .create(&PostParams::default(), &gateway("gw"))
        .await
        .unwrap();
    let owner_ref = OwnerReference {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        name: "gw".into(),
        uid: owner.uid().unwrap(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut dependent = config_map("dependent", &[]);
    dependent.metadata.owner_references = Some(vec![owner_ref.clone()]);
    cms.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    let mut finalized = config_map("finalized", &[]);
    finalized.metadata.owner_references = Some(vec![owner_ref]);
    finalized.metadata.finalizers = Some(vec!["example.com/cleanup".into()]);
    cms.create(&PostParams::default(), &finalized)
        .await
        .unwrap();
    cms.create(&PostParams::default(), &config_map("unrelated", &[]))
        .await
        .unwrap();

    let deleted = api.delete("gw", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_left());
    assert_eq!(api_error(cms.get("dependent").await.unwrap_err()).0, 404);
    cms.get("unrelated").await.unwrap();
    // Finalizers hold deletion until removed.
    let pending = cms.get("finalized").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    cms.patch(
        "finalized",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_error(cms.get("finalized").await.unwrap_err()).0, 404);

    // Deleting a namespace deletes what is in it.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("doomed".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let ns = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    assert_eq!(ns.labels()["kubernetes.io/metadata.name"], "doomed");
    let in_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    in_ns
        .create(&PostParams::default(), &config_map("x", &[]))
        .await
        .unwrap();
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_error(in_ns.get("x").await.unwrap_err()).0, 404);
    assert_eq!(
        api_error(namespaces.get("doomed").await.unwrap_err()).0,
        404
    );
}

#[tokio::test]
async fn leases_for_leader_election() {
    let emu = KubeApiEmulator::start();
    let client = emu.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("kengine-gateway".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(Default::default())),
            ..Default::default()
        }),
    };
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut taken = created.clone();
    taken.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let taken = leases
        .replace("kengine-gateway", &PostParams::default(), &taken)
        .await
        .unwrap();
    assert_eq!(taken.spec.unwrap().holder_identity.as_deref(), Some("b"));
    // A candidate holding the old version loses the race.
    let mut late = created.clone();
    late.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let err = leases
        .replace("kengine-gateway", &PostParams::default(), &late)
        .await
        .unwrap_err();
    assert_eq!(api_error(err), (409, "Conflict".into()));
}

#[tokio::test]
async fn crds_register_kinds_dynamically() {
    let emu = KubeApiEmulator::start_with(EmulatorOptions::default());
    let client = emu.client().await;
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.get("gateway.networking.k8s.io").is_none());

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let text = std::fs::read_to_string(
        apiserver_harness::gateway_api_v1_1_crds()
            .join("gateway.networking.k8s.io_gatewayclasses.yaml"),
    )
    .unwrap();
    let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text).unwrap();
    let created = crds.create(&PostParams::default(), &crd).await.unwrap();
    let established = created.status.unwrap().conditions.unwrap();
    assert!(
        established
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .get("gateway.networking.k8s.io")
        .and_then(|g| g.recommended_kind("GatewayClass"))
        .expect("GatewayClass");
    assert_eq!(caps.scope, Scope::Cluster);
    let classes: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let class: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": "kengine"},
        "spec": {"controllerName": "example.com/kengine"}
    }))
    .unwrap();
    classes
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    // Served at every served version.
    let beta = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1beta1", "GatewayClass"),
        "gatewayclasses",
    );
    let beta_api: Api<DynamicObject> = Api::all_with(client.clone(), &beta);
    let as_beta = beta_api.get("kengine").await.unwrap();
    assert_eq!(
        as_beta.types.unwrap().api_version,
        "gateway.networking.k8s.io/v1beta1"
    );

    crds.delete(
        "gatewayclasses.gateway.networking.k8s.io",
        &DeleteParams::default(),
    )
    .await
    .unwrap();
    assert_eq!(api_error(classes.get("kengine").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn events_and_metadata_only_requests() {
    let emu = KubeApiEmulator::start();
    let client = emu.client().await;
    let api = gateways(&client);
    let gw = api
        .create(&PostParams::default(), &gateway("gw"))
        .await
        .unwrap();

    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "kengine-gateway".into(),
            instance: None,
        },
    );
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "Programmed".into(),
        note: Some("configuration loaded".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = gw.object_ref(&gateway_resource());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(client.clone());
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].reason.as_deref(), Some("Programmed"));

    let meta = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(meta.items[0].metadata.name.as_deref(), Some("gw"));
    let one = api.get_metadata("gw").await.unwrap();
    assert_eq!(one.metadata.uid, gw.metadata.uid);
}

#[tokio::test]
async fn kube_lease_manager_hands_over_leadership() {
    use kube_lease_manager::LeaseManagerBuilder;
    let emu = KubeApiEmulator::start_with(EmulatorOptions::default());
    let client = emu.client().await;
    let manager = |identity: &str| {
        LeaseManagerBuilder::new(client.clone(), "kengine-gateway-leader")
            .with_namespace("default")
            .with_identity(identity)
            .with_duration(2)
            .with_grace(1)
            .build()
    };
    let a = manager("a").await.unwrap();
    let b = manager("b").await.unwrap();
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let holder = async || {
        leases
            .get("kengine-gateway-leader")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
    };

    assert!(
        tokio::time::timeout(Duration::from_secs(20), a.changed())
            .await
            .unwrap()
            .unwrap()
    );
    assert_eq!(holder().await.as_deref(), Some("a"));
    // b cannot take a held lease.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), b.changed())
            .await
            .is_err()
    );
    assert_eq!(holder().await.as_deref(), Some("a"));
    a.release().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(20), b.changed())
            .await
            .unwrap()
            .unwrap()
    );
    assert_eq!(holder().await.as_deref(), Some("b"));

    // A holder that stops renewing loses the lease once it expires.
    drop(b);
    let c = manager("c").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(30), c.changed())
            .await
            .unwrap()
            .unwrap()
    );
    assert_eq!(holder().await.as_deref(), Some("c"));
}
