//! The QUIC server: accepts connections, serves one JSON-RPC message per bidirectional stream, binds
//! sessions to connections.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keyward_core::{Incoming, SessionId, Step};
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use quinn::{ReadError, ReadToEndError, RecvStream, SendStream, VarInt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, error, info, warn};

use crate::{ALPN, QuicError, QuicLimits, codes};

/// The host's clock, in milliseconds on any monotonic scale (handed to the core as `now_ms`).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How often the server expires idle sessions and tokens in the core.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How long `run` waits for closed connections to drain before returning.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A bound QUIC endpoint serving a [`keyward_core::Server`]. Start it with [`QuicServer::run`].
pub struct QuicServer {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
}

/// What every connection and stream task shares.
struct Shared {
    backend: Backend,
    limits: QuicLimits,
}

/// What answers a request once the stream has been read whole.
enum Backend {
    /// The owner API: the core answers.
    Core {
        /// The core.
        core: Arc<keyward_core::Server>,
        /// The host's clock.
        clock: Clock,
    },
    /// A measuring floor for `keyward bench`: each request is answered with its own bytes. Endpoint,
    /// TLS, limits, connection and stream handling are the same code as the owner API's.
    Echo,
}

impl Backend {
    fn core(&self) -> Option<&Arc<keyward_core::Server>> {
        match self {
            Self::Core { core, .. } => Some(core),
            Self::Echo => None,
        }
    }
}

impl fmt::Debug for QuicServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicServer")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

impl QuicServer {
    /// Binds a UDP socket at `addr` and prepares to serve `core`.
    ///
    /// `tls` must already require client certificates chaining to Keyward's CA (for example a
    /// `WebPkiClientVerifier`, which also checks the `clientAuth` extended key usage). A clone of it is
    /// used with ALPN set to exactly `keyward/1`, 0-RTT off (`max_early_data_size = 0`) and session
    /// resumption off (no tickets, no session cache), so every connection presents and verifies its
    /// client certificate. Connections that still arrive without a certificate are closed with
    /// [`codes::CLIENT_CERT_REQUIRED`].
    ///
    /// Must be called within a Tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        core: Arc<keyward_core::Server>,
        clock: Arc<dyn Fn() -> u64 + Send + Sync>,
        limits: QuicLimits,
    ) -> Result<QuicServer, QuicError> {
        Self::bind_with(addr, tls, Backend::Core { core, clock }, limits)
    }

    /// Binds an echo endpoint: the same endpoint, TLS, limits, connection and stream handling as
    /// [`QuicServer::bind`], but each request is answered with its own bytes instead of by a core. It
    /// is the floor `keyward bench` holds the owner API against; never serve it to clients.
    pub fn bind_echo(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        limits: QuicLimits,
    ) -> Result<QuicServer, QuicError> {
        Self::bind_with(addr, tls, Backend::Echo, limits)
    }

    fn bind_with(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        backend: Backend,
        limits: QuicLimits,
    ) -> Result<QuicServer, QuicError> {
        limits.validate()?;
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.max_early_data_size = 0;
        tls.send_tls13_tickets = 0;
        tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Tls(e.to_string()))?;

        let idle = quinn::IdleTimeout::try_from(limits.idle_timeout)
            .map_err(|_| QuicError::Config("idle_timeout must be below 2^62 ms"))?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(limits.max_streams_per_connection))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .max_idle_timeout(Some(idle))
            .datagram_receive_buffer_size(None);
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport));

        let endpoint = quinn::Endpoint::server(config, addr)?;
        Ok(QuicServer { endpoint, shared: Arc::new(Shared { backend, limits }) })
    }

    /// The address the endpoint is bound to (with the port picked by the OS for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, QuicError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Serves until `shutdown` completes, then stops accepting connections, lets streams already being
    /// served finish (up to [`QuicLimits::shutdown_grace`]), closes every connection with
    /// [`codes::NO_ERROR`], drops their sessions and returns.
    ///
    /// Every few seconds it also calls [`keyward_core::Server::handle_timeout`] to expire idle
    /// sessions and tokens.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self { endpoint, shared } = self;
        let permits = Arc::new(Semaphore::new(shared.limits.max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = std::pin::pin!(shutdown);
        info!(addr = ?endpoint.local_addr().ok(), "QUIC transport serving");

        loop {
            tokio::select! {
                () = &mut shutdown => break,
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    match Arc::clone(&permits).try_acquire_owned() {
                        Ok(permit) => {
                            let task = serve_connection(incoming, permit, Arc::clone(&shared), stop_rx.clone());
                            connections.spawn(task);
                        }
                        Err(_) => {
                            debug!(peer = %incoming.remote_address(), "refusing a connection: at max_connections");
                            incoming.refuse();
                        }
                    }
                }
                _ = sweep.tick() => {
                    if let Backend::Core { core, clock } = &shared.backend {
                        core.handle_timeout(clock());
                    }
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }

        info!(connections = connections.len(), "QUIC transport shutting down");
        endpoint.set_server_config(None);
        let _ = stop_tx.send(true);
        let grace = shared.limits.shutdown_grace + DRAIN_TIMEOUT;
        let all_closed = async { while connections.join_next().await.is_some() {} };
        if timeout(grace, all_closed).await.is_err() {
            warn!("connections did not close in time; aborting them");
            connections.shutdown().await;
        }
        endpoint.close(VarInt::from_u32(0), b"server shutting down");
        let _ = timeout(DRAIN_TIMEOUT, endpoint.wait_idle()).await;
        info!("QUIC transport stopped");
    }
}

/// The session a connection owns, and whether the connection is gone.
#[derive(Default)]
struct SessionSlot {
    current: Option<SessionId>,
    closed: bool,
}

/// Per-connection state shared by its stream tasks.
struct ConnState {
    /// The core whose sessions this connection binds (none for the echo backend).
    core: Option<Arc<keyward_core::Server>>,
    slot: Mutex<SessionSlot>,
}

impl ConnState {
    fn session(&self) -> Option<SessionId> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner).current
    }

    /// Binds a session a plaintext `init_secure_api` created on this connection, dropping the one it
    /// replaces; if the connection is already gone, drops the new one.
    fn bind(&self, new: SessionId) {
        let dropped = {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.closed { Some(new) } else { slot.current.replace(new).filter(|old| *old != new) }
        };
        if let (Some(old), Some(core)) = (dropped, &self.core) {
            core.drop_session(&old);
        }
    }

    /// Marks the connection gone and drops its session.
    fn close(&self) {
        let dropped = {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            slot.closed = true;
            slot.current.take()
        };
        if let (Some(old), Some(core)) = (dropped, &self.core) {
            core.drop_session(&old);
        }
    }
}

/// Drops the connection's session however the connection task ends (returns, or is aborted).
struct CloseGuard(Arc<ConnState>);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Completes once the server is stopping (or the server task went away).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn serve_connection(
    incoming: quinn::Incoming,
    _permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let peer = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            debug!(%peer, error = %e, "connection not accepted");
            return;
        }
    };
    let connection = tokio::select! {
        result = timeout(shared.limits.handshake_timeout, connecting) => match result {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "handshake failed");
                return;
            }
            Err(_) => {
                debug!(%peer, "handshake not complete within the handshake timeout");
                return;
            }
        },
        () = stopping(&mut stop) => return,
    };

    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<HandshakeData>().ok())
        .and_then(|data| data.protocol);
    if alpn.as_deref() != Some(ALPN) {
        debug!(%peer, "closing a connection without ALPN keyward/1");
        connection.close(code(codes::PROTOCOL_MISMATCH), b"ALPN keyward/1 required");
        return;
    }
    if connection.peer_identity().is_none() {
        warn!(%peer, "closing a connection without a client certificate (is the TLS config requiring one?)");
        connection.close(code(codes::CLIENT_CERT_REQUIRED), b"client certificate required");
        return;
    }
    debug!(%peer, id = connection.stable_id(), "connection established");

    let state = Arc::new(ConnState { core: shared.backend.core().cloned(), slot: Mutex::new(SessionSlot::default()) });
    let _guard = CloseGuard(Arc::clone(&state));
    let mut streams = JoinSet::new();
    let stopping_now = loop {
        tokio::select! {
            () = stopping(&mut stop) => break true,
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    streams.spawn(serve_stream(send, recv, Arc::clone(&shared), Arc::clone(&state)));
                }
                Err(e) => {
                    debug!(%peer, reason = %e, "connection closed");
                    break false;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    };
    if stopping_now {
        let in_flight = async { while streams.join_next().await.is_some() {} };
        let _ = timeout(shared.limits.shutdown_grace, in_flight).await;
        connection.close(code(codes::NO_ERROR), b"server shutting down");
    }
}

/// One request on one stream: read it whole (bounded in size and time), answer it, finish.
async fn serve_stream(mut send: SendStream, mut recv: RecvStream, shared: Arc<Shared>, state: Arc<ConnState>) {
    let limits = shared.limits;
    let request = match timeout(limits.read_timeout, recv.read_to_end(limits.max_message_size)).await {
        Ok(Ok(request)) => request,
        Ok(Err(ReadToEndError::TooLong)) => {
            debug!(stream = %send.id(), limit = limits.max_message_size, "request too large");
            return refuse(&mut send, &mut recv, codes::MESSAGE_TOO_LARGE);
        }
        Ok(Err(ReadToEndError::Read(ReadError::ConnectionLost(_)))) => return,
        Ok(Err(ReadToEndError::Read(e))) => {
            debug!(stream = %send.id(), error = %e, "request incomplete");
            return refuse(&mut send, &mut recv, codes::REQUEST_INCOMPLETE);
        }
        Err(_) => {
            debug!(stream = %send.id(), "request not complete within the read timeout");
            return refuse(&mut send, &mut recv, codes::REQUEST_INCOMPLETE);
        }
    };

    // Most calls are answered at once; one that may run a KDF (~0.1 s) is finished on the blocking
    // pool, so the I/O threads stay free. Plaintext init (the only call that binds a session) is
    // always answered at once, so the binding happens here, before any await.
    let answered = match &shared.backend {
        Backend::Echo => Ok(request),
        Backend::Core { core, clock } => {
            let session = state.session();
            let now_ms = clock();
            match core.handle_step(Incoming { body: &request, session, now_ms }) {
                Step::Done(outgoing) => {
                    if let (true, Some(new)) = (outgoing.created_session, outgoing.session) {
                        state.bind(new);
                    }
                    Ok(outgoing.body)
                }
                Step::Slow(call) => {
                    let core = Arc::clone(core);
                    tokio::task::spawn_blocking(move || core.finish(call).body).await
                }
            }
        }
    };
    let answer = match answered {
        Ok(answer) => answer,
        Err(e) => {
            error!(stream = %send.id(), error = %e, "the core failed to answer");
            return refuse(&mut send, &mut recv, codes::INTERNAL_ERROR);
        }
    };

    match timeout(limits.write_timeout, send.write_all(&answer)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            debug!(stream = %send.id(), error = %e, "answer not delivered");
            return;
        }
        Err(_) => {
            debug!(stream = %send.id(), "answer not taken within the write timeout");
            let _ = send.reset(code(codes::ANSWER_TIMEOUT));
            return;
        }
    }
    let _ = send.finish();
    // Wait until the client acknowledged the answer, so a graceful shutdown does not cut it off.
    let _ = timeout(limits.write_timeout, send.stopped()).await;
}

/// Refuses a stream: stops reading the request and resets the answer, both with `error`.
fn refuse(send: &mut SendStream, recv: &mut RecvStream, error: u64) {
    let _ = recv.stop(code(error));
    let _ = send.reset(code(error));
}

fn code(value: u64) -> VarInt {
    VarInt::from_u64(value).unwrap_or(VarInt::MAX)
}
