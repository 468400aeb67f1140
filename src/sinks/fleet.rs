//! Pushes each fleet's config to its ready pods: only to pods whose loaded
//! config differs, a bounded number at once, with retries and backoff per
//! pod. One pod failing never holds up the others.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::kengine::config::Config;
use crate::kengine::{AdminClient, AdminError};

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
}

#[derive(Default)]
pub struct FleetPusher {
    /// pod uid → hash of the config it accepted from us.
    loaded: HashMap<String, String>,
    /// pod uid → the pod's own admin settings, kept in every config we push.
    admin: HashMap<String, serde_json::Value>,
}

/// Short, stable digest of a config.
pub fn config_hash(config: &Config) -> String {
    short_hash(&config.to_json())
}

/// The first 8 bytes of a SHA-256, in hex.
pub fn short_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

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
        concurrency: usize,
    ) -> (Vec<PodResult>, PushCounts) {
        enum Outcome {
            Unchanged,
            Loaded(serde_json::Value),
            Failed(String),
        }
        let hash = config_hash(config);
        let body = config.to_json();
        let jobs = targets.iter().map(|t| {
            let current = self.loaded.get(&t.uid) == Some(&hash);
            let admin = self.admin.get(&t.uid).cloned();
            let body = &body;
            async move {
                if current {
                    return (t, Outcome::Unchanged);
                }
                match push_one(&t.client, body, admin).await {
                    Ok(admin) => (t, Outcome::Loaded(admin)),
                    Err(e) => (t, Outcome::Failed(e)),
                }
            }
        });
        let outcomes: Vec<_> = futures_util::stream::iter(jobs)
            .buffered(concurrency.max(1))
            .collect()
            .await;
        let mut counts = PushCounts::default();
        let mut results = Vec::new();
        for (t, outcome) in outcomes {
            let error = match outcome {
                Outcome::Unchanged => {
                    counts.unchanged += 1;
                    None
                }
                Outcome::Loaded(admin) => {
                    counts.loaded += 1;
                    self.admin.insert(t.uid.clone(), admin);
                    self.loaded.insert(t.uid.clone(), hash.clone());
                    None
                }
                Outcome::Failed(e) => {
                    counts.failed += 1;
                    Some(e)
                }
            };
            results.push(PodResult {
                name: t.name.clone(),
                loaded: self.loaded.get(&t.uid).cloned(),
                error,
            });
        }
        (results, counts)
    }

    /// Forgets pods that are gone, so a pod that comes back is pushed to.
    pub fn retain(&mut self, live: &[String]) {
        self.loaded.retain(|uid, _| live.contains(uid));
        self.admin.retain(|uid, _| live.contains(uid));
    }
}

/// Loads `body` into one pod, keeping its admin settings: a config without
/// them would move its admin API. Transport errors are retried with
/// backoff; a rejection is final (Kengine keeps its old config).
async fn push_one(
    client: &AdminClient,
    body: &[u8],
    admin: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let admin = match admin {
        Some(a) => a,
        None => client.admin_config().await.map_err(|e| e.to_string())?,
    };
    let mut config: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if admin.is_null() {
        config.remove("admin");
    } else {
        config.insert("admin".into(), admin.clone());
    }
    let bytes = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=4 {
        match client.load(bytes.clone()).await {
            Ok(()) => return Ok(admin),
            Err(AdminError::Rejected { status, body }) => {
                return Err(format!(
                    "kengine rejected the config (HTTP {status}): {body}"
                ));
            }
            Err(e) if attempt == 4 => return Err(e.to_string()),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    unreachable!("the last attempt returns")
}
