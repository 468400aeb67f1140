//! `standalone` as a process: it owns its Kengine (restarts it, takes it
//! down with it) and its files (quiet periods, in-place rewrites, its own
//! status file). Real Caddy; addresses 127.0.60.x-127.0.67.x.

use kengine_gateway_test_support as support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_kengine-gateway");

fn route(name: &str, backend: SocketAddr, path: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\n\
         spec: {{parentRefs: [{{name: gw}}], rules: [{{matches: [{{path: {{type: PathPrefix, value: {path}}}}}], \
         backendRefs: [{{name: {name}, port: {}}}]}}]}}\n---\n{}",
        backend.port(),
        service(name, backend)
    )
}

fn gateway(ip: &str, listeners: &str) -> String {
    format!(
        "{CLASS}apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
         spec: {{gatewayClassName: kengine, addresses: [{{value: {ip}}}], listeners: [{listeners}]}}\n---\n"
    )
}

const HTTP_18080: &str = "{name: h, protocol: HTTP, port: 18080}";

/// A running `standalone`, its stderr in a file.
struct Standalone {
    child: Child,
    log: PathBuf,
}

impl Standalone {
    fn start(dir: &Path, tmp: &Path, inputs: &[&Path], extra: &[&str]) -> Self {
        Self::start_with(dir, tmp, inputs, &caddy_bin(), extra)
    }

    fn start_with(dir: &Path, tmp: &Path, inputs: &[&Path], bin: &Path, extra: &[&str]) -> Self {
        let log = dir.join(format!(
            "standalone-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut command = Command::new(BIN);
        command.arg("standalone");
        for input in inputs {
            command.arg("-f").arg(input);
        }
        let child = command
            .arg("--kengine")
            .arg(bin)
            .args(["--flavor", "caddy"])
            .args(extra)
            .env("TMPDIR", tmp)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Standalone { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times the files were read and a push decided.
    fn syncs(&self) -> usize {
        let log = self.log_text();
        ["config loaded", "config unchanged", "not reloading"]
            .iter()
            .map(|m| log.matches(m).count())
            .sum()
    }

    fn pushes(&self) -> usize {
        self.log_text().matches("config loaded").count()
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "standalone still running after {limit:?}: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The Kengine it started: its only child process.
    fn kengine_pid(&self) -> u32 {
        let start = Instant::now();
        loop {
            if let Some(pid) = children(self.child.id()).first() {
                return *pid;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no child");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Live (not zombie) children of `parent`, from /proc.
fn children(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(state, ppid)| ppid == parent && state != 'Z'))
        .collect()
}

/// State and parent of a process, if it exists.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn answers(c: &reqwest::Client, gw: SocketAddr, path: &str, pod: &str) -> bool {
    match c.get(format!("http://{gw}{path}")).send().await {
        Ok(resp) => resp
            .text()
            .await
            .unwrap_or_default()
            .contains(&format!("\"pod\":\"{pod}\"")),
        Err(_) => false,
    }
}

fn stale_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("kengine-gateway-")
        })
        .map(|e| e.path())
        .collect()
}

/// Item 10: kill -9 of the Kengine child is noticed; a new one is started
/// and gets the last good config.
#[tokio::test]
async fn a_killed_kengine_is_restarted_with_the_last_config() {
    let v1 = echo("127.0.60.2", "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.yaml");
    std::fs::write(
        &input,
        gateway("127.0.60.1", HTTP_18080) + &route("v1", v1, "/"),
    )
    .unwrap();
    let sa = Standalone::start(dir.path(), dir.path(), &[&input], &[]);
    let gw: SocketAddr = "127.0.60.1:18080".parse().unwrap();
    let c = http();
    wait_until("v1 serves", Duration::from_secs(20), async || {
        answers(&c, gw, "/", "v1").await
    })
    .await;

    let first = sa.kengine_pid();
    assert!(
        Command::new("kill")
            .args(["-KILL", &first.to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_until("v1 serves again", Duration::from_secs(20), async || {
        answers(&c, gw, "/", "v1").await
    })
    .await;
    let second = sa.kengine_pid();
    assert_ne!(first, second, "a new kengine serves");
    assert!(
        !alive(first) || stat(first).is_none(),
        "the dead one is reaped"
    );
    let log = sa.log_text();
    assert!(log.contains("kengine exited unexpectedly"), "{log}");
    assert!(
        log.contains("last good config loaded into the restarted kengine"),
        "{log}"
    );
}

/// Item 11: SIGKILL of standalone takes its Kengine down too, and the next
/// run removes the temp dir the killed one left.
#[tokio::test]
async fn a_killed_standalone_takes_its_kengine_and_its_dir_is_cleaned_up() {
    let v1 = echo("127.0.61.2", "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.yaml");
    std::fs::write(
        &input,
        gateway("127.0.61.1", HTTP_18080) + &route("v1", v1, "/"),
    )
    .unwrap();
    let gw: SocketAddr = "127.0.61.1:18080".parse().unwrap();
    let c = http();
    let mut sa = Standalone::start(dir.path(), tmp.path(), &[&input], &[]);
    wait_until("v1 serves", Duration::from_secs(20), async || {
        answers(&c, gw, "/", "v1").await
    })
    .await;
    let kengine = sa.kengine_pid();
    sa.signal("-KILL");
    sa.wait_exit(Duration::from_secs(5));
    wait_until(
        "the orphan kengine is gone",
        Duration::from_secs(5),
        async || !alive(kengine),
    )
    .await;
    assert!(
        c.get(format!("http://{gw}/")).send().await.is_err(),
        "nothing serves"
    );
    assert_eq!(
        stale_dirs(tmp.path()).len(),
        1,
        "the killed run left its dir"
    );

    let sa = Standalone::start(dir.path(), tmp.path(), &[&input], &[]);
    wait_until("v1 serves", Duration::from_secs(20), async || {
        answers(&c, gw, "/", "v1").await
    })
    .await;
    let dirs = stale_dirs(tmp.path());
    assert_eq!(dirs.len(), 1, "only the new run's dir: {dirs:?}");
    assert!(sa.log_text().contains("removed a stale kengine dir"));
}

/// Item 11: SIGTERM while Kengine is still starting stops it and exits 0.
#[tokio::test]
async fn sigterm_during_startup_stops_the_child_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    // A "kengine" that never opens its admin API.
    let fake = dir.path().join("fake-kengine");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 600\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let input = dir.path().join("in.yaml");
    std::fs::write(&input, gateway("127.0.62.1", HTTP_18080)).unwrap();
    let mut sa = Standalone::start_with(dir.path(), dir.path(), &[&input], &fake, &[]);
    wait_until("the child started", Duration::from_secs(10), async || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let child: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    sa.signal("-TERM");
    let status = sa.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}: {}", sa.log_text());
    wait_until("the child is gone", Duration::from_secs(5), async || {
        !alive(child)
    })
    .await;
}

/// Item 12: a file rewritten in place (truncate, then write) is never
/// pushed half-read: an unchanged route keeps answering throughout, and an
/// emptied file is reported in the status file.
#[tokio::test]
async fn in_place_rewrites_never_push_an_empty_config() {
    let v1 = echo("127.0.63.2", "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.yaml");
    let text = gateway("127.0.63.1", HTTP_18080) + &route("v1", v1, "/");
    std::fs::write(&input, &text).unwrap();
    let status_file = dir.path().join("status.out");
    let sa = Standalone::start(
        dir.path(),
        dir.path(),
        &[&input],
        &[
            "--debounce-ms",
            "100",
            "--status-file",
            status_file.to_str().unwrap(),
        ],
    );
    let gw: SocketAddr = "127.0.63.1:18080".parse().unwrap();
    let c = http();
    wait_until("v1 serves", Duration::from_secs(20), async || {
        answers(&c, gw, "/", "v1").await
    })
    .await;

    let traffic = {
        let c = c.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(6) {
                if answers(&c, gw, "/", "v1").await {
                    ok += 1;
                } else {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        })
    };
    // Same content each time: the route never changes.
    for i in 0..60u64 {
        std::fs::File::create(&input).unwrap(); // truncates
        tokio::time::sleep(Duration::from_millis(i % 30)).await;
        std::fs::write(&input, &text).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `: > file`, held well past the quiet period.
    std::fs::File::create(&input).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let status = std::fs::read_to_string(&status_file).unwrap();
    assert!(
        status.starts_with("# not reloaded, the last good config keeps serving:")
            && status.contains("in.yaml is empty"),
        "{status}"
    );
    assert!(
        status.contains("kind: HTTPRoute"),
        "the last status stays below the note"
    );
    std::fs::write(&input, &text).unwrap();
    let (ok, failed) = traffic.await.unwrap();
    assert_eq!(failed, 0, "{failed} failed requests, {ok} answered");
    assert!(ok > 100, "{ok}");
    assert!(sa.log_text().contains("is empty (being rewritten?)"));
}

/// Item 13: writing the status file inside the watched directory does not
/// wake the watcher again.
#[tokio::test]
async fn the_status_file_in_a_watched_dir_does_not_retrigger() {
    let v1 = echo("127.0.64.2", "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.yaml");
    std::fs::write(
        &input,
        gateway("127.0.64.1", HTTP_18080) + &route("v1", v1, "/"),
    )
    .unwrap();
    // A manifest name in the directory the input file is watched through.
    let status_file = dir.path().join("status.yaml");
    let sa = Standalone::start(
        dir.path(),
        dir.path(),
        &[&input],
        &[
            "--debounce-ms",
            "50",
            "--status-file",
            status_file.to_str().unwrap(),
        ],
    );
    let gw: SocketAddr = "127.0.64.1:18080".parse().unwrap();
    let c = http();
    wait_until("v1 serves", Duration::from_secs(20), async || {
        answers(&c, gw, "/", "v1").await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sa.syncs(), 1, "{}", sa.log_text());
    // A real edit is still followed.
    std::fs::write(
        &input,
        gateway("127.0.64.1", HTTP_18080) + &route("v1", v1, "/a"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sa.syncs(), 2, "{}", sa.log_text());
}

/// Item 14: a burst is pushed once, after it quiets; a burst that never
/// quiets is pushed every `--max-delay-ms`.
#[tokio::test]
async fn a_burst_is_pushed_after_its_quiet_period_or_its_max_delay() {
    let v1 = echo("127.0.65.2", "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.yaml");
    std::fs::write(&base, gateway("127.0.65.1", HTTP_18080)).unwrap();
    let routes = dir.path().join("route.yaml");
    std::fs::write(&routes, route("v1", v1, "/")).unwrap();
    let sa = Standalone::start(
        dir.path(),
        dir.path(),
        &[&base, &routes],
        &["--debounce-ms", "300", "--max-delay-ms", "1000"],
    );
    let gw: SocketAddr = "127.0.65.1:18080".parse().unwrap();
    let c = http();
    wait_until("v1 serves", Duration::from_secs(20), async || {
        answers(&c, gw, "/", "v1").await
    })
    .await;
    assert_eq!(sa.pushes(), 1);

    // Every edit changes the config: each sync would push.
    let burst = |len: Duration, tag: &'static str| {
        let routes = routes.clone();
        async move {
            let start = Instant::now();
            let mut i = 0;
            while start.elapsed() < len {
                std::fs::write(&routes, route("v1", v1, &format!("/{tag}{i}"))).unwrap();
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            i - 1
        }
    };
    // Shorter than the max delay: one push, of the last edit.
    let last = burst(Duration::from_millis(700), "a").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(sa.pushes(), 2, "{}", sa.log_text());
    assert!(answers(&c, gw, &format!("/a{last}"), "v1").await);

    // 3.5 s without a pause: pushed about every second, not never, not
    // every 300 ms.
    burst(Duration::from_millis(3500), "b").await;
    let during = sa.pushes() - 2;
    assert!(
        (2..=4).contains(&during),
        "{during} pushes during the burst"
    );
}

/// Item 14: SIGTERM acts at once, also while a change waits out its quiet
/// period.
#[tokio::test]
async fn sigterm_does_not_wait_out_the_quiet_period() {
    let v1 = echo("127.0.66.2", "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.yaml");
    let text = gateway("127.0.66.1", HTTP_18080) + &route("v1", v1, "/");
    std::fs::write(&input, &text).unwrap();
    let mut sa = Standalone::start(
        dir.path(),
        dir.path(),
        &[&input],
        &["--debounce-ms", "20000"],
    );
    let gw: SocketAddr = "127.0.66.1:18080".parse().unwrap();
    let c = http();
    wait_until("v1 serves", Duration::from_secs(20), async || {
        answers(&c, gw, "/", "v1").await
    })
    .await;
    std::fs::write(&input, text + "\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sa.signal("-TERM");
    let status = sa.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    assert!(
        c.get(format!("http://{gw}/")).send().await.is_err(),
        "kengine stopped"
    );
}

/// Item 8: another process holds one listener's port. That listener is
/// reported (`PortUnavailable`), the Gateway says which, and the other
/// listener serves.
#[tokio::test]
async fn a_port_held_by_another_process_fails_only_its_listener() {
    let v1 = echo("127.0.67.2", "v1").await;
    let squatter = std::net::TcpListener::bind("127.0.67.1:18081").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.yaml");
    std::fs::write(
        &input,
        gateway(
            "127.0.67.1",
            "{name: free, protocol: HTTP, port: 18080}, {name: held, protocol: HTTP, port: 18081}",
        ) + &route("v1", v1, "/"),
    )
    .unwrap();
    let status_file = dir.path().join("status.out");
    let sa = Standalone::start(
        dir.path(),
        dir.path(),
        &[&input],
        &["--status-file", status_file.to_str().unwrap()],
    );
    let gw: SocketAddr = "127.0.67.1:18080".parse().unwrap();
    let c = http();
    wait_until(
        "the free listener serves",
        Duration::from_secs(20),
        async || answers(&c, gw, "/", "v1").await,
    )
    .await;
    wait_until("the status file", Duration::from_secs(5), async || {
        status_file.exists()
    })
    .await;
    let text = std::fs::read_to_string(&status_file).unwrap();
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let gateway = docs.iter().find(|d| d["kind"] == "Gateway").unwrap();
    let cond = |conds: &serde_json::Value, t: &str| {
        conds
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap()
    };
    let listener = |name: &str| {
        gateway["status"]["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .cloned()
            .unwrap()
    };
    let held = cond(&listener("held")["conditions"], "Accepted");
    assert_eq!(held["status"], "False", "{text}");
    assert_eq!(held["reason"], "PortUnavailable");
    assert!(
        held["message"]
            .as_str()
            .unwrap()
            .contains("127.0.67.1:18081 is in use"),
        "{held}"
    );
    assert_eq!(
        cond(&listener("held")["conditions"], "Programmed")["status"],
        "False"
    );
    assert_eq!(
        cond(&listener("free")["conditions"], "Programmed")["status"],
        "True"
    );
    let accepted = cond(&gateway["status"]["conditions"], "Accepted");
    assert_eq!(accepted["reason"], "ListenersNotValid", "{accepted}");
    assert_eq!(
        cond(&gateway["status"]["conditions"], "Programmed")["status"],
        "True"
    );
    assert!(sa.log_text().contains("address in use by another process"));
    drop(squatter);
}
