//! Gateway status that keeps up while a pass's pushes run.
//!
//! A push can take seconds (a reload of thousands of routes), and a burst's
//! route status writes hundreds of milliseconds. Changes that arrive
//! meanwhile used to wait for them, so a burst of new routes that
//! ended just after a push began showed in `attachedRoutes` only after
//! that push and the next pass. The lane takes those changes as they come:
//! it translates the new snapshot and writes what can be said of each
//! Gateway before a push (`translate::programmed::before_push`): listeners,
//! attached routes, and the `Programmed` condition it has live. Routes'
//! status and configs are left to the next pass, which the lane asks for.

use std::collections::BTreeMap;
use std::time::Duration;

use gateway_api::apis::experimental::gateways::GatewayStatus;
use tokio::sync::{mpsc, oneshot};

use crate::providers::kubernetes::Watches;
use crate::sinks::status_writer::{StatusWriter, Writes};
use crate::snapshot::ObjectRef;
use crate::translate::{self, Options};

#[derive(Debug, Default)]
pub struct Lane {
    pub writes: Writes,
    /// The newest Gateway status the lane computed, by Gateway. The pass
    /// writes these after its push, with the `Programmed` condition the
    /// push decided, rather than its own older ones.
    pub latest: BTreeMap<ObjectRef, GatewayStatus>,
    /// Debounced changes handled; any means the next pass must run.
    pub iterations: usize,
}

/// What the lane works from: the watches it snapshots, the pass's
/// translate options, and the changes it takes.
pub struct Inputs<'a> {
    pub watches: &'a Watches,
    pub options: &'a Options,
    pub debounce: Duration,
    pub changes: &'a mut mpsc::Receiver<()>,
}

/// Runs until `pass_done` fires (the pass's pushes and route writes are
/// done), handling each debounced change.
/// `written` is what this pass has written so far, and is kept up to date.
pub async fn run(
    writer: &StatusWriter,
    inputs: Inputs<'_>,
    written: &mut BTreeMap<ObjectRef, GatewayStatus>,
    mut pass_done: oneshot::Receiver<()>,
) -> Lane {
    let Inputs {
        watches,
        options,
        debounce,
        changes,
    } = inputs;
    let mut lane = Lane::default();
    loop {
        tokio::select! {
            biased;
            _ = &mut pass_done => break,
            Some(()) = changes.recv() => {}
            else => break,
        }
        tokio::time::sleep(debounce).await;
        while changes.try_recv().is_ok() {}
        lane.iterations += 1;
        let snapshot = watches.snapshot();
        let options = Options {
            now: super::now(),
            ..options.clone()
        };
        let output = translate::translate(&snapshot, &options);
        let early = super::pass::early_gateways(&snapshot, &output.status.gateways);
        lane.writes += writer.write_gateways(&snapshot, &early, written).await;
        lane.latest.extend(early);
    }
    lane
}
