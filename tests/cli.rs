//! The binary as users and the acceptance harness run it.

use kengine_gateway_test_support as support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_kengine-gateway");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn render_prints_one_config_and_warns_about_other_kinds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    write(dir.path(), "class.yaml", CLASS);
    write(
        &dir.path().join("nested"),
        "gw.yml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\n\
         spec: {gatewayClassName: kengine, listeners: [{name: h, protocol: HTTP, port: 8080}]}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
    );
    let (code, stdout, stderr) = run(&[
        "render",
        "-f",
        dir.path().to_str().unwrap(),
        "--flavor",
        "caddy",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let config: serde_json::Value =
        serde_json::from_str(&stdout).expect("stdout is one JSON document");
    assert_eq!(
        config["apps"]["http"]["servers"]["port-8080"]["listen"][0],
        ":8080"
    );
    assert!(
        stderr.contains("ignoring unsupported kind apps/v1/Deployment \"web\""),
        "{stderr}"
    );

    let (code, stdout, _) = run(&[
        "render",
        "-f",
        dir.path().to_str().unwrap(),
        "--output",
        "status",
    ]);
    assert_eq!(code, 0);
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let gw = docs.iter().find(|d| d["kind"] == "Gateway").unwrap();
    assert_eq!(
        gw["metadata"]["namespace"], "default",
        "objects without a namespace are in default"
    );
    assert_eq!(gw["status"]["conditions"][0]["type"], "Accepted");
    assert_eq!(gw["status"]["conditions"][0]["status"], "True");
}

#[test]
fn unreadable_or_unparseable_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let (code, stdout, stderr) = run(&["render", "-f", missing.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("missing.yaml"), "{stderr}");

    let bad = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: [\n",
    );
    let (code, _, stderr) = run(&["render", "-f", &bad]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("bad.yaml (document 1): invalid YAML"),
        "{stderr}"
    );

    let (code, _, stderr) = run(&["render", "-f", &bad, "--flavor", "nginx"]);
    assert_eq!(code, 2, "clap rejects bad arguments");
    assert!(
        stderr.contains("invalid value 'nginx'") && stderr.contains("kengine, caddy"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let (code, _, stderr) = run(&["standalone", "-f", &bad]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--kengine") && stderr.contains("--admin"),
        "{stderr}"
    );
}

/// `run`, killed after `limit`: a hang is a failure, not a stuck suite.
fn run_within(limit: Duration, args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn hostile_input_files_are_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let loops = dir.path().join("loops");
    std::fs::create_dir(&loops).unwrap();
    write(
        &loops,
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    );
    std::os::unix::fs::symlink(".", loops.join("l1")).unwrap();
    std::os::unix::fs::symlink(".", loops.join("l2")).unwrap();
    let fifo = dir.path().join("fifo.yaml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let deep = write(
        dir.path(),
        "deep.yaml",
        &format!("a: {}\n", "[".repeat(100_000)),
    );
    let newline = dir.path().join("two\nlines.yaml");
    let cases = [
        (loops.to_str().unwrap(), "directory loop"),
        (fifo.to_str().unwrap(), "not a regular file (a FIFO)"),
        ("/dev/zero", "not a regular file (a device)"),
        (&deep, "YAML nested deeper than 128 levels"),
        (newline.to_str().unwrap(), "No such file"),
    ];
    for (path, expected) in cases {
        let (code, stdout, stderr) = run_within(Duration::from_secs(10), &["render", "-f", path]);
        assert_eq!(code, 2, "{path}: {stderr}");
        assert!(stdout.is_empty(), "{path}");
        assert_eq!(stderr.lines().count(), 1, "{path}: {stderr}");
        assert!(stderr.contains(expected), "{path}: {stderr}");
    }
}

#[test]
fn warnings_name_duplicates_and_a_missing_class_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\n\
         spec: {gatewayClassName: other, listeners: [{name: h, protocol: HTTP, port: 8080}]}\n";
    let a = write(dir.path(), "a.yaml", gateway);
    let b = write(
        dir.path(),
        "b.yaml",
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: other}}\n\
             spec: {{controllerName: example.com/other}}\n---\n{gateway}"
        ),
    );
    let (code, stdout, stderr) = run(&["render", "-f", &a, "-f", &b]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"apps\""), "{stdout}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes into a pipe: {stderr:?}"
    );
    assert!(
        stderr.contains(&format!(
            "{b} (document 2): Gateway default/gw is also in {a} (document 1); using this later one"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "no GatewayClass has controllerName kengine.khulnasoft.com/gateway-controller, \
             so no Gateway is served; the input has other (example.com/other)"
        ),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["render", "-f", &write(dir.path(), "c.yaml", CLASS)]);
    assert_eq!(code, 0);
    assert!(!stderr.contains("no GatewayClass"), "{stderr}");
}

#[test]
fn invalid_objects_are_status_not_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "in.yaml",
        &format!(
            "{CLASS}apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
             spec: {{gatewayClassName: kengine, listeners: [{{name: u, protocol: UDP, port: 53}}]}}\n"
        ),
    );
    let (code, stdout, _) = run(&["render", "-f", &f, "-o", "status"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("reason: UnsupportedProtocol"), "{stdout}");
}

/// standalone: serves the files, follows edits, survives a bad edit, and
/// stops its Kengine on SIGTERM.
#[tokio::test]
async fn standalone_serves_reloads_and_shuts_down() {
    let v1 = echo("127.0.20.2", "v1").await;
    let v2 = echo("127.0.20.3", "v2").await;
    let dir = tempfile::tempdir().unwrap();
    let route = |backend: &str, port: u16| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\n\
             spec: {{parentRefs: [{{name: gw}}], rules: [{{backendRefs: [{{name: {backend}, port: {port}}}]}}]}}\n"
        )
    };
    let base = format!(
        "{CLASS}apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
         spec: {{gatewayClassName: kengine, addresses: [{{value: 127.0.20.1}}], listeners: [{{name: h, protocol: HTTP, port: 18080}}]}}\n---\n{}{}",
        service("v1", v1),
        service("v2", v2)
    );
    write(dir.path(), "base.yaml", &base);
    let route_file = write(dir.path(), "route.yaml", &route("v1", v1.port()));
    let status_file = dir.path().join("status.out");
    let mut child = Command::new(BIN)
        .args([
            "standalone",
            "-f",
            dir.path().to_str().unwrap(),
            "--kengine",
        ])
        .arg(caddy_bin())
        .args(["--flavor", "caddy", "--debounce-ms", "50", "--status-file"])
        .arg(&status_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let gw: SocketAddr = "127.0.20.1:18080".parse().unwrap();
    let c = http();
    let wait_for = |pod: &'static str| {
        let c = c.clone();
        async move {
            let start = Instant::now();
            loop {
                if let Ok(resp) = c.get(format!("http://{gw}/")).send().await {
                    let body = resp.text().await.unwrap_or_default();
                    if body.contains(&format!("\"pod\":\"{pod}\"")) {
                        return;
                    }
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "{pod} never answered"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for("v1").await;
    let status = std::fs::read_to_string(&status_file).unwrap();
    assert!(
        status.contains("kind: HTTPRoute") && status.contains("reason: Accepted"),
        "{status}"
    );

    std::fs::write(&route_file, route("v2", v2.port())).unwrap();
    wait_for("v2").await;

    // A broken edit is refused; the last good config keeps serving.
    std::fs::write(&route_file, "kind: [").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&c, gw, "x", "/").await, (200, Some("v2".into())));

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = child.wait().unwrap();
    assert!(exit.success(), "standalone exits cleanly: {exit}");
    assert!(
        c.get(format!("http://{gw}/")).send().await.is_err(),
        "kengine stopped with standalone"
    );
}
