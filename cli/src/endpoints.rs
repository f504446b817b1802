//! `DATA_DIR/run/endpoints.json`: where the `keyward serve` of a data directory listens, so that the
//! commands working on that data directory (`call`, `clients`, `audit`, `status`) find it on any
//! port.
//!
//! * `keyward serve` writes it once every listener is bound (the directory `run/` made 0700, the file
//!   0600, written to a temporary name and renamed, so a reader never sees half a file) and removes it
//!   when it stops cleanly. `keyward serve --launcher` writes none (it writes nothing to disk).
//! * A file left by a server that crashed names a process that no longer runs: [`read`] treats it
//!   as absent.
//!
//! The format (every address as text, `null` when that listener is off):
//! `{"version":"0.1.0","pid":1234,"https":"127.0.0.1:3420","http_insecure":null,"quic":"127.0.0.1:3420",
//! "unix":null,"pairing":"127.0.0.1:3422"}`.

#![expect(unsafe_code, reason = "kill(pid, 0), where there is no /proc to look in")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The directory of the running server's files, inside the data directory.
pub const RUN_DIR: &str = "run";
/// The file's name inside [`RUN_DIR`].
pub const FILE: &str = "endpoints.json";

/// Where a running `keyward serve` listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// The HTTPS address (`https://ADDR/v3/owner`), if it serves HTTPS.
    pub https: Option<SocketAddr>,
    /// The plain HTTP address (loopback), if it serves plain HTTP.
    pub http_insecure: Option<SocketAddr>,
    /// The QUIC address, if it serves QUIC.
    pub quic: Option<SocketAddr>,
    /// The Unix socket, if it serves one.
    pub unix: Option<PathBuf>,
    /// Where front ends pair (a listener open only while a pairing code is live), if pairing is on.
    #[serde(default)]
    pub pairing: Option<SocketAddr>,
    /// The server's process id.
    pub pid: u32,
    /// The server's version (`keyward --version`).
    pub version: String,
}

impl Endpoints {
    /// The endpoints of a running server in this process.
    pub fn of(running: &crate::serve::Running, pairing: Option<SocketAddr>) -> Self {
        Self {
            https: running.https,
            http_insecure: running.http_insecure,
            quic: running.quic,
            unix: running.unix.clone(),
            pairing,
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// The HTTPS URL, if it serves HTTPS.
    pub fn https_url(&self) -> Option<String> {
        self.https.map(|addr| format!("https://{addr}/v3/owner"))
    }
}

/// `DATA_DIR/run/endpoints.json`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(RUN_DIR).join(FILE)
}

/// Writes `endpoints` to `DATA_DIR/run/endpoints.json` (directory 0700, file 0600, atomically).
pub fn write(data_dir: &Path, endpoints: &Endpoints) -> anyhow::Result<()> {
    let dir = data_dir.join(RUN_DIR);
    crate::certs::private_dir(&dir)?;
    let text = serde_json::to_string(endpoints).context("cannot encode the endpoints")?;
    crate::certs::write_file(&dir.join(FILE), text.as_bytes(), 0o600)
}

/// The endpoints of the server running on `data_dir`: `None` when there is no file, or when the
/// process it names no longer runs as this user (a file left by a server that crashed, its pid
/// since reused). A file this user did not write alone (not a regular file of ours, open to
/// others) or cannot parse is ignored with a warning: the caller then tries the default address.
pub fn read(data_dir: &Path) -> anyhow::Result<Option<Endpoints>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = path(data_dir);
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path);
    let mut file = match file {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            tracing::warn!("ignoring {}: {error}", path.display());
            return Ok(None);
        }
    };
    let meta = file.metadata().with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() || meta.uid() != crate::harden::effective_uid() || meta.mode() & 0o077 != 0 {
        tracing::warn!(
            "ignoring {}: not a file of this user's that only this user can read (keyward serve writes it 0600)",
            path.display()
        );
        return Ok(None);
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
    let endpoints: Endpoints = match serde_json::from_slice(&bytes) {
        Ok(endpoints) => endpoints,
        Err(error) => {
            tracing::warn!(
                "ignoring {}: not a keyward endpoints file ({error}); `keyward serve` rewrites it",
                path.display()
            );
            return Ok(None);
        }
    };
    Ok(alive(endpoints.pid).then_some(endpoints))
}

/// Removes `DATA_DIR/run/endpoints.json` (nothing if there is none).
pub fn remove(data_dir: &Path) {
    let path = path(data_dir);
    if let Err(error) = std::fs::remove_file(&path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {error}", path.display());
    }
}

/// Whether a process with this id runs as this user (`/proc/PID` and its owner, else `kill(pid, 0)`,
/// which another user's process answers with EPERM): a pid reused by another user's process is not
/// our server.
pub fn alive(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    if pid == 0 {
        return false;
    }
    let proc = Path::new("/proc");
    if proc.join("self").exists() {
        return std::fs::metadata(proc.join(pid.to_string()))
            .is_ok_and(|meta| meta.uid() == crate::harden::effective_uid());
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 checks that the process exists and may be signalled by us; it sends nothing.
    let sent = unsafe { libc::kill(pid, 0) };
    sent == 0
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample(pid: u32) -> Endpoints {
        Endpoints {
            https: Some("127.0.0.1:3420".parse().unwrap()),
            http_insecure: None,
            quic: Some("127.0.0.1:3421".parse().unwrap()),
            unix: Some(PathBuf::from("kw.sock")),
            pairing: None,
            pid,
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn written_private_read_back_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None, "no file: no server");
        let ours = sample(std::process::id());
        write(dir.path(), &ours).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join(RUN_DIR)), 0o700);
        assert_eq!(mode(&path(dir.path())), 0o600);
        assert_eq!(read(dir.path()).unwrap(), Some(ours));
        remove(dir.path());
        assert!(!path(dir.path()).exists());
        assert_eq!(read(dir.path()).unwrap(), None);
    }

    /// A file whose process is gone (a crashed server's) counts as absent.
    #[test]
    fn a_stale_file_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        write(dir.path(), &sample(gone)).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        std::fs::write(path(dir.path()), "not json").unwrap();
        assert_eq!(read(dir.path()).unwrap(), None, "a file that does not parse is ignored");
    }

    /// Only a regular file of this user's, closed to others, names a server: not one another user
    /// could have written, not a symlink.
    #[test]
    fn a_file_others_could_write_or_a_symlink_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let ours = sample(std::process::id());
        write(dir.path(), &ours).unwrap();
        let file = path(dir.path());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None, "open to others");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(ours.clone()));
        let elsewhere = dir.path().join("planted.json");
        std::fs::rename(&file, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None, "a symlink");
    }
}
