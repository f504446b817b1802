//! The Owner API V3 envelope: ECDH key agreement and `encrypted_request_v3` sealing and opening.
//!
//! * Shared key = the 32-byte X coordinate of `peer_pub × own_secret`, used directly as the AES-256 key.
//! * `nonce`: 12 bytes as hex (longer nonces are accepted and their first 12 bytes used, as grin does).
//! * `body_enc`: standard base64 (padded) of AES-256-GCM ciphertext ‖ 16-byte tag, empty AAD.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use secp256k1::{PublicKey, SecretKey};
use zeroize::Zeroizing;

use crate::secret::SharedKey;

/// Length of an envelope nonce in bytes.
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;

/// Why an ECDH public key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not hex.
    #[error("ecdh_pubkey is not hex")]
    NotHex,
    /// Not 33 (compressed) or 65 (uncompressed) bytes; x-only keys (32 bytes) are refused.
    #[error("ecdh_pubkey must be a 33- or 65-byte SEC1 point, got {0} bytes")]
    Length(usize),
    /// Right length, but not a point on the curve.
    #[error("ecdh_pubkey is not a valid secp256k1 point")]
    NotOnCurve,
}

/// Parses a SEC1 public key given as hex: 33 bytes compressed or 65 bytes uncompressed.
pub fn parse_public_key(text: &str) -> Result<PublicKey, KeyError> {
    let bytes = hex::decode(text).map_err(|_| KeyError::NotHex)?;
    if bytes.len() != 33 && bytes.len() != 65 {
        return Err(KeyError::Length(bytes.len()));
    }
    PublicKey::from_slice(&bytes).map_err(|_| KeyError::NotOnCurve)
}

/// The V3 shared key: the raw X coordinate of `peer × secret` (no hash, no KDF).
pub fn shared_key(peer: &PublicKey, secret: &SecretKey) -> SharedKey {
    let mut point = Zeroizing::new(secp256k1::ecdh::shared_secret_point(peer, secret));
    let mut x = [0u8; 32];
    x.copy_from_slice(&point[..32]);
    let key = SharedKey::from_bytes(x);
    zeroize::Zeroize::zeroize(&mut x);
    zeroize::Zeroize::zeroize(&mut *point);
    key
}

/// Why an envelope could not be opened. None of these carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The nonce is not hex or shorter than 12 bytes.
    #[error("nonce must be at least 12 bytes of hex")]
    BadNonce,
    /// `body_enc` is not standard base64.
    #[error("body_enc is not standard base64")]
    BadBase64,
    /// The ciphertext is shorter than a tag.
    #[error("body_enc is shorter than an authentication tag")]
    Truncated,
    /// The tag does not verify under this key.
    #[error("authentication failed")]
    Authentication,
}

/// A session's cipher, keyed once.
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256Gcm,
    /// The same key as a bare block cipher, to decrypt one block ahead of the AEAD check.
    block: aes::Aes256,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(<redacted>)")
    }
}

impl Cipher {
    /// Keys AES-256-GCM with a shared key.
    pub fn new(key: &SharedKey) -> Self {
        let key = Key::<Aes256Gcm>::from(*key.expose());
        let block = <aes::Aes256 as aes::cipher::KeyInit>::new(&key);
        Self { aead: Aes256Gcm::new(&key), block }
    }

    /// Whether `ciphertext ‖ tag` under this key can be a JSON-RPC request: its first block,
    /// decrypted alone (GCM's first counter block is `nonce ‖ 00000002`), after any leading JSON
    /// white space, starts with `{` or `[` followed by `"`, `{`, `}`, `]` or white space (a block
    /// of white space, or one ending right after the bracket, passes). It authenticates nothing: a
    /// `true` must still pass [`Cipher::open_bytes`]; a `false` saves a pass over the body for a
    /// key that would decrypt it to garbage (all but about 1 in 4,000).
    /// A body shorter than two bytes passes (the AEAD check on it is cheap).
    pub fn may_start_json(&self, nonce: &[u8; NONCE_LEN], ciphertext: &[u8]) -> bool {
        use aes::cipher::BlockCipherEncrypt as _;
        let text = ciphertext.len().saturating_sub(TAG_LEN);
        if text < 2 {
            return true;
        }
        let mut block = aes::Block::default();
        block[..NONCE_LEN].copy_from_slice(nonce);
        block[15] = 2;
        self.block.encrypt_block(&mut block);
        let len = text.min(block.len());
        for (byte, key) in block[..len].iter_mut().zip(ciphertext) {
            *byte ^= key;
        }
        let white = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        let plain = &block[..len];
        let start = plain.iter().position(|b| !white(b));
        let verdict = match start {
            None => true,
            Some(i) => {
                matches!(plain[i], b'{' | b'[')
                    && plain.get(i + 1).is_none_or(|b| white(b) || matches!(b, b'"' | b'{' | b'}' | b']'))
            }
        };
        zeroize::Zeroize::zeroize(block.as_mut_slice());
        verdict
    }

    /// Encrypts `plaintext` in place (it becomes ciphertext ‖ tag) and returns `body_enc`.
    pub fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], buffer: &mut Vec<u8>) -> String {
        if !self.encrypt_in_place(nonce, buffer) {
            buffer.clear();
        }
        BASE64.encode(buffer)
    }

    /// Encrypts `buffer` in place into `ciphertext ‖ tag` (the server then base64-encodes it
    /// straight into its answer). `false` if it could not: the buffer then holds no ciphertext.
    #[must_use]
    pub fn encrypt_in_place(&self, nonce: &[u8; NONCE_LEN], buffer: &mut Vec<u8>) -> bool {
        buffer.reserve(TAG_LEN);
        // Encryption into a Vec only fails when the buffer cannot grow, which `reserve` ruled out,
        // or for messages longer than 64 GiB, which no caller can build.
        self.aead.encrypt_in_place(&Nonce::from(*nonce), b"", buffer).is_ok()
    }

    /// Encrypts a copy of `plaintext`; returns `body_enc`.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], plaintext: &[u8]) -> String {
        let mut buffer = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        buffer.extend_from_slice(plaintext);
        self.seal_in_place(nonce, &mut buffer)
    }

    /// Decrypts an already decoded `ciphertext ‖ tag`; the plaintext is wiped when dropped.
    pub fn open_bytes(&self, nonce: &[u8; NONCE_LEN], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        if ciphertext.len() < TAG_LEN {
            return Err(OpenError::Truncated);
        }
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        self.aead.decrypt_in_place(&Nonce::from(*nonce), b"", &mut *buffer).map_err(|_| OpenError::Authentication)?;
        Ok(buffer)
    }

    /// Decrypts `ciphertext ‖ tag` in place; on success the buffer holds the plaintext. On failure its
    /// content is unspecified.
    pub fn open_in_place(&self, nonce: &[u8; NONCE_LEN], buffer: &mut Vec<u8>) -> Result<(), OpenError> {
        if buffer.len() < TAG_LEN {
            return Err(OpenError::Truncated);
        }
        self.aead.decrypt_in_place(&Nonce::from(*nonce), b"", buffer).map_err(|_| OpenError::Authentication)
    }

    /// Decodes and decrypts `body_enc` (in the decoded buffer: no second copy).
    pub fn open(&self, nonce: &[u8; NONCE_LEN], body_enc: &str) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let mut buffer = Zeroizing::new(decode_body(body_enc)?);
        self.open_in_place(nonce, &mut buffer)?;
        Ok(buffer)
    }
}

/// Parses an envelope nonce: hex, at least 12 bytes; like grin, only the first 12 are used.
pub fn parse_nonce(text: &str) -> Result<[u8; NONCE_LEN], OpenError> {
    if text.len() < 2 * NONCE_LEN || text.len() > 1024 {
        return Err(OpenError::BadNonce);
    }
    let bytes = hex::decode(text).map_err(|_| OpenError::BadNonce)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&bytes[..NONCE_LEN]);
    Ok(nonce)
}

/// Decodes `body_enc` (standard base64 with padding).
pub fn decode_body(body_enc: &str) -> Result<Vec<u8>, OpenError> {
    BASE64.decode(body_enc).map_err(|_| OpenError::BadBase64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_screen_passes_every_json_start_and_turns_away_most_keys() {
        let cipher = Cipher::new(&SharedKey::from_bytes([3; 32]));
        let nonce = [9; 12];
        let screened =
            |plain: &[u8]| cipher.may_start_json(&nonce, &decode_body(&cipher.seal(&nonce, plain)).expect("base64"));
        for plain in [
            &b"{\"jsonrpc\":\"2.0\"}"[..],
            b"[{\"id\":1}]",
            b"{ \"id\": 1}",
            b"\n\t {\"id\":1}",
            b"                {\"id\":1}",
            b"   {",
            b"{}",
            b"[]",
        ] {
            assert!(screened(plain), "{:?}", String::from_utf8_lossy(plain));
        }
        for plain in [&b"x{\"id\":1}"[..], b" x", b"{x", b"\"{}\"", b"1234"] {
            assert!(!screened(plain), "{:?}", String::from_utf8_lossy(plain));
        }
        // Garbage under 4,096 keys: about 1 in 4,000 passes.
        let garbage = [0x5a; 64];
        let passed = (0..4096u32)
            .filter(|i| {
                let mut key = [0u8; 32];
                key[..4].copy_from_slice(&i.to_le_bytes());
                Cipher::new(&SharedKey::from_bytes(key)).may_start_json(&nonce, &garbage)
            })
            .count();
        assert!(passed <= 8, "{passed} of 4096 keys pass the screen");
    }

    #[test]
    fn a_cipher_prints_no_key() {
        let cipher = Cipher::new(&SharedKey::from_bytes([0xcd; 32]));
        assert_eq!(format!("{cipher:?}"), "Cipher(<redacted>)");
    }

    #[test]
    fn round_trip_and_tamper() {
        let cipher = Cipher::new(&SharedKey::from_bytes([3; 32]));
        let nonce = [9; 12];
        let body = cipher.seal(&nonce, b"{\"a\":1}");
        assert_eq!(&**cipher.open(&nonce, &body).expect("opens"), b"{\"a\":1}");
        let mut raw = decode_body(&body).expect("base64");
        raw[0] ^= 1;
        assert_eq!(cipher.open_bytes(&nonce, &raw), Err(OpenError::Authentication));
        assert_eq!(cipher.open(&[8; 12], &body), Err(OpenError::Authentication));
        assert_eq!(cipher.open_bytes(&nonce, &raw[..15]), Err(OpenError::Truncated));
        assert_eq!(cipher.open(&nonce, "not base64!"), Err(OpenError::BadBase64));
    }

    #[test]
    fn a_tag_alone_is_an_empty_message_and_less_is_truncated() {
        let cipher = Cipher::new(&SharedKey::from_bytes([3; 32]));
        let nonce = [9; 12];
        let raw = decode_body(&cipher.seal(&nonce, b"")).expect("base64");
        assert_eq!(raw.len(), TAG_LEN);
        assert_eq!(cipher.open_bytes(&nonce, &raw).map(|p| p.len()), Ok(0));
        let mut buffer = raw.clone();
        assert_eq!(cipher.open_in_place(&nonce, &mut buffer), Ok(()));
        assert!(buffer.is_empty());
        let mut short = raw[..TAG_LEN - 1].to_vec();
        assert_eq!(cipher.open_in_place(&nonce, &mut short), Err(OpenError::Truncated));
        assert_eq!(cipher.open_bytes(&nonce, &raw[..TAG_LEN - 1]), Err(OpenError::Truncated));
    }

    #[test]
    fn nonces_up_to_1024_hex_characters_are_read() {
        assert_eq!(parse_nonce(&"0a".repeat(512)), Ok([10; 12]));
        assert_eq!(parse_nonce(&"0a".repeat(513)), Err(OpenError::BadNonce));
    }

    #[test]
    fn nonce_rules_follow_grin() {
        assert_eq!(parse_nonce("000102030405060708090a0b"), Ok([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]));
        assert_eq!(parse_nonce("000102030405060708090a0bffff").map(|n| n[11]), Ok(11));
        assert_eq!(parse_nonce("000102030405060708090a"), Err(OpenError::BadNonce));
        assert_eq!(parse_nonce("000102030405060708090a0g"), Err(OpenError::BadNonce));
    }

    #[test]
    fn public_keys_must_be_33_or_65_bytes() {
        let sk = SecretKey::from_secret_bytes([5; 32]).expect("valid scalar");
        let pk = PublicKey::from_secret_key(&sk);
        assert!(parse_public_key(&hex::encode(pk.serialize())).is_ok());
        assert!(parse_public_key(&hex::encode(pk.serialize_uncompressed())).is_ok());
        assert_eq!(parse_public_key(&hex::encode(&pk.serialize()[1..])), Err(KeyError::Length(32)));
        assert_eq!(parse_public_key("xyz"), Err(KeyError::NotHex));
        assert_eq!(parse_public_key(&format!("05{}", "11".repeat(32))), Err(KeyError::NotOnCurve));
    }
}
