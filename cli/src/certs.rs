//! `keyward certs`: the private CA and the five files the front end and back end need.
//!
//! * `ca.crt`: the CA (10 years); its key is discarded unless `--keep-ca-key` (then `ca.key`, 0600).
//! * `server.crt` / `server.key`: SANs `localhost`, `127.0.0.1`, `::1`; EKU serverAuth (2 years).
//! * `client.crt` / `client.key`: EKU clientAuth (2 years).
//!
//! Keys are ECDSA P-256, written `0600`; the directory is made `0700`. Files are written to a
//! temporary name and renamed, so a crash never leaves half a set under the final names.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
/// The CA key (kept only with `--keep-ca-key`).
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

/// Writes a file atomically with the given mode.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().context("file has no parent directory")?;
    let file_name = path.file_name().context("file has no name")?.to_string_lossy();
    let temp = dir.join(format!(".{file_name}.tmp"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .with_context(|| format!("cannot write {}", temp.display()))?;
    fs::set_permissions(&temp, fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&temp, path).with_context(|| format!("cannot rename into {}", path.display()))?;
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
    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client.distinguished_name = name("keyward client");
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut client, 730);
    let client_cert = client.signed_by(&client_key, &issuer)?;

    Ok(CertSet {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    })
}

/// Writes a new set into `dir`. Refuses to overwrite an existing set unless `replace`.
pub fn init(dir: &Path, keep_ca_key: bool, replace: bool) -> anyhow::Result<()> {
    if !replace && FILES.iter().any(|f| dir.join(f).exists()) {
        bail!("{} already holds certificates; use `keyward certs rotate` to replace them", dir.display());
    }
    private_dir(dir)?;
    let set = generate()?;
    write_file(&dir.join(CA_CERT), set.ca_cert.as_bytes(), 0o644)?;
    write_file(&dir.join(SERVER_KEY), set.server_key.as_bytes(), 0o600)?;
    write_file(&dir.join(SERVER_CERT), set.server_cert.as_bytes(), 0o644)?;
    write_file(&dir.join(CLIENT_KEY), set.client_key.as_bytes(), 0o600)?;
    write_file(&dir.join(CLIENT_CERT), set.client_cert.as_bytes(), 0o644)?;
    let ca_key_path = dir.join(CA_KEY);
    if keep_ca_key {
        write_file(&ca_key_path, set.ca_key.as_bytes(), 0o600)?;
    } else if ca_key_path.exists() {
        fs::remove_file(&ca_key_path)?;
    }
    Ok(())
}

/// Makes the set on first start; refuses a partial set.
pub fn ensure(dir: &Path) -> anyhow::Result<bool> {
    let present: Vec<_> = FILES.iter().filter(|f| dir.join(f).exists()).collect();
    if present.len() == FILES.len() {
        return Ok(false);
    }
    if !present.is_empty() {
        bail!("{} holds only part of a certificate set; run `keyward certs rotate --dir` on it", dir.display());
    }
    init(dir, false, false)?;
    Ok(true)
}

/// The paths of a set's files.
pub fn paths(dir: &Path) -> [PathBuf; 5] {
    FILES.map(|f| dir.join(f))
}

/// Subjects, SHA-256 fingerprints, expiry and usages of a set, for `keyward certs show`.
pub fn show(dir: &Path) -> anyhow::Result<String> {
    let mut out = String::new();
    for file in [CA_CERT, SERVER_CERT, CLIENT_CERT] {
        let path = dir.join(file);
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
