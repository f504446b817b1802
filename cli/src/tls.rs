//! rustls configurations from a certificate directory (ring provider, TLS 1.3).
//!
//! The server requires a client certificate that chains to `ca.crt` and carries the clientAuth usage
//! (webpki checks the EKU); the client trusts only `ca.crt` and presents `client.crt`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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

fn roots(dir: &Path) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(&dir.join(certs::CA_CERT))? {
        roots.add(cert).context("the CA certificate is not usable as a trust anchor")?;
    }
    Ok(Arc::new(roots))
}

/// The server's config: TLS 1.3, client certificate required.
pub fn server_config(dir: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(dir)?, Arc::clone(&provider))
        .build()
        .context("cannot build the client certificate verifier")?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&dir.join(certs::SERVER_CERT))?, load_key(&dir.join(certs::SERVER_KEY))?)
        .context("the server certificate and key do not match")?;
    Ok(Arc::new(config))
}

/// A client's config from explicit files (tests use other certificates than the set's).
pub fn client_config_from(ca: &Path, cert: Option<(&Path, &Path)>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for der in load_certs(ca)? {
        roots.add(der).context("the CA certificate is not usable as a trust anchor")?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available")?
        .with_root_certificates(roots);
    let config = match cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .context("the client certificate and key do not match")?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The client's config from a certificate directory: trusts `ca.crt`, presents `client.crt`.
pub fn client_config(dir: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    client_config_from(&dir.join(certs::CA_CERT), Some((&dir.join(certs::CLIENT_CERT), &dir.join(certs::CLIENT_KEY))))
}
