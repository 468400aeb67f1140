//! Ties the Helm chart and `deploy/` to the code. The chart's own tests (lint,
//! render, schema validation) need helm and live in `scripts/chart-test.sh`;
//! these need only the binary: the chart ships the generated CRD, the install
//! manifest carries it and the crate's version, the controller accepts the
//! arguments the chart gives it, and the examples translate.
//!
//! The RBAC tests (`rbac_*`) check the chart's roles against the API calls
//! the code lists in `src/controller/rbac.rs`: the default rendering
//! (deploy/install.yaml) always, other configurations with helm (`$HELM`,
//! `.tools/helm/helm` or the PATH; skipped without one unless
//! `KENGINE_GATEWAY_REQUIRE_HELM` is set, as `scripts/chart-test.sh` does).

use kengine_gateway_test_support as support;

use std::path::PathBuf;
use std::process::Command;

use clap::Parser;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kengine_gateway::cli::{Cli, Command as CliCommand, ControllerArgs};
use kengine_gateway::controller::rbac::{API_CALLS, ApiCall, Scope, When};
use serde::Deserialize;
use serde_json::Value;

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
        .arg("-f")
        .arg(examples.join("grpcroute.yaml"))
        .arg("-f")
        .arg(examples.join("backend-tls.yaml"))
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
        .filter(|doc| doc.contains("\nkind: HTTPRoute\n") || doc.contains("\nkind: GRPCRoute\n"))
        .collect();
    assert_eq!(routes.len(), 4, "{status}");
    let policy = status
        .split("\n---\n")
        .find(|doc| doc.contains("\nkind: BackendTLSPolicy\n"))
        .expect("the BackendTLSPolicy example");
    assert!(
        policy.contains("reason: Accepted") && !policy.contains("status: 'False'"),
        "{policy}"
    );
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

// --- RBAC coverage ------------------------------------------------------------
//
// The chart's (Cluster)Roles against `kengine_gateway::controller::rbac::API_CALLS`,
// the list of every API call the controller makes: in each configuration,
// every call it needs is granted where it makes it, and nothing else is (no
// other resource or verb, no wildcard, no cluster-wide grant of what one
// namespace suffices for, no Lease but the controller's own).

const RELEASE: &str = "kengine-gateway";
const RELEASE_NAMESPACE: &str = "kengine-system";

/// The documents of a YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// What the rendered Deployment runs: the controller's identity and flags.
struct Controller {
    namespace: String,
    service_account: String,
    args: ControllerArgs,
    /// Where the Lease is: `--lease-namespace`, else the pod's namespace
    /// (`POD_NAMESPACE` from the downward API).
    lease_namespace: String,
}

impl Controller {
    fn of(docs: &[Value]) -> Controller {
        let deployment = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let container = pod["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "controller"))
            .expect("a container named controller");
        let args: Vec<String> = container["args"]
            .as_array()
            .expect("controller args")
            .iter()
            .map(|a| a.as_str().expect("string args").to_string())
            .collect();
        let cli =
            Cli::try_parse_from(std::iter::once("kengine-gateway".to_string()).chain(args.clone()))
                .unwrap_or_else(|e| {
                    panic!("the controller rejects the chart's arguments {args:?}: {e}")
                });
        let CliCommand::Controller(parsed) = cli.command else {
            panic!("not a controller command: {args:?}");
        };
        let namespace = deployment["metadata"]["namespace"]
            .as_str()
            .expect("Deployment namespace")
            .to_string();
        let explicit_lease_namespace = args.iter().any(|a| a.starts_with("--lease-namespace"));
        let pod_namespace_env = container["env"].as_array().into_iter().flatten().any(|e| {
            e["name"] == "POD_NAMESPACE"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        });
        let lease_namespace = match (&parsed.lease_namespace, explicit_lease_namespace) {
            (Some(ns), true) => ns.clone(),
            _ if pod_namespace_env => namespace.clone(),
            _ => "default".to_string(),
        };
        Controller {
            service_account: pod["serviceAccountName"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
            namespace,
            args: *parsed,
            lease_namespace,
        }
    }

    fn needs(&self, call: &ApiCall) -> bool {
        match call.when {
            When::Always => true,
            When::ManageFleets => self.args.manage_fleets,
            When::LeaderElect => self.args.leader_elect,
        }
    }

    /// Whether a grant in `namespace` (`None`: cluster-wide) is the one `call`
    /// needs: not narrower (it would miss objects), not wider.
    fn scope_fits(&self, call: &ApiCall, namespace: Option<&str>) -> bool {
        match call.scope {
            Scope::Cluster => namespace.is_none(),
            Scope::Namespaced => namespace == self.args.watch_namespace.as_deref(),
            Scope::OwnNamespace => namespace == Some(self.lease_namespace.as_str()),
        }
    }

    /// Whether a rule's `resourceNames` fit `call`: none, or exactly the
    /// object a one-object call addresses. Calls on one object must be
    /// narrowed to it.
    fn names_fit(&self, call: &ApiCall, names: &[String]) -> bool {
        if call.one_object {
            names == [self.args.lease_name.clone()]
        } else {
            names.is_empty()
        }
    }
}

/// A rule that applies to the controller's ServiceAccount.
struct Grant {
    /// `None`: cluster-wide (a ClusterRole bound by a ClusterRoleBinding).
    namespace: Option<String>,
    /// `ClusterRole name` or `Role namespace/name`, for messages.
    role: String,
    rule: PolicyRule,
}

/// Every rule bound to the controller, and the problems found on the way
/// (wildcards, unbound roles, bindings to roles that are not rendered).
fn grants(docs: &[Value], controller: &Controller) -> (Vec<Grant>, Vec<String>) {
    let mut problems = Vec::new();
    let mut roles: Vec<(String, Option<String>, String, Vec<PolicyRule>)> = Vec::new();
    for doc in docs {
        match doc["kind"].as_str() {
            Some("ClusterRole") => {
                let role: ClusterRole = serde_json::from_value(doc.clone()).expect("a ClusterRole");
                if role.aggregation_rule.is_some() {
                    problems.push(format!(
                        "ClusterRole {:?} aggregates other roles",
                        role.metadata.name
                    ));
                }
                roles.push((
                    "ClusterRole".into(),
                    None,
                    role.metadata.name.unwrap_or_default(),
                    role.rules.unwrap_or_default(),
                ));
            }
            Some("Role") => {
                let role: Role = serde_json::from_value(doc.clone()).expect("a Role");
                roles.push((
                    "Role".into(),
                    role.metadata.namespace,
                    role.metadata.name.unwrap_or_default(),
                    role.rules.unwrap_or_default(),
                ));
            }
            _ => {}
        }
    }
    for (kind, namespace, name, rules) in &roles {
        for rule in rules {
            let lists = [
                &rule.verbs,
                &rule.api_groups.clone().unwrap_or_default(),
                &rule.resources.clone().unwrap_or_default(),
                &rule.resource_names.clone().unwrap_or_default(),
            ];
            if lists.iter().any(|l| l.iter().any(|x| x.contains('*'))) {
                problems.push(format!(
                    "{kind} {namespace:?} {name}: a wildcard in {rule:?}"
                ));
            }
            if rule
                .non_resource_urls
                .as_ref()
                .is_some_and(|u| !u.is_empty())
            {
                problems.push(format!(
                    "{kind} {name}: nonResourceURLs {rule:?} (discovery is built in)"
                ));
            }
        }
    }

    let is_controller = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount"
                && s.name == controller.service_account
                && s.namespace.as_deref() == Some(controller.namespace.as_str())
        })
    };
    let mut bound = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let mut bind = |role_kind: &str,
                    role_namespace: Option<&str>,
                    role_name: &str,
                    at: Option<&str>,
                    binding: String,
                    problems: &mut Vec<String>| {
        let Some((kind, namespace, name, rules)) = roles.iter().find(|(k, ns, n, _)| {
            k == role_kind && ns.as_deref() == role_namespace && n == role_name
        }) else {
            problems.push(format!(
                "{binding} refers to {role_kind} {role_name}, which the chart does not render"
            ));
            return;
        };
        bound.insert((kind.clone(), namespace.clone(), name.clone()));
        let role = match namespace {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        };
        for rule in rules {
            out.push(Grant {
                namespace: at.map(str::to_string),
                role: role.clone(),
                rule: rule.clone(),
            });
        }
    };
    for doc in docs {
        match doc["kind"].as_str() {
            Some("ClusterRoleBinding") => {
                let b: ClusterRoleBinding =
                    serde_json::from_value(doc.clone()).expect("a ClusterRoleBinding");
                if is_controller(&b.subjects) {
                    let name =
                        format!("ClusterRoleBinding {}", b.metadata.name.unwrap_or_default());
                    bind(
                        &b.role_ref.kind,
                        None,
                        &b.role_ref.name,
                        None,
                        name,
                        &mut problems,
                    );
                }
            }
            Some("RoleBinding") => {
                let b: RoleBinding = serde_json::from_value(doc.clone()).expect("a RoleBinding");
                if is_controller(&b.subjects) {
                    let ns = b.metadata.namespace.clone().unwrap_or_default();
                    let name = format!("RoleBinding {ns}/{}", b.metadata.name.unwrap_or_default());
                    let role_ns = (b.role_ref.kind == "Role").then_some(ns.as_str());
                    bind(
                        &b.role_ref.kind,
                        role_ns,
                        &b.role_ref.name,
                        Some(&ns),
                        name,
                        &mut problems,
                    );
                }
            }
            _ => {}
        }
    }
    for (kind, namespace, name, _) in &roles {
        if !bound.contains(&(kind.clone(), namespace.clone(), name.clone())) {
            problems.push(format!(
                "{kind} {namespace:?} {name} is not bound to the controller"
            ));
        }
    }
    (out, problems)
}

fn resource_name(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{group}/{resource}")
    }
}

/// Problems of one rendering's RBAC against `API_CALLS`; empty when it
/// grants exactly what the controller it runs needs.
fn rbac_problems(docs: &[Value]) -> Vec<String> {
    let controller = Controller::of(docs);
    let (grants, mut problems) = grants(docs, &controller);
    let where_ = |ns: Option<&str>| match ns {
        None => "cluster-wide".to_string(),
        Some(ns) => format!("in namespace {ns}"),
    };
    let needed: Vec<&ApiCall> = API_CALLS.iter().filter(|c| controller.needs(c)).collect();

    // Nothing beyond the table.
    for g in &grants {
        let names = g.rule.resource_names.clone().unwrap_or_default();
        for group in g.rule.api_groups.iter().flatten() {
            for resource in g.rule.resources.iter().flatten() {
                for verb in &g.rule.verbs {
                    let covered = needed.iter().any(|c| {
                        c.group == group
                            && c.resource == resource
                            && c.verbs.contains(&verb.as_str())
                            && controller.scope_fits(c, g.namespace.as_deref())
                            && controller.names_fit(c, &names)
                    });
                    if !covered {
                        problems.push(format!(
                            "{}: grants {verb} {} {}{}, which no call in src/controller/rbac.rs needs in this configuration",
                            g.role,
                            resource_name(group, resource),
                            where_(g.namespace.as_deref()),
                            if names.is_empty() { String::new() } else { format!(" (resourceNames {names:?})") },
                        ));
                    }
                }
            }
        }
    }

    // Every call granted.
    for call in &needed {
        for verb in call.verbs {
            let granted = grants.iter().any(|g| {
                let names = g.rule.resource_names.clone().unwrap_or_default();
                g.rule.api_groups.iter().flatten().any(|x| x == call.group)
                    && g.rule
                        .resources
                        .iter()
                        .flatten()
                        .any(|x| x == call.resource)
                    && g.rule.verbs.iter().any(|x| x == verb)
                    && controller.scope_fits(call, g.namespace.as_deref())
                    && controller.names_fit(call, &names)
            });
            if !granted {
                let wanted = match call.scope {
                    Scope::Cluster => "cluster-wide".to_string(),
                    Scope::Namespaced => where_(controller.args.watch_namespace.as_deref()),
                    Scope::OwnNamespace => where_(Some(&controller.lease_namespace)),
                };
                let named = if call.one_object {
                    format!(" (resourceNames [{:?}])", controller.args.lease_name)
                } else {
                    String::new()
                };
                problems.push(format!(
                    "{verb} {} {wanted}{named} is not granted; {} needs it",
                    resource_name(call.group, call.resource),
                    call.by
                ));
            }
        }
    }
    problems
}

fn assert_rbac(name: &str, yaml: &str) -> Controller {
    let docs = documents(yaml);
    let problems = rbac_problems(&docs);
    assert!(
        problems.is_empty(),
        "{name}: the chart's RBAC does not match src/controller/rbac.rs:\n  {}",
        problems.join("\n  ")
    );
    Controller::of(&docs)
}

fn helm_template(helm: &PathBuf, set: &[&str]) -> String {
    let mut cmd = Command::new(helm);
    cmd.args([
        "template",
        RELEASE,
        "charts/kengine-gateway",
        "--namespace",
        RELEASE_NAMESPACE,
    ])
    .current_dir(repo());
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("running helm");
    assert!(
        out.status.success(),
        "helm template --set {set:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn rbac_of_the_install_manifest_is_exactly_the_api_calls() {
    // deploy/install.yaml is the chart with default values (chart-test.sh
    // checks it is current), so this needs no helm.
    let controller = assert_rbac("deploy/install.yaml", &read("deploy/install.yaml"));
    assert!(
        controller.args.manage_fleets,
        "managed fleets are on by default"
    );
    assert!(controller.args.leader_elect);
    assert_eq!(controller.args.watch_namespace, None);
}

#[test]
fn rbac_of_every_configuration_is_exactly_the_api_calls() {
    let Some(helm) = support::helm::bin() else {
        assert!(
            std::env::var_os("KENGINE_GATEWAY_REQUIRE_HELM").is_none(),
            "KENGINE_GATEWAY_REQUIRE_HELM is set, but there is no helm: set HELM or run ./scripts/chart-test.sh"
        );
        eprintln!("skipped: no helm (set HELM, or run ./scripts/chart-test.sh, which installs it)");
        return;
    };
    // (values, --manage-fleets, --leader-elect, --watch-namespace)
    let configurations: &[(&[&str], bool, bool, Option<&str>)] = &[
        (&[], true, true, None),
        (&["managedFleets.enabled=false"], false, true, None),
        (&["watchNamespace=apps"], true, true, Some("apps")),
        (
            &["watchNamespace=apps", "managedFleets.enabled=false"],
            false,
            true,
            Some("apps"),
        ),
        (
            &["replicas=1", "leaderElection.enabled=false"],
            true,
            false,
            None,
        ),
        (
            &[
                "leaderElection.leaseName=other-lease",
                "fullnameOverride=edge",
            ],
            true,
            true,
            None,
        ),
    ];
    for (set, manage_fleets, leader_elect, watch_namespace) in configurations {
        let name = if set.is_empty() {
            "helm template (defaults)".to_string()
        } else {
            format!("helm template --set {}", set.join(","))
        };
        let controller = assert_rbac(&name, &helm_template(&helm, set));
        assert_eq!(
            controller.args.manage_fleets, *manage_fleets,
            "{name}: --manage-fleets"
        );
        assert_eq!(
            controller.args.leader_elect, *leader_elect,
            "{name}: --leader-elect"
        );
        assert_eq!(
            controller.args.watch_namespace.as_deref(),
            *watch_namespace,
            "{name}: --watch-namespace"
        );
    }
}

/// The check fails on a missing verb, an extra verb, a wildcard, a grant
/// wider than needed and a Lease grant not narrowed to the Lease.
#[test]
fn rbac_check_catches_a_drift() {
    let docs = documents(&read("deploy/install.yaml"));
    assert!(rbac_problems(&docs).is_empty());
    let rules = |docs: &mut Vec<Value>, kind: &str, name_suffix: &str| -> Value {
        let role = docs
            .iter_mut()
            .find(|d| {
                d["kind"] == kind
                    && d["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.ends_with(name_suffix))
            })
            .unwrap_or_else(|| panic!("no {kind} *{name_suffix}"));
        role["rules"].take()
    };
    let edit = |f: &dyn Fn(&mut Vec<Value>)| {
        let mut docs = docs.clone();
        f(&mut docs);
        rbac_problems(&docs)
    };
    let set_rules = |docs: &mut Vec<Value>, kind: &str, suffix: &str, rules: Value| {
        let role = docs
            .iter_mut()
            .find(|d| {
                d["kind"] == kind
                    && d["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.ends_with(suffix))
            })
            .unwrap();
        role["rules"] = rules;
    };
    let mutate = |docs: &mut Vec<Value>, kind: &str, suffix: &str, f: &dyn Fn(&mut Vec<Value>)| {
        let mut r = rules(docs, kind, suffix);
        f(r.as_array_mut().unwrap());
        set_rules(docs, kind, suffix, r);
    };
    let expect = |problems: Vec<String>, needle: &str| {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "expected a problem containing {needle:?}, got {problems:?}"
        );
    };

    // A verb removed: `patch` on gateways/status.
    expect(
        edit(&|docs| {
            mutate(docs, "ClusterRole", RELEASE, &|rules| {
                for r in rules.iter_mut() {
                    if r["resources"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x == "gateways/status")
                    {
                        r["verbs"] = serde_json::json!([]);
                    }
                }
            })
        }),
        "patch gateway.networking.k8s.io/gateways/status cluster-wide is not granted",
    );
    // A verb added: `get` on Secrets.
    expect(
        edit(&|docs| {
            mutate(docs, "ClusterRole", RELEASE, &|rules| {
                rules.push(serde_json::json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}))
            })
        }),
        "grants get secrets cluster-wide",
    );
    // A wildcard.
    expect(
        edit(&|docs| {
            mutate(docs, "ClusterRole", RELEASE, &|rules| {
                rules.push(serde_json::json!({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["list"]}))
            })
        }),
        "a wildcard",
    );
    // The Lease rule without resourceNames (any Lease in the namespace).
    expect(
        edit(&|docs| {
            mutate(docs, "Role", "-leader-election", &|rules| {
                for r in rules.iter_mut() {
                    r.as_object_mut().unwrap().remove("resourceNames");
                }
            })
        }),
        "grants get coordination.k8s.io/leases in namespace kengine-system, which no call",
    );
    // Managed fleets off, the operator's permissions left in.
    expect(
        edit(&|docs| {
            let d = docs.iter_mut().find(|d| d["kind"] == "Deployment").unwrap();
            let args = d["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array_mut()
                .unwrap();
            args.retain(|a| {
                let a = a.as_str().unwrap();
                ![
                    "--manage-fleets",
                    "--kengine-image",
                    "--admin-proxy-image",
                    "--operator-",
                    "--admin-c",
                ]
                .iter()
                .any(|p| a.starts_with(p))
            });
            args.push("--manage-fleets=false".into());
        }),
        "grants delete apps/deployments cluster-wide, which no call",
    );
}

/// The table lists every Gateway API kind the controller watches and every
/// kind the operator generates, with the verbs those need.
#[test]
fn api_calls_cover_the_watched_and_generated_kinds() {
    let plural = |kind: &str| {
        let lower = kind.to_ascii_lowercase();
        if let Some(stem) = lower.strip_suffix('y')
            && !stem.ends_with(['a', 'e', 'o', 'u'])
        {
            format!("{stem}ies")
        } else if lower.ends_with('s') {
            format!("{lower}es")
        } else {
            format!("{lower}s")
        }
    };
    let verbs_of = |group: &str, resource: &str, whens: &[When]| -> Vec<&str> {
        API_CALLS
            .iter()
            .filter(|c| c.group == group && c.resource == resource && whens.contains(&c.when))
            .flat_map(|c| c.verbs.iter().copied())
            .collect()
    };
    for (kind, _) in kengine_gateway::providers::kubernetes::GATEWAY_KINDS {
        let verbs = verbs_of("gateway.networking.k8s.io", &plural(kind), &[When::Always]);
        for v in ["list", "watch"] {
            assert!(verbs.contains(&v), "API_CALLS: no {v} on {kind}");
        }
    }
    for (api_version, kind) in kengine_gateway::operator::OWNED_KINDS {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let verbs = verbs_of(group, &plural(kind), &[When::Always, When::ManageFleets]);
        // Server-side apply that may create the object needs `create` too.
        for v in ["list", "watch", "create", "patch", "delete"] {
            assert!(
                verbs.contains(&v),
                "API_CALLS: no {v} on {kind} with managed fleets"
            );
        }
    }
    let kengine = verbs_of(
        kengine_gateway::crd::GROUP,
        "kengineinstances",
        &[When::Always, When::ManageFleets],
    );
    for v in ["list", "watch", "create", "patch", "delete"] {
        assert!(
            kengine.contains(&v),
            "API_CALLS: no {v} on KengineInstances"
        );
    }
}

/// The images are not built here (no container engine); what can be checked
/// is that they agree with the build and with the pods the operator makes.
#[test]
fn containerfiles_match_the_build_and_the_managed_pods() {
    let operator = read("Containerfile");
    assert!(
        operator.contains("cargo build --release --locked --bin kengine-gateway"),
        "the operator image must build the kengine-gateway binary"
    );
    assert!(
        operator.contains("target/release/kengine-gateway /out/kengine-gateway")
            && operator
                .contains("COPY --from=build /out/kengine-gateway /usr/local/bin/kengine-gateway")
            && operator.contains(r#"ENTRYPOINT ["/usr/local/bin/kengine-gateway"]"#),
        "the operator image must ship what `cargo build --release` writes"
    );
    let manifest = read("Cargo.toml");
    assert!(manifest.contains("default-run = \"kengine-gateway\""));
    assert!(
        !manifest.contains("openssl"),
        "the static musl build has no OpenSSL"
    );

    let kengine = read("Containerfile.kengine");
    assert!(kengine.contains("COPY --from=build /out/kengine /usr/bin/kengine"));
    assert!(kengine.contains("USER 65532:65532"));
    // The managed pods run that binary as that user, and the admin-proxy
    // sidecar from the operator image (whose entrypoint is the binary).
    let template = read("src/operator/testdata/deployment.yaml");
    assert!(
        template.contains("- /usr/bin/kengine\n"),
        "pods run /usr/bin/kengine"
    );
    assert!(template.contains("runAsUser: 65532"));
    assert!(template.contains("- admin-proxy\n"));
}

/// The values table of the chart README and `values.schema.json` name the
/// same values: none undocumented, none documented that does not exist.
#[test]
fn readme_values_table_matches_the_schema() {
    fn leaves(prefix: &str, schema: &Value, root: &Value, out: &mut Vec<String>) {
        let schema = match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/")) {
            Some(pointer) => root.pointer(&format!("/{pointer}")).unwrap_or(schema),
            None => schema,
        };
        match schema["properties"].as_object() {
            Some(props) if !props.is_empty() => {
                for (name, sub) in props {
                    let path = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    leaves(&path, sub, root, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let schema: Value =
        serde_json::from_str(&read("charts/kengine-gateway/values.schema.json")).unwrap();
    let mut values = Vec::new();
    leaves("", &schema, &schema, &mut values);

    let readme = read("charts/kengine-gateway/README.md");
    let section = readme
        .split("## Values")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Values section");
    // First cell of each row: `a.b.c`, `.d` (a sibling), `a.*` (a subtree).
    let mut documented: Vec<String> = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cell = row.split('|').nth(1).unwrap_or_default();
        let mut base = String::new();
        for span in cell.split('`').skip(1).step_by(2) {
            let path = match span.strip_prefix('.') {
                Some(sibling) => format!("{base}.{sibling}"),
                None => span.to_string(),
            };
            let path = path.trim_end_matches(".*").to_string();
            if !span.starts_with('.') {
                base = path
                    .rsplit_once('.')
                    .map(|(b, _)| b.to_string())
                    .unwrap_or_default();
            }
            documented.push(path);
        }
    }
    let covers = |doc: &str, value: &str| value == doc || value.starts_with(&format!("{doc}."));
    let undocumented: Vec<&String> = values
        .iter()
        .filter(|v| !documented.iter().any(|d| covers(d, v)))
        .collect();
    let unknown: Vec<&String> = documented
        .iter()
        .filter(|d| !values.iter().any(|v| covers(d, v)))
        .collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "chart README values table out of sync with values.schema.json:\n\
         undocumented: {undocumented:?}\ndocumented but not in the schema: {unknown:?}"
    );
}
