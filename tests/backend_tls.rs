//! BackendTLSPolicy through a real Caddy 2.8.4: HTTPRoutes and GRPCRoutes to
//! TLS echo backends (crates/test-support/src/tls_echo.rs), each with its own test CA.
//! A usable policy must make the gateway dial over TLS with the policy's
//! hostname as SNI and verify the backend against it and the policy's CAs;
//! an unusable one must never dial the backend.

use kengine_gateway_test_support as support;

use std::net::SocketAddr;

use kengine_gateway::snapshot::ObjectRef;
use kengine_gateway::translate::Output;
use support::grpc_echo::{self, ECHO, code};
use support::tls_echo::{self, TestCa};
use support::*;
use tonic::Code;

/// The gateways' port: each test has its own address.
const PORT: u16 = 18600;

fn gateway(ip: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\n\
         spec:\n  gatewayClassName: kengine\n  addresses: [{{type: IPAddress, value: {ip}}}]\n  \
         listeners: [{{name: http, protocol: HTTP, port: {PORT}}}]\n---\n"
    )
}

fn gateway_addr(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), PORT)
}

/// A BackendTLSPolicy in `default`: `meta` and `target` are the inner
/// fields of its metadata and of its one targetRef, `validation` of its
/// `spec.validation`.
fn policy(meta: &str, target: &str, validation: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\n\
         metadata: {{namespace: default, {meta}}}\n\
         spec:\n  targetRefs: [{{group: \"\", kind: Service, {target}}}]\n  \
         validation: {{{validation}}}\n---\n"
    )
}

/// `validation` fields: `hostname`, trusting the CA of ConfigMap `config_map`.
fn ca_ref(hostname: &str, config_map: &str) -> String {
    format!(
        "hostname: {hostname}, caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {config_map}}}]"
    )
}

/// An HTTPRoute for any host sending each path prefix to its Service port.
fn route(rules: &[(&str, &str, u16)]) -> String {
    let rules: String = rules
        .iter()
        .map(|(prefix, service, port)| {
            format!(
                "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    \
                 backendRefs: [{{name: {service}, port: {port}}}]\n"
            )
        })
        .collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: app, namespace: default}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n{rules}---\n"
    )
}

/// Policy `name`'s condition `type_` in its (only) ancestor entry: (status, reason).
fn condition(out: &Output, name: &str, type_: &str) -> (String, String) {
    let ancestors = out
        .status
        .backend_tls_policies
        .get(&ObjectRef::new("default", name))
        .unwrap_or_else(|| panic!("no status for policy {name}: {:#?}", out.status));
    assert_eq!(ancestors.len(), 1, "{ancestors:#?}");
    let c = ancestors[0]
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("policy {name} has no {type_}: {ancestors:#?}"));
    (c.status.clone(), c.reason.clone())
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_string(), reason.to_string())
}

/// The support backends on their own, without a gateway: SNI and ALPN are
/// reported, a client that does not trust the CA is refused after the TCP
/// connection is counted.
#[tokio::test]
async fn tls_echo_backends_answer_directly() {
    let ca = TestCa::new("direct CA");
    let echo = tls_echo::serve("127.0.97.2", "direct", &ca, &["direct.backend.test"]).await;
    let url = format!("https://direct.backend.test:{}/x?y=1", echo.addr.port());
    let client = |ca: &TestCa, h1: bool| {
        kengine_gateway::kengine::admin::install_crypto_provider();
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
            .resolve("direct.backend.test", echo.addr);
        if h1 {
            b = b.http1_only();
        }
        b.build().unwrap()
    };
    for (h1, proto, alpn) in [(true, "HTTP/1.1", "http/1.1"), (false, "HTTP/2.0", "h2")] {
        let resp = client(&ca, h1).get(&url).send().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert_eq!(body["pod"], "direct", "{body}");
        assert_eq!(body["path"], "/x?y=1", "{body}");
        assert_eq!(body["sni"], "direct.backend.test", "{body}");
        assert_eq!(body["proto"], proto, "{body}");
        assert_eq!(body["alpn"], alpn, "{body}");
    }
    assert_eq!((echo.connections(), echo.requests()), (2, 2));
    let stranger = TestCa::new("stranger CA");
    assert!(client(&stranger, false).get(&url).send().await.is_err());
    assert_eq!((echo.connections(), echo.requests()), (3, 2));
    assert_eq!(
        echo.client_hellos(),
        vec![Some("direct.backend.test".to_string()); 3]
    );

    let grpc = grpc_echo::serve_tls(
        "127.0.97.3",
        "grpc",
        ca.server_config(&["grpc.backend.test"], &[]),
    )
    .await;
    let r = grpc_echo::call_tls(
        grpc.addr,
        &format!("grpc.backend.test:{}", grpc.addr.port()),
        &ca.pem,
        ECHO,
        &[],
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        (r.pod(), r.server_name(), r.negotiated_protocol()),
        ("grpc", "grpc.backend.test", "h2")
    );
    assert_eq!((grpc.connections(), grpc.requests()), (1, 1));
}

#[tokio::test]
async fn dials_over_tls_with_the_policy_hostname_as_sni() {
    let ca = TestCa::new("secure CA");
    let backend = tls_echo::serve("127.0.90.2", "secure", &ca, &["secure.backend.test"]).await;
    let yaml = format!(
        "{CLASS}{}{}{}{}{}",
        gateway("127.0.90.1"),
        ca.config_map("secure-ca"),
        service("secure", backend.addr),
        policy(
            "name: secure",
            "name: secure",
            &ca_ref("secure.backend.test", "secure-ca")
        ),
        route(&[("/", "secure", backend.addr.port())]),
    );
    let (k, out) = serve_yaml(&yaml).await;
    assert_eq!(
        condition(&out, "secure", "Accepted"),
        pair("True", "Accepted")
    );
    let c = http();
    for path in ["/", "/secure/x"] {
        let got = tls_echo::get(&c, gateway_addr("127.0.90.1"), "app.example.com", path).await;
        assert_eq!(got.status, 200, "{path}: {got:?}\n{}", k.log_text());
        assert_eq!(got.pod(), Some("secure"), "{got:?}");
        assert_eq!(got.body["path"], path, "{got:?}");
        assert_eq!(got.sni(), Some("secure.backend.test"), "{got:?}");
    }
}

/// A certificate without the policy's hostname, or from a CA the policy does
/// not trust, fails verification: 502, and no request reaches the backend.
#[tokio::test]
async fn verification_failures_are_502() {
    let ca = TestCa::new("backend CA");
    let other = TestCa::new("other CA");
    let dns = ["secure.backend.test"];
    let good = tls_echo::serve("127.0.91.2", "good", &ca, &dns).await;
    let wrong_host = tls_echo::serve("127.0.91.3", "wrong-host", &ca, &dns).await;
    let wrong_ca = tls_echo::serve("127.0.91.4", "wrong-ca", &ca, &dns).await;
    let yaml = format!(
        "{CLASS}{}{}{}{}{}{}{}{}{}{}",
        gateway("127.0.91.1"),
        ca.config_map("backend-ca"),
        other.config_map("other-ca"),
        service("good", good.addr),
        service("wrong-host", wrong_host.addr),
        service("wrong-ca", wrong_ca.addr),
        policy(
            "name: good",
            "name: good",
            &ca_ref("secure.backend.test", "backend-ca")
        ),
        policy(
            "name: wrong-host",
            "name: wrong-host",
            &ca_ref("other.backend.test", "backend-ca")
        ),
        policy(
            "name: wrong-ca",
            "name: wrong-ca",
            &ca_ref("secure.backend.test", "other-ca")
        ),
        route(&[
            ("/good", "good", good.addr.port()),
            ("/wrong-host", "wrong-host", wrong_host.addr.port()),
            ("/wrong-ca", "wrong-ca", wrong_ca.addr.port()),
        ]),
    );
    let (k, out) = serve_yaml(&yaml).await;
    for name in ["good", "wrong-host", "wrong-ca"] {
        // Nothing the translator can see is wrong with them.
        assert_eq!(condition(&out, name, "Accepted"), pair("True", "Accepted"));
    }
    let gw = gateway_addr("127.0.91.1");
    let c = http();
    let got = tls_echo::get(&c, gw, "app.example.com", "/good").await;
    assert_eq!(
        (got.status, got.pod()),
        (200, Some("good")),
        "{got:?}\n{}",
        k.log_text()
    );
    for (path, backend, sni) in [
        ("/wrong-host", &wrong_host, "other.backend.test"),
        ("/wrong-ca", &wrong_ca, "secure.backend.test"),
    ] {
        let got = tls_echo::get(&c, gw, "app.example.com", path).await;
        assert_eq!(got.status, 502, "{path}: {got:?}");
        assert_eq!(backend.requests(), 0, "{path}: a request got through");
        // Dialed with the policy's hostname, then refused by the gateway.
        let hellos = backend.client_hellos();
        assert!(!hellos.is_empty(), "{path}: never dialed");
        assert!(
            hellos.iter().all(|h| h.as_deref() == Some(sni)),
            "{path}: {hellos:?}"
        );
    }
}

/// `wellKnownCACertificates: System` does not trust a private CA:
/// verification happens, it is not skipped.
#[tokio::test]
async fn system_roots_reject_a_private_ca() {
    let ca = TestCa::new("private CA");
    let backend = tls_echo::serve("127.0.92.2", "private", &ca, &["private.backend.test"]).await;
    let yaml = format!(
        "{CLASS}{}{}{}{}",
        gateway("127.0.92.1"),
        service("private", backend.addr),
        policy(
            "name: system",
            "name: private",
            "hostname: private.backend.test, wellKnownCACertificates: System"
        ),
        route(&[("/", "private", backend.addr.port())]),
    );
    let (k, out) = serve_yaml(&yaml).await;
    assert_eq!(
        condition(&out, "system", "Accepted"),
        pair("True", "Accepted")
    );
    let got = tls_echo::get(&http(), gateway_addr("127.0.92.1"), "app.example.com", "/").await;
    assert_eq!(got.status, 502, "{got:?}\n{}", k.log_text());
    assert_eq!(backend.requests(), 0);
    let hellos = backend.client_hellos();
    assert!(!hellos.is_empty(), "never dialed");
    assert!(
        hellos
            .iter()
            .all(|h| h.as_deref() == Some("private.backend.test")),
        "{hellos:?}"
    );
}

/// A policy whose ConfigMap does not exist cannot be applied: 500, the
/// backend is never dialed (in particular not in plaintext).
#[tokio::test]
async fn missing_config_map_is_500_and_never_dials() {
    let ca = TestCa::new("unused CA");
    let backend = tls_echo::serve("127.0.93.2", "orphan", &ca, &["orphan.backend.test"]).await;
    let yaml = format!(
        "{CLASS}{}{}{}{}",
        gateway("127.0.93.1"),
        service("orphan", backend.addr),
        policy(
            "name: orphan",
            "name: orphan",
            &ca_ref("orphan.backend.test", "no-such-config-map")
        ),
        route(&[("/", "orphan", backend.addr.port())]),
    );
    let (_k, out) = serve_yaml(&yaml).await;
    assert_eq!(
        condition(&out, "orphan", "Accepted"),
        pair("False", "NoValidCACertificate")
    );
    assert_eq!(
        condition(&out, "orphan", "ResolvedRefs"),
        pair("False", "InvalidCACertificateRef")
    );
    let c = http();
    for _ in 0..3 {
        let got = tls_echo::get(&c, gateway_addr("127.0.93.1"), "app.example.com", "/").await;
        assert_eq!(got.status, 500, "{got:?}");
    }
    assert_eq!(backend.connections(), 0, "the backend was dialed");
}

/// Of two policies on the same Service the older applies, even when its name
/// sorts last; the newer is Conflicted.
#[tokio::test]
async fn older_policy_wins_a_conflict() {
    let ca = TestCa::new("conflict CA");
    let backend = tls_echo::serve("127.0.94.2", "shared", &ca, &["right.backend.test"]).await;
    let yaml = format!(
        "{CLASS}{}{}{}{}{}{}",
        gateway("127.0.94.1"),
        ca.config_map("shared-ca"),
        service("shared", backend.addr),
        policy(
            "name: z-older, creationTimestamp: \"2026-01-01T00:00:00Z\"",
            "name: shared",
            &ca_ref("right.backend.test", "shared-ca")
        ),
        // Applied, it would fail verification: the certificate lacks this name.
        policy(
            "name: a-newer, creationTimestamp: \"2026-02-01T00:00:00Z\"",
            "name: shared",
            &ca_ref("wrong.backend.test", "shared-ca")
        ),
        route(&[("/", "shared", backend.addr.port())]),
    );
    let (k, out) = serve_yaml(&yaml).await;
    assert_eq!(
        condition(&out, "z-older", "Accepted"),
        pair("True", "Accepted")
    );
    assert_eq!(
        condition(&out, "a-newer", "Accepted"),
        pair("False", "Conflicted")
    );
    let got = tls_echo::get(&http(), gateway_addr("127.0.94.1"), "app.example.com", "/").await;
    assert_eq!(
        (got.status, got.pod(), got.sni()),
        (200, Some("shared"), Some("right.backend.test")),
        "{got:?}\n{}",
        k.log_text()
    );
}

/// A sectionName policy governs its port; a Service-wide one the others.
#[tokio::test]
async fn each_port_gets_its_own_policy() {
    let ca = TestCa::new("ports CA");
    let https = tls_echo::serve("127.0.95.2", "https", &ca, &["https.backend.test"]).await;
    let admin = tls_echo::serve("127.0.95.2", "admin", &ca, &["admin.backend.test"]).await;
    let yaml = format!(
        "{CLASS}{}{}\
apiVersion: v1
kind: Service
metadata: {{name: multi, namespace: default}}
spec: {{clusterIP: 127.0.95.2, ports: [{{name: https, port: {}}}, {{name: admin, port: {}}}]}}
---
{}{}{}",
        gateway("127.0.95.1"),
        ca.config_map("ports-ca"),
        https.addr.port(),
        admin.addr.port(),
        policy(
            "name: service-wide",
            "name: multi",
            &ca_ref("https.backend.test", "ports-ca")
        ),
        policy(
            "name: admin-only",
            "name: multi, sectionName: admin",
            &ca_ref("admin.backend.test", "ports-ca")
        ),
        route(&[
            ("/https", "multi", https.addr.port()),
            ("/admin", "multi", admin.addr.port()),
        ]),
    );
    let (k, out) = serve_yaml(&yaml).await;
    for name in ["service-wide", "admin-only"] {
        assert_eq!(condition(&out, name, "Accepted"), pair("True", "Accepted"));
    }
    let gw = gateway_addr("127.0.95.1");
    let c = http();
    for (path, pod, sni) in [
        ("/https", "https", "https.backend.test"),
        ("/admin", "admin", "admin.backend.test"),
    ] {
        let got = tls_echo::get(&c, gw, "app.example.com", path).await;
        assert_eq!(
            (got.status, got.pod(), got.sni()),
            (200, Some(pod), Some(sni)),
            "{path}: {got:?}\n{}",
            k.log_text()
        );
    }
}

/// gRPC over TLS (HTTP/2 by ALPN) to a backend with a usable policy; a
/// backend whose policy cannot be applied is UNAVAILABLE and never dialed.
#[tokio::test]
async fn grpc_over_tls_to_the_backend() {
    let ca = TestCa::new("grpc CA");
    let good = grpc_echo::serve_tls(
        "127.0.96.2",
        "good",
        ca.server_config(&["grpc.backend.test"], &[]),
    )
    .await;
    let bad = grpc_echo::serve_tls(
        "127.0.96.3",
        "bad",
        ca.server_config(&["grpc.backend.test"], &[]),
    )
    .await;
    let grpc_route = |name: &str, host: &str, service: &str, port: u16| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{host}]\n  \
             rules: [{{backendRefs: [{{name: {service}, port: {port}}}]}}]\n---\n"
        )
    };
    let yaml = format!(
        "{CLASS}{}{}{}{}{}{}{}{}",
        gateway("127.0.96.1"),
        ca.config_map("grpc-ca"),
        service("good", good.addr),
        service("bad", bad.addr),
        policy(
            "name: good",
            "name: good",
            &ca_ref("grpc.backend.test", "grpc-ca")
        ),
        // Not a ConfigMap: the policy cannot be applied.
        policy(
            "name: bad",
            "name: bad",
            "hostname: grpc.backend.test, caCertificateRefs: [{group: \"\", kind: Secret, name: grpc-ca}]"
        ),
        grpc_route("good", "good.example.com", "good", good.addr.port()),
        grpc_route("bad", "bad.example.com", "bad", bad.addr.port()),
    );
    let (k, out) = serve_yaml(&yaml).await;
    assert_eq!(
        condition(&out, "good", "Accepted"),
        pair("True", "Accepted")
    );
    assert_eq!(
        condition(&out, "bad", "Accepted"),
        pair("False", "NoValidCACertificate")
    );
    let gw = gateway_addr("127.0.96.1");
    let r = grpc_echo::call(gw, "good.example.com", ECHO, &[])
        .await
        .unwrap_or_else(|s| panic!("{s:?}\n{}", k.log_text()));
    assert_eq!(
        (r.pod(), r.server_name(), r.negotiated_protocol()),
        ("good", "grpc.backend.test", "h2")
    );
    let failed = grpc_echo::call(gw, "bad.example.com", ECHO, &[]).await;
    assert_eq!(code(&failed), Code::Unavailable, "{failed:?}");
    assert_eq!(bad.connections(), 0, "the backend was dialed");
}

/// A Gateway's backend client certificate (`spec.tls.backend
/// .clientCertificateRef`) is presented to a backend that requires one; a
/// Gateway without it, on the same route and backend, is refused by the
/// backend (502) and no request gets through.
#[tokio::test]
async fn presents_the_gateways_client_certificate_to_the_backend() {
    let ca = TestCa::new("mtls backend CA");
    let clients = TestCa::new("gateway clients CA");
    let dns = ["mtls.backend.test"];
    let backend = tls_echo::serve_for("127.0.98.3", "mtls", &ca, &dns, Some(&clients)).await;
    let (cert, key) = clients.leaf_pem(
        "gateway-client",
        &[],
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let with_cert = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {name: with-cert, namespace: default}\nspec:\n  gatewayClassName: kengine\n  \
         addresses: [{type: IPAddress, value: 127.0.98.1}]\n  \
         listeners: [{name: http, protocol: HTTP, port: 18600}]\n  \
         tls: {backend: {clientCertificateRef: {name: client-cert}}}\n---\n";
    let yaml = format!(
        "{CLASS}{}{with_cert}{}{}{}{}{}",
        gateway("127.0.98.2"),
        tls_secret("client-cert", &cert, &key),
        ca.config_map("backend-ca"),
        service("mtls", backend.addr),
        policy(
            "name: mtls",
            "name: mtls",
            &ca_ref("mtls.backend.test", "backend-ca")
        ),
        route(&[("/", "mtls", backend.addr.port())]),
    )
    .replace(
        "parentRefs: [{name: gw}]",
        "parentRefs: [{name: gw}, {name: with-cert}]",
    );
    let (k, out) = serve_yaml(&yaml).await;
    let gateway_status = &out.status.gateways[&ObjectRef::new("default", "with-cert")];
    let resolved = (gateway_status.conditions.iter().flatten())
        .find(|c| c.type_ == "ResolvedRefs")
        .map(|c| pair(&c.status, &c.reason));
    assert_eq!(resolved, Some(pair("True", "ResolvedRefs")));
    let c = http();
    let got = tls_echo::get(&c, gateway_addr("127.0.98.1"), "app.example.com", "/").await;
    assert_eq!(got.status, 200, "{got:?}\n{}", k.log_text());
    let presented = {
        use base64::Engine as _;
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        base64::engine::general_purpose::STANDARD.encode(der)
    };
    assert_eq!(got.body["client_cert"], presented.as_str(), "{got:?}");
    assert_eq!(got.sni(), Some("mtls.backend.test"));

    let requests = backend.requests();
    let got = tls_echo::get(&c, gateway_addr("127.0.98.2"), "app.example.com", "/").await;
    assert_eq!(got.status, 502, "without a client certificate: {got:?}");
    assert_eq!(backend.requests(), requests, "a request got through");
}
