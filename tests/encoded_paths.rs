//! Percent-encoded path values (issue 13 item 18) against real Caddy 2.8.4:
//! its `path_regexp` matches the decoded request path, so values are
//! decoded the same way before they become regexps.

use kengine_gateway_test_support as support;

use std::net::SocketAddr;

use kengine_gateway::sinks::pusher::{Pushed, Pusher};
use support::*;

#[tokio::test]
async fn percent_encoded_exact_and_prefix_values_match() {
    let v1 = echo("127.0.50.2", "v1").await;
    let route = |name: &str, kind: &str, value: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  \
             rules:\n  - matches: [{{path: {{type: {kind}, value: \"{value}\"}}}}]\n    \
             backendRefs: [{{name: v1, port: {}}}]\n---\n",
            v1.port()
        )
    };
    let yaml = format!(
        "{CLASS}apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: gw, namespace: default}}\nspec:\n  gatewayClassName: kengine\n  \
         addresses: [{{type: IPAddress, value: 127.0.50.1}}]\n  \
         listeners: [{{name: http, protocol: HTTP, port: 18080}}]\n---\n{}{}{}{}{}",
        service("v1", v1),
        route("space", "Exact", "/a%20b"),
        route("utf8", "PathPrefix", "/caf%C3%A9"),
        route("percent", "Exact", "/100%25"),
        route("slash", "Exact", "/x%2Fy"),
    );
    let k = kengine().await;
    let pushed = Pusher::new(k.process.admin().clone())
        .push(&translate_yaml(&yaml).config().clone())
        .await
        .unwrap();
    assert_eq!(pushed, Pushed::Loaded);
    let gw: SocketAddr = "127.0.50.1:18080".parse().unwrap();
    let c = http();
    let cases = [
        ("/a%20b", 200),
        ("/a%20bc", 404),
        ("/caf%C3%A9", 200),
        ("/caf%c3%a9/menu", 200),
        ("/caf%C3%A9s", 404),
        ("/cafe", 404),
        ("/100%25", 200),
        ("/100", 404),
        ("/100%2541", 404),
        ("/x%2Fy", 200),
        ("/x%2fy", 200),
    ];
    for (path, status) in cases {
        let got = get(&c, gw, "any.example.com", path).await;
        let want = (status, (status == 200).then(|| "v1".to_string()));
        assert_eq!(got, want, "{path}");
    }
}

/// The path and query the echo backend received for `path`.
async fn received(c: &reqwest::Client, gw: SocketAddr, path: &str) -> String {
    let resp = c
        .get(format!("http://{gw}{path}"))
        .header("Host", "any.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{path}");
    let body: serde_json::Value = resp.json().await.unwrap();
    body["path"].as_str().unwrap().to_string()
}

/// Issue 13 item 19: ReplacePrefixMatch changes the matched prefix only;
/// encoded octets in the rest reach the backend as they came.
#[tokio::test]
async fn replace_prefix_match_keeps_the_rest_encoded() {
    let v1 = echo("127.0.51.2", "v1").await;
    let route = |name: &str, prefix: &str, replacement: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  \
             rules:\n  - matches: [{{path: {{type: PathPrefix, value: \"{prefix}\"}}}}]\n    \
             filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, \
             replacePrefixMatch: \"{replacement}\"}}}}}}]\n    \
             backendRefs: [{{name: v1, port: {}}}]\n---\n",
            v1.port()
        )
    };
    let yaml = format!(
        "{CLASS}apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: gw, namespace: default}}\nspec:\n  gatewayClassName: kengine\n  \
         addresses: [{{type: IPAddress, value: 127.0.51.1}}]\n  \
         listeners: [{{name: http, protocol: HTTP, port: 18080}}]\n---\n{}{}{}{}",
        service("v1", v1),
        route("old", "/old", "/new"),
        route("root", "/root", "/"),
        route("cafe", "/caf%C3%A9", "/d%C3%A9j%C3%A0/$1"),
    );
    let k = kengine().await;
    let pushed = Pusher::new(k.process.admin().clone())
        .push(&translate_yaml(&yaml).config().clone())
        .await
        .unwrap();
    assert_eq!(pushed, Pushed::Loaded);
    let gw: SocketAddr = "127.0.51.1:18080".parse().unwrap();
    let c = http();
    let cases = [
        ("/old", "/new"),
        ("/old/", "/new/"),
        ("/old/a%2Fb%25c?q=%2F", "/new/a%2Fb%25c?q=%2F"),
        ("/old/%E2%82%AC%20x", "/new/%E2%82%AC%20x"),
        ("/root/a%2Fb", "/a%2Fb"),
        ("/root", "/"),
        ("//old//a%2Fb", "/new//a%2Fb"),
        ("/caf%c3%a9/x%2Fy", "/d%C3%A9j%C3%A0/$1/x%2Fy"),
    ];
    for (path, want) in cases {
        assert_eq!(received(&c, gw, path).await, want, "{path}");
    }
}
