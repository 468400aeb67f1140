//! Golden tests for translate: `tests/golden/<case>/input.yaml` renders to
//! `config.json` and `status.yaml` beside it. `UPDATE_GOLDEN=1 cargo test
//! --test golden` rewrites the expected files; review the diff.

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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no golden cases under {}", root.display());
    dirs
}

#[test]
fn golden_cases() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for dir in cases() {
        let input = dir.join("input.yaml");
        for (output, file) in [("config", "config.json"), ("status", "status.yaml")] {
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
        for output in ["config", "status"] {
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
