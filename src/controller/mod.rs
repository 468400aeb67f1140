//! `kengine-gateway controller`: the Kubernetes provider feeding the same
//! translate as `render` and `standalone`, and sinks that push each fleet's
//! config to its pods and write status.
//!
//! Reconciling is level-triggered and global: any change to any watched
//! object (a BackendTLSPolicy, a Secret, a Pod...) coalesces into one pass
//! that recomputes everything, pushes only to pods whose config changed and
//! writes only the status that changed. A full pass over 5,000 routes costs
//! milliseconds (BENCHMARKS.md), and nothing that depends on an object can
//! be missed.

mod http;
pub mod metrics;
mod pass;
pub mod rbac;
mod reconcile;
pub use reconcile::settings as operator_settings;
mod status_lane;
mod targets;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use kube::Client;
use tokio::sync::{mpsc, watch};

use crate::cli::ControllerArgs;
use crate::providers::kubernetes::{self, Scope};
use http::Health;
use metrics::Metrics;

pub async fn run(args: ControllerArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    crate::kengine::admin::install_crypto_provider();
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::default());
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(http::serve(args.health_addr, health.clone(), None));
    servers.spawn(http::serve(
        args.metrics_addr,
        health.clone(),
        Some(metrics.clone()),
    ));
    // A health or metrics server that stops (its address cannot be bound,
    // or it panicked) ends the process with an error: a controller without
    // its probes would be restarted by the kubelet anyway, and one without
    // metrics would go unwatched. Dropping the set aborts the servers.
    let server_failed = async move {
        match servers.join_next().await {
            Some(Ok(Err(e))) => e,
            Some(Ok(Ok(()))) => anyhow::anyhow!("a health or metrics server stopped"),
            Some(Err(e)) => anyhow::anyhow!("a health or metrics server panicked: {e}"),
            None => std::future::pending().await,
        }
    };
    let failure = std::sync::Mutex::new(None);
    let shutdown = async {
        tokio::select! {
            () = shutdown => {}
            e = server_failed => *failure.lock().expect("not poisoned") = Some(e),
        }
    };
    let (leading, lease_task) = elect(&client, &args).await?;
    let mut reconciler = reconcile::Reconciler::new(client.clone(), &args, metrics.clone());

    tokio::pin!(shutdown);
    'discover: loop {
        let served = loop {
            match kubernetes::discover(&client, args.manage_fleets).await {
                Ok(s) if s.required_missing().is_empty() => break s,
                Ok(s) => {
                    tracing::error!(missing = ?s.required_missing(), "Gateway API CRDs are not installed; install them (the chart does not). Checking again in 30 s")
                }
                Err(e) => tracing::error!("discovery failed, retrying in 30 s: {e}"),
            }
            tokio::select! {
                () = &mut shutdown => break 'discover,
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        };
        if !served.missing.is_empty() {
            tracing::warn!(missing = ?served.missing, "optional CRDs are not installed; their features are unavailable");
        }
        let (tx, mut changes) = mpsc::channel(1);
        // Asks for another pass when the status lane took changes.
        let again = tx.clone();
        let debounce = Duration::from_millis(args.debounce_ms);
        let max_delay = Duration::from_millis(args.max_delay_ms.max(args.debounce_ms));
        let scope = Scope {
            namespace: args.watch_namespace.as_deref(),
            configmap_selector: &args.configmap_selector,
        };
        let watches = kubernetes::watch(&client, &served, &scope, tx);
        tokio::select! {
            () = &mut shutdown => break 'discover,
            () = watches.wait_synced() => {}
        }
        health.ready.store(true, Ordering::Relaxed);
        tracing::info!("caches synced");
        reconciler.set_served(&served);
        let mut resync = tokio::time::interval(Duration::from_secs(args.resync_seconds.max(1)));
        let mut rediscover = tokio::time::interval(Duration::from_secs(60));
        rediscover.tick().await;
        let mut leading = leading.clone();
        // A fleet's push finished with a new result: a pass writes it.
        let pushed = reconciler.pushed();
        loop {
            tokio::select! {
                () = &mut shutdown => break 'discover,
                Some(()) = changes.recv() => {
                    // A burst is one pass (so one reload): once no change
                    // came for `debounce`, at the latest `max_delay` after
                    // its first.
                    quiet(&mut changes, debounce, max_delay).await;
                }
                _ = resync.tick() => {}
                () = pushed.notified() => {}
                Ok(()) = leading.changed() => {
                    tracing::info!(leader = *leading.borrow(), "leadership changed");
                }
                _ = rediscover.tick() => {
                    match kubernetes::discover(&client, args.manage_fleets).await {
                        Ok(now) if now != served => {
                            tracing::info!("served Gateway API kinds changed; restarting watches");
                            continue 'discover;
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("rediscovery failed: {e}"),
                    }
                    continue;
                }
            }
            let is_leader = *leading.borrow();
            metrics.leader.set(i64::from(is_leader));
            if !is_leader {
                // No pushes from a replica that does not lead.
                reconciler.stand_down();
            } else if reconciler.reconcile(&watches, &mut changes, debounce).await {
                let _ = again.try_send(());
            }
        }
    }
    tracing::info!("shutting down");
    // Ends every fleet's push lane before the lease is released.
    drop(reconciler);
    // Closing the channel ends the lease task, which releases the lease so
    // another replica takes over at once.
    drop(leading);
    if let Some(task) = lease_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let failure = failure.lock().expect("not poisoned").take();
    match failure {
        Some(e) => Err(e.context("health or metrics server")),
        None => Ok(()),
    }
}

/// Leader election through a Lease, so two replicas never both push or
/// write. Without it this replica always leads.
async fn elect(
    client: &Client,
    args: &ControllerArgs,
) -> anyhow::Result<(watch::Receiver<bool>, Option<tokio::task::JoinHandle<()>>)> {
    if !args.leader_elect {
        // The sender is dropped: the value stays `true` and never changes.
        let (_, rx) = watch::channel(true);
        return Ok((rx, None));
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "kengine-gateway".into())
    });
    let namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let field_manager = format!("{}-{identity}", crate::sinks::status_writer::FIELD_MANAGER);
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(15)
        .with_grace(5)
        // One field manager per replica: taking a free Lease is a
        // server-side apply without force, and only a different manager
        // makes a concurrent take a conflict. With a shared manager both
        // replicas "won" and led together until their next renewal.
        .with_field_manager(field_manager)
        .build()
        .await
        .context("leader election")?;
    let (rx, task) = manager.watch().await;
    let task = tokio::spawn(async move {
        if let Ok(Err(e)) = task.await {
            tracing::error!("leader election stopped: {e}");
        }
    });
    Ok((rx, Some(task)))
}

/// Now in whole seconds, as the API server stores times, so an unchanged
/// status compares equal.
fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second())
            .unwrap_or_default(),
    )
}

/// Waits out a burst of changes that began just now: until none came for
/// `debounce`, and at most `max_delay` in all, taking them all. A burst
/// that the API server spreads over seconds (a thousand routes applied at
/// once) is then one reload of the fleets, not one per `debounce`.
async fn quiet(changes: &mut mpsc::Receiver<()>, debounce: Duration, max_delay: Duration) {
    let last_call = tokio::time::Instant::now() + max_delay;
    loop {
        let due = (tokio::time::Instant::now() + debounce).min(last_call);
        match tokio::time::timeout_at(due, changes.recv()).await {
            Ok(Some(())) => continue,
            // Quiet, at the latest call, or the watches are gone.
            Ok(None) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_pass_once_quiet_or_at_the_latest_call() {
        let (debounce, max_delay) = (Duration::from_millis(100), Duration::from_millis(1000));
        let (tx, mut rx) = mpsc::channel(1);
        // Changes every 50 ms for 300 ms: the pass starts 100 ms after the last.
        let sender = tokio::spawn({
            let tx = tx.clone();
            async move {
                for _ in 0..6 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = tx.try_send(());
                }
            }
        });
        let start = tokio::time::Instant::now();
        quiet(&mut rx, debounce, max_delay).await;
        sender.await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        // Changes every 50 ms without end: the pass starts at max_delay.
        let sender = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if tx.try_send(()).is_err() && tx.is_closed() {
                    return;
                }
            }
        });
        let start = tokio::time::Instant::now();
        quiet(&mut rx, debounce, max_delay).await;
        assert_eq!(start.elapsed(), max_delay);
        sender.abort();
    }
}
