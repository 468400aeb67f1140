//! A Gateway's backend client certificate (`spec.tls.backend
//! .clientCertificateRef`): whether it can be used, and how it reaches
//! Kengine. Kengine (Caddy 2.8.4) reads an upstream client certificate only
//! from files, when a config is loaded (a missing file fails the whole
//! load), so the certificate travels beside the config as files
//! ([`super::Fleet::files`]) that the fleet's admin-proxy sidecar, or
//! `standalone`, writes before each load. It is presented to backends
//! dialed over TLS (a BackendTLSPolicy applies).

use std::rc::Rc;

use gateway_api::apis::experimental::gateways::Gateway;

use kengine_gateway_model::short_hash;

use super::conditions::{Cond, Reason, Type};
use super::gateways::GROUP;
use super::refgrant;
use super::tls::{self, PemPair};
use crate::snapshot::{ObjectRef, Snapshot};

/// A usable client certificate, and where the data plane finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// A hash of the certificate and key: a changed Secret makes new file
    /// names, so a config never names a file with other contents, and
    /// Gateways that share a Secret share the files.
    pub id: String,
    pub pair: PemPair,
    /// The absolute paths a config names.
    pub cert_path: String,
    pub key_path: String,
}

/// By its id, which is a hash of the rest (rule caches key on it).
impl std::hash::Hash for ClientCert {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl ClientCert {
    /// The files to write into the fleet's files directory: name → PEM.
    pub fn files(&self) -> impl Iterator<Item = (String, String)> + '_ {
        [
            (format!("{}.crt", self.id), self.pair.certificate.clone()),
            (format!("{}.key", self.id), self.pair.key.clone()),
        ]
        .into_iter()
    }
}

/// The Gateway's backend client certificate: `Ok(None)` when it names
/// none, or the spec's ResolvedRefs condition when it cannot be used.
/// `files_dir` is where the fleet's data plane finds the files; `None`
/// when nothing can put them there (a fleet the operator does not run).
pub fn resolve(
    snapshot: &Snapshot,
    gateway: &Gateway,
    files_dir: Option<&str>,
) -> Result<Option<Rc<ClientCert>>, Cond> {
    let Some(r) = (gateway.spec.tls.as_ref())
        .and_then(|t| t.backend.as_ref())
        .and_then(|b| b.client_certificate_ref.as_ref())
    else {
        return Ok(None);
    };
    let key = ObjectRef::of(gateway);
    let namespace = r.namespace.as_deref().unwrap_or(&key.namespace);
    let target = format!("{namespace}/{}", r.name);
    let invalid = |why: String| {
        Cond::new(
            Type::ResolvedRefs,
            false,
            Reason::InvalidClientCertificateRef,
            format!("clientCertificateRef {why}; backends are dialed without a client certificate"),
        )
    };
    let (group, kind) = (
        r.group.as_deref().unwrap_or(""),
        r.kind.as_deref().unwrap_or("Secret"),
    );
    if !group.is_empty() || kind != "Secret" {
        return Err(invalid(format!(
            "names {group}/{kind} {target}, not a core Secret"
        )));
    }
    let from = refgrant::From {
        group: GROUP,
        kind: "Gateway",
        namespace: &key.namespace,
    };
    let to = refgrant::To {
        group: "",
        kind: "Secret",
        namespace,
        name: &r.name,
    };
    if !refgrant::permitted(snapshot, &from, &to) {
        return Err(Cond::new(
            Type::ResolvedRefs,
            false,
            Reason::RefNotPermitted,
            format!(
                "no ReferenceGrant in {namespace} allows this Gateway to use Secret {target} as its backend client certificate"
            ),
        ));
    }
    let secret = (snapshot.secrets.get(&ObjectRef::new(namespace, &r.name))).ok_or_else(|| {
        invalid(format!(
            "Secret {target} not found (a kubernetes.io/tls Secret)"
        ))
    })?;
    let pair = tls::pem_pair(secret).map_err(|why| invalid(format!("Secret {target}: {why}")))?;
    let Some(dir) = files_dir else {
        return Err(invalid(format!(
            "Secret {target} cannot be used: the Gateway's KengineInstance is not run by the operator, so nothing can place the certificate on its pods (Kengine reads an upstream client certificate from files only)"
        )));
    };
    let id = format!(
        "client-{}",
        short_hash(format!("{}\n{}", pair.certificate, pair.key).as_bytes())
    );
    Ok(Some(Rc::new(ClientCert {
        cert_path: format!("{dir}/{id}.crt"),
        key_path: format!("{dir}/{id}.key"),
        id,
        pair,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::{secret_with, tls_secret};
    use kengine_gateway_model::snapshot::Object;

    fn gateway(reference: serde_json::Value) -> Gateway {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "app"},
            "spec": {
                "gatewayClassName": "kengine",
                "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
                "tls": {"backend": {"clientCertificateRef": reference}},
            },
        }))
        .unwrap()
    }

    fn reason(result: Result<Option<Rc<ClientCert>>, Cond>) -> Reason {
        result.map(|_| ()).unwrap_err().reason
    }

    #[test]
    fn a_usable_secret_becomes_two_files_named_by_their_content() {
        let snapshot =
            Snapshot::from_objects(vec![Object::Secret(tls_secret("app", "client", "client"))]);
        let gw = gateway(serde_json::json!({"name": "client"}));
        let cert = resolve(&snapshot, &gw, Some("/files")).unwrap().unwrap();
        assert!(cert.cert_path.starts_with("/files/client-") && cert.cert_path.ends_with(".crt"));
        assert_eq!(cert.key_path, cert.cert_path.replace(".crt", ".key"));
        let files: std::collections::BTreeMap<_, _> = cert.files().collect();
        assert_eq!(files.len(), 2);
        assert_eq!(files[&format!("{}.crt", cert.id)], cert.pair.certificate);
        assert_eq!(files[&format!("{}.key", cert.id)], cert.pair.key);
        // Another key pair: other names.
        let other =
            Snapshot::from_objects(vec![Object::Secret(tls_secret("app", "client", "client"))]);
        assert_ne!(
            resolve(&other, &gw, Some("/files")).unwrap().unwrap().id,
            cert.id
        );
    }

    #[test]
    fn unusable_references_get_the_spec_reasons() {
        let good = tls_secret("app", "client", "client");
        let mut opaque = good.clone();
        opaque.metadata.name = Some("opaque".into());
        opaque.type_ = Some("Opaque".into());
        let broken = secret_with("app", "broken", "garbage".into(), "garbage".into());
        let elsewhere = tls_secret("certs", "client", "client");
        let snapshot = Snapshot::from_objects(
            [good, opaque, broken, elsewhere]
                .into_iter()
                .map(Object::Secret)
                .collect::<Vec<_>>(),
        );
        let check =
            |r: serde_json::Value, dir: Option<&str>| reason(resolve(&snapshot, &gateway(r), dir));
        let dir = Some("/files");
        use serde_json::json;
        assert_eq!(
            check(json!({"name": "missing"}), dir),
            Reason::InvalidClientCertificateRef
        );
        assert_eq!(
            check(json!({"name": "opaque"}), dir),
            Reason::InvalidClientCertificateRef
        );
        assert_eq!(
            check(json!({"name": "broken"}), dir),
            Reason::InvalidClientCertificateRef
        );
        assert_eq!(
            check(
                json!({"group": "example.com", "kind": "Secret", "name": "client"}),
                dir
            ),
            Reason::InvalidClientCertificateRef
        );
        assert_eq!(
            check(json!({"kind": "ConfigMap", "name": "client"}), dir),
            Reason::InvalidClientCertificateRef
        );
        assert_eq!(
            check(json!({"namespace": "certs", "name": "client"}), dir),
            Reason::RefNotPermitted
        );
        // Usable, but no one can write the files.
        assert_eq!(
            check(json!({"name": "client"}), None),
            Reason::InvalidClientCertificateRef
        );
        assert!(resolve(&snapshot, &gateway(json!({"name": "client"})), dir).is_ok());
    }
}
