//! # keyward-http
//!
//! Keyward's owner API over HTTP/1.1: `POST /v3/owner` with JSON bodies, over HTTPS that requires a
//! client certificate (the rustls config passed in carries the verifier), or over plain HTTP on a
//! loopback address for V3 clients that cannot do TLS.
//!
//! Rules (each enforced here, each a documented limit):
//! * only `POST /v3/owner` (other paths 404, other methods 405);
//! * bodies up to [`HttpLimits::max_body_bytes`] (default 1 MiB); larger: HTTP 413 and a JSON-RPC error;
//! * the `Host` header must name a loopback host (`localhost`, `127.0.0.1`, `[::1]`, with any port) or
//!   one configured in [`HttpLimits::allowed_hosts`], else 403: this defeats DNS rebinding;
//! * a browser `Origin` header, if present, must be a loopback or configured origin, else 403;
//!   no `Access-Control-Allow-Origin` header is ever sent;
//! * the `Keyward-Session` request header names the caller's session; the answer to a plaintext
//!   `init_secure_api` carries the new session's id in the same header. Without it, the core matches
//!   V3 clients by key, so grin-wallet clients work unchanged;
//! * every JSON-RPC answer is HTTP 200, as grin-wallet does;
//! * requests are answered through `keyward-driver` (a [`Connection`] per TCP connection): KDF and
//!   store-writing calls run on its bounded slow-call pool, so one client's `open_wallet` (Argon2id)
//!   never stalls another; every other call is answered in microseconds in place;
//! * headers must arrive within [`HttpLimits::header_timeout`], bodies within
//!   [`HttpLimits::body_timeout`], TLS handshakes within [`HttpLimits::handshake_timeout`] (at most
//!   [`HttpLimits::max_handshakes`] at once; for a new one, the one stalled longest is dropped: a
//!   connection that has not sent a whole ClientHello, or has sent nothing since, before one that
//!   has just moved), and at most [`HttpLimits::max_connections`] authenticated connections are
//!   served at once: a connection takes a slot only after its handshake, so silent connections
//!   hold none. The driver admits at most its `per_principal` connections per client, and keeps
//!   the last `owner_reserve` slots for owners ([`keyward_driver::ConnectionLimits`]).
//!
//! The listener serves whatever the [`Driver`] it is given answers with: a core, or a
//! [`keyward_driver::Service`] such as the echo `keyward bench` measures the owner API against.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming as Body;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use keyward_core::SessionId;
use keyward_driver::{
    CertChain, Connection, Driver, Listener, Naming, Peer, Progress, Seat, ServeLimits, SessionBinding,
};
use tokio::net::TcpListener;

pub use client::{ClientError, HttpAnswer, HttpClient, HttpTarget};
/// The client certificate verifier that admits only active clients' certificates: wrap your chain
/// verifier in it when building the `tls` of [`HttpServer::bind_https`].
pub use keyward_driver::RegistryVerifier;

/// The path of the owner API.
pub const OWNER_PATH: &str = "/v3/owner";
/// The header that names a session.
pub const SESSION_HEADER: &str = "keyward-session";

/// Limits of the HTTP transport.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest request body in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// Host names (without port) accepted besides the loopback ones.
    pub allowed_hosts: Vec<String>,
    /// Most authenticated connections served at once (default 256); more are closed at once.
    pub max_connections: usize,
    /// Time allowed for a request's headers (default 10 s).
    pub header_timeout: Duration,
    /// Time allowed for a request's body (default 10 s).
    pub body_timeout: Duration,
    /// Time allowed for a TLS handshake (default 5 s). A connection takes one of
    /// `max_connections` only once its handshake is done.
    pub handshake_timeout: Duration,
    /// Most TLS handshakes in progress at once (default 64); one more drops the pending one that has
    /// made no progress for the longest (no whole ClientHello, or nothing after it), so connections
    /// that stall cannot keep an honest client from connecting.
    pub max_handshakes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            allowed_hosts: Vec::new(),
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 256,
        }
    }
}

/// Why a listener could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Plain HTTP was asked for on an address that is not loopback.
    #[error("plain HTTP is only served on a loopback address (127.0.0.0/8 or ::1); {0} is not one")]
    NotLoopback(SocketAddr),
    /// The socket could not be bound. The cause is in the message, not a `source` as well (a
    /// caller printing the chain would say it twice).
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        cause: std::io::Error,
    },
    /// A listener bound by the caller could not be taken over (not a listening socket, no runtime).
    #[error("cannot serve on the given listener: {0}")]
    Listener(std::io::Error),
}

struct Shared {
    driver: Driver,
    limits: HttpLimits,
}

/// A bound HTTP or HTTPS listener.
pub struct HttpServer {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.listener.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl HttpServer {
    /// Binds an HTTPS listener serving `driver`. `tls` must require client certificates (Keyward's
    /// CA, clientAuth) through a [`RegistryVerifier`] over `driver`, so a certificate no active
    /// client has fails its handshake (the driver refuses its connection anyway). A driver made with [`Driver::service`] answers with its service instead of
    /// a core (the echo floor `keyward bench` measures against).
    pub async fn bind_https(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        driver: Driver,
        limits: HttpLimits,
    ) -> Result<Self, HttpError> {
        let listener = TcpListener::bind(addr).await.map_err(|cause| HttpError::Bind { addr, cause })?;
        Ok(Self::https_on(listener, &tls, driver, limits))
    }

    /// HTTPS on `listener`: the TLS configuration with ALPN `http/1.1`.
    fn https_on(listener: TcpListener, tls: &rustls::ServerConfig, driver: Driver, limits: HttpLimits) -> Self {
        let mut tls = tls.clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let shared = Arc::new(Shared { driver, limits });
        Self { listener, tls: Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))), shared }
    }

    /// Binds a plain HTTP listener serving `driver`; refuses any address that is not loopback.
    pub async fn bind_insecure(addr: SocketAddr, driver: Driver, limits: HttpLimits) -> Result<Self, HttpError> {
        if !addr.ip().is_loopback() {
            return Err(HttpError::NotLoopback(addr));
        }
        let listener = TcpListener::bind(addr).await.map_err(|cause| HttpError::Bind { addr, cause })?;
        Ok(Self { listener, tls: None, shared: Arc::new(Shared { driver, limits }) })
    }

    /// An HTTPS listener on a socket the caller bound (so a server can bind every listener before
    /// it makes anything else); otherwise as [`HttpServer::bind_https`]. Within a Tokio runtime.
    pub fn https_from_listener(
        listener: std::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        driver: Driver,
        limits: HttpLimits,
    ) -> Result<Self, HttpError> {
        Ok(Self::https_on(tokio_listener(listener)?, &tls, driver, limits))
    }

    /// A plain HTTP listener on a socket the caller bound; refuses one whose address is not
    /// loopback. Otherwise as [`HttpServer::bind_insecure`]. Within a Tokio runtime.
    pub fn insecure_from_listener(
        listener: std::net::TcpListener,
        driver: Driver,
        limits: HttpLimits,
    ) -> Result<Self, HttpError> {
        let addr = listener.local_addr().map_err(HttpError::Listener)?;
        if !addr.ip().is_loopback() {
            return Err(HttpError::NotLoopback(addr));
        }
        let listener = tokio_listener(listener)?;
        Ok(Self { listener, tls: None, shared: Arc::new(Shared { driver, limits }) })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; then stops accepting and gives open connections up to
    /// five seconds to finish their current request.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self { listener, tls, shared } = self;
        let limits = ServeLimits {
            max_connections: shared.limits.max_connections,
            owner_reserve: shared.driver.connection_limits().owner_reserve,
            max_handshakes: shared.limits.max_handshakes,
            handshake_timeout: shared.limits.handshake_timeout,
            grace: SHUTDOWN_GRACE,
        };
        keyward_driver::serve(Accept { listener, tls }, limits, shutdown, |ready, seat| {
            serve_connection(ready, Arc::clone(&shared), seat)
        })
        .await;
    }
}

/// A bound standard listener as Tokio's (non-blocking).
fn tokio_listener(listener: std::net::TcpListener) -> Result<TcpListener, HttpError> {
    listener.set_nonblocking(true).map_err(HttpError::Listener)?;
    TcpListener::from_std(listener).map_err(HttpError::Listener)
}

/// How long requests in flight get to finish when the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

struct Accept {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Listener for Accept {
    type Conn = (tokio::net::TcpStream, SocketAddr);
    type Ready = Authenticated;

    async fn accept(&mut self) -> Option<std::io::Result<Self::Conn>> {
        let accepted = self.listener.accept().await;
        if let Ok((stream, _)) = &accepted {
            let _ = stream.set_nodelay(true);
        }
        Some(accepted)
    }

    fn handshake(
        &self,
        (stream, peer): Self::Conn,
        progress: Progress,
    ) -> impl Future<Output = Option<Authenticated>> + Send + 'static {
        handshake(stream, peer, self.tls.clone(), progress)
    }
}

/// How long a refused handshake's connection is kept, half closed, for the client to read the alert.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// The most a refused client may send while it lingers.
const LINGER_BYTES: usize = 64 * 1024;

/// After a refused handshake (its alert sent): closes the sending side and reads what the client
/// still sends until it closes (at most [`LINGER`] and [`LINGER_BYTES`], inside the handshake's own
/// slot). Closing a socket with unread data resets the connection, and a reset makes the client's
/// kernel drop the alert it has not read yet: with TLS 1.3 the client sends its first request
/// before it reads the refusal, so without this it would see "connection reset", not "revoked".
async fn linger(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut buffer = [0u8; 4096];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER, async {
        while left > 0 {
            match tcp.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => left = left.saturating_sub(read),
            }
        }
    })
    .await;
}

/// The TLS handshake (when serving HTTPS): the driver runs it before the connection takes a slot.
/// The ClientHello is read whole first (no cryptography is spent before), and reported as progress.
async fn handshake(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    progress: Progress,
) -> Option<Authenticated> {
    let Some(acceptor) = tls else {
        return Some(Authenticated {
            io: Box::new(stream),
            peer,
            client_key: None,
            client_chain: CertChain::default(),
        });
    };
    let started = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await;
    let started = match started {
        Ok(started) => started,
        Err(error) => {
            tracing::debug!(%peer, %error, "no ClientHello");
            return None;
        }
    };
    progress.made();
    match started.into_stream(Arc::clone(acceptor.config())).into_fallible().await {
        Ok(stream) => {
            // The verified client certificate's key names the principal (the verifier required one).
            let certificates = stream.get_ref().1.peer_certificates().unwrap_or_default();
            let client_key = certificates.first().and_then(|cert| keyward_driver::spki_sha256(cert));
            if client_key.is_none() {
                tracing::warn!(%peer, "closing a TLS connection without a client certificate");
                return None;
            }
            let client_chain = CertChain::new(certificates.iter().map(|cert| cert.to_vec()));
            Some(Authenticated { io: Box::new(stream), peer, client_key, client_chain })
        }
        Err((error, tcp)) => {
            tracing::info!(%peer, %error, "TLS handshake refused");
            linger(tcp).await;
            None
        }
    }
}

/// A connection past its handshake.
struct Authenticated {
    io: Box<dyn Io>,
    peer: SocketAddr,
    /// The client certificate's key (HTTPS); `None` over plain HTTP.
    client_key: Option<[u8; 32]>,
    /// The verified client chain (HTTPS); empty over plain HTTP.
    client_chain: CertChain,
}

async fn serve_connection(ready: Authenticated, shared: Arc<Shared>, seat: Seat) {
    let Authenticated { io, peer, client_key, client_chain } = ready;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(shared.limits.header_timeout).keep_alive(true);
    // Refused (logged and audited by the driver): the connection is closed.
    let Ok((conn, mut stopping)) =
        seat.admit(&shared.driver, Peer::Net { addr: peer, client_key, client_chain }, SessionBinding::Named)
    else {
        return;
    };
    let conn = Arc::new(conn);
    let revoked = Arc::clone(&conn);
    let service = hyper::service::service_fn(move |request| {
        let (shared, conn) = (Arc::clone(&shared), Arc::clone(&conn));
        async move { Ok::<_, Infallible>(answer(request, &shared, &conn).await) }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // When the server stops, the request in flight is finished and the connection closed.
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping.wait() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = revoked.revoked() => {
            // Revoked: closed at once, whatever it was doing.
            tracing::info!(%peer, "closed: its client was revoked");
            return;
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Reads and discards what is left of an oversized body (up to four times the limit, within the body
/// timeout), so that the client, still sending, reads the 413 answer instead of a reset connection.
async fn drain(body: &mut Body, limits: &HttpLimits) {
    let cap = limits.max_body_bytes.saturating_mul(4);
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > cap {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(limits.body_timeout, discard).await;
}

/// A connection's byte stream: TCP, or TLS over TCP.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    response
}

fn refusal(status: StatusCode, code: i64, message: &str) -> Response<Full<Bytes>> {
    json_response(status, keyward_core::error_bytes(&serde_null(), code, message))
}

fn serde_null() -> Option<()> {
    None
}

/// Whether a `Host` or `Origin` host (no port) is loopback or configured.
fn host_allowed(host: &str, limits: &HttpLimits) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, port)) if port.is_empty() || port.starts_with(':') => inner.to_owned(),
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.trim_end_matches('.');
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return true;
    }
    limits.allowed_hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(name))
}

fn origin_allowed(origin: &str, limits: &HttpLimits) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if scheme != "http" && scheme != "https" {
        return false;
    }
    !rest.contains('/') && host_allowed(rest, limits)
}

async fn answer(request: Request<Body>, shared: &Shared, conn: &Connection) -> Response<Full<Bytes>> {
    let limits = &shared.limits;
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    if !host.is_some_and(|h| host_allowed(h, limits)) {
        return refusal(StatusCode::FORBIDDEN, -32600, "Forbidden: the Host header must name a loopback host");
    }
    if let Some(origin) = request.headers().get(header::ORIGIN)
        && !origin.to_str().is_ok_and(|o| origin_allowed(o, limits))
    {
        return refusal(StatusCode::FORBIDDEN, -32600, "Forbidden: cross-origin requests are not served");
    }
    if request.uri().path() != OWNER_PATH {
        return refusal(StatusCode::NOT_FOUND, -32601, "Not found: the owner API is POST /v3/owner");
    }
    if request.method() != Method::POST {
        let mut response = refusal(StatusCode::METHOD_NOT_ALLOWED, -32600, "Method not allowed: use POST");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let too_large = || {
        let message = format!("Request body larger than {} bytes", limits.max_body_bytes);
        let mut response = refusal(StatusCode::PAYLOAD_TOO_LARGE, -32600, &message);
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let naming = match request.headers().get(SESSION_HEADER) {
        None => Naming::Unnamed,
        Some(value) => value.to_str().ok().and_then(SessionId::parse).map_or(Naming::Malformed, Naming::Session),
    };
    let mut body = request.into_body();
    if declared.is_some_and(|len| len > limits.max_body_bytes as u64) {
        drain(&mut body, limits).await;
        return too_large();
    }
    // A stranger's large body that names no session is refused before a byte of it is read (the
    // core would refuse it anyway, untried): the connection is closed rather than drained.
    if naming == Naming::Unnamed
        && let (Some(len), Some(max)) = (declared, conn.max_unnamed_body())
        && len > max as u64
    {
        let mut response = json_response(StatusCode::OK, conn.refuse_unnamed_body().await.body);
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let body = match tokio::time::timeout(limits.body_timeout, Limited::new(&mut body, limits.max_body_bytes).collect())
        .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            drain(&mut body, limits).await;
            return too_large();
        }
        Ok(Err(_)) => return refusal(StatusCode::BAD_REQUEST, -32700, "Parse error: the body could not be read"),
        Err(_) => {
            return refusal(StatusCode::REQUEST_TIMEOUT, -32600, "Request timeout: the body did not arrive in time");
        }
    };
    let answer = conn.answer_named(&body, naming).await;
    let mut response = json_response(StatusCode::OK, answer.body);
    if let Some(id) = answer.new_session
        && let Ok(value) = HeaderValue::from_str(&id.to_string())
    {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_or_configured_hosts() {
        let limits = HttpLimits { allowed_hosts: vec!["wallet.internal".into()], ..HttpLimits::default() };
        for ok in [
            "localhost",
            "localhost:3420",
            "127.0.0.1:80",
            "127.8.9.1",
            "[::1]:3420",
            "[::1]",
            "LOCALHOST",
            "wallet.internal:1",
        ] {
            assert!(host_allowed(ok, &limits), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:3420",
            "127.0.0.1.evil.com",
            "localhost.evil.com",
            "[::2]",
            "10.0.0.1",
            "",
            "[::1]x",
            "localhost:x",
        ] {
            assert!(!host_allowed(bad, &limits), "{bad}");
        }
        assert!(origin_allowed("http://localhost:3000", &limits));
        assert!(!origin_allowed("https://evil.com", &limits));
        assert!(!origin_allowed("null", &limits));
        assert!(!origin_allowed("file://", &limits));
    }
}
