//! `keyward certs`: the private CA and the five files the front end and back end need.
//!
//! * `ca.crt`: the CA (10 years), and its key `ca.key` (0600), kept so that the server can issue
//!   certificates to the clients it registers (`add_client`, `keyward clients add`). A set made with
//!   `--no-ca-key` has no `ca.key` (the key is discarded): such a server cannot issue certificates,
//!   and certificate clients are added only while it is stopped, with `keyward clients add --ca-key
//!   FILE` and a CA key kept elsewhere. A set written before the key was kept by default works as it
//!   is.
//! * `server.crt` / `server.key`: SANs `localhost`, `127.0.0.1`, `::1`; EKU serverAuth (2 years).
//! * `client.crt` / `client.key`: EKU clientAuth (2 years); the `default` client (owner). The
//!   certificates [`crate::ca::Ca::issue`] makes for other clients have the same profile, with the client's
//!   name as common name.
//!
//! Keys are ECDSA P-256, written `0600`; directories are made `0700`. A rotation makes a new CA:
//! certificates the old CA issued are refused from then on (the `default` client moves to the new
//! set's client certificate by itself; other certificate clients must be added again, under new
//! names).
//!
//! ## Layout
//!
//! A certificate directory (`DATA_DIR/tls`) holds whole sets, each in its own directory
//! `sets/<generation>/`, and a symlink `current` naming the set in use (`sets/<generation>`). A new
//! set is written completely into a new directory first; then a new symlink is renamed over
//! `current` (rename(2) is atomic), so a reader that resolves `current` once sees either the whole
//! old set or the whole new one, never a mix. The set that was replaced is then removed.
//! `ca.crt`, `server.crt`, … directly in the directory are symlinks into `current/`, for tools that
//! read the flat names. A directory written by an older `keyward` (the five files directly in it) is
//! still read as a set; `rotate` turns it into the new layout.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// The CA certificate.
pub const CA_CERT: &str = "ca.crt";
/// The CA key (kept unless the set was made with `--no-ca-key`).
pub const CA_KEY: &str = "ca.key";
/// The server certificate.
pub const SERVER_CERT: &str = "server.crt";
/// The server key.
pub const SERVER_KEY: &str = "server.key";
/// The client certificate.
pub const CLIENT_CERT: &str = "client.crt";
/// The client key.
pub const CLIENT_KEY: &str = "client.key";
/// The five files of a set.
pub const FILES: [&str; 5] = [CA_CERT, SERVER_CERT, SERVER_KEY, CLIENT_CERT, CLIENT_KEY];
/// The private keys a set may hold (`ca.key` unless made with `--no-ca-key`).
pub const KEYS: [&str; 3] = [SERVER_KEY, CLIENT_KEY, CA_KEY];
/// The symlink naming the set in use.
pub const CURRENT: &str = "current";
/// The directory holding the sets.
pub const SETS: &str = "sets";

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Keyward");
    name.push(DnType::CommonName, common_name);
    name
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Random lowercase hex, for names nobody can guess in advance.
fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut random = vec![0u8; bytes];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(hex::encode(random))
}

/// A temporary name next to `path`: `.NAME.RANDOM.tmp`.
fn temp_name(path: &Path) -> anyhow::Result<PathBuf> {
    let dir = path.parent().context("file has no parent directory")?;
    let file_name = path.file_name().context("file has no name")?.to_string_lossy();
    Ok(dir.join(format!(".{file_name}.{}.tmp", random_hex(8)?)))
}

/// Makes a directory's entries (creations, renames) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Writes a file atomically with the given mode.
///
/// The contents go to a new file with a random name in the same directory, created with
/// `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0600 (so nothing planted there, symlink or file, is
/// followed or reused, and nobody else can open it while it is written), then set to `mode` through
/// the open file, synced, and renamed over `path` (which replaces a symlink at `path` rather than
/// following it).
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().context("file has no parent directory")?;
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let temp = temp_name(path)?;
    if let Err(error) = write_new(&temp, contents, mode) {
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    if let Err(error) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(error).with_context(|| format!("cannot rename into {}", path.display()));
    }
    sync_dir(dir).with_context(|| format!("cannot sync {}", dir.display()))
}

/// Creates `temp` (which must not exist, and is not followed if it is a symlink) with `contents`
/// and `mode`, synced.
fn write_new(temp: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o600)
        .open(temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set permissions of {}", temp.display()))?;
    file.write_all(contents).with_context(|| format!("cannot write {}", temp.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", temp.display()))
}

/// Points the symlink `dir/name` at `target` atomically: a new symlink with a random name is made
/// and renamed over `dir/name` (whatever was there, file or symlink, is replaced, never followed).
fn replace_symlink(dir: &Path, name: &str, target: &Path) -> anyhow::Result<()> {
    let path = dir.join(name);
    let temp = temp_name(&path)?;
    std::os::unix::fs::symlink(target, &temp).with_context(|| format!("cannot create {}", temp.display()))?;
    if let Err(error) = fs::rename(&temp, &path) {
        let _ = fs::remove_file(&temp);
        return Err(error).with_context(|| format!("cannot rename into {}", path.display()));
    }
    Ok(())
}

/// Makes a directory (and parents) and sets it to 0700.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set permissions of {}", dir.display()))
}

/// A freshly made set, in PEM.
pub struct CertSet {
    /// CA certificate.
    pub ca_cert: String,
    /// CA key.
    pub ca_key: String,
    /// Server certificate.
    pub server_cert: String,
    /// Server key.
    pub server_key: String,
    /// Client certificate.
    pub client_cert: String,
    /// Client key.
    pub client_key: String,
}

impl std::fmt::Debug for CertSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertSet(<keys redacted>)")
    }
}

impl Drop for CertSet {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.ca_key.zeroize();
        self.server_key.zeroize();
        self.client_key.zeroize();
    }
}

/// The profile of every client certificate: O=Keyward, CN=`common_name`, digitalSignature,
/// clientAuth, 2 years.
pub(crate) fn client_params(common_name: &str) -> anyhow::Result<CertificateParams> {
    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client.distinguished_name = name(common_name);
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut client, 730);
    Ok(client)
}

/// Makes a CA, a server and a client certificate.
pub fn generate() -> anyhow::Result<CertSet> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = name("Keyward local CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut ca, 3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])?;
    server.distinguished_name = name("keyward server");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut server, 730);
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let client_key = KeyPair::generate()?;
    let client_cert = client_params("keyward client")?.signed_by(&client_key, &issuer)?;

    Ok(CertSet {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    })
}

/// The directory of the set in use in the certificate directory `dir`: the target of
/// `dir/current`, or `dir` itself for the flat layout of older versions (no `current`).
///
/// Resolve once and read every file of the set from the result: reading `dir/current/…` file by
/// file could mix two sets across a rotation.
pub fn set_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let link = dir.join(CURRENT);
    match fs::read_link(&link) {
        Ok(target) => Ok(dir.join(target)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(dir.to_path_buf()),
        // A directory (not a symlink) named `current`: use it as it is.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(link),
        Err(e) => Err(e).with_context(|| format!("cannot read the symlink {}", link.display())),
    }
}

/// Whether `dir` holds a set (or part of one) in either layout.
fn holds_a_set(dir: &Path) -> bool {
    [CURRENT].iter().chain(FILES.iter()).any(|f| fs::symlink_metadata(dir.join(f)).is_ok())
}

/// Writes a new set into `dir` and makes it the current one, with the CA key (`ca.key`) if
/// `keep_ca_key` (`keyward certs init` and `rotate` keep it unless `--no-ca-key`). Refuses to
/// overwrite an existing set unless `replace`. Returns the new set's directory.
pub fn init(dir: &Path, keep_ca_key: bool, replace: bool) -> anyhow::Result<PathBuf> {
    if !replace && holds_a_set(dir) {
        bail!("{} already holds certificates; use `keyward certs rotate` to replace them", dir.display());
    }
    private_dir(dir)?;
    let sets = dir.join(SETS);
    private_dir(&sets)?;
    let set = generate()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let generation = format!("{}-{}", now.as_secs(), random_hex(4)?);
    let new = sets.join(&generation);
    fs::DirBuilder::new().mode(0o700).create(&new).with_context(|| format!("cannot create {}", new.display()))?;
    write_file(&new.join(CA_CERT), set.ca_cert.as_bytes(), 0o644)?;
    write_file(&new.join(SERVER_KEY), set.server_key.as_bytes(), 0o600)?;
    write_file(&new.join(SERVER_CERT), set.server_cert.as_bytes(), 0o644)?;
    write_file(&new.join(CLIENT_KEY), set.client_key.as_bytes(), 0o600)?;
    write_file(&new.join(CLIENT_CERT), set.client_cert.as_bytes(), 0o644)?;
    if keep_ca_key {
        write_file(&new.join(CA_KEY), set.ca_key.as_bytes(), 0o600)?;
    }
    // The swap: from here on, whoever resolves `current` gets the whole new set.
    replace_symlink(dir, CURRENT, &Path::new(SETS).join(&generation))?;
    // The flat names, as symlinks into `current/` (replacing the files of a flat set).
    for file in FILES {
        replace_symlink(dir, file, &Path::new(CURRENT).join(file))?;
    }
    let ca_key = dir.join(CA_KEY);
    if keep_ca_key {
        replace_symlink(dir, CA_KEY, &Path::new(CURRENT).join(CA_KEY))?;
    } else if fs::symlink_metadata(&ca_key).is_ok() {
        fs::remove_file(&ca_key).with_context(|| format!("cannot remove {}", ca_key.display()))?;
    }
    sync_dir(dir).with_context(|| format!("cannot sync {}", dir.display()))?;
    // The replaced sets go: their keys must not outlive the rotation.
    for entry in fs::read_dir(&sets).with_context(|| format!("cannot list {}", sets.display()))? {
        let entry = entry?;
        if entry.file_name() != generation.as_str() {
            let old = entry.path();
            fs::remove_dir_all(&old).with_context(|| {
                format!(
                    "the new set {} is in use, but the old set {} could not be removed",
                    new.display(),
                    old.display()
                )
            })?;
        }
    }
    Ok(new)
}

/// `keyward certs rotate`: a new CA, server and client certificate in a new set, swapped in
/// atomically; a running `keyward serve` takes it for new handshakes within two seconds. Returns
/// the new set's directory.
pub fn rotate(dir: &Path, keep_ca_key: bool) -> anyhow::Result<PathBuf> {
    init(dir, keep_ca_key, true)
}

/// Makes the set on first start (keeping the CA key); refuses a partial set.
pub fn ensure(dir: &Path) -> anyhow::Result<bool> {
    if fs::symlink_metadata(dir.join(CURRENT)).is_ok() {
        return Ok(false);
    }
    let present: Vec<_> = FILES.iter().filter(|f| dir.join(f).exists()).collect();
    if present.len() == FILES.len() {
        return Ok(false);
    }
    if !present.is_empty() {
        bail!("{} holds only part of a certificate set; run `keyward certs rotate --dir` on it", dir.display());
    }
    init(dir, true, false)?;
    Ok(true)
}

/// The paths of a set's files in the set directory `dir` (see [`set_dir`]).
pub fn paths(dir: &Path) -> [PathBuf; 5] {
    FILES.map(|f| dir.join(f))
}

/// Refuses a private key that other users may read or write: the error names the file and the fix.
pub fn check_private(path: &Path) -> anyhow::Result<()> {
    let metadata = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o066 != 0 {
        let how = if mode & 0o044 != 0 { "readable" } else { "writable" };
        bail!("{} is {how} by other users (mode {mode:04o}); run chmod 600 on it", path.display());
    }
    Ok(())
}

/// Subjects, SHA-256 fingerprints, expiry and usages of a set, for `keyward certs show`.
pub fn show(dir: &Path) -> anyhow::Result<String> {
    let set = set_dir(dir)?;
    let mut out = String::new();
    for file in [CA_CERT, SERVER_CERT, CLIENT_CERT] {
        let path = set.join(file);
        let pem = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        let cert = pem.parse_x509().map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        let fingerprint = hex::encode(Sha256::digest(&pem.contents));
        let usages = match cert.extended_key_usage() {
            Ok(Some(eku)) => {
                let mut list = Vec::new();
                if eku.value.server_auth {
                    list.push("serverAuth");
                }
                if eku.value.client_auth {
                    list.push("clientAuth");
                }
                list.join(",")
            }
            _ if cert.is_ca() => "CA".to_owned(),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "{file}\n  subject:     {}\n  issuer:      {}\n  sha256:      {}\n  not after:   {}\n  usage:       {}\n",
            cert.subject(),
            cert.issuer(),
            fingerprint,
            cert.validity().not_after,
            usages,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

    use super::*;

    #[test]
    fn a_flat_set_of_older_versions_is_read_and_rotated_into_sets() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        private_dir(&tls).unwrap();
        let set = generate().unwrap();
        for (file, pem, mode) in [
            (CA_CERT, &set.ca_cert, 0o644),
            (SERVER_CERT, &set.server_cert, 0o644),
            (SERVER_KEY, &set.server_key, 0o600),
            (CLIENT_CERT, &set.client_cert, 0o644),
            (CLIENT_KEY, &set.client_key, 0o600),
            (CA_KEY, &set.ca_key, 0o600),
        ] {
            write_file(&tls.join(file), pem.as_bytes(), mode).unwrap();
        }
        assert_eq!(set_dir(&tls).unwrap(), tls);
        assert!(!ensure(&tls).unwrap(), "a whole flat set is used as it is");
        crate::tls::ServerTls::load(&tls).unwrap();
        crate::tls::client_config(&tls).unwrap();

        let new = rotate(&tls, false).unwrap();
        assert_eq!(set_dir(&tls).unwrap(), new);
        for file in FILES {
            assert!(fs::symlink_metadata(tls.join(file)).unwrap().file_type().is_symlink(), "{file}");
            assert_eq!(fs::read(tls.join(file)).unwrap(), fs::read(new.join(file)).unwrap(), "{file}");
        }
        assert!(fs::symlink_metadata(tls.join(CA_KEY)).is_err(), "the old CA key is gone");
        assert_ne!(fs::read_to_string(tls.join(SERVER_KEY)).unwrap(), set.server_key);
    }

    #[test]
    fn a_set_keeps_its_ca_key_unless_told_not_to() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        assert!(ensure(&tls).unwrap());
        let set = set_dir(&tls).unwrap();
        assert_eq!(fs::metadata(set.join(CA_KEY)).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(crate::ca::Ca::load(&set).unwrap().is_some());
        let without = rotate(&tls, false).unwrap();
        assert!(fs::symlink_metadata(without.join(CA_KEY)).is_err());
        assert!(fs::symlink_metadata(tls.join(CA_KEY)).is_err(), "no dangling flat ca.key");
        assert!(crate::ca::Ca::load(&without).unwrap().is_none());
    }

    #[test]
    fn write_file_replaces_a_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let path = dir.path().join("out");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_file(&path, b"new", 0o640).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        let metadata = fs::symlink_metadata(&path).unwrap();
        assert!(metadata.is_file());
        assert_eq!(metadata.permissions().mode() & 0o777, 0o640);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary file is left");
    }
}
