//! Security features we read but do not implement yet fail closed, and say
//! so in status: a backend client certificate is never presented.

use gateway_api::apis::experimental::gateways::Gateway;

use super::conditions::{Cond, Reason, Type};

/// A Gateway's `spec.tls.backend.clientCertificateRef` is never presented
/// (stock Kengine reads a client certificate for its upstreams from files
/// only). Reported as the spec's Gateway condition for a client
/// certificate that cannot be used.
pub fn backend_client_certificate(gateway: &Gateway) -> Option<Cond> {
    let r = gateway
        .spec
        .tls
        .as_ref()?
        .backend
        .as_ref()?
        .client_certificate_ref
        .as_ref()?;
    Some(Cond::new(
        Type::ResolvedRefs,
        false,
        Reason::InvalidClientCertificateRef,
        format!(
            "clientCertificateRef to {} is not supported yet: backends are dialed over TLS without a client certificate",
            r.name
        ),
    ))
}
