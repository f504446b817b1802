//! `keyward call`: a client for people and scripts. It runs `init_secure_api`, encrypts the call,
//! sends it, and prints the decrypted result.
//!
//! Params the user leaves out are filled in: `name`, `mnemonic` and the `*_config` params with
//! `null`, `mnemonic_length` with 32, `chain_type` with `Mainnet`, `token` from `KEYWARD_TOKEN`, and
//! passwords (`password`, `old`, `new`) from a prompt or, with `--password-stdin`, one line each
//! from standard input. Passwords are never taken from the command line.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use keyward_core::{Client, ClientError};
use keyward_http::{HttpClient, HttpTarget};
use keyward_quic::QuicClient;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::tls;

/// Where and how to call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// `https://host:port/v3/owner` or `http://…` (plain HTTP, loopback only).
    pub url: String,
    /// The certificate directory (ca.crt, client.crt, client.key).
    pub tls_dir: PathBuf,
    /// Use QUIC to this address instead of the URL.
    pub quic: Option<SocketAddr>,
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
    let Some(names) = keyward_core::methods::find(method).map(keyward_core::Method::params) else {
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

/// A connection to the server.
pub enum Link {
    /// HTTP(S), with the session id the server gave (sent back in `Keyward-Session`).
    Http(HttpClient, Option<String>),
    /// QUIC: the session belongs to the connection.
    Quic(QuicClient),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Http(..) => "Link::Http",
            Self::Quic(_) => "Link::Quic",
        })
    }
}

impl Link {
    /// Connects over HTTP(S) to a URL.
    pub async fn http(url: &str, tls_dir: &std::path::Path) -> anyhow::Result<Self> {
        let url = parse_url(url)?;
        let addr = resolve(&url).await?;
        let target = if url.tls { HttpTarget::Tls(tls::client_config(tls_dir)?) } else { HttpTarget::Plain };
        let http = HttpClient::connect(addr, &url.host, target).await.context("cannot connect to keyward")?;
        Ok(Self::Http(http, None))
    }

    /// Connects over QUIC.
    pub async fn quic(addr: SocketAddr, tls_dir: &std::path::Path) -> anyhow::Result<Self> {
        let name = if addr.ip().is_ipv6() { "::1" } else { "127.0.0.1" };
        let client = QuicClient::connect(addr, name, tls::client_config(tls_dir)?)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to keyward over QUIC: {e}"))?;
        Ok(Self::Quic(client))
    }

    /// Sends one JSON-RPC message and returns the answer.
    pub async fn send(&mut self, body: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        match self {
            Self::Http(http, session) => {
                let answer = http.post(body, session.as_deref()).await.context("the request failed")?;
                if answer.session.is_some() {
                    *session = answer.session;
                }
                anyhow::ensure!(answer.status == 200, "the server answered HTTP {}", answer.status);
                Ok(answer.body)
            }
            Self::Quic(quic) => quic.call(&body).await.map_err(|e| anyhow::anyhow!("the request failed: {e}")),
        }
    }
}

/// One secure session over a link: init, then any number of calls.
pub struct SecureSession {
    link: Link,
    client: Client,
}

impl std::fmt::Debug for SecureSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureSession").field("link", &self.link).finish()
    }
}

impl SecureSession {
    /// Runs `init_secure_api` over a link.
    pub async fn open(mut link: Link) -> anyhow::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        let mut client = Client::new(seed);
        zeroize::Zeroize::zeroize(&mut seed);
        let answer = link.send(client.init_request()).await.context("init_secure_api failed")?;
        client.handle_init_answer(&answer).context("init_secure_api was refused")?;
        Ok(Self { link, client })
    }

    /// One encrypted call; the `Ok` value, or the server's error.
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Result<Value, ClientError>> {
        let (body, pending) = self.client.seal(method, params)?;
        let answer = self.link.send(body).await?;
        Ok(self.client.open(pending, &answer))
    }
}

/// `keyward call`: fills the params, calls, and returns the result.
pub async fn run(options: &CallOptions, method: &str, params: Option<&str>) -> anyhow::Result<Value> {
    let mut passwords = Passwords::new(options.password_stdin);
    let params = fill_params(method, params, &mut passwords)?;
    let link = match options.quic {
        Some(addr) => Link::quic(addr, &options.tls_dir).await?,
        None => Link::http(&options.url, &options.tls_dir).await?,
    };
    let mut session = SecureSession::open(link).await?;
    match session.call(method, params).await? {
        Ok(value) => Ok(value),
        Err(ClientError::Rpc { code, message }) => bail!("{method} failed: {message} (code {code})"),
        Err(other) => bail!("{method} failed: {other}"),
    }
}
