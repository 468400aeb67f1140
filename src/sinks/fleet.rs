//! Pushes each fleet's config to its ready pods: only to pods whose loaded
//! config differs, a bounded number at once, with retries and backoff per
//! pod. One pod failing never holds up the others.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use tracing::Instrument as _;

use crate::kengine::config::Config;
use crate::kengine::{AdminClient, AdminError, PushFailure};

/// One ready Kengine pod and a client for its admin API.
#[derive(Clone)]
pub struct PodTarget {
    pub uid: String,
    pub name: String,
    pub client: AdminClient,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodResult {
    pub name: String,
    /// The hash of the config the pod runs now, if we know it.
    pub loaded: Option<String>,
    /// Why the wanted config is not loaded, if it is not.
    pub error: Option<String>,
    /// What this push did.
    pub outcome: PushOutcome,
}

/// What one push to one pod did; its label is bounded, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushOutcome {
    Loaded,
    Unchanged,
    Failed(PushFailure),
}

impl PushOutcome {
    pub fn label(self) -> &'static str {
        match self {
            PushOutcome::Loaded => "loaded",
            PushOutcome::Unchanged => "unchanged",
            PushOutcome::Failed(f) => f.label(),
        }
    }
}

#[derive(Default)]
pub struct FleetPusher {
    /// pod uid → hash of the config it accepted from us.
    loaded: HashMap<String, String>,
    /// pod uid → the pod's own admin settings, kept in every config we push.
    admin: HashMap<String, serde_json::Value>,
    /// Pods whose admin proxy holds files from us: when the config names
    /// none any more, they are told to drop them (private keys).
    holding_files: HashSet<String>,
}

pub use crate::kengine::files::Files;

/// Short, stable digest of a config.
pub fn config_hash(config: &Config) -> String {
    short_hash(&config.to_json())
}

pub use kengine_gateway_model::short_hash;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushCounts {
    pub loaded: u64,
    pub unchanged: u64,
    pub failed: u64,
}

impl FleetPusher {
    /// Brings every target to `config`. Returns one result per target, in
    /// target order, and what happened.
    pub async fn push(
        &mut self,
        targets: &[PodTarget],
        config: &Config,
        files: &Files,
        concurrency: usize,
    ) -> (Vec<PodResult>, PushCounts) {
        enum Outcome {
            Unchanged,
            Loaded(serde_json::Value),
            Failed(PushFailure, String),
        }
        let hash = config_hash(config);
        let body = config.to_json();
        // Kengine would refuse the whole config: say where, send nothing.
        let refused = crate::kengine::check::config(config)
            .err()
            .map(|e| format!("config not loaded: Kengine would refuse it {e}"));
        // Collected first: a lazy `map` closure in the stream makes the
        // future not provably `Send`, and each fleet's lane spawns it.
        let jobs: Vec<_> = targets
            .iter()
            .map(|t| {
                let current = self.loaded.get(&t.uid) == Some(&hash);
                let admin = self.admin.get(&t.uid).cloned();
                // Only an admin proxy takes files: a pod is sent some when
                // the config names files, or to clear what it holds.
                let files =
                    (!files.is_empty() || self.holding_files.contains(&t.uid)).then_some(files);
                let body = &body;
                let refused = refused.clone();
                async move {
                    if current {
                        return (t, Outcome::Unchanged);
                    }
                    if let Some(e) = refused {
                        return (t, Outcome::Failed(PushFailure::Unloadable, e));
                    }
                    let span = tracing::info_span!("pod_push", pod = %t.name);
                    match push_one(&t.client, body, files, admin)
                        .instrument(span)
                        .await
                    {
                        Ok(admin) => (t, Outcome::Loaded(admin)),
                        Err((kind, e)) => (t, Outcome::Failed(kind, e)),
                    }
                }
            })
            .collect();
        let outcomes: Vec<_> = futures_util::stream::iter(jobs)
            .buffered(concurrency.max(1))
            .collect()
            .await;
        let mut counts = PushCounts::default();
        let mut results = Vec::new();
        for (t, outcome) in outcomes {
            let (error, outcome) = match outcome {
                Outcome::Unchanged => {
                    counts.unchanged += 1;
                    (None, PushOutcome::Unchanged)
                }
                Outcome::Loaded(admin) => {
                    counts.loaded += 1;
                    self.admin.insert(t.uid.clone(), admin);
                    self.loaded.insert(t.uid.clone(), hash.clone());
                    if files.is_empty() {
                        self.holding_files.remove(&t.uid);
                    } else {
                        self.holding_files.insert(t.uid.clone());
                    }
                    (None, PushOutcome::Loaded)
                }
                Outcome::Failed(kind, e) => {
                    counts.failed += 1;
                    (Some(e), PushOutcome::Failed(kind))
                }
            };
            results.push(PodResult {
                name: t.name.clone(),
                loaded: self.loaded.get(&t.uid).cloned(),
                error,
                outcome,
            });
        }
        (results, counts)
    }

    /// Forgets pods that are gone, so a pod that comes back is pushed to.
    pub fn retain(&mut self, live: &[String]) {
        self.loaded.retain(|uid, _| live.contains(uid));
        self.admin.retain(|uid, _| live.contains(uid));
        self.holding_files.retain(|uid| live.contains(uid));
    }
}

/// Loads `body` into one pod, keeping its admin settings: a config without
/// them would move its admin API. Transport errors are retried with
/// backoff; a rejection is final (Kengine keeps its old config), and so is
/// a timeout: a pod that did not answer within the client's timeout is
/// hung or still loading, and asking again would hold the pass up to
/// [`ATTEMPTS`] times as long.
async fn push_one(
    client: &AdminClient,
    body: &[u8],
    files: Option<&Files>,
    admin: Option<serde_json::Value>,
) -> Result<serde_json::Value, (PushFailure, String)> {
    let mut delay = Duration::from_millis(200);
    let mut admin = admin;
    for attempt in 1..=ATTEMPTS {
        match load(client, body, files, &mut admin).await {
            Ok(()) => return Ok(admin.unwrap_or_default()),
            Err(AdminError::Rejected { status, body }) => {
                return Err((
                    PushFailure::Rejected,
                    format!("kengine rejected the config (HTTP {status}): {body}"),
                ));
            }
            Err(e @ AdminError::Transport(_)) if attempt == ATTEMPTS || e.is_timeout() => {
                return Err((e.failure(), e.to_string()));
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    unreachable!("the last attempt returns")
}

const ATTEMPTS: u32 = 4;

async fn load(
    client: &AdminClient,
    body: &[u8],
    files: Option<&Files>,
    admin: &mut Option<serde_json::Value>,
) -> Result<(), AdminError> {
    // Kengine reads them while loading the config.
    if let Some(files) = files {
        client.put_files(files).await?;
    }
    let settings = match admin {
        Some(a) => a.clone(),
        None => admin.insert(client.admin_config().await?).clone(),
    };
    let mut config: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(body).expect("our own config parses");
    if settings.is_null() {
        config.remove("admin");
    } else {
        config.insert("admin".into(), settings);
    }
    client
        .load(serde_json::to_vec(&config).expect("JSON values serialize"))
        .await
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;

    use super::*;

    /// A stand-in admin API: the first `drop_first` loads lose their
    /// connection, then every load answers `status`. Counts load requests.
    async fn admin(drop_first: usize, status: u16) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let loads = Arc::new(AtomicUsize::new(0));
        let counter = loads.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let counter = counter.clone();
                            async move {
                                if req.uri().path() == "/config/admin" {
                                    return Ok::<_, String>(hyper::Response::new(Full::new(
                                        Bytes::from("null"),
                                    )));
                                }
                                let n = counter.fetch_add(1, Ordering::SeqCst);
                                if n < drop_first {
                                    // An error from the service drops the connection unanswered.
                                    return Err("dropped".to_string());
                                }
                                let body = if status == 200 {
                                    "".to_string()
                                } else {
                                    r#"{"error":"bad config"}"#.to_string()
                                };
                                Ok(hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap())
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, loads)
    }

    fn target(addr: SocketAddr, uid: &str) -> PodTarget {
        PodTarget {
            uid: uid.into(),
            name: format!("pod-{uid}"),
            client: AdminClient::remote(addr, None, Duration::from_secs(5)).unwrap(),
        }
    }

    #[tokio::test]
    async fn pushes_only_what_changed_and_reports_each_pod() {
        let (ok, ok_loads) = admin(0, 200).await;
        let (bad, bad_loads) = admin(0, 400).await;
        let mut pusher = FleetPusher::default();
        let pods = [target(ok, "a"), target(bad, "b")];
        let config = Config::default();
        let (results, counts) = pusher.push(&pods, &config, &Files::new(), 4).await;
        assert_eq!(
            counts,
            PushCounts {
                loaded: 1,
                unchanged: 0,
                failed: 1
            }
        );
        assert_eq!(results[0].error, None);
        assert!(
            results[1].error.as_deref().unwrap().contains("bad config"),
            "{results:?}"
        );
        let outcomes: Vec<&str> = results.iter().map(|r| r.outcome.label()).collect();
        assert_eq!(outcomes, ["loaded", "rejected"]);
        assert_eq!(
            bad_loads.load(Ordering::SeqCst),
            1,
            "a rejection is not retried"
        );
        let (results, counts) = pusher.push(&pods, &config, &Files::new(), 4).await;
        assert_eq!(results[0].outcome, PushOutcome::Unchanged);
        assert_eq!(
            counts,
            PushCounts {
                loaded: 0,
                unchanged: 1,
                failed: 1
            },
            "the loaded pod is not pushed again"
        );
        assert_eq!(ok_loads.load(Ordering::SeqCst), 1);
        pusher.retain(&[]);
        let (_, counts) = pusher.push(&pods[..1], &config, &Files::new(), 4).await;
        assert_eq!(
            counts.loaded, 1,
            "a pod that went away and came back is pushed again"
        );
    }

    /// A stand-in admin proxy that answers everything and records each
    /// request as `METHOD path`.
    async fn recording_admin() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let line = format!("{} {}", req.method(), req.uri().path());
                        log.lock().unwrap().push(line);
                        let body = if req.uri().path() == "/config/admin" {
                            "null"
                        } else {
                            "{}"
                        };
                        std::future::ready(Ok::<_, String>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        ))))
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (addr, seen)
    }

    /// Files go to a pod before the config that names them; a pod that
    /// holds files is told to drop them once the config names none, and
    /// then left alone.
    #[tokio::test]
    async fn files_go_before_their_config_and_are_cleared_once() {
        let (addr, seen) = recording_admin().await;
        let pods = [target(addr, "a")];
        let mut pusher = FleetPusher::default();
        // Three different configs.
        let config = |name: &str| Config {
            admin: Some(crate::kengine::config::Admin {
                listen: Some(name.into()),
                config: None,
            }),
            ..Default::default()
        };
        let files = Files::from([("client-1.crt".to_string(), "PEM".to_string())]);
        let mut requests = Vec::new();
        for (version, files) in [("v1", &files), ("v2", &Files::new()), ("v3", &Files::new())] {
            let (_, counts) = pusher.push(&pods, &config(version), files, 1).await;
            assert_eq!(counts.loaded, 1, "{version}");
            requests.push(std::mem::take(&mut *seen.lock().unwrap()));
        }
        let files_then_load = ["PUT /kengine-gateway/files", "POST /load"];
        // The first load also reads the pod's admin settings.
        let first = [files_then_load[0], "GET /config/admin", files_then_load[1]];
        assert_eq!(requests[0], first, "{requests:?}");
        assert_eq!(requests[1], files_then_load, "cleared: {requests:?}");
        assert_eq!(requests[2], ["POST /load"], "{requests:?}");
    }

    #[tokio::test]
    async fn a_hung_pod_is_given_up_after_one_timeout() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        let hung = PodTarget {
            uid: "hung".into(),
            name: "pod-hung".into(),
            client: AdminClient::remote(addr, None, Duration::from_millis(300)).unwrap(),
        };
        let (results, counts) = FleetPusher::default()
            .push(&[hung], &Config::default(), &Files::new(), 1)
            .await;
        assert_eq!(counts.failed, 1);
        assert!(results[0].error.is_some(), "{results:?}");
        assert_eq!(results[0].outcome.label(), "timeout");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "not asked again");
    }

    #[tokio::test]
    async fn transport_errors_are_retried_and_a_dead_pod_does_not_block_others() {
        let (flaky, loads) = admin(2, 200).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut pusher = FleetPusher::default();
        let (results, counts) = pusher
            .push(
                &[target(closed, "gone"), target(flaky, "flaky")],
                &Config::default(),
                &Files::new(),
                2,
            )
            .await;
        assert_eq!(
            counts,
            PushCounts {
                loaded: 1,
                unchanged: 0,
                failed: 1
            },
            "{results:?}"
        );
        assert!(
            results[0].error.as_deref().unwrap().contains("unreachable"),
            "{results:?}"
        );
        assert_eq!(results[0].outcome.label(), "unreachable");
        assert_eq!(
            loads.load(Ordering::SeqCst),
            3,
            "two dropped attempts, then a load"
        );
    }
}
