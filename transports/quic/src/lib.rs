//! # keyward-quic
//!
//! Keyward's owner API over QUIC with required client certificates. The wire contract is written
//! down in `spec/transport-quic.md`; in short:
//!
//! * ALPN `keyward/1`, TLS 1.3 (QUIC), a client certificate chaining to Keyward's CA with the
//!   `clientAuth` extended key usage, no 0-RTT, no session resumption.
//! * One JSON-RPC message per client-initiated bidirectional stream: the client writes the request
//!   and finishes its side; the server reads to the end (bounded), hands the bytes to
//!   the driver's connection handle, writes the answer and finishes its side.
//! * A stream the server cannot answer is reset (and stopped) with one of the [`codes`].
//! * A session belongs to its connection: a plaintext `init_secure_api` on a connection binds the new
//!   session to it (dropping the one it had), and closing the connection drops its session. Open
//!   wallets stay open (tokens are not tied to sessions).
//!
//! [`QuicServer`] serves what a `keyward_driver::Driver` answers with (a core, or the echo service
//! `keyward bench` measures the owner API against); [`QuicClient`] is a small client and a
//! `keyward_driver::Link`, used by `keyward call`, the tests and usable by Rust callers.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod server;

use std::time::Duration;

pub use client::{CONNECT_TIMEOUT, DEFAULT_MAX_ANSWER_SIZE, KEEP_ALIVE_INTERVAL, QuicClient};
/// The client certificate verifier that admits only active clients' certificates: wrap your chain
/// verifier in it when building the `tls` of [`QuicServer::bind`].
pub use keyward_driver::RegistryVerifier;
pub use server::QuicServer;

/// The one ALPN protocol id both sides must agree on.
pub const ALPN: &[u8] = b"keyward/1";

/// Application error codes: on a stream (`RESET_STREAM` / `STOP_SENDING`) or on the connection
/// (`CONNECTION_CLOSE` of the application kind).
pub mod codes {
    /// Connection: closed normally (the client is done, the server is shutting down).
    pub const NO_ERROR: u64 = 0;
    /// Stream: the request is larger than the server's maximum message size.
    pub const MESSAGE_TOO_LARGE: u64 = 1;
    /// Stream: the request did not arrive whole (not finished within the read timeout, or the client
    /// reset its side).
    pub const REQUEST_INCOMPLETE: u64 = 2;
    /// Stream: the server failed to produce an answer (a bug; nothing about the request is implied).
    pub const INTERNAL_ERROR: u64 = 3;
    /// Stream: the client did not take the answer within the write timeout.
    pub const ANSWER_TIMEOUT: u64 = 4;
    /// Stream: the connection's unfinished requests already hold `receive_window` bytes.
    pub const CONNECTION_BUSY: u64 = 5;
    /// Connection: the connection did not negotiate ALPN `keyward/1`.
    pub const PROTOCOL_MISMATCH: u64 = 0x10;
    /// Connection: the client presented no certificate.
    pub const CLIENT_CERT_REQUIRED: u64 = 0x11;
    /// Connection: no connection slot is left for this client: the server already serves
    /// `max_connections` (slots filled during the handshake), or only the owner's reserve is left
    /// and the client is not an owner, or the client already holds its `[connections]
    /// per_principal` connections. The reason text says which.
    pub const SERVER_FULL: u64 = 0x12;

    /// A short name for a code, for messages and logs.
    pub fn name(code: u64) -> &'static str {
        match code {
            NO_ERROR => "no error",
            MESSAGE_TOO_LARGE => "message too large",
            REQUEST_INCOMPLETE => "request incomplete",
            INTERNAL_ERROR => "internal error",
            ANSWER_TIMEOUT => "answer timeout",
            CONNECTION_BUSY => "connection busy",
            PROTOCOL_MISMATCH => "protocol mismatch",
            CLIENT_CERT_REQUIRED => "client certificate required",
            SERVER_FULL => "server full",
            _ => "unknown code",
        }
    }
}

/// The server's resource limits. Every one is enforced; [`QuicLimits::default`] gives the documented
/// defaults. They read themselves from a config file's `[quic_limits]` table (every key optional,
/// unknown keys refused): `max_connections`, `max_streams_per_connection`, `max_message_bytes`,
/// `idle_secs`; the others keep their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicLimits {
    /// Most authenticated connections served at once (a handshake takes no slot). While all are
    /// taken, new attempts are refused with the QUIC transport error `CONNECTION_REFUSED`. Default 256.
    pub max_connections: usize,
    /// A connection must complete its handshake (client certificate included) within this long, or it
    /// is dropped. Default 5 s.
    #[serde(skip)]
    pub handshake_timeout: Duration,
    /// Most handshakes in progress at once; one more drops the pending one that has made no progress
    /// for the longest (its ClientHello not yet processed, or no certificate after it). Default 64.
    #[serde(skip)]
    pub max_handshakes: usize,
    /// Answer Initials from unvalidated addresses with a stateless Retry (address validation), so
    /// an Initial that is never followed up costs no state. Default true.
    #[serde(skip)]
    pub validate_addresses: bool,
    /// Bytes one connection may have in flight to the server over all its streams (QUIC flow
    /// control); bounds what one connection's unfinished streams can make the server hold.
    /// Default 4 MiB.
    #[serde(skip)]
    pub receive_window: usize,
    /// Most bidirectional streams a client may have open at once on one connection (QUIC stream
    /// flow control: a client's further streams wait for credit). Default 64.
    pub max_streams_per_connection: u32,
    /// Largest request, in bytes. A larger one is refused with [`codes::MESSAGE_TOO_LARGE`]; the
    /// connection stays up. Default 1 MiB.
    #[serde(rename = "max_message_bytes")]
    pub max_message_size: usize,
    /// A connection with no traffic for this long is closed (QUIC `max_idle_timeout`; the smaller of
    /// the two sides' values applies). Default 60 s.
    #[serde(rename = "idle_secs", deserialize_with = "duration_from_secs")]
    pub idle_timeout: Duration,
    /// A request must arrive whole (stream finished) within this long after the stream opens, or it
    /// is refused with [`codes::REQUEST_INCOMPLETE`]. Default 10 s.
    #[serde(skip)]
    pub read_timeout: Duration,
    /// The client must take the whole answer within this long, or the stream is reset with
    /// [`codes::ANSWER_TIMEOUT`]. Default 10 s.
    #[serde(skip)]
    pub write_timeout: Duration,
    /// On shutdown, streams already being served get this long to finish before their connections
    /// are closed. Default 5 s.
    #[serde(skip)]
    pub shutdown_grace: Duration,
}

/// Seconds in the file, a `Duration` in the struct.
fn duration_from_secs<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    Ok(Duration::from_secs(<u64 as serde::Deserialize>::deserialize(deserializer)?))
}

impl Default for QuicLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 256,
            validate_addresses: true,
            receive_window: 4 * 1024 * 1024,
            max_streams_per_connection: 64,
            max_message_size: 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl QuicLimits {
    /// Checks that every limit is usable (non-zero, idle timeout representable in QUIC).
    pub fn validate(&self) -> Result<(), QuicError> {
        if self.max_connections == 0 {
            return Err(QuicError::Config("max_connections must be at least 1"));
        }
        if self.max_streams_per_connection == 0 {
            return Err(QuicError::Config("max_streams_per_connection must be at least 1"));
        }
        if self.max_handshakes == 0 || self.receive_window == 0 {
            return Err(QuicError::Config("max_handshakes and receive_window must be at least 1"));
        }
        if self.max_message_size == 0 {
            return Err(QuicError::Config("max_message_size must be at least 1"));
        }
        if self.idle_timeout.is_zero() || quinn::IdleTimeout::try_from(self.idle_timeout).is_err() {
            return Err(QuicError::Config("idle_timeout must be positive and below 2^62 ms"));
        }
        if self.handshake_timeout.is_zero() || self.read_timeout.is_zero() || self.write_timeout.is_zero() {
            return Err(QuicError::Config("handshake_timeout, read_timeout and write_timeout must be positive"));
        }
        Ok(())
    }
}

/// What can go wrong on either side. Messages carry no request or answer bytes and no secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// A limit or option is not usable.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// The rustls configuration cannot be used for QUIC (no TLS 1.3, no QUIC initial cipher suite).
    #[error("the TLS configuration cannot be used for QUIC: {0}")]
    Tls(String),
    /// Binding or using the UDP socket failed.
    #[error("UDP socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The connection attempt could not start (bad server name, endpoint stopping, ...).
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed: handshake refused (certificate, ALPN), refused because
    /// the server is full, timed out, closed by either side. A refusal of this client's certificate
    /// whose TLS alert says why reads as [`keyward_driver::LinkError::REVOKED`] or
    /// [`keyward_driver::LinkError::UNKNOWN_CLIENT`] (see [`QuicError::refusal`]).
    #[error("{}", connection_failed(.0))]
    Connection(#[from] quinn::ConnectionError),
    /// The handshake got no answer within [`CONNECT_TIMEOUT`]: nothing (or nothing that
    /// speaks QUIC) listens there.
    #[error("nothing answers at {addr} over QUIC")]
    NoAnswer {
        /// The address called.
        addr: std::net::SocketAddr,
    },
    /// The handshake completed without ALPN `keyward/1`.
    #[error("the server did not agree on ALPN keyward/1")]
    Alpn,
    /// The server refused this message: it reset or stopped the stream with an application code
    /// (see [`codes`]).
    #[error("the server refused the message: stream error {code} ({})", codes::name(*code))]
    Stream {
        /// The application error code.
        code: u64,
    },
    /// The answer is larger than the client accepts.
    #[error("the answer is larger than {limit} bytes")]
    AnswerTooLarge {
        /// The client's limit.
        limit: usize,
    },
    /// The stream was closed locally before the exchange completed.
    #[error("the stream was closed before the answer was complete")]
    StreamClosed,
}

/// A connection error's text: the refusal its TLS alert names, else quinn's.
fn connection_failed(error: &quinn::ConnectionError) -> String {
    match refusal(error) {
        Some(refusal) => refusal.to_string(),
        None => format!("connection failed: {error}"),
    }
}

/// What a connection closed by the server with a TLS alert (the QUIC crypto error 0x100 + alert)
/// says about this client's certificate ([`keyward_driver::alert_refusal`]): revoked, or unknown.
pub fn refusal(error: &quinn::ConnectionError) -> Option<keyward_driver::LinkError> {
    let quinn::ConnectionError::ConnectionClosed(close) = error else { return None };
    let alert = u64::from(close.error_code).checked_sub(0x100).and_then(|alert| u8::try_from(alert).ok())?;
    keyward_driver::alert_refusal(rustls::AlertDescription::from(alert))
}

impl QuicError {
    /// The refusal of this client's certificate this error carries, if the server said why.
    pub fn refusal(&self) -> Option<keyward_driver::LinkError> {
        match self {
            Self::Connection(error) => refusal(error),
            _ => None,
        }
    }

    /// This error as a [`keyward_driver::LinkError`] of the kind a caller acts on.
    pub fn link_error(&self) -> keyward_driver::LinkError {
        use keyward_driver::LinkErrorKind;
        if let Some(refusal) = self.refusal() {
            return refusal;
        }
        let kind = match self {
            Self::Stream { .. } | Self::AnswerTooLarge { .. } | Self::Alpn => LinkErrorKind::Refused,
            Self::Connection(quinn::ConnectionError::TimedOut) => LinkErrorKind::TimedOut,
            Self::Connection(_) | Self::StreamClosed => LinkErrorKind::Closed,
            _ => LinkErrorKind::Unreachable,
        };
        keyward_driver::LinkError::new(kind, self.to_string())
    }

    /// The stream error code, if the server refused the message with one.
    pub fn stream_code(&self) -> Option<u64> {
        match self {
            Self::Stream { code } => Some(*code),
            _ => None,
        }
    }
}
