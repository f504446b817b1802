//! A small QUIC client: one connection, one bidirectional stream per message.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{HandshakeData, QuicClientConfig};
use quinn::{ReadError, ReadToEndError, VarInt, WriteError};

use crate::{ALPN, QuicError};

/// The largest answer [`QuicClient::call`] reads unless told otherwise (16 MiB).
pub const DEFAULT_MAX_ANSWER_SIZE: usize = 16 * 1024 * 1024;

/// How often the client sends a keep-alive (PING), well below the server's default idle timeout, so
/// that a quiet connection (and with it the session bound to it) stays up.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// How long [`QuicClient::connect`] waits for the handshake: past it, [`QuicError::NoAnswer`]
/// (without it, a silent UDP port would hold the caller for the whole idle timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's own idle timeout (the smaller of both sides' values applies).
const CLIENT_IDLE_TIMEOUT_MS: u32 = 60_000;

/// How long [`QuicClient::close`] waits for the close to reach the server.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to a Keyward QUIC server. [`QuicClient::call`] takes `&self`: share the client
/// (`Arc<QuicClient>`) and call it from many tasks at once; each call runs on its own stream.
#[derive(Debug)]
pub struct QuicClient {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    max_answer_size: usize,
}

impl QuicClient {
    /// Connects to `addr`, checking the server's certificate for `server_name` and presenting the
    /// client certificate configured in `tls`. A clone of `tls` is used with ALPN set to `keyward/1`
    /// and early data off. The local UDP socket is bound to the loopback address of `addr`'s family
    /// when `addr` is a loopback address, to the unspecified address otherwise.
    ///
    /// With TLS 1.3 the server checks the client certificate after the client considers the handshake
    /// complete: a refused certificate may only show as an error on the first [`QuicClient::call`].
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<QuicClient, QuicError> {
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.enable_early_data = false;
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| QuicError::Tls(e.to_string()))?;

        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(0))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
            .max_idle_timeout(Some(quinn::IdleTimeout::from(VarInt::from_u32(CLIENT_IDLE_TIMEOUT_MS))))
            .datagram_receive_buffer_size(None);
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport));

        let endpoint = quinn::Endpoint::client(local_bind_address(addr))?;
        let connecting = endpoint.connect_with(config, addr, server_name)?;
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(connected) => connected?,
            Err(_) => return Err(QuicError::NoAnswer { addr }),
        };
        let alpn = connection
            .handshake_data()
            .and_then(|data| data.downcast::<HandshakeData>().ok())
            .and_then(|data| data.protocol);
        if alpn.as_deref() != Some(ALPN) {
            connection.close(VarInt::from_u32(0), b"");
            return Err(QuicError::Alpn);
        }
        Ok(QuicClient { endpoint, connection, max_answer_size: DEFAULT_MAX_ANSWER_SIZE })
    }

    /// Sets the largest answer [`QuicClient::call`] accepts.
    pub fn set_max_answer_size(&mut self, bytes: usize) {
        self.max_answer_size = bytes;
    }

    /// Sends one message on a new bidirectional stream and returns the whole answer: writes
    /// `request`, finishes the stream, reads the answer to its end.
    ///
    /// No timeout of its own beyond the connection's idle timeout: wrap it in
    /// `tokio::time::timeout` if needed (dropping the future abandons the stream).
    pub async fn call(&self, request: &[u8]) -> Result<Vec<u8>, QuicError> {
        let (mut send, mut recv) = self.connection.open_bi().await?;
        match send.write_all(request).await {
            Ok(()) => {}
            Err(WriteError::Stopped(code)) => return Err(QuicError::Stream { code: code.into_inner() }),
            Err(WriteError::ConnectionLost(e)) => return Err(QuicError::Connection(e)),
            Err(WriteError::ClosedStream | WriteError::ZeroRttRejected) => return Err(QuicError::StreamClosed),
        }
        // Fails only if the stream is already finished or reset; the read below tells which.
        let _ = send.finish();
        match recv.read_to_end(self.max_answer_size).await {
            Ok(answer) => Ok(answer),
            Err(ReadToEndError::TooLong) => {
                let _ = recv.stop(VarInt::from_u32(0));
                Err(QuicError::AnswerTooLarge { limit: self.max_answer_size })
            }
            Err(ReadToEndError::Read(ReadError::Reset(code))) => Err(QuicError::Stream { code: code.into_inner() }),
            Err(ReadToEndError::Read(ReadError::ConnectionLost(e))) => Err(QuicError::Connection(e)),
            Err(ReadToEndError::Read(_)) => Err(QuicError::StreamClosed),
        }
    }

    /// The underlying QUIC connection (for statistics, or for driving streams by hand).
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// The server's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    /// Closes the connection with [`NO_ERROR`](crate::codes::NO_ERROR) (0) and waits (briefly) until the server has been
    /// told. Calls in flight fail. The server drops the session bound to this connection.
    pub async fn close(&self) {
        self.connection.close(VarInt::from_u32(0), b"done");
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.endpoint.wait_idle()).await;
    }
}

/// The local address to bind for reaching `peer`: loopback for loopback, unspecified otherwise, in
/// `peer`'s address family.
fn local_bind_address(peer: SocketAddr) -> SocketAddr {
    let ip = match peer {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(v6) if v6.ip().is_loopback() => Ipv6Addr::LOCALHOST.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(ip, 0)
}

/// QUIC as a [`keyward_driver::Link`]: one stream per message; the session belongs to the
/// connection, so `session` is not sent.
impl keyward_driver::Link for QuicClient {
    fn exchange(&mut self, body: Vec<u8>, _session: Option<keyward_core::SessionId>) -> keyward_driver::LinkFuture<'_> {
        Box::pin(async move {
            let body = self.call(&body).await.map_err(|e| e.link_error())?;
            Ok(keyward_driver::Exchange { body, session: None })
        })
    }

    fn close(&mut self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(QuicClient::close(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_in_the_peer_family() {
        let cases = [
            ("127.0.0.1:4433", "127.0.0.1:0"),
            ("192.0.2.1:4433", "0.0.0.0:0"),
            ("[::1]:4433", "[::1]:0"),
            ("[2001:db8::1]:4433", "[::]:0"),
        ];
        for (peer, local) in cases {
            let peer: SocketAddr = peer.parse().expect("peer");
            assert_eq!(local_bind_address(peer).to_string(), local);
        }
    }
}
