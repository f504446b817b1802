//! `keyward status`: what runs on a data directory, in one look.
//!
//! The version, the data directory, its config file (`DATA_DIR/keyward.toml`, if there is one),
//! whether a server runs on it (its `run/endpoints.json`, whose process is alive) and where it
//! listens; then its wallets (which are open), its clients and whether a pairing code is live.
//! Those come from the running server over the owner API, with the data directory's `tls/`
//! certificates (client `default`, the owner), or, when no server runs, from the store through the
//! in-process server `keyward clients` uses ([`crate::in_process`]; no server runs then, so no
//! wallet is open and no code is live).
//!
//! Whether a pairing code is live is read from the pairing listener, which `keyward serve` opens
//! only while one is: a connection to it that is accepted (and closed at once, having sent nothing)
//! says a code is live. The API has no call that says so.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::call::ServerArgs;
use crate::endpoints::{self, Endpoints};

/// How long the pairing listener gets to accept the probe.
const PAIRING_PROBE: Duration = Duration::from_secs(1);

/// What `keyward status` reports.
#[derive(Debug, Serialize)]
pub struct Status {
    /// This command's version.
    pub version: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// `DATA_DIR/keyward.toml`, if there is one.
    pub config_file: Option<PathBuf>,
    /// Whether a server runs on the data directory.
    pub running: bool,
    /// Where it listens (from `run/endpoints.json`).
    pub server: Option<Endpoints>,
    /// Whether the data directory holds a store.
    pub store: bool,
    /// Where the wallets and clients below come from: `server`, `store`, or `none`.
    pub source: &'static str,
    /// The wallets (`{"name", "open"}`).
    pub wallets: Option<Vec<Value>>,
    /// The clients (`{"name", "role", "identity", "created_unix_ms", "revoked_unix_ms"}`).
    pub clients: Option<Vec<Value>>,
    /// Whether a pairing code is live (`None`: pairing is off, or no server runs).
    pub pairing_code_live: Option<bool>,
    /// Why the wallets and clients could not be read, if they could not.
    pub error: Option<String>,
}

/// `keyward status [--data-dir DIR] [--json]`: the report, as `key: value` lines or one JSON object.
/// The report, and whether the server (or store) could not be asked (`keyward status` then exits 3
/// after printing it).
pub async fn run(data_dir: Option<PathBuf>, json: bool) -> anyhow::Result<(String, bool)> {
    let status = gather(data_dir.unwrap_or_else(crate::config::default_data_dir)).await?;
    let failed = status.error.is_some();
    if json {
        return Ok((format!("{}\n", serde_json::to_string_pretty(&status)?), failed));
    }
    Ok((human(&status), failed))
}

/// Looks at `data_dir` and asks its server (or its store).
pub async fn gather(data_dir: PathBuf) -> anyhow::Result<Status> {
    let config_file = crate::config::config_file(None, Some(&data_dir));
    let server = endpoints::read(&data_dir)?;
    let store_dir = data_dir.join("store");
    let store = keyward_store::FjallStore::exists_in(&store_dir).unwrap_or(false);
    let mut status = Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        data_dir: data_dir.clone(),
        config_file,
        running: server.is_some(),
        server: server.clone(),
        store,
        source: "none",
        wallets: None,
        clients: None,
        pairing_code_live: None,
        error: None,
    };
    if let Some(server) = &server {
        status.pairing_code_live = match server.pairing {
            Some(addr) => Some(listening(addr).await),
            None => None,
        };
    }
    if server.is_none() && !store {
        return Ok(status);
    }
    let target = target(&data_dir, server.as_ref());
    match ask(&target).await {
        Ok((wallets, clients, in_process)) => {
            status.source = if in_process { "store" } else { "server" };
            // A server that holds the store but wrote no endpoints file (one of an older version).
            status.running |= !in_process;
            status.wallets = Some(wallets);
            status.clients = Some(clients);
        }
        Err(error) => status.error = Some(format!("{error:#}")),
    }
    Ok(status)
}

/// The running server's address as `keyward clients` takes it (HTTPS, else QUIC, else the Unix
/// socket, else plain HTTP), with the data directory's certificates; none: the store.
fn target(data_dir: &Path, server: Option<&Endpoints>) -> ServerArgs {
    let mut args = ServerArgs { data_dir: Some(data_dir.to_owned()), ..ServerArgs::default() };
    let Some(server) = server else { return args };
    if let Some(url) = server.https_url() {
        args.url = Some(url);
    } else if let Some(addr) = server.quic {
        args.quic = Some(addr);
    } else if let Some(path) = &server.unix {
        args.unix = Some(path.clone());
    } else if let Some(addr) = server.http_insecure {
        args.url = Some(format!("http://{addr}/v3/owner"));
    }
    args
}

/// `list_wallets` and `list_clients`, and whether they came from the store (in process).
async fn ask(target: &ServerArgs) -> anyhow::Result<(Vec<Value>, Vec<Value>, bool)> {
    let options = crate::in_process::Options::default();
    let mut reached = target.reach(&options).await?;
    let wallets = reached.session.call("list_wallets", json!({})).await;
    let clients = reached.session.call("list_clients", json!({})).await;
    reached.session.close().await;
    let list = |answer: Value, what: &str| match answer {
        Value::Array(items) => Ok(items),
        other => Err(anyhow::anyhow!("{what} answered {other}, not a list")),
    };
    let wallets = list(wallets.map_err(|e| anyhow::anyhow!("list_wallets failed: {e}"))?, "list_wallets")?;
    let clients = list(clients.map_err(|e| anyhow::anyhow!("list_clients failed: {e}"))?, "list_clients")?;
    Ok((wallets, clients, reached.in_process))
}

/// Whether something accepts a TCP connection at `addr` (the connection is closed at once).
async fn listening(addr: SocketAddr) -> bool {
    matches!(tokio::time::timeout(PAIRING_PROBE, tokio::net::TcpStream::connect(addr)).await, Ok(Ok(_)))
}

/// `key: value` lines, the keys aligned.
fn human(status: &Status) -> String {
    let mut lines: Vec<(&str, String)> = vec![
        ("version", status.version.clone()),
        ("data directory", status.data_dir.display().to_string()),
        ("config file", status.config_file.as_ref().map_or_else(|| "none".to_owned(), |p| p.display().to_string())),
    ];
    match &status.server {
        Some(server) => {
            lines.push(("server", format!("running (pid {}, version {})", server.pid, server.version)));
            let off = || "off".to_owned();
            lines.push(("https", server.https_url().unwrap_or_else(off)));
            lines.push(("quic", server.quic.map_or_else(off, |a| a.to_string())));
            lines.push(("http (plain)", server.http_insecure.map_or_else(off, |a| format!("http://{a}/v3/owner"))));
            lines.push(("unix", server.unix.as_ref().map_or_else(off, |p| p.display().to_string())));
            let pairing = match (server.pairing, status.pairing_code_live) {
                (None, _) => off(),
                (Some(addr), Some(true)) => format!("a code is live (listening on {addr})"),
                (Some(addr), _) => format!("no code live ({addr} opens when `keyward clients pair` makes one)"),
            };
            lines.push(("pairing", pairing));
        }
        None if status.running => {
            lines.push(("server", "running (it holds the store; it wrote no run/endpoints.json)".to_owned()))
        }
        None => lines.push(("server", "not running".to_owned())),
    }
    if !status.store {
        lines.push(("store", "none (`keyward serve` makes it on first start)".to_owned()));
    } else if status.source == "store" {
        lines.push(("store", "read directly (no server holds it)".to_owned()));
    }
    if let Some(wallets) = &status.wallets {
        let open: Vec<&str> = wallets.iter().filter(|w| w["open"] == true).filter_map(|w| w["name"].as_str()).collect();
        let names: Vec<&str> = wallets.iter().filter_map(|w| w["name"].as_str()).collect();
        lines.push(("wallets", list_or_none(&names)));
        lines.push(("open wallets", list_or_none(&open)));
    }
    if let Some(clients) = &status.clients {
        let describe = |c: &Value| {
            let revoked = if c["revoked_unix_ms"].is_null() { "" } else { ", revoked" };
            format!("{} ({}{revoked})", c["name"].as_str().unwrap_or("?"), c["role"].as_str().unwrap_or("?"))
        };
        let clients: Vec<String> = clients.iter().map(describe).collect();
        let clients: Vec<&str> = clients.iter().map(String::as_str).collect();
        lines.push(("clients", list_or_none(&clients)));
    }
    if let Some(error) = &status.error {
        lines.push(("error", error.clone()));
    }
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in lines {
        let _ = writeln!(out, "{:<width$} {value}", format!("{key}:"));
    }
    out
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() { "none".to_owned() } else { format!("{} ({})", items.len(), items.join(", ")) }
}
