//! The browsers' native-messaging framing, sans-IO: each message is a 32-bit length in the
//! machine's native byte order, then that many bytes of UTF-8 JSON (Chrome, Chromium and Firefox
//! agree). A browser refuses a message from its host above 1 MiB, so [`encode`] does too; it lets an
//! extension send up to 64 MiB (Chrome) or 4 GiB (Firefox), so a host sets its own, smaller limit
//! for what it reads ([`Decoder::new`]).
//!
//! [`Decoder`] takes bytes as they arrive ([`Decoder::push`]) and hands out whole messages
//! ([`Decoder::next_message`]); [`Decoder::finish`] tells a clean end from a truncated frame when
//! the input closes. A length above the limit is refused as soon as its four bytes are in, before
//! any of the body is buffered.

/// The largest message a browser takes from its host (1 MiB, Chrome's and Firefox's limit).
pub const HOST_TO_BROWSER_MAX: usize = 1024 * 1024;

/// The prefix: a `u32` length in native byte order.
pub const PREFIX_LEN: usize = 4;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NativeError {
    /// The length is above the limit.
    #[error("a message of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The input ended inside a frame.
    #[error("the input ended inside a message ({have} of {want} bytes)")]
    Truncated {
        /// Bytes of the frame (prefix included) that arrived.
        have: usize,
        /// Bytes the frame needed (prefix included; 4 while the prefix is incomplete).
        want: usize,
    },
    /// The body is not UTF-8 JSON.
    #[error("a message is not UTF-8 JSON: {0}")]
    NotJson(String),
}

/// Reads frames from a byte stream, one message at a time, holding at most one frame's bytes.
#[derive(Debug)]
pub struct Decoder {
    max: usize,
    buffer: Vec<u8>,
    failed: bool,
}

impl Decoder {
    /// A decoder that refuses messages longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { max, buffer: Vec::new(), failed: false }
    }

    /// How many more bytes to read to complete the frame under way (at least 1): read that many at
    /// most, and the decoder never holds more than one frame.
    pub fn wanted(&self) -> usize {
        match self.announced() {
            None => PREFIX_LEN - self.buffer.len(),
            Some(len) => (PREFIX_LEN + len).saturating_sub(self.buffer.len()).max(1),
        }
    }

    fn announced(&self) -> Option<usize> {
        let prefix: [u8; PREFIX_LEN] = self.buffer.get(..PREFIX_LEN)?.try_into().ok()?;
        usize::try_from(u32::from_ne_bytes(prefix)).ok()
    }

    /// Takes bytes that arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` while one is incomplete. After an error the decoder
    /// stays failed: the stream cannot be resynchronised.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, NativeError> {
        if self.failed {
            return Err(NativeError::TooLarge { len: self.announced().map_or(0, |l| l as u64), max: self.max });
        }
        let Some(len) = self.announced() else { return Ok(None) };
        if len > self.max {
            self.failed = true;
            return Err(NativeError::TooLarge { len: len as u64, max: self.max });
        }
        if self.buffer.len() < PREFIX_LEN + len {
            return Ok(None);
        }
        let rest = self.buffer.split_off(PREFIX_LEN + len);
        let mut frame = std::mem::replace(&mut self.buffer, rest);
        frame.drain(..PREFIX_LEN);
        Ok(Some(frame))
    }

    /// The input ended: `Ok(())` between frames, else the truncated frame.
    pub fn finish(&self) -> Result<(), NativeError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let want = self.announced().map_or(PREFIX_LEN, |len| PREFIX_LEN.saturating_add(len));
        Err(NativeError::Truncated { have: self.buffer.len(), want })
    }
}

/// Checks that a message is UTF-8 JSON (what every browser sends and takes).
pub fn check_json(message: &[u8]) -> Result<(), NativeError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(message)
        .map(|_| ())
        .map_err(|error| NativeError::NotJson(error.to_string()))
}

/// One frame for the browser: the prefix and `message`, refused above [`HOST_TO_BROWSER_MAX`].
pub fn encode(message: &[u8]) -> Result<Vec<u8>, NativeError> {
    if message.len() > HOST_TO_BROWSER_MAX {
        return Err(NativeError::TooLarge { len: message.len() as u64, max: HOST_TO_BROWSER_MAX });
    }
    let len = u32::try_from(message.len())
        .map_err(|_| NativeError::TooLarge { len: message.len() as u64, max: HOST_TO_BROWSER_MAX })?;
    let mut frame = Vec::with_capacity(PREFIX_LEN + message.len());
    frame.extend_from_slice(&len.to_ne_bytes());
    frame.extend_from_slice(message);
    Ok(frame)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

    use super::*;

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        let stream: Vec<u8> = [&b"{\"a\":1}"[..], b"[]", b"\"x\""].iter().flat_map(|m| encode(m).unwrap()).collect();
        for chunk in 1..=stream.len() {
            let mut decoder = Decoder::new(64);
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                decoder.push(piece);
                while let Some(message) = decoder.next_message().unwrap() {
                    out.push(message);
                }
            }
            decoder.finish().unwrap();
            assert_eq!(out, vec![b"{\"a\":1}".to_vec(), b"[]".to_vec(), b"\"x\"".to_vec()], "chunk {chunk}");
        }
    }

    #[test]
    fn reading_what_it_wants_never_reads_past_the_frame() {
        let frame = encode(b"[1,2]").unwrap();
        let mut decoder = Decoder::new(64);
        let mut wanted = Vec::new();
        for byte in &frame {
            wanted.push(decoder.wanted());
            decoder.push(std::slice::from_ref(byte));
        }
        assert_eq!(wanted, [4, 3, 2, 1, 5, 4, 3, 2, 1]);
        assert_eq!(decoder.next_message().unwrap(), Some(b"[1,2]".to_vec()));
        assert_eq!(decoder.wanted(), 4, "the next prefix");
    }

    #[test]
    fn a_length_above_the_limit_is_refused_before_its_body_arrives() {
        let mut decoder = Decoder::new(10);
        decoder.push(&11u32.to_ne_bytes());
        assert_eq!(decoder.next_message(), Err(NativeError::TooLarge { len: 11, max: 10 }));
        assert!(decoder.next_message().is_err(), "stays failed");
        let mut decoder = Decoder::new(10);
        decoder.push(&10u32.to_ne_bytes());
        assert_eq!(decoder.wanted(), 10);
        assert_eq!(decoder.next_message(), Ok(None));
    }

    #[test]
    fn an_end_inside_a_frame_is_truncated_and_between_frames_is_clean() {
        let mut decoder = Decoder::new(100);
        decoder.push(&[5, 0]);
        assert_eq!(decoder.finish(), Err(NativeError::Truncated { have: 2, want: 4 }));
        decoder.push(&[0, 0, b'{']);
        assert_eq!(decoder.next_message(), Ok(None));
        assert!(matches!(decoder.finish(), Err(NativeError::Truncated { have: 5, .. })));
        assert!(Decoder::new(1).finish().is_ok());
    }

    #[test]
    fn the_host_never_sends_more_than_a_browser_takes() {
        // The browsers' limit is 1 MiB: a message of exactly that size goes out, one byte more does not.
        assert!(encode(&vec![b' '; 1 << 20]).is_ok());
        assert!(matches!(encode(&vec![b' '; (1 << 20) + 1]), Err(NativeError::TooLarge { .. })));
        assert_eq!(&encode(b"{}").unwrap()[..4], &2u32.to_ne_bytes());
    }

    #[test]
    fn only_utf8_json_passes() {
        assert!(check_json(b"{\"jsonrpc\":\"2.0\"}").is_ok());
        assert!(check_json(b"{").is_err());
        assert!(check_json(b"\xff").is_err());
    }
}
