//! Client certificate validation of HTTPS listeners (`Gateway.spec.tls.
//! frontend`): the CA bundles of `caCertificateRefs` become the trusted CAs
//! of the listener's TLS connection policy, checked here first so a bad
//! bundle is reported on its listener and never reaches Kengine.

use gateway_api::apis::experimental::gateways::{
    Gateway, GatewayTlsFrontendDefaultValidationMode as DefaultMode,
    GatewayTlsFrontendPerPortTlsValidationMode as PerPortMode,
};

use super::conditions::{Cond, Reason, Type};
use super::gateways::{ListenerModel, Protocol};
use super::refgrant;
use crate::snapshot::{ObjectRef, Snapshot};

/// What a listener asks of client certificates, ready for Kengine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// Base64 DER of every trusted CA certificate.
    pub trusted_ca_certs: Vec<String>,
    /// `AllowInsecureFallback`: a certificate is asked for but a missing or
    /// invalid one is let through (Kengine's `request` mode); otherwise a
    /// valid one is required (`require_and_verify`).
    pub insecure_fallback: bool,
}

impl ClientAuth {
    /// Kengine's `client_authentication.mode`.
    pub fn mode(&self) -> &'static str {
        match self.insecure_fallback {
            true => "request",
            false => "require_and_verify",
        }
    }
}

/// One `caCertificateRefs` entry, whichever of the spec's two types it
/// came in.
struct CaRef<'a> {
    group: &'a str,
    kind: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
}

/// The validation a port's listeners get: its `perPort` entry, else the
/// default; `None` when neither validates.
fn validation_for(gateway: &Gateway, port: u16) -> Option<(Vec<CaRef<'_>>, bool)> {
    let frontend = gateway.spec.tls.as_ref()?.frontend.as_ref()?;
    // The CRD generates one type per place for the same fields.
    macro_rules! refs {
        ($v:expr) => {
            ($v.ca_certificate_refs.iter())
                .map(|r| CaRef {
                    group: &r.group,
                    kind: &r.kind,
                    name: &r.name,
                    namespace: r.namespace.as_deref(),
                })
                .collect()
        };
    }
    let per_port = (frontend.per_port.iter().flatten()).find(|p| p.port == i32::from(port));
    match per_port {
        Some(p) => {
            let v = p.tls.validation.as_ref()?;
            Some((refs!(v), v.mode == Some(PerPortMode::AllowInsecureFallback)))
        }
        None => {
            let v = frontend.default.validation.as_ref()?;
            Some((refs!(v), v.mode == Some(DefaultMode::AllowInsecureFallback)))
        }
    }
}

/// Resolves the client certificate validation of every HTTPS listener.
/// A reference that cannot be used makes the listener `ResolvedRefs=False`
/// with the spec's reason; a listener left without any valid CA is also
/// `Accepted=False` (`NoValidCACertificate`) and not served, never served
/// without the validation it asked for. Returns whether a served listener
/// lets clients through without a valid certificate (the Gateway's
/// `InsecureFrontendValidationMode` condition).
pub fn apply(snapshot: &Snapshot, gateway: &Gateway, listeners: &mut [ListenerModel]) -> bool {
    let key = ObjectRef::of(gateway);
    let mut insecure = false;
    for l in listeners
        .iter_mut()
        .filter(|l| l.protocol == Some(Protocol::Https))
    {
        let Some((refs, insecure_fallback)) = validation_for(gateway, l.port) else {
            continue;
        };
        let mut trusted = Vec::new();
        for r in &refs {
            match ca_bundle(snapshot, &key, r) {
                Ok(certs) => trusted.extend(certs),
                Err((reason, message)) => {
                    l.problems
                        .push(Cond::new(Type::ResolvedRefs, false, reason, message));
                }
            }
        }
        if trusted.is_empty() {
            l.problems.push(Cond::new(
                Type::Accepted,
                false,
                Reason::NoValidCACertificate,
                format!(
                    "listener {:?} must validate client certificates, and none of its caCertificateRefs holds a usable CA certificate",
                    l.name
                ),
            ));
            continue;
        }
        insecure |= insecure_fallback;
        l.client_auth = Some(ClientAuth {
            trusted_ca_certs: trusted,
            insecure_fallback,
        });
    }
    insecure
}

/// The Gateway condition for listeners that accept any client certificate.
pub fn insecure_condition() -> Cond {
    Cond::new(
        Type::InsecureFrontendValidationMode,
        true,
        Reason::ConfigurationChanged,
        "a listener validates client certificates in mode AllowInsecureFallback: clients without a valid certificate are let through",
    )
}

/// The base64 DER certificates of a ConfigMap's `ca.crt`, or the reason
/// and message the reference cannot be used.
fn ca_bundle(
    snapshot: &Snapshot,
    gateway: &ObjectRef,
    r: &CaRef,
) -> Result<Vec<String>, (Reason, String)> {
    let namespace = r.namespace.unwrap_or(&gateway.namespace);
    let target = format!("{namespace}/{}", r.name);
    if !r.group.is_empty() || r.kind != "ConfigMap" {
        return Err((
            Reason::InvalidCACertificateKind,
            format!(
                "caCertificateRef {}/{} {target} is not a core ConfigMap",
                r.group, r.kind
            ),
        ));
    }
    if !refgrant::gateway_may_use(snapshot, gateway, "ConfigMap", namespace, r.name) {
        return Err((
            Reason::RefNotPermitted,
            format!(
                "no ReferenceGrant in {namespace} allows this Gateway to use ConfigMap {target}"
            ),
        ));
    }
    super::tls::ca_certificates(snapshot.config_maps.get(&ObjectRef::new(namespace, r.name)))
        .map_err(|why| {
            (
                Reason::InvalidCACertificateRef,
                format!("ConfigMap {target} {why}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(docs: Vec<serde_json::Value>) -> Snapshot {
        Snapshot::from_objects(
            docs.into_iter()
                .filter_map(|d| kengine_gateway_model::manifests::object_from_value(d).unwrap())
                .collect::<Vec<_>>(),
        )
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn config_map(ns: &str, name: &str, data: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns}, "data": data})
    }

    fn model(snapshot: &Snapshot, frontend: serde_json::Value) -> (Vec<ListenerModel>, bool) {
        let gateway: Gateway = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "g", "namespace": "n"},
            "spec": {"gatewayClassName": "c", "tls": {"frontend": frontend},
                "listeners": [
                    {"name": "a", "port": 443, "protocol": "HTTPS"},
                    {"name": "b", "port": 8443, "protocol": "HTTPS"},
                    {"name": "plain", "port": 80, "protocol": "HTTP"}]}}))
        .unwrap();
        let mut listeners: Vec<ListenerModel> = [
            (443, Protocol::Https),
            (8443, Protocol::Https),
            (80, Protocol::Http),
        ]
        .into_iter()
        .zip(["a", "b", "plain"])
        .map(|((port, protocol), name)| ListenerModel::test(name, port, protocol))
        .collect();
        let insecure = apply(snapshot, &gateway, &mut listeners);
        (listeners, insecure)
    }

    fn reasons(l: &ListenerModel) -> Vec<(Type, Reason)> {
        l.problems.iter().map(|c| (c.type_, c.reason)).collect()
    }

    #[test]
    fn a_valid_bundle_is_trusted_and_per_port_replaces_the_default() {
        let s = snapshot(vec![
            config_map("n", "ca", json!({"ca.crt": ca_pem()})),
            config_map(
                "n",
                "other",
                json!({"ca.crt": format!("{}{}", ca_pem(), ca_pem())}),
            ),
        ]);
        let (ls, insecure) = model(
            &s,
            json!({"default": {"validation": {"caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "ca"}]}},
                "perPort": [{"port": 8443, "tls": {"validation": {"mode": "AllowInsecureFallback",
                    "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "other"}]}}}]}),
        );
        assert!(ls.iter().all(|l| l.problems.is_empty()));
        let a = ls[0].client_auth.as_ref().unwrap();
        assert_eq!(
            (a.trusted_ca_certs.len(), a.mode()),
            (1, "require_and_verify")
        );
        let b = ls[1].client_auth.as_ref().unwrap();
        assert_eq!((b.trusted_ca_certs.len(), b.mode()), (2, "request"));
        assert!(ls[2].client_auth.is_none(), "HTTP listeners have no TLS");
        assert!(insecure);
    }

    #[test]
    fn unusable_refs_get_the_specs_reasons_and_no_valid_ca_stops_the_listener() {
        let s = snapshot(vec![
            config_map("n", "ca", json!({"ca.crt": ca_pem()})),
            config_map("n", "empty", json!({"other": "x"})),
            config_map("elsewhere", "ca", json!({"ca.crt": ca_pem()})),
        ]);
        let (ls, insecure) = model(
            &s,
            json!({"default": {"validation": {"caCertificateRefs": [
                    {"group": "", "kind": "ConfigMap", "name": "missing"},
                    {"group": "", "kind": "ConfigMap", "name": "ca"}]}},
                "perPort": [{"port": 8443, "tls": {"validation": {"caCertificateRefs": [
                    {"group": "", "kind": "Service", "name": "svc"},
                    {"group": "", "kind": "ConfigMap", "name": "empty"},
                    {"group": "", "kind": "ConfigMap", "name": "ca", "namespace": "elsewhere"}]}}}]}),
        );
        // A bad ref beside a good one: served with the good CA, reported.
        assert_eq!(
            reasons(&ls[0]),
            [(Type::ResolvedRefs, Reason::InvalidCACertificateRef)]
        );
        assert_eq!(
            ls[0].client_auth.as_ref().unwrap().trusted_ca_certs.len(),
            1
        );
        assert_eq!(
            reasons(&ls[1]),
            [
                (Type::ResolvedRefs, Reason::InvalidCACertificateKind),
                (Type::ResolvedRefs, Reason::InvalidCACertificateRef),
                (Type::ResolvedRefs, Reason::RefNotPermitted),
                (Type::Accepted, Reason::NoValidCACertificate),
            ]
        );
        assert!(ls[1].client_auth.is_none() && !ls[1].usable());
        assert!(!insecure);
    }

    #[test]
    fn a_bundle_that_is_not_pem_is_invalid() {
        let s = snapshot(vec![config_map(
            "n",
            "bad",
            json!({"ca.crt": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}),
        )]);
        let (ls, _) = model(
            &s,
            json!({"default": {"validation": {"caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "bad"}]}}}),
        );
        assert_eq!(
            reasons(&ls[0]),
            [
                (Type::ResolvedRefs, Reason::InvalidCACertificateRef),
                (Type::Accepted, Reason::NoValidCACertificate)
            ]
        );
    }
}
