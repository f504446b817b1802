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

use crate::{Driver, LinkError};

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
        let (who, why, error) = match core.clients().into_iter().find(|record| record.identity == identity) {
            // The alert `certificate_revoked`: the client can say why it was refused.
            Some(record) => (record.name, "revoked client", CertificateError::Revoked),
            // The alert `access_denied`.
            None => (
                format!("cert sha256:{}", hex_prefix(&key)),
                "unknown client",
                CertificateError::ApplicationVerificationFailure,
            ),
        };
        core.audit_refusal(&who, "handshake", why);
        Err(rustls::Error::InvalidCertificate(error))
    }
}

/// What a TLS alert from a Keyward server says about this client's certificate: `certificate_revoked`
/// is [`LinkError::revoked`]; `access_denied` ([`RegistryVerifier`]'s answer to a key no client
/// has) and `unknown_ca` (a certificate of another CA, say a set rotated away) are
/// [`LinkError::unknown_client`]; any other alert, none.
pub fn alert_refusal(alert: rustls::AlertDescription) -> Option<LinkError> {
    use rustls::AlertDescription::{AccessDenied, CertificateRevoked, UnknownCA};
    match alert {
        CertificateRevoked => Some(LinkError::revoked()),
        AccessDenied | UnknownCA => Some(LinkError::unknown_client()),
        _ => None,
    }
}

/// The refusal ([`alert_refusal`]) of a TLS alert received anywhere in `error`'s chain (rustls'
/// `AlertReceived`, as such or inside an `io::Error`, as tokio-rustls and hyper carry it).
pub fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<LinkError> {
    let mut next = Some(error);
    while let Some(error) = next {
        let tls = error
            .downcast_ref::<rustls::Error>()
            .or_else(|| error.downcast_ref::<std::io::Error>()?.get_ref()?.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::AlertReceived(alert)) = tls {
            return alert_refusal(*alert);
        }
        // `io::Error::source` skips the error it wraps: look into it too.
        next = match error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
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

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use keyward_core::{ClientRecord, Identity, MemoryStore, Role, Server};
    use keyward_testkit::pki::{Ca, Usage};
    use rustls::pki_types::CertificateDer;

    use super::*;
    use crate::{DriverConfig, system_clock};

    /// A chain verifier whose every answer differs from rustls' defaults, so that the wrapper is
    /// seen to pass each one on.
    #[derive(Debug)]
    struct Inner {
        hints: Vec<DistinguishedName>,
    }

    impl ClientCertVerifier for Inner {
        fn offer_client_auth(&self) -> bool {
            false
        }
        fn client_auth_mandatory(&self) -> bool {
            true
        }
        fn root_hint_subjects(&self) -> &[DistinguishedName] {
            &self.hints
        }
        fn verify_client_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: UnixTime,
        ) -> Result<ClientCertVerified, rustls::Error> {
            // The chain check: here, any certificate but an empty one.
            if end_entity.is_empty() {
                return Err(rustls::Error::InvalidCertificate(CertificateError::BadEncoding));
            }
            Ok(ClientCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("inner".into()))
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("inner".into()))
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519, SignatureScheme::ECDSA_NISTP384_SHA384]
        }
        fn requires_raw_public_keys(&self) -> bool {
            true
        }
    }

    fn record(name: &str, key: [u8; 32], revoked: bool) -> ClientRecord {
        let identity = Identity::Cert { spki_sha256: key };
        ClientRecord {
            name: name.into(),
            role: Role::Owner,
            identity,
            created_unix_ms: 1,
            revoked_unix_ms: revoked.then_some(2),
        }
    }

    #[tokio::test]
    async fn it_passes_the_chain_verifiers_answers_on_and_admits_only_active_clients() {
        let store = Arc::new(MemoryStore::new());
        let core = Arc::new(Server::new(keyward_testkit::test_config(), Box::new(Arc::clone(&store)), [3; 32]));
        let driver = Driver::new(Arc::clone(&core), system_clock(), DriverConfig::default());
        let hints = vec![DistinguishedName::from(b"hint".to_vec())];
        let verifier = RegistryVerifier::new(Arc::new(Inner { hints }), &driver);
        assert!(!verifier.offer_client_auth());
        assert!(verifier.client_auth_mandatory());
        let seen: Vec<&[u8]> = verifier.root_hint_subjects().iter().map(DistinguishedName::as_ref).collect();
        assert_eq!(seen, [b"hint".as_slice()]);
        assert_eq!(
            verifier.supported_verify_schemes(),
            [SignatureScheme::ED25519, SignatureScheme::ECDSA_NISTP384_SHA384]
        );
        assert!(verifier.requires_raw_public_keys());

        let ca = Ca::new("test CA");
        let [member, revoked, stranger] =
            ["member", "revoked", "stranger"].map(|name| ca.leaf(name, &[], Usage::Client, false).chain[0].clone());
        let key = |cert: &CertificateDer<'_>| crate::spki_sha256(cert).unwrap();
        core.add_client(record("member", key(&member), false)).unwrap();
        core.add_client(record("gone", key(&revoked), true)).unwrap();
        let now = UnixTime::now();
        assert!(verifier.verify_client_cert(&member, &[], now).is_ok());
        let refused = rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        // A revoked client is told so (the alert certificate_revoked); a stranger gets access_denied.
        let revoked_error = rustls::Error::InvalidCertificate(CertificateError::Revoked);
        assert_eq!(verifier.verify_client_cert(&revoked, &[], now).unwrap_err(), revoked_error);
        assert_eq!(verifier.verify_client_cert(&stranger, &[], now).unwrap_err(), refused);
        // The chain verifier's refusal comes first, as it gave it.
        let empty = CertificateDer::from(Vec::new());
        let bad = rustls::Error::InvalidCertificate(CertificateError::BadEncoding);
        assert_eq!(verifier.verify_client_cert(&empty, &[], now).unwrap_err(), bad);

        // Two refusals audited: the revoked client by its name, the stranger by its key's prefix.
        core.flush_audit();
        let records = keyward_core::Store::read_audit(&*store, 0, 10).unwrap();
        let seen: Vec<(String, String, String)> = records
            .iter()
            .map(|r| (r.event.principal.clone(), r.event.method.clone(), r.event.outcome.clone()))
            .collect();
        let prefix = format!("cert sha256:{}", hex_prefix(&key(&stranger)));
        assert_eq!(
            seen,
            [
                ("gone".to_owned(), "handshake".to_owned(), "revoked client".to_owned()),
                (prefix, "handshake".to_owned(), "unknown client".to_owned()),
            ]
        );
        assert_eq!(hex_prefix(&[0xab; 32]), "ab".repeat(8));
    }

    /// A client certificate and the key of another: the signature over the handshake does not verify.
    #[derive(Debug)]
    struct WrongKey(Arc<rustls::sign::CertifiedKey>);

    impl rustls::client::ResolvesClientCert for WrongKey {
        fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(Arc::clone(&self.0))
        }
        fn has_certs(&self) -> bool {
            true
        }
    }

    /// Runs a TLS 1.3 handshake in memory; the first error either side reports.
    fn handshake(
        client: &mut rustls::ClientConnection,
        server: &mut rustls::ServerConnection,
    ) -> Result<(), rustls::Error> {
        for _ in 0..16 {
            let mut bytes = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut bytes).unwrap();
            }
            if !bytes.is_empty() {
                server.read_tls(&mut bytes.as_slice()).unwrap();
                server.process_new_packets()?;
            }
            let mut bytes = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut bytes).unwrap();
            }
            if !bytes.is_empty() {
                client.read_tls(&mut bytes.as_slice()).unwrap();
                client.process_new_packets()?;
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    /// The handshake's signatures are the chain verifier's to check: a registered certificate
    /// presented with a key that is not its own is refused.
    #[tokio::test]
    async fn a_registered_certificate_without_its_key_fails_the_handshake() {
        use keyward_testkit::pki::{client_config, provider};
        let core = Arc::new(Server::new(keyward_testkit::test_config(), Box::new(MemoryStore::new()), [4; 32]));
        let driver = Driver::new(Arc::clone(&core), system_clock(), DriverConfig::default());
        let ca = Ca::new("test CA");
        let server_identity = ca.leaf("server", &["localhost"], Usage::Server, false);
        let member = ca.leaf("member", &[], Usage::Client, false);
        let other = ca.leaf("other", &[], Usage::Client, false);
        core.add_client(record("member", crate::spki_sha256(&member.chain[0]).unwrap(), false)).unwrap();
        let chain =
            rustls::server::WebPkiClientVerifier::builder_with_provider(ca.roots(), provider()).build().unwrap();
        let server_config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_client_cert_verifier(RegistryVerifier::new(chain, &driver))
                .with_single_cert(server_identity.chain.clone(), server_identity.key())
                .unwrap(),
        );
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connect = |config: rustls::ClientConfig| {
            let client = rustls::ClientConnection::new(Arc::new(config), name.clone()).unwrap();
            let server = rustls::ServerConnection::new(Arc::clone(&server_config)).unwrap();
            (client, server)
        };

        let (mut client, mut server) = connect(client_config(&ca, Some(&member)));
        handshake(&mut client, &mut server).unwrap();

        let key = rustls::crypto::ring::sign::any_supported_type(&other.key()).unwrap();
        let wrong = Arc::new(rustls::sign::CertifiedKey::new(member.chain.clone(), key));
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(ca.roots())
            .with_client_cert_resolver(Arc::new(WrongKey(wrong)));
        let (mut client, mut server) = connect(config);
        let refused = handshake(&mut client, &mut server).unwrap_err();
        assert!(matches!(refused, rustls::Error::InvalidCertificate(CertificateError::BadSignature)), "{refused:?}");
    }
}
