//! A client's bundle: the directory a paired front end keeps, `ca.crt`, `client.crt`,
//! `client.key` (0600) and `keyward.toml` (its name, role and the server's addresses), in a 0700
//! directory. `keyward call --tls-dir DIR` reads it.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The CA's certificate in a bundle.
pub const CA_CERT: &str = "ca.crt";
/// The client's certificate.
pub const CLIENT_CERT: &str = "client.crt";
/// The client's private key (PEM, 0600).
pub const CLIENT_KEY: &str = "client.key";
/// The bundle's settings.
pub const CONFIG: &str = "keyward.toml";

/// Where a server listens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    /// The HTTPS URL (`https://127.0.0.1:3420/v3/owner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The QUIC address (`127.0.0.1:3420`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic: Option<String>,
}

/// `keyward.toml` of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    /// The client's name on the server.
    pub name: String,
    /// Its role when the bundle was made.
    pub role: String,
    /// The server's addresses.
    #[serde(flatten)]
    pub endpoints: Endpoints,
}

impl BundleConfig {
    /// Reads `DIR/keyward.toml`: `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> io::Result<Option<Self>> {
        let text = match fs::read_to_string(dir.join(CONFIG)) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        toml::from_str(&text).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# A keyward client bundle: `keyward call --tls-dir <this directory> METHOD` uses it.\n# name and role are \
             as registered when it was made; the server's registry is what counts.\n{body}"
        )
    }
}

/// A client's files, in memory.
pub struct Bundle {
    /// The CA's certificate (PEM).
    pub ca_certificate_pem: String,
    /// The client's certificate (PEM).
    pub certificate_pem: String,
    /// The client's private key (PKCS#8 PEM).
    pub key_pem: Zeroizing<String>,
    /// Name, role and endpoints.
    pub config: BundleConfig,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Whether a bundle could be written to `dir`: it is missing, or a directory (not a symlink) that
/// holds none of the four files. [`Bundle::write`] checks it again; check it before spending a code.
pub fn check_target(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(metadata) if metadata.file_type().is_symlink() || !metadata.is_dir() => {
            Err(io::Error::new(io::ErrorKind::InvalidInput, "not a directory (or a symlink)"))
        }
        Ok(_) => {
            for file in [CLIENT_KEY, CLIENT_CERT, CA_CERT, CONFIG] {
                if fs::symlink_metadata(dir.join(file)).is_ok() {
                    return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("it holds {file} already")));
                }
            }
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

impl Bundle {
    /// Writes the bundle into `dir` (made 0700 if missing). Refused if `dir` is a symlink or holds
    /// any of the four files: a key is never overwritten. On failure nothing of it stays.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        check_target(dir)?;
        let made = match fs::symlink_metadata(dir) {
            Ok(_) => false,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
                true
            }
            Err(error) => return Err(error),
        };
        let config = self.config.to_toml();
        let files: [(&str, &[u8], u32); 4] = [
            (CLIENT_KEY, self.key_pem.as_bytes(), 0o600),
            (CLIENT_CERT, self.certificate_pem.as_bytes(), 0o644),
            (CA_CERT, self.ca_certificate_pem.as_bytes(), 0o644),
            (CONFIG, config.as_bytes(), 0o644),
        ];
        let mut written = Vec::new();
        let result = files.iter().try_for_each(|(name, bytes, mode)| {
            let path = dir.join(name);
            let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(*mode).open(&path)?;
            written.push(path);
            file.write_all(bytes)?;
            file.sync_all()
        });
        if let Err(error) = result {
            for path in written {
                let _ = fs::remove_file(path);
            }
            if made {
                let _ = fs::remove_dir(dir);
            }
            return Err(error);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn bundle() -> Bundle {
        Bundle {
            ca_certificate_pem: "CA".into(),
            certificate_pem: "CERT".into(),
            key_pem: Zeroizing::new("KEY".into()),
            config: BundleConfig {
                name: "phone".into(),
                role: "reader".into(),
                endpoints: Endpoints { url: Some("https://127.0.0.1:1/v3/owner".into()), quic: None },
            },
        }
    }

    #[test]
    fn a_bundle_is_written_private_and_read_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("b");
        bundle().write(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CLIENT_KEY)), 0o600);
        assert_eq!(BundleConfig::read(&dir).unwrap().unwrap(), bundle().config);
        assert!(!format!("{:?}", bundle()).contains("KEY"));
        // Never over a bundle: the second write fails and leaves the first whole.
        assert!(bundle().write(&dir).is_err());
        assert_eq!(fs::read_to_string(dir.join(CLIENT_KEY)).unwrap(), "KEY");
        assert_eq!(BundleConfig::read(root.path()).unwrap(), None);
    }
}
