//! Per-fleet push lanes with a real Caddy: a fleet whose admin API hangs
//! holds up no other fleet's new config.

use kengine_gateway_test_support as support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kengine_gateway::kengine::AdminClient;
use kengine_gateway::kengine::config::Config;
use kengine_gateway::sinks::fleet::{Files, PodTarget};
use kengine_gateway::sinks::fleet_lanes::{Lanes, Progress};
use kengine_gateway::snapshot::ObjectRef;
use support::*;

const GATEWAY: &str = "127.0.46.1:18130";

/// A Gateway on [`GATEWAY`] with one route to `backend`.
fn config(backend: SocketAddr) -> Config {
    let yaml = format!(
        "{CLASS}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: kengine
  addresses: [{{type: IPAddress, value: 127.0.46.1}}]
  listeners: [{{name: http, protocol: HTTP, port: 18130}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: backend, port: {}}}]}}]
",
        service("backend", backend),
        backend.port(),
    );
    translate_yaml(&yaml).config().clone()
}

/// Which echo backend answers through the Gateway, if one does.
async fn serving() -> Option<String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let body = client
        .get(format!("http://{GATEWAY}/"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let body: serde_json::Value = serde_json::from_str(&body).ok()?;
    body["pod"].as_str().map(str::to_string)
}

/// Waits (bounded) until `backend` answers through the Gateway.
async fn until_serving(backend: &str) {
    let waited = tokio::time::timeout(Duration::from_secs(15), async {
        while serving().await.as_deref() != Some(backend) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "fleet b does not serve {backend} (it serves {:?})",
        serving().await
    );
}

/// Drains what the peer sent; `false` once it closed the connection.
fn still_open(socket: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match socket.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::WouldBlock,
        }
    }
}

fn fleet(name: &str) -> ObjectRef {
    ObjectRef {
        namespace: "default".into(),
        name: name.into(),
    }
}

#[tokio::test]
async fn a_hung_fleet_holds_up_no_other_fleets_new_config() {
    let v1 = echo("127.0.46.2", "v1").await;
    let v2 = echo("127.0.46.3", "v2").await;
    // Fleet a's only pod: an admin API that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.46.9:2019")
        .await
        .unwrap();
    let (accepted, mut connections) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = accepted.send(socket).await;
        }
    });
    let hung = [PodTarget {
        uid: "a-0".into(),
        name: "kengine-a-0".into(),
        // The controller's own timeout: a minute.
        client: AdminClient::remote(
            "127.0.46.9:2019".parse().unwrap(),
            None,
            Duration::from_secs(60),
        )
        .unwrap(),
    }];
    // Fleet b's only pod: a real Caddy.
    let b = kengine().await;
    let pods = [PodTarget {
        uid: "b-0".into(),
        name: "kengine-b-0".into(),
        client: b.process.admin().clone(),
    }];
    let mut lanes = Lanes::new(4, Arc::new(|_: &ObjectRef, _: &_| {}));
    let (a_key, b_key) = (fleet("a"), fleet("b"));

    // One pass: v1 to both fleets, a first.
    assert_eq!(
        lanes.submit(&a_key, &config(v1), &Files::new(), &hung),
        Progress::InFlight
    );
    lanes.submit(&b_key, &config(v1), &Files::new(), &pods);
    let connection = tokio::time::timeout(Duration::from_secs(10), connections.recv())
        .await
        .expect("a's push reaches its hung pod")
        .unwrap();
    until_serving("v1").await;

    // The next pass: v2 to b, while a's push still hangs.
    lanes.submit(&a_key, &config(v1), &Files::new(), &hung);
    lanes.submit(&b_key, &config(v2), &Files::new(), &pods);
    until_serving("v2").await;
    assert_eq!(
        lanes.submit(&a_key, &config(v1), &Files::new(), &hung),
        Progress::InFlight,
        "a's push still hangs"
    );
    assert!(still_open(&connection), "a's push connection is still open");
    let b_progress = lanes.submit(&b_key, &config(v2), &Files::new(), &pods);
    let Progress::Pushed(done) = b_progress else {
        panic!("b's push of v2 is done: {b_progress:?}");
    };
    assert_eq!(done.counts.loaded, 1, "{done:?}");
    assert_eq!(done.results[0].error, None);
    assert!(
        connections.try_recv().is_err(),
        "a's config was handed over again and again, but sent once"
    );
}
