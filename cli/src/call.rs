//! `keyward call`: a client for people and scripts. It runs `init_secure_api`, encrypts the call,
//! sends it, and prints the decrypted result.
//!
//! Params the user leaves out are filled in: `name`, `mnemonic` and the `*_config` params with
//! `null`, `mnemonic_length` with 32, `chain_type` with `Mainnet`, `token` from `KEYWARD_TOKEN`, and
//! passwords (`password`, `old`, `new`) from a prompt or, with `--password-stdin`, one line each
//! from standard input. Passwords are never taken from the command line.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use keyward_driver::{Link, SecureSession, SessionError};
use keyward_http::{HttpClient, HttpTarget};
use keyward_quic::QuicClient;
use keyward_unix::UnixClient;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::{in_process, tls};

/// Where and how to call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// `https://host:port/v3/owner` or `http://…` (plain HTTP, loopback only).
    pub url: String,
    /// The certificate directory: a client's bundle (`ca.crt`, `client.crt`, `client.key`, as
    /// `keyward clients add --out` writes it) or a server's `tls/` (its set in use); HTTPS and QUIC
    /// trust its `ca.crt` and present its `client.crt`.
    pub tls_dir: PathBuf,
    /// Use QUIC to this address instead of the URL.
    pub quic: Option<SocketAddr>,
    /// Use this Unix socket instead of the URL.
    pub unix: Option<PathBuf>,
    /// Read passwords from standard input, one line each, instead of prompting.
    pub password_stdin: bool,
}

/// Params that hold passwords, and the prompt for each.
const PASSWORD_PARAMS: [(&str, &str); 3] =
    [("password", "Wallet password: "), ("old", "Current password: "), ("new", "New password: ")];

/// Reads passwords from a prompt or from standard input.
pub struct Passwords {
    from_stdin: bool,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").field("from_stdin", &self.from_stdin).finish()
    }
}

impl Passwords {
    /// A source: standard input lines, or the terminal with echo off.
    pub fn new(from_stdin: bool) -> Self {
        Self { from_stdin }
    }

    fn read(&mut self, prompt: &str) -> anyhow::Result<Zeroizing<String>> {
        if self.from_stdin {
            let mut line = Zeroizing::new(String::new());
            let read = std::io::stdin().lock().read_line(&mut line).context("cannot read a password from stdin")?;
            anyhow::ensure!(read > 0, "standard input ended before every password was read");
            let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
            return Ok(trimmed);
        }
        let password = rpassword::prompt_password(prompt).context("cannot read a password from the terminal")?;
        Ok(Zeroizing::new(password))
    }
}

/// Builds the params of `method` from what the user gave, filling in the rest.
pub fn fill_params(method: &str, given: Option<&str>, passwords: &mut Passwords) -> anyhow::Result<Value> {
    let mut given: Map<String, Value> = match given {
        None => Map::new(),
        Some(text) => match serde_json::from_str(text).context("PARAMS must be a JSON object")? {
            Value::Object(map) => map,
            _ => bail!("PARAMS must be a JSON object"),
        },
    };
    for (name, _) in PASSWORD_PARAMS {
        if given.contains_key(name) && method != "verify_message" {
            bail!("passwords are not taken from the command line: leave '{name}' out and you will be asked for it");
        }
    }
    let Some(names) = keyward_core::find_method(method).map(keyward_core::Method::params) else {
        // An embedder's method: send what was given, with the token if one is set.
        if !given.contains_key("token")
            && let Ok(token) = std::env::var("KEYWARD_TOKEN")
        {
            given.insert("token".into(), Value::String(token));
        }
        return Ok(Value::Object(given));
    };
    let mut params = Map::new();
    for name in names {
        if let Some(value) = given.remove(*name) {
            let value = match (*name, value) {
                ("wallet_seed", Value::String(path)) if path.starts_with('@') => {
                    let text =
                        std::fs::read_to_string(&path[1..]).with_context(|| format!("cannot read {}", &path[1..]))?;
                    Value::String(text)
                }
                (_, value) => value,
            };
            params.insert((*name).to_owned(), value);
            continue;
        }
        let value = match *name {
            "name" | "mnemonic" | "wallet_config" | "logging_config" | "tor_config" => Value::Null,
            "mnemonic_length" => Value::from(32),
            "chain_type" => Value::from("Mainnet"),
            "token" => Value::String(
                std::env::var("KEYWARD_TOKEN")
                    .context("this method needs a token: set KEYWARD_TOKEN or pass \"token\"")?,
            ),
            password if PASSWORD_PARAMS.iter().any(|(p, _)| *p == password) => {
                let prompt = PASSWORD_PARAMS.iter().find(|(p, _)| *p == password).map_or("Password: ", |(_, q)| q);
                let secret = passwords.read(prompt)?;
                Value::String(secret.to_string())
            }
            other => bail!("missing param '{other}' (give it in PARAMS)"),
        };
        params.insert((*name).to_owned(), value);
    }
    if let Some(extra) = given.keys().next() {
        bail!("'{method}' takes no param '{extra}' (its params: {})", names.join(", "));
    }
    Ok(Value::Object(params))
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
        let url = parse_url(url)?;
        let addr = resolve(&url).await?;
        let tls = if url.tls { Some(tls::client_config(tls_dir)?) } else { None };
        Ok(Self::Http { addr, host: url.host, tls })
    }

    /// QUIC at `addr`, with the certificate directory `tls_dir`.
    pub fn quic(addr: SocketAddr, tls_dir: &Path) -> anyhow::Result<Self> {
        let name = if addr.ip().is_ipv6() { "::1" } else { "127.0.0.1" };
        Ok(Self::Quic { addr, name: name.to_owned(), tls: tls::client_config(tls_dir)? })
    }
}

/// Connects to the server at `address`, over its transport.
pub async fn connect(address: &Address) -> anyhow::Result<BoxLink> {
    Ok(match address {
        Address::Http { addr, host, tls } => {
            let target = tls.as_ref().map_or(HttpTarget::Plain, |tls| HttpTarget::Tls(Arc::clone(tls)));
            Box::new(HttpClient::connect(*addr, host, target).await.context("cannot connect to keyward")?)
        }
        Address::Quic { addr, name, tls } => Box::new(
            QuicClient::connect(*addr, name, Arc::clone(tls))
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to keyward over QUIC: {e}"))?,
        ),
        Address::Unix(path) => Box::new(
            UnixClient::connect(path)
                .await
                .with_context(|| format!("cannot connect to keyward at {}", path.display()))?,
        ),
    })
}

impl CallOptions {
    /// The address these options name: the Unix socket, else QUIC, else the URL.
    pub async fn address(&self) -> anyhow::Result<Address> {
        match (&self.unix, self.quic) {
            (Some(path), _) => Ok(Address::Unix(path.clone())),
            (None, Some(addr)) => Address::quic(addr, &self.tls_dir),
            (None, None) => Address::url(&self.url, &self.tls_dir).await,
        }
    }
}

/// `keyward call`: fills the params, calls, and returns the result.
pub async fn run(options: &CallOptions, method: &str, params: Option<&str>) -> anyhow::Result<Value> {
    let mut passwords = Passwords::new(options.password_stdin);
    let params = fill_params(method, params, &mut passwords)?;
    let mut session = match SecureSession::open(connect(&options.address().await?).await?).await {
        Ok(session) => session,
        // With TLS 1.3 a refused client certificate shows up as a connection closed after the
        // handshake, not as an alert the client can name.
        Err(SessionError::Link(error)) => bail!(
            "init_secure_api failed: {error} (the server closed the connection: is this client's certificate \
             registered and not revoked? `keyward clients list` on the server shows it)"
        ),
        Err(error) => bail!("init_secure_api failed: {error}"),
    };
    match session.call(method, params).await {
        Ok(value) => Ok(value),
        Err(SessionError::Link(error)) => bail!("the request failed: {error}"),
        Err(error) => bail!("{method} failed: {error}"),
    }
}

/// The URL `keyward call --tls-dir DIR` uses without `--url`: the bundle's `keyward.toml` url
/// (`keyward pair` writes it), else [`DEFAULT_URL`]. A directory without a readable `keyward.toml`
/// (a server's `tls/`, or one this user cannot read) has no URL of its own.
pub fn bundle_url(tls_dir: &Path) -> anyhow::Result<String> {
    let config = match keyward_pairing::BundleConfig::read(tls_dir) {
        Ok(config) => config,
        Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
            return Err(error).with_context(|| {
                format!("{} is not a bundle's keyward.toml", tls_dir.join(keyward_pairing::bundle::CONFIG).display())
            });
        }
        Err(_) => None,
    };
    Ok(config.and_then(|c| c.endpoints.url).unwrap_or_else(|| DEFAULT_URL.to_owned()))
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
    /// Server URL (default https://127.0.0.1:3420/v3/owner when a server runs on the data directory).
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
        let (link, in_process, hint) = match local {
            Some(link) => (link, true, String::new()),
            None => {
                let options = CallOptions {
                    url: self.url.clone().unwrap_or_else(|| DEFAULT_URL.to_owned()),
                    tls_dir: self.tls_dir.clone().unwrap_or_else(|| crate::serve::tls_dir(&data_dir)),
                    quic: self.quic,
                    unix: self.unix.clone(),
                    password_stdin: false,
                };
                let hint = if self.names_a_server() {
                    String::new()
                } else {
                    format!(
                        " (a server runs on {} and its store is locked: if it does not listen on {DEFAULT_URL}, name \
                         it with --url, --quic or --unix)",
                        data_dir.display()
                    )
                };
                let link = async { connect(&options.address().await?).await }
                    .await
                    .with_context(|| format!("cannot reach the server{hint}"))?;
                (link, false, hint)
            }
        };
        let session = SecureSession::open(link)
            .await
            .map_err(|error| anyhow::anyhow!("cannot open a secure session with the server: {error}{hint}"))?;
        Ok(Reached { session, in_process })
    }

    /// A link to an in-process server over the data directory's store, or `None` when a server
    /// holds the store (its lock).
    async fn in_process_link(&self, data_dir: &Path, options: &in_process::Options) -> anyhow::Result<Option<BoxLink>> {
        use keyward_store::{FjallStore, OpenError};
        let store_dir = data_dir.join("store");
        let exists = FjallStore::exists_in(&store_dir)
            .with_context(|| format!("cannot look for a store in {}", store_dir.display()))?;
        anyhow::ensure!(
            exists,
            "{} holds no keyward store (start `keyward serve` on it once, or name a server with --url, --quic or \
             --unix)",
            data_dir.display()
        );
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
