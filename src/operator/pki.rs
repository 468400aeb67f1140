//! The operator as CA of each managed fleet's admin API.
//!
//! Every managed `KengineInstance` has its own CA. Its pods' `admin-proxy`
//! sidecar accepts only client certificates from that CA naming
//! [`CLIENT_NAME`], and the controller checks the pods' server certificate
//! against the same CA. [`plan`] looks at the three Secrets as they are and
//! says which to rewrite, and when to look again:
//!
//! - the CA Secret: the CA's certificate and key plus rotation bookkeeping,
//!   never mounted anywhere;
//! - the server Secret, mounted in the pods: server leaf, its key, and the
//!   trust bundle (`ca.crt`) client certificates must chain to;
//! - the client Secret, read by the controller: client leaf, its key, and
//!   the trust bundle the server certificate must chain to.
//!
//! Leaves are reissued, each with a fresh key, when they are missing, broken,
//! in the last third of their life, not signed by the active CA, named
//! wrongly, or carry a stale bundle. Reissuing one never touches the other.
//!
//! # CA rotation
//!
//! The controller sees its client Secret at once, but the pods see theirs
//! only after kubelet syncs the mount (up to about two minutes). A leaf from
//! a new CA therefore only works once *both* sides trust that CA, so a
//! rotation takes three steps, each waiting [`PROPAGATION_GRACE`] after the
//! last leaf write (`propagating-since` in the CA Secret) before the next:
//!
//! 1. **Stage**, when the CA enters the last third of its life: generate the
//!    next CA and publish the bundle *old + next* in both leaves, still
//!    issued by the old CA. Nothing anyone presents changes yet.
//! 2. **Promote**, once the pods surely have that bundle: the next CA becomes
//!    the active one and both leaves are reissued from it. The controller's
//!    new client certificate is trusted by the pods' bundle, and the pods'
//!    old server certificate is still trusted by the controller's bundle,
//!    which keeps the old CA.
//! 3. **Drop** the old CA from the bundle once it expires, or once the pods
//!    surely serve the new server certificate.
//!
//! Any leaf write while the bundle holds two CAs restarts the wait, so a
//! failed or late write never shortens it. Write the CA Secret before the
//! leaves: a leaf is then never published from a CA that was not saved. A
//! failed write is repaired by the next `plan`.
//!
//! A CA that is missing, has no usable key, does not parse or has expired
//! protects nothing any more: it is replaced at once and everything reissued.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The identity the controller's client certificate names (CN and DNS SAN),
/// and the only one the `admin-proxy` sidecar accepts.
pub const CLIENT_NAME: &str = "kengine-gateway-controller";

/// How long a rotation step waits for an updated Secret to reach the pods:
/// kubelet's sync period plus its cache TTL, then the sidecar's reload check.
pub const PROPAGATION_GRACE: Duration = Duration::from_secs(3 * 60);

/// How far before `now` certificates start being valid, for clocks behind ours.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// A `kubernetes.io/tls` Secret's certificate (chain).
pub const TLS_CRT: &str = "tls.crt";
/// A `kubernetes.io/tls` Secret's private key.
pub const TLS_KEY: &str = "tls.key";
/// The trust bundle in a leaf Secret.
pub const CA_CRT: &str = "ca.crt";
/// CA Secret: the staged next CA (rotation step 1).
pub const NEXT_CRT: &str = "next.crt";
/// CA Secret: the staged next CA's key.
pub const NEXT_KEY: &str = "next.key";
/// CA Secret: the replaced CA, still trusted (rotation step 2); no key.
pub const PREVIOUS_CRT: &str = "previous.crt";
/// CA Secret: Unix seconds of the last leaf write while the bundle holds two CAs.
pub const PROPAGATING_SINCE: &str = "propagating-since";

/// The shortest CA lifetime accepted: a rotation's two waits fit in a third
/// of it with room to spare.
pub const MIN_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// The shortest leaf lifetime accepted (tests use short ones); leaves are
/// renewed a third before expiry, so not on every `plan`.
pub const MIN_LEAF_LIFETIME: Duration = Duration::from_secs(60);

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// How long certificates live; they are renewed when a third of their life remains.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    pub ca: Duration,
    /// Capped at the issuing CA's expiry.
    pub leaf: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            ca: 3650 * DAY,
            leaf: 90 * DAY,
        }
    }
}

/// The data of one Secret: key -> PEM text (e.g. "tls.crt", "tls.key", "ca.crt").
pub type SecretData = BTreeMap<String, String>;

/// The three Secrets as read back from the API (None = missing).
#[derive(Clone, Debug, Default)]
pub struct Current {
    pub ca: Option<SecretData>,
    pub server: Option<SecretData>,
    pub client: Option<SecretData>,
}

/// Secrets to (re)write; None = leave as it is.
#[derive(Clone, Debug)]
pub struct Plan {
    pub ca: Option<SecretData>,
    pub server: Option<SecretData>,
    pub client: Option<SecretData>,
    /// When `plan` must run again at the latest (next renewal or rotation step).
    pub next: SystemTime,
}

impl Default for Plan {
    /// Nothing to write, and look again right away.
    fn default() -> Self {
        Plan {
            ca: None,
            server: None,
            client: None,
            next: UNIX_EPOCH,
        }
    }
}

/// What the Secrets should hold at `now`. `subject` names the CA (e.g.
/// "kengine-gateway admin CA for apps/edge"); `server_name` is the DNS SAN of
/// the server certificate (the controller checks it).
pub fn plan(
    current: &Current,
    subject: &str,
    server_name: &str,
    lifetimes: &Lifetimes,
    now: SystemTime,
) -> Result<Plan, String> {
    check_inputs(server_name, lifetimes)?;
    let loaded = current
        .ca
        .as_ref()
        .and_then(|data| Authority::load(data, now));
    let (mut authority, mut ca_changed) = match loaded {
        Some(loaded) => loaded,
        // Nothing usable to preserve: start over.
        None => (Authority::generate(subject, lifetimes.ca, now)?, true),
    };
    let (server_role, client_role) = (Role::server(server_name), Role::client());
    let settled = authority
        .keeps(current.server.as_ref(), &server_role, now)
        .is_some()
        && authority
            .keeps(current.client.as_ref(), &client_role, now)
            .is_some();
    ca_changed |= authority.advance(settled, subject, lifetimes.ca, now)?;

    let (server, server_renewal) =
        authority.reconcile(current.server.as_ref(), &server_role, lifetimes.leaf, now)?;
    let (client, client_renewal) =
        authority.reconcile(current.client.as_ref(), &client_role, lifetimes.leaf, now)?;
    if authority.in_transition() && (server.is_some() || client.is_some()) {
        // This write must reach the pods before the next step, too.
        authority.since = Some(now);
        ca_changed = true;
    }
    Ok(Plan {
        ca: ca_changed.then(|| authority.data()),
        server,
        client,
        next: authority
            .next_step()
            .min(server_renewal)
            .min(client_renewal),
    })
}

/// Secret `data` (bytes) -> SecretData; values that are not UTF-8 are skipped.
pub fn secret_data(secret: &Secret) -> SecretData {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(key, value)| Some((key.clone(), String::from_utf8(value.0.clone()).ok()?)))
        .collect()
}

fn check_inputs(server_name: &str, lifetimes: &Lifetimes) -> Result<(), String> {
    // The controller connects by this name; an IP would need an IP SAN.
    if !matches!(
        ServerName::try_from(server_name),
        Ok(ServerName::DnsName(_))
    ) {
        return Err(format!("server name {server_name:?} is not a DNS name"));
    }
    if lifetimes.ca < MIN_LIFETIME || lifetimes.leaf < MIN_LEAF_LIFETIME {
        return Err(format!(
            "certificate lifetimes {lifetimes:?} are shorter than the minimum (CA {MIN_LIFETIME:?}, leaf {MIN_LEAF_LIFETIME:?})"
        ));
    }
    Ok(())
}

/// Which leaf: both name `name` as CN and only DNS SAN, and differ in usage.
struct Role<'a> {
    name: &'a str,
    server: bool,
}

impl<'a> Role<'a> {
    fn server(name: &'a str) -> Self {
        Role { name, server: true }
    }

    fn client() -> Self {
        Role {
            name: CLIENT_NAME,
            server: false,
        }
    }

    fn usage(&self) -> ExtendedKeyUsagePurpose {
        if self.server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }
    }

    fn matches(&self, cert: &X509Certificate<'_>) -> bool {
        let mut cns = cert.subject().iter_common_name().map(|cn| cn.as_str());
        let cn_ok = matches!((cns.next(), cns.next()), (Some(Ok(cn)), None) if cn == self.name);
        let san_ok = match cert.subject_alternative_name() {
            Ok(Some(san)) => matches!(
                san.value.general_names.as_slice(),
                [GeneralName::DNSName(dns)] if *dns == self.name
            ),
            _ => false,
        };
        let usage_ok = match cert.extended_key_usage() {
            Ok(Some(eku)) if self.server => eku.value.server_auth,
            Ok(Some(eku)) => eku.value.client_auth,
            _ => false,
        };
        cn_ok && san_ok && usage_ok
    }
}

/// A certificate as stored: exactly one PEM block, and its validity.
struct Cert {
    pem: String,
    der: Vec<u8>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Cert {
    fn parse(pem: &str) -> Option<Cert> {
        let mut blocks = CertificateDer::pem_slice_iter(pem.as_bytes());
        let der = blocks.next()?.ok()?.to_vec();
        if blocks.next().is_some() {
            return None;
        }
        let (rest, x509) = X509Certificate::from_der(&der).ok()?;
        if !rest.is_empty() {
            return None;
        }
        let not_before = from_unix(x509.validity().not_before.timestamp());
        let not_after = from_unix(x509.validity().not_after.timestamp());
        Some(Cert {
            // One canonical text, so bundles compare as strings.
            pem: format!("{}\n", pem.trim()),
            der,
            not_before,
            not_after,
        })
    }

    fn x509(&self) -> Option<X509Certificate<'_>> {
        X509Certificate::from_der(&self.der).ok().map(|(_, c)| c)
    }

    /// The start of the last third of its life.
    fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life * 2 / 3
    }

    fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// Whether `issuer` signed it: the issuer name alone would also match a
    /// CA of the same name, e.g. another fleet's.
    fn issued_by(&self, issuer: &Cert) -> bool {
        let (Some(cert), Some(issuer)) = (self.x509(), issuer.x509()) else {
            return false;
        };
        cert.issuer().as_raw() == issuer.subject().as_raw()
            && cert.verify_signature(Some(issuer.public_key())).is_ok()
    }

    /// Whether `key_pem` is a P-256 key and the one this certificate is for.
    fn matches_key(&self, key_pem: &str) -> bool {
        let (Some(cert), Ok(key)) = (self.x509(), KeyPair::from_pem(key_pem)) else {
            return false;
        };
        key.algorithm() == &PKCS_ECDSA_P256_SHA256
            && key.public_key_raw() == &*cert.public_key().subject_public_key.data
    }

    fn is_ca(&self) -> bool {
        let Some(cert) = self.x509() else {
            return false;
        };
        let ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        let signs = matches!(cert.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign());
        ca && signs
    }
}

/// A CA that can sign.
struct Ca {
    cert: Cert,
    key: String,
}

impl Ca {
    /// A usable CA from stored PEM, or None.
    fn load(cert: &str, key: &str, now: SystemTime) -> Option<Ca> {
        let cert = Cert::parse(cert)?;
        let usable = cert.is_ca() && !cert.expired(now) && cert.matches_key(key);
        usable.then(|| Ca {
            cert,
            key: key.to_string(),
        })
    }

    fn generate(subject: &str, lifetime: Duration, now: SystemTime) -> Result<Ca, String> {
        let key = KeyPair::generate().map_err(|e| format!("generating a CA key: {e}"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(subject);
        // Path length 0: it signs leaves only.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, now, now + lifetime);
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("signing the CA certificate: {e}"))?;
        let cert = Cert::parse(&cert.pem()).ok_or("the new CA certificate does not parse")?;
        Ok(Ca {
            cert,
            key: key.serialize_pem(),
        })
    }

    /// A leaf for `role` with a fresh key: (certificate PEM, key PEM).
    fn issue(
        &self,
        role: &Role<'_>,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<(String, String), String> {
        let failed = |e: rcgen::Error| format!("issuing the {} certificate: {e}", role.name);
        let ca_key = KeyPair::from_pem(&self.key).map_err(failed)?;
        let der = CertificateDer::from(self.cert.der.as_slice());
        let issuer = Issuer::from_ca_cert_der(&der, ca_key).map_err(failed)?;
        let key = KeyPair::generate().map_err(failed)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(role.name);
        let dns = role.name.try_into().map_err(failed)?;
        params.subject_alt_names = vec![SanType::DnsName(dns)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![role.usage()];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        // Nothing can be valid longer than its issuer.
        set_validity(&mut params, now, (now + lifetime).min(self.cert.not_after));
        let cert = params.signed_by(&key, &issuer).map_err(failed)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The CA Secret's contents: the CA that signs, and the rotation in progress.
struct Authority {
    active: Ca,
    /// Staged: trusted, but not signing yet.
    next: Option<Ca>,
    /// Replaced: still trusted, never signs again (its key is gone).
    previous: Option<Cert>,
    /// The last leaf write while in transition.
    since: Option<SystemTime>,
}

impl Authority {
    fn generate(subject: &str, lifetime: Duration, now: SystemTime) -> Result<Authority, String> {
        Ok(Authority {
            active: Ca::generate(subject, lifetime, now)?,
            next: None,
            previous: None,
            since: None,
        })
    }

    /// The stored authority, with unusable parts dropped, and whether that
    /// (or anything else) makes the stored data differ from what it should
    /// be. None when the active CA itself is unusable.
    fn load(data: &SecretData, now: SystemTime) -> Option<(Authority, bool)> {
        let active = Ca::load(data.get(TLS_CRT)?, data.get(TLS_KEY)?, now)?;
        let next = match (data.get(NEXT_CRT), data.get(NEXT_KEY)) {
            (Some(cert), Some(key)) => Ca::load(cert, key, now),
            _ => None,
        };
        let mut authority = Authority {
            active,
            next,
            previous: data.get(PREVIOUS_CRT).and_then(|pem| Cert::parse(pem)),
            since: data
                .get(PROPAGATING_SINCE)
                .and_then(|s| s.parse().ok())
                .map(|secs| UNIX_EPOCH + Duration::from_secs(secs)),
        };
        if !authority.in_transition() {
            authority.since = None;
        } else if authority.since.is_none() {
            // Unknown: wait a full grace period from now.
            authority.since = Some(now);
        }
        let repaired = authority.data() != *data;
        Some((authority, repaired))
    }

    fn data(&self) -> SecretData {
        let mut data = SecretData::new();
        let mut put = |key: &str, value: &str| data.insert(key.to_string(), value.to_string());
        put(TLS_CRT, &self.active.cert.pem);
        put(TLS_KEY, &self.active.key);
        if let Some(next) = &self.next {
            put(NEXT_CRT, &next.cert.pem);
            put(NEXT_KEY, &next.key);
        }
        if let Some(previous) = &self.previous {
            put(PREVIOUS_CRT, &previous.pem);
        }
        if let Some(since) = self.since {
            put(PROPAGATING_SINCE, &to_unix(since).to_string());
        }
        data
    }

    fn in_transition(&self) -> bool {
        self.next.is_some() || self.previous.is_some()
    }

    /// Every CA a leaf must accept, the active one first.
    fn bundle(&self) -> String {
        let next = self.next.as_ref().map(|ca| &ca.cert);
        std::iter::once(&self.active.cert)
            .chain(next)
            .chain(&self.previous)
            .map(|cert| cert.pem.as_str())
            .collect()
    }

    /// Takes at most one rotation step (each changes the bundle, which must
    /// reach the pods first); returns whether it took one. `settled`: both
    /// leaves are as they should be, so nothing is being written now.
    fn advance(
        &mut self,
        settled: bool,
        subject: &str,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<bool, String> {
        let waited = self
            .since
            .is_none_or(|since| now >= since + PROPAGATION_GRACE);
        if let Some(previous) = &self.previous {
            // Step 3. An expired CA verifies nothing: no need to wait.
            let drop = previous.expired(now) || (settled && waited);
            if drop {
                self.previous = None;
                if self.next.is_none() {
                    self.since = None;
                }
            }
            return Ok(drop);
        }
        if self.next.is_some() {
            // Step 2.
            if settled
                && waited
                && let Some(next) = self.next.take()
            {
                self.previous = Some(std::mem::replace(&mut self.active, next).cert);
                return Ok(true);
            }
            return Ok(false);
        }
        if now >= self.active.cert.renew_at() {
            // Step 1.
            self.next = Some(Ca::generate(subject, lifetime, now)?);
            return Ok(true);
        }
        Ok(false)
    }

    /// When the authority itself needs `plan` again.
    fn next_step(&self) -> SystemTime {
        let step = match self.since {
            Some(since) if self.in_transition() => since + PROPAGATION_GRACE,
            _ => self.active.cert.renew_at(),
        };
        let expiry = self.previous.as_ref().map(|p| p.not_after);
        expiry.map_or(step, |expiry| step.min(expiry))
    }

    /// The leaf Secret to write for `role`, if any, and when the leaf in
    /// force afterwards is due for renewal.
    fn reconcile(
        &self,
        data: Option<&SecretData>,
        role: &Role<'_>,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<(Option<SecretData>, SystemTime), String> {
        if let Some(kept) = self.keeps(data, role, now) {
            return Ok((None, kept.renew_at()));
        }
        let (data, issued) = self.issue(role, lifetime, now)?;
        Ok((Some(data), issued.renew_at()))
    }

    /// The leaf in `data` if it can stay as it is.
    fn keeps(&self, data: Option<&SecretData>, role: &Role<'_>, now: SystemTime) -> Option<Cert> {
        let data = data?;
        if *data.get(CA_CRT)? != self.bundle() {
            return None;
        }
        let cert = Cert::parse(data.get(TLS_CRT)?)?;
        let fresh = cert.not_before <= now && now < cert.renew_at();
        let good = fresh
            && cert.matches_key(data.get(TLS_KEY)?)
            && cert.issued_by(&self.active.cert)
            && cert.x509().is_some_and(|x509| role.matches(&x509));
        good.then_some(cert)
    }

    /// A new leaf Secret for `role`, and its certificate.
    fn issue(
        &self,
        role: &Role<'_>,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<(SecretData, Cert), String> {
        let (cert_pem, key_pem) = self.active.issue(role, lifetime, now)?;
        let cert = Cert::parse(&cert_pem).ok_or("the new leaf certificate does not parse")?;
        let data = SecretData::from([
            (TLS_CRT.to_string(), cert_pem),
            (TLS_KEY.to_string(), key_pem),
            (CA_CRT.to_string(), self.bundle()),
        ]);
        Ok((data, cert))
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn set_validity(params: &mut CertificateParams, now: SystemTime, not_after: SystemTime) {
    // Backdating by more than a tenth of a short life would put its
    // renewal point in the past.
    let life = not_after.duration_since(now).unwrap_or_default();
    params.not_before = (now - CLOCK_SKEW.min(life / 10)).into();
    params.not_after = not_after.into();
}

/// Random, so unique without keeping any count; 16 bytes, positive.
fn random_serial() -> Result<SerialNumber, String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness for a serial number".to_string())?;
    // No sign bit, and no leading zero byte that DER would strip.
    bytes[0] = (bytes[0] & 0x7f).max(1);
    Ok(SerialNumber::from_slice(&bytes))
}

fn from_unix(secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

fn to_unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::ByteString;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::server::WebPkiClientVerifier;
    use rustls::{
        CertificateError, ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig,
        ServerConnection,
    };

    use super::*;

    const SUBJECT: &str = "kengine-gateway admin CA for apps/edge";
    const SERVER: &str = "admin.edge.apps.svc";
    /// Whole seconds, as certificates store them.
    const T0: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn secs(d: Duration) -> u64 {
        d.as_secs()
    }

    /// Plans at `now` with the default lifetimes and applies the plan.
    fn run(current: &mut Current, now: SystemTime) -> Plan {
        run_with(current, &Lifetimes::default(), now)
    }

    fn run_with(current: &mut Current, lifetimes: &Lifetimes, now: SystemTime) -> Plan {
        let plan = plan(current, SUBJECT, SERVER, lifetimes, now).unwrap();
        for (target, write) in [
            (&mut current.ca, &plan.ca),
            (&mut current.server, &plan.server),
            (&mut current.client, &plan.client),
        ] {
            if let Some(data) = write {
                *target = Some(data.clone());
            }
        }
        plan
    }

    fn fresh() -> Current {
        let mut current = Current::default();
        run(&mut current, at(T0));
        current
    }

    fn writes(plan: &Plan) -> [bool; 3] {
        [
            plan.ca.is_some(),
            plan.server.is_some(),
            plan.client.is_some(),
        ]
    }

    fn get<'a>(data: &'a Option<SecretData>, key: &str) -> &'a str {
        data.as_ref().unwrap().get(key).unwrap()
    }

    fn cert(pem: &str) -> Cert {
        Cert::parse(pem).unwrap()
    }

    fn bundle(pem: &str) -> Vec<Vec<u8>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(|c| c.unwrap().to_vec())
            .collect()
    }

    fn leaf_renewal() -> u64 {
        // notBefore = T0 - skew; a third of (lifetime + skew) left.
        let life = secs(Lifetimes::default().leaf) + secs(CLOCK_SKEW);
        T0 - secs(CLOCK_SKEW) + life * 2 / 3
    }

    fn ca_renewal() -> u64 {
        let life = secs(Lifetimes::default().ca) + secs(CLOCK_SKEW);
        T0 - secs(CLOCK_SKEW) + life * 2 / 3
    }

    #[test]
    fn nothing_exists_creates_all_three() {
        let mut current = Current::default();
        let plan = run(&mut current, at(T0));
        assert_eq!(writes(&plan), [true, true, true]);
        assert_eq!(plan.next, at(leaf_renewal()));

        let ca = cert(get(&current.ca, TLS_CRT));
        assert!(ca.is_ca());
        assert!(ca.matches_key(get(&current.ca, TLS_KEY)));
        let ca_x509 = ca.x509().unwrap();
        let cn = ca_x509.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), SUBJECT);
        assert_eq!(ca.not_before, at(T0) - CLOCK_SKEW);
        assert_eq!(ca.not_after, at(T0) + Lifetimes::default().ca);
        let ca_data = current.ca.as_ref().unwrap();
        assert_eq!(ca_data.keys().collect::<Vec<_>>(), [TLS_CRT, TLS_KEY]);

        for (data, role) in [
            (&current.server, Role::server(SERVER)),
            (&current.client, Role::client()),
        ] {
            let leaf = cert(get(data, TLS_CRT));
            let x509 = leaf.x509().unwrap();
            assert!(role.matches(&x509), "{}", role.name);
            assert!(leaf.issued_by(&ca));
            assert!(leaf.matches_key(get(data, TLS_KEY)));
            assert!(!leaf.is_ca());
            assert_eq!(get(data, CA_CRT), ca.pem);
            assert_eq!(leaf.not_before, at(T0) - CLOCK_SKEW);
            assert_eq!(leaf.not_after, at(T0) + Lifetimes::default().leaf);
            let eku = x509.extended_key_usage().unwrap().unwrap().value;
            assert_eq!(
                (eku.server_auth, eku.client_auth),
                (role.server, !role.server)
            );
            assert_eq!(x509.raw_serial().len(), 16);
            assert_ne!(x509.raw_serial(), ca_x509.raw_serial());
        }
    }

    #[test]
    fn roles_are_told_apart() {
        let current = fresh();
        let server = cert(get(&current.server, TLS_CRT));
        let client = cert(get(&current.client, TLS_CRT));
        assert!(!Role::client().matches(&server.x509().unwrap()));
        assert!(!Role::server(SERVER).matches(&client.x509().unwrap()));
        assert!(!Role::server("other.apps.svc").matches(&server.x509().unwrap()));
    }

    #[test]
    fn the_ca_key_stays_in_the_ca_secret() {
        let mut current = fresh();
        run(&mut current, at(ca_renewal()));
        let ca = current.ca.as_ref().unwrap();
        let keys = [&ca[TLS_KEY], &ca[NEXT_KEY]];
        for leaf in [&current.server, &current.client] {
            for value in leaf.as_ref().unwrap().values() {
                for key in keys {
                    assert!(!value.contains(key.trim()));
                }
            }
        }
    }

    #[test]
    fn valid_secrets_are_left_alone() {
        let mut current = fresh();
        let plan = run(&mut current, at(T0 + 86_400));
        assert_eq!(writes(&plan), [false; 3]);
        assert_eq!(plan.next, at(leaf_renewal()));
    }

    #[test]
    fn next_is_the_earliest_renewal() {
        let mut current = fresh();
        // Renew only the client, a day later: the server is due first.
        current.client = None;
        run(&mut current, at(T0 + 86_400));
        let plan = run(&mut current, at(T0 + 2 * 86_400));
        assert_eq!(writes(&plan), [false; 3]);
        assert_eq!(plan.next, at(leaf_renewal()));
        // And once the server is renewed, the client is.
        let plan = run(&mut current, at(leaf_renewal()));
        assert_eq!(writes(&plan), [false, true, false]);
        assert_eq!(plan.next, at(leaf_renewal() + 86_400));
    }

    #[test]
    fn leaves_are_renewed_in_their_last_third() {
        let mut current = fresh();
        let before = run(&mut current, at(leaf_renewal() - 1));
        assert_eq!(writes(&before), [false; 3]);
        let old_key = get(&current.server, TLS_KEY).to_string();
        let due = run(&mut current, at(leaf_renewal()));
        assert_eq!(writes(&due), [false, true, true]);
        assert_ne!(get(&current.server, TLS_KEY), old_key);
    }

    #[test]
    fn expired_leaves_are_reissued() {
        let mut current = fresh();
        let expiry = T0 + secs(Lifetimes::default().leaf);
        assert_eq!(
            writes(&run(&mut current, at(expiry + 1))),
            [false, true, true]
        );
    }

    /// Changes the server Secret, plans a day later, and says what was written.
    fn after_server_change(change: impl FnOnce(&mut SecretData)) -> (Current, Plan) {
        let mut current = fresh();
        change(current.server.as_mut().unwrap());
        let plan = run(&mut current, at(T0 + 86_400));
        (current, plan)
    }

    #[test]
    fn missing_leaf_is_reissued_alone() {
        let mut current = fresh();
        let client = current.client.clone();
        current.server = None;
        let plan = run(&mut current, at(T0 + 60));
        assert_eq!(writes(&plan), [false, true, false]);
        assert_eq!(current.client, client);
        let ca = cert(get(&current.ca, TLS_CRT));
        assert!(cert(get(&current.server, TLS_CRT)).issued_by(&ca));
    }

    #[test]
    fn broken_leaf_is_reissued() {
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let (_, plan) = after_server_change(|s| {
            s.insert(TLS_CRT.into(), garbage.into());
        });
        assert_eq!(writes(&plan), [false, true, false]);
        let (_, plan) = after_server_change(|s| {
            s.remove(TLS_KEY);
        });
        assert_eq!(writes(&plan), [false, true, false]);
        // A key that is not the certificate's.
        let other = KeyPair::generate().unwrap().serialize_pem();
        let (_, plan) = after_server_change(|s| {
            s.insert(TLS_KEY.into(), other);
        });
        assert_eq!(writes(&plan), [false, true, false]);
    }

    #[test]
    fn leaf_with_a_stale_bundle_is_reissued() {
        let (current, plan) = after_server_change(|s| {
            s.insert(CA_CRT.into(), String::new());
        });
        assert_eq!(writes(&plan), [false, true, false]);
        assert_eq!(get(&current.server, CA_CRT), get(&current.ca, TLS_CRT));
    }

    #[test]
    fn leaf_from_another_ca_of_the_same_name_is_reissued() {
        let imposter = fresh();
        let (current, plan) = after_server_change(|s| {
            s.insert(TLS_CRT.into(), get(&imposter.server, TLS_CRT).into());
            s.insert(TLS_KEY.into(), get(&imposter.server, TLS_KEY).into());
        });
        // Same issuer name: only the signature tells them apart.
        let ca = cert(get(&current.ca, TLS_CRT));
        let foreign = cert(get(&imposter.server, TLS_CRT));
        assert_eq!(
            foreign.x509().unwrap().issuer().as_raw(),
            ca.x509().unwrap().subject().as_raw()
        );
        assert!(!foreign.issued_by(&ca));
        assert_eq!(writes(&plan), [false, true, false]);
        assert!(cert(get(&current.server, TLS_CRT)).issued_by(&ca));
    }

    #[test]
    fn leaf_with_wrong_names_is_reissued() {
        // The server certificate where the client one belongs.
        let mut current = fresh();
        let server = current.server.clone();
        current.client = server.clone();
        assert_eq!(
            writes(&run(&mut current, at(T0 + 60))),
            [false, false, true]
        );
        assert_eq!(current.server, server);

        // A new server name.
        let mut current = fresh();
        let plan = plan(
            &current,
            SUBJECT,
            "new.apps.svc",
            &Lifetimes::default(),
            at(T0),
        )
        .unwrap();
        assert_eq!(writes(&plan), [false, true, false]);
        current.server = plan.server;
        let x509 = cert(get(&current.server, TLS_CRT));
        assert!(Role::server("new.apps.svc").matches(&x509.x509().unwrap()));
    }

    #[test]
    fn unusable_ca_is_replaced_with_everything() {
        let garbage: fn(&mut SecretData) = |ca| {
            ca.insert(TLS_CRT.into(), "not a certificate".into());
        };
        let keyless: fn(&mut SecretData) = |ca| {
            ca.remove(TLS_KEY);
        };
        let wrong_key: fn(&mut SecretData) = |ca| {
            ca.insert(TLS_KEY.into(), KeyPair::generate().unwrap().serialize_pem());
        };
        let unchanged: fn(&mut SecretData) = |_| {};
        let expiry = T0 + secs(Lifetimes::default().ca);
        for (name, change, now) in [
            ("garbage", garbage, T0),
            ("keyless", keyless, T0),
            ("wrong key", wrong_key, T0),
            ("expired", unchanged, expiry),
        ] {
            let mut current = fresh();
            let old = get(&current.ca, TLS_CRT).to_string();
            change(current.ca.as_mut().unwrap());
            let plan = run(&mut current, at(now));
            assert_eq!(writes(&plan), [true; 3], "{name}");
            let ca = current.ca.as_ref().unwrap();
            assert_ne!(ca[TLS_CRT], old, "{name}");
            assert_eq!(ca.keys().collect::<Vec<_>>(), [TLS_CRT, TLS_KEY], "{name}");
            assert_eq!(get(&current.server, CA_CRT), ca[TLS_CRT], "{name}");
        }
        let mut current = fresh();
        current.ca = None;
        assert_eq!(writes(&run(&mut current, at(T0))), [true; 3]);
    }

    #[test]
    fn ca_rotation_goes_in_three_steps() {
        let mut current = fresh();
        let grace = secs(PROPAGATION_GRACE);
        let old_ca = get(&current.ca, TLS_CRT).to_string();
        let t1 = ca_renewal();
        // Leaves renewed as usual until then, the CA untouched.
        assert!(run(&mut current, at(t1 - 1)).ca.is_none());

        // 1. Stage: the next CA is trusted, the old one still signs.
        let staged = run(&mut current, at(t1));
        assert_eq!(writes(&staged), [true; 3]);
        assert_eq!(staged.next, at(t1 + grace));
        let ca = current.ca.clone().unwrap();
        let next_ca = ca[NEXT_CRT].clone();
        assert_eq!(ca[TLS_CRT], old_ca);
        assert_eq!(ca[PROPAGATING_SINCE], t1.to_string());
        for leaf in [&current.server, &current.client] {
            assert_eq!(get(leaf, CA_CRT), format!("{old_ca}{next_ca}"));
            assert!(cert(get(leaf, TLS_CRT)).issued_by(&cert(&old_ca)));
        }
        assert_eq!(writes(&run(&mut current, at(t1 + grace - 1))), [false; 3]);

        // 2. Promote: the next CA signs, the old one is still trusted.
        let t2 = t1 + grace;
        let promoted = run(&mut current, at(t2));
        assert_eq!(writes(&promoted), [true; 3]);
        assert_eq!(promoted.next, at(t2 + grace));
        let ca = current.ca.clone().unwrap();
        assert_eq!(ca[TLS_CRT], next_ca);
        assert_eq!(ca[PREVIOUS_CRT], old_ca);
        assert!(!ca.contains_key(NEXT_CRT) && !ca.contains_key(NEXT_KEY));
        for leaf in [&current.server, &current.client] {
            assert_eq!(get(leaf, CA_CRT), format!("{next_ca}{old_ca}"));
            assert!(cert(get(leaf, TLS_CRT)).issued_by(&cert(&next_ca)));
        }
        assert_eq!(writes(&run(&mut current, at(t2 + grace - 1))), [false; 3]);

        // 3. Drop the old CA.
        let t3 = t2 + grace;
        let dropped = run(&mut current, at(t3));
        assert_eq!(writes(&dropped), [true; 3]);
        let ca = current.ca.clone().unwrap();
        assert_eq!(ca.keys().collect::<Vec<_>>(), [TLS_CRT, TLS_KEY]);
        for leaf in [&current.server, &current.client] {
            assert_eq!(get(leaf, CA_CRT), next_ca);
        }
        let later = run(&mut current, at(t3 + 60));
        assert_eq!(writes(&later), [false; 3]);
        let leaf_life = secs(Lifetimes::default().leaf) + secs(CLOCK_SKEW);
        assert_eq!(later.next, at(t3 - secs(CLOCK_SKEW) + leaf_life * 2 / 3));
    }

    #[test]
    fn a_leaf_write_mid_rotation_restarts_the_wait() {
        let mut current = fresh();
        let grace = secs(PROPAGATION_GRACE);
        let t1 = ca_renewal();
        run(&mut current, at(t1));
        let client = current.client.clone();

        current.server = None;
        let rewrite = run(&mut current, at(t1 + 60));
        assert_eq!(writes(&rewrite), [true, true, false]);
        assert_eq!(current.client, client);
        assert_eq!(get(&current.ca, PROPAGATING_SINCE), (t1 + 60).to_string());
        assert_eq!(rewrite.next, at(t1 + 60 + grace));

        assert_eq!(writes(&run(&mut current, at(t1 + grace))), [false; 3]);
        let promoted = run(&mut current, at(t1 + 60 + grace));
        assert!(current.ca.as_ref().unwrap().contains_key(PREVIOUS_CRT));
        assert_eq!(writes(&promoted), [true; 3]);
    }

    #[test]
    fn an_expired_old_ca_is_dropped_without_waiting() {
        let mut current = fresh();
        let t1 = ca_renewal();
        run(&mut current, at(t1));
        run(&mut current, at(t1 + secs(PROPAGATION_GRACE)));
        let old_expiry = cert(get(&current.ca, PREVIOUS_CRT)).not_after;
        // Keep the leaves unsettled: without expiry this would wait.
        current.server = None;
        let plan = plan(&current, SUBJECT, SERVER, &Lifetimes::default(), old_expiry).unwrap();
        let ca = plan.ca.unwrap();
        assert_eq!(ca.keys().collect::<Vec<_>>(), [TLS_CRT, TLS_KEY]);
        assert_eq!(plan.server.unwrap()[CA_CRT], ca[TLS_CRT]);
    }

    #[test]
    fn broken_next_ca_is_staged_again() {
        let mut current = fresh();
        let t1 = ca_renewal();
        run(&mut current, at(t1));
        let old_next = get(&current.ca, NEXT_CRT).to_string();
        current.ca.as_mut().unwrap().remove(NEXT_KEY);
        let plan = run(&mut current, at(t1 + 10));
        assert_eq!(writes(&plan), [true; 3]);
        assert_ne!(get(&current.ca, NEXT_CRT), old_next);
        assert_eq!(get(&current.ca, PROPAGATING_SINCE), (t1 + 10).to_string());
    }

    #[test]
    fn bad_inputs_are_refused() {
        let current = Current::default();
        let short = Lifetimes {
            ca: Duration::from_secs(600),
            ..Lifetimes::default()
        };
        assert!(plan(&current, SUBJECT, SERVER, &short, at(T0)).is_err());
        for name in ["10.0.0.1", "", "not a name"] {
            let result = plan(&current, SUBJECT, name, &Lifetimes::default(), at(T0));
            assert!(result.is_err(), "{name:?}");
        }
    }

    #[test]
    fn short_leaves_are_renewed_once_per_two_thirds_of_their_life() {
        let lifetimes = Lifetimes {
            leaf: Duration::from_secs(60),
            ..Lifetimes::default()
        };
        let mut current = Current::default();
        run_with(&mut current, &lifetimes, at(T0));
        let settled = run_with(&mut current, &lifetimes, at(T0 + 30));
        assert!(
            settled.server.is_none() && settled.client.is_none(),
            "renewed too early"
        );
        let renewed = run_with(&mut current, &lifetimes, at(T0 + 45));
        assert!(
            renewed.server.is_some() && renewed.client.is_some(),
            "not renewed"
        );
        let too_short = Lifetimes {
            leaf: Duration::from_secs(59),
            ..Lifetimes::default()
        };
        assert!(plan(&Current::default(), SUBJECT, SERVER, &too_short, at(T0)).is_err());
    }

    #[test]
    fn secret_data_skips_binary_values() {
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("tls.crt".to_string(), ByteString(b"PEM".to_vec())),
                ("blob".to_string(), ByteString(vec![0xff, 0xfe])),
            ])),
            ..Secret::default()
        };
        let data = secret_data(&secret);
        assert_eq!(data, SecretData::from([("tls.crt".into(), "PEM".into())]));
        assert!(secret_data(&Secret::default()).is_empty());
    }

    // ------------------------------------------------ interoperability

    fn roots(data: &SecretData) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for der in bundle(&data[CA_CRT]) {
            roots.add(der.into()).unwrap();
        }
        Arc::new(roots)
    }

    fn identity(data: &SecretData) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let chain = bundle(&data[TLS_CRT]).into_iter().map(Into::into).collect();
        (
            chain,
            PrivateKeyDer::from_pem_slice(data[TLS_KEY].as_bytes()).unwrap(),
        )
    }

    /// As the admin-proxy sidecar is set up (minus its name check, which
    /// `Role::matches` covers).
    fn server_config(data: &SecretData) -> Arc<ServerConfig> {
        let verifier = WebPkiClientVerifier::builder(roots(data)).build().unwrap();
        let (chain, key) = identity(data);
        let config = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    /// As the controller's admin client is set up.
    fn client_config(data: &SecretData) -> Arc<ClientConfig> {
        let (chain, key) = identity(data);
        let config = ClientConfig::builder()
            .with_root_certificates(roots(data))
            .with_client_auth_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    /// A full mutual-TLS handshake in memory, as `server_name`.
    fn handshake(
        server: &SecretData,
        client: &SecretData,
        server_name: &str,
    ) -> Result<(), rustls::Error> {
        crate::kengine::admin::install_crypto_provider();
        let name = ServerName::try_from(server_name.to_string()).unwrap();
        let mut client = Connection::from(ClientConnection::new(client_config(client), name)?);
        let mut server = Connection::from(ServerConnection::new(server_config(server))?);
        // The server checks the client certificate last, after the client
        // considers the handshake done.
        while client.is_handshaking() || server.is_handshaking() {
            let moved = pump(&mut client, &mut server)? | pump(&mut server, &mut client)?;
            assert!(moved, "handshake stalled");
        }
        Ok(())
    }

    /// Not chained to a trusted CA. All our CAs share their fleet's name, so
    /// webpki finds a CA by name and then reports its signature as bad.
    fn assert_untrusted(error: CertificateError) {
        assert!(
            matches!(
                error,
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            ),
            "{error:?}"
        );
    }

    fn rejection(result: Result<(), rustls::Error>) -> CertificateError {
        match result {
            Err(rustls::Error::InvalidCertificate(e)) => e,
            other => panic!("expected a rejected certificate, got {other:?}"),
        }
    }

    fn pump(from: &mut Connection, to: &mut Connection) -> Result<bool, rustls::Error> {
        let mut moved = false;
        while from.wants_write() {
            let mut bytes = Vec::new();
            from.write_tls(&mut bytes).unwrap();
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                to.read_tls(&mut rest).unwrap();
                to.process_new_packets()?;
            }
            moved = true;
        }
        Ok(moved)
    }

    #[test]
    fn issued_leaves_complete_a_handshake() {
        let mut current = Current::default();
        run(&mut current, SystemTime::now());
        let (server, client) = (current.server.unwrap(), current.client.unwrap());
        handshake(&server, &client, SERVER).unwrap();
        // The controller checks the name; the pods check the CA.
        let wrong_name = rejection(handshake(&server, &client, "other.apps.svc"));
        assert!(
            matches!(wrong_name, CertificateError::NotValidForNameContext { .. }),
            "{wrong_name:?}"
        );
        let mut other = Current::default();
        run(&mut other, SystemTime::now());
        // Trusting our CA, but presenting another fleet's certificate.
        let mut foreign = other.client.unwrap();
        foreign.insert(CA_CRT.into(), client[CA_CRT].clone());
        let unknown = rejection(handshake(&server, &foreign, SERVER));
        assert_untrusted(unknown);
    }

    #[test]
    fn every_rotation_step_keeps_old_and_new_leaves_talking() {
        // Real time: rustls checks validity against the clock. A CA of three
        // hours is staged after two; the last step lands at the present.
        let lifetimes = Lifetimes {
            ca: Duration::from_secs(3 * 3600),
            leaf: Duration::from_secs(3 * 3600),
        };
        let grace = secs(PROPAGATION_GRACE);
        let t3 = secs(SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
        let t1 = t3 - 2 * grace;
        let t0 = t1 - 2 * 3600 - 10;
        let mut current = Current::default();
        let mut states = Vec::new();
        for now in [t0, t1, t1 + grace, t3] {
            let plan = run_with(&mut current, &lifetimes, at(now));
            assert_eq!(writes(&plan), [true; 3], "at {}", now - t0);
            states.push((
                current.server.clone().unwrap(),
                current.client.clone().unwrap(),
            ));
        }
        // Right after each step the controller has the new client Secret
        // while pods may still have the old server Secret, and vice versa.
        for pair in states.windows(2) {
            let [(old_server, old_client), (new_server, new_client)] = pair else {
                unreachable!()
            };
            for (server, client) in [
                (old_server, new_client),
                (new_server, old_client),
                (new_server, new_client),
            ] {
                handshake(server, client, SERVER).unwrap();
            }
        }
        // Skipping a step would lock the controller out.
        let (stable_server, _) = &states[0];
        let (_, promoted_client) = &states[2];
        let unknown = rejection(handshake(stable_server, promoted_client, SERVER));
        assert_untrusted(unknown);
        let (staged_server, _) = &states[1];
        let (_, dropped_client) = &states[3];
        let unknown = rejection(handshake(staged_server, dropped_client, SERVER));
        assert_untrusted(unknown);
    }
}
