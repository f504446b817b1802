//! A connection's handle: its peer, the session bound to it, and the one call a transport makes
//! per message, [`Connection::answer`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use keyward_core::{EnvelopeError, error_bytes};
use keyward_core::{Incoming, Principal, Role, Server, SessionId, Step};
use tokio::sync::watch;

use crate::admission::{Refusal, Slots};
use crate::{Backend, Driver};

/// The certificate chain a client presented and the TLS layer verified (DER, end entity first);
/// empty when it presented none. The driver keeps it to check the connection again when the trust
/// changes ([`Driver::close_unverified`](crate::Driver)).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CertChain(pub std::sync::Arc<[Vec<u8>]>);

impl CertChain {
    /// The chain of these certificates (DER), end entity first.
    pub fn new(certificates: impl IntoIterator<Item = Vec<u8>>) -> Self {
        Self(certificates.into_iter().collect())
    }

    /// The end entity's certificate, then the intermediates.
    pub fn split(&self) -> Option<(&Vec<u8>, &[Vec<u8>])> {
        self.0.split_first()
    }
}

impl fmt::Debug for CertChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertChain({} certificates)", self.0.len())
    }
}

/// Who is at the other end of a connection, as the transport knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A network peer (TCP, QUIC), with its address and, when it presented a client certificate
    /// that the TLS layer verified, that certificate's key ([`spki_sha256`](crate::spki_sha256)).
    Net {
        /// The peer's address.
        addr: std::net::SocketAddr,
        /// SHA-256 of the verified client certificate's SubjectPublicKeyInfo; `None` over plain
        /// (loopback) HTTP.
        client_key: Option<[u8; 32]>,
        /// The verified chain (empty over plain HTTP).
        client_chain: CertChain,
    },
    /// A Unix-socket peer, with its credentials as the kernel reports them (`SO_PEERCRED`).
    Unix {
        /// The peer's user id.
        uid: u32,
        /// The peer's group id.
        gid: u32,
        /// The peer's process id, when known.
        pid: Option<i32>,
    },
    /// An in-process or otherwise unnamed peer (an embedder's own transport, a test).
    Local,
}

impl Peer {
    /// The principal this peer is, as `core` knows it now: the registered client of its
    /// certificate or uid, `local-http` for plain HTTP, `local` for an in-process peer; `None` for
    /// a certificate or uid that no active client has.
    pub fn principal(&self, core: &Server) -> Option<Principal> {
        match self {
            Self::Net { client_key: Some(key), .. } => core.client_for_cert(key).map(|name| Principal::new(&name)),
            Self::Net { client_key: None, .. } => Some(Principal::new(Principal::LOCAL_HTTP)),
            Self::Unix { uid, .. } => core.client_for_uid(*uid).map(|name| Principal::new(&name)),
            Self::Local => Some(Principal::local()),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Net { addr, .. } => write!(f, "{addr}"),
            Self::Unix { uid, pid: Some(pid), .. } => write!(f, "uid {uid} pid {pid}"),
            Self::Unix { uid, .. } => write!(f, "uid {uid}"),
            Self::Local => f.write_str("local"),
        }
    }
}

/// What a plaintext `init_secure_api` on a connection does with the session it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionBinding {
    /// The session is bound to the connection: every later message uses it, and it ends when the
    /// connection goes (QUIC, Unix socket, native messaging).
    Bound,
    /// Requests name their session (HTTP's `Keyward-Session` header); the connection keeps at most
    /// [`crate::DriverConfig::max_sessions_per_connection`] of the sessions it made.
    Named,
}

/// A peer the driver would not admit: no active client has its certificate or uid (never
/// registered, or revoked), or its principal or its listener has no connection left for it
/// ([`crate::ConnectionLimits`]). The refusal was logged and audited; the transport closes the
/// connection, with [`Refused::message`] where its protocol carries a reason (QUIC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The refused peer.
    pub peer: Peer,
    /// Why.
    pub reason: Refusal,
}

impl Refused {
    /// The refusal's text: for an unknown or revoked client the core's, the same a revoked
    /// client's request is answered with; else what bound it met.
    pub fn message(&self) -> String {
        match self.reason {
            Refusal::Unknown => keyward_core::MethodError::Revoked.wire().1,
            other => other.outcome().to_owned(),
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused {}: {}", self.peer, self.message())
    }
}

impl std::error::Error for Refused {}

/// How a request names its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// The request names no session: the connection's own (if bound), else the core matches by key.
    Unnamed,
    /// The request names this session (HTTP's `Keyward-Session` header).
    Session(SessionId),
    /// The request carried a session name that is not a session id.
    Malformed,
}

/// The answer to one message.
#[derive(Debug)]
pub struct Answer {
    /// The bytes to send back, as they are.
    pub body: Vec<u8>,
    /// The session a plaintext `init_secure_api` created (HTTP tells the client its id).
    pub new_session: Option<SessionId>,
}

#[derive(Default)]
struct Slot {
    /// The session bound to the connection (QUIC, Unix).
    bound: Option<SessionId>,
    /// The session the connection's last request used: tried first for a request naming none.
    recent: Option<SessionId>,
    /// Sessions made on a connection that does not bind them (HTTP), oldest first.
    made: VecDeque<SessionId>,
}

/// One connection of a transport. Make it with [`Driver::connection`] when a connection is
/// accepted, call [`Connection::answer`] for each message, and drop it when the connection goes:
/// the session bound to it is dropped then.
pub struct Connection {
    driver: Driver,
    peer: Peer,
    /// Who the peer is.
    principal: Principal,
    /// Its number among the driver's live connections.
    number: u64,
    /// Set when its principal is revoked.
    revoked: watch::Receiver<bool>,
    binds_sessions: bool,
    slot: Mutex<Slot>,
    /// The listener slot it holds (given back on drop); none for a connection made outside
    /// [`crate::serve`].
    seat: Option<std::sync::Arc<Slots>>,
}

/// The driver's live connections: each one's principal and revocation signal.
#[derive(Default)]
pub(crate) struct Live {
    next: u64,
    connections: std::collections::HashMap<u64, LiveConnection>,
}

/// A live connection's principal, its certificate key and chain (if it presented one), and its
/// close signal.
struct LiveConnection {
    principal: Principal,
    key: Option<[u8; 32]>,
    chain: CertChain,
    signal: watch::Sender<bool>,
}

/// Signals every live connection that presented a certificate chain `verifies` no longer
/// accepts to close; returns how many.
pub(crate) fn close_unverified(inner: &crate::Inner, verifies: &dyn Fn(&CertChain) -> bool) -> usize {
    // The chains are checked outside the lock (a chain check is a signature verification).
    let chains: Vec<(u64, CertChain)> = {
        let live = inner.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.connections.iter().filter(|(_, c)| !c.chain.0.is_empty()).map(|(n, c)| (*n, c.chain.clone())).collect()
    };
    let failed: Vec<u64> = chains.into_iter().filter(|(_, chain)| !verifies(chain)).map(|(n, _)| n).collect();
    let live = inner.live.lock().unwrap_or_else(PoisonError::into_inner);
    let mut closed = 0;
    for number in failed {
        if let Some(connection) = live.connections.get(&number)
            && !*connection.signal.borrow()
        {
            tracing::info!(principal = %connection.principal, "closing a connection whose certificate the trust in use no longer verifies");
            connection.signal.send_replace(true);
            closed += 1;
        }
    }
    closed
}

/// Signals every live connection whose principal `core` no longer knows (revoked), or whose
/// certificate key is no longer its principal's (the client moved to a new key), to close.
pub(crate) fn close_revoked(inner: &crate::Inner, core: &Server) {
    let live = inner.live.lock().unwrap_or_else(PoisonError::into_inner);
    for LiveConnection { principal, key, signal, .. } in live.connections.values() {
        let gone = match key {
            Some(key) => core.client_for_cert(key).as_deref() != Some(principal.name()),
            None => core.role_of(principal.name()).is_none(),
        };
        if !*signal.borrow() && gone {
            tracing::info!(%principal, "closing a revoked client's connection");
            signal.send_replace(true);
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("principal", &self.principal)
            .field("binds_sessions", &self.binds_sessions)
            .finish()
    }
}

impl Connection {
    /// Admits `peer`, taking a slot of `seat` (its listener's) if given: the one place a
    /// connection is admitted (see [`Driver::connection`] and [`crate::Seat::admit`]). Refused,
    /// logged and audited: a peer no active client has; a principal that holds
    /// [`crate::ConnectionLimits::per_principal`] connections already; a listener with no slot
    /// left for the principal's role.
    pub(crate) fn new(
        driver: Driver,
        peer: Peer,
        binding: SessionBinding,
        seat: Option<std::sync::Arc<Slots>>,
    ) -> Result<Self, Refused> {
        // A service (an echo, an embedder's own handler) has no principals: every peer is `local`,
        // an owner, and no per-principal bound applies; the listener's slots still do.
        let (principal, owner, per_principal) = match &driver.inner.backend {
            Backend::Core(core) => {
                let principal = peer.principal(core);
                let owner = principal.as_ref().is_some_and(|p| core.role_of(p.name()) == Some(Role::Owner));
                // `local-http` is every loopback plain-HTTP peer together, any local process: a
                // per-principal bound would let 32 of them lock the others out. Only the plain
                // HTTP listener's slots bound it (no other listener serves it).
                let shared = principal.as_ref().is_some_and(|p| p.name() == Principal::LOCAL_HTTP);
                let per_principal = if shared { usize::MAX } else { driver.inner.connection_limits.per_principal };
                (principal, owner, per_principal)
            }
            Backend::Service(_) => (Some(Principal::local()), true, usize::MAX),
        };
        let Some(principal) = principal else {
            tracing::info!(%peer, "refusing a connection: no active client has its certificate or uid");
            return Err(driver.refuse(peer, Refusal::Unknown, None));
        };
        let (key, chain) = match &peer {
            Peer::Net { client_key, client_chain, .. } => (*client_key, client_chain.clone()),
            _ => (None, CertChain::default()),
        };
        let (signal, revoked) = watch::channel(false);
        let admitted = {
            let mut live = driver.inner.live.lock().unwrap_or_else(PoisonError::into_inner);
            // At most the listeners' slots together are live: counting them costs at most that.
            let held = live.connections.values().filter(|c| c.principal == principal).count();
            if held >= per_principal {
                Err(Refusal::PrincipalFull)
            } else if seat.as_ref().is_some_and(|seat| !seat.take(owner)) {
                Err(Refusal::ListenerFull)
            } else {
                live.next += 1;
                let number = live.next;
                live.connections.insert(number, LiveConnection { principal: principal.clone(), key, chain, signal });
                Ok(number)
            }
        };
        let number = match admitted {
            Ok(number) => number,
            Err(reason) => {
                tracing::info!(%peer, %principal, reason = reason.outcome(), "refusing a connection");
                return Err(driver.refuse(peer, reason, Some(&principal)));
            }
        };
        let binds_sessions = binding == SessionBinding::Bound;
        let slot = Mutex::new(Slot::default());
        Ok(Self { driver, peer, principal, number, revoked, binds_sessions, slot, seat })
    }

    /// The peer.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Who the peer is: a registered client, `local-http` or `local`.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Completes when the connection's principal is revoked: the transport
    /// closes the connection then. The driver checks at least once a second.
    pub async fn revoked(&self) {
        let mut revoked = self.revoked.clone();
        let _ = revoked.wait_for(|revoked| *revoked).await;
    }

    /// The session bound to this connection, if any.
    pub fn session(&self) -> Option<SessionId> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner).bound
    }

    /// The largest body a request naming no session may have (`None`: no limit, a service answers).
    /// A transport that learns a body's length before reading it refuses a larger one unread with
    /// [`Connection::refuse_unnamed_body`].
    pub fn max_unnamed_body(&self) -> Option<usize> {
        match &self.driver.inner.backend {
            Backend::Core(core) => Some(core.max_unnamed_body()),
            Backend::Service(_) => None,
        }
    }

    /// The answer to a request naming no session whose body is above [`Connection::max_unnamed_body`]
    /// (after [`crate::DriverConfig::unmatched_delay`], like every answer to a request no session took).
    pub async fn refuse_unnamed_body(&self) -> Answer {
        match &self.driver.inner.backend {
            Backend::Core(core) => {
                tokio::time::sleep(self.driver.inner.unmatched_delay).await;
                Answer { body: core.refuse_unnamed_body().body, new_session: None }
            }
            Backend::Service(_) => Answer { body: Vec::new(), new_session: None },
        }
    }

    /// Answers one message on this connection. On a connection that binds sessions (QUIC, Unix), a
    /// plaintext `init_secure_api` binds the new session to it (dropping the one it replaces) and
    /// every later message uses it.
    pub async fn answer(&self, body: &[u8]) -> Answer {
        self.answer_named(body, Naming::Unnamed).await
    }

    /// Answers one message that may name its session (HTTP).
    pub async fn answer_named(&self, body: &[u8], naming: Naming) -> Answer {
        let core = match &self.driver.inner.backend {
            Backend::Core(core) => core,
            Backend::Service(service) => return Answer { body: service.answer(body), new_session: None },
        };
        let principal = &self.principal;
        let recent = self.slot.lock().unwrap_or_else(PoisonError::into_inner).recent;
        let session = match naming {
            Naming::Session(id) => Some(id),
            Naming::Unnamed => self.session(),
            Naming::Malformed => {
                let (code, message) = EnvelopeError::EncryptionRequired.wire();
                return Answer { body: error_bytes(&(), code, &message), new_session: None };
            }
        };
        let now_ms = self.driver.now_ms();
        // Most calls are answered here at once (microseconds); a KDF or store write goes to the
        // bounded pool, so the I/O threads stay free. A plaintext init, the only call that creates
        // a session, is always answered here, so binding happens before any await.
        let outgoing = match core.handle_step(Incoming { body, session, recent, principal, now_ms }) {
            Step::Done(outgoing) => outgoing,
            Step::Slow(call) => match self.driver.inner.pool.admit(principal.name()) {
                Some(admission) => {
                    let worker = std::sync::Arc::clone(core);
                    match self.driver.inner.pool.run(admission, move || worker.finish(call)).await {
                        Some(outgoing) => outgoing,
                        None => {
                            tracing::error!("a slow call was lost (its thread ended)");
                            let (code, message) = (-32603, "Internal error");
                            return Answer { body: error_bytes(&(), code, message), new_session: None };
                        }
                    }
                }
                None => core.refuse_busy(call),
            },
        };
        if outgoing.unmatched {
            // A stranger's garbage (or an ended session's next call, once) waits: one connection
            // cannot make the server try keys or parse bodies at full speed.
            tokio::time::sleep(self.driver.inner.unmatched_delay).await;
        }
        // A revocation just happened (this call, or another): close the revoked clients'
        // connections now rather than at the timer's next tick.
        let revocations = core.revocations();
        if self.driver.inner.revocations_seen.swap(revocations, std::sync::atomic::Ordering::AcqRel) != revocations {
            close_revoked(&self.driver.inner, core);
        }
        let new_session = outgoing.created_session.then_some(outgoing.session).flatten();
        if let Some(old) = self.record(outgoing.session, new_session) {
            core.drop_session(&old);
        }
        Answer { body: outgoing.body, new_session }
    }

    /// Notes the session a request used, and one it made: a binding connection binds it (and gives
    /// up the one it had); another keeps at most `max_sessions_per_connection` and gives up its
    /// oldest, so one connection's flood of inits ends its own sessions, not other clients'.
    fn record(&self, used: Option<SessionId>, made: Option<SessionId>) -> Option<SessionId> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if used.is_some() {
            slot.recent = used;
        }
        let made = made?;
        if self.binds_sessions {
            return slot.bound.replace(made).filter(|old| *old != made);
        }
        slot.made.push_back(made);
        if slot.made.len() > self.driver.inner.max_sessions_per_connection.max(1) {
            return slot.made.pop_front();
        }
        None
    }
}

impl Driver {
    /// Audits a refusal (by the principal's name when it has one, else by the peer) and makes it.
    fn refuse(&self, peer: Peer, reason: Refusal, principal: Option<&Principal>) -> Refused {
        if let Backend::Core(core) = &self.inner.backend {
            let who = principal.map_or_else(|| peer.to_string(), |p| p.name().to_owned());
            core.audit_refusal(&who, "connect", reason.outcome());
        }
        Refused { peer, reason }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.inner.live.lock().unwrap_or_else(PoisonError::into_inner).connections.remove(&self.number);
        if let Some(seat) = &self.seat {
            seat.give();
        }
        let slot = self.slot.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let (Some(old), Backend::Core(core)) = (slot.bound.take(), &self.driver.inner.backend) {
            core.drop_session(&old);
        }
    }
}
