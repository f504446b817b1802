//! # keyward-driver
//!
//! The one tokio driver every Keyward transport is built on, as quinn is built on quinn-proto: the
//! sans-IO [`keyward_core::Server`] knows no sockets, clocks, threads or OS randomness; this crate
//! owns them once, so a transport keeps only what is its own (hyper and TLS, quinn and ALPN, a
//! Unix socket and its peer check).
//!
//! What it owns:
//! * the `Arc<Server>`, built from an OS seed ([`Driver::start`]) or handed in ([`Driver::new`]);
//! * the host clock (milliseconds on a monotonic clock, [`Driver::now_ms`]);
//! * the expiry timer: one task calls [`Server::handle_timeout`] at [`Server::poll_timeout`] (at
//!   least every second), so idle sessions and tokens leave memory on time whatever transport runs;
//! * the bounded slow-call pool ([`DriverConfig::slow_threads`] threads, [`DriverConfig::slow_queue`]
//!   waiting calls; a call beyond both is answered `Busy` at once, never queued without bound);
//! * the per-connection handle, [`Connection`]: its peer, the session bound to it, and
//!   [`Connection::answer`]; dropping it drops the bound session;
//! * the accept loop with a connection limit, handshakes evicted by progress and graceful
//!   shutdown, [`serve`]; admission with per-principal bounds and an owner's reserve in every
//!   listener, [`ConnectionLimits`];
//! * length-prefixed framing, [`frame`], and the browsers' native-messaging framing, [`native`];
//! * the client side: the [`Link`] trait ("send these bytes, get those bytes") and one
//!   [`SecureSession`] over any link.
//!
//! An embedder's transport is: accept a connection, make a [`Connection`], read a message,
//! `conn.answer(&bytes).await`, write the answer back. `examples/tcp.rs` is a whole one.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admission;
mod client;
mod connection;
pub mod frame;
mod identity;
pub mod native;
mod pool;
mod serve;
#[cfg(feature = "rustls")]
mod tls;

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use keyward_core::{Server, ServerConfig, Store};

pub use admission::{ConnectionLimits, Refusal};
pub use client::{Exchange, Link, LinkError, LinkErrorKind, LinkFuture, SecureSession, SessionError, SessionOptions};
pub use connection::{Answer, CertChain, Connection, Naming, Peer, Refused, SessionBinding};
pub use identity::{spki, spki_sha256};
/// The session id a [`Link`] names and an [`Exchange`] announces (the core's).
pub use keyward_core::SessionId;
pub use pool::on_slow_pool;
pub use serve::{Listener, Progress, Seat, ServeLimits, Stopping, serve};
#[cfg(feature = "rustls")]
pub use tls::{RegistryVerifier, alert_refusal, refusal_in};

/// The host's clock: milliseconds on a monotonic clock, handed to the core as `now_ms`.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A monotonic clock counting milliseconds from its creation.
pub fn system_clock() -> Clock {
    let start = Instant::now();
    Arc::new(move || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX))
}

/// What answers messages instead of a core: the floor `keyward bench` measures transports against
/// (an echo), or an embedder's own handler. Everything before it (listener, TLS, limits, framing)
/// is the transport's usual code.
pub trait Service: Send + Sync + 'static {
    /// The answer to one message.
    fn answer(&self, request: &[u8]) -> Vec<u8>;
}

/// The driver's settings. The slow-call pool's read themselves from a config file's
/// `[slow_calls]` table (every key optional, unknown keys refused): `threads`, `queue`,
/// `per_principal`; the others keep their defaults.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriverConfig {
    /// Threads that run slow calls (a KDF or a store write). Default: the number of cores. Each
    /// running KDF holds its memory cost (64 MiB by default), so this bounds that memory too.
    #[serde(rename = "threads")]
    pub slow_threads: usize,
    /// Slow calls that may wait for a thread. Default 64. A slow call beyond `slow_threads +
    /// slow_queue` is answered at once with −32099 `Busy` and does not run.
    #[serde(rename = "queue")]
    pub slow_queue: usize,
    /// Slow calls one principal may have admitted (running or waiting). Default 16. A principal
    /// also never runs on more than `slow_threads − 1` threads at once (one with one thread), and
    /// waiting calls are taken in turn between principals, so one client's flood of KDFs delays
    /// another's by at most the calls already running. One thread (of two or more) and
    /// `min(threads, queue)` places are kept for owner-role calls, so other clients' floods never
    /// make an owner's call wait for a thread or answer it `Busy`.
    #[serde(rename = "per_principal")]
    pub slow_per_principal: usize,
    /// The longest the expiry timer sleeps. Default 1 s.
    #[serde(skip)]
    pub max_timer_sleep: Duration,
    /// Sessions one connection that does not bind sessions (HTTP) may make and keep; one more ends
    /// its own oldest. Default 8. (QUIC and Unix connections hold one session each.) A config
    /// file's `[sessions] per_connection`.
    #[serde(skip)]
    pub max_sessions_per_connection: usize,
    /// How long the answer to a request that named no session and matched none waits (it costs
    /// the connection time, not the server CPU): 50 ms by default, so one connection sends at most
    /// 20 such requests a second. An honest client meets it once, when its session has ended.
    #[serde(skip)]
    pub unmatched_delay: Duration,
    /// Connections per principal and the owner's reserve in every listener. A config file's
    /// `[connections]` table.
    #[serde(skip)]
    pub connections: ConnectionLimits,
}

impl Default for DriverConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self {
            slow_threads: cores,
            slow_queue: 64,
            slow_per_principal: 16,
            max_timer_sleep: Duration::from_secs(1),
            max_sessions_per_connection: 8,
            unmatched_delay: Duration::from_millis(50),
            connections: ConnectionLimits::default(),
        }
    }
}

enum Backend {
    Core(Arc<Server>),
    Service(Arc<dyn Service>),
}

struct Inner {
    backend: Backend,
    clock: Clock,
    pool: pool::SlowPool,
    max_sessions_per_connection: usize,
    unmatched_delay: Duration,
    connection_limits: ConnectionLimits,
    timer: std::sync::OnceLock<tokio::task::AbortHandle>,
    /// Live connections' principals and their revocation signals, by connection number.
    live: std::sync::Mutex<connection::Live>,
    /// The core's revocation count when the live connections were last checked.
    revocations_seen: std::sync::atomic::AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.get() {
            timer.abort();
        }
    }
}

/// The driver: share it (it is a cheap handle) between the transports that serve one core.
#[derive(Clone)]
pub struct Driver {
    inner: Arc<Inner>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").field("serves_core", &self.core().is_some()).finish_non_exhaustive()
    }
}

/// Why a driver could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The OS gave no randomness for the core's seed.
    #[error("no OS randomness: {0}")]
    Random(String),
}

impl Driver {
    /// Builds the core over `store` with a seed from the OS, and drives it. Call within a tokio
    /// runtime (the expiry timer is a task).
    pub fn start(server: ServerConfig, store: Box<dyn Store>, config: DriverConfig) -> Result<Self, StartError> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *seed).map_err(|e| StartError::Random(e.to_string()))?;
        Ok(Self::new(Arc::new(Server::new(server, store, *seed)), system_clock(), config))
    }

    /// Drives a core built by the caller, on `clock`. Call within a tokio runtime.
    pub fn new(core: Arc<Server>, clock: Clock, config: DriverConfig) -> Self {
        let driver = Self::build(Backend::Core(core), clock, &config, true);
        let timer = tokio::spawn(expiry_timer(Arc::downgrade(&driver.inner), config.max_timer_sleep));
        let _ = driver.inner.timer.set(timer.abort_handle());
        driver
    }

    /// A driver whose connections are answered by `service` instead of a core.
    pub fn service(service: Arc<dyn Service>, config: DriverConfig) -> Self {
        Self::build(Backend::Service(service), system_clock(), &config, false)
    }

    fn build(backend: Backend, clock: Clock, config: &DriverConfig, pool: bool) -> Self {
        let threads = if pool { config.slow_threads } else { 0 };
        // Owner-role calls keep a share of the pool: the role is the core's, read at admission.
        let is_owner: pool::IsOwner = match &backend {
            Backend::Core(core) => {
                let core = Arc::downgrade(core);
                Box::new(move |principal| {
                    core.upgrade().is_some_and(|core| core.role_of(principal) == Some(keyward_core::Role::Owner))
                })
            }
            Backend::Service(_) => Box::new(|_| false),
        };
        let pool = pool::SlowPool::new(threads, config.slow_queue, config.slow_per_principal, is_owner);
        let (max_sessions_per_connection, unmatched_delay) =
            (config.max_sessions_per_connection, config.unmatched_delay);
        let timer = std::sync::OnceLock::new();
        let live = std::sync::Mutex::new(connection::Live::default());
        Self {
            inner: Arc::new(Inner {
                backend,
                clock,
                pool,
                max_sessions_per_connection,
                unmatched_delay,
                connection_limits: config.connections,
                timer,
                live,
                revocations_seen: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// The core, unless a [`Service`] answers instead.
    pub fn core(&self) -> Option<&Arc<Server>> {
        match &self.inner.backend {
            Backend::Core(core) => Some(core),
            Backend::Service(_) => None,
        }
    }

    /// The host clock.
    pub fn now_ms(&self) -> u64 {
        (self.inner.clock)()
    }

    /// Slow calls admitted and not yet finished (running or waiting).
    pub fn slow_calls_in_flight(&self) -> usize {
        self.inner.pool.in_flight()
    }

    /// Admits a new connection: the one place a peer is checked. `Err` when no active client has
    /// its certificate or uid (the refusal is logged and audited here; the transport only closes
    /// the connection). `binding` says what a plaintext `init_secure_api` on it does with the
    /// session it makes. Later revocations are the connection's [`Connection::revoked`] and the
    /// core's check of every request.
    ///
    /// Its principal may hold at most [`ConnectionLimits::per_principal`] connections; one more is
    /// refused (logged and audited) too. A connection accepted by [`serve`] is admitted with
    /// [`Seat::admit`] instead, which also takes one of its listener's slots.
    pub fn connection(&self, peer: Peer, binding: SessionBinding) -> Result<Connection, Refused> {
        Connection::new(self.clone(), peer, binding, None)
    }

    /// The bounds [`Driver::connection`] and [`Seat::admit`] hold.
    pub fn connection_limits(&self) -> ConnectionLimits {
        self.inner.connection_limits
    }

    /// Tells every live connection whose client certificate chain `verifies` refuses to close
    /// (each transport closes its own at once, as for a revoked client); returns how many. A
    /// host calls it when the trust changes: after a CA rotation, with the new CA's verifier, so
    /// that connections made with certificates of the retired CA end, whoever's they are.
    pub fn close_unverified(&self, verifies: &dyn Fn(&CertChain) -> bool) -> usize {
        connection::close_unverified(&self.inner, verifies)
    }

    /// Closes every wallet (the vault is wiped) and forgets every session.
    pub fn shutdown(&self) {
        if let Some(core) = self.core() {
            core.shutdown();
        }
    }
}

/// The pool's name for the timer's audit-log writes (not a principal a peer can be).
const AUDIT_WRITER: &str = " audit";

/// Expires sessions and tokens when the core says something is due (at least every `max_sleep`),
/// until the driver is gone.
async fn expiry_timer(driver: Weak<Inner>, max_sleep: Duration) {
    loop {
        let sleep = {
            let Some(inner) = driver.upgrade() else { return };
            let Backend::Core(core) = &inner.backend else { return };
            let now = (inner.clock)();
            core.handle_timeout(now);
            // A revoked client's connections are told to close (each transport closes its own).
            connection::close_revoked(&inner, core);
            if core.audit_pending() > 0
                && let Some(admission) = inner.pool.admit(AUDIT_WRITER)
            {
                // Queued audit events go to the store on a pool thread (a write may fsync).
                let core = Arc::clone(core);
                inner.pool.spawn(admission, move || core.flush_audit());
            }
            core.poll_timeout().map_or(max_sleep, |due| Duration::from_millis(due.saturating_sub(now)))
        };
        tokio::time::sleep(sleep.clamp(Duration::from_millis(10), max_sleep)).await;
    }
}
