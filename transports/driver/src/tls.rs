//! The TLS side of admission (feature `rustls`, which keyward-http and keyward-quic enable and
//! re-export): [`RegistryVerifier`] wraps the verifier that checks a client certificate's chain, and
//! refuses the handshake of a certificate whose key no active client has, so a revoked client cannot
//! even finish a handshake. [`crate::Driver::connection`] still checks every connection (a
//! revocation may land between the handshake and the connection), and the core every request.

use std::sync::{Arc, Weak};

use keyward_core::Identity;
use keyward_core::Server;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::Driver;

/// A client certificate verifier that passes what `inner` passes **and** whose key (the SHA-256 of
/// its SubjectPublicKeyInfo) an active client of the driver's core has. A refused handshake is
/// audited: a revoked client by its name, a stranger by its key's first 8 bytes (a flood of one
/// refusal is one record with a count). A driver answering with a service (no core) checks the
/// chain only.
#[derive(Debug)]
pub struct RegistryVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    core: Option<Weak<Server>>,
}

impl RegistryVerifier {
    /// `inner` checks the chain (e.g. rustls' `WebPkiClientVerifier` over the client CA); the
    /// registry is `driver`'s core's, read at every handshake.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, driver: &Driver) -> Arc<Self> {
        Arc::new(Self { inner, core: driver.core().map(Arc::downgrade) })
    }

    fn admits(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let Some(core) = &self.core else { return Ok(()) };
        let key =
            crate::spki_sha256(end_entity).ok_or(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let Some(core) = core.upgrade() else {
            return Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        };
        if core.client_for_cert(&key).is_some() {
            return Ok(());
        }
        let identity = Identity::Cert { spki_sha256: key };
        let (who, why) = match core.clients().into_iter().find(|record| record.identity == identity) {
            Some(record) => (record.name, "revoked client"),
            None => (format!("cert sha256:{}", hex_prefix(&key)), "unknown client"),
        };
        core.audit_refusal(&who, "handshake", why);
        Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
    }
}

/// The first 8 bytes of `key` in hex.
fn hex_prefix(key: &[u8; 32]) -> String {
    key[..8].iter().map(|byte| format!("{byte:02x}")).collect()
}

impl ClientCertVerifier for RegistryVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
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
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        self.admits(end_entity)?;
        Ok(verified)
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

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}
