//! The kinds the Kubernetes API emulator serves: a fixed table of built-in
//! kinds plus the served versions of stored CustomResourceDefinitions.

use std::cmp::Ordering;

use serde_json::Value;

/// One resource at one group/version.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    /// Has a `status` subresource.
    pub status: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Name of the CustomResourceDefinition it comes from.
    pub crd: Option<String>,
    /// `openAPIV3Schema` of this version (custom resources only).
    pub schema: Option<Value>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage key shared by all versions: `plural` or `plural.group`.
    pub fn group_resource(&self) -> String {
        group_resource(&self.group, &self.plural)
    }
}

pub fn group_resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

pub const NAMESPACES: &str = "namespaces";
pub const SERVICES: &str = "services";
pub const DEPLOYMENTS: &str = "deployments.apps";
pub const CRDS: &str = "customresourcedefinitions.apiextensions.k8s.io";

/// (group, version, plural, kind, namespaced, status subresource, short names)
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    bool,
    &'static [&'static str],
);

/// The built-in kinds.
const BUILTIN: &[Builtin] = &[
    ("", "v1", "namespaces", "Namespace", false, true, &["ns"]),
    ("", "v1", "nodes", "Node", false, true, &["no"]),
    ("", "v1", "pods", "Pod", true, true, &["po"]),
    ("", "v1", "services", "Service", true, true, &["svc"]),
    ("", "v1", "endpoints", "Endpoints", true, false, &["ep"]),
    ("", "v1", "secrets", "Secret", true, false, &[]),
    ("", "v1", "configmaps", "ConfigMap", true, false, &["cm"]),
    ("", "v1", "events", "Event", true, false, &["ev"]),
    (
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        false,
        &["sa"],
    ),
    (
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        true,
        &["deploy"],
    ),
    ("apps", "v1", "daemonsets", "DaemonSet", true, true, &["ds"]),
    (
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        true,
        true,
        &["rs"],
    ),
    (
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        true,
        true,
        &["sts"],
    ),
    (
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
        false,
        &[],
    ),
    (
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        true,
        false,
        &[],
    ),
    (
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        false,
        &["ev"],
    ),
    (
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        true,
        &["pdb"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        false,
        &["netpol"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        true,
        true,
        &["ing"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "IngressClass",
        false,
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        false,
        &[],
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        true,
        &["crd", "crds"],
    ),
];

pub fn builtin_types() -> Vec<ResourceType> {
    BUILTIN
        .iter()
        .map(
            |&(group, version, plural, kind, namespaced, status, short)| ResourceType {
                group: group.into(),
                version: version.into(),
                plural: plural.into(),
                singular: kind.to_lowercase(),
                kind: kind.into(),
                list_kind: format!("{kind}List"),
                namespaced,
                status,
                short_names: short.iter().map(|s| s.to_string()).collect(),
                categories: Vec::new(),
                crd: None,
                schema: None,
            },
        )
        .collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn strings_at(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The served versions of a CustomResourceDefinition, or why it is invalid.
pub fn crd_types(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let name = str_at(crd, "/metadata/name").unwrap_or_default();
    let group = str_at(crd, "/spec/group").ok_or("spec.group: Required value")?;
    let plural = str_at(crd, "/spec/names/plural").ok_or("spec.names.plural: Required value")?;
    let kind = str_at(crd, "/spec/names/kind").ok_or("spec.names.kind: Required value")?;
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let namespaced = match str_at(crd, "/spec/scope") {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err("spec.scope: Unsupported value: must be Namespaced or Cluster".into()),
    };
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or("spec.versions: Invalid value: must have at least one version")?;
    let mut out = Vec::new();
    for v in versions {
        let version = str_at(v, "/name").ok_or("spec.versions[].name: Required value")?;
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        out.push(ResourceType {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: str_at(crd, "/spec/names/singular")
                .map(String::from)
                .unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.into(),
            list_kind: str_at(crd, "/spec/names/listKind")
                .map(String::from)
                .unwrap_or_else(|| format!("{kind}List")),
            namespaced,
            status: v.pointer("/subresources/status").is_some(),
            short_names: strings_at(crd, "/spec/names/shortNames"),
            categories: strings_at(crd, "/spec/names/categories"),
            crd: Some(name.to_string()),
            schema: v.pointer("/schema/openAPIV3Schema").cloned(),
        });
    }
    Ok(out)
}

/// Kubernetes version priority: GA before beta before alpha, higher numbers
/// first, anything else last in alphabetical order.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn key(v: &str) -> (u8, i64, i64, String) {
        let parsed = v.strip_prefix('v').and_then(|rest| {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            let major: i64 = digits.parse().ok()?;
            let tail = &rest[digits.len()..];
            if tail.is_empty() {
                return Some((0, major, 0));
            }
            for (prefix, class) in [("beta", 1), ("alpha", 2)] {
                if let Some(n) = tail.strip_prefix(prefix) {
                    return Some((class, major, n.parse().ok()?));
                }
            }
            None
        });
        match parsed {
            Some((class, major, minor)) => (class, -major, -minor, String::new()),
            None => (3, 0, 0, v.to_string()),
        }
    }
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_priority() {
        let mut v = vec![
            "v1alpha2", "foo", "v1beta1", "v2", "v1", "v1alpha3", "v10beta1",
        ];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            v,
            vec![
                "v2", "v1", "v10beta1", "v1beta1", "v1alpha3", "v1alpha2", "foo"
            ]
        );
    }
}
