//! Certificates from `kubernetes.io/tls` Secrets, checked before they reach
//! Kengine: one bad certificate must not get the whole config rejected.

use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and key in PEM, ready for Kengine's `load_pem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemPair {
    pub certificate: String,
    pub key: String,
}

/// Reads and checks the `tls.crt`/`tls.key` pair of a Secret.
pub fn pem_pair(secret: &Secret) -> Result<PemPair, String> {
    if secret.type_.as_deref() != Some("kubernetes.io/tls") {
        return Err(format!(
            "type is {:?}, not kubernetes.io/tls",
            secret.type_.as_deref().unwrap_or("")
        ));
    }
    let field = |name: &str| -> Result<String, String> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(name))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(name))
                    .map(|s| s.clone().into_bytes())
            })
            .ok_or_else(|| format!("has no {name}"))?;
        String::from_utf8(bytes).map_err(|_| format!("{name} is not text"))
    };
    let pair = PemPair {
        certificate: field("tls.crt")?,
        key: field("tls.key")?,
    };
    check(&pair)?;
    Ok(pair)
}

/// The CA certificates in a ConfigMap's `ca.crt` (PEM), as base64 DER for
/// Kengine's inline CA pool; or why there are none, said of the ConfigMap.
pub fn ca_certificates(config_map: Option<&ConfigMap>) -> Result<Vec<String>, String> {
    let config_map = config_map.ok_or("not found")?;
    let pem = (config_map.data.as_ref())
        .and_then(|d| d.get("ca.crt"))
        .ok_or("has no ca.crt")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca.crt is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("ca.crt holds no certificate".into());
    }
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert)
            .map_err(|e| format!("ca.crt holds a certificate that does not parse: {e}"))?;
    }
    Ok(certs
        .iter()
        .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
        .collect())
}

fn check(pair: &PemPair) -> Result<(), String> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pair.certificate.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes())
        .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key: {e}"))?;
    rustls::sign::CertifiedKey::new(certs, signer)
        .keys_match()
        .map_err(|e| format!("tls.key does not belong to tls.crt: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    pub fn tls_secret(ns: &str, name: &str, host: &str) -> Secret {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![host.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        secret_with(ns, name, cert.pem(), key.serialize_pem())
    }

    pub fn secret_with(ns: &str, name: &str, crt: String, key: String) -> Secret {
        Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(
                [
                    ("tls.crt".to_string(), ByteString(crt.into_bytes())),
                    ("tls.key".to_string(), ByteString(key.into_bytes())),
                ]
                .into(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_matching_pair_and_rejects_the_rest() {
        let good = tls_secret("a", "s", "example.com");
        assert!(pem_pair(&good).is_ok());
        let other = tls_secret("a", "t", "example.com");
        let (crt, key) = match (pem_pair(&good), pem_pair(&other)) {
            (Ok(a), Ok(b)) => (a.certificate, b.key),
            _ => unreachable!(),
        };
        assert!(
            pem_pair(&secret_with("a", "m", crt.clone(), key))
                .unwrap_err()
                .contains("does not belong")
        );
        assert!(pem_pair(&secret_with("a", "g", "garbage".into(), "garbage".into())).is_err());
        let mut opaque = good.clone();
        opaque.type_ = Some("Opaque".into());
        assert!(
            pem_pair(&opaque)
                .unwrap_err()
                .contains("not kubernetes.io/tls")
        );
    }
}
