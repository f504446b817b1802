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
//!   certificates [`Ca::issue`] makes for other clients have the same profile, with the client's
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
fn client_params(common_name: &str) -> anyhow::Result<CertificateParams> {
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
    /// The CA of the set directory `set` (see [`set_dir`]): its `ca.crt` and `ca.key`, or `None`
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
    #![allow(clippy::unwrap_used)]

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

    #[test]
    fn a_set_keeps_its_ca_key_unless_told_not_to() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        assert!(ensure(&tls).unwrap());
        let set = set_dir(&tls).unwrap();
        assert_eq!(fs::metadata(set.join(CA_KEY)).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(Ca::load(&set).unwrap().is_some());
        let without = rotate(&tls, false).unwrap();
        assert!(fs::symlink_metadata(without.join(CA_KEY)).is_err());
        assert!(fs::symlink_metadata(tls.join(CA_KEY)).is_err(), "no dangling flat ca.key");
        assert!(Ca::load(&without).unwrap().is_none());
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
