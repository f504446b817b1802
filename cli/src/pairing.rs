//! Pairing front ends with a one-time code (spec/pairing.md), the two sides of the CLI:
//!
//! * in `keyward serve`: [`ServeRegistrar`] lets the [`keyward_pairing::PairingService`] register a
//!   paired client in the core (a certificate signed by the CA of the set in use, the role the owner
//!   chose) and record pairing in the audit log; [`crate::principals::ServeHost`] hands the owner's
//!   `pair_client` calls to the service;
//! * `keyward pair CODE --url PAIR_URL --out DIR`: [`pair`], the front end's side.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use anyhow::Context as _;
use keyward_core::{ClientRecord, Host as _, Identity, Role, Server};
use keyward_pairing::{Endpoints, Issued, PairingCode, Registrar};

use crate::principals::{ServeHost, unix_time_ms};

/// What the pairing service asks of `keyward serve`.
#[derive(Debug)]
pub struct ServeRegistrar {
    core: Weak<Server>,
    /// Issues certificates (a host of its own, without the pairing service: no cycle).
    issuer: ServeHost,
    endpoints: Mutex<Endpoints>,
}

impl ServeRegistrar {
    /// A registrar for `core`, issuing with the CA of the set in use in `tls_dir`.
    pub fn new(core: &Arc<Server>, tls_dir: std::path::PathBuf) -> Self {
        Self {
            core: Arc::downgrade(core),
            issuer: ServeHost::new(tls_dir),
            endpoints: Mutex::new(Endpoints::default()),
        }
    }

    /// The addresses paired clients get (set once the listeners are bound).
    pub fn set_endpoints(&self, endpoints: Endpoints) {
        *self.endpoints.lock().unwrap_or_else(PoisonError::into_inner) = endpoints;
    }
}

impl Registrar for ServeRegistrar {
    fn register(&self, name: &str, role: &str, public_key_pem: &str) -> Result<Issued, String> {
        let core = self.core.upgrade().ok_or("the server is stopping")?;
        let role = Role::parse(role).ok_or("unknown role")?;
        let issued = self.issuer.issue_certificate(name, public_key_pem)?;
        let record = ClientRecord {
            name: name.into(),
            role,
            identity: Identity::Cert { spki_sha256: issued.spki_sha256 },
            created_unix_ms: unix_time_ms(),
            revoked_unix_ms: None,
        };
        core.add_client(record)?;
        Ok(Issued { certificate_pem: issued.certificate_pem, ca_certificate_pem: issued.ca_certificate_pem })
    }

    fn endpoints(&self) -> Endpoints {
        self.endpoints.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn audit(&self, name: &str, outcome: &str) {
        if let Some(core) = self.core.upgrade() {
            core.audit_refusal(name, "pair", outcome);
        }
    }

    fn unix_time_ms(&self) -> u64 {
        unix_time_ms()
    }
}

/// `keyward pair --url PAIR_URL [--name NAME] --out DIR`: pairs with `code` (typed at a prompt or
/// read from standard input: a command line is readable by every local user) and writes the
/// bundle; returns what to print.
pub async fn pair(code: &str, url: &str, name: Option<&str>, out: &Path) -> anyhow::Result<String> {
    let code = PairingCode::parse(code)?;
    let addr = keyward_pairing::parse_pair_url(url)?;
    // Refuse a directory a bundle cannot be written to before the code is spent.
    keyward_pairing::bundle::check_target(out)
        .with_context(|| format!("cannot write a bundle to {}: give --out a new directory", out.display()))?;
    let bundle = keyward_pairing::pair(addr, &code, name).await?;
    bundle.write(out).with_context(|| {
        format!(
            "paired as '{}', but the bundle could not be written to {} (revoke the client with `keyward clients \
             revoke {}` on the server and pair again)",
            bundle.config.name,
            out.display(),
            bundle.config.name
        )
    })?;
    let dir = out.display();
    Ok(format!(
        "paired as client '{}' ({}); wrote {dir}/ca.crt, {dir}/client.crt, {dir}/client.key (0600) and \
         {dir}/keyward.toml\ncall the server with `keyward call --tls-dir {dir} METHOD`\n",
        bundle.config.name, bundle.config.role
    ))
}

/// The code from standard input (one line) or a prompt (not echoed).
pub fn read_code(from_stdin: bool) -> anyhow::Result<zeroize::Zeroizing<String>> {
    if from_stdin {
        let mut line = zeroize::Zeroizing::new(String::new());
        std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line).context("cannot read the code")?;
        return Ok(zeroize::Zeroizing::new(line.trim().to_owned()));
    }
    let code = rpassword::prompt_password("Pairing code: ").context("cannot read the code from the terminal")?;
    Ok(zeroize::Zeroizing::new(code))
}
