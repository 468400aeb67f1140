//! Unit tests of the store.

use super::*;

fn store() -> (Store, ResourceType, ResourceType) {
    let s = Store::new(100);
    let cm = s.find_type("", "v1", "configmaps").unwrap();
    let pods = s.find_type("", "v1", "pods").unwrap();
    (s, cm, pods)
}

#[test]
fn create_update_generation() {
    let (mut s, cm, _) = store();
    let o = s
        .create(
            &cm,
            "default",
            json!({"metadata": {"name": "a"}, "data": {"k": "v"}}),
            &WriteOptions::default(),
        )
        .unwrap();
    assert_eq!(o["metadata"]["generation"], 1);
    let mut u = o.clone();
    u["data"]["k"] = json!("w");
    let (u, _) = s
        .update(&cm, "default", "a", u, false, &WriteOptions::default())
        .unwrap();
    assert_eq!(u["metadata"]["generation"], 2);
    // stale
    assert_eq!(
        s.update(&cm, "default", "a", o, false, &WriteOptions::default())
            .unwrap_err()
            .code,
        409
    );
    // no-op keeps the resourceVersion
    let (same, _) = s
        .update(
            &cm,
            "default",
            "a",
            u.clone(),
            false,
            &WriteOptions::default(),
        )
        .unwrap();
    assert_eq!(
        same["metadata"]["resourceVersion"],
        u["metadata"]["resourceVersion"]
    );
}

#[test]
fn status_subresource() {
    let (mut s, _, pods) = store();
    let o = s
        .create(
            &pods,
            "default",
            json!({"metadata": {"name": "p"}, "spec": {"nodeName": "a"}, "status": {"phase": "X"}}),
            &WriteOptions::default(),
        )
        .unwrap();
    assert!(o.get("status").is_none());
    let mut st = o.clone();
    st["status"] = json!({"phase": "Running"});
    st["spec"]["nodeName"] = json!("b");
    let (after, _) = s
        .update(&pods, "default", "p", st, true, &WriteOptions::default())
        .unwrap();
    assert_eq!(after["status"]["phase"], "Running");
    assert_eq!(after["spec"]["nodeName"], "a");
    assert_eq!(after["metadata"]["generation"], 1);
}

#[test]
fn apply_removes_and_conflicts() {
    let (mut s, cm, _) = store();
    let opts = |m: &str, force| WriteOptions {
        field_manager: Some(m.into()),
        force,
        ..Default::default()
    };
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
    s.patch(
        &cm,
        "default",
        "c",
        PatchType::Apply,
        cfg,
        false,
        &opts("one", false),
    )
    .unwrap();
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    let (o, _) = s
        .patch(
            &cm,
            "default",
            "c",
            PatchType::Apply,
            cfg,
            false,
            &opts("one", false),
        )
        .unwrap();
    assert_eq!(o["data"], json!({"a": "1"}));
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "9"}});
    let err = s
        .patch(
            &cm,
            "default",
            "c",
            PatchType::Apply,
            other.clone(),
            false,
            &opts("two", false),
        )
        .unwrap_err();
    assert_eq!(err.code, 409);
    let (o, _) = s
        .patch(
            &cm,
            "default",
            "c",
            PatchType::Apply,
            other,
            false,
            &opts("two", true),
        )
        .unwrap();
    assert_eq!(o["data"]["a"], "9");
}

/// Creates ConfigMap `owner` in `default`; returns an ownerReference to it.
fn create_owner(s: &mut Store, cm: &ResourceType) -> Value {
    let owner = s
        .create(
            cm,
            "default",
            json!({"metadata": {"name": "owner"}}),
            &WriteOptions::default(),
        )
        .unwrap();
    json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]})
}

#[test]
fn garbage_collection_and_finalizers() {
    let (mut s, cm, _) = store();
    let d = WriteOptions::default();
    let owner = create_owner(&mut s, &cm);
    s.create(
        &cm,
        "default",
        json!({"metadata": {"name": "dep", "ownerReferences": [owner]}}),
        &d,
    )
    .unwrap();
    s.create(
        &cm,
        "default",
        json!({"metadata": {"name": "fin", "finalizers": ["x"], "ownerReferences": [owner]}}),
        &d,
    )
    .unwrap();
    s.delete(&cm, "default", "owner", &json!({}), false)
        .unwrap();
    assert_eq!(s.get(&cm, "default", "dep").unwrap_err().code, 404);
    let fin = s.get(&cm, "default", "fin").unwrap();
    assert!(fin["metadata"]["deletionTimestamp"].is_string());
    s.patch(
        &cm,
        "default",
        "fin",
        PatchType::Merge,
        json!({"metadata": {"finalizers": null}}),
        false,
        &d,
    )
    .unwrap();
    assert_eq!(s.get(&cm, "default", "fin").unwrap_err().code, 404);
}

#[test]
fn an_object_created_after_its_owner_is_gone_is_collected() {
    let (mut s, cm, _) = store();
    let d = WriteOptions::default();
    let owner = create_owner(&mut s, &cm);
    s.delete(&cm, "default", "owner", &json!({}), false)
        .unwrap();
    let owned = json!({"metadata": {"name": "late", "ownerReferences": [owner]}});
    s.create(&cm, "default", owned, &d).unwrap();
    assert_eq!(s.get(&cm, "default", "late").unwrap_err().code, 404);
    s.create(&cm, "default", json!({"metadata": {"name": "free"}}), &d)
        .unwrap();
    assert!(s.get(&cm, "default", "free").is_ok());
}

#[test]
fn namespace_deletion() {
    let (mut s, cm, _) = store();
    let ns = s.find_type("", "v1", "namespaces").unwrap();
    let d = WriteOptions::default();
    s.create(&ns, "", json!({"metadata": {"name": "t"}}), &d)
        .unwrap();
    s.create(&cm, "t", json!({"metadata": {"name": "a"}}), &d)
        .unwrap();
    s.delete(&ns, "", "t", &json!({}), false).unwrap();
    assert_eq!(s.get(&cm, "t", "a").unwrap_err().code, 404);
    assert_eq!(s.get(&ns, "", "t").unwrap_err().code, 404);
    assert_eq!(
        s.create(&cm, "t", json!({"metadata": {"name": "a"}}), &d)
            .unwrap_err()
            .code,
        404
    );
}
