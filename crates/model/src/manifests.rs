//! Manifests: YAML (or JSON) documents parsed into typed objects, as the
//! API server would take them (namespace defaulted, base64 fields read as Go
//! does, nesting bounded). Pure: the file provider reads the files, and the
//! Kubernetes provider and tests feed values through [`object_from_value`].

mod base64_data;
mod yaml_depth;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::snapshot::{Object, ObjectRef};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Input that cannot be read or parsed. Invalid-but-parseable objects are not
/// errors: they surface in status.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", one_line(path), one_line(message))]
pub struct LoadError {
    pub path: String,
    pub message: String,
}

/// Folds a message onto one line: stderr lines are one error each.
pub fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Object>,
    /// Documents of kinds we do not read, skipped objects, duplicates: one line each.
    pub warnings: Vec<String>,
    /// Where each object was read, to name both places of a duplicate.
    seen: BTreeMap<(&'static str, ObjectRef), String>,
}

/// Parses a YAML stream (JSON is YAML too) into `loaded`. An object read
/// twice (same kind, namespace and name) is warned about; the later one
/// wins, as with `kubectl apply` of the files in order.
pub fn parse_into(text: &str, file: &Path, loaded: &mut Loaded) -> Result<(), LoadError> {
    // Editors on Windows write a byte order mark; YAML allows it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(line) = yaml_depth::first_too_deep_line(text, yaml_depth::MAX_FLOW_DEPTH) {
        return Err(LoadError {
            path: format!("{} (line {line})", file.display()),
            message: format!(
                "YAML nested deeper than {} levels",
                yaml_depth::MAX_FLOW_DEPTH
            ),
        });
    }
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let at = format!("{} (document {})", file.display(), index + 1);
        let value = Value::deserialize(document).map_err(|e| LoadError {
            path: at.clone(),
            message: format!("invalid YAML: {e}"),
        })?;
        if value.is_null() {
            continue;
        }
        match parse_object(value) {
            Ok(Some(object)) => {
                let key = object.key();
                if let Some(first) = loaded.seen.insert(key.clone(), at.clone()) {
                    let (kind, name) = key;
                    loaded.warnings.push(format!(
                        "{at}: {kind} {} is also in {first}; using this later one",
                        display_key(&name)
                    ));
                }
                loaded.objects.push(object)
            }
            Ok(None) => {}
            Err(Unread(what)) => loaded.warnings.push(format!("{at}: ignoring {what}")),
            Err(Skipped(what)) => loaded.warnings.push(format!("{at}: skipping {what}")),
            Err(Invalid(message)) => return Err(LoadError { path: at, message }),
        }
    }
    Ok(())
}

/// `ns/name`, or `name` for a cluster-scoped object.
fn display_key(name: &ObjectRef) -> String {
    if name.namespace.is_empty() {
        name.name.clone()
    } else {
        name.to_string()
    }
}

/// One already-parsed document as an object: `Ok(None)` for a kind we do
/// not read. Other providers (and test harnesses) feed values through here.
pub fn object_from_value(value: Value) -> Result<Option<Object>, String> {
    match parse_object(value) {
        Ok(o) => Ok(o),
        Err(Unread(_)) => Ok(None),
        Err(Invalid(message) | Skipped(message)) => Err(message),
    }
}

enum Failure {
    /// A kind we do not read.
    Unread(String),
    /// An object the API server would have rejected: reported, and the rest
    /// of the input is still served.
    Skipped(String),
    /// Input we cannot make sense of: the whole load fails.
    Invalid(String),
}
use Failure::{Invalid, Skipped, Unread};

/// A `List` is unpacked; kinds we do not read are reported, not fatal.
fn parse_object(mut value: Value) -> Result<Option<Object>, Failure> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind.is_empty() || api_version.is_empty() {
        return Err(Invalid("document has no kind or apiVersion".into()));
    }
    check_metadata(&value, &kind).map_err(Invalid)?;
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let namespaced = kind != "GatewayClass" && kind != "Namespace";
    if namespaced {
        default_namespace(&mut value);
    }
    let base64_field = match (group, kind.as_str()) {
        ("", "Secret") => Some("data"),
        ("", "ConfigMap") => Some("binaryData"),
        _ => None,
    };
    if let Some(field) = base64_field {
        base64_data::canonicalize(&mut value, field)
            .map_err(|e| Skipped(format!("{kind} {}: {e}", describe(&value))))?;
    }
    let object = match (group, kind.as_str()) {
        (GATEWAY_GROUP, "GatewayClass") => Object::GatewayClass(typed(value, &kind)?),
        (GATEWAY_GROUP, "Gateway") => Object::Gateway(typed(value, &kind)?),
        (GATEWAY_GROUP, "HTTPRoute") => Object::HttpRoute(typed(value, &kind)?),
        (GATEWAY_GROUP, "GRPCRoute") => Object::GrpcRoute(typed(value, &kind)?),
        (GATEWAY_GROUP, "ReferenceGrant") => Object::ReferenceGrant(typed(value, &kind)?),
        (GATEWAY_GROUP, "BackendTLSPolicy") => Object::BackendTlsPolicy(typed(value, &kind)?),
        ("", "Namespace") => Object::Namespace(typed(value, &kind)?),
        ("", "Service") => Object::Service(typed(value, &kind)?),
        ("", "Secret") => Object::Secret(typed(value, &kind)?),
        ("", "ConfigMap") => Object::ConfigMap(typed(value, &kind)?),
        ("discovery.k8s.io", "EndpointSlice") => Object::EndpointSlice(typed(value, &kind)?),
        (crate::crd::GROUP, crate::crd::KIND) => Object::KengineInstance(typed(value, &kind)?),
        _ => {
            let name = value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            return Err(Unread(format!(
                "unsupported kind {api_version}/{kind} {name:?}"
            )));
        }
    };
    Ok(Some(object))
}

/// A name or namespace that is not a string would otherwise be defaulted
/// (the namespace to `default`) and serve under a name nobody wrote.
fn check_metadata(value: &Value, kind: &str) -> Result<(), String> {
    for field in ["name", "namespace"] {
        match value.get("metadata").and_then(|m| m.get(field)) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(other) => {
                return Err(format!(
                    "{kind} {}: metadata.{field} must be a string, not {other}",
                    describe(value)
                ));
            }
        }
    }
    Ok(())
}

/// `namespace/name` of a raw object, `?` where missing, for messages.
fn describe(value: &Value) -> String {
    let get = |field: &str| {
        value
            .get("metadata")
            .and_then(|m| m.get(field))
            .and_then(Value::as_str)
    };
    match (get("namespace"), get("name")) {
        (Some(ns), name) => format!("{ns}/{}", name.unwrap_or("?")),
        (None, name) => format!("{:?}", name.unwrap_or("?")),
    }
}

fn default_namespace(value: &mut Value) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        let missing = match meta.get("namespace") {
            None | Some(Value::Null) => true,
            Some(Value::String(ns)) => ns.is_empty(),
            // Rejected by check_metadata.
            Some(_) => false,
        };
        if missing {
            meta.insert("namespace".into(), Value::String("default".into()));
        }
    }
}

/// The typed structs ignore apiVersion, so v1beta1 and v1 of a kind both fit.
fn typed<T: DeserializeOwned>(value: Value, kind: &str) -> Result<T, Failure> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    serde_json::from_value(value).map_err(|e| Invalid(format!("{kind} {name:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str) -> String {
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n")
    }

    fn parse(text: &str) -> Result<Loaded, LoadError> {
        let mut loaded = Loaded::default();
        parse_into(text, Path::new("t.yaml"), &mut loaded).map(|_| loaded)
    }

    #[test]
    fn reads_multi_document_streams_and_defaults_namespace() {
        let loaded = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n# only a comment\n---\n\
             apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
             metadata: {name: g, namespace: x}\nspec: {from: [], to: []}\n",
        )
        .unwrap();
        assert_eq!(loaded.objects.len(), 2);
        let Object::Service(svc) = &loaded.objects[0] else {
            panic!("not a service")
        };
        assert_eq!(svc.metadata.namespace.as_deref(), Some("default"));
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn warns_about_other_kinds() {
        let loaded = parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n").unwrap();
        assert!(loaded.objects.is_empty());
        assert_eq!(loaded.warnings.len(), 1);
        assert!(
            loaded.warnings[0].contains("apps/v1/Deployment \"d\""),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn rejects_unparseable_input_with_location() {
        let e =
            parse("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n: : :\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.yaml (document 2): invalid YAML"),
            "{e}"
        );
        let e = parse("kind: Service\n").unwrap_err();
        assert!(e.to_string().contains("no kind or apiVersion"), "{e}");
        let e = parse("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {listeners: 3}\n")
            .unwrap_err();
        assert!(e.to_string().contains("Gateway \"g\""), "{e}");
    }

    #[test]
    fn deep_nesting_is_rejected_before_parsing() {
        let deep = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\ndata: {{x: {}}}\n",
            "[".repeat(100_000)
        );
        let started = std::time::Instant::now();
        let e = parse(&deep).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.yaml (line 4): YAML nested deeper than 128 levels"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let ok = format!(
            "apiVersion: v1\nkind: Other\nx: {}{}\n",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(parse(&ok).unwrap().warnings.len(), 1);
    }

    #[test]
    fn errors_are_one_line() {
        let e = LoadError {
            path: "a\nb.yaml".into(),
            message: "first\n  second\r\n".into(),
        };
        assert_eq!(e.to_string(), "a b.yaml: first second");
    }

    #[test]
    fn accepts_a_byte_order_mark() {
        let loaded = parse(&format!("\u{feff}{}", ns("a"))).unwrap();
        assert_eq!(loaded.objects.len(), 1);
    }

    #[test]
    fn a_name_or_namespace_must_be_a_string() {
        let e = parse("apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: 123}\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.yaml (document 1): Service \"a\": metadata.namespace must be a string, not 123"
        );
        let e = parse("apiVersion: v1\nkind: Namespace\nmetadata: {name: [x]}\n").unwrap_err();
        assert!(
            e.to_string().contains("metadata.name must be a string"),
            "{e}"
        );
        let loaded =
            parse("apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: null}\n").unwrap();
        assert_eq!(loaded.objects[0].key().1, ObjectRef::new("default", "a"));
    }

    #[test]
    fn wrapped_base64_is_read_and_invalid_base64_skips_only_its_object() {
        // A JSON string with an escaped line break.
        let wrapped = "aGVsbG8g\\nd29ybGQ=";
        let loaded = parse(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata:\n  k: |\n    aGVsbG8g\n    d29ybGQ=\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\nbinaryData: {{k: \"{wrapped}\"}}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: bad, namespace: x}}\ndata: {{k: \"not base64!\"}}\n---\n{}",
            ns("after")
        ))
        .unwrap();
        let secret = match &loaded.objects[0] {
            Object::Secret(s) => s,
            _ => panic!("not a secret"),
        };
        assert_eq!(secret.data.as_ref().unwrap()["k"].0, b"hello world");
        let map = match &loaded.objects[1] {
            Object::ConfigMap(c) => c,
            _ => panic!("not a config map"),
        };
        assert_eq!(map.binary_data.as_ref().unwrap()["k"].0, b"hello world");
        assert_eq!(
            loaded.objects.len(),
            3,
            "the bad Secret is skipped, the rest read"
        );
        assert_eq!(loaded.warnings.len(), 1);
        assert!(
            loaded.warnings[0].starts_with(
                "t.yaml (document 3): skipping Secret x/bad: data[\"k\"] is not base64"
            ),
            "{:?}",
            loaded.warnings
        );
    }
}
