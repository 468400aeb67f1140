//! Golden tests for translate, one behaviour per case, each beside the
//! module it pins: `crates/translate/testdata/<module>/<case>/input.yaml`
//! renders to `config.json` and `status.yaml` beside it, and, in a case
//! that has an `objects.yaml`, to what the operator would apply for the
//! managed fleets (`render -o objects`). They run here, not in the
//! translate crate, because `render` (files, local addresses, the status
//! writer's YAML) is the product's. `UPDATE_GOLDEN=1 cargo test --test
//! golden` rewrites the expected files; review the diff.

use std::path::{Path, PathBuf};

use clap::Parser;
use kengine_gateway::cli::{Cli, Command};
use kengine_gateway::render::render;

fn render_case(input: &Path, output: &str) -> String {
    let cli = Cli::parse_from([
        "kengine-gateway",
        "render",
        "--flavor",
        "caddy",
        "-o",
        output,
        "-f",
        input.to_str().unwrap(),
    ]);
    let Command::Render(args) = cli.command else {
        unreachable!()
    };
    render(&args).unwrap()
}

fn cases() -> Vec<PathBuf> {
    kengine_gateway_test_support::golden_cases()
}

/// What a case pins: `render -o <output>` → `<file>`.
fn outputs(dir: &Path) -> Vec<(&'static str, &'static str)> {
    let mut outputs = vec![("config", "config.json"), ("status", "status.yaml")];
    if dir.join("objects.yaml").exists() {
        outputs.push(("objects", "objects.yaml"));
    }
    outputs
}

#[test]
fn golden_cases() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for dir in cases() {
        let input = dir.join("input.yaml");
        for (output, file) in outputs(&dir) {
            let got = render_case(&input, output);
            let path = dir.join(file);
            if update {
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            if got != want {
                failures.push(format!(
                    "{} differs; rerun with UPDATE_GOLDEN=1 and review the diff",
                    path.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Same input, any document order: byte-identical output.
#[test]
fn output_is_deterministic_and_independent_of_input_order() {
    for dir in cases() {
        let input = dir.join("input.yaml");
        let text = std::fs::read_to_string(&input).unwrap();
        let mut docs: Vec<&str> = text.split("\n---\n").collect();
        docs.reverse();
        let reversed = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
        std::fs::write(reversed.path(), docs.join("\n---\n")).unwrap();
        for (output, _) in outputs(&dir) {
            let a = render_case(&input, output);
            assert_eq!(
                a,
                render_case(&input, output),
                "{} {output}: two renders differ",
                dir.display()
            );
            assert_eq!(
                a,
                render_case(reversed.path(), output),
                "{} {output}: document order changed the output",
                dir.display()
            );
        }
    }
}

/// Every `invoke` names a named route of its own server (Kengine fails the
/// request otherwise), and every named route is invoked.
#[test]
fn invokes_resolve_within_their_server() {
    fn invoked(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if map.get("handler").and_then(|h| h.as_str()) == Some("invoke") {
                    out.push(map["name"].as_str().unwrap().to_string());
                }
                map.values().for_each(|v| invoked(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| invoked(v, out)),
            _ => {}
        }
    }
    let mut proxies = 0;
    for dir in cases() {
        let config: serde_json::Value =
            serde_json::from_str(&render_case(&dir.join("input.yaml"), "config")).unwrap();
        let servers = config["apps"]["http"]["servers"].as_object();
        for (name, server) in servers.into_iter().flatten() {
            let mut names = Vec::new();
            invoked(server, &mut names);
            let named = server["named_routes"].as_object();
            let defined: Vec<&String> = named.into_iter().flat_map(|n| n.keys()).collect();
            for n in &names {
                assert!(
                    defined.contains(&n),
                    "{} server {name}: invoke {n:?} has no named route",
                    dir.display()
                );
            }
            for d in &defined {
                assert!(
                    names.contains(d),
                    "{} server {name}: named route {d:?} is never invoked",
                    dir.display()
                );
            }
            proxies += defined.iter().filter(|d| d.starts_with("proxy ")).count();
        }
    }
    assert!(proxies > 0, "the cases share proxies");
}
