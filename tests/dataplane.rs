//! Generated configs loaded into a real Caddy 2.8.4, with real requests to
//! in-test echo backends.

use kengine_gateway_test_support as support;

use std::net::SocketAddr;

use kengine_gateway::cli::DEFAULT_FILES_DIR;
use kengine_gateway::kengine::AdminError;
use kengine_gateway::kengine::config::{
    Admin, AdminConfig, Handler, MatcherSet, RegexpMatcher, Route,
};
use kengine_gateway::sinks::pusher::{Pushed, Pusher};
use support::*;

fn gateway(ip: &str, port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\n\
         spec:\n  gatewayClassName: kengine\n  addresses: [{{type: IPAddress, value: {ip}}}]\n  \
         listeners: [{{name: http, protocol: HTTP, port: {port}}}]\n---\n"
    )
}

#[tokio::test]
async fn routes_by_host_and_segment_aware_path() {
    let v1 = echo("127.0.10.2", "v1").await;
    let v2 = echo("127.0.10.3", "v2").await;
    let yaml = format!(
        "{CLASS}{}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: a, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [a.example.com]
  rules: [{{backendRefs: [{{name: v1, port: {}}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: b, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [b.example.com]
  rules:
  - matches: [{{path: {{type: Exact, value: /exact}}}}]
    backendRefs: [{{name: v2, port: {}}}]
  - matches: [{{path: {{type: PathPrefix, value: /foo}}}}]
    backendRefs: [{{name: v1, port: {}}}]
",
        gateway("127.0.10.1", 18080),
        service("v1", v1),
        service("v2", v2),
        v1.port(),
        v2.port(),
        v1.port(),
    );
    let k = kengine().await;
    let mut pusher = Pusher::new(k.process.admin().clone());
    assert_eq!(
        pusher
            .push(&translate_yaml(&yaml).config().clone())
            .await
            .unwrap(),
        Pushed::Loaded
    );
    let gw: SocketAddr = "127.0.10.1:18080".parse().unwrap();
    let c = http();
    let cases = [
        ("a.example.com", "/", 200, Some("v1")),
        ("a.example.com", "/anything/at/all", 200, Some("v1")),
        ("b.example.com", "/exact", 200, Some("v2")),
        ("b.example.com", "/exact/more", 404, None),
        ("b.example.com", "/EXACT", 404, None),
        ("b.example.com", "/foo", 200, Some("v1")),
        ("b.example.com", "/foo/", 200, Some("v1")),
        ("b.example.com", "/foo/x", 200, Some("v1")),
        ("b.example.com", "/foobar", 404, None),
        ("b.example.com", "/", 404, None),
        ("B.Example.COM:18080", "/foo", 200, Some("v1")),
        ("c.example.com", "/", 404, None),
    ];
    for (host, path, status, pod) in cases {
        let got = get(&c, gw, host, path).await;
        assert_eq!(got, (status, pod.map(str::to_string)), "{host}{path}");
    }
}

/// 400 hostnames make a host tree two levels deep. Every host reaches its
/// own rules: hosts with several rules through their named leaf, hosts
/// with one catch-all rule inline; a wildcard route still catches what a
/// host's own rules leave, and unknown hosts end in 404.
#[tokio::test]
async fn every_host_of_a_deep_tree_reaches_its_own_rules() {
    let v1 = echo("127.0.10.6", "v1").await;
    let v2 = echo("127.0.10.7", "v2").await;
    let hosts = 400;
    let mut yaml = format!(
        "{CLASS}{}{}{}",
        gateway("127.0.10.5", 18081),
        service("v1", v1),
        service("v2", v2)
    );
    for i in 0..hosts {
        let rules = match i % 2 {
            0 => format!(
                "  - matches: [{{path: {{type: Exact, value: /exact}}}}]\n    backendRefs: [{{name: v2, port: {}}}]\n\
                 \x20 - matches: [{{path: {{type: PathPrefix, value: /foo}}}}]\n    backendRefs: [{{name: v1, port: {}}}]\n",
                v2.port(),
                v1.port()
            ),
            _ => format!("  - backendRefs: [{{name: v1, port: {}}}]\n", v1.port()),
        };
        yaml.push_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: r{i}, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  \
             hostnames: [h{i:03}.example.com]\n  rules:\n{rules}---\n"
        ));
    }
    yaml.push_str(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: wild, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  \
         hostnames: ['*.example.com']\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /wild}}}}]\n    \
         backendRefs: [{{name: v2, port: {}}}]\n",
        v2.port()
    ));
    let (_k, out) = serve_yaml(&yaml).await;
    let named = out.config().to_json();
    let named = String::from_utf8_lossy(&named);
    assert!(
        named.contains("\"host h000.example.com\""),
        "hosts with several rules are named leaves"
    );
    assert!(
        !named.contains("\"host h001.example.com\""),
        "one catch-all rule stays inline"
    );

    let gw: SocketAddr = "127.0.10.5:18081".parse().unwrap();
    let c = http();
    let pod = |p: &str| Some(p.to_string());
    for i in 0..hosts {
        let host = format!("h{i:03}.example.com");
        let cases = match i % 2 {
            0 => vec![
                ("/exact", (200, pod("v2"))),
                ("/foo/x", (200, pod("v1"))),
                ("/wild", (200, pod("v2"))),
                ("/other", (404, None)),
            ],
            _ => vec![("/other", (200, pod("v1"))), ("/wild", (200, pod("v1")))],
        };
        for (path, want) in cases {
            assert_eq!(get(&c, gw, &host, path).await, want, "{host}{path}");
        }
    }
    for (host, path, want) in [
        ("zzz.example.com", "/wild", (200, pod("v2"))),
        ("zzz.example.com", "/exact", (404, None)),
        ("h000.example.org", "/exact", (404, None)),
    ] {
        assert_eq!(get(&c, gw, host, path).await, want, "{host}{path}");
    }
}

#[tokio::test]
async fn splits_traffic_80_20() {
    let v1 = echo("127.0.11.2", "v1").await;
    let v2 = echo("127.0.11.3", "v2").await;
    let yaml = format!(
        "{CLASS}{}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: split, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs:
    - {{name: v1, port: {}, weight: 80}}
    - {{name: v2, port: {}, weight: 20}}
",
        gateway("127.0.11.1", 18080),
        service("v1", v1),
        service("v2", v2),
        v1.port(),
        v2.port(),
    );
    let k = kengine().await;
    Pusher::new(k.process.admin().clone())
        .push(&translate_yaml(&yaml).config().clone())
        .await
        .unwrap();
    let gw: SocketAddr = "127.0.11.1:18080".parse().unwrap();
    let c = http();
    let mut v1_count = 0;
    for _ in 0..1000 {
        match get(&c, gw, "any.example.com", "/").await {
            (200, Some(pod)) if pod == "v1" => v1_count += 1,
            (200, Some(pod)) if pod == "v2" => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(
        (750..=850).contains(&v1_count),
        "v1 got {v1_count} of 1000, want 800 ± 50"
    );
}

#[tokio::test]
async fn unchanged_config_does_not_reload() {
    let v1 = echo("127.0.12.2", "v1").await;
    let yaml = format!(
        "{CLASS}{}{}apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: default}}\n\
         spec: {{parentRefs: [{{name: gw}}], rules: [{{backendRefs: [{{name: v1, port: {}}}]}}]}}\n",
        gateway("127.0.12.1", 18080),
        service("v1", v1),
        v1.port()
    );
    let config = translate_yaml(&yaml).config().clone();
    let k = kengine().await;
    let mut pusher = Pusher::new(k.process.admin().clone());
    assert_eq!(pusher.push(&config).await.unwrap(), Pushed::Loaded);
    // A second translation of the same input is byte-identical: nothing is sent.
    assert_eq!(
        pusher
            .push(&translate_yaml(&yaml).config().clone())
            .await
            .unwrap(),
        Pushed::Unchanged
    );
    let loads = |log: &str| log.matches("\"load complete\"").count();
    assert_eq!(loads(&k.log_text()), 1, "{}", k.log_text());
    // Even when the same bytes do reach Kengine (say, from a restarted
    // controller), Kengine itself does not reload.
    pusher.reset();
    assert_eq!(pusher.push(&config).await.unwrap(), Pushed::Loaded);
    assert!(k.log_text().contains("config is unchanged"));
}

#[tokio::test]
async fn rejected_config_keeps_the_last_good_one_serving() {
    let v1 = echo("127.0.13.2", "v1").await;
    let yaml = format!(
        "{CLASS}{}{}apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: default}}\n\
         spec: {{parentRefs: [{{name: gw}}], rules: [{{backendRefs: [{{name: v1, port: {}}}]}}]}}\n",
        gateway("127.0.13.1", 18080),
        service("v1", v1),
        v1.port()
    );
    let good = translate_yaml(&yaml).config().clone();
    let k = kengine().await;
    let mut pusher = Pusher::new(k.process.admin().clone());
    pusher.push(&good).await.unwrap();
    // A config Kengine refuses: an invalid regexp fails provisioning.
    let mut bad = good.clone();
    let server = bad
        .apps
        .http
        .as_mut()
        .unwrap()
        .servers
        .values_mut()
        .next()
        .unwrap();
    server.routes.insert(
        0,
        Route {
            matchers: vec![MatcherSet {
                path_regexp: Some(RegexpMatcher {
                    name: None,
                    pattern: "(".into(),
                }),
                ..Default::default()
            }],
            handle: vec![Handler::status(418)],
            terminal: false,
            ..Default::default()
        },
    );
    // Our check refuses it before sending, and says where and whose it is:
    // a route translate did not build belongs to its server's listeners.
    match pusher.push(&bad).await {
        Err(AdminError::Unloadable(e)) => {
            assert!(
                e.path.ends_with(".routes[0].match[0].path_regexp.pattern"),
                "{e}"
            );
            let message = AdminError::Unloadable(e).to_string();
            assert!(
                message.contains("(from Gateway default/gw listener "),
                "{message}"
            );
        }
        other => panic!("expected the check to refuse it, got {other:?}"),
    }
    // Kengine agrees, and its own reason is kept.
    bad.admin = Some(Admin {
        listen: Some(k.process.admin().addr().to_string()),
        config: Some(AdminConfig { persist: false }),
    });
    match k.process.admin().load(bad.to_json()).await {
        Err(AdminError::Rejected { status, body }) => {
            assert_eq!(status.as_u16(), 400);
            assert!(
                body.contains("missing closing )"),
                "Kengine's own reason is kept: {body}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let gw: SocketAddr = "127.0.13.1:18080".parse().unwrap();
    assert_eq!(
        get(&http(), gw, "x.example.com", "/").await,
        (200, Some("v1".into()))
    );
    // The pusher still knows the good config is live.
    assert_eq!(pusher.push(&good).await.unwrap(), Pushed::Unchanged);
}

#[tokio::test]
async fn https_listener_serves_the_certificate_its_sni_selects() {
    let v1 = echo("127.0.14.2", "v1").await;
    let v2 = echo("127.0.14.3", "v2").await;
    let mut certs = Vec::new();
    let mut secrets = String::new();
    for (name, host) in [("a-cert", "a.example.com"), ("b-cert", "b.example.com")] {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![host.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        secrets.push_str(&tls_secret(name, &cert.pem(), &key.serialize_pem()));
        certs.push(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap());
    }
    let yaml = format!(
        "{CLASS}{secrets}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: kengine
  addresses: [{{value: 127.0.14.1}}]
  listeners:
  - {{name: a, protocol: HTTPS, port: 18443, hostname: a.example.com, tls: {{certificateRefs: [{{name: a-cert}}]}}}}
  - {{name: b, protocol: HTTPS, port: 18443, hostname: b.example.com, tls: {{certificateRefs: [{{name: b-cert}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: a, namespace: default}}
spec: {{parentRefs: [{{name: gw, sectionName: a}}], rules: [{{backendRefs: [{{name: v1, port: {}}}]}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: b, namespace: default}}
spec: {{parentRefs: [{{name: gw, sectionName: b}}], rules: [{{backendRefs: [{{name: v2, port: {}}}]}}]}}
",
        service("v1", v1),
        service("v2", v2),
        v1.port(),
        v2.port()
    );
    let k = kengine().await;
    Pusher::new(k.process.admin().clone())
        .push(&translate_yaml(&yaml).config().clone())
        .await
        .unwrap();
    let addr: SocketAddr = "127.0.14.1:18443".parse().unwrap();
    // A client that trusts only one certificate: the handshake proves which one was served.
    let client = |trusted: usize| {
        kengine_gateway::kengine::admin::install_crypto_provider();
        reqwest::Client::builder()
            .tls_certs_only([certs[trusted].clone()])
            .resolve("a.example.com", addr)
            .resolve("b.example.com", addr)
            .build()
            .unwrap()
    };
    let pod = |r: reqwest::Response| async move {
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        v["pod"].as_str().unwrap().to_string()
    };
    let a = client(0)
        .get("https://a.example.com:18443/")
        .send()
        .await
        .expect("a.example.com with cert a");
    assert_eq!(pod(a).await, "v1");
    let b = client(1)
        .get("https://b.example.com:18443/")
        .send()
        .await
        .expect("b.example.com with cert b");
    assert_eq!(pod(b).await, "v2");
    assert!(
        client(0)
            .get("https://b.example.com:18443/")
            .send()
            .await
            .is_err(),
        "b must not be served cert a"
    );
}

/// A backend whose BackendTLSPolicy cannot be applied (its CA ConfigMap is
/// missing) is never dialed in plaintext: its requests get 500, the others
/// are served.
#[tokio::test]
async fn backend_tls_policy_targets_answer_500_and_are_never_dialed() {
    let plain = echo("127.0.15.2", "plain").await;
    let secret = echo("127.0.15.3", "secret").await;
    let yaml = format!(
        "{CLASS}{}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: secret, namespace: default}}
spec:
  targetRefs: [{{group: '', kind: Service, name: secret}}]
  validation:
    hostname: secret.default.svc
    caCertificateRefs: [{{group: '', kind: ConfigMap, name: missing-ca}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /secret}}}}]
    backendRefs: [{{name: secret, port: {}}}]
  - backendRefs: [{{name: plain, port: {}}}]
",
        gateway("127.0.15.1", 18080),
        service("plain", plain),
        service("secret", secret),
        secret.port(),
        plain.port(),
    );
    let out = translate_yaml(&yaml);
    let k = kengine().await;
    assert_eq!(
        Pusher::new(k.process.admin().clone())
            .push(&out.config().clone())
            .await
            .unwrap(),
        Pushed::Loaded
    );
    let gw: SocketAddr = "127.0.15.1:18080".parse().unwrap();
    let c = http();
    for _ in 0..5 {
        assert_eq!(get(&c, gw, "a.example.com", "/secret").await, (500, None));
        assert_eq!(
            get(&c, gw, "a.example.com", "/").await,
            (200, Some("plain".to_string()))
        );
    }
}

/// Every golden config is one Kengine accepts (`caddy validate` provisions
/// every module without binding anything, and reads the files a config
/// names: they are written as `standalone` would, into a directory of the
/// test's that stands in for the default `--files-dir`).
#[test]
fn golden_configs_are_valid_kengine_configs() {
    let (mut checked, mut with_files) = (0, 0);
    for case in golden_cases() {
        let dir = tempfile::tempdir().unwrap();
        let files_dir = dir.path().join("files");
        std::fs::create_dir(&files_dir).unwrap();
        let snapshot = kengine_gateway::render::load(&[case.join("input.yaml")]).unwrap();
        let output = kengine_gateway::translate::translate(&snapshot, &Default::default());
        let files = (output.fleets.values()).flat_map(|f| &f.files);
        for (name, content) in files {
            std::fs::write(files_dir.join(name), content).unwrap();
            with_files += 1;
        }
        let text = std::fs::read_to_string(case.join("config.json")).unwrap();
        let config = dir.path().join("config.json");
        let files_dir = files_dir.to_str().unwrap();
        std::fs::write(&config, text.replace(DEFAULT_FILES_DIR, files_dir)).unwrap();
        let out = std::process::Command::new(caddy_bin())
            .args(["validate", "--config"])
            .arg(&config)
            .env("XDG_CONFIG_HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            case.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(with_files > 0, "no golden config names a file");
    assert!(checked >= 6, "only {checked} golden configs");
}
