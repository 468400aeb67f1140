//! The admin port's TLS settings: built from files, rebuilt when they change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};

use super::x509;

/// Where the server certificate, its key and the client CA are read from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The server certificate's private key, PEM.
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to.
    pub client_ca: PathBuf,
}

/// The three files' bytes, as read at one moment.
#[derive(Clone, PartialEq, Eq)]
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl TlsFiles {
    fn read(&self) -> anyhow::Result<Material> {
        fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        }
        Ok(Material {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            ca: read(&self.client_ca)?,
        })
    }

    fn build(&self, m: &Material, client_name: &str) -> anyhow::Result<ServerConfig> {
        let certs = CertificateDer::pem_slice_iter(&m.cert)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing {}", self.cert.display()))?;
        if certs.is_empty() {
            bail!("{} holds no PEM certificate", self.cert.display());
        }
        let key = PrivateKeyDer::from_pem_slice(&m.key)
            .with_context(|| format!("parsing {}", self.key.display()))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&m.ca) {
            let ca = ca.with_context(|| format!("parsing {}", self.client_ca.display()))?;
            roots
                .add(ca)
                .with_context(|| format!("parsing {}", self.client_ca.display()))?;
        }
        if roots.is_empty() {
            bail!("{} holds no PEM certificate", self.client_ca.display());
        }
        let inner = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .with_context(|| format!("using {} as client CA", self.client_ca.display()))?;
        let verifier = Arc::new(NamedClientVerifier {
            inner,
            name: client_name.to_string(),
        });
        let mut config = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .with_context(|| {
                format!("using {} with {}", self.cert.display(), self.key.display())
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // No resumption: every connection presents (and has checked) a client
        // certificate against the CA and name in force right now.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }
}

/// The TLS settings new handshakes use, rebuilt by [`CertReloader::check`]
/// whenever the files' contents change. Connections already established keep
/// the settings they were accepted with.
pub struct CertReloader {
    files: TlsFiles,
    client_name: String,
    current: RwLock<Arc<ServerConfig>>,
    /// What was last read, valid or not: a broken set of files is reported
    /// once, not on every check.
    seen: Mutex<Material>,
}

impl CertReloader {
    /// Reads and checks the files; any problem is an error.
    pub fn load(files: TlsFiles, client_name: &str) -> anyhow::Result<Self> {
        crate::kengine::admin::install_crypto_provider();
        let material = files.read()?;
        let config = files.build(&material, client_name)?;
        Ok(CertReloader {
            files,
            client_name: client_name.to_string(),
            current: RwLock::new(Arc::new(config)),
            seen: Mutex::new(material),
        })
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().expect("tls lock").clone()
    }

    /// Re-reads the files; when they changed and form a valid set, new
    /// handshakes use them. Returns whether the settings were replaced.
    pub fn check(&self) -> bool {
        let material = match self.files.read() {
            Ok(m) => m,
            Err(e) => {
                // Mid-swap, or the Secret is gone: keep serving what we have.
                tracing::debug!(error = %format!("{e:#}"), "TLS files unreadable; keeping the current ones");
                return false;
            }
        };
        let mut seen = self.seen.lock().expect("tls lock");
        if *seen == material {
            return false;
        }
        *seen = material.clone();
        match self.files.build(&material, &self.client_name) {
            Ok(config) => {
                *self.current.write().expect("tls lock") = Arc::new(config);
                tracing::info!("admin TLS certificate, key or client CA changed: reloaded");
                true
            }
            Err(e) => {
                // Typically the certificate and key read across a rotation;
                // the next check sees a consistent pair.
                tracing::warn!(error = %format!("{e:#}"), "new admin TLS files are not usable yet; keeping the current ones");
                false
            }
        }
    }

    /// Checks the files every `interval`, forever.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let this = self.clone();
            // File reads are blocking; they are tiny, but keep them off the
            // runtime's workers anyway.
            let _ = tokio::task::spawn_blocking(move || this.check()).await;
        }
    }
}

/// A client certificate must chain to the CA (webpki) and name `name` as a
/// DNS SAN or its subject CN.
#[derive(Debug)]
struct NamedClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    name: String,
}

#[derive(Debug, thiserror::Error)]
#[error("client certificate is for {}, not {expected}", .names.join(", "))]
struct WrongClient {
    names: Vec<String>,
    expected: String,
}

impl ClientCertVerifier for NamedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = x509::names(end_entity);
        if names.contains(&self.name) {
            return Ok(verified);
        }
        let presented = names.labelled();
        let error = match ServerName::try_from(self.name.clone()) {
            // Displays as "certificate not valid for name ...; certificate
            // is only valid for CN ... or DNS ...".
            Ok(expected) => CertificateError::NotValidForNameContext {
                expected,
                presented,
            },
            Err(_) => CertificateError::Other(OtherError(Arc::new(WrongClient {
                names: presented,
                expected: self.name.clone(),
            }))),
        };
        Err(rustls::Error::InvalidCertificate(error))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
