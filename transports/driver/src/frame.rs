//! Length-prefixed framing for stream transports: each message is a 4-byte big-endian length, then
//! that many bytes. The reader checks the length against its limit before it allocates anything.
//!
//! [`serve_stream`] is a whole server side of such a connection, [`exchange`] a client's call.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Connection, LinkError, LinkErrorKind, Stopping};

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The announced length is above the reader's limit (nothing of the body was read).
    #[error("message of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("the stream ended inside a message")]
    Truncated,
    /// No frame started within the idle timeout, or a started one did not finish in time.
    #[error("timed out")]
    Timeout,
    /// The stream failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// How long and how large a frame may be.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// Largest message body.
    pub max_bytes: usize,
    /// How long to wait for a message to start.
    pub idle: Duration,
    /// How long a started message may take to arrive whole, and an answer to be written.
    pub io: Duration,
}

/// Reads one frame; `Ok(None)` when the stream ends cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limits: FrameLimits,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; PREFIX_LEN];
    let first = tokio::time::timeout(limits.idle, reader.read(&mut prefix[..1])).await;
    match first.map_err(|_| FrameError::Timeout)? {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(error) => return Err(FrameError::Io(error)),
    }
    let rest = async {
        reader.read_exact(&mut prefix[1..]).await?;
        let len = u64::from(u32::from_be_bytes(prefix));
        if len > limits.max_bytes as u64 {
            return Err(FrameError::TooLarge { len, max: limits.max_bytes });
        }
        let mut body = vec![0u8; len as usize];
        reader.read_exact(&mut body).await?;
        Ok(body)
    };
    match tokio::time::timeout(limits.io, rest).await {
        Ok(Ok(body)) => Ok(Some(body)),
        Ok(Err(FrameError::Io(error))) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(FrameError::Truncated)
        }
        Ok(Err(error)) => Err(error),
        Err(_) => Err(FrameError::Timeout),
    }
}

/// Writes one frame (a message longer than `u32::MAX` bytes is refused as `InvalidInput`).
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "message longer than 4 GiB"))?;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_all(body).await?;
    writer.flush().await
}

/// Serves one framed connection: reads a message, answers it through `conn`, writes the answer,
/// until the peer closes, a message breaks a limit (the connection is closed without an answer), or
/// the server stops (after the message in flight).
pub async fn serve_stream<S>(conn: &Connection, stream: &mut S, limits: FrameLimits, stopping: &mut Stopping)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let read = tokio::select! {
            read = read_frame(stream, limits) => read,
            () = stopping.wait() => return,
            () = conn.revoked() => {
                tracing::info!(peer = %conn.peer(), "closed: its client was revoked");
                return;
            }
        };
        let request = match read {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(peer = %conn.peer(), %error, "closing a framed connection");
                return;
            }
        };
        let answer = conn.answer(&request).await;
        if !matches!(tokio::time::timeout(limits.io, write_frame(stream, &answer.body)).await, Ok(Ok(()))) {
            return;
        }
    }
}

/// What a client sees when the server closes without answering (a refused peer, a broken limit).
pub const CLOSED_WITHOUT_ANSWER: &str =
    "the server closed the connection without an answer (is this client allowed to connect?)";

/// A client's call on a framed connection: writes `body`, reads the answer.
pub async fn exchange<S>(stream: &mut S, body: &[u8], limits: FrameLimits) -> Result<Vec<u8>, LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
    let closed = || LinkError::new(LinkErrorKind::Closed, CLOSED_WITHOUT_ANSWER);
    match write_frame(stream, body).await {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), BrokenPipe | ConnectionReset) => return Err(closed()),
        Err(e) => return Err(LinkError::new(LinkErrorKind::Unreachable, format!("send: {e}"))),
    }
    match read_frame(stream, limits).await {
        Ok(Some(answer)) => Ok(answer),
        Ok(None) | Err(FrameError::Truncated) => Err(closed()),
        Err(FrameError::Io(e)) if e.kind() == ConnectionReset => Err(closed()),
        Err(FrameError::TooLarge { len, max }) => {
            Err(LinkError::new(LinkErrorKind::Refused, format!("receive: an answer of {len} bytes, above {max}")))
        }
        Err(e) => Err(LinkError::new(LinkErrorKind::Closed, format!("receive: {e}"))),
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    const LIMITS: FrameLimits = FrameLimits { max_bytes: 16, idle: Duration::from_secs(5), io: Duration::from_secs(5) };

    #[tokio::test]
    async fn round_trip_and_refusals() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").await.unwrap();
        write_frame(&mut wire, b"").await.unwrap();
        let mut reader = wire.as_slice();
        assert_eq!(read_frame(&mut reader, LIMITS).await.unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut reader, LIMITS).await.unwrap().unwrap(), b"");
        assert!(read_frame(&mut reader, LIMITS).await.unwrap().is_none());

        let mut large = 17u32.to_be_bytes().to_vec();
        large.extend([0; 17]);
        let refused = read_frame(&mut large.as_slice(), LIMITS).await;
        assert!(matches!(refused, Err(FrameError::TooLarge { len: 17, max: 16 })), "{refused:?}");
        // A huge announced length is refused before anything is allocated.
        let refused = read_frame(&mut &u32::MAX.to_be_bytes()[..], LIMITS).await;
        assert!(matches!(refused, Err(FrameError::TooLarge { .. })), "{refused:?}");

        let truncated = [0, 0, 0, 5, b'h', b'i'];
        assert!(matches!(read_frame(&mut &truncated[..], LIMITS).await, Err(FrameError::Truncated)));
        assert!(matches!(read_frame(&mut &[0u8, 0][..], LIMITS).await, Err(FrameError::Truncated)));
    }

    /// A link error says what a caller can act on: the peer went away (the message may have run)
    /// or answered outside the limits (it did not run as a call).
    #[tokio::test]
    async fn exchange_failures_have_a_kind() {
        let (mut ours, theirs) = tokio::io::duplex(64);
        drop(theirs);
        let closed = exchange(&mut ours, b"{}", LIMITS).await.unwrap_err();
        assert_eq!(closed.kind(), LinkErrorKind::Closed, "{closed}");

        let (mut ours, mut theirs) = tokio::io::duplex(64);
        let server = tokio::spawn(async move {
            let request = read_frame(&mut theirs, LIMITS).await.unwrap().unwrap();
            assert_eq!(request, b"{}");
            write_frame(&mut theirs, &[b'x'; 17]).await.unwrap();
        });
        let refused = exchange(&mut ours, b"{}", LIMITS).await.unwrap_err();
        assert_eq!(refused.kind(), LinkErrorKind::Refused, "{refused}");
        assert!(refused.to_string().contains("17 bytes"), "{refused}");
        server.await.unwrap();
    }

    /// A stream whose writes fail with `write` (or are taken, if `None`) and whose reads fail with `read`.
    struct Failing {
        write: Option<std::io::ErrorKind>,
        read: std::io::ErrorKind,
    }

    impl tokio::io::AsyncRead for Failing {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(self.read.into()))
        }
    }

    impl tokio::io::AsyncWrite for Failing {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bytes: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(match self.write {
                Some(kind) => Err(kind.into()),
                None => Ok(bytes.len()),
            })
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A reset or a broken pipe reads as the server closing without an answer; another I/O failure
    /// is named as the send's (the message did not leave) or the receive's.
    #[tokio::test]
    async fn io_failures_are_told_apart() {
        use std::io::ErrorKind::{BrokenPipe, ConnectionReset, PermissionDenied};
        let fail = |write, read| Failing { write, read };
        for (mut stream, kind, text) in [
            (fail(None, ConnectionReset), LinkErrorKind::Closed, CLOSED_WITHOUT_ANSWER.to_owned()),
            (fail(Some(BrokenPipe), ConnectionReset), LinkErrorKind::Closed, CLOSED_WITHOUT_ANSWER.to_owned()),
            (fail(Some(ConnectionReset), ConnectionReset), LinkErrorKind::Closed, CLOSED_WITHOUT_ANSWER.to_owned()),
            (fail(Some(PermissionDenied), ConnectionReset), LinkErrorKind::Unreachable, "send: ".to_owned()),
            (fail(None, PermissionDenied), LinkErrorKind::Closed, "receive: ".to_owned()),
        ] {
            let error = exchange(&mut stream, b"{}", LIMITS).await.unwrap_err();
            assert_eq!(error.kind(), kind, "{error}");
            assert!(error.to_string().starts_with(&text), "{error}");
        }
    }
}
