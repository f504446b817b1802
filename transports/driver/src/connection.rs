//! A connection's handle: its peer, the session bound to it, and the one call a transport makes
//! per message, [`Connection::answer`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use keyward_core::jsonrpc::{self, EnvelopeError};
use keyward_core::{Incoming, SessionId, Step};

use crate::{Backend, Driver};

/// Who is at the other end of a connection, as the transport knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A network peer (TCP, QUIC), with its address; `authenticated` when it presented a client
    /// certificate that the TLS layer verified.
    Net {
        /// The peer's address.
        addr: std::net::SocketAddr,
        /// Whether a verified client certificate was presented.
        authenticated: bool,
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
    binds_sessions: bool,
    slot: Mutex<Slot>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("peer", &self.peer).field("binds_sessions", &self.binds_sessions).finish()
    }
}

impl Connection {
    pub(crate) fn new(driver: Driver, peer: Peer, binds_sessions: bool) -> Self {
        Self { driver, peer, binds_sessions, slot: Mutex::new(Slot::default()) }
    }

    /// The peer.
    pub fn peer(&self) -> &Peer {
        &self.peer
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
        let recent = self.slot.lock().unwrap_or_else(PoisonError::into_inner).recent;
        let session = match naming {
            Naming::Session(id) => Some(id),
            Naming::Unnamed => self.session(),
            Naming::Malformed => {
                let (code, message) = EnvelopeError::EncryptionRequired.wire();
                return Answer { body: jsonrpc::error_bytes(&(), code, &message), new_session: None };
            }
        };
        let now_ms = self.driver.now_ms();
        // Most calls are answered here at once (microseconds); a KDF or store write goes to the
        // bounded pool, so the I/O threads stay free. A plaintext init, the only call that creates
        // a session, is always answered here, so binding happens before any await.
        let outgoing = match core.handle_step(Incoming { body, session, recent, now_ms }) {
            Step::Done(outgoing) => outgoing,
            Step::Slow(call) => match self.driver.inner.pool.admit() {
                Some(admission) => {
                    let worker = std::sync::Arc::clone(core);
                    match self.driver.inner.pool.run(admission, move || worker.finish(call)).await {
                        Some(outgoing) => outgoing,
                        None => {
                            tracing::error!("a slow call was lost (its thread ended)");
                            let (code, message) = (-32603, "Internal error");
                            return Answer { body: jsonrpc::error_bytes(&(), code, message), new_session: None };
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

impl Drop for Connection {
    fn drop(&mut self) {
        let slot = self.slot.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let (Some(old), Backend::Core(core)) = (slot.bound.take(), &self.driver.inner.backend) {
            core.drop_session(&old);
        }
    }
}
