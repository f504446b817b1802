//! `keyward clients`: the client registry from the command line (`add`, `list`, `role`, `revoke`).
//!
//! **Running server or not: the same calls.** The commands work on the server of `--data-dir` (or
//! `KEYWARD_DATA_DIR`, or `~/.keyward`). They first open that data directory's store: a running
//! `keyward serve` holds the store's lock, so the open is refused exactly while a server runs on it.
//! Then they make owner calls over the secure protocol (`add_client`, `list_clients`,
//! `set_client_role`, `revoke_client`) to
//!
//! * the running server: at `https://127.0.0.1:3420/v3/owner` with the data directory's `tls/`
//!   files (the `default` client), or where `--url`, `--quic`, `--unix` and `--tls-dir` say (as for
//!   `keyward call`). Naming a server with `--url`, `--quic` or `--unix` skips the store check: the
//!   commands always go to that server.
//! * with no server running, their own server in process over the store ([`crate::in_process`]; the
//!   store stays locked meanwhile, so a server cannot start in between): the core applies its own
//!   rules, and records each change in the audit log as principal `local` (its in-process owner;
//!   changes made this way by older versions are recorded as `offline`).
//!
//! **Certificates.** `add NAME --out DIR` makes a key pair here (ECDSA P-256, like `keyward
//! certs`), sends only the public key (the server signs it with its CA key and registers the
//! certificate's key; with no server running, the in-process server signs with the set's `ca.key`,
//! or the key of `--ca-key`), and writes `DIR/ca.crt`, `DIR/client.crt` and `DIR/client.key` (0600;
//! DIR 0700), a bundle for `keyward call --tls-dir DIR`. The key is written before the client is
//! registered, so a registered client never lacks its key; nothing is overwritten. `add NAME --uid
//! UID` registers a Unix user for the socket instead and writes nothing.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use keyward_core::valid_client_name;
use keyward_core::{Principal, Role};
use keyward_driver::{SecureSession, SessionError};
use rcgen::{KeyPair, PublicKeyData};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::call::{self, BoxLink};
use crate::{certs, in_process, listing};

/// Which server the commands work on (a running one, or their own in process on a stopped one's store).
pub type Target = call::ServerArgs;

/// A `keyward clients` command.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Action {
    /// Register a client: a new key pair and its certificate in DIR (--out), or a Unix user (--uid).
    Add {
        /// Its name: 1 to 64 of A-Z a-z 0-9 . _ - (never reused, even after a revocation).
        name: String,
        /// reader, signer or owner.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Write ca.crt, client.crt, client.key and keyward.toml (name, role, the server's address) here
        /// (made 0700; must not hold them already).
        #[arg(long, value_name = "DIR", required_unless_present = "uid", conflicts_with = "uid")]
        out: Option<PathBuf>,
        /// Register this Unix user (for the Unix socket) instead.
        #[arg(long)]
        uid: Option<u32>,
        /// With no server running: sign with this CA key (PEM) instead of the set's ca.key.
        #[arg(long, value_name = "FILE", conflicts_with = "uid")]
        ca_key: Option<PathBuf>,
    },
    /// Make a one-time code with which a front end registers itself (`keyward pair CODE`): the
    /// running server opens its pairing listener while the code is live.
    Pair {
        /// The name the client gets: 1 to 64 of A-Z a-z 0-9 . _ - (never reused).
        #[arg(long)]
        name: String,
        /// reader, signer or owner.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Seconds the code lives (10 to 3600; default 300). It works once and dies after 3 wrong
        /// attempts.
        #[arg(long, value_name = "SECS")]
        ttl: Option<u64>,
        /// Print {"code", "expires_at", "expires_unix_ms", "pair_url", "name", "role"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the clients: name, role, identity, when added and when revoked.
    List {
        /// Print the records as JSON (as `list_clients` answers them).
        #[arg(long)]
        json: bool,
    },
    /// Give a client another role (its next request has it).
    Role {
        /// The client.
        name: String,
        /// reader, signer or owner.
        #[arg(value_parser = parse_role)]
        role: Role,
    },
    /// Revoke a client: its requests are refused, its connections closed, its handshakes refused.
    Revoke {
        /// The client.
        name: String,
    },
}

/// Parses a role name, for the command line.
pub fn parse_role(name: &str) -> Result<Role, String> {
    Role::parse(name).ok_or_else(|| "a role is reader, signer or owner".to_owned())
}

/// Runs a `keyward clients` command and returns what to print.
pub async fn run(target: &Target, action: Action) -> anyhow::Result<String> {
    if let Action::Add { name, .. } | Action::Pair { name, .. } = &action {
        check_name(name)?;
    }
    let ca_key = match &action {
        Action::Add { ca_key, .. } => ca_key.clone(),
        _ => None,
    };
    let options = in_process::Options { ca_key, needs_registry: true };
    let mut registry = Registry::open(target, &options).await?;
    let result = match action {
        Action::Add { name, role, out: Some(out), uid: None, ca_key } => {
            let endpoints = registry.endpoints(target);
            registry.add_cert(&name, role, &out, ca_key.is_some(), endpoints).await
        }
        Action::Add { name, role, uid: Some(uid), .. } => registry.add_uid(&name, role, uid).await,
        Action::Add { .. } => Err(anyhow::anyhow!("give --out DIR (a certificate) or --uid UID (a Unix user)")),
        Action::List { json } => registry
            .list()
            .await
            .and_then(|records| if json { listing::as_json(&records) } else { Ok(listing::table(&records)) }),
        Action::Pair { name, role, ttl, json } => registry.pair(&name, role, ttl, json).await,
        Action::Role { name, role } => registry.set_role(&name, role).await,
        Action::Revoke { name } => registry.revoke(&name).await,
    };
    registry.session.close().await;
    result
}

/// The rules `add_client` applies to a name, checked before anything is made.
fn check_name(name: &str) -> anyhow::Result<()> {
    if !valid_client_name(name) || name == Principal::LOCAL_HTTP {
        bail!(
            "'{name}' cannot name a client: a name is 1 to 64 characters of A-Z a-z 0-9 . _ - (not starting with . \
             or -), and local and local-http are reserved"
        );
    }
    Ok(())
}

/// The registry the commands change: over an owner session with the running server, or with the
/// command's in-process server over the stopped server's store.
struct Registry {
    session: SecureSession<BoxLink>,
    in_process: bool,
}

/// What the commands add to their answer when no server ran.
const IN_PROCESS_ADDED: &str = " (offline, to the stopped server's store)";

impl Registry {
    async fn open(target: &Target, options: &in_process::Options) -> anyhow::Result<Self> {
        let call::Reached { session, in_process } = target.reach(options).await?;
        Ok(Self { session, in_process })
    }

    /// Where the bundle of a new client finds the server: the address this command reached it at,
    /// or that the data directory's running server wrote (a stopped server's address is not known:
    /// its bundle then names none, and clients use the default URL).
    fn endpoints(&self, target: &Target) -> keyward_pairing::Endpoints {
        if self.in_process || target.unix.is_some() {
            return keyward_pairing::Endpoints::default();
        }
        target.server_endpoints()
    }

    /// What an answer adds about where the change was made.
    fn how(&self) -> &'static str {
        if self.in_process { IN_PROCESS_ADDED } else { "" }
    }

    /// One owner call.
    async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        match self.session.call(method, params).await {
            Ok(value) => Ok(value),
            Err(SessionError::Link(error)) => Err(anyhow::Error::new(error)
                .context(crate::failure::Failure::connect(format!("the connection failed during `{method}`")))),
            Err(SessionError::Rpc { code, message }) => Err(call::rpc_failure(method, code, &message).into()),
            Err(error) => bail!("{method} failed: {error}"),
        }
    }

    /// Every record, as `list_clients` answers them, by name.
    async fn list(&mut self) -> anyhow::Result<Vec<Value>> {
        match self.call("list_clients", json!({})).await? {
            Value::Array(records) => Ok(records),
            _ => bail!("list_clients answered something that is not a list"),
        }
    }

    async fn add_cert(
        &mut self,
        name: &str,
        role: Role,
        out: &Path,
        ca_key_given: bool,
        endpoints: keyward_pairing::Endpoints,
    ) -> anyhow::Result<String> {
        if ca_key_given && !self.in_process {
            bail!("--ca-key is for a stopped server: a running server signs with its own CA key");
        }
        let config = keyward_pairing::BundleConfig { name: name.to_owned(), role: role.as_str().to_owned(), endpoints };
        let bundle = Bundle::prepare(out)?;
        let key = KeyPair::generate().context("cannot make a key pair")?;
        let written = bundle.write_key(&key);
        let params = json!({"name": name, "role": role.as_str(), "public_key": key.public_key_pem(), "uid": null});
        let answer = match written {
            Ok(()) => self.call("add_client", params).await,
            Err(error) => Err(error),
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                bundle.remove();
                return Err(error);
            }
        };
        let text = |field: &str| {
            answer[field].as_str().map(str::to_owned).with_context(|| format!("add_client answered no {field}"))
        };
        let written = text("certificate").and_then(|certificate| {
            let spki_sha256 = check_certificate(&certificate, &key)?;
            bundle.write_certs(&certificate, &text("ca_certificate")?)?;
            bundle.write_config(&config)?;
            Ok(spki_sha256)
        });
        match written {
            Ok(spki_sha256) => Ok(added_cert(name, role, &spki_sha256, out, self.how())),
            Err(error) => {
                bundle.remove();
                Err(error.context(format!(
                    "client '{name}' is registered, but its bundle could not be written: revoke it with `keyward \
                     clients revoke {name}`"
                )))
            }
        }
    }

    async fn add_uid(&mut self, name: &str, role: Role, uid: u32) -> anyhow::Result<String> {
        let params = json!({"name": name, "role": role.as_str(), "public_key": null, "uid": uid});
        self.call("add_client", params).await?;
        Ok(format!(
            "added client '{name}' ({role}) for uid {uid}{}; it reaches the Unix socket only if the socket's \
             permissions let it (the server makes it 0600 in a 0700 directory)\n",
            self.how()
        ))
    }

    async fn pair(&mut self, name: &str, role: Role, ttl: Option<u64>, as_json: bool) -> anyhow::Result<String> {
        if self.in_process {
            bail!(
                "pairing needs the running server (it opens the pairing listener): start `keyward serve`, or add the \
                 client with `keyward clients add {name} --out DIR` and copy DIR to the front end"
            );
        }
        let params = json!({"name": name, "role": role.as_str(), "ttl_secs": ttl});
        let mut answer = self.call("pair_client", params).await?;
        let text = |field: &str| {
            answer[field].as_str().map(str::to_owned).with_context(|| format!("pair_client answered no {field}"))
        };
        let code = Zeroizing::new(text("code")?);
        let pair_url = text("pair_url")?;
        let expires_unix_ms = answer["expires_unix_ms"].as_u64().context("pair_client answered no expiry")?;
        keyward_core::crypto::wipe_answer(&mut answer);
        let expires_at = listing::rfc3339_seconds(expires_unix_ms);
        if as_json {
            let value = json!({
                "code": code.as_str(),
                "expires_at": expires_at,
                "expires_unix_ms": expires_unix_ms,
                "pair_url": pair_url,
                "name": name,
                "role": role.as_str(),
            });
            return Ok(format!("{value}\n"));
        }
        Ok(format!(
            "pairing code for client '{name}' ({role}): {}\nit works once until {expires_at}, and dies after 3 wrong \
             attempts\non the front end: keyward pair --url {pair_url} --out DIR   (then type the code)\n",
            code.as_str(),
        ))
    }

    async fn set_role(&mut self, name: &str, role: Role) -> anyhow::Result<String> {
        self.call("set_client_role", json!({"name": name, "role": role.as_str()})).await?;
        Ok(format!("client '{name}' is now {role}\n"))
    }

    async fn revoke(&mut self, name: &str) -> anyhow::Result<String> {
        self.call("revoke_client", json!({"name": name})).await?;
        Ok(if self.in_process {
            format!("revoked client '{name}' (offline, in the stopped server's store)\n")
        } else {
            format!("revoked client '{name}': its requests are refused and its connections closed from now on\n")
        })
    }
}

fn added_cert(name: &str, role: Role, spki_sha256: &[u8; 32], out: &Path, how: &str) -> String {
    let dir = out.display();
    format!(
        "added client '{name}' ({role}), certificate key sha256:{}{how}\nwrote {dir}/ca.crt, {dir}/client.crt, \
         {dir}/client.key (0600) and {dir}/keyward.toml: call with `keyward call --tls-dir {dir} ...`\n",
        hex::encode(spki_sha256)
    )
}

/// Checks that the server's certificate is for `key` (and parses): the SHA-256 of its SPKI.
fn check_certificate(pem: &str, key: &KeyPair) -> anyhow::Result<[u8; 32]> {
    let der =
        CertificateDer::from_pem_slice(pem.as_bytes()).context("add_client answered a certificate that is not PEM")?;
    let spki_sha256 =
        keyward_driver::spki_sha256(&der).context("add_client answered a certificate that is not X.509")?;
    let ours: [u8; 32] = Sha256::digest(key.subject_public_key_info()).into();
    anyhow::ensure!(spki_sha256 == ours, "add_client answered a certificate for another key");
    Ok(spki_sha256)
}

/// The files of a bundle `add` writes (never over existing ones).
const BUNDLE_FILES: [&str; 4] =
    [certs::CA_CERT, certs::CLIENT_CERT, certs::CLIENT_KEY, keyward_pairing::bundle::CONFIG];

/// The directory `add` writes a client's files to.
#[derive(Debug)]
struct Bundle {
    dir: PathBuf,
    /// Whether `prepare` made the directory (then a failure removes it again).
    made: bool,
}

impl Bundle {
    /// The directory `dir`, made 0700 if it is not there; refused if it is a symlink or not a
    /// directory, or holds any of the bundle's files (a client's key is never overwritten).
    fn prepare(dir: &Path) -> anyhow::Result<Self> {
        let made = match fs::symlink_metadata(dir) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                bail!("{} is a symlink: give --out a directory", dir.display())
            }
            Ok(metadata) if !metadata.is_dir() => bail!("{} is not a directory", dir.display()),
            Ok(_) => {
                for file in BUNDLE_FILES {
                    if fs::symlink_metadata(dir.join(file)).is_ok() {
                        bail!("{} holds {file} already: give --out a new directory", dir.display());
                    }
                }
                false
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                true
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set permissions of {}", dir.display()))?;
        Ok(Self { dir: dir.to_path_buf(), made })
    }

    fn write_key(&self, key: &KeyPair) -> anyhow::Result<()> {
        let pem = Zeroizing::new(key.serialize_pem());
        certs::write_file(&self.dir.join(certs::CLIENT_KEY), pem.as_bytes(), 0o600)
    }

    fn write_certs(&self, certificate: &str, ca_certificate: &str) -> anyhow::Result<()> {
        certs::write_file(&self.dir.join(certs::CLIENT_CERT), certificate.as_bytes(), 0o644)?;
        certs::write_file(&self.dir.join(certs::CA_CERT), ca_certificate.as_bytes(), 0o644)
    }

    /// `keyward.toml`: the client's name and role, and where it reached the server.
    fn write_config(&self, config: &keyward_pairing::BundleConfig) -> anyhow::Result<()> {
        certs::write_file(&self.dir.join(keyward_pairing::bundle::CONFIG), config.to_toml().as_bytes(), 0o644)
    }

    /// Undoes `prepare` and the writes (best effort: the first error is what the user sees).
    fn remove(&self) {
        for file in BUNDLE_FILES {
            let _ = fs::remove_file(self.dir.join(file));
        }
        if self.made {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

    use super::*;

    #[test]
    fn names_the_server_refuses_are_refused_before_anything_is_made() {
        for bad in ["", "local", "local-http", "-x", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("r1").unwrap();
    }

    #[test]
    fn a_bundle_never_follows_a_symlink_or_overwrites_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(Bundle::prepare(&link).unwrap_err().to_string().contains("is a symlink"));

        let out = dir.path().join("a").join("b");
        let bundle = Bundle::prepare(&out).unwrap();
        assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o700);
        bundle.write_key(&KeyPair::generate().unwrap()).unwrap();
        assert_eq!(fs::metadata(out.join("client.key")).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(Bundle::prepare(&out).unwrap_err().to_string().contains("holds client.key already"));
        bundle.remove();
        assert!(!out.exists(), "a directory add made is removed again on failure");
    }
}
