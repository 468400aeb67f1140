//! GRPCRoutes loaded into a real Caddy 2.8.4, with real gRPC calls to
//! in-test gRPC echo backends (crates/test-support/src/grpc_echo.rs).

use kengine_gateway_test_support as support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kengine_gateway::translate::Output;
use support::grpc_echo::{self, ECHO, ECHO_THREE, ECHO_TWO, SERVICE, code};
use support::*;
use tonic::Code;

fn gateway(ip: &str, port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\n\
         spec:\n  gatewayClassName: kengine\n  addresses: [{{type: IPAddress, value: {ip}}}]\n  \
         listeners: [{{name: http, protocol: HTTP, port: {port}}}]\n---\n"
    )
}

/// A ClusterIP Service whose port declares cleartext HTTP/2.
fn h2c_service(name: &str, addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{clusterIP: {}, ports: [{{port: {}, appProtocol: kubernetes.io/h2c}}]}}\n---\n",
        addr.ip(),
        addr.port()
    )
}

/// Each GRPCRoute's conditions, for failure messages.
fn grpc_route_conditions(out: &Output) -> String {
    let mut s = String::new();
    for (route, parents) in &out.status.grpc_routes {
        for parent in parents {
            for c in &parent.conditions {
                s.push_str(&format!(
                    "{route}: {}={} {}: {}\n",
                    c.type_, c.status, c.reason, c.message
                ));
            }
        }
    }
    s
}

/// Loads `yaml`'s config into a new Kengine; every GRPCRoute of it must be
/// Accepted.
async fn load(yaml: &str) -> (Kengine, Output) {
    let (k, out) = serve_yaml(yaml).await;
    let conditions = grpc_route_conditions(&out);
    assert!(
        !out.status.grpc_routes.is_empty()
            && out.status.grpc_routes.values().flatten().all(|p| p
                .conditions
                .iter()
                .any(|c| c.type_ == "Accepted" && c.status == "True")),
        "every GRPCRoute must be Accepted:\n{conditions}"
    );
    (k, out)
}

/// The pod that answered, or the gRPC code of the failure.
async fn answer(gw: SocketAddr, authority: &str, method: &str, md: &[(&str, &str)]) -> String {
    match grpc_echo::call(gw, authority, method, md).await {
        Ok(r) => r.pod().to_string(),
        Err(s) => format!("{:?}", s.code()),
    }
}

/// The echo server and client on their own, without a gateway: what the
/// tests below rely on.
#[tokio::test]
async fn echo_server_answers_the_client_directly() {
    let direct = grpc_echo::serve("127.0.70.2", "direct").await;
    let r = grpc_echo::call(direct, "direct.example.com", ECHO, &[("x-test", "1")])
        .await
        .expect("Echo");
    assert_eq!(r.pod(), "direct");
    assert_eq!(r.method(), ECHO);
    assert_eq!(r.authority(), "direct.example.com");
    assert_eq!(r.header(":authority"), ["direct.example.com"]);
    assert_eq!(r.header("x-test"), ["1"]);
    assert_eq!(r.header("content-type"), ["application/grpc"]);
    let ctx = r.assertions.as_ref().unwrap().context.as_ref().unwrap();
    assert_eq!(
        (ctx.namespace.as_str(), ctx.service_name.as_str()),
        ("default", "direct")
    );
    for method in [ECHO_TWO, ECHO_THREE] {
        let r = grpc_echo::call(direct, "a:1", method, &[]).await.unwrap();
        assert_eq!((r.method(), r.authority()), (method, "a:1"));
    }
    let unknown = format!("/{SERVICE}/EchoFour");
    assert_eq!(
        code(&grpc_echo::call(direct, "a", &unknown, &[]).await),
        Code::Unimplemented
    );
    // HTTP/2 only: a gateway that dialed it with HTTP/1.1 would get no answer.
    let h1 = http()
        .get(format!("http://{direct}/"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(h1.is_err(), "{h1:?}");
    // Nothing listens there: the client reports Unavailable, not a panic.
    let closed = tokio::net::TcpListener::bind("127.0.70.3:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    assert_eq!(
        code(&grpc_echo::call(closed_addr, "a", ECHO, &[]).await),
        Code::Unavailable
    );
}

#[tokio::test]
async fn routes_by_exact_service_and_method() {
    let v1 = grpc_echo::serve("127.0.71.2", "v1").await;
    let v2 = grpc_echo::serve("127.0.71.3", "v2").await;
    let yaml = format!(
        "{CLASS}{}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: methods, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [grpc.example.com]
  rules:
  - matches: [{{method: {{type: Exact, service: {SERVICE}, method: Echo}}}}]
    backendRefs: [{{name: v1, port: {}}}]
  - matches: [{{method: {{service: {SERVICE}, method: EchoTwo}}}}]
    backendRefs: [{{name: v2, port: {}}}]
",
        gateway("127.0.71.1", 19090),
        h2c_service("v1", v1),
        h2c_service("v2", v2),
        v1.port(),
        v2.port(),
    );
    let (k, _) = load(&yaml).await;
    let gw: SocketAddr = "127.0.71.1:19090".parse().unwrap();
    for (authority, method, pod) in [
        ("grpc.example.com", ECHO, "v1"),
        ("grpc.example.com:19090", ECHO, "v1"),
        ("grpc.example.com", ECHO_TWO, "v2"),
    ] {
        let r = grpc_echo::call(gw, authority, method, &[])
            .await
            .unwrap_or_else(|s| panic!("{authority}{method}: {s:?}\n{}", k.log_text()));
        assert_eq!(
            (r.pod(), r.method(), r.authority()),
            (pod, method, authority),
            "{authority}{method}"
        );
    }
    // The backends implement EchoThree: this Unimplemented is the gateway's.
    for (authority, method) in [
        ("grpc.example.com", ECHO_THREE),
        ("other.example.com", ECHO),
    ] {
        assert_eq!(
            code(&grpc_echo::call(gw, authority, method, &[]).await),
            Code::Unimplemented,
            "{authority}{method}"
        );
    }
}

#[tokio::test]
async fn routes_by_method_regular_expression() {
    let v1 = grpc_echo::serve("127.0.77.2", "v1").await;
    let v2 = grpc_echo::serve("127.0.77.3", "v2").await;
    let yaml = format!(
        "{CLASS}{}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: regex, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{method: {{type: RegularExpression, service: '.*\\.grpcecho\\.GrpcEcho'}}}}]
    backendRefs: [{{name: v1, port: {}}}]
  # Listed second, yet first: more characters in its method match.
  - matches: [{{method: {{type: RegularExpression, service: '.*\\.grpcecho\\.GrpcEcho', method: 'EchoT.*'}}}}]
    backendRefs: [{{name: v2, port: {}}}]
",
        gateway("127.0.77.1", 19090),
        h2c_service("v1", v1),
        h2c_service("v2", v2),
        v1.port(),
        v2.port(),
    );
    let _k = load(&yaml).await;
    let gw: SocketAddr = "127.0.77.1:19090".parse().unwrap();
    // Anchoring is implementation-specific: this one matches neither way.
    let other = "/other.Other/Echo";
    for (method, want) in [
        (ECHO, "v1"),
        (ECHO_TWO, "v2"),
        (ECHO_THREE, "v2"),
        (other, "Unimplemented"),
    ] {
        assert_eq!(
            answer(gw, "a.example.com", method, &[]).await,
            want,
            "{method}"
        );
    }
}

#[tokio::test]
async fn routes_by_header() {
    let v1 = grpc_echo::serve("127.0.72.2", "v1").await;
    let v2 = grpc_echo::serve("127.0.72.3", "v2").await;
    let yaml = format!(
        "{CLASS}{}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: headers, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{headers: [{{name: version, value: two}}]}}]
    backendRefs: [{{name: v2, port: {p2}}}]
  # More header matches take precedence.
  - matches: [{{headers: [{{type: Exact, name: version, value: two}}, {{name: color, value: orange}}]}}]
    backendRefs: [{{name: v1, port: {p1}}}]
  - matches: [{{headers: [{{type: RegularExpression, name: color, value: '^(red|yellow)$'}}]}}]
    backendRefs: [{{name: v2, port: {p2}}}]
  - backendRefs: [{{name: v1, port: {p1}}}]
",
        gateway("127.0.72.1", 19090),
        h2c_service("v1", v1),
        // No appProtocol: GRPCRoute backends are spoken to over h2c all the same.
        service("v2", v2),
        p1 = v1.port(),
        p2 = v2.port(),
    );
    let _k = load(&yaml).await;
    let gw: SocketAddr = "127.0.72.1:19090".parse().unwrap();
    for (md, want) in [
        (&[("version", "two")][..], "v2"),
        (&[("version", "one")], "v1"),
        (&[("version", "two"), ("color", "orange")], "v1"),
        (&[("color", "red")], "v2"),
        (&[("color", "reddish")], "v1"),
        (&[], "v1"),
    ] {
        assert_eq!(answer(gw, "a.example.com", ECHO, md).await, want, "{md:?}");
    }
}

#[tokio::test]
async fn header_modifiers_edit_requests_and_responses() {
    let v1 = grpc_echo::serve("127.0.73.2", "v1").await;
    let yaml = format!(
        "{CLASS}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: modifiers, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{{name: x-set, value: by-gateway}}]
        add: [{{name: x-add, value: by-gateway}}]
        remove: [x-remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{{name: x-response-set, value: set}}]
        add: [{{name: x-response-add, value: added}}]
    backendRefs: [{{name: v1, port: {}}}]
",
        gateway("127.0.73.1", 19090),
        h2c_service("v1", v1),
        v1.port(),
    );
    let _k = load(&yaml).await;
    let gw: SocketAddr = "127.0.73.1:19090".parse().unwrap();
    let md = [
        ("x-set", "by-client"),
        ("x-add", "by-client"),
        ("x-remove", "by-client"),
        ("x-keep", "by-client"),
    ];
    let response = grpc_echo::call_response(gw, "a.example.com", ECHO, &md)
        .await
        .expect("Echo");
    let r = response.get_ref();
    assert_eq!(r.pod(), "v1");
    assert_eq!(r.header("x-set"), ["by-gateway"]);
    // Added values may arrive as two fields or one comma-joined one.
    let mut added: Vec<&str> = r
        .header("x-add")
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    added.sort();
    assert_eq!(added, ["by-client", "by-gateway"]);
    assert!(
        r.header("x-remove").is_empty(),
        "{:?}",
        r.header("x-remove")
    );
    assert_eq!(r.header("x-keep"), ["by-client"]);
    let meta = response.metadata();
    assert_eq!(
        meta.get("x-response-set").map(|v| v.to_str().unwrap()),
        Some("set"),
        "{meta:?}"
    );
    assert_eq!(
        meta.get("x-response-add").map(|v| v.to_str().unwrap()),
        Some("added"),
        "{meta:?}"
    );
}

#[tokio::test]
async fn splits_calls_by_weight() {
    let v1 = grpc_echo::serve("127.0.74.2", "v1").await;
    let v2 = grpc_echo::serve("127.0.74.3", "v2").await;
    let v3 = grpc_echo::serve("127.0.74.4", "v3").await;
    let yaml = format!(
        "{CLASS}{}{}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: weights, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs:
    - {{name: v1, port: {}, weight: 80}}
    - {{name: v2, port: {}, weight: 20}}
    - {{name: v3, port: {}, weight: 0}}
",
        gateway("127.0.74.1", 19090),
        h2c_service("v1", v1),
        h2c_service("v2", v2),
        h2c_service("v3", v3),
        v1.port(),
        v2.port(),
        v3.port(),
    );
    let _k = load(&yaml).await;
    let gw: SocketAddr = "127.0.74.1:19090".parse().unwrap();
    const CALLS: usize = 200;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut n1, mut n2) = (0, 0);
    for i in 0..CALLS {
        assert!(Instant::now() < deadline, "only {i} calls in 60 s");
        match answer(gw, "a.example.com", ECHO, &[]).await.as_str() {
            "v1" => n1 += 1,
            "v2" => n2 += 1,
            other => panic!("call {i}: unexpected answer {other}"),
        }
    }
    // 80% of 200 is 160, and one standard deviation about 6.
    assert!(
        (130..=190).contains(&n1) && n1 + n2 == CALLS,
        "v1 got {n1}, v2 {n2} of {CALLS}: want v1 160 ± 30, v3 none"
    );
}

/// Calls the gateway cannot deliver fail as Unavailable: a backendRef to a
/// missing Service (all of a rule's calls, or its share of them) and a
/// backend that refuses connections.
#[tokio::test]
async fn unusable_backends_answer_unavailable() {
    let v1 = grpc_echo::serve("127.0.75.2", "v1").await;
    let closed = tokio::net::TcpListener::bind("127.0.75.3:0").await.unwrap();
    let down = closed.local_addr().unwrap();
    drop(closed);
    let yaml = format!(
        "{CLASS}{}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: missing, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{method: {{service: {SERVICE}, method: Echo}}}}]
    backendRefs: [{{name: v1, port: {p1}}}]
  - matches: [{{method: {{service: {SERVICE}, method: EchoTwo}}}}]
    backendRefs: [{{name: does-not-exist, port: 8080}}]
  - matches: [{{method: {{service: {SERVICE}, method: EchoThree}}}}]
    backendRefs: [{{name: v1, port: {p1}, weight: 1}}, {{name: does-not-exist, port: 8080, weight: 1}}]
  - matches: [{{method: {{service: {SERVICE}, method: EchoFour}}}}]
    backendRefs: [{{name: down, port: {}}}]
",
        gateway("127.0.75.1", 19090),
        h2c_service("v1", v1),
        h2c_service("down", down),
        down.port(),
        p1 = v1.port(),
    );
    let (_k, out) = load(&yaml).await;
    let conditions = grpc_route_conditions(&out);
    assert!(
        conditions.contains("ResolvedRefs=False BackendNotFound"),
        "{conditions}"
    );
    let gw: SocketAddr = "127.0.75.1:19090".parse().unwrap();
    let echo_four = format!("/{SERVICE}/EchoFour");
    for _ in 0..3 {
        assert_eq!(answer(gw, "a.example.com", ECHO, &[]).await, "v1");
        assert_eq!(
            answer(gw, "a.example.com", ECHO_TWO, &[]).await,
            "Unavailable"
        );
        assert_eq!(
            answer(gw, "a.example.com", &echo_four, &[]).await,
            "Unavailable"
        );
    }
    // Half the calls go to the missing backend (40 of one kind: p = 2^-39).
    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..40 {
        *answers
            .entry(answer(gw, "a.example.com", ECHO_THREE, &[]).await)
            .or_insert(0) += 1;
    }
    assert_eq!(
        answers.keys().collect::<Vec<_>>(),
        ["Unavailable", "v1"],
        "{answers:?}"
    );
}

/// One HTTP listener serves an HTTPRoute and a GRPCRoute side by side,
/// each on its own hostname and its own kind of backend.
#[tokio::test]
async fn shares_a_listener_with_http_routes() {
    let grpc = grpc_echo::serve("127.0.78.2", "grpc").await;
    let web = echo("127.0.78.3", "web").await;
    let yaml = format!(
        "{CLASS}{}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: g, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [grpc.example.com]
  rules: [{{backendRefs: [{{name: grpc, port: {}}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: h, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [web.example.com]
  rules: [{{backendRefs: [{{name: web, port: {}}}]}}]
",
        gateway("127.0.78.1", 19090),
        service("grpc", grpc),
        service("web", web),
        grpc.port(),
        web.port(),
    );
    let _k = load(&yaml).await;
    let gw: SocketAddr = "127.0.78.1:19090".parse().unwrap();
    for _ in 0..3 {
        assert_eq!(answer(gw, "grpc.example.com", ECHO, &[]).await, "grpc");
        assert_eq!(
            get(&http(), gw, "web.example.com", "/").await,
            (200, Some("web".to_string()))
        );
    }
}

#[tokio::test]
async fn serves_grpc_on_an_https_listener() {
    let v1 = grpc_echo::serve("127.0.76.2", "v1").await;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["grpc.example.com".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let yaml = format!(
        "{CLASS}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: kengine
  addresses: [{{value: 127.0.76.1}}]
  listeners:
  - {{name: https, protocol: HTTPS, port: 19443, hostname: grpc.example.com, tls: {{certificateRefs: [{{name: grpc-cert}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: tls, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: v1, port: {}}}]}}]
",
        h2c_service("v1", v1),
        tls_secret("grpc-cert", &cert.pem(), &key.serialize_pem()),
        v1.port(),
    );
    let (k, _) = load(&yaml).await;
    let gw: SocketAddr = "127.0.76.1:19443".parse().unwrap();
    for method in [ECHO, ECHO_TWO] {
        let r = grpc_echo::call_tls(gw, "grpc.example.com:19443", &cert.pem(), method, &[])
            .await
            .unwrap_or_else(|s| panic!("{method}: {s:?}\n{}", k.log_text()))
            .into_inner();
        assert_eq!(
            (r.pod(), r.method(), r.authority()),
            ("v1", method, "grpc.example.com:19443")
        );
    }
}

/// On a server that serves GRPCRoutes, what the gateway answers itself is a
/// gRPC status for gRPC calls (a trailers-only response: HTTP 200 with
/// `grpc-status`), and stays an HTTP status for everything else: no route
/// is UNIMPLEMENTED or a bodiless 404, an unreachable backend UNAVAILABLE
/// or 502.
#[tokio::test]
async fn gateway_errors_are_grpc_statuses_for_grpc_calls_only() {
    let closed = tokio::net::TcpListener::bind("127.0.79.2:0").await.unwrap();
    let down = closed.local_addr().unwrap();
    drop(closed);
    let yaml = format!(
        "{CLASS}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: g, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [grpc.example.com]
  rules:
  - matches: [{{method: {{service: {SERVICE}, method: Echo}}}}]
    backendRefs: [{{name: down, port: {port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: h, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [web.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /down}}}}]
    backendRefs: [{{name: down, port: {port}}}]
",
        gateway("127.0.79.1", 19090),
        service("down", down),
        port = down.port(),
    );
    let (k, _) = load(&yaml).await;
    let gw: SocketAddr = "127.0.79.1:19090".parse().unwrap();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("grpc.example.com", gw)
        .build()
        .unwrap();
    let call = |method: String| {
        h2.post(format!("http://grpc.example.com:19090{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(vec![0u8; 5])
            .send()
    };
    for (method, want) in [
        (format!("/{SERVICE}/Nope"), "12"),
        ("/other.Service/Echo".to_string(), "12"),
        (ECHO.to_string(), "14"),
    ] {
        let resp = call(method.clone()).await.unwrap();
        let grpc_status = resp
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            (resp.status().as_u16(), grpc_status.as_deref()),
            (200, Some(want)),
            "{method}: {resp:?}\n{}",
            k.log_text()
        );
        assert_eq!(
            code(&grpc_echo::call(gw, "grpc.example.com", &method, &[]).await),
            match want {
                "12" => Code::Unimplemented,
                _ => Code::Unavailable,
            }
        );
    }
    let c = http();
    for (host, path, want) in [
        ("web.example.com", "/nothing", 404),
        ("unknown.example.com", "/", 404),
        ("grpc.example.com", "/", 404),
        ("web.example.com", "/down", 502),
    ] {
        let resp = c
            .get(format!("http://{gw}{path}"))
            .header("Host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), want, "{host}{path}");
        assert!(resp.headers().get("grpc-status").is_none(), "{host}{path}");
        assert_eq!(resp.text().await.unwrap(), "", "{host}{path}: a body");
    }
}
