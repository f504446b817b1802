//! The CA that signs client certificates: the certificate and key of a certificate set (or a key
//! kept elsewhere, `keyward clients add --ca-key`), and the client public keys it certifies.

use std::fs;
use std::io;
use std::path::Path;

use anyhow::{Context, bail};
use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, KeyPair};

use crate::certs::{CA_CERT, CA_KEY, check_private, client_params};

/// The longest PEM public key accepted (an RSA-8192 SubjectPublicKeyInfo is about 1.5 KB of PEM).
const MAX_PUBLIC_KEY_PEM: usize = 16 * 1024;

/// What [`ClientPublicKey`] accepts, said to whoever sent another key.
const SUPPORTED_KEYS: &str = "public_key must be ECDSA P-256 or P-384, Ed25519, or RSA of 2048 to 8192 bits \
                              (the keys the server's TLS verifies client signatures with)";

/// A client's public key that a [`Ca`] may certify: a SubjectPublicKeyInfo of an algorithm the
/// server's TLS (rustls, ring) verifies client signatures with: ECDSA P-256 or P-384, Ed25519, or
/// RSA of 2048 to 8192 bits. Anything else is refused when parsed, not at the client's first
/// handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientPublicKey {
    algorithm: &'static rcgen::SignatureAlgorithm,
    /// The subjectPublicKey bits (an EC point, an Ed25519 key or an RSAPublicKey).
    key: Vec<u8>,
}

impl std::fmt::Debug for ClientPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientPublicKey({:?})", self.algorithm)
    }
}

impl ClientPublicKey {
    /// Parses a PEM `PUBLIC KEY` (a SubjectPublicKeyInfo). The error is meant for whoever sent the
    /// key (an API client): it names no file and quotes none of the input.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        use rustls_pki_types::pem::PemObject;
        if pem.len() > MAX_PUBLIC_KEY_PEM {
            return Err(format!("public_key is longer than {MAX_PUBLIC_KEY_PEM} bytes: not a public key"));
        }
        let der = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| "public_key must be a PEM public key (-----BEGIN PUBLIC KEY-----)".to_owned())?;
        Self::from_der(der.as_ref())
    }

    /// Parses a DER SubjectPublicKeyInfo (see [`ClientPublicKey::from_pem`]).
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        use x509_parser::oid_registry::{
            OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
        };
        use x509_parser::prelude::FromDer;
        use x509_parser::public_key::PublicKey;

        let malformed = || "public_key is not a well-formed SubjectPublicKeyInfo".to_owned();
        let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der).map_err(|_| malformed())?;
        if !rest.is_empty() || spki.subject_public_key.unused_bits != 0 {
            return Err(malformed());
        }
        let key = spki.subject_public_key.data.to_vec();
        let oid = &spki.algorithm.algorithm;
        let algorithm = if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
            // rustls verifies ECDSA with uncompressed points only.
            let (algorithm, point_len) = match curve {
                Some(curve) if curve == OID_EC_P256 => (&rcgen::PKCS_ECDSA_P256_SHA256, 65),
                Some(curve) if curve == OID_NIST_EC_P384 => (&rcgen::PKCS_ECDSA_P384_SHA384, 97),
                _ => return Err(SUPPORTED_KEYS.to_owned()),
            };
            if key.len() != point_len || key.first() != Some(&4) {
                return Err("public_key is not an uncompressed elliptic curve point".to_owned());
            }
            algorithm
        } else if *oid == OID_SIG_ED25519 {
            if key.len() != 32 || spki.algorithm.parameters.is_some() {
                return Err(malformed());
            }
            &rcgen::PKCS_ED25519
        } else if *oid == OID_PKCS1_RSAENCRYPTION {
            match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) if (2048..=8192).contains(&rsa.key_size()) => &rcgen::PKCS_RSA_SHA256,
                Ok(PublicKey::RSA(_)) => return Err(SUPPORTED_KEYS.to_owned()),
                _ => return Err(malformed()),
            }
        } else {
            return Err(SUPPORTED_KEYS.to_owned());
        };
        Ok(Self { algorithm, key })
    }
}

impl rcgen::PublicKeyData for ClientPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

/// A client certificate a [`Ca`] issued.
#[derive(Debug, Clone)]
pub struct IssuedClient {
    /// The certificate (PEM).
    pub certificate_pem: String,
    /// SHA-256 of its SubjectPublicKeyInfo: what the client registry records.
    pub spki_sha256: [u8; 32],
}

/// A CA that can sign client certificates: the certificate and key of a set (or a key kept
/// elsewhere). The key is read when needed and dropped with the `Ca`.
pub struct Ca {
    cert_pem: String,
    /// The CA's subject (DER): every certificate it issues must name it byte for byte.
    subject: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca(<key redacted>)")
    }
}

impl Ca {
    /// The CA of the set directory `set` (see [`crate::certs::set_dir`]): its `ca.crt` and `ca.key`, or `None`
    /// if the set keeps no CA key.
    pub fn load(set: &Path) -> anyhow::Result<Option<Self>> {
        let key = set.join(CA_KEY);
        match fs::symlink_metadata(&key) {
            Ok(_) => Self::load_with_key(&set.join(CA_CERT), &key).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", key.display())),
        }
    }

    /// The CA of the certificate file `cert` with the key file `key` (PEM). The key must be private
    /// to its owner (see [`check_private`]) and belong to the certificate.
    pub fn load_with_key(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        check_private(key)?;
        let cert_pem = fs::read_to_string(cert).with_context(|| format!("cannot read {}", cert.display()))?;
        let key_pem =
            zeroize::Zeroizing::new(fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?);
        Self::from_pem(&cert_pem, &key_pem).with_context(|| format!("{} with {}", cert.display(), key.display()))
    }

    /// The CA of a PEM certificate and a PEM (PKCS#8) private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(key_pem).map_err(|_| anyhow::anyhow!("the CA key is not a PEM private key"))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|_| anyhow::anyhow!("the CA certificate is not PEM"))?;
        let cert = pem.parse_x509().map_err(|_| anyhow::anyhow!("the CA certificate is not X.509"))?;
        anyhow::ensure!(cert.is_ca(), "the CA certificate is not a CA certificate");
        anyhow::ensure!(
            cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw(),
            "the CA key does not belong to the CA certificate"
        );
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(cert.subject())?;
        let subject = cert.subject().as_raw().to_vec();
        Ok(Self { cert_pem: cert_pem.to_owned(), subject, issuer: Issuer::new(params, key) })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A client certificate for `name` (its common name) over `key`, with the profile of the set's
    /// own client certificate (clientAuth, 2 years), signed by this CA.
    pub fn issue(&self, name: &str, key: &ClientPublicKey) -> anyhow::Result<IssuedClient> {
        let cert = client_params(name)?.signed_by(key, &self.issuer)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der())
            .map_err(|_| anyhow::anyhow!("the new certificate is not X.509"))?;
        // Verifiers link a certificate to its CA by the issuer name's bytes.
        anyhow::ensure!(
            parsed.issuer().as_raw() == self.subject.as_slice(),
            "the CA certificate's subject is encoded in a way this keyward cannot reproduce"
        );
        let spki_sha256 = keyward_driver::spki_sha256(cert.der()).context("the new certificate has no public key")?;
        Ok(IssuedClient { certificate_pem: cert.pem(), spki_sha256 })
    }
}

/// The rcgen form of a certificate's subject, for an [`Issuer`] that must name it exactly
/// ([`Ca::issue`] checks the bytes).
fn distinguished_name(subject: &x509_parser::x509::X509Name<'_>) -> anyhow::Result<DistinguishedName> {
    use rcgen::DnValue;
    use x509_parser::asn1_rs::Tag;

    let mut name = DistinguishedName::new();
    for rdn in subject.iter() {
        let mut attributes = rdn.iter();
        let (Some(attribute), None) = (attributes.next(), attributes.next()) else {
            bail!("the CA certificate's subject has a multi-valued part");
        };
        let oid: Vec<u64> =
            attribute.attr_type().iter().context("the CA certificate's subject has an unusual attribute")?.collect();
        let text = attribute.as_str().map_err(|_| anyhow::anyhow!("the CA certificate's subject is not text"))?;
        let value = match attribute.attr_value().tag() {
            Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
            Tag::PrintableString => DnValue::PrintableString(text.try_into()?),
            Tag::Ia5String => DnValue::Ia5String(text.try_into()?),
            _ => bail!("the CA certificate's subject uses a string type this keyward cannot reproduce"),
        };
        name.push(DnType::from_oid(&oid), value);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::certs::generate;

    /// Whether the server's verifier (webpki over `ca_pem`, and the clientAuth check) accepts `cert_pem`.
    fn server_accepts(ca_pem: &str, cert_pem: &str) -> bool {
        use rustls_pki_types::pem::PemObject;
        let ca = rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
        let cert = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), crate::tls::provider())
                .build()
                .unwrap();
        verifier.verify_client_cert(&cert, &[], rustls_pki_types::UnixTime::now()).is_ok()
            && crate::tls::require_client_auth_usage(&cert).is_ok()
    }

    #[test]
    fn the_ca_issues_client_certificates_the_server_accepts() {
        use rcgen::PublicKeyData;
        let set = generate().unwrap();
        let ca = Ca::from_pem(&set.ca_cert, &set.ca_key).unwrap();
        for algorithm in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let key = KeyPair::generate_for(algorithm).unwrap();
            let public = ClientPublicKey::from_pem(&key.public_key_pem()).unwrap();
            let issued = ca.issue("r1", &public).unwrap();
            assert!(server_accepts(&set.ca_cert, &issued.certificate_pem), "{algorithm:?}");
            let expected: [u8; 32] = Sha256::digest(key.subject_public_key_info()).into();
            assert_eq!(issued.spki_sha256, expected, "the registry records the client's own key");
            let (_, pem) = x509_parser::pem::parse_x509_pem(issued.certificate_pem.as_bytes()).unwrap();
            let cert = pem.parse_x509().unwrap();
            assert_eq!(cert.subject().to_string(), "O=Keyward, CN=r1");
        }
        // Another CA's certificate is not accepted, and a key of another CA is refused.
        let other = generate().unwrap();
        let issued = ca
            .issue("r2", &ClientPublicKey::from_pem(&KeyPair::generate().unwrap().public_key_pem()).unwrap())
            .unwrap();
        assert!(!server_accepts(&other.ca_cert, &issued.certificate_pem));
        let error = Ca::from_pem(&set.ca_cert, &other.ca_key).unwrap_err().to_string();
        assert!(error.contains("does not belong"), "{error}");
        let error = Ca::from_pem(&set.client_cert, &set.client_key).unwrap_err().to_string();
        assert!(error.contains("not a CA"), "{error}");
    }

    #[test]
    fn public_keys_the_server_cannot_verify_are_refused() {
        use rcgen::PublicKeyData;
        let text = |pem: &str| ClientPublicKey::from_pem(pem).unwrap_err();
        assert!(text("not pem").contains("must be a PEM public key"));
        let key = KeyPair::generate().unwrap();
        assert!(text(&key.serialize_pem()).contains("must be a PEM public key"), "a private key is not a public key");
        assert!(text(&"A".repeat(MAX_PUBLIC_KEY_PEM + 1)).contains("longer than"));
        // secp256k1 (1.3.132.0.10): a P-384 key with its curve's last OID byte changed.
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap().subject_public_key_info();
        let at = p384.windows(7).position(|w| w == [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]).unwrap();
        let mut k1 = p384.clone();
        k1[at + 6] = 0x0a;
        assert!(ClientPublicKey::from_der(&k1).unwrap_err().contains("must be ECDSA P-256 or P-384"));
        let mut trailing = p384;
        trailing.push(0);
        assert!(ClientPublicKey::from_der(&trailing).unwrap_err().contains("not a well-formed"));
        for error in [text("not pem"), ClientPublicKey::from_der(&k1).unwrap_err()] {
            assert!(!error.contains('/'), "no paths: {error}");
        }
    }
}
