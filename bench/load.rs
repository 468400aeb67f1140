//! A small bounded HTTP/1.1 load generator and a probe, on hyper's
//! connection API: a fixed number of keep-alive connections, each sending
//! one request after another until a deadline or a stop flag.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Options {
    /// Sleep between requests on a connection (zero: back to back).
    pub pause: Duration,
    /// Tally the echo backend's `pod` field of every answer.
    pub count_pods: bool,
    /// Re-send a request once on a new connection when a reused keep-alive
    /// connection was closed under it, as Go's Transport does for
    /// idempotent requests.
    pub retry_reused: bool,
}

#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    pub elapsed: Duration,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer: the connection failed or was closed
    /// under the request.
    pub transport_errors: u64,
    /// Of those, requests sent on a reused keep-alive connection that the
    /// server closed as the request went out: the race RFC 9112 §9.3.1 lets
    /// clients retry for idempotent requests (Go's Transport and browsers do).
    pub reused_conn_errors: u64,
    /// Requests re-sent on a new connection after such a race (only when
    /// the run retries, as Go's Transport does); not counted as errors.
    pub retried: u64,
    /// The first few transport error messages, for the report.
    pub error_samples: Vec<String>,
    /// Connections opened (the first one per worker included).
    pub connects: u64,
    /// Answer latencies in microseconds.
    pub latencies_us: Vec<u32>,
    /// Answers by the echo backend's `pod` field (only when asked for).
    pub pods: BTreeMap<String, u64>,
}

impl LoadResult {
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn non_2xx(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn rps(&self) -> f64 {
        self.answered() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn merge(&mut self, other: LoadResult) {
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        for (p, n) in other.pods {
            *self.pods.entry(p).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.reused_conn_errors += other.reused_conn_errors;
        self.retried += other.retried;
        self.connects += other.connects;
        self.latencies_us.extend(other.latencies_us);
        for e in other.error_samples {
            if self.error_samples.len() < 5 {
                self.error_samples.push(e);
            }
        }
    }

    pub fn latency_json(&mut self) -> serde_json::Value {
        self.latencies_us.sort_unstable();
        let l = &self.latencies_us;
        serde_json::json!({
            "p50_us": crate::util::percentile(l, 50.0),
            "p99_us": crate::util::percentile(l, 99.0),
            "max_us": l.last().copied().unwrap_or(0),
        })
    }

    pub fn report(&mut self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.answered(),
            "seconds": crate::util::round3(self.elapsed.as_secs_f64()),
            "rps": self.rps().round(),
            "statuses": self.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "non_2xx": self.non_2xx(),
            "transport_errors": self.transport_errors,
            "reused_conn_errors": self.reused_conn_errors,
            "retried": self.retried,
            "connects": self.connects,
            "latency": self.latency_json(),
            "pods": self.pods,
        })
    }
}

/// Opens a connection for requests to `addr`.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One GET on `sender`: the status and the body.
pub async fn get(
    sender: &mut SendRequest<Empty<Bytes>>,
    target: &Target,
) -> anyhow::Result<(u16, Bytes)> {
    sender.ready().await?;
    let req = Request::get(&target.path)
        .header(header::HOST, &target.host)
        .body(Empty::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Runs `connections` workers against `target` until `duration` has passed
/// or `stop` is set, whichever comes first.
pub async fn run(
    target: &Target,
    connections: usize,
    duration: Duration,
    stop: Arc<AtomicBool>,
    options: Options,
) -> LoadResult {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let target = target.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            worker(&target, deadline, &stop, options).await
        }));
    }
    let mut total = LoadResult::default();
    for t in tasks {
        if let Ok(r) = t.await {
            total.merge(r);
        }
    }
    total.elapsed = start.elapsed();
    total
}

async fn worker(
    target: &Target,
    deadline: Instant,
    stop: &AtomicBool,
    options: Options,
) -> LoadResult {
    let mut r = LoadResult::default();
    let done = || stop.load(Ordering::Relaxed) || Instant::now() >= deadline;
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    let mut on_conn = 0u64;
    while !done() {
        // A keep-alive connection the server closed while idle is not a
        // failed request: reconnect, as every client does.
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match connect(target.addr).await {
                Ok(s) => {
                    r.connects += 1;
                    on_conn = 0;
                    sender = Some(s);
                }
                Err(e) => {
                    r.transport_errors += 1;
                    sample(&mut r, format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            }
        }
        let s = sender.as_mut().expect("connected above");
        let t = Instant::now();
        match get(s, target).await {
            Ok((status, body)) => {
                on_conn += 1;
                r.latencies_us
                    .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                *r.statuses.entry(status).or_default() += 1;
                if options.count_pods {
                    let pod = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("pod").and_then(|p| p.as_str()).map(str::to_string))
                        .unwrap_or_else(|| "-".into());
                    *r.pods.entry(pod).or_default() += 1;
                }
            }
            Err(e) => {
                let reused = on_conn > 0;
                sender = None;
                if reused && options.retry_reused {
                    r.retried += 1;
                    continue;
                }
                r.transport_errors += 1;
                if reused {
                    r.reused_conn_errors += 1;
                }
                sample(
                    &mut r,
                    format!("request #{} on its connection: {e}", on_conn + 1),
                );
            }
        }
        if !options.pause.is_zero() {
            tokio::time::sleep(options.pause).await;
        }
    }
    r
}

fn sample(r: &mut LoadResult, message: String) {
    if r.error_samples.len() < 5 {
        r.error_samples.push(message);
    }
}
