//! The principals `keyward serve` sets up: the `default` client (the certificate set's client
//! certificate, owner), the Unix socket's users, and the host services the core asks for.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use keyward_core::{ClientRecord, Host, Identity, IssuedCertificate, PairingTicket, Role, Server};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::ca::Ca;
use crate::{certs, tls};

/// The name of the client made at first start.
pub const DEFAULT_CLIENT: &str = "default";

/// The host services of `keyward serve`: the wall clock, and certificates for the clients added
/// over the API, signed by the CA of the set in use (when the set keeps its key).
#[derive(Debug)]
pub struct ServeHost {
    /// The certificate directory whose CA signs new clients' certificates; none for a launched
    /// server, whose CA lives in memory for one run and signs nothing.
    tls_dir: Option<PathBuf>,
    /// For the in-process server of a command run while no server runs
    /// ([`crate::in_process`]): the CA key given with `--ca-key`, if any.
    in_process: Option<InProcess>,
    /// The pairing service, once `keyward serve` has started it (none: pairing is off).
    pairing: std::sync::OnceLock<keyward_pairing::PairingService>,
}

/// What the host of an in-process server knows more.
#[derive(Debug)]
struct InProcess {
    /// Signs with this CA key (PEM) and the set's `ca.crt`, instead of the set's `ca.key`.
    ca_key: Option<PathBuf>,
}

impl ServeHost {
    /// The host of a server whose certificate directory is `tls_dir`.
    pub fn new(tls_dir: PathBuf) -> Self {
        Self { tls_dir: Some(tls_dir), in_process: None, pairing: std::sync::OnceLock::new() }
    }

    /// The host of a launched server (`keyward serve --launcher`): it issues no certificates.
    pub fn launched() -> Self {
        Self { tls_dir: None, in_process: None, pairing: std::sync::OnceLock::new() }
    }

    /// The host of a command's in-process server on a stopped server's data directory, whose
    /// certificate directory is `tls_dir`: it signs with the set's CA key, or with `ca_key`. Its
    /// errors go to the user who ran the command (not to an API client), so they say the whole
    /// reason, paths included.
    pub fn in_process(tls_dir: PathBuf, ca_key: Option<PathBuf>) -> Self {
        Self { tls_dir: Some(tls_dir), in_process: Some(InProcess { ca_key }), pairing: std::sync::OnceLock::new() }
    }

    /// Turns pairing on (`pair_client` makes codes on `service`).
    pub fn set_pairing(&self, service: keyward_pairing::PairingService) {
        let _ = self.pairing.set(service);
    }

    /// The CA of the set in use, read now (so that a rotation is followed), or why there is none.
    fn ca(&self) -> Result<Ca, String> {
        let Some(tls_dir) = &self.tls_dir else { return Err(LAUNCHED_NO_CA.into()) };
        let ca_key = self.in_process.as_ref().and_then(|p| p.ca_key.as_deref());
        let loaded = certs::set_dir(tls_dir).and_then(|set| match ca_key {
            Some(key) => Ca::load_with_key(&set.join(certs::CA_CERT), key).map(Some),
            None => Ca::load(&set),
        });
        match (loaded, &self.in_process) {
            (Ok(Some(ca)), _) => Ok(ca),
            (Ok(None), None) => Err(NO_CA_KEY.into()),
            (Ok(None), Some(_)) => Err(format!(
                "the certificate set in {} keeps no CA key (made with --no-ca-key, or the key was moved away): give \
                 the CA's key with --ca-key FILE, or register a Unix user with --uid",
                tls_dir.display()
            )),
            (Err(error), Some(_)) => Err(format!("{error:#}")),
            (Err(error), None) => {
                tracing::error!("cannot use the CA key to issue a client certificate: {error:#}");
                Err("this server cannot issue certificates: its CA cannot be used (see the server's log)".into())
            }
        }
    }
}

/// The answer to `add_client` with a public key, or `pair_client`, on a launched server.
const LAUNCHED_NO_CA: &str = "a launched server (keyward serve --launcher) issues no certificates: its CA lives \
                              in memory for this run only; add clients on a server started with `keyward serve`";

/// The answer to `add_client` with a public key when the set in use keeps no CA key.
const NO_CA_KEY: &str = "this server cannot issue certificates (its certificate set keeps no CA key): \
                         add the client with `keyward clients add --ca-key` while the server is stopped";

impl Host for ServeHost {
    fn unix_time_ms(&self) -> u64 {
        unix_time_ms()
    }

    /// Checks the key first (so a bad key is refused the same way with or without a CA key), then
    /// signs with the CA of the set in use. Errors go to the API client: no paths in them.
    fn issue_certificate(&self, name: &str, public_key_pem: &str) -> Result<IssuedCertificate, String> {
        let key = crate::ca::ClientPublicKey::from_pem(public_key_pem)?;
        let ca = self.ca()?;
        let issued = ca.issue(name, &key).map_err(|error| {
            if self.in_process.is_some() {
                return format!("cannot issue a client certificate: {error:#}");
            }
            tracing::error!("cannot issue a client certificate: {error:#}");
            "this server cannot issue certificates: signing failed (see the server's log)".to_owned()
        })?;
        Ok(IssuedCertificate {
            certificate_pem: issued.certificate_pem,
            ca_certificate_pem: ca.cert_pem().to_owned(),
            spki_sha256: issued.spki_sha256,
        })
    }

    /// A code from the pairing service; errors name no path.
    fn start_pairing(&self, name: &str, role: Role, ttl_secs: Option<u64>) -> Result<PairingTicket, String> {
        if self.tls_dir.is_none() {
            return Err(LAUNCHED_NO_CA.into());
        }
        let service = self.pairing.get().ok_or("this server does not pair clients (pairing = \"off\")")?;
        // A certificate must be issuable when the front end comes: say so now, not then.
        self.ca()?;
        let ttl = ttl_secs.map_or(keyward_pairing::DEFAULT_TTL, std::time::Duration::from_secs);
        let ticket = service.offer(name, role.as_str(), ttl).map_err(|error| {
            tracing::error!("cannot start pairing: {error}");
            error.to_string()
        })?;
        Ok(PairingTicket {
            code: ticket.code.display(),
            expires_unix_ms: ticket.expires_unix_ms,
            pair_url: ticket.pair_url,
        })
    }
}

/// Unix time in milliseconds.
pub fn unix_time_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The key (SHA-256 of the SPKI) of the client certificate of the set in use in `tls_dir`.
pub fn client_key(tls_dir: &Path) -> anyhow::Result<[u8; 32]> {
    let path = tls_dir.join(certs::CLIENT_CERT);
    let certs = tls::load_certs(&path)?;
    let cert = certs.first().with_context(|| format!("{} holds no certificate", path.display()))?;
    keyward_driver::spki_sha256(cert).with_context(|| format!("{} is not an X.509 certificate", path.display()))
}

/// Makes sure the set's client certificate is the `default` client's: registers `default`
/// (owner) on first start, and moves it to the new key after `keyward certs rotate`. A revoked
/// `default` stays revoked.
pub fn ensure_default(core: &Server, tls_dir: &Path) -> anyhow::Result<()> {
    let identity = Identity::Cert { spki_sha256: client_key(tls_dir)? };
    match core.clients().into_iter().find(|r| r.name == DEFAULT_CLIENT) {
        None => {
            let record = ClientRecord {
                name: DEFAULT_CLIENT.into(),
                role: Role::Owner,
                identity,
                created_unix_ms: unix_time_ms(),
                revoked_unix_ms: None,
            };
            core.add_client(record).map_err(|e| anyhow::anyhow!("cannot register the default client: {e}"))?;
            tracing::info!("registered the client certificate as client 'default' (owner)");
        }
        Some(record) if record.is_active() && record.identity != identity => {
            core.set_client_identity(DEFAULT_CLIENT, identity)
                .map_err(|e| anyhow::anyhow!("cannot move client 'default' to the new certificate: {e}"))?;
            tracing::info!("client 'default' now uses the rotated client certificate");
        }
        Some(_) => {}
    }
    Ok(())
}

/// Registers the client certificate of a launched server's in-memory set as owner `launcher`
/// ([`keyward_core::launcher_name`]), for this run only (never written to the store).
pub fn register_launcher(core: &Server, set: &certs::CertSet) -> anyhow::Result<()> {
    let cert = CertificateDer::from_pem_slice(set.client_cert.as_bytes()).context("the launcher's certificate")?;
    let spki_sha256 = keyward_driver::spki_sha256(&cert).context("the launcher's certificate is not X.509")?;
    let records = core.clients();
    let name = keyward_core::launcher_name(|n| records.iter().any(|r| r.name == n), std::process::id());
    let record = ClientRecord {
        name: name.clone(),
        role: Role::Owner,
        identity: Identity::Cert { spki_sha256 },
        created_unix_ms: unix_time_ms(),
        revoked_unix_ms: None,
    };
    core.add_transient_client(record)
        .map_err(|e| anyhow::anyhow!("cannot register the launcher's client '{name}' for this run: {e}"))?;
    tracing::info!("registered this run's client certificate as client '{name}' (owner, this run only)");
    Ok(())
}

/// Makes sure each uid that may use the Unix socket is a client: `uid-N`, owner, unless a client
/// (active or revoked) has that uid or name already.
pub fn ensure_uids(core: &Server, uids: &[u32]) -> anyhow::Result<()> {
    let records = core.clients();
    for &uid in uids {
        let identity = Identity::Uid { uid };
        let name = format!("uid-{uid}");
        if records.iter().any(|r| r.identity == identity || r.name == name) {
            continue;
        }
        let record =
            ClientRecord { name, role: Role::Owner, identity, created_unix_ms: unix_time_ms(), revoked_unix_ms: None };
        core.add_client(record).map_err(|e| anyhow::anyhow!("cannot register uid {uid}: {e}"))?;
        tracing::info!(uid, "registered the Unix socket user as client 'uid-{uid}' (owner)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

    use super::*;

    fn public_key() -> String {
        rcgen::KeyPair::generate().unwrap().public_key_pem()
    }

    #[test]
    fn the_host_signs_with_the_ca_of_the_set_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        certs::ensure(&tls).unwrap();
        let host = ServeHost::new(tls.clone());
        let first = host.issue_certificate("r1", &public_key()).unwrap();
        assert_eq!(first.ca_certificate_pem, std::fs::read_to_string(tls.join(certs::CA_CERT)).unwrap());

        // A rotation is followed at the next call, without a new host.
        certs::rotate(&tls, true).unwrap();
        let second = host.issue_certificate("r2", &public_key()).unwrap();
        assert_ne!(second.ca_certificate_pem, first.ca_certificate_pem);
        assert_eq!(second.ca_certificate_pem, std::fs::read_to_string(tls.join(certs::CA_CERT)).unwrap());

        // A bad key is refused before the CA is looked at; a set without a CA key cannot issue.
        certs::rotate(&tls, false).unwrap();
        let error = host.issue_certificate("r3", "garbage").unwrap_err();
        assert!(error.contains("must be a PEM public key"), "{error}");
        let error = host.issue_certificate("r3", &public_key()).unwrap_err();
        assert!(error.starts_with("this server cannot issue certificates"), "{error}");
        assert!(!error.contains(&dir.path().display().to_string()), "no paths: {error}");

        // A CA key others can read is not used, and the answer names no path.
        let set = certs::rotate(&tls, true).unwrap();
        std::fs::set_permissions(set.join(certs::CA_KEY), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let error = host.issue_certificate("r4", &public_key()).unwrap_err();
        assert!(error.contains("its CA cannot be used"), "{error}");
        assert!(!error.contains('/'), "no paths: {error}");
    }

    #[test]
    fn the_in_process_host_signs_with_the_given_ca_key_and_says_why_it_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let set = certs::init(&tls, true, false).unwrap();
        let kept = dir.path().join("kept-ca.key");
        std::fs::rename(set.join(certs::CA_KEY), &kept).unwrap();

        let error = ServeHost::in_process(tls.clone(), None).issue_certificate("r1", &public_key()).unwrap_err();
        assert!(error.contains("keeps no CA key") && error.contains("--ca-key FILE"), "{error}");
        let issued = ServeHost::in_process(tls.clone(), Some(kept.clone())).issue_certificate("r1", &public_key());
        assert_eq!(issued.unwrap().ca_certificate_pem, std::fs::read_to_string(tls.join(certs::CA_CERT)).unwrap());
        let missing = dir.path().join("missing.key");
        let error = ServeHost::in_process(tls, Some(missing)).issue_certificate("r2", &public_key()).unwrap_err();
        assert!(error.contains("missing.key"), "the whole reason, to the user who ran the command: {error}");
    }
}
