//! `keyward call`: a client for people and scripts. It checks the params against the method table
//! (see [`crate::params`]), runs `init_secure_api`, encrypts the call, sends it, and prints the
//! decrypted result; a failure names its fix and carries its exit status ([`crate::failure`]).
//! Also the addresses, links and sessions `keyward clients`, `audit` and `status` use.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use keyward_driver::{Link, LinkErrorKind, SecureSession, SessionError};
use keyward_http::{ClientError as HttpError, HttpClient, HttpTarget};
use keyward_quic::QuicClient;
use keyward_unix::UnixClient;
use serde_json::Value;

use crate::failure::{Exit, Failure};
use crate::params::{self, FillOptions, Passwords};
use crate::{in_process, tls};

/// Where and how to call.
#[derive(Debug)]
pub struct CallOptions {
    /// `https://host:port/v3/owner` or `http://…` (plain HTTP, loopback only); `None`: the
    /// server's addresses in `find_in`'s `run/endpoints.json`, else [`DEFAULT_URL`].
    pub url: Option<String>,
    /// The data directory whose running server to find (read at every try, so `--wait` sees a
    /// server that starts later).
    pub find_in: Option<PathBuf>,
    /// The certificate directory: a client's bundle (`ca.crt`, `client.crt`, `client.key`, as
    /// `keyward clients add --out` writes it) or a server's `tls/` (its set in use); HTTPS and QUIC
    /// trust its `ca.crt` and present its `client.crt`.
    pub tls_dir: PathBuf,
    /// Use QUIC to this address instead of the URL.
    pub quic: Option<SocketAddr>,
    /// Use this Unix socket instead of the URL.
    pub unix: Option<PathBuf>,
    /// Whose server this is, for messages.
    pub expected: Expected,
    /// How params are filled in.
    pub fill: FillOptions,
    /// `--wait`: how long to keep trying while nothing answers yet.
    pub wait: Option<Duration>,
}

/// Parsed `--url`.
#[derive(Debug, Clone)]
pub struct Url {
    /// Whether it is https.
    pub tls: bool,
    /// Host name as written (checked against the certificate, sent as Host).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// Parses `https://host:port[/v3/owner]`.
pub fn parse_url(url: &str) -> anyhow::Result<Url> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        bail!("the URL must start with https:// or http://");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, port) = inner.split_once("]:").context("the URL needs a port, e.g. https://[::1]:3420")?;
        (host.to_owned(), port)
    } else {
        let (host, port) = authority.rsplit_once(':').context("the URL needs a port, e.g. https://127.0.0.1:3420")?;
        (host.to_owned(), port)
    };
    let port = port.parse().context("the URL's port is not a number")?;
    Ok(Url { tls, host, port })
}

async fn resolve(url: &Url) -> anyhow::Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host((url.host.as_str(), url.port)).await.context("cannot resolve the host")?;
    addrs.next().context("the host has no address")
}

/// A connection to the server over any transport.
pub type BoxLink = Box<dyn Link>;

/// Where a server listens, resolved: what [`connect`] dials.
#[derive(Debug, Clone)]
pub enum Address {
    /// HTTP at `addr`: HTTPS with `tls` (its CA trusted, its client certificate presented), or
    /// plain HTTP (loopback) without. `host` is checked against the server's certificate and sent
    /// as Host.
    Http {
        /// The socket address.
        addr: SocketAddr,
        /// The host name as written.
        host: String,
        /// The TLS client configuration; `None`: plain HTTP.
        tls: Option<Arc<rustls::ClientConfig>>,
    },
    /// QUIC at `addr`; `name` is checked against the server's certificate.
    Quic {
        /// The socket address.
        addr: SocketAddr,
        /// The server name.
        name: String,
        /// The TLS client configuration.
        tls: Arc<rustls::ClientConfig>,
    },
    /// A Unix socket.
    Unix(PathBuf),
}

impl Address {
    /// The address of `url` (`https://…`, with the certificate directory `tls_dir`, or `http://…`),
    /// its host resolved.
    pub async fn url(url: &str, tls_dir: &Path) -> anyhow::Result<Self> {
        let url = parse_url(url).map_err(|e| Failure::usage(format!("{e:#}")))?;
        let addr = resolve(&url).await?;
        let tls = if url.tls { Some(client_config(tls_dir)?) } else { None };
        Ok(Self::Http { addr, host: url.host, tls })
    }

    /// QUIC at `addr`, with the certificate directory `tls_dir`.
    pub fn quic(addr: SocketAddr, tls_dir: &Path) -> anyhow::Result<Self> {
        let name = if addr.ip().is_ipv6() { "::1" } else { "127.0.0.1" };
        Ok(Self::Quic { addr, name: name.to_owned(), tls: client_config(tls_dir)? })
    }
}

/// The TLS client configuration of the certificate directory `tls_dir`; one without a `ca.crt`
/// is a server never started (its `tls/`) or not a bundle.
fn client_config(tls_dir: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    if !tls_dir.join("ca.crt").exists() {
        let message = match tls_dir.parent() {
            Some(data_dir) if tls_dir.file_name().is_some_and(|name| name == "tls") => format!(
                "{} has no certificates yet: no server was started on it. Start one with `keyward serve --data-dir {}` \
                 (it makes them), or name another with --data-dir or a client bundle with --tls-dir",
                data_dir.display(),
                data_dir.display()
            ),
            _ => format!(
                "{} holds no ca.crt: --tls-dir names a client bundle (`keyward clients add --out`, `keyward pair`) or a \
                 server's tls/",
                tls_dir.display()
            ),
        };
        return Err(Failure::connect(message).into());
    }
    tls::client_config(tls_dir)
}

impl Address {
    /// The address as a user would write it: `https://ADDR/v3/owner`, `quic://ADDR`, `unix:PATH`.
    pub fn shown(&self) -> String {
        match self {
            Self::Http { addr, tls: Some(_), .. } => format!("https://{addr}/v3/owner"),
            Self::Http { addr, tls: None, .. } => format!("http://{addr}/v3/owner"),
            Self::Quic { addr, .. } => format!("quic://{addr}"),
            Self::Unix(path) => format!("unix:{}", path.display()),
        }
    }
}

/// Whose server a command expects, for messages that name the fix: the data directory (its
/// `keyward serve --data-dir`), or a client's bundle.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// The data directory of the server, when the certificates are its `tls/`.
    pub data_dir: Option<PathBuf>,
    /// The certificate directory in use (a bundle, or a server's `tls/`).
    pub tls_dir: Option<PathBuf>,
}

impl Expected {
    /// The directory the server should be the one of.
    fn whose(&self) -> String {
        match (&self.data_dir, &self.tls_dir) {
            (Some(data), _) => data.display().to_string(),
            (None, Some(tls)) => format!("the bundle {}", tls.display()),
            (None, None) => "this client's certificates".into(),
        }
    }

    /// "nothing answers at ADDR: is `keyward serve` running? (`keyward serve --data-dir DIR`)".
    pub fn nothing_answers(&self, shown: &str) -> Failure {
        let how = match &self.data_dir {
            Some(dir) => format!("keyward serve --data-dir {}", dir.display()),
            None => "keyward serve".into(),
        };
        Failure::connect(format!("nothing answers at {shown}: is `keyward serve` running? (`{how}`)"))
    }
}

/// Connects to the server at `address`, over its transport.
pub async fn connect(address: &Address) -> anyhow::Result<BoxLink> {
    connect_expecting(address, &Expected::default()).await
}

/// The rustls error inside an I/O error of a TLS stream, if there is one.
fn rustls_error(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// What a failed TLS handshake with the server at `shown` means for the user.
fn tls_failure(shown: &str, error: Option<&rustls::Error>, expected: &Expected) -> Option<Failure> {
    use rustls::{AlertDescription, CertificateError};
    match error? {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. }
            | CertificateError::Expired
            | CertificateError::ExpiredContext { .. },
        ) => Some(Failure::connect(format!(
            "the server at {shown} is not the one of {} (its certificate does not chain to that CA{})",
            expected.whose(),
            if expected.data_dir.is_some() { "; another keyward serve on this port?" } else { "" }
        ))),
        rustls::Error::InvalidMessage(_) => Some(Failure::connect(format!(
            "the server at {shown} does not speak TLS: for a plain HTTP listener (`keyward serve --http-insecure`) \
             use http://"
        ))),
        rustls::Error::AlertReceived(AlertDescription::CertificateRevoked) => Some(Failure::refused(REVOKED)),
        rustls::Error::AlertReceived(AlertDescription::AccessDenied) => Some(Failure::refused(UNKNOWN)),
        _ => None,
    }
}

/// What a revoked client is told.
pub const REVOKED: &str = "this client was revoked: the owner can register it again under a new name (`keyward \
                           clients add`, names are never reused) or pair it anew";
/// What a client whose certificate no registered client has is told.
pub const UNKNOWN: &str = "the server does not know this client's certificate: register it (`keyward clients add \
                           --out DIR` on the server's side) or pair (`keyward pair`)";

/// [`connect`], with messages that name `expected`'s data directory or bundle.
pub async fn connect_expecting(address: &Address, expected: &Expected) -> anyhow::Result<BoxLink> {
    let shown = address.shown();
    match address {
        Address::Http { addr, host, tls } => {
            let target = tls.as_ref().map_or(HttpTarget::Plain, |tls| HttpTarget::Tls(Arc::clone(tls)));
            match HttpClient::connect(*addr, host, target).await {
                Ok(client) => Ok(Box::new(client)),
                Err(HttpError::Connect(error)) if is_absent(&error) => Err(expected.nothing_answers(&shown).into()),
                Err(HttpError::Refused(refusal)) => Err(link_refusal(&refusal).map_or_else(
                    || anyhow::Error::new(refusal.clone()).context(Failure::connect(format!("{shown} refused"))),
                    |failure| failure.into(),
                )),
                Err(HttpError::Tls(error)) => match tls_failure(&shown, rustls_error(&error), expected) {
                    Some(failure) => Err(anyhow::Error::new(error).context(failure)),
                    None => Err(anyhow::Error::new(error)
                        .context(Failure::connect(format!("the TLS handshake with {shown} failed")))),
                },
                Err(error) => {
                    Err(anyhow::Error::new(error).context(Failure::connect(format!("cannot connect to {shown}"))))
                }
            }
        }
        Address::Quic { addr, name, tls } => match QuicClient::connect(*addr, name, Arc::clone(tls)).await {
            Ok(client) => Ok(Box::new(client)),
            // UDP has no "connection refused": the client gives up after keyward_quic::CONNECT_TIMEOUT.
            Err(keyward_quic::QuicError::NoAnswer { .. }) => Err(Failure::connect(format!(
                "nothing answers at {shown} within {} s: is `keyward serve` running with QUIC on that port?",
                keyward_quic::CONNECT_TIMEOUT.as_secs()
            ))
            .into()),
            Err(error) => Err(quic_failure(&shown, &error, expected)
                .map_or_else(|| anyhow::anyhow!("{error}"), |failure| anyhow::anyhow!("{error}").context(failure))
                .context(Failure::connect(format!("cannot connect to {shown}")))),
        },
        Address::Unix(path) => match UnixClient::connect(path).await {
            Ok(client) => Ok(Box::new(client)),
            Err(error) if is_absent(&error) => Err(expected.nothing_answers(&shown).into()),
            Err(error) => {
                Err(anyhow::Error::new(error).context(Failure::connect(format!("cannot connect to {shown}"))))
            }
        },
    }
}

/// Whether a connect error means nothing listens there.
fn is_absent(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    matches!(error.kind(), ConnectionRefused | NotFound)
}

/// What a failed QUIC connection means for the user: a TLS alert in its close code.
fn quic_failure(shown: &str, error: &keyward_quic::QuicError, expected: &Expected) -> Option<Failure> {
    use rustls::AlertDescription;
    let keyward_quic::QuicError::Connection(connection) = error else { return None };
    let (code, by_us) = match connection {
        quinn::ConnectionError::TransportError(error) => (u64::from(error.code), true),
        quinn::ConnectionError::ConnectionClosed(close) => (u64::from(close.error_code), false),
        _ => return None,
    };
    // A TLS alert travels as the crypto error 0x100 + its code.
    let alert = AlertDescription::from(u8::try_from(code.checked_sub(0x100)?).ok()?);
    match (alert, by_us) {
        (AlertDescription::CertificateRevoked, false) => Some(Failure::refused(REVOKED)),
        (AlertDescription::AccessDenied, false) => Some(Failure::refused(UNKNOWN)),
        (AlertDescription::UnknownCA | AlertDescription::BadCertificate | AlertDescription::DecryptError, true) => {
            tls_failure(
                shown,
                Some(&rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)),
                expected,
            )
        }
        _ => None,
    }
}

impl CallOptions {
    /// The address these options name: the Unix socket, else QUIC, else the URL, else the one the
    /// data directory's running server wrote (HTTPS, else QUIC, else its Unix socket, else plain
    /// HTTP), else [`DEFAULT_URL`].
    pub async fn address(&self) -> anyhow::Result<Address> {
        match (&self.unix, self.quic, &self.url) {
            (Some(path), _, _) => Ok(Address::Unix(path.clone())),
            (None, Some(addr), _) => Address::quic(addr, &self.tls_dir),
            (None, None, Some(url)) => Address::url(url, &self.tls_dir).await,
            (None, None, None) => {
                let found = match &self.find_in {
                    Some(dir) => crate::endpoints::read(dir)?,
                    None => None,
                };
                match found {
                    Some(server) => self.address_of(&server).await,
                    None => Address::url(DEFAULT_URL, &self.tls_dir).await,
                }
            }
        }
    }

    /// Where a running server with `endpoints` is called.
    async fn address_of(&self, endpoints: &crate::endpoints::Endpoints) -> anyhow::Result<Address> {
        if let Some(url) = endpoints.https_url() {
            return Address::url(&url, &self.tls_dir).await;
        }
        if let Some(addr) = endpoints.quic {
            return Address::quic(addr, &self.tls_dir);
        }
        if let Some(path) = &endpoints.unix {
            // Nothing authenticates the server on a socket: only one this user made is called.
            use std::os::unix::fs::MetadataExt;
            let ours = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.uid() == crate::harden::effective_uid());
            if !ours {
                return Err(Failure::connect(format!(
                    "the running server's socket {} is not this user's: name the server with --unix, --url or --quic",
                    path.display()
                ))
                .into());
            }
            return Ok(Address::Unix(path.clone()));
        }
        match endpoints.http_insecure {
            // Nothing authenticates a plain HTTP server: passwords go there only when the user names it.
            Some(addr) => Err(Failure::connect(format!(
                "the running server serves plain HTTP only, which proves nothing of who answers: name it with --url \
                 http://{addr}/v3/owner if you mean it"
            ))
            .into()),
            None => Err(Failure::connect("the running server serves no owner API (every listener is off)").into()),
        }
    }

    /// A secure session with the server, trying again for `--wait` while nothing answers.
    pub async fn open(&self) -> anyhow::Result<SecureSession<BoxLink>> {
        let deadline = self.wait.map(|wait| tokio::time::Instant::now() + wait);
        loop {
            let error = match self.open_once().await {
                Ok(session) => return Ok(session),
                Err(error) => error,
            };
            let waiting = deadline.is_some_and(|deadline| tokio::time::Instant::now() < deadline);
            if !waiting || Failure::exit_of(&error) != Exit::Connect {
                return Err(error);
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }

    async fn open_once(&self) -> anyhow::Result<SecureSession<BoxLink>> {
        let address = self.address().await?;
        let link = connect_expecting(&address, &self.expected).await?;
        SecureSession::open(link).await.map_err(|error| session_failure(&address, "init_secure_api", error))
    }
}

/// How often `--wait` tries again.
const WAIT_STEP: Duration = Duration::from_millis(200);

/// What a link refused by TLS means for the user, if it was refused (revoked, unknown).
fn link_refusal(error: &keyward_driver::LinkError) -> Option<Failure> {
    match error.kind() {
        LinkErrorKind::Revoked => Some(Failure::refused(REVOKED)),
        LinkErrorKind::Unknown => Some(Failure::refused(UNKNOWN)),
        _ => None,
    }
}

/// What a failed call (or the session's `init_secure_api`) to `address` means for the user.
pub fn session_failure(address: &Address, method: &str, error: SessionError) -> anyhow::Error {
    let shown = address.shown();
    match error {
        SessionError::Link(error) => {
            if let Some(failure) = link_refusal(&error) {
                return failure.into();
            }
            let failure = match error.kind() {
                LinkErrorKind::Unreachable if matches!(address, Address::Http { tls: None, .. }) => {
                    Failure::connect(format!(
                        "the server at {shown} does not answer plain HTTP: if it is keyward's HTTPS port, use https:// \
                         (http:// is only for a server started with --http-insecure)"
                    ))
                }
                LinkErrorKind::Closed | LinkErrorKind::Refused
                    if matches!(address, Address::Http { tls: None, .. }) =>
                {
                    Failure::connect(format!(
                        "the server at {shown} does not answer plain HTTP: if it is keyward's HTTPS port, use https:// \
                         (http:// is only for a server started with --http-insecure)"
                    ))
                }
                _ if method == "init_secure_api" => Failure::connect(format!(
                    "the server at {shown} closed the connection before the session began (is this client's \
                     certificate registered and not revoked? `keyward clients list` on the server shows it)"
                )),
                _ => Failure::connect(format!("the connection to {shown} failed during `{method}` (it may have run)")),
            };
            anyhow::Error::new(error).context(failure)
        }
        SessionError::Rpc { code, message } => rpc_failure(method, code, &message).into(),
        other => anyhow::Error::new(other).context(format!("`{method}` failed")),
    }
}

/// What the server's error answer `code`, `message` to `method` means for the user.
pub fn rpc_failure(method: &str, code: i64, message: &str) -> Failure {
    let token_call = keyward_core::find_method(method).is_some_and(|m| m.params().contains(&"token"));
    if message == "Forbidden: this client is revoked" {
        return Failure::answered(Exit::Refused, code, format!("{REVOKED} ({message})"));
    }
    if message.starts_with("Forbidden: ") {
        return Failure::answered(
            Exit::Refused,
            code,
            format!("this client may not call `{method}` ({message}); `keyward clients list` shows the roles"),
        );
    }
    if token_call && (message == "InvalidKeychainMask" || message == "Lifecycle: Wallet has not been opened") {
        return Failure::answered(
            Exit::Method,
            code,
            format!(
                "the wallet was closed or the server restarted: open it again (`keyward call --raw open_wallet \
                 '{{\"name\":\"NAME\"}}'`) and set KEYWARD_TOKEN to the new token ({message})"
            ),
        );
    }
    Failure::answered(Exit::Method, code, format!("{method} failed: {message} (code {code})"))
}

/// What `keyward call` got: the result, and what to tell the user after it, if anything (a new
/// wallet's backup), to print once the result is shown.
#[derive(Debug)]
pub struct Called {
    /// The method's result.
    pub value: Value,
    /// A note for standard error.
    pub next: Option<String>,
}

/// `keyward call`: checks the params, fills them in, calls, and returns the result.
pub async fn run(options: &CallOptions, method: &str, params: Option<&str>) -> anyhow::Result<Called> {
    // Every check before any prompt: the params, then the certificates (a server never started).
    let checked = params::check(method, params, &options.fill)?;
    if options.wait.is_none() {
        options.address().await?;
    }
    let mut passwords = Passwords::new(options.fill.password_stdin);
    let params = checked.fill(&options.fill, &mut passwords)?;
    let next = params::after_success(method, &params);
    let mut session = options.open().await?;
    let address = options.address().await?;
    let value = session.call(method, params).await.map_err(|error| session_failure(&address, method, error))?;
    Ok(Called { value, next })
}

/// The URL `keyward call --tls-dir DIR` uses without `--url`: the bundle's `keyward.toml` url
/// (`keyward pair` writes it), if it has one. A directory without a readable `keyward.toml` (a
/// server's `tls/`, or one this user cannot read) has no URL of its own.
pub fn bundle_url(tls_dir: &Path) -> anyhow::Result<Option<String>> {
    let config = match keyward_pairing::BundleConfig::read(tls_dir) {
        Ok(config) => config,
        Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
            return Err(error).with_context(|| {
                format!("{} is not a bundle's keyward.toml", tls_dir.join(keyward_pairing::bundle::CONFIG).display())
            });
        }
        Err(_) => None,
    };
    Ok(config.and_then(|c| c.endpoints.url))
}

/// Where `keyward serve` listens for HTTPS by default, and so where `keyward clients` and
/// `keyward audit` look for the server of a data directory.
pub const DEFAULT_URL: &str = "https://127.0.0.1:3420/v3/owner";

/// Which server `keyward clients` and `keyward audit` work on: a running one, or, on a stopped
/// server's data directory, their own in process.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// Data directory of the server (default ~/.keyward): its store when no server runs on it.
    #[arg(long, env = "KEYWARD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Server URL (default: where the data directory's running server listens, from its
    /// run/endpoints.json, else https://127.0.0.1:3420/v3/owner).
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// Call over QUIC at this address (e.g. 127.0.0.1:3420) instead of HTTPS.
    #[arg(long, global = true)]
    pub quic: Option<SocketAddr>,
    /// Call over the Unix socket at this path instead of HTTPS.
    #[arg(long, global = true, conflicts_with = "quic")]
    pub unix: Option<PathBuf>,
    /// The owner's certificate directory: a bundle or a server's tls/ (default DATA_DIR/tls).
    #[arg(long, global = true)]
    pub tls_dir: Option<PathBuf>,
}

/// The owner's secure session with the server a command works on ([`ServerArgs::reach`]).
#[derive(Debug)]
pub struct Reached {
    /// The session: the same owner calls whichever server it is with.
    pub session: SecureSession<BoxLink>,
    /// Whether that server is the command's own, in process, over the data directory's store (no
    /// server runs on it; see [`crate::in_process`]), rather than a running `keyward serve`.
    pub in_process: bool,
}

impl ServerArgs {
    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(crate::config::default_data_dir)
    }

    /// Where a new client's bundle says the server is: `--url`/`--quic` as given, else the
    /// addresses the data directory's running server wrote (HTTPS and QUIC), else [`DEFAULT_URL`].
    pub fn server_endpoints(&self) -> keyward_pairing::Endpoints {
        if self.names_a_server() {
            return keyward_pairing::Endpoints {
                url: self.quic.is_none().then(|| self.url.clone().unwrap_or_else(|| DEFAULT_URL.to_owned())),
                quic: self.quic.map(|addr| addr.to_string()),
            };
        }
        match crate::endpoints::read(&self.data_dir()) {
            Ok(Some(server)) if server.https.is_some() || server.quic.is_some() => {
                keyward_pairing::Endpoints { url: server.https_url(), quic: server.quic.map(|addr| addr.to_string()) }
            }
            _ => keyward_pairing::Endpoints { url: Some(DEFAULT_URL.to_owned()), quic: None },
        }
    }

    /// Whether `--url`, `--quic` or `--unix` names a server.
    pub fn names_a_server(&self) -> bool {
        self.url.is_some() || self.quic.is_some() || self.unix.is_some()
    }

    /// A session with the server named by `--url`/`--quic`/`--unix`; else, with the data
    /// directory's store free, with an in-process server over it (made as `in_process` says), or,
    /// when a server holds it (its lock), with that server at [`DEFAULT_URL`] with the data
    /// directory's certificates as the owner's.
    pub async fn reach(&self, in_process: &in_process::Options) -> anyhow::Result<Reached> {
        let data_dir = self.data_dir();
        let local = if self.names_a_server() { None } else { self.in_process_link(&data_dir, in_process).await? };
        if let Some(link) = local {
            let session = SecureSession::open(link)
                .await
                .map_err(|error| anyhow::anyhow!("cannot open a secure session with the in-process server: {error}"))?;
            return Ok(Reached { session, in_process: true });
        }
        let options = CallOptions {
            url: self.url.clone(),
            find_in: Some(data_dir.clone()),
            tls_dir: self.tls_dir.clone().unwrap_or_else(|| crate::serve::tls_dir(&data_dir)),
            quic: self.quic,
            unix: self.unix.clone(),
            expected: Expected { data_dir: Some(data_dir.clone()), tls_dir: self.tls_dir.clone() },
            fill: FillOptions::default(),
            wait: None,
        };
        let session = options.open().await.map_err(|error| {
            if self.names_a_server() {
                return error;
            }
            error.context(format!(
                "a server runs on {} (its store is locked) but does not answer where it said it listens: name it \
                 with --url, --quic or --unix",
                data_dir.display(),
            ))
        })?;
        Ok(Reached { session, in_process: false })
    }

    /// A link to an in-process server over the data directory's store, or `None` when a server
    /// holds the store (its lock).
    async fn in_process_link(&self, data_dir: &Path, options: &in_process::Options) -> anyhow::Result<Option<BoxLink>> {
        use keyward_store::{FjallStore, OpenError};
        let store_dir = data_dir.join("store");
        let exists = FjallStore::exists_in(&store_dir)
            .with_context(|| format!("cannot look for a store in {}", store_dir.display()))?;
        if !exists {
            return Err(Failure::connect(format!(
                "{} holds no keyward store: no server was started on it (`keyward serve --data-dir {}` makes one), or \
                 name a server with --url, --quic or --unix",
                data_dir.display(),
                data_dir.display()
            ))
            .into());
        }
        let store_options = crate::config::store_options(data_dir);
        let opened = tokio::task::spawn_blocking(move || FjallStore::open_with(&store_dir, store_options))
            .await
            .context("the store could not be opened")?;
        match opened {
            Ok(store) => Ok(Some(Box::new(in_process::LocalLink::serve(data_dir, store, options)?))),
            Err(OpenError::InUse) => Ok(None),
            Err(error) => bail!("cannot open the store in {}: {error}", data_dir.display()),
        }
    }
}
