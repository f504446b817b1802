//! rustls configurations from a certificate directory (ring provider, TLS 1.3).
//!
//! The server requires a client certificate that chains to `ca.crt` **and** carries an extended key
//! usage extension listing clientAuth. webpki checks the EKU only when the extension is present, so
//! [`RequireClientAuth`] wraps `WebPkiClientVerifier` and refuses a certificate without the
//! extension, or with one that does not list clientAuth, with alert 43 (unsupported_certificate).
//!
//! The server's certificate and its trust in client certificates come from a [`ServerTls`]: the set
//! in use behind a swappable pointer. [`ServerTls::refresh`] loads a new set when the certificate
//! directory changes (`keyward certs rotate`), so new handshakes use the new server certificate and
//! accept only the new client certificate; connections already open are not touched. Session
//! resumption is off, so a client cannot skip the client certificate check with a ticket from before
//! a rotation. The client trusts only `ca.crt` and presents `client.crt`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use anyhow::Context;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use keyward_http::RegistryVerifier;

use crate::certs;

/// The ring crypto provider (the only one compiled in).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificates of a PEM file.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not PEM certificates", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}

/// Reads a PEM private key.
pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| format!("cannot read a private key from {}", path.display()))
}

fn roots(ca: &Path) -> anyhow::Result<Arc<RootCertStore>> {
    roots_of(load_certs(ca)?)
}

fn roots_of(certs: Vec<CertificateDer<'static>>) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).context("the CA certificate is not usable as a trust anchor")?;
    }
    Ok(Arc::new(roots))
}

/// The certificates of PEM text.
fn pem_certs(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("not PEM certificates")?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in the PEM text");
    Ok(certs)
}

/// Refuses an end-entity certificate unless it has an extended key usage extension that lists
/// clientAuth (1.3.6.1.5.5.7.3.2) itself; anyExtendedKeyUsage alone is not enough.
pub fn require_client_auth_usage(end_entity: &[u8]) -> Result<(), rustls::Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(end_entity)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    match cert.extended_key_usage() {
        Ok(Some(eku)) if eku.value.client_auth => Ok(()),
        // No extension, one without clientAuth, or a malformed or repeated one.
        _ => Err(rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose)),
    }
}

/// What identifies the files of a set on disk: the set's directory and each file's inode, size,
/// modification and change time. Any rotation (a new `current`, or files of a flat set replaced)
/// changes it, and so does a chmod (the fix for a set refused for its modes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    set: PathBuf,
    files: Vec<Option<[i64; 7]>>,
}

impl Stamp {
    fn of(set: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        let files = certs::FILES
            .iter()
            .map(|file| {
                std::fs::metadata(set.join(file)).ok().map(|m| {
                    // Identity only: the bit patterns are compared, never used as numbers.
                    let (dev, ino, size) = (m.dev() as i64, m.ino() as i64, m.size() as i64);
                    [dev, ino, size, m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()]
                })
            })
            .collect();
        Self { set: set.to_path_buf(), files }
    }
}

/// A loaded set: the server's certificate and key, and the verifier of client certificates.
struct Loaded {
    stamp: Stamp,
    certified: Arc<CertifiedKey>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl Loaded {
    /// Loads the set in use in the certificate directory `dir`.
    fn read(dir: &Path, provider: &Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let set = certs::set_dir(dir)?;
        let stamp = Stamp::of(&set);
        for key in certs::KEYS {
            let path = set.join(key);
            // The server key must be there; a client key or a kept CA key must be private if present.
            if key == certs::SERVER_KEY || std::fs::symlink_metadata(&path).is_ok() {
                certs::check_private(&path)?;
            }
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(&set.join(certs::CA_CERT))?, Arc::clone(provider))
                .build()
                .context("cannot build the client certificate verifier")?;
        let certified = CertifiedKey::from_der(
            load_certs(&set.join(certs::SERVER_CERT))?,
            load_key(&set.join(certs::SERVER_KEY))?,
            provider,
        )
        .with_context(|| format!("the server certificate and key in {} do not match", set.display()))?;
        Ok(Self { stamp, certified: Arc::new(certified), verifier })
    }

    /// A set held in memory only (`keyward serve --launcher`): nothing of it is on disk.
    fn in_memory(set: &certs::CertSet, provider: &Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots_of(pem_certs(&set.ca_cert)?)?, Arc::clone(provider))
                .build()
                .context("cannot build the client certificate verifier")?;
        let key = PrivateKeyDer::from_pem_slice(set.server_key.as_bytes()).context("the server key is not PEM")?;
        let certified = CertifiedKey::from_der(pem_certs(&set.server_cert)?, key, provider)
            .context("the server certificate and key do not match")?;
        let stamp = Stamp { set: PathBuf::new(), files: Vec::new() };
        Ok(Self { stamp, certified: Arc::new(certified), verifier })
    }
}

/// The server's side of a certificate directory: the set in use, swappable while the server runs.
///
/// It is the server certificate resolver of the configuration [`ServerTls::config`] builds, and the
/// [`RequireClientAuth`] verifier in it reads the same set, so both change together.
pub struct ServerTls {
    /// The certificate directory; none for a set held in memory, which never changes.
    dir: Option<PathBuf>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
    /// The stamp of the last set that failed to load (reported once, not every second).
    failed: Mutex<Option<Stamp>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("dir", &self.dir).field("set", &self.current().stamp.set).finish()
    }
}

impl ServerTls {
    /// Loads the set in use in the certificate directory `dir`. Fails if a file is missing or
    /// malformed, the server key does not match its certificate, or a private key is readable or
    /// writable by other users.
    pub fn load(dir: &Path) -> anyhow::Result<Arc<Self>> {
        let provider = provider();
        let loaded = Loaded::read(dir, &provider)?;
        Ok(Arc::new(Self {
            dir: Some(dir.to_path_buf()),
            provider,
            current: RwLock::new(Arc::new(loaded)),
            failed: Mutex::new(None),
        }))
    }

    /// A server whose set is `set`, held in memory for this run only (`keyward serve --launcher`):
    /// no file is read or written, and [`ServerTls::refresh`] never changes it.
    pub fn in_memory(set: &certs::CertSet) -> anyhow::Result<Arc<Self>> {
        let provider = provider();
        let loaded = Loaded::in_memory(set, &provider)?;
        Ok(Arc::new(Self { dir: None, provider, current: RwLock::new(Arc::new(loaded)), failed: Mutex::new(None) }))
    }

    fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The directory of the set in use.
    pub fn set_dir(&self) -> PathBuf {
        self.current().stamp.set.clone()
    }

    /// Loads the directory's set if it changed since the one in use. `Ok(Some(set))`: new handshakes
    /// now use the set in `set`; `Ok(None)`: nothing changed (or a set that already failed to load is
    /// still there); `Err`: the changed set failed to load, and the one in use stays.
    pub fn refresh(&self) -> anyhow::Result<Option<PathBuf>> {
        let Some(dir) = &self.dir else { return Ok(None) };
        let set = certs::set_dir(dir)?;
        let stamp = Stamp::of(&set);
        if stamp == self.current().stamp {
            return Ok(None);
        }
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if failed.as_ref() == Some(&stamp) {
            return Ok(None);
        }
        match Loaded::read(dir, &self.provider) {
            Ok(loaded) => {
                *failed = None;
                let set = loaded.stamp.set.clone();
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
                Ok(Some(set))
            }
            Err(error) => {
                *failed = Some(stamp);
                Err(error)
            }
        }
    }

    /// Whether the set in use verifies a chain a client presented (end entity first): the chain,
    /// validity and usage checks a new handshake gets, at this moment. After a rotation, a
    /// connection made with a certificate of the retired CA fails it.
    pub fn verifies(&self, chain: &keyward_driver::CertChain) -> bool {
        let Some((end_entity, intermediates)) = chain.split() else { return false };
        let end_entity = CertificateDer::from(end_entity.as_slice());
        let intermediates: Vec<CertificateDer<'_>> =
            intermediates.iter().map(|cert| CertificateDer::from(cert.as_slice())).collect();
        let verifier = &self.current().verifier;
        verifier.verify_client_cert(&end_entity, &intermediates, UnixTime::now()).is_ok()
            && require_client_auth_usage(&end_entity).is_ok()
    }

    /// The server's configuration: TLS 1.3, the certificate of the set in use, a client
    /// certificate required ([`RequireClientAuth`] over the set in use, inside the transports'
    /// [`RegistryVerifier`] over `driver`'s registry, so a revoked client's next handshake fails),
    /// no session resumption.
    pub fn config(self: &Arc<Self>, driver: &keyward_driver::Driver) -> anyhow::Result<Arc<ServerConfig>> {
        let chain = Arc::new(RequireClientAuth { tls: Arc::clone(self) });
        let verifier = RegistryVerifier::new(chain, driver);
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3 is not available")?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        // A resumed session skips the client certificate check: it would let a client keep using a
        // certificate that a rotation has retired.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServerTls {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current().certified))
    }
}

/// The client certificate verifier: webpki's chain, validity and usage checks against the CA of the
/// set in use, then an explicit clientAuth extended key usage (see [`require_client_auth_usage`]).
#[derive(Debug)]
pub struct RequireClientAuth {
    tls: Arc<ServerTls>,
}

impl ClientCertVerifier for RequireClientAuth {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would have to borrow from a set that may be swapped; clients present their one
        // certificate without them.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.tls.current().verifier.verify_client_cert(end_entity, intermediates, now)?;
        require_client_auth_usage(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls.current().verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls.current().verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.tls.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A server configuration for the set in use in `dir`, loaded once, serving `driver` (see
/// [`ServerTls`] for one that follows rotations).
pub fn server_config(dir: &Path, driver: &keyward_driver::Driver) -> anyhow::Result<Arc<ServerConfig>> {
    ServerTls::load(dir)?.config(driver)
}

/// A client's config from explicit files (tests use other certificates than the set's).
pub fn client_config_from(ca: &Path, cert: Option<(&Path, &Path)>) -> anyhow::Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available")?
        .with_root_certificates(roots(ca)?);
    let config = match cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .context("the client certificate and key do not match")?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The client's config from a certificate directory: trusts `ca.crt`, presents `client.crt`, all of
/// the set in use (either layout; see [`certs::set_dir`]).
pub fn client_config(dir: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let set = certs::set_dir(dir)?;
    client_config_from(&set.join(certs::CA_CERT), Some((&set.join(certs::CLIENT_CERT), &set.join(certs::CLIENT_KEY))))
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_rotated_set_is_loaded_once_and_a_bad_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let first = certs::init(&tls, false, false).unwrap();
        let server = ServerTls::load(&tls).unwrap();
        assert_eq!(server.set_dir(), first);
        assert_eq!(server.refresh().unwrap(), None);

        // A new set whose server key others can read: refused, reported once, the old set stays.
        let second = certs::rotate(&tls, false).unwrap();
        chmod(&second.join(certs::SERVER_KEY), 0o644);
        let error = server.refresh().unwrap_err().to_string();
        assert!(error.contains("server.key is readable by other users (mode 0644); run chmod 600"), "{error}");
        assert_eq!(server.refresh().unwrap(), None);
        assert_eq!(server.set_dir(), first);

        // Fixed: taken on the next check.
        chmod(&second.join(certs::SERVER_KEY), 0o600);
        assert_eq!(server.refresh().unwrap(), Some(second.clone()));
        assert_eq!(server.refresh().unwrap(), None);
        assert_eq!(server.set_dir(), second);
    }

    #[test]
    fn private_keys_of_the_set_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let set = certs::init(&tls, true, false).unwrap();
        ServerTls::load(&tls).unwrap();
        for key in certs::KEYS {
            for mode in [0o640, 0o604, 0o620] {
                chmod(&set.join(key), mode);
                let error = ServerTls::load(&tls).unwrap_err().to_string();
                assert!(error.contains(&set.join(key).display().to_string()), "{error}");
                assert!(error.contains(&format!("(mode {mode:04o}); run chmod 600 on it")), "{error}");
            }
            chmod(&set.join(key), 0o600);
        }
        // The owner's own bits do not matter.
        chmod(&set.join(certs::SERVER_KEY), 0o700);
        ServerTls::load(&tls).unwrap();
    }
}
