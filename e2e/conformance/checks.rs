//! Status assertions, as the suite's helpers make them.

use serde_json::Value;

use crate::cluster::Cluster;

pub const GROUP: &str = "gateway.networking.k8s.io";

fn split(name: &str) -> (&str, &str) {
    name.split_once('/').unwrap_or(("default", name))
}

fn generation(obj: &Value) -> i64 {
    obj["metadata"]["generation"].as_i64().unwrap_or(1)
}

fn arr(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// Does `conds` hold each wanted condition (type; status and reason when given)?
fn holds(conds: &[Value], wanted: &[Value]) -> Result<(), String> {
    for w in wanted {
        let t = w["type"].as_str().unwrap_or_default();
        let found = conds
            .iter()
            .find(|c| c["type"] == t)
            .ok_or_else(|| format!("no {t} condition in {}", brief(conds)))?;
        for field in ["status", "reason"] {
            if let Some(want) = w.get(field).and_then(Value::as_str)
                && found[field] != want
            {
                return Err(format!(
                    "{t} {field} is {}, want {want} ({})",
                    found[field], found["message"]
                ));
            }
        }
    }
    Ok(())
}

fn brief(conds: &[Value]) -> String {
    conds
        .iter()
        .map(|c| format!("{}={}({})", c["type"], c["status"], c["reason"]))
        .collect::<Vec<_>>()
        .join(" ")
}

fn latest(obj: &Value, conds: &[Value], what: &str) -> Result<(), String> {
    let g = generation(obj);
    match conds
        .iter()
        .find(|c| c["observedGeneration"].as_i64() != Some(g))
    {
        Some(c) => Err(format!(
            "{what} condition {} has observedGeneration {}, generation is {g}",
            c["type"], c["observedGeneration"]
        )),
        None => Ok(()),
    }
}

fn object<'a>(cluster: &'a Cluster, kind: &str, name: &str) -> Result<&'a Value, String> {
    let (ns, n) = split(name);
    cluster
        .get(kind, ns, n)
        .ok_or_else(|| format!("{kind} {name} not found"))
}

pub fn accepted(cluster: &Cluster, step: &Value, controller: &str) -> Result<(), String> {
    let kind = step["routeKind"].as_str().unwrap_or("HTTPRoute");
    let gateways: Vec<&str> = step["gateways"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for gw in &gateways {
        let obj = object(cluster, "Gateway", gw)?;
        latest(obj, &arr(&obj["status"]["conditions"]), "Gateway")?;
        if !arr(&obj["status"]["addresses"])
            .iter()
            .any(|a| a["type"].is_string())
        {
            return Err(format!("Gateway {gw} has no status.addresses"));
        }
    }
    for route in step["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let obj = object(cluster, kind, route)?;
        let (route_ns, _) = split(route);
        for gw in &gateways {
            let (gw_ns, gw_name) = split(gw);
            let ok = arr(&obj["status"]["parents"]).iter().any(|p| {
                let r = &p["parentRef"];
                p["controllerName"] == controller
                    && r["group"] == GROUP
                    && r["kind"] == "Gateway"
                    && r["name"] == gw_name
                    && (r["namespace"] == gw_ns || (r["namespace"].is_null() && route_ns == gw_ns))
                    && holds(
                        &arr(&p["conditions"]),
                        &[serde_json::json!({"type": "Accepted", "status": "True"})],
                    )
                    .is_ok()
            });
            if !ok {
                return Err(format!(
                    "{kind} {route} is not Accepted on {gw}: {}",
                    obj["status"]["parents"]
                ));
            }
        }
    }
    for gw in &gateways {
        let obj = object(cluster, "Gateway", gw)?;
        for l in arr(&obj["status"]["listeners"]) {
            let want: Vec<Value> = ["Accepted", "ResolvedRefs", "Programmed"]
                .iter()
                .map(|t| serde_json::json!({"type": t, "status": "True"}))
                .collect();
            holds(&arr(&l["conditions"]), &want)
                .map_err(|e| format!("Gateway {gw} listener {}: {e}", l["name"]))?;
        }
    }
    Ok(())
}

pub fn route_condition(cluster: &Cluster, step: &Value) -> Result<(), String> {
    let kind = step["kind"].as_str().unwrap_or("HTTPRoute");
    let route = step["route"].as_str().unwrap_or_default();
    let obj = object(cluster, kind, route)?;
    let parents = arr(&obj["status"]["parents"]);
    for p in &parents {
        latest(obj, &arr(&p["conditions"]), "route")?;
    }
    let wanted = arr(&step["conditions"]);
    if wanted.is_empty() {
        return if parents.is_empty() {
            Err(format!("{route} has no status.parents"))
        } else {
            Ok(())
        };
    }
    let want_ref = &step["parentRef"];
    let mut last = String::from("no matching parent entry");
    for p in &parents {
        let r = &p["parentRef"];
        if r["name"] != want_ref["name"] {
            continue;
        }
        if !(r["namespace"].is_null()
            || want_ref["namespace"].is_null()
            || r["namespace"] == want_ref["namespace"])
        {
            continue;
        }
        match holds(&arr(&p["conditions"]), &wanted) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(format!("{kind} {route}: {last}"))
}

pub fn route_not_accepted(cluster: &Cluster, step: &Value) -> Result<(), String> {
    let kind = step["kind"].as_str().unwrap_or("HTTPRoute");
    let route = step["route"].as_str().unwrap_or_default();
    let obj = object(cluster, kind, route)?;
    let parents = arr(&obj["status"]["parents"]);
    let relevant: Vec<&Value> = match step.get("parentRef") {
        Some(r) => parents
            .iter()
            .filter(|p| p["parentRef"]["name"] == r["name"])
            .collect(),
        None => parents.iter().collect(),
    };
    let accepted = relevant.iter().any(|p| {
        holds(
            &arr(&p["conditions"]),
            &[serde_json::json!({"type": "Accepted", "status": "True"})],
        )
        .is_ok()
    });
    if accepted {
        Err(format!(
            "{kind} {route} is accepted: {}",
            obj["status"]["parents"]
        ))
    } else {
        Ok(())
    }
}

pub fn gateway_status(cluster: &Cluster, step: &Value) -> Result<(), String> {
    let name = step["gateway"].as_str().unwrap_or_default();
    let obj = object(cluster, "Gateway", name)?;
    let status = &obj["status"];
    let conds = arr(&status["conditions"]);
    latest(obj, &conds, "Gateway")?;
    holds(&conds, &arr(&step["conditions"])).map_err(|e| format!("Gateway {name}: {e}"))?;
    let addresses = arr(&status["addresses"]);
    if step["hasAddress"] == true && !addresses.iter().any(|a| a["type"].is_string()) {
        return Err(format!("Gateway {name} has no address"));
    }
    if let Some(n) = step["addressCount"].as_u64()
        && addresses.len() as u64 != n
    {
        return Err(format!(
            "Gateway {name} has {} addresses, want {n}",
            addresses.len()
        ));
    }
    for want in arr(&step["addresses"]) {
        if !addresses.iter().any(|a| {
            a["value"] == want["value"] && (want["type"].is_null() || a["type"] == want["type"])
        }) {
            return Err(format!(
                "Gateway {name} lacks address {want}: {}",
                status["addresses"]
            ));
        }
    }
    for absent in arr(&step["absentAddresses"]) {
        if addresses.iter().any(|a| a["value"] == absent) {
            return Err(format!("Gateway {name} has address {absent}"));
        }
    }
    let listeners = arr(&status["listeners"]);
    if step["zeroRoutes"] == true
        && !(listeners.is_empty() || (listeners.len() == 1 && listeners[0]["attachedRoutes"] == 0))
    {
        return Err(format!("Gateway {name} has routes attached"));
    }
    if let Some(wanted) = step["listeners"].as_array() {
        if wanted.len() != listeners.len() {
            return Err(format!(
                "Gateway {name} has {} listeners, want {}",
                listeners.len(),
                wanted.len()
            ));
        }
        for w in wanted {
            let l = listeners
                .iter()
                .find(|l| l["name"] == w["name"])
                .ok_or_else(|| format!("no listener {}", w["name"]))?;
            if let Some(n) = w.get("attachedRoutes")
                && &l["attachedRoutes"] != n
            {
                return Err(format!(
                    "listener {} attachedRoutes {} want {n}",
                    w["name"], l["attachedRoutes"]
                ));
            }
            if let Some(kinds) = w["supportedKinds"].as_array() {
                let got = arr(&l["supportedKinds"]);
                if kinds.is_empty() && !got.is_empty() {
                    return Err(format!(
                        "listener {} supportedKinds {got:?}, want none",
                        w["name"]
                    ));
                }
                for k in kinds {
                    if !got.iter().any(|g| {
                        g["kind"] == k["kind"] && (k["group"].is_null() || g["group"] == k["group"])
                    }) {
                        return Err(format!("listener {} lacks supportedKind {k}", w["name"]));
                    }
                }
            }
            holds(&arr(&l["conditions"]), &arr(&w["conditions"]))
                .map_err(|e| format!("listener {}: {e}", w["name"]))?;
        }
    }
    Ok(())
}

pub fn gateway_class_status(
    cluster: &Cluster,
    step: &Value,
    default_class: &str,
) -> Result<(), String> {
    let name = step["gatewayClass"].as_str().unwrap_or(default_class);
    let obj = cluster
        .get("GatewayClass", "", name)
        .ok_or_else(|| format!("GatewayClass {name} not found"))?;
    let conds = arr(&obj["status"]["conditions"]);
    latest(obj, &conds, "GatewayClass")?;
    if conds.is_empty() {
        return Err(format!("GatewayClass {name} has no conditions"));
    }
    holds(&conds, &arr(&step["conditions"]))
}

pub fn generation_of(cluster: &Cluster, step: &Value) -> Result<i64, String> {
    let kind = step["kind"].as_str().unwrap_or_default();
    let name = step["name"].as_str().unwrap_or_default();
    let obj = if kind == "GatewayClass" {
        cluster.get(kind, "", name).ok_or("not found".to_string())?
    } else {
        object(cluster, kind, name)?
    };
    Ok(generation(obj))
}
