//! Length-prefixed framing for stream transports: each message is a 4-byte big-endian length, then
//! that many bytes. The reader checks the length against its limit before it allocates anything.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
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
    /// How long a started message may take to arrive whole.
    pub read: Duration,
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
    match tokio::time::timeout(limits.read, rest).await {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LIMITS: FrameLimits =
        FrameLimits { max_bytes: 16, idle: Duration::from_secs(5), read: Duration::from_secs(5) };

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
}
