//! The QUIC server: accepts connections, serves one JSON-RPC message per bidirectional stream, binds
//! sessions to connections.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keyward_driver::{
    CertChain, Connection, Driver, Listener, Peer, Progress, Refusal, Seat, ServeLimits, SessionBinding,
};
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use quinn::{ReadError, RecvStream, SendStream, VarInt};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::{ALPN, QuicError, QuicLimits, codes};

/// How long `run` waits for closed connections to drain before returning.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A bound QUIC endpoint serving a [`keyward_core::Server`]. Start it with [`QuicServer::run`].
pub struct QuicServer {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
}

/// What every connection and stream task shares.
struct Shared {
    driver: Driver,
    limits: QuicLimits,
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
    /// A driver made with [`Driver::service`] answers with its service instead of a core (the echo
    /// floor `keyward bench` measures against).
    ///
    /// Must be called within a Tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        driver: Driver,
        limits: QuicLimits,
    ) -> Result<QuicServer, QuicError> {
        let config = Self::config(tls, &limits)?;
        let endpoint = quinn::Endpoint::server(config, addr)?;
        Ok(QuicServer { endpoint, shared: Arc::new(Shared { driver, limits }) })
    }

    /// As [`QuicServer::bind`], on a UDP socket the caller bound (so a server can bind every
    /// listener before it makes anything else). Must be called within a Tokio runtime.
    pub fn from_socket(
        socket: std::net::UdpSocket,
        tls: Arc<rustls::ServerConfig>,
        driver: Driver,
        limits: QuicLimits,
    ) -> Result<QuicServer, QuicError> {
        let config = Self::config(tls, &limits)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        Ok(QuicServer { endpoint, shared: Arc::new(Shared { driver, limits }) })
    }

    /// The endpoint's server configuration: `tls` with ALPN `keyward/1`, no 0-RTT, no resumption,
    /// and `limits`' transport parameters.
    fn config(tls: Arc<rustls::ServerConfig>, limits: &QuicLimits) -> Result<quinn::ServerConfig, QuicError> {
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
        let window = VarInt::from_u64(limits.receive_window as u64).unwrap_or(VarInt::MAX);
        let stream_window = VarInt::from_u64(limits.max_message_size as u64).unwrap_or(VarInt::MAX).min(window);
        transport
            .receive_window(window)
            .stream_receive_window(stream_window)
            .max_concurrent_bidi_streams(VarInt::from_u32(limits.max_streams_per_connection))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .max_idle_timeout(Some(idle))
            .datagram_receive_buffer_size(None);
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport));
        Ok(config)
    }

    /// The address the endpoint is bound to (with the port picked by the OS for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, QuicError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Serves until `shutdown` completes, then stops accepting connections, lets streams already being
    /// served finish (up to [`QuicLimits::shutdown_grace`]), closes every connection with
    /// [`codes::NO_ERROR`], drops their sessions and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self { endpoint, shared } = self;
        info!(addr = ?endpoint.local_addr().ok(), "QUIC transport serving");
        let limits = ServeLimits {
            max_connections: shared.limits.max_connections,
            owner_reserve: shared.driver.connection_limits().owner_reserve,
            max_handshakes: shared.limits.max_handshakes,
            handshake_timeout: shared.limits.handshake_timeout,
            grace: shared.limits.shutdown_grace + DRAIN_TIMEOUT,
        };
        let accept = Accept { endpoint: endpoint.clone(), validate: shared.limits.validate_addresses };
        keyward_driver::serve(accept, limits, shutdown, |connection, seat| {
            serve_connection(connection, Arc::clone(&shared), seat)
        })
        .await;
        endpoint.set_server_config(None);
        endpoint.close(VarInt::from_u32(0), b"server shutting down");
        let _ = timeout(DRAIN_TIMEOUT, endpoint.wait_idle()).await;
        info!("QUIC transport stopped");
    }
}

struct Accept {
    endpoint: quinn::Endpoint,
    /// Answer an Initial from an unvalidated address with a stateless Retry.
    validate: bool,
}

impl Listener for Accept {
    type Conn = quinn::Incoming;
    type Ready = quinn::Connection;

    async fn accept(&mut self) -> Option<std::io::Result<quinn::Incoming>> {
        loop {
            let incoming = self.endpoint.accept().await?;
            // A Retry costs no state: a client that cannot receive at its address (a spoofer, a
            // stalled or silent sender) never gets past it and holds nothing.
            if self.validate && !incoming.remote_address_validated() && incoming.may_retry() {
                let _ = incoming.retry();
                continue;
            }
            return Some(Ok(incoming));
        }
    }

    fn handshake(
        &self,
        incoming: quinn::Incoming,
        progress: Progress,
    ) -> impl Future<Output = Option<quinn::Connection>> + Send + 'static {
        handshake(incoming, progress)
    }

    fn refuse(&mut self, incoming: quinn::Incoming) {
        debug!(peer = %incoming.remote_address(), "refusing a connection: at max_connections");
        incoming.refuse();
    }

    fn turn_away(&mut self, connection: quinn::Connection) {
        connection.close(code(codes::SERVER_FULL), b"at max_connections");
    }
}

/// The QUIC and TLS handshake, then the checks only a finished handshake allows (ALPN, a client
/// certificate). The driver runs it before the connection takes a slot, within the handshake timeout.
/// quinn's `handshake_data` is ready once the ClientHello is processed: that step is reported as
/// progress, so a handshake stuck after it (no certificate) is dropped before a moving one.
async fn handshake(incoming: quinn::Incoming, progress: Progress) -> Option<quinn::Connection> {
    let peer = incoming.remote_address();
    let connection = match incoming.accept() {
        Ok(mut connecting) => match connecting.handshake_data().await.map(drop) {
            Ok(()) => {
                progress.made();
                match connecting.await {
                    Ok(connection) => connection,
                    Err(e) => {
                        debug!(%peer, error = %e, "handshake failed");
                        return None;
                    }
                }
            }
            Err(e) => {
                debug!(%peer, error = %e, "handshake failed before its ClientHello was read");
                return None;
            }
        },
        Err(e) => {
            debug!(%peer, error = %e, "connection not accepted");
            return None;
        }
    };
    checked(connection, peer)
}

/// ALPN `keyward/1` and a client certificate, or the connection is closed.
fn checked(connection: quinn::Connection, peer: SocketAddr) -> Option<quinn::Connection> {
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<HandshakeData>().ok())
        .and_then(|data| data.protocol);
    if alpn.as_deref() != Some(ALPN) {
        debug!(%peer, "closing a connection without ALPN keyward/1");
        connection.close(code(codes::PROTOCOL_MISMATCH), b"ALPN keyward/1 required");
        return None;
    }
    if connection.peer_identity().is_none() {
        warn!(%peer, "closing a connection without a client certificate (is the TLS config requiring one?)");
        connection.close(code(codes::CLIENT_CERT_REQUIRED), b"client certificate required");
        return None;
    }
    Some(connection)
}

async fn serve_connection(connection: quinn::Connection, shared: Arc<Shared>, seat: Seat) {
    let peer = connection.remote_address();
    debug!(%peer, id = connection.stable_id(), "connection established");

    // Dropped (with the session bound to it) when the connection task ends, however it ends.
    let certificates = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
        .map(|chain| *chain)
        .unwrap_or_default();
    let client_key = certificates.first().and_then(|cert| keyward_driver::spki_sha256(cert));
    // The TLS layer demands a certificate (`handshake` closed a connection without one); without
    // one the peer would pass as plain HTTP's `local-http`, which QUIC never serves.
    if client_key.is_none() {
        connection.close(code(codes::CLIENT_CERT_REQUIRED), b"client certificate required");
        return;
    }
    let client_chain = CertChain::new(certificates.iter().map(|cert| cert.to_vec()));
    let peer_of = Peer::Net { addr: peer, client_key, client_chain };
    let (conn, mut stop) = match seat.admit(&shared.driver, peer_of, SessionBinding::Bound) {
        Ok((conn, stop)) => (Arc::new(conn), stop),
        Err(refused) => {
            let reason = match refused.reason {
                Refusal::Unknown => codes::CLIENT_CERT_REQUIRED,
                _ => codes::SERVER_FULL,
            };
            connection.close(code(reason), refused.message().as_bytes());
            debug!(%refused, "closed");
            return;
        }
    };
    let budget = Arc::new(Budget { held: AtomicUsize::new(0), max: shared.limits.receive_window });
    let mut streams = JoinSet::new();
    let stopping_now = loop {
        tokio::select! {
            () = stop.wait() => break true,
            () = conn.revoked() => {
                debug!(%peer, "closing: its client was revoked");
                connection.close(code(codes::CLIENT_CERT_REQUIRED), b"client revoked");
                break false;
            }
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let budget = Arc::clone(&budget);
                    streams.spawn(serve_stream(send, recv, Arc::clone(&shared), Arc::clone(&conn), budget));
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
/// Bytes of unfinished requests a connection's streams hold in the server's memory, against
/// [`QuicLimits::receive_window`]: with QUIC's own window of the same size, one connection can make
/// the server hold at most twice that, however many streams it opens.
struct Budget {
    held: AtomicUsize,
    max: usize,
}

impl Budget {
    fn take(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.max)
            })
            .is_ok()
    }

    fn give(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Why a request could not be read.
enum ReadFailure {
    TooLarge,
    OverBudget,
    Incomplete,
    ConnectionLost,
}

/// Reads a whole request, counting its bytes against the connection's budget as they arrive (the
/// caller gives back `held` when done with the request).
async fn read_request(
    recv: &mut RecvStream,
    limits: &QuicLimits,
    budget: &Budget,
    held: &mut usize,
) -> Result<Vec<u8>, ReadFailure> {
    let mut request = Vec::new();
    loop {
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => {
                if request.len() + chunk.bytes.len() > limits.max_message_size {
                    return Err(ReadFailure::TooLarge);
                }
                if !budget.take(chunk.bytes.len()) {
                    return Err(ReadFailure::OverBudget);
                }
                *held += chunk.bytes.len();
                request.extend_from_slice(&chunk.bytes);
            }
            Ok(None) => return Ok(request),
            Err(ReadError::ConnectionLost(_)) => return Err(ReadFailure::ConnectionLost),
            Err(_) => return Err(ReadFailure::Incomplete),
        }
    }
}

async fn serve_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    shared: Arc<Shared>,
    conn: Arc<Connection>,
    budget: Arc<Budget>,
) {
    let mut held = 0;
    serve_request(&mut send, &mut recv, &shared, &conn, &budget, &mut held).await;
    budget.give(held);
}

async fn serve_request(
    send: &mut SendStream,
    recv: &mut RecvStream,
    shared: &Shared,
    conn: &Connection,
    budget: &Budget,
    held: &mut usize,
) {
    let limits = shared.limits;
    let request = match timeout(limits.read_timeout, read_request(recv, &limits, budget, held)).await {
        Ok(Ok(request)) => request,
        Ok(Err(ReadFailure::TooLarge)) => {
            debug!(stream = %send.id(), limit = limits.max_message_size, "request too large");
            return refuse(send, recv, codes::MESSAGE_TOO_LARGE);
        }
        Ok(Err(ReadFailure::OverBudget)) => {
            debug!(stream = %send.id(), limit = limits.receive_window, "the connection's unfinished requests hold too much");
            return refuse(send, recv, codes::CONNECTION_BUSY);
        }
        Ok(Err(ReadFailure::ConnectionLost)) => return,
        Ok(Err(ReadFailure::Incomplete)) => {
            debug!(stream = %send.id(), "request incomplete");
            return refuse(send, recv, codes::REQUEST_INCOMPLETE);
        }
        Err(_) => {
            debug!(stream = %send.id(), "request not complete within the read timeout");
            return refuse(send, recv, codes::REQUEST_INCOMPLETE);
        }
    };

    let answer = conn.answer(&request).await.body;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_never_holds_more_than_its_maximum() {
        let budget = Budget { held: AtomicUsize::new(0), max: 100 };
        assert!(budget.take(60));
        assert!(!budget.take(41), "60 + 41 is past 100");
        assert!(budget.take(40));
        assert!(!budget.take(1));
        budget.give(60);
        assert!(budget.take(60));
        assert_eq!(budget.held.load(Ordering::Acquire), 100);
    }
}
