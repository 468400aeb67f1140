//! Hostile values in HTTPRoutes: user braces never become live Kengine
//! placeholders, and invalid regexps drop only their rule. Checked on the
//! generated config, and with requests to a real Caddy 2.8.4.

use kengine_gateway_test_support as support;

use std::net::SocketAddr;

use kengine_gateway::kengine::{check, placeholders};
use kengine_gateway::sinks::pusher::{Pushed, Pusher};
use kengine_gateway::snapshot::ObjectRef;
use kengine_gateway::translate::Output;
use support::*;

const HOSTILE: [&str; 4] = [
    "{env.HOME}",
    "{file./etc/hostname}",
    "{system.hostname}",
    "{http.request.host}",
];

fn gateway(ip: &str, port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\n\
         spec:\n  gatewayClassName: kengine\n  addresses: [{{type: IPAddress, value: {ip}}}]\n  \
         listeners: [{{name: http, protocol: HTTP, port: {port}}}]\n---\n"
    )
}

/// A route with `p` (a placeholder) in every string field translate
/// copies into a field Kengine expands (names and filter hostnames, which
/// must be tokens and hostnames, get plain values).
fn route_full_of(p: &str, backend_port: u16) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let v = q(p);
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: hostile, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches:
    - path: {{type: PathPrefix, value: /a}}
      headers: [{{name: X-H, value: {v}}}]
      queryParams: [{{name: {qn}, value: {v}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add: [{{name: {an}, value: {v}}}]
        set: [{{name: {sn}, value: {v}}}]
        remove: [{rn}]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{{name: {an}, value: {v}}}]
        set: [{{name: {sn}, value: {v}}}]
        remove: [{rn}]
    - type: URLRewrite
      urlRewrite: {{hostname: h.example, path: {{type: ReplaceFullPath, replaceFullPath: {fp}}}}}
    - type: CORS
      cors: {{allowOrigins: ['https://o.example'], allowMethods: [{v}], allowHeaders: [{v}], exposeHeaders: [{v}]}}
    backendRefs: [{{name: v1, port: {backend_port}}}]
  - matches: [{{path: {{type: PathPrefix, value: /b}}}}]
    filters:
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: {fp}}}}}
    backendRefs: [{{name: v1, port: {backend_port}}}]
  - matches: [{{path: {{type: PathPrefix, value: /c}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{hostname: h.example, path: {{type: ReplacePrefixMatch, replacePrefixMatch: {fp}}}}}
  - matches: [{{path: {{type: PathPrefix, value: /d}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{path: {{type: ReplaceFullPath, replaceFullPath: {fp}}}}}
---
",
        // Match names are HTTP tokens (the CRD's rule): no braces there.
        qn = q("q"),
        an = q("X-Add"),
        sn = q("X-Set"),
        rn = q("X-Remove"),
        fp = q(&format!("/p{p}")),
    )
}

fn route_status(output: &Output, name: &str) -> serde_json::Value {
    let parents = &output.status.http_routes[&ObjectRef::new("default", name)];
    serde_json::to_value(&parents[0].conditions).unwrap()
}

fn accepted(output: &Output, name: &str) -> (String, String, String) {
    let conds = route_status(output, name);
    let c = conds
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .unwrap();
    let s = |k: &str| c[k].as_str().unwrap().to_string();
    (s("status"), s("reason"), s("message"))
}

/// Every string in the JSON (keys too) and the placeholders it holds.
fn strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| {
            out.push(k);
            strings(v, out)
        }),
        _ => {}
    }
}

#[test]
fn no_user_placeholder_survives_unescaped_in_the_config() {
    for p in HOSTILE {
        let yaml = format!(
            "{CLASS}{}{}{}",
            gateway("127.0.40.1", 18080),
            service("v1", "127.0.40.2:3000".parse().unwrap()),
            route_full_of(p, 3000)
        );
        let output = translate_yaml(&yaml);
        assert_eq!(accepted(&output, "hostile").0, "True", "{p}");
        let json = serde_json::to_value(output.config()).unwrap();
        let mut all = Vec::new();
        strings(&json, &mut all);
        // Every field that carried the placeholder is there, escaped.
        let escaped = placeholders::escape(p);
        let carrying = all.iter().filter(|s| s.contains(&escaped)).count();
        // (Names and filter hostnames must be tokens and hostnames: no braces.)
        assert!(carrying >= 14, "{p}: only {carrying} fields carry it");
        for s in &all {
            if s.contains("pattern") {
                continue;
            }
            for name in placeholders::unescaped(s) {
                // Regexp patterns are not expanded; only their text is skipped.
                let in_pattern = json_patterns(&json).iter().any(|pat| pat == s);
                assert!(
                    in_pattern || check::is_ours(name),
                    "{p}: live placeholder {{{name}}} in {s:?}"
                );
            }
        }
        check::config(output.config()).unwrap();
    }
}

fn json_patterns(v: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| match v {
                serde_json::Value::String(s) if k == "pattern" => out.push(s.clone()),
                _ => walk(v, out),
            }),
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

#[tokio::test]
async fn placeholders_reach_clients_and_matchers_literally() {
    let v1 = echo("127.0.41.2", "v1").await;
    let v2 = echo("127.0.41.3", "v2").await;
    let yaml = format!(
        "{CLASS}{}{}{}apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{headers: [{{name: X-Match, value: '{{http.request.host}}'}}]}}]
    backendRefs: [{{name: v2, port: {}}}]
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: X-Leak, value: '{{env.HOME}}'}}]}}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{set: [{{name: X-Resp, value: '{{system.hostname}}'}}]}}
    backendRefs: [{{name: v1, port: {}}}]
",
        gateway("127.0.41.1", 18080),
        service("v1", v1),
        service("v2", v2),
        v2.port(),
        v1.port(),
    );
    let k = kengine().await;
    let mut pusher = Pusher::new(k.process.admin().clone());
    let config = translate_yaml(&yaml).config().clone();
    assert_eq!(pusher.push(&config).await.unwrap(), Pushed::Loaded);
    let gw: SocketAddr = "127.0.41.1:18080".parse().unwrap();
    let client = http();
    let send = |match_value: Option<&str>| {
        let mut req = client
            .get(format!("http://{gw}/"))
            .header("Host", "x.example.com");
        if let Some(v) = match_value {
            req = req.header("X-Match", v);
        }
        req.send()
    };
    let resp = send(None).await.unwrap();
    assert_eq!(resp.headers()["x-resp"], "{system.hostname}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["pod"], "v1");
    assert_eq!(
        body["headers"]["X-Leak"],
        serde_json::json!(["{env.HOME}"]),
        "{body}"
    );
    // The Exact match is on the literal text, not on the request's Host.
    let body: serde_json::Value = send(Some("x.example.com"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["pod"], "v1");
    let body: serde_json::Value = send(Some("{http.request.host}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["pod"], "v2");
}

#[tokio::test]
async fn an_invalid_regexp_drops_its_rule_and_the_rest_serves() {
    let v1 = echo("127.0.42.2", "v1").await;
    let v2 = echo("127.0.42.3", "v2").await;
    let bad = ["([", "[z-a]", "(?<=a)b", "a{100000}", "\\1"];
    let good = [
        "^/v[0-9]+/.*",
        "(?i)/abc",
        "/\\d",
        "/[[:alpha:]]+",
        "/(?P<n>x)",
    ];
    let rule = |kind: &str, value: &str, port: u16| {
        let v = serde_json::to_string(value).unwrap();
        let m = match kind {
            "path" => format!("{{path: {{type: RegularExpression, value: {v}}}}}"),
            "header" => {
                format!("{{headers: [{{type: RegularExpression, name: X-R, value: {v}}}]}}")
            }
            _ => format!("{{queryParams: [{{type: RegularExpression, name: r, value: {v}}}]}}"),
        };
        format!("  - matches: [{m}]\n    backendRefs: [{{name: v2, port: {port}}}]\n")
    };
    let route = |name: &str, rules: String| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n{rules}---\n"
        )
    };
    let mut docs = format!(
        "{CLASS}{}{}{}",
        gateway("127.0.42.1", 18080),
        service("v1", v1),
        service("v2", v2)
    );
    // A route with an invalid rule is not Accepted; every other route serves.
    let mut ok_rules = String::new();
    for (i, b) in bad.iter().enumerate() {
        for kind in ["path", "header", "query"] {
            docs += &route(&format!("bad-{i}-{kind}"), rule(kind, b, v2.port()));
            ok_rules += &format!(
                "  - matches: [{{path: {{type: Exact, value: /ok{i}{kind}}}}}]\n    backendRefs: [{{name: v1, port: {}}}]\n",
                v1.port()
            );
        }
    }
    docs += &route("ok", ok_rules);
    let good_rules: String = good.iter().map(|g| rule("path", g, v2.port())).collect();
    docs += &route("good", good_rules);
    let output = translate_yaml(&docs);
    for (i, b) in bad.iter().enumerate() {
        for kind in ["path", "header", "query"] {
            let (status, reason, message) = accepted(&output, &format!("bad-{i}-{kind}"));
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "UnsupportedValue"),
                "{b} {kind}"
            );
            assert!(
                message.contains("invalid regular expression") && message.contains(b),
                "{message}"
            );
        }
    }
    assert_eq!(accepted(&output, "good").0, "True");
    assert_eq!(accepted(&output, "ok").0, "True");
    check::config(output.config()).unwrap();
    let k = kengine().await;
    let mut pusher = Pusher::new(k.process.admin().clone());
    assert_eq!(pusher.push(output.config()).await.unwrap(), Pushed::Loaded);
    let gw: SocketAddr = "127.0.42.1:18080".parse().unwrap();
    let client = http();
    for (i, _) in bad.iter().enumerate() {
        for kind in ["path", "header", "query"] {
            let path = format!("/ok{i}{kind}");
            assert_eq!(
                get(&client, gw, "h", &path).await,
                (200, Some("v1".into())),
                "{path}"
            );
        }
    }
    for path in ["/v1/x", "/ABC", "/7", "/abc", "/x"] {
        assert_eq!(
            get(&client, gw, "h", path).await,
            (200, Some("v2".into())),
            "{path}"
        );
    }
}

/// A value translate lets through but Kengine would refuse (here a
/// timeout Go cannot parse) is caught by the per-rule check: the route that
/// carries it is not Accepted, and every other route keeps serving.
#[test]
fn a_value_kengine_would_refuse_fails_its_route_only() {
    let route = |name: &str, timeout: &str, path: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    \
             timeouts: {{request: {timeout}}}\n    backendRefs: [{{name: v1, port: 3000}}]\n---\n"
        )
    };
    let yaml = format!(
        "{CLASS}{}{}{}{}",
        gateway("127.0.43.1", 18080),
        service("v1", "127.0.43.2:3000".parse().unwrap()),
        route("bad", "2562048h", "/bad"),
        route("good", "10s", "/good"),
    );
    let output = translate_yaml(&yaml);
    let (status, reason, _) = accepted(&output, "bad");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "UnsupportedValue")
    );
    assert_eq!(accepted(&output, "good").0, "True");
    check::config(output.config()).unwrap();
    let json = output.config().to_json_pretty();
    assert!(json.contains("/good") && !json.contains("/bad"), "{json}");
}

/// Issue 13's acceptance: one good Gateway and route, rendered together
/// with routes full of placeholders, invalid regexps, hostile hostnames,
/// huge timeouts and huge weights. Real Caddy 2.8.4 loads the config, the
/// good route serves, the placeholders reach the backend as text, the
/// huge weights split traffic, and each bad rule is reported with its reason.
#[tokio::test]
async fn hostile_routes_beside_a_good_one_load_serve_and_are_reported() {
    let good = echo("127.0.44.2", "good").await;
    let v2 = echo("127.0.44.3", "v2").await;
    let v3 = echo("127.0.44.4", "v3").await;
    let route = |name: &str, hostnames: &str, rules: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: {hostnames}\n  rules:\n{rules}---\n"
        )
    };
    let rule = |path: &str, extra: &str, backend: &str| {
        format!(
            "  - matches: [{{path: {{type: PathPrefix, value: {path}}}{extra}}}]\n    backendRefs: [{backend}]\n"
        )
    };
    let to = |svc: SocketAddr, name: &str| format!("{{name: {name}, port: {}}}", svc.port());
    let mut yaml = format!(
        "{CLASS}{}{}{}{}",
        gateway("127.0.44.1", 18080),
        service("good", good),
        service("v2", v2),
        service("v3", v3),
    );
    yaml += "apiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: default}\n\
             spec: {type: ExternalName, externalName: '{env.HOME}', ports: [{port: 80}]}\n---\n";
    // The good route: every host, every path.
    yaml += &route("good", "[]", &rule("/", "", &to(good, "good")));
    // Placeholders everywhere (the same route as above), still served.
    yaml += &route_full_of("{env.HOME}", v2.port())
        .replace("name: hostile,", "name: placeholders,")
        .replace("name: v1,", "name: v2,");
    // Invalid regexps in a path, a header and a query match.
    for (name, m) in [
        (
            "regex-path",
            "{path: {type: RegularExpression, value: '(['}}",
        ),
        (
            "regex-header",
            "{headers: [{type: RegularExpression, name: X-R, value: '[z-a]'}]}",
        ),
        (
            "regex-query",
            "{queryParams: [{type: RegularExpression, name: r, value: '(?<=a)b'}]}",
        ),
    ] {
        let rules = format!("  - matches: [{m}]\n    backendRefs: [{}]\n", to(v2, "v2"));
        yaml += &route(name, "[]", &rules);
    }
    // Hostnames that once broke the config or took over every host.
    for (i, host) in ["'*.a(b'", "'*.a$|.*'", "'{env.HOME}.example'"]
        .iter()
        .enumerate()
    {
        yaml += &route(
            &format!("hostname-{i}"),
            &format!("[{host}]"),
            &rule("/", "", &to(v2, "v2")),
        );
    }
    // Timeouts that overflowed or that Go cannot parse.
    for (i, t) in ["999999999999999999999999999999999999h", "2562048h"]
        .iter()
        .enumerate()
    {
        let rules = format!(
            "  - matches: [{{path: {{type: PathPrefix, value: /t{i}}}}}]\n    timeouts: {{request: {t}}}\n    backendRefs: [{}]\n",
            to(v2, "v2")
        );
        yaml += &route(&format!("timeout-{i}"), "[]", &rules);
    }
    // An ExternalName whose name is a placeholder.
    yaml += &route("external", "[]", &rule("/ext", "", "{name: ext, port: 80}"));
    // Thirteen backendRefs of weight 1,000,000: valid, and split evenly.
    let heavy: Vec<String> = (0..13)
        .map(|i| {
            let (svc, name) = if i % 2 == 0 { (v2, "v2") } else { (v3, "v3") };
            format!("{{name: {name}, port: {}, weight: 1000000}}", svc.port())
        })
        .collect();
    yaml += &route("weights", "[]", &rule("/w", "", &heavy.join(", ")));

    let output = translate_yaml(&yaml);
    let reason = |name: &str, type_: &str| {
        let conds = route_status(&output, name);
        let c = (conds.as_array().unwrap().iter())
            .find(|c| c["type"] == type_)
            .unwrap()
            .clone();
        let s = |k: &str| c[k].as_str().unwrap().to_string();
        (s("status"), s("reason"), s("message"))
    };
    let expect = |name: &str, type_: &str, want: (&str, &str), text: &str| {
        let (status, why, message) = reason(name, type_);
        assert_eq!((status.as_str(), why.as_str()), want, "{name}: {message}");
        assert!(message.contains(text), "{name}: {message}");
    };
    let unsupported = ("False", "UnsupportedValue");
    expect(
        "regex-path",
        "Accepted",
        unsupported,
        "invalid regular expression",
    );
    expect(
        "regex-header",
        "Accepted",
        unsupported,
        "invalid regular expression",
    );
    expect(
        "regex-query",
        "Accepted",
        unsupported,
        "invalid regular expression",
    );
    for i in 0..3 {
        expect(
            &format!("hostname-{i}"),
            "Accepted",
            unsupported,
            "is not valid",
        );
    }
    for i in 0..2 {
        expect(&format!("timeout-{i}"), "Accepted", unsupported, "timeout");
    }
    expect(
        "external",
        "ResolvedRefs",
        ("False", "BackendNotFound"),
        "not a DNS-1123 subdomain",
    );
    for name in ["good", "placeholders", "weights"] {
        expect(name, "Accepted", ("True", "Accepted"), "");
        expect(name, "ResolvedRefs", ("True", "ResolvedRefs"), "");
    }
    let gateway_status = &output.status.gateways[&ObjectRef::new("default", "gw")];
    let programmed = (gateway_status.conditions.iter().flatten())
        .find(|c| c.type_ == "Programmed")
        .unwrap();
    assert_eq!(programmed.status, "True");
    check::config(output.config()).unwrap();

    // Real Caddy loads it.
    let k = kengine().await;
    let mut pusher = Pusher::new(k.process.admin().clone());
    assert_eq!(pusher.push(output.config()).await.unwrap(), Pushed::Loaded);
    let gw: SocketAddr = "127.0.44.1:18080".parse().unwrap();
    let client = http();
    // The good route serves every host, including those the hostile
    // hostnames tried to take; the dropped rules fall through to it.
    for (host, path) in [
        ("x.example.com", "/"),
        ("a.a(b", "/"),
        ("x.a", "/"),
        ("anything", "/t0"),
        ("anything", "/t1"),
    ] {
        assert_eq!(
            get(&client, gw, host, path).await,
            (200, Some("good".into())),
            "{host}{path}"
        );
    }
    // The placeholder route serves: its rewritten path reaches the backend
    // as text, and so does a header it sets.
    let body: serde_json::Value = client
        .get(format!("http://{gw}/b/x"))
        .header("Host", "x.example.com")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["pod"], "v2", "{body}");
    assert_eq!(body["path"], "/p%7Benv.HOME%7D/x", "{body}");
    let body = client
        .get(format!("http://{gw}/a?q={{env.HOME}}"))
        .header("Host", "x.example.com")
        .header("X-H", "{env.HOME}")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = body.json().await.unwrap();
    assert_eq!(body["pod"], "v2", "{body}");
    assert_eq!(body["host"], "h.example", "{body}");
    assert_eq!(
        body["headers"]["X-Set"],
        serde_json::json!(["{env.HOME}"]),
        "{body}"
    );
    // The ExternalName's share is answered 500, never dialed.
    assert_eq!(get(&client, gw, "h", "/ext").await.0, 500);
    // The huge weights split traffic over both backends.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..26 {
        let (status, pod) = get(&client, gw, "h", "/w").await;
        assert_eq!(status, 200);
        seen.extend(pod);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["v2", "v3"],
        "both backends answer"
    );
}
