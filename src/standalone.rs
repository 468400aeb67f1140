//! `standalone`: serve YAML files through one local Kengine, pushing again
//! whenever the files change.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::cli::StandaloneArgs;
use crate::kengine::process::KengineProcess;
use crate::kengine::{AdminAddr, AdminClient, Flavor};
use crate::providers::files;
use crate::render;
use crate::sinks::pusher::{Pushed, Pusher};
use crate::sinks::status;
use crate::snapshot::Snapshot;
use crate::translate::{self, Status};

pub async fn run(args: StandaloneArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut flavor = args.translate.flavor;
    let (process, client) = match (&args.kengine, &args.admin) {
        (Some(bin), _) => {
            if flavor == Flavor::Kengine && Flavor::from_binary_name(bin) == Flavor::Caddy {
                flavor = Flavor::Caddy;
            }
            let process = KengineProcess::start(bin, flavor, None).await?;
            tracing::info!(bin = %bin.display(), admin = %process.admin_addr(), "started kengine");
            let client = process.admin().clone();
            (Some(process), client)
        }
        (None, Some(addr)) => {
            let addr: AdminAddr = addr.parse().map_err(anyhow::Error::msg)?;
            (None, AdminClient::new(addr, Duration::from_secs(60))?)
        }
        (None, None) => unreachable!("clap requires --kengine or --admin"),
    };
    let (_watcher, mut changes) =
        files::watch(&args.translate.files).context("watching input files")?;
    let mut pusher = Pusher::new(client);
    let mut state = State::default();
    state.sync(&args, &mut pusher).await;

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(()) = changes.recv() => {
                // Coalesce a burst of edits into one push.
                tokio::time::sleep(Duration::from_millis(args.debounce_ms)).await;
                while changes.try_recv().is_ok() {}
                state.sync(&args, &mut pusher).await;
            }
        }
    }
    tracing::info!("shutting down");
    if let Some(process) = process {
        process.stop().await?;
    }
    Ok(())
}

#[derive(Default)]
struct State {
    status: Option<Status>,
}

impl State {
    /// Reload the files and push. A bad file or a rejected config is logged
    /// and the last good config keeps serving.
    async fn sync(&mut self, args: &StandaloneArgs, pusher: &mut Pusher) {
        let snapshot = match render::load(&args.translate.files) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("not reloading: {e}");
                return;
            }
        };
        let mut snapshot = snapshot;
        carry_status(&mut snapshot, self.status.as_ref());
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let options = render::options(&args.translate, now.clone(), &snapshot);
        let mut output = translate::translate(&snapshot, &options);
        match pusher.push(output.config()).await {
            Ok(Pushed::Loaded) => {
                tracing::info!(bytes = output.config().to_json().len(), "config loaded")
            }
            Ok(Pushed::Unchanged) => tracing::info!("config unchanged; nothing pushed"),
            Err(e) => {
                tracing::error!("config not loaded, the last good one keeps serving: {e}");
                status::mark_not_programmed(&mut output.status, &e.to_string(), &now);
            }
        }
        log_status(&output.status);
        if let Some(path) = &args.status_file {
            let text = status::yaml_stream(&status::objects(
                &snapshot,
                &output.status,
                &options.controller_name,
            ));
            if let Err(e) = std::fs::write(path, text) {
                tracing::error!(path = %path.display(), "writing status file: {e}");
            }
        }
        self.status = Some(output.status);
    }
}

/// Files carry no status, so the status we computed last time stands in for
/// what a cluster would hold: it keeps `lastTransitionTime`s stable.
fn carry_status(snapshot: &mut Snapshot, status: Option<&Status>) {
    let Some(status) = status else { return };
    for (name, class) in &mut snapshot.gateway_classes {
        if class.status.is_none() {
            class.status = status.gateway_classes.get(name).cloned();
        }
    }
    for (key, gateway) in &mut snapshot.gateways {
        if gateway.status.is_none() {
            gateway.status = status.gateways.get(key).cloned();
        }
    }
    for (key, route) in &mut snapshot.http_routes {
        if route.status.is_none() {
            route.status = status.http_routes.get(key).map(|parents| {
                gateway_api::apis::experimental::httproutes::HttpRouteStatus {
                    parents: parents.clone(),
                }
            });
        }
    }
    for (key, route) in &mut snapshot.grpc_routes {
        if route.status.is_none() {
            route.status = status.grpc_routes.get(key).map(|parents| {
                gateway_api::apis::experimental::grpcroutes::GrpcRouteStatus {
                    parents: parents.clone(),
                }
            });
        }
    }
    for (key, policy) in &mut snapshot.backend_tls_policies {
        if policy.status.is_none() {
            policy.status = status.backend_tls_policies.get(key).map(|ancestors| {
                gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicyStatus {
                    ancestors: ancestors.clone(),
                }
            });
        }
    }
}

fn log_status(status: &Status) {
    let summary =
        |conds: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>| {
            conds
                .into_iter()
                .flatten()
                .map(|c| {
                    if c.status == "True" {
                        c.type_.to_string()
                    } else {
                        format!("{}=False({}: {})", c.type_, c.reason, c.message)
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
    for (name, s) in &status.gateway_classes {
        tracing::info!("GatewayClass {name}: {}", summary(s.conditions.as_ref()));
    }
    for (key, s) in &status.gateways {
        let listeners: Vec<String> = s
            .listeners
            .iter()
            .flatten()
            .map(|l| {
                format!(
                    "{}[routes={} {}]",
                    l.name,
                    l.attached_routes,
                    summary(Some(&l.conditions))
                )
            })
            .collect();
        tracing::info!(
            "Gateway {key}: {} listeners: {}",
            summary(s.conditions.as_ref()),
            listeners.join(", ")
        );
    }
    for (key, parents) in &status.http_routes {
        for p in parents {
            tracing::info!(
                "HTTPRoute {key} on {}: {}",
                p.parent_ref.name,
                summary(Some(&p.conditions))
            );
        }
    }
    // Kinds we do not serve: a warning, since nothing of them is served.
    for (key, parents) in &status.grpc_routes {
        for p in parents {
            tracing::warn!(
                "GRPCRoute {key} on {}: {}",
                p.parent_ref.name,
                summary(Some(&p.conditions))
            );
        }
    }
    for (key, ancestors) in &status.backend_tls_policies {
        for a in ancestors {
            tracing::warn!(
                "BackendTLSPolicy {key} on {}: {}",
                a.ancestor_ref.name,
                summary(Some(&a.conditions))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status of kinds we do not serve keeps its transition times
    /// across syncs, like the others.
    #[test]
    fn carried_status_keeps_unserved_kinds_transition_times() {
        let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/fail-closed/input.yaml");
        let at = |secs| Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap());
        let options = |now| translate::Options {
            now,
            ..Default::default()
        };
        let first = translate::translate(
            &render::load(std::slice::from_ref(&input)).unwrap(),
            &options(at(10)),
        );
        let mut snapshot = render::load(&[input]).unwrap();
        carry_status(&mut snapshot, Some(&first.status));
        let second = translate::translate(&snapshot, &options(at(20)));
        let key = crate::snapshot::ObjectRef::new("web", "grpc");
        let grpc = &second.status.grpc_routes[&key][0].conditions[0];
        assert_eq!(grpc.last_transition_time, at(10));
        let key = crate::snapshot::ObjectRef::new("web", "tls-app");
        let policy = &second.status.backend_tls_policies[&key][0].conditions[0];
        assert_eq!(policy.last_transition_time, at(10));
    }
}
