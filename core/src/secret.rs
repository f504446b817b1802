//! Secret newtypes: they wipe themselves on drop, print nothing secret, and are read only through an
//! explicit `expose` call.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Writes `Name(<redacted>)` for a secret type.
macro_rules! redacted_debug {
    ($name:ident) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

/// The AES-256-GCM key of one session: the raw X coordinate of the ECDH point (Owner API V3).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SharedKey([u8; 32]);
redacted_debug!(SharedKey);

impl SharedKey {
    /// Wraps key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A wallet token: 32 random bytes, sent as 64 lowercase hex characters.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Token([u8; 32]);
redacted_debug!(Token);

impl Token {
    /// Wraps token bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// Parses 64 hex characters (either case). `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }
    /// The token bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
    /// 64 lowercase hex characters, wiped on drop.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }
}

/// A wallet password.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Password(String);
redacted_debug!(Password);

impl Password {
    /// Wraps a password.
    pub fn new(text: String) -> Self {
        Self(text)
    }
    /// The password text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Password {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

/// BIP39 entropy (16 to 32 bytes): what a wallet's seed record encrypts and what its mnemonic encodes.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Entropy(Vec<u8>);
redacted_debug!(Entropy);

impl Entropy {
    /// Entropy lengths BIP39 allows, in bytes (12, 15, 18, 21, 24 words).
    pub const LENGTHS: [usize; 5] = [16, 20, 24, 28, 32];

    /// Wraps entropy bytes; `None` unless the length is one BIP39 allows.
    pub fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        if Self::LENGTHS.contains(&bytes.len()) {
            Some(Self(bytes))
        } else {
            let mut bytes = bytes;
            bytes.zeroize();
            None
        }
    }
    /// The entropy bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// A BIP32 extended private key: 32 bytes of secret key, then 32 bytes of chain code.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey(pub(crate) [u8; 64]);
redacted_debug!(MasterKey);

impl MasterKey {
    /// Wraps the 64 bytes (key ‖ chain code).
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }
    /// The 64 bytes (key ‖ chain code).
    pub fn expose(&self) -> &[u8; 64] {
        &self.0
    }
}

/// A growable byte buffer for plaintext that may hold secrets (an inner answer can carry a token or
/// a mnemonic). A `Vec` that outgrows its block copies the bytes to a larger one and frees the old
/// block as it is, so a plaintext copy stays behind in freed memory; this buffer allocates the larger
/// block itself, copies, and wipes the old block before freeing it. It wipes itself on drop.
#[derive(Default)]
pub struct SecretBuffer(Vec<u8>);

impl SecretBuffer {
    /// An empty buffer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// Makes room for `additional` more bytes, moving to a larger block (at least twice the size)
    /// if needed and wiping the old one.
    pub fn reserve(&mut self, additional: usize) {
        if self.0.capacity() - self.0.len() >= additional {
            return;
        }
        // `Vec::with_capacity` panics on an impossible size, as `Vec::reserve` would.
        let capacity = self.0.len().saturating_add(additional).max(self.0.capacity().saturating_mul(2));
        let mut larger = Vec::with_capacity(capacity);
        larger.extend_from_slice(&self.0);
        let mut old = std::mem::replace(&mut self.0, larger);
        wipe_block(&mut old);
    }

    /// Appends bytes.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.0.extend_from_slice(bytes);
    }

    /// Appends one byte.
    pub fn push(&mut self, byte: u8) {
        self.reserve(1);
        self.0.push(byte);
    }

    /// The bytes written so far.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as a `Vec`, for work in place that does not grow it, like encryption in place
    /// after [`reserve`](Self::reserve) made room for the tag. Growing the `Vec` through this
    /// reference would reallocate without the wipe.
    pub fn as_mut_vec(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// The capacity of the current block.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl std::io::Write for SecretBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SecretBuffer {
    fn drop(&mut self) {
        wipe_block(&mut self.0);
    }
}

/// Empties `block` and writes zeros over its whole capacity with one `memset`, kept by `black_box`
/// as [`write_zeros`] is. (`zeroize`'s volatile byte-by-byte writes over an answer's 4 KiB block
/// cost more than the rest of an `accounts` call's core work together.) The residency tests check
/// that no answer bytes are left behind.
fn wipe_block(block: &mut Vec<u8>) {
    block.clear();
    let spare = std::hint::black_box(block.spare_capacity_mut());
    spare.fill(std::mem::MaybeUninit::new(0));
    std::hint::black_box(spare);
}

impl fmt::Debug for SecretBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBuffer({} bytes, <redacted>)", self.0.len())
    }
}

/// Overwrites every string in a JSON value (parsed requests and built answers can hold passwords,
/// mnemonics and tokens) before it is dropped.
pub fn wipe_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe_json),
        Value::Object(map) => map.values_mut().for_each(wipe_json),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// How much stack [`scrub_stack`] overwrites: deeper than any call of the core goes, with room to
/// spare. `core/tests/stack_scrub.rs` measures every method: the KDF calls (Argon2id, PBKDF2 of
/// BIP39) touch about 24 KiB below `Server::handle` in release builds and 123 KiB in debug builds,
/// whose frames are several times larger, so the size depends on the profile.
pub const SCRUB_STACK_BYTES: usize = if cfg!(debug_assertions) { 256 * 1024 } else { 96 * 1024 };

/// Overwrites the stack below the caller's frame with zeros. Library code (AES-GCM's block buffers,
/// BIP39, PBKDF2, Argon2) leaves copies of what it handled in dead stack frames; a call that handled
/// secrets scrubs them before it returns, so they do not linger until the stack is reused.
#[inline(never)]
pub fn scrub_stack() {
    write_zeros(&mut [0u64; SCRUB_STACK_BYTES / 8]);
}

/// How much stack [`scrub_stack_shallow`] overwrites: deeper than a call that runs no KDF goes
/// (measured by `core/tests/stack_scrub.rs`: at most 14.2 KiB below `Server::handle` in release
/// builds, `verify_message`, and 52 KiB in debug builds), with a margin the compiler's frame sizes
/// will not eat: the test fails, with the depth reached, if a call outgrows it.
pub const SCRUB_STACK_SHALLOW_BYTES: usize = if cfg!(debug_assertions) { 96 * 1024 } else { 32 * 1024 };

/// How much stack [`scrub_stack_before_audit`] overwrites: half of the shallow scrub, so that the
/// area, which starts at the dispatcher's frame, stays within the scrub the call ends with, and
/// far more than the audit queue's own frames use.
pub const SCRUB_BEFORE_AUDIT_BYTES: usize = SCRUB_STACK_SHALLOW_BYTES / 2;

/// Overwrites the dead frames of the method that just returned, before its audit event is queued:
/// a new map node or a moved value's unused bytes can be copied from stale stack into the heap.
#[inline(never)]
pub fn scrub_stack_before_audit() {
    write_zeros(&mut [0u64; SCRUB_BEFORE_AUDIT_BYTES / 8]);
}

/// [`scrub_stack`] for the calls answered in place (no KDF, no BIP39): a shallower area.
#[inline(never)]
pub fn scrub_stack_shallow() {
    write_zeros(&mut [0u64; SCRUB_STACK_SHALLOW_BYTES / 8]);
}

/// Writes zeros over a stack area with a plain `memset` (several times faster than `zeroize`'s
/// word-by-word volatile writes), kept from being optimized away by `black_box` on both sides. The
/// residency test (`cli/tests/residency.rs`) checks the result on a live server, debug and release.
#[inline(never)]
fn write_zeros(area: &mut [u64]) {
    let area = std::hint::black_box(area);
    area.fill(0);
    std::hint::black_box(area);
}

/// A JSON value that is wiped on drop.
#[derive(Default)]
pub struct WipedJson(pub serde_json::Value);

impl Drop for WipedJson {
    fn drop(&mut self) {
        wipe_json(&mut self.0);
    }
}

impl fmt::Debug for WipedJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WipedJson(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_secret() {
        let token = Token::from_bytes([0xab; 32]);
        let password = Password::from("hunter2-secret");
        let key = SharedKey::from_bytes([0xcd; 32]);
        let all = format!("{token:?} {password:?} {key:?}");
        assert!(!all.contains("ab"), "{all}");
        assert!(!all.contains("hunter2"), "{all}");
        assert!(!all.contains("cd"), "{all}");
        assert!(all.contains("<redacted>"));
    }

    #[test]
    fn every_secret_type_prints_its_name_only() {
        let entropy = Entropy::from_bytes(vec![0xab; 16]).expect("16 bytes");
        let printed = [
            format!("{:?}", SharedKey::from_bytes([0xab; 32])),
            format!("{:?}", Token::from_bytes([0xab; 32])),
            format!("{:?}", Password::from("hunter2")),
            format!("{entropy:?}"),
            format!("{:?}", MasterKey::from_bytes([0xab; 64])),
            format!("{:?}", WipedJson(serde_json::json!("hunter2"))),
        ];
        assert_eq!(
            printed,
            [
                "SharedKey(<redacted>)",
                "Token(<redacted>)",
                "Password(<redacted>)",
                "Entropy(<redacted>)",
                "MasterKey(<redacted>)",
                "WipedJson(<redacted>)"
            ]
        );
        let mut buffer = SecretBuffer::default();
        buffer.extend_from_slice(b"abc");
        assert_eq!(format!("{buffer:?}"), "SecretBuffer(3 bytes, <redacted>)");
    }

    #[test]
    fn the_scrubs_reach_below_the_deepest_measured_calls() {
        // `core/tests/stack_scrub.rs` measured how far below `Server::handle` calls go (see the
        // constants' docs); that test sizes its own check by these constants, so the bounds are
        // pinned here.
        let (kdf_calls, other_calls) = if cfg!(debug_assertions) { (123, 52) } else { (24, 15) };
        let (deep, shallow) = std::hint::black_box((SCRUB_STACK_BYTES, SCRUB_STACK_SHALLOW_BYTES));
        assert!(deep > kdf_calls * 1024, "{deep}");
        assert!(shallow > other_calls * 1024, "{shallow}");
        assert!(deep >= shallow);
    }

    #[test]
    fn token_hex_round_trip_and_rejects_bad_lengths() {
        let token = Token::from_bytes([7; 32]);
        let hex = token.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(Token::from_hex(&hex).map(|t| *t.expose()), Some([7; 32]));
        assert!(Token::from_hex("abcd").is_none());
        assert!(Token::from_hex(&"zz".repeat(32)).is_none());
    }

    #[test]
    fn entropy_lengths_are_bip39s() {
        for len in 0..40 {
            assert_eq!(Entropy::from_bytes(vec![1; len]).is_some(), Entropy::LENGTHS.contains(&len));
        }
    }

    #[test]
    fn secret_buffer_grows_by_copying_and_keeps_every_byte() {
        let mut buffer = SecretBuffer::with_capacity(4);
        buffer.extend_from_slice(b"abc");
        buffer.push(b'd');
        let small = buffer.capacity();
        buffer.push(b'e');
        assert!(buffer.capacity() >= 2 * small);
        assert!(std::io::Write::write_all(&mut buffer, &[b'x'; 100]).is_ok());
        assert!(buffer.capacity() >= 105);
        assert_eq!(&buffer.expose()[..5], b"abcde");
        assert_eq!(buffer.expose().len(), 105);
        buffer.reserve(16);
        let before = buffer.capacity();
        buffer.as_mut_vec().extend_from_slice(&[0; 16]);
        assert_eq!(buffer.capacity(), before, "reserve made room, so the Vec did not grow");
        assert!(!format!("{buffer:?}").contains("abc"));
    }

    #[test]
    fn wipe_json_clears_nested_strings() {
        let mut value = serde_json::json!({"a": ["secret", {"b": "other"}], "n": 1});
        wipe_json(&mut value);
        assert_eq!(value, serde_json::json!({"a": ["", {"b": ""}], "n": 1}));
    }
}
