//! Which fleet serves a Gateway, first match wins:
//! 1. `Gateway.spec.infrastructure.parametersRef` → a KengineInstance in the
//!    Gateway's namespace (a dedicated fleet);
//! 2. `GatewayClass.spec.parametersRef` → a KengineInstance (one fleet for
//!    the class; its Gateways share servers and conflict like listeners);
//! 3. otherwise the per-Gateway instance named after the Gateway, which the
//!    operator creates and deletes with it.

use gateway_api::apis::experimental::gatewayclasses::GatewayClass;
use gateway_api::apis::experimental::gateways::Gateway;

use super::FleetMode;
use super::conditions::Cond;
use crate::crd::{GROUP, KIND};
use crate::snapshot::{ObjectRef, Snapshot};

/// The one fleet of `render` and `standalone`.
pub fn local() -> ObjectRef {
    ObjectRef::new("", "local")
}

pub fn fleet_of(
    snapshot: &Snapshot,
    gateway: &Gateway,
    mode: FleetMode,
) -> Result<ObjectRef, Cond> {
    let key = ObjectRef::of(gateway);
    let chosen = if let Some(p) = gateway
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref())
    {
        instance(snapshot, &p.group, &p.kind, &key.namespace, &p.name)
            .map_err(|why| invalid(format!("infrastructure.parametersRef: {why}")))?
    } else {
        let class = snapshot
            .gateway_classes
            .get(&gateway.spec.gateway_class_name);
        // An invalid class reference is reported on the class; the Gateway
        // then gets its own fleet.
        class
            .and_then(|c| class_instance(snapshot, c).ok().flatten())
            .unwrap_or(key)
    };
    Ok(match mode {
        FleetMode::Local => local(),
        FleetMode::Instances => chosen,
    })
}

/// The class's fleet, `None` without a parametersRef, `Err` for a bad one.
pub fn class_instance(
    snapshot: &Snapshot,
    class: &GatewayClass,
) -> Result<Option<ObjectRef>, String> {
    let Some(p) = &class.spec.parameters_ref else {
        return Ok(None);
    };
    let namespace = p
        .namespace
        .as_deref()
        .ok_or("parametersRef to a KengineInstance needs a namespace")?;
    instance(snapshot, &p.group, &p.kind, namespace, &p.name).map(Some)
}

fn instance(
    snapshot: &Snapshot,
    group: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<ObjectRef, String> {
    if group != GROUP || kind != KIND {
        return Err(format!(
            "{group}/{kind} is not supported; use {GROUP}/{KIND}"
        ));
    }
    let key = ObjectRef::new(namespace, name);
    if !snapshot.kengine_instances.contains_key(&key) {
        return Err(format!("{KIND} {key} not found"));
    }
    Ok(key)
}

fn invalid(message: String) -> Cond {
    Cond::new("Accepted", false, "InvalidParameters", message)
}
