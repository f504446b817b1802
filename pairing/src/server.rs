//! The server's side: [`PairingService`] keeps the live codes and, only while one is live, a
//! listener on a loopback address where front ends pair.
//!
//! Limits (each one's worst case is in spec/pairing.md):
//! * [`MAX_LIVE_CODES`] live codes; a new code for a name that has one replaces it;
//! * a code lives its TTL ([`MIN_TTL`] to [`MAX_TTL`]), is used once, and dies after
//!   [`MAX_ATTEMPTS`] exchanges that did not confirm (an attempt is counted when the server sends
//!   its SPAKE2 message, so a client that leaves without confirming has used one);
//! * [`MAX_CONNECTIONS`] connections at once, each done within [`EXCHANGE_TIMEOUT`], messages up
//!   to [`crate::protocol::MAX_MESSAGE`] bytes. When all are taken, a new connection takes the
//!   place of the oldest one that has sent nothing yet (a silent socket holds no attempt, so
//!   nothing is lost); only when every one has spoken is the new one closed at once. So silent
//!   sockets delay a front end's pairing by nothing, and the client retries a closed connection
//!   for a few seconds ([`crate::client::CONNECT_RETRY`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keyward_driver::frame::{self, FrameLimits};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::bundle::Endpoints;
use crate::code::PairingCode;
use crate::protocol::{self, Finish, Granted, Hello, MAX_MESSAGE, Outcome, ProtocolError, Refusal, ServerExchange};

/// Exchanges that fail to confirm before a code is voided.
pub const MAX_ATTEMPTS: u32 = 3;
/// Codes live at once.
pub const MAX_LIVE_CODES: usize = 16;
/// Pairing connections at once.
pub const MAX_CONNECTIONS: usize = 8;
/// How long one pairing connection may take, start to end.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest life of a code.
pub const MIN_TTL: Duration = Duration::from_secs(10);
/// The longest life of a code.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// A code's life when none is asked for.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// What the server does for the pairing service: register a paired client, say where the server
/// listens, record pairing in the audit log, and read the wall clock.
pub trait Registrar: Send + Sync + 'static {
    /// Issues a certificate for `public_key_pem` and registers client `name` with `role`; may block
    /// (it writes the store). An error goes to the paired client: no paths in it.
    fn register(&self, name: &str, role: &str, public_key_pem: &str) -> Result<Issued, String>;
    /// The server's addresses, for the client's bundle.
    fn endpoints(&self) -> Endpoints;
    /// Records a pairing event for client `name`: `ok`, `wrong code`, `voided`, `expired`, ...
    fn audit(&self, name: &str, outcome: &str);
    /// Unix time in milliseconds.
    fn unix_time_ms(&self) -> u64;
}

/// A certificate the [`Registrar`] issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The client's certificate (PEM).
    pub certificate_pem: String,
    /// The CA's certificate (PEM).
    pub ca_certificate_pem: String,
}

/// A live code as the owner gets it.
#[derive(Debug)]
pub struct Ticket {
    /// The code to hand to the front end.
    pub code: PairingCode,
    /// When it expires (Unix milliseconds).
    pub expires_unix_ms: u64,
    /// Where the front end pairs: `tcp://IP:PORT`.
    pub pair_url: String,
}

/// Why a code could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// The TTL is outside [`MIN_TTL`]..=[`MAX_TTL`].
    #[error("a pairing code lives 10 to 3600 seconds")]
    Ttl,
    /// [`MAX_LIVE_CODES`] are live.
    #[error("16 pairing codes are live already: use or let one expire first")]
    TooMany,
    /// The listener could not be opened.
    #[error("cannot listen for pairing on {addr}: {error}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// No randomness.
    #[error("no OS randomness for a code")]
    Random,
}

struct Live {
    code: PairingCode,
    name: String,
    role: String,
    expires: Instant,
    attempts_left: u32,
}

#[derive(Default)]
struct Codes {
    live: HashMap<String, Live>,
    /// The listener's address while it runs.
    listening: Option<SocketAddr>,
}

struct Inner {
    bind: SocketAddr,
    registrar: Arc<dyn Registrar>,
    runtime: tokio::runtime::Handle,
    codes: Mutex<Codes>,
    stop: watch::Receiver<bool>,
    connections: Mutex<Connections>,
    /// Wakes the accept loop when a code is used or voided (the last one closes the listener).
    changed: tokio::sync::Notify,
}

/// The pairing connections being served.
#[derive(Default)]
struct Connections {
    next: u64,
    /// By number (so in the order they came): whether it has spoken, and how to end it.
    open: std::collections::BTreeMap<u64, (Arc<std::sync::atomic::AtomicBool>, Option<tokio::task::AbortHandle>)>,
}

impl Connections {
    /// Makes room for a new connection: `false` when every place is taken by one that spoke.
    fn make_room(&mut self) -> bool {
        use std::sync::atomic::Ordering;
        if self.open.len() < MAX_CONNECTIONS {
            return true;
        }
        let silent = self.open.iter().find(|(_, (spoke, _))| !spoke.load(Ordering::Acquire)).map(|(n, _)| *n);
        let Some(number) = silent else { return false };
        if let Some((_, Some(task))) = self.open.remove(&number) {
            task.abort();
        }
        true
    }
}

/// Removes its connection from the table when the connection's task ends (or is aborted).
struct Place(Arc<Inner>, u64);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.connections.lock().unwrap_or_else(PoisonError::into_inner).open.remove(&self.1);
    }
}

/// The live codes and their listener. Cheap to clone.
#[derive(Clone)]
pub struct PairingService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PairingService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairingService").field("bind", &self.inner.bind).finish_non_exhaustive()
    }
}

impl Inner {
    fn codes(&self) -> std::sync::MutexGuard<'_, Codes> {
        self.codes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes expired codes (recording each) and returns the earliest expiry left.
    fn prune(&self, codes: &mut Codes) -> Option<Instant> {
        let now = Instant::now();
        codes.live.retain(|_, live| {
            let keep = live.expires > now;
            if !keep {
                self.registrar.audit(&live.name, "expired");
            }
            keep
        });
        codes.live.values().map(|live| live.expires).min()
    }
}

impl PairingService {
    /// A service that will listen on `bind` (a loopback address) while a code is live, on the
    /// runtime of `runtime`, until `stop` turns true.
    pub fn new(
        bind: SocketAddr,
        registrar: Arc<dyn Registrar>,
        runtime: tokio::runtime::Handle,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let inner = Inner {
            bind,
            registrar,
            runtime,
            codes: Mutex::new(Codes::default()),
            stop,
            connections: Mutex::new(Connections::default()),
            changed: tokio::sync::Notify::new(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The listener's address while a code is live.
    pub fn listening(&self) -> Option<SocketAddr> {
        let mut codes = self.inner.codes();
        self.inner.prune(&mut codes);
        codes.listening
    }

    /// How many codes are live.
    pub fn live_codes(&self) -> usize {
        let mut codes = self.inner.codes();
        self.inner.prune(&mut codes);
        codes.live.len()
    }

    /// Makes a code for client `name` with `role`, living `ttl`, and opens the listener if it is
    /// closed. A live code for the same name is replaced. Call it from any thread (it binds a
    /// socket, so not from a latency-sensitive one).
    pub fn offer(&self, name: &str, role: &str, ttl: Duration) -> Result<Ticket, OfferError> {
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(OfferError::Ttl);
        }
        let mut codes = self.inner.codes();
        self.inner.prune(&mut codes);
        if let Some(id) = codes.live.iter().find(|(_, live)| live.name == name).map(|(id, _)| id.clone()) {
            codes.live.remove(&id);
            self.inner.registrar.audit(name, "replaced by a new code");
        }
        if codes.live.len() >= MAX_LIVE_CODES {
            return Err(OfferError::TooMany);
        }
        let code = loop {
            let code = PairingCode::generate().map_err(|_| OfferError::Random)?;
            if !codes.live.contains_key(code.id()) {
                break code;
            }
        };
        let addr = match codes.listening {
            Some(addr) => addr,
            None => {
                let listener = self.listen().map_err(|error| OfferError::Listen { addr: self.inner.bind, error })?;
                let addr =
                    listener.local_addr().map_err(|error| OfferError::Listen { addr: self.inner.bind, error })?;
                codes.listening = Some(addr);
                self.inner.runtime.spawn(accept_loop(Arc::clone(&self.inner), listener));
                tracing::info!(%addr, "listening for pairing while a code is live");
                addr
            }
        };
        let expires = Instant::now() + ttl;
        let expires_unix_ms =
            self.inner.registrar.unix_time_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let live =
            Live { code: code.clone(), name: name.into(), role: role.into(), expires, attempts_left: MAX_ATTEMPTS };
        codes.live.insert(code.id().to_owned(), live);
        // The earliest expiry may have changed (a replaced code): the loop sleeps until the new one.
        self.inner.changed.notify_one();
        Ok(Ticket { code, expires_unix_ms, pair_url: format!("tcp://{addr}") })
    }

    /// A listening socket on the configured address (SO_REUSEADDR: the port of a listener closed
    /// a moment ago may still have connections in TIME_WAIT).
    fn listen(&self) -> std::io::Result<TcpListener> {
        let _entered = self.inner.runtime.enter();
        let socket = match self.inner.bind {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(self.inner.bind)?;
        socket.listen(64)
    }
}

/// Accepts pairing connections until no code is live (then the listener closes) or the server stops.
async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let mut stop = inner.stop.clone();
    loop {
        let next_expiry = {
            let mut codes = inner.codes();
            let next = inner.prune(&mut codes);
            if next.is_none() || *stop.borrow() {
                codes.listening = None;
                codes.live.clear();
                drop(listener);
                tracing::info!("no pairing code is live: the pairing listener is closed");
                return;
            }
            next.unwrap_or_else(Instant::now)
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors, say: the connection stays in the backlog, so do not spin.
                        tracing::warn!(%error, "cannot accept a pairing connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let mut connections = inner.connections.lock().unwrap_or_else(PoisonError::into_inner);
                if !connections.make_room() {
                    tracing::warn!(%peer, "too many pairing connections under way: closed the new one");
                    continue;
                }
                connections.next += 1;
                let (number, spoke) = (connections.next, Arc::new(std::sync::atomic::AtomicBool::new(false)));
                connections.open.insert(number, (Arc::clone(&spoke), None));
                let task = {
                    let inner = Arc::clone(&inner);
                    tokio::spawn(async move {
                        let _place = Place(Arc::clone(&inner), number);
                        exchange(&inner, stream, &spoke).await;
                    })
                };
                if let Some(entry) = connections.open.get_mut(&number) {
                    entry.1 = Some(task.abort_handle());
                }
            }
            () = tokio::time::sleep_until(next_expiry) => {}
            () = inner.changed.notified() => {}
            _ = stop.changed() => {}
        }
    }
}

fn limits() -> FrameLimits {
    FrameLimits { max_bytes: MAX_MESSAGE, idle: EXCHANGE_TIMEOUT, io: EXCHANGE_TIMEOUT }
}

async fn refuse(stream: &mut TcpStream, why: &str) {
    let _ = frame::write_frame(stream, &protocol::to_bytes(&Refusal { error: why.into() })).await;
}

/// One exchange's attempt at a live code. Dropped before the exchange confirmed (a wrong code, a
/// peer that left or stalled past the deadline), it counts as failed: the code dies once its
/// attempts are spent, and the audit log says so.
struct Attempt {
    inner: Arc<Inner>,
    id: String,
    code: PairingCode,
    name: String,
    role: String,
    confirmed: bool,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.confirmed {
            failed(&self.inner, self);
        }
    }
}

/// Takes one attempt of the code `id`: `Err` with the refusal when there is no such live code.
fn take_attempt(inner: &Arc<Inner>, id: &str) -> Result<Attempt, &'static str> {
    let mut codes = inner.codes();
    inner.prune(&mut codes);
    let live = codes.live.get_mut(id).ok_or("no live pairing code has this id: it expired, was used or was voided")?;
    if live.attempts_left == 0 {
        return Err("this code was voided after 3 wrong attempts");
    }
    live.attempts_left -= 1;
    Ok(Attempt {
        inner: Arc::clone(inner),
        id: id.into(),
        code: live.code.clone(),
        name: live.name.clone(),
        role: live.role.clone(),
        confirmed: false,
    })
}

/// An exchange of `attempt` did not confirm: the code dies once its attempts are spent.
fn failed(inner: &Inner, attempt: &Attempt) {
    let mut codes = inner.codes();
    let Some(live) = codes.live.get(&attempt.id).filter(|live| live.code == attempt.code) else { return };
    if live.attempts_left == 0 {
        codes.live.remove(&attempt.id);
        inner.changed.notify_one();
        inner.registrar.audit(&attempt.name, "voided after 3 wrong codes");
    } else {
        inner.registrar.audit(&attempt.name, "wrong code");
    }
}

/// Uses the code up: `false` if it is gone meanwhile (expired, replaced or used by another exchange).
fn consume(inner: &Inner, attempt: &Attempt) -> bool {
    let mut codes = inner.codes();
    inner.prune(&mut codes);
    match codes.live.get(&attempt.id) {
        Some(live) if live.code == attempt.code => {
            codes.live.remove(&attempt.id);
            inner.changed.notify_one();
            true
        }
        _ => false,
    }
}

async fn read(stream: &mut TcpStream) -> Option<Vec<u8>> {
    frame::read_frame(stream, limits()).await.ok().flatten()
}

/// One pairing connection. Until the client confirms, the exchange has [`EXCHANGE_TIMEOUT`] in
/// all (a peer that stalls spends its attempt); registration is not cut short by it (it writes the
/// store, and its outcome is recorded either way); the last answer has a few seconds to go out.
async fn exchange(inner: &Arc<Inner>, mut stream: TcpStream, spoke: &std::sync::atomic::AtomicBool) {
    let confirmed = tokio::time::timeout(EXCHANGE_TIMEOUT, confirm(inner, &mut stream, spoke)).await;
    let Ok(Some((mut attempt, server, request))) = confirmed else { return };
    attempt.confirmed = true;
    let outcome = if request.name.as_deref().is_some_and(|name| name != attempt.name) {
        // The code was right: it is used up, as for any other outcome.
        consume(inner, &attempt);
        inner.registrar.audit(&attempt.name, "not registered: the client expected another name");
        Outcome::Error(format!(
            "this code is for client '{}', not '{}'",
            attempt.name,
            request.name.unwrap_or_default()
        ))
    } else if !consume(inner, &attempt) {
        Outcome::Error("the code expired or was used meanwhile".into())
    } else {
        let registrar = Arc::clone(&inner.registrar);
        let (name, role, key) = (attempt.name.clone(), attempt.role.clone(), request.public_key);
        let issued = tokio::task::spawn_blocking(move || registrar.register(&name, &role, &key)).await;
        match issued {
            Ok(Ok(issued)) => {
                inner.registrar.audit(&attempt.name, "ok");
                tracing::info!(client = %attempt.name, role = %attempt.role, "paired a client");
                Outcome::Ok(Granted {
                    name: attempt.name.clone(),
                    role: attempt.role.clone(),
                    certificate: issued.certificate_pem,
                    ca_certificate: issued.ca_certificate_pem,
                    endpoints: inner.registrar.endpoints(),
                })
            }
            Ok(Err(why)) => {
                inner.registrar.audit(&attempt.name, "not registered");
                Outcome::Error(why)
            }
            Err(_) => {
                inner.registrar.audit(&attempt.name, "not registered: internal error");
                Outcome::Error("internal error".into())
            }
        }
    };
    let done = protocol::to_bytes(&server.done(outcome));
    let _ = tokio::time::timeout(FINAL_WRITE, frame::write_frame(&mut stream, &done)).await;
}

/// How long the last answer may take to go out.
const FINAL_WRITE: Duration = Duration::from_secs(5);

/// Hello, Reply, Finish: the attempt, the server's state and the client's request once the client
/// confirmed; `None` (with a refusal sent where there is one to send) otherwise. Dropping the
/// attempt unconfirmed records the failure.
async fn confirm(
    inner: &Arc<Inner>,
    stream: &mut TcpStream,
    spoke: &std::sync::atomic::AtomicBool,
) -> Option<(Attempt, ServerExchange, protocol::Request)> {
    // A silent socket may be ended for a new connection; once a first byte came, this one keeps its
    // place (it may be a front end pairing).
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await.ok()? == 0 {
        return None;
    }
    spoke.store(true, std::sync::atomic::Ordering::Release);
    let bytes = read(stream).await?;
    let hello: Hello = match protocol::parse(&bytes) {
        Ok(hello) => hello,
        Err(error) => {
            refuse(stream, &error.to_string()).await;
            return None;
        }
    };
    let attempt = match take_attempt(inner, &hello.id) {
        Ok(attempt) => attempt,
        Err(why) => {
            refuse(stream, why).await;
            return None;
        }
    };
    let (server, reply) = match ServerExchange::new(&attempt.code, &hello) {
        Ok(started) => started,
        Err(error) => {
            drop(attempt);
            refuse(stream, &error.to_string()).await;
            return None;
        }
    };
    frame::write_frame(stream, &protocol::to_bytes(&reply)).await.ok()?;
    let finish: Option<Finish> = read(stream).await.and_then(|bytes| protocol::parse(&bytes).ok());
    match finish.map(|finish| server.request(&finish)) {
        Some(Ok(request)) => Some((attempt, server, request)),
        _ => {
            drop(attempt);
            refuse(stream, &ProtocolError::WrongCode.to_string()).await;
            None
        }
    }
}
