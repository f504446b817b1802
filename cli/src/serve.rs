//! `keyward serve`: the owner server on an embedded default (fjall data directory, certificates made
//! on first start), HTTPS and QUIC with required client certificates and, if asked, plain HTTP on
//! loopback and a Unix socket; every listener on one `keyward-driver`. A rotated certificate set
//! (`keyward certs rotate`) is taken for new connections within two seconds, without a restart.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keyward_core::Server;
use keyward_driver::Driver;
use keyward_http::HttpServer;
use keyward_quic::QuicServer;
use keyward_store::FjallStore;
use keyward_unix::{UnixLimits, UnixServer};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::ServeOptions;
use crate::{certs, harden, principals, tls};

/// A running server.
pub struct Running {
    /// The HTTPS address, if serving HTTPS.
    pub https: Option<SocketAddr>,
    /// The plain HTTP address, if serving it.
    pub http_insecure: Option<SocketAddr>,
    /// The QUIC address, if serving QUIC.
    pub quic: Option<SocketAddr>,
    /// The Unix socket, if serving one.
    pub unix: Option<PathBuf>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The core, for probes in tests.
    pub core: Arc<Server>,
    /// The driver every listener runs on.
    pub driver: Driver,
    /// The pairing service, if pairing is on.
    pub pairing: Option<keyward_pairing::PairingService>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("https", &self.https).field("http_insecure", &self.http_insecure).finish()
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// The directory of the certificate set inside a data directory.
pub fn tls_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("tls")
}

/// Where a server's certificates come from.
#[derive(Debug, Clone)]
pub enum Certificates {
    /// `DATA_DIR/tls`: made on first start, its client certificate registered as `default`, a
    /// rotation (`keyward certs rotate`) followed while the server runs.
    DataDir,
    /// A set made for this run and held only in memory (`keyward serve --launcher`): no `tls/` file is
    /// made or read, its client certificate is registered as owner `launcher` for this run only, and
    /// the server issues no certificates (its CA dies with it).
    Launcher(Arc<certs::CertSet>),
}

/// Starts the server and returns once every listener is bound.
pub async fn start(options: ServeOptions) -> anyhow::Result<Running> {
    start_with(options, Certificates::DataDir).await
}

/// Starts the server with certificates from `certificates` and returns once every listener is bound.
pub async fn start_with(options: ServeOptions, certificates: Certificates) -> anyhow::Result<Running> {
    let report = harden::process();
    if let Err(error) = &report.not_dumpable {
        tracing::warn!(%error, "could not turn core dumps off (PR_SET_DUMPABLE)");
    }
    if let Err(error) = &report.no_core_files {
        tracing::warn!(%error, "could not set the core file limit to zero");
    }
    // Every socket first: a port in use stops the start before anything is made on disk.
    let mut bound = Bound::bind(&options)?;
    let tls_dir = tls_dir(&options.data_dir);
    let launched = match &certificates {
        Certificates::DataDir => None,
        Certificates::Launcher(set) => Some(Arc::clone(set)),
    };
    // Before anything is made or changed: the directories the operator left open to other users.
    let store_dir = options.data_dir.join("store");
    let mut checked = vec![options.data_dir.as_path(), store_dir.as_path()];
    if launched.is_none() {
        checked.push(&tls_dir);
    }
    for (dir, mode) in harden::open_to_others(&checked) {
        let fixed = if dir == options.data_dir { " (keyward serve sets it to 0700 now)" } else { "" };
        tracing::warn!(
            "{} is open to other users (mode {mode:04o}){fixed}; run: chmod 700 {}",
            dir.display(),
            dir.display()
        );
    }
    certs::private_dir(&options.data_dir)?;
    // The Unix socket once the data directory is private (the socket may be in it: its directory
    // must not be open to others), before the CA and the store.
    if let Some(path) = &options.unix {
        bound.unix = Some(UnixServer::bind(path, UnixLimits::default()).await?);
    }
    if launched.is_none() && certs::ensure(&tls_dir)? {
        tracing::info!(dir = %tls_dir.display(), "made a new CA, server and client certificate");
    }
    // Before anything else starts: a set that cannot be used (a key others can read, say) stops here.
    let server_tls = match (options.https, options.quic, &launched) {
        (None, None, _) => None,
        (_, _, None) => Some(tls::ServerTls::load(&tls_dir)?),
        (_, _, Some(set)) => Some(tls::ServerTls::in_memory(set)?),
    };
    let store = FjallStore::open_with(&options.data_dir.join("store"), options.store.clone())
        .context("cannot open the wallet store")?;
    // A registry that cannot be read would start with none (and re-register `default` over a
    // revoked one): refuse to start instead.
    keyward_core::Store::load_clients(&store).map_err(|e| anyhow::anyhow!("cannot read the client registry: {e}"))?;
    log_audit_head(&store, "at start");
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut *seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let mut server = Server::new(options.core.clone(), Box::new(store), *seed);
    let host = Arc::new(match launched {
        None => principals::ServeHost::new(tls_dir.clone()),
        Some(_) => principals::ServeHost::launched(),
    });
    server.set_host(Arc::clone(&host) as Arc<dyn keyward_core::Host>);
    let core = Arc::new(server);
    // Every peer is a registered client: the set's client certificate is `default` (owner) (a
    // launched server's is `launcher`, for this run only), and the Unix socket's own user and
    // allowed users are `uid-N` (owner) unless registered already.
    match &launched {
        None => principals::ensure_default(&core, &tls_dir)?,
        Some(set) => principals::register_launcher(&core, set)?,
    }
    if options.unix.is_some() {
        let own = harden::effective_uid();
        let mut uids = vec![own];
        uids.extend(options.unix_allowed_uids.iter().copied().filter(|uid| *uid != own));
        principals::ensure_uids(&core, &uids)?;
    }
    let driver = Driver::new(Arc::clone(&core), keyward_driver::system_clock(), options.driver.clone());
    let (addr, len) = core.vault_region();
    match harden::lock(addr, len) {
        Ok(()) => tracing::debug!(bytes = len, "vault memory locked"),
        Err(error) => {
            tracing::warn!(%error, "could not lock the vault's memory (mlock); raise RLIMIT_MEMLOCK to keep it out of swap")
        }
    }
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    // Pairing: a listener opens on `options.pairing` only while a code is live.
    let mut pairing = None;
    let registrar = Arc::new(crate::pairing::ServeRegistrar::new(&core, tls_dir.clone()));
    if let Some(addr) = options.pairing {
        let service = keyward_pairing::PairingService::new(
            addr,
            Arc::clone(&registrar) as Arc<dyn keyward_pairing::Registrar>,
            tokio::runtime::Handle::current(),
            stop_rx.clone(),
        );
        host.set_pairing(service.clone());
        pairing = Some(service);
    }

    // One set for both TLS listeners, followed across `keyward certs rotate`.
    let server_tls = match server_tls {
        Some(server_tls) => {
            // A rotated set moves `default` to its key.
            if matches!(certificates, Certificates::DataDir) {
                tasks.spawn(follow_rotations(
                    Arc::clone(&server_tls),
                    Arc::downgrade(&core),
                    driver.clone(),
                    tls_dir.clone(),
                    stopped(stop_rx.clone()),
                ));
            }
            Some(server_tls.config(&driver)?)
        }
        None => None,
    };

    let Bound { https: https_listener, http_insecure: http_listener, quic: quic_socket, unix: unix_server } = bound;
    let mut https = None;
    if let Some(listener) = https_listener {
        let config = Arc::clone(server_tls.as_ref().context("a TLS listener has a TLS config")?);
        let server = HttpServer::https_from_listener(listener, config, driver.clone(), options.http.clone())?;
        let bound = server.local_addr()?;
        tracing::info!("keyward listening on https://{bound}/v3/owner (HTTPS, client certificate required)");
        https = Some(bound);
        tasks.spawn(server.run(stopped(stop_rx.clone())));
    }
    let mut http_insecure = None;
    if let Some(listener) = http_listener {
        let server = HttpServer::insecure_from_listener(listener, driver.clone(), options.http.clone())?;
        let bound = server.local_addr()?;
        tracing::warn!(
            "keyward listening on http://{bound}/v3/owner (plain HTTP, loopback only, no client authentication)"
        );
        http_insecure = Some(bound);
        tasks.spawn(server.run(stopped(stop_rx.clone())));
    }
    let mut quic = None;
    if let Some((addr, socket)) = quic_socket {
        let config = Arc::clone(server_tls.as_ref().context("a TLS listener has a TLS config")?);
        let server = QuicServer::from_socket(socket, config, driver.clone(), options.quic_limits)
            .map_err(|e| anyhow::anyhow!("cannot serve QUIC on {addr}: {e}"))?;
        let bound = server.local_addr().map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!("keyward listening on quic://{bound} (QUIC, ALPN keyward/1, client certificate required)");
        quic = Some(bound);
        tasks.spawn(server.run(stopped(stop_rx.clone())));
    }

    let mut unix = None;
    if let Some(server) = unix_server {
        let path = server.path().to_owned();
        tracing::info!("keyward listening on unix:{} (peer uid checked)", path.display());
        unix = Some(path);
        tasks.spawn(server.run(driver.clone(), stopped(stop_rx.clone())));
    }
    registrar.set_endpoints(keyward_pairing::Endpoints {
        url: https.map(|addr| format!("https://{addr}/v3/owner")),
        quic: quic.map(|addr| addr.to_string()),
    });
    Ok(Running { https, http_insecure, quic, unix, data_dir: options.data_dir, core, driver, pairing, stop, tasks })
}

/// Every listener's socket, bound before the server makes anything (a CA, a store, a data
/// directory): a port in use ends the start with nothing made.
struct Bound {
    https: Option<std::net::TcpListener>,
    http_insecure: Option<std::net::TcpListener>,
    quic: Option<(SocketAddr, std::net::UdpSocket)>,
    unix: Option<UnixServer>,
}

impl Bound {
    fn bind(options: &ServeOptions) -> anyhow::Result<Self> {
        let https = options.https.map(|addr| bind_tcp(addr, Listener::Https)).transpose()?;
        let http_insecure = options.http_insecure.map(|addr| bind_tcp(addr, Listener::HttpInsecure)).transpose()?;
        let quic = match options.quic {
            Some(addr) => {
                Some((addr, std::net::UdpSocket::bind(addr).map_err(|e| cannot_listen(addr, Listener::Quic, &e))?))
            }
            None => None,
        };
        Ok(Self { https, http_insecure, quic, unix: None })
    }
}

/// A listener, as its error names it and the flag and key that choose its address.
#[derive(Clone, Copy)]
enum Listener {
    Https,
    HttpInsecure,
    Quic,
}

fn bind_tcp(addr: SocketAddr, listener: Listener) -> anyhow::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(addr).map_err(|e| cannot_listen(addr, listener, &e))
}

/// `cannot listen on ADDR (HTTPS): the address is in use (another keyward serve?); choose another
/// with --https ADDR or https = "…" in keyward.toml`, once (the cause is not repeated as a source).
fn cannot_listen(addr: SocketAddr, listener: Listener, error: &std::io::Error) -> anyhow::Error {
    let (what, flag, key) = match listener {
        Listener::Https => ("HTTPS", "--https", "https"),
        Listener::HttpInsecure => ("plain HTTP", "--http-insecure", "http_insecure"),
        Listener::Quic => ("QUIC, UDP", "--quic", "quic"),
    };
    let why = match error.kind() {
        std::io::ErrorKind::AddrInUse => "the address is in use (another keyward serve?)".to_owned(),
        std::io::ErrorKind::AddrNotAvailable => "no interface of this machine has that address".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied (ports below 1024 need privileges)".to_owned(),
        _ => error.to_string(),
    };
    anyhow::anyhow!(
        "cannot listen on {addr} ({what}): {why}; choose another with {flag} ADDR or {key} = \"…\" in keyward.toml, \
         or turn it off with {flag} off"
    )
}

/// Logs the audit log's head at INFO, for an external monitor to keep (with every 1,000 records,
/// which the store logs, and `keyward audit head`).
fn log_audit_head(store: &dyn keyward_core::Store, when: &str) {
    match store.audit_bounds() {
        Ok((_, head)) => tracing::info!(seq = head.seq, hash = %hex::encode(head.hash), "audit log head {when}"),
        Err(error) => tracing::error!(%error, "cannot read the audit log's head"),
    }
}

/// How often `keyward serve` looks for a rotated certificate set.
pub const ROTATION_CHECK: Duration = Duration::from_secs(1);

/// How many checks after a rotation the open connections are swept again: longer than any
/// handshake may take (the listeners' `handshake_timeout`, 5 s).
pub const ROTATION_SWEEPS: u32 = 12;

/// Checks the certificate directory every [`ROTATION_CHECK`] and loads a rotated set for new
/// handshakes; a set that fails to load is logged and the one in use kept. Once a new set is in
/// use, every open connection whose client chain it does not verify is closed (a rotation done
/// because the CA key leaked ends the retired CA's connections, whoever's they are): within
/// `ROTATION_CHECK` and the transports' close, under 2 s. The sweep is repeated every check for
/// [`ROTATION_SWEEPS`] checks after, so a handshake verified under the old set just before the
/// rotation and admitted after the first sweep is closed too.
async fn follow_rotations(
    server_tls: Arc<tls::ServerTls>,
    core: std::sync::Weak<Server>,
    driver: keyward_driver::Driver,
    tls_dir: std::path::PathBuf,
    shutdown: impl Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(ROTATION_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut sweeps_left = 0u32;
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let checked = Arc::clone(&server_tls);
        match tokio::task::spawn_blocking(move || checked.refresh()).await {
            Ok(Ok(None)) if sweeps_left > 0 => {
                sweeps_left -= 1;
                let closed = driver.close_unverified(&|chain| server_tls.verifies(chain));
                if closed > 0 {
                    tracing::info!(closed, "closed connections admitted after the rotation with a retired certificate");
                }
            }
            Ok(Ok(None)) => {}
            Ok(Ok(Some(set))) => {
                tracing::info!(set = %set.display(), "new certificate set: new connections use it");
                if let Some(core) = core.upgrade()
                    && let Err(error) = principals::ensure_default(&core, &tls_dir)
                {
                    tracing::error!("{error:#}");
                }
                let closed = driver.close_unverified(&|chain| server_tls.verifies(chain));
                tracing::info!(closed, "closed the open connections whose certificate the new set does not verify");
                sweeps_left = ROTATION_SWEEPS;
            }
            Ok(Err(error)) => tracing::error!(
                "the certificate set changed but cannot be used; keeping the one in use ({}): {error:#}",
                server_tls.set_dir().display()
            ),
            Err(error) => tracing::error!(%error, "the certificate check failed"),
        }
    }
}

impl Running {
    /// Writes `{"pid":…,"https":"addr"|null,"http_insecure":…,"quic":…}` atomically to `path`.
    pub fn write_ready_file(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let text = serde_json::json!({
            "pid": std::process::id(),
            "https": self.https.map(|a| a.to_string()),
            "http_insecure": self.http_insecure.map(|a| a.to_string()),
            "quic": self.quic.map(|a| a.to_string()),
            "unix": self.unix.as_ref().map(|p| p.display().to_string()),
        });
        certs::write_file(path, text.to_string().as_bytes(), 0o600)
    }

    /// Stops listening, lets requests in flight finish, closes every wallet (the vault is wiped) and
    /// closes the store.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        // The audit events of the last second (a refused handshake, say) go to the store first.
        let core = Arc::clone(&self.core);
        let _ = tokio::task::spawn_blocking(move || core.flush_audit()).await;
        self.driver.shutdown();
        log_audit_head(self.core.store(), "at stop");
        drop(self.driver);
        // Calls still running on the blocking pool hold the core (and so the store); wait for them,
        // so that the store is closed (its lock released) when `stop` returns.
        for _ in 0..1000 {
            if Arc::strong_count(&self.core) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!("keyward stopped: wallets closed, vault wiped");
    }
}

/// SIGINT and SIGTERM, caught from the moment this is made: make it before anything says the server
/// is ready (a ready file, the launcher's line), or a signal sent on seeing that kills the process
/// with the default action instead of stopping it.
#[derive(Debug)]
pub struct Signals {
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Installs the handlers now (within a tokio runtime).
    pub fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => Some((term, int)),
            _ => None,
        };
        Self { streams }
    }

    /// Waits for SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        match &mut self.streams {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
