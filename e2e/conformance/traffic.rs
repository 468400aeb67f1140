//! Requests as the suite makes them, and the checks on what comes back.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// One exchange to run: `request`, `expectedRequest`, `response`, `backend`,
/// `namespace` and `redirect` of a case step.
pub struct Exchange<'a> {
    pub step: &'a Value,
    /// Where the Gateway listens.
    pub gateway: SocketAddr,
    /// Trusted for HTTPS requests.
    pub ca_pem: &'a [u8],
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub echo: Option<Value>,
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

pub async fn send(x: &Exchange<'_>) -> Result<Answer, String> {
    let req = &x.step["request"];
    match s(req, "protocol") {
        Some("h2") => return send_h2(x).await,
        Some("websocket") => return websocket(x).await,
        _ => {}
    }
    let scheme = s(req, "scheme").unwrap_or("http");
    let path = s(req, "path").unwrap_or("/");
    let method = s(req, "method").unwrap_or("GET");
    let protocol = s(req, "protocol").unwrap_or("HTTP/1.1");
    let default_port = x.gateway.port();
    let port = req
        .get("listenerPort")
        .and_then(Value::as_u64)
        .map(|p| p as u16)
        .unwrap_or(default_port);
    let addr = SocketAddr::new(x.gateway.ip(), port);
    let host = s(req, "host");
    kengine_gateway::kengine::admin::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .no_proxy();
    if protocol == "h2c" {
        builder = builder.http2_prior_knowledge();
    } else if protocol == "HTTP/1.1" {
        builder = builder.http1_only();
    }
    let url_host: String;
    if scheme == "https" {
        let sni = s(req, "sni")
            .or(host)
            .map(|h| h.split(':').next().unwrap_or(h).to_string());
        let cert = reqwest::Certificate::from_pem(x.ca_pem).map_err(|e| e.to_string())?;
        builder = builder.tls_certs_only([cert]);
        match sni {
            Some(name) => {
                builder = builder.resolve(&name, addr);
                url_host = format!("{name}:{port}");
            }
            None => url_host = addr.to_string(),
        }
    } else {
        url_host = addr.to_string();
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let url = format!("{scheme}://{url_host}{path}");
    let mut request = client.request(
        reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?,
        &url,
    );
    if let Some(h) = host {
        request = request.header("Host", h);
    }
    if let Some(headers) = req.get("headers").and_then(Value::as_object) {
        for (k, v) in headers {
            request = request.header(k.as_str(), v.as_str().unwrap_or_default());
        }
    }
    // The suite always sends this echo control header, empty unless asked.
    let set: Vec<String> = x.step["backendSetResponseHeaders"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or_default()))
        .collect();
    request = request.header("X-Echo-Set-Header", set.join(","));
    let resp = request.send().await.map_err(|e| {
        let mut chain = format!("{method} {url}: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push_str(&format!(": {s}"));
            source = s.source();
        }
        chain
    })?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap_or_default();
    let echo = serde_json::from_str::<Value>(&body)
        .ok()
        .filter(|v| v.get("pod").is_some());
    Ok(Answer {
        status,
        headers,
        echo,
    })
}

/// Does the answer meet the step's expectations? `Err` says why not.
pub fn check(x: &Exchange<'_>, a: &Answer) -> Result<(), String> {
    let step = x.step;
    let req = &step["request"];
    let resp = &step["response"];
    let codes: Vec<u64> = match (resp.get("statusCode"), resp.get("statusCodes")) {
        (Some(c), _) => vec![c.as_u64().unwrap_or(200)],
        (None, Some(list)) => list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect(),
        (None, None) => vec![200],
    };
    let status = u64::from(a.status);
    // The suite treats a request timeout answered as 408 or 504 alike.
    let equivalent =
        |c: u64| c == status || (matches!(c, 408 | 504) && matches!(status, 408 | 504));
    if !codes.iter().any(|&c| equivalent(c)) {
        return Err(format!("status {status}, want {codes:?}"));
    }
    let squash = resp["ignoreWhitespace"] == true;
    let norm = |v: &str| {
        if squash {
            v.replace(' ', "")
        } else {
            v.to_string()
        }
    };
    let joined = |name: &str| -> String {
        let values: Vec<&str> = a
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        norm(&values.join(","))
    };
    for (name, want) in resp
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let want = norm(want.as_str().unwrap_or_default());
        if joined(name) != want {
            return Err(format!(
                "response header {name}: {:?}, want {want:?}",
                joined(name)
            ));
        }
    }
    for (name, valid) in resp
        .get("validHeaderValues")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let got = joined(name);
        if !valid
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| norm(v.as_str().unwrap_or_default()) == got)
        {
            return Err(format!(
                "response header {name}: {got:?}, want one of {valid}"
            ));
        }
    }
    for name in resp
        .get("absentHeaders")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = name.as_str().unwrap_or_default();
        if a.headers.contains_key(name) {
            return Err(format!("response header {name} should be absent"));
        }
    }
    if let Some(redirect) = step.get("redirect") {
        let location = a
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or("no Location header")?;
        let url =
            reqwest::Url::parse(location).map_err(|e| format!("Location {location:?}: {e}"))?;
        if let Some(want) = s(redirect, "scheme")
            && url.scheme() != want
        {
            return Err(format!(
                "redirect scheme {} want {want} ({location})",
                url.scheme()
            ));
        }
        if let Some(want) = s(redirect, "host")
            && url.host_str() != Some(want)
        {
            return Err(format!(
                "redirect host {:?} want {want} ({location})",
                url.host_str()
            ));
        }
        let want_port = redirect.get("port").map(|p| {
            p.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| p.to_string())
        });
        let got_port = url.port().map(|p| p.to_string()).unwrap_or_default();
        if want_port.as_deref().unwrap_or("") != got_port {
            return Err(format!(
                "redirect port {got_port:?} want {want_port:?} ({location})"
            ));
        }
        let want_path = s(redirect, "path").unwrap_or_else(|| s(req, "path").unwrap_or("/"));
        let want_path = want_path.split('?').next().unwrap_or(want_path);
        if url.path() != want_path {
            return Err(format!(
                "redirect path {} want {want_path} ({location})",
                url.path()
            ));
        }
    }
    if !(status == 200 || status == 204) || step.get("redirect").is_some() {
        return Ok(());
    }
    let backend = s(step, "backend");
    let namespace = s(step, "namespace");
    if namespace == Some("") {
        return Ok(()); // Answered by the gateway itself.
    }
    let Some(echo) = &a.echo else {
        return if backend.is_some() || namespace.is_some() {
            Err("answer is not from an echo backend".into())
        } else {
            Ok(())
        };
    };
    if let Some(ns) = namespace
        && s(echo, "namespace") != Some(ns)
    {
        return Err(format!("namespace {:?} want {ns}", s(echo, "namespace")));
    }
    if let Some(b) = backend
        && !s(echo, "pod").unwrap_or_default().starts_with(b)
    {
        return Err(format!("pod {:?} want {b}*", s(echo, "pod")));
    }
    let expected = step.get("expectedRequest").unwrap_or(&Value::Null);
    let want_path = s(expected, "path")
        .or_else(|| s(req, "path"))
        .unwrap_or("/");
    if s(echo, "path") != Some(want_path) {
        return Err(format!(
            "backend saw path {:?} want {want_path}",
            s(echo, "path")
        ));
    }
    let want_method = s(expected, "method")
        .or_else(|| s(req, "method"))
        .unwrap_or("GET");
    if s(echo, "method") != Some(want_method) {
        return Err(format!(
            "backend saw method {:?} want {want_method}",
            s(echo, "method")
        ));
    }
    if let Some(want_host) = s(expected, "host").or_else(|| s(req, "host"))
        && s(echo, "host") != Some(want_host)
    {
        return Err(format!(
            "backend saw host {:?} want {want_host}",
            s(echo, "host")
        ));
    }
    let seen = |name: &str| -> Vec<String> {
        echo["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    for (name, want) in expected
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let got = seen(name);
        let want = want.as_str().unwrap_or_default();
        if got.join(",") != want && !got.iter().any(|g| g == want) {
            return Err(format!("backend saw header {name}: {got:?}, want {want:?}"));
        }
    }
    for name in expected
        .get("absentHeaders")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = name.as_str().unwrap_or_default();
        if !seen(name).is_empty() {
            return Err(format!("backend saw header {name}, which should be absent"));
        }
    }
    Ok(())
}

/// HTTP/2 over TLS with the TLS server name and `:authority` set apart,
/// which reqwest cannot do: the misdirected-request test needs both.
async fn send_h2(x: &Exchange<'_>) -> Result<Answer, String> {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::pem::PemObject;
    let req = &x.step["request"];
    let host = s(req, "host").unwrap_or("localhost");
    let sni = s(req, "sni").unwrap_or(host).to_string();
    let path = s(req, "path").unwrap_or("/");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(x.ca_pem) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(x.gateway)
        .await
        .map_err(|e| format!("connect {}: {e}", x.gateway))?;
    let name = rustls::pki_types::ServerName::try_from(sni.clone()).map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {sni}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(s(req, "method").unwrap_or("GET"))
        .uri(format!("https://{host}{path}"))
        .header("X-Echo-Set-Header", "")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| format!("h2 request: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let echo = serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(|v| v.get("pod").is_some());
    Ok(Answer {
        status,
        headers,
        echo,
    })
}

/// A websocket round trip: every frame must come back unchanged. Success
/// reads as a 200 with no echo body to check.
async fn websocket(x: &Exchange<'_>) -> Result<Answer, String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let req = &x.step["request"];
    let path = s(req, "path").unwrap_or("/");
    let mut request = format!("ws://{}{path}", x.gateway)
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if let Some(origin) = s(req, "origin") {
        request
            .headers_mut()
            .insert("Origin", origin.parse().map_err(|e| format!("{e}"))?);
    }
    let tcp = tokio::net::TcpStream::connect(x.gateway)
        .await
        .map_err(|e| e.to_string())?;
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .map_err(|e| format!("websocket upgrade: {e}"))?;
    for frame in req["websocketFrames"].as_array().into_iter().flatten() {
        let message = match (frame.get("text"), frame.get("binary")) {
            (Some(t), _) => Message::text(t.as_str().unwrap_or_default()),
            (_, Some(b)) => Message::binary(
                b.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_u64())
                    .map(|v| v as u8)
                    .collect::<Vec<u8>>(),
            ),
            _ => return Err(format!("frame {frame} is neither text nor binary")),
        };
        ws.send(message.clone()).await.map_err(|e| e.to_string())?;
        let back = loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => break m,
                other => return Err(format!("no echo of {frame}: {other:?}")),
            }
        };
        if back != message {
            return Err(format!("sent {message:?}, got back {back:?}"));
        }
    }
    let _ = ws.close(None).await;
    Ok(Answer {
        status: 200,
        headers: Default::default(),
        echo: None,
    })
}
