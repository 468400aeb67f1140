//! One push task per fleet, fed the fleet's latest config.
//!
//! A reconcile pass hands each fleet its newest config and targets and moves
//! on: it never waits for a push, so a fleet whose pods hang (a push can
//! take the admin client's whole timeout) holds up no other fleet's new
//! config. Each lane is a task reading a `watch` channel, so a config that
//! arrives while an older one is being pushed replaces any that was queued:
//! a superseded config is never pushed, and an older one never after a newer
//! one. A lane publishes what its last push did; the pass reads that and
//! writes status (one status writer), and a lane whose result changed asks
//! for a pass through [`Lanes::pushed`]. Dropping a lane (its fleet is gone,
//! the controller shuts down or stops leading) aborts its task.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tracing::Instrument as _;

use super::fleet::{Files, FleetPusher, PodResult, PodTarget, PushCounts, config_hash};
use crate::kengine::config::Config;
use crate::snapshot::ObjectRef;

/// What one finished push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// Which push this was: the job it ran.
    pub job: JobId,
    /// One result per target, in target order.
    pub results: Vec<PodResult>,
    pub counts: PushCounts,
}

/// A push's identity: the config (by hash) and the pods it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobId {
    pub hash: String,
    /// Target uids, in target order.
    pub pods: Vec<String>,
}

/// What a pass may say of a fleet after handing it a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The last push was of this config to these pods; a failed one is
    /// being retried.
    Pushed(Arc<Done>),
    /// Queued or being pushed: nothing to say yet.
    InFlight,
}

/// Called in the lane when a push finishes, before its result is published
/// (metrics, logs).
pub type Observer = Arc<dyn Fn(&ObjectRef, &Done) + Send + Sync>;

struct Job {
    seq: u64,
    id: JobId,
    config: Arc<Config>,
    files: Arc<Files>,
    targets: Vec<PodTarget>,
}

struct Lane {
    jobs: watch::Sender<Option<Arc<Job>>>,
    /// The last finished push, with the `seq` of its job.
    done: watch::Receiver<Option<(u64, Arc<Done>)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Lane {
    fn send(&self, seq: u64, id: JobId, load: (&Config, &Files), targets: &[PodTarget]) {
        self.jobs.send_replace(Some(Arc::new(Job {
            seq,
            id,
            config: Arc::new(load.0.clone()),
            files: Arc::new(load.1.clone()),
            targets: targets.to_vec(),
        })));
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Lanes {
    concurrency: usize,
    observe: Observer,
    pushed: Arc<Notify>,
    lanes: BTreeMap<ObjectRef, Lane>,
}

impl Lanes {
    /// `concurrency` bounds the pods pushed at once within each fleet.
    pub fn new(concurrency: usize, observe: Observer) -> Self {
        Lanes {
            concurrency,
            observe,
            pushed: Arc::new(Notify::new()),
            lanes: BTreeMap::new(),
        }
    }

    /// Fires (one stored permit) when a lane finished a push whose result
    /// differs from its previous one: another pass should read it.
    pub fn pushed(&self) -> Arc<Notify> {
        self.pushed.clone()
    }

    /// Hands `fleet` its latest config (and the files it names) and
    /// targets, starting its lane if it has none, and says what is known
    /// of that push. Never waits. The files are named by their content, so
    /// the config's hash stands for both.
    pub fn submit(
        &mut self,
        fleet: &ObjectRef,
        config: &Config,
        files: &Files,
        targets: &[PodTarget],
    ) -> Progress {
        let id = JobId {
            hash: config_hash(config),
            pods: targets.iter().map(|t| t.uid.clone()).collect(),
        };
        let lane = self.lanes.entry(fleet.clone()).or_insert_with(|| {
            spawn(
                fleet.clone(),
                self.concurrency,
                self.observe.clone(),
                self.pushed.clone(),
            )
        });
        let done = lane.done.borrow().clone();
        let (seq, latest) = lane
            .jobs
            .borrow()
            .as_ref()
            .map_or((0, None), |j| (j.seq, Some(j.id.clone())));
        if latest.as_ref() == Some(&id) {
            match done {
                // The last job handed over is done: it stands; a failed one
                // is tried again.
                Some((s, done)) if s == seq => {
                    if done.counts.failed > 0 {
                        lane.send(seq + 1, id, (config, files), targets);
                    }
                    return Progress::Pushed(done);
                }
                // Queued or in flight already (a retry, if an earlier run
                // of it is done): a second copy would push it twice.
                Some((_, done)) if done.job == id => return Progress::Pushed(done),
                _ => return Progress::InFlight,
            }
        }
        // New: it replaces whatever is queued (never what is in flight).
        lane.send(seq + 1, id, (config, files), targets);
        Progress::InFlight
    }

    /// Ends the lanes of fleets `keep` rejects, aborting a push in flight.
    pub fn retain(&mut self, mut keep: impl FnMut(&ObjectRef) -> bool) {
        self.lanes.retain(|k, _| keep(k));
    }

    /// Ends every lane (this replica stopped leading, or shuts down).
    pub fn clear(&mut self) {
        self.lanes.clear();
    }

    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }
}

fn spawn(fleet: ObjectRef, concurrency: usize, observe: Observer, pushed: Arc<Notify>) -> Lane {
    let (jobs, mut next) = watch::channel::<Option<Arc<Job>>>(None);
    let (publish, done) = watch::channel(None);
    let task = tokio::spawn(async move {
        let mut pusher = FleetPusher::default();
        // Ends when the sender (the `Lane`) is dropped.
        while next.changed().await.is_ok() {
            let Some(job) = next.borrow_and_update().clone() else {
                continue;
            };
            // Forget pods that left the fleet, so one that comes back is pushed to.
            pusher.retain(&job.id.pods);
            let span = tracing::info_span!("fleet_push", fleet = %fleet, seq = job.seq, pods = job.targets.len());
            let (results, counts) = pusher
                .push(&job.targets, &job.config, &job.files, concurrency)
                .instrument(span)
                .await;
            let finished = Done {
                job: job.id.clone(),
                results,
                counts,
            };
            observe(&fleet, &finished);
            let changed = publish
                .borrow()
                .as_ref()
                .is_none_or(|(_, last): &(u64, Arc<Done>)| **last != finished);
            publish.send_replace(Some((job.seq, Arc::new(finished))));
            if changed {
                pushed.notify_one();
            }
        }
    });
    Lane { jobs, done, task }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::time::Duration;

    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    use serde_json::json;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::kengine::AdminClient;

    /// A stand-in admin API that records each load's server name and holds
    /// each load until `gate` gives a permit.
    struct Admin {
        addr: SocketAddr,
        loads: Arc<Mutex<Vec<String>>>,
        gate: Arc<Semaphore>,
        started: Arc<Notify>,
    }

    async fn admin() -> Admin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let loads = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Semaphore::new(0));
        let started = Arc::new(Notify::new());
        let (l, g, s) = (loads.clone(), gate.clone(), started.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (l, g, s) = (l.clone(), g.clone(), s.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (l, g, s) = (l.clone(), g.clone(), s.clone());
                            async move {
                                if req.uri().path() == "/config/admin" {
                                    return Ok::<_, String>(hyper::Response::new(Full::new(
                                        Bytes::from("null"),
                                    )));
                                }
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let config: serde_json::Value =
                                    serde_json::from_slice(&body).unwrap();
                                let name = config["apps"]["http"]["servers"]
                                    .as_object()
                                    .and_then(|s| s.keys().next().cloned())
                                    .unwrap_or_default();
                                l.lock().unwrap().push(name);
                                s.notify_one();
                                g.acquire().await.unwrap().forget();
                                Ok(hyper::Response::new(Full::new(Bytes::new())))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Admin {
            addr,
            loads,
            gate,
            started,
        }
    }

    fn config(name: &str) -> Config {
        serde_json::from_value(json!({"apps": {"http": {"servers": {name: {"listen": [":1"]}}}}}))
            .unwrap()
    }

    fn target(addr: SocketAddr) -> PodTarget {
        PodTarget {
            uid: format!("uid-{addr}"),
            name: "pod".into(),
            client: AdminClient::remote(addr, None, Duration::from_secs(30)).unwrap(),
        }
    }

    fn fleet(name: &str) -> ObjectRef {
        ObjectRef {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn lanes() -> (Lanes, Arc<Mutex<Vec<String>>>) {
        let observed = Arc::new(Mutex::new(Vec::new()));
        let o = observed.clone();
        let lanes = Lanes::new(
            4,
            Arc::new(move |fleet: &ObjectRef, done: &Done| {
                o.lock()
                    .unwrap()
                    .push(format!("{}:{}", fleet.name, done.job.hash));
            }),
        );
        (lanes, observed)
    }

    /// Submits until the lane says the push of `config` is done.
    async fn pushed(
        lanes: &mut Lanes,
        key: &ObjectRef,
        config: &Config,
        pods: &[PodTarget],
    ) -> Arc<Done> {
        let notify = lanes.pushed();
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Progress::Pushed(done) = lanes.submit(key, config, &Files::new(), pods) {
                    return done;
                }
                notify.notified().await;
            }
        })
        .await
        .expect("the push finishes")
    }

    #[tokio::test]
    async fn the_latest_config_wins_and_a_superseded_one_is_never_pushed() {
        let pod = admin().await;
        let pods = [target(pod.addr)];
        let (mut lanes, observed) = lanes();
        let key = fleet("a");
        assert_eq!(
            lanes.submit(&key, &config("v1"), &Files::new(), &pods),
            Progress::InFlight
        );
        pod.started.notified().await;
        // v1 is being pushed; v2 queues, then v3 replaces it.
        assert_eq!(
            lanes.submit(&key, &config("v2"), &Files::new(), &pods),
            Progress::InFlight
        );
        assert_eq!(
            lanes.submit(&key, &config("v3"), &Files::new(), &pods),
            Progress::InFlight
        );
        assert_eq!(
            lanes.submit(&key, &config("v3"), &Files::new(), &pods),
            Progress::InFlight,
            "queued once"
        );
        pod.gate.add_permits(10);
        let done = pushed(&mut lanes, &key, &config("v3"), &pods).await;
        assert_eq!(done.job.hash, config_hash(&config("v3")));
        assert_eq!(done.counts.loaded, 1);
        assert_eq!(*pod.loads.lock().unwrap(), ["v1", "v3"]);
        assert_eq!(
            *observed.lock().unwrap(),
            [
                format!("a:{}", config_hash(&config("v1"))),
                format!("a:{}", config_hash(&config("v3")))
            ]
        );
        // Pushed and loaded: handing it over again pushes nothing.
        for _ in 0..3 {
            assert!(matches!(
                lanes.submit(&key, &config("v3"), &Files::new(), &pods),
                Progress::Pushed(_)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pod.loads.lock().unwrap().len(), 2);
        assert_eq!(observed.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_failed_push_is_retried_when_handed_over_again() {
        // Nothing listens: every push fails (after its retries).
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let pods = [target(closed)];
        let (mut lanes, observed) = lanes();
        let key = fleet("a");
        let done = pushed(&mut lanes, &key, &config("v1"), &pods).await;
        assert_eq!(done.counts.failed, 1);
        assert_eq!(observed.lock().unwrap().len(), 1);
        // The result stands while the retry runs; the retry is queued once.
        assert!(matches!(
            lanes.submit(&key, &config("v1"), &Files::new(), &pods),
            Progress::Pushed(_)
        ));
        tokio::time::timeout(Duration::from_secs(20), async {
            while observed.lock().unwrap().len() < 2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("retried");
        assert_eq!(observed.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_hung_fleet_holds_up_no_other_and_a_removed_fleets_lane_ends() {
        // Fleet a's pod accepts and never answers; b's answers at once.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hung = listener.local_addr().unwrap();
        let (accepted, mut connection) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = accepted.send(socket).await;
            }
        });
        let b = admin().await;
        b.gate.add_permits(100);
        let (mut lanes, _) = lanes();
        let (ka, kb) = (fleet("a"), fleet("b"));
        lanes.submit(&ka, &config("v1"), &Files::new(), &[target(hung)]);
        let mut socket = connection.recv().await.unwrap();
        pushed(&mut lanes, &kb, &config("v1"), &[target(b.addr)]).await;
        pushed(&mut lanes, &kb, &config("v2"), &[target(b.addr)]).await;
        assert_eq!(*b.loads.lock().unwrap(), ["v1", "v2"]);
        assert_eq!(
            lanes.submit(&ka, &config("v1"), &Files::new(), &[target(hung)]),
            Progress::InFlight
        );

        // Fleet a is gone: its lane ends, and its push with it (the
        // connection closes).
        lanes.retain(|k| *k != ka);
        assert_eq!(lanes.len(), 1);
        let mut buf = vec![0u8; 65536];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            use tokio::io::AsyncReadExt;
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the hung push was abandoned");
        lanes.clear();
        assert!(lanes.is_empty());
    }
}
