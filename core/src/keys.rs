//! Key derivation and signing for the key methods.
//!
//! Derivation (documented in `spec/protocol.md`):
//! 1. mnemonic = BIP39 (English) of the wallet's entropy;
//! 2. seed = BIP39 `PBKDF2-HMAC-SHA512(mnemonic, "mnemonic", 2048)`, empty passphrase, 64 bytes;
//! 3. master = BIP32 `HMAC-SHA512("Bitcoin seed", seed)` → secret key ‖ chain code;
//! 4. children by BIP32 CKDpriv over secp256k1, paths like `m/44'/0'/0'/0/0` (`'` or `h` = hardened).
//!
//! Signatures are ECDSA over secp256k1 of `SHA-256(message bytes)`, 64-byte compact `r ‖ s`, low S.

use std::collections::HashMap;
use std::sync::PoisonError;

use crate::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use secp256k1::{Message, PublicKey, Scalar, SecretKey};
use sha2::{Digest, Sha256, Sha512};
use zeroize::{Zeroize, Zeroizing};

use crate::secret::{Entropy, MasterKey};

/// Hardened index offset.
pub const HARDENED: u32 = 0x8000_0000;
/// Deepest path accepted.
pub const MAX_DEPTH: usize = 32;

/// Errors of key derivation and signing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyPathError {
    /// The path text is not `m/...` with valid indexes.
    #[error("path must look like m/44'/0'/0'/0/0 (at most {MAX_DEPTH} levels, indexes below 2^31)")]
    BadPath,
    /// A derived key is invalid (probability below 2^-127; BIP32 says to skip the index).
    #[error("the derived key at this index is invalid; use the next index")]
    InvalidChild,
}

/// Parses a BIP32 path `m/a/b'/c h`, returning the indexes (hardened ones with the top bit set).
pub fn parse_path(text: &str) -> Result<Vec<u32>, KeyPathError> {
    let mut parts = text.split('/');
    if parts.next() != Some("m") {
        return Err(KeyPathError::BadPath);
    }
    let mut path = Vec::new();
    for part in parts {
        let (digits, hardened) = match part.strip_suffix('\'').or_else(|| part.strip_suffix('h')) {
            Some(digits) => (digits, true),
            None => (part, false),
        };
        if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(KeyPathError::BadPath);
        }
        let index: u32 = digits.parse().map_err(|_| KeyPathError::BadPath)?;
        if index >= HARDENED {
            return Err(KeyPathError::BadPath);
        }
        path.push(if hardened { index | HARDENED } else { index });
        if path.len() > MAX_DEPTH {
            return Err(KeyPathError::BadPath);
        }
    }
    Ok(path)
}

fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; 64]> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    let mut out = Zeroizing::new([0u8; 64]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// The mnemonic of some entropy, words separated by single spaces.
pub fn mnemonic_of(entropy: &Entropy) -> Zeroizing<String> {
    // `Entropy` only holds lengths that BIP39 accepts.
    let mnemonic = bip39::Mnemonic::from_entropy(entropy.expose()).expect("Entropy has a BIP39 length");
    let mut words = Zeroizing::new(String::with_capacity(24 * 9));
    for (i, word) in mnemonic.words().enumerate() {
        if i > 0 {
            words.push(' ');
        }
        words.push_str(word);
    }
    words
}

/// Parses an English BIP39 mnemonic (checksum checked) into its entropy.
pub fn entropy_of(mnemonic: &str) -> Option<Entropy> {
    let normalized = Zeroizing::new(mnemonic.split_whitespace().collect::<Vec<_>>().join(" "));
    let parsed = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &normalized).ok()?;
    Entropy::from_bytes(parsed.to_entropy())
}

/// The BIP32 master key of a wallet (steps 1–3 of the module docs).
pub fn master_key(entropy: &Entropy) -> MasterKey {
    let mnemonic = bip39::Mnemonic::from_entropy(entropy.expose()).expect("Entropy has a BIP39 length");
    let seed = Zeroizing::new(mnemonic.to_seed_normalized(""));
    master_from_seed(&seed[..])
}

/// BIP32 master key from a seed: `HMAC-SHA512("Bitcoin seed", seed)`.
pub fn master_from_seed(seed: &[u8]) -> MasterKey {
    let out = hmac_sha512(b"Bitcoin seed", &[seed]);
    MasterKey::from_bytes(*out)
}

/// grin-wallet's master secret for some entropy: `HMAC-SHA512("IamVoldemort", entropy)[..32]`
/// (grin uses the entropy as the BIP32 seed). Kept to check the reference vectors.
pub fn grin_master_secret(entropy: &Entropy) -> Zeroizing<[u8; 32]> {
    let out = hmac_sha512(b"IamVoldemort", &[entropy.expose()]);
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&out[..32]);
    secret
}

fn secret_key(bytes: &[u8]) -> Result<SecretKey, KeyPathError> {
    let mut array = [0u8; 32];
    array.copy_from_slice(&bytes[..32]);
    let key = SecretKey::from_secret_bytes(array).map_err(|_| KeyPathError::InvalidChild);
    array.zeroize();
    key
}

/// Compressed public keys one open wallet has computed, by derivation path.
///
/// Computing a public key from a secret key costs two multiplications of the secp256k1 generator
/// (the library re-blinds its context after every operation with a secret key), about 30 µs: a
/// non-hardened child needs its parent's public key, and `sign_message` and `get_public_key` answer
/// the key's own. The vault keeps one cache per open wallet, so these are computed once per wallet
/// and path. It holds public keys only (no private key, no chain code); it is bounded, wiped when
/// dropped, and dropped with the wallet (close, expiry, reopen).
#[derive(Default)]
pub struct PublicKeyCache {
    keys: Mutex<HashMap<Vec<u32>, [u8; 33]>>,
}

impl std::fmt::Debug for PublicKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKeyCache").finish_non_exhaustive()
    }
}

impl PublicKeyCache {
    /// Most paths remembered; when full, the cache is emptied and refilled.
    pub const MAX_PATHS: usize = 1024;

    /// The public key at `path`, from the cache or computed by `compute` (outside the cache's lock).
    pub fn get_or_compute(
        &self,
        path: &[u32],
        compute: impl FnOnce() -> Result<[u8; 33], KeyPathError>,
    ) -> Result<[u8; 33], KeyPathError> {
        if let Some(key) = self.keys.lock().unwrap_or_else(PoisonError::into_inner).get(path) {
            return Ok(*key);
        }
        let key = compute()?;
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if keys.len() >= Self::MAX_PATHS {
            keys.values_mut().for_each(Zeroize::zeroize);
            keys.clear();
        }
        keys.insert(path.to_vec(), key);
        Ok(key)
    }

    /// The compressed public key of `key`, the extended private key at `path`.
    pub fn public_key(&self, key: &MasterKey, path: &[u32]) -> Result<[u8; 33], KeyPathError> {
        self.get_or_compute(path, || Ok(public_key(key)?.serialize()))
    }
}

impl Drop for PublicKeyCache {
    fn drop(&mut self) {
        let keys = self.keys.get_mut().unwrap_or_else(PoisonError::into_inner);
        keys.values_mut().for_each(Zeroize::zeroize);
    }
}

/// Derives the extended private key at `path` below `master`.
pub fn derive(master: &MasterKey, path: &[u32]) -> Result<MasterKey, KeyPathError> {
    derive_cached(master, path, None)
}

/// [`derive`], taking the parents' public keys that non-hardened steps need from `cache` (and
/// remembering them there). `cache` must belong to `master`'s wallet.
pub fn derive_cached(
    master: &MasterKey,
    path: &[u32],
    cache: Option<&PublicKeyCache>,
) -> Result<MasterKey, KeyPathError> {
    let mut current = master.clone();
    for (depth, &index) in path.iter().enumerate() {
        let mut parent = secret_key(&current.0[..32])?;
        let index_bytes = index.to_be_bytes();
        let out = if index >= HARDENED {
            hmac_sha512(&current.0[32..], &[&[0u8], &current.0[..32], &index_bytes])
        } else {
            let compute = || Ok(PublicKey::from_secret_key(&parent).serialize());
            let public = match cache {
                Some(cache) => cache.get_or_compute(&path[..depth], compute),
                None => compute(),
            };
            let public = match public {
                Ok(public) => public,
                Err(error) => {
                    parent.non_secure_erase();
                    return Err(error);
                }
            };
            hmac_sha512(&current.0[32..], &[&public, &index_bytes])
        };
        let mut tweak_bytes = [0u8; 32];
        tweak_bytes.copy_from_slice(&out[..32]);
        let tweak = Scalar::from_be_bytes(tweak_bytes).map_err(|_| KeyPathError::InvalidChild);
        tweak_bytes.zeroize();
        let child = parent.add_tweak(&tweak?).map_err(|_| KeyPathError::InvalidChild);
        parent.non_secure_erase();
        let mut child = child?;
        current.0[..32].copy_from_slice(child.as_secret_bytes());
        current.0[32..].copy_from_slice(&out[32..]);
        child.non_secure_erase();
    }
    Ok(current)
}

/// The compressed public key (33 bytes) of an extended private key.
pub fn public_key(key: &MasterKey) -> Result<PublicKey, KeyPathError> {
    let mut secret = secret_key(&key.0[..32])?;
    let public = PublicKey::from_secret_key(&secret);
    secret.non_secure_erase();
    Ok(public)
}

fn digest(message: &[u8]) -> Message {
    Message::from_digest(Sha256::digest(message).into())
}

/// Signs `SHA-256(message)` with the key; 64-byte compact signature, low S.
pub fn sign(key: &MasterKey, message: &[u8]) -> Result<[u8; 64], KeyPathError> {
    let mut secret = secret_key(&key.0[..32])?;
    let signature = secp256k1::ecdsa::sign(digest(message), &secret).serialize_compact();
    secret.non_secure_erase();
    Ok(signature)
}

/// Verifies a 64-byte compact signature over `SHA-256(message)`; high-S signatures are refused.
pub fn verify(public: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    match secp256k1::ecdsa::Signature::from_compact(signature) {
        Ok(sig) => sig.verify(digest(message), public).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(text: &str) -> Vec<u8> {
        hex::decode(text).expect("test hex")
    }

    // BIP32 test vector 1.
    #[test]
    fn bip32_vector_1() {
        let master = master_from_seed(&hex32("000102030405060708090a0b0c0d0e0f"));
        assert_eq!(
            hex::encode(&master.expose()[..32]),
            "e8f32e723decf4051aefac8e2c93c9c5b214313817cdb01a1494b917c8436b35"
        );
        assert_eq!(
            hex::encode(&master.expose()[32..]),
            "873dff81c02f525623fd1fe5167eac3a55a049de3d314bb42ee227ffed37d508"
        );
        let child = derive(&master, &parse_path("m/0'").expect("path")).expect("derive");
        assert_eq!(
            hex::encode(&child.expose()[..32]),
            "edb2e14f9ee77d26dd93b4ecede8d16ed408ce149b6cd80b0715a2d911a0afea"
        );
        let child = derive(&master, &parse_path("m/0h/1").expect("path")).expect("derive");
        assert_eq!(
            hex::encode(&child.expose()[..32]),
            "3c6cb8d0f6a264c91ea8b5030fadaa8e538b020f0a387421a12de9319dc93368"
        );
        let deep = derive(&master, &parse_path("m/0'/1/2'/2/1000000000").expect("path")).expect("derive");
        assert_eq!(
            hex::encode(&deep.expose()[..32]),
            "471b76e389e528d6de6d816857e012c5455051cad6660850e58372a6c3e6e7c8"
        );
    }

    #[test]
    fn the_public_key_cache_computes_each_path_once_and_empties_when_full() {
        let cache = PublicKeyCache::default();
        let computed = std::cell::Cell::new(0);
        let key = |n: u8| {
            computed.set(computed.get() + 1);
            Ok([n; 33])
        };
        assert_eq!(cache.get_or_compute(&[1], || key(1)), Ok([1; 33]));
        assert_eq!(cache.get_or_compute(&[2], || key(2)), Ok([2; 33]));
        assert_eq!(cache.get_or_compute(&[1], || key(9)), Ok([1; 33]), "the cached key");
        assert_eq!(computed.get(), 2);
        for n in 3..=PublicKeyCache::MAX_PATHS as u32 {
            cache.get_or_compute(&[n], || key(0)).expect("a key");
        }
        assert_eq!(cache.get_or_compute(&[2], || key(9)), Ok([2; 33]), "still held when just full");
        cache.get_or_compute(&[0], || key(0)).expect("a key");
        assert_eq!(cache.get_or_compute(&[2], || key(9)), Ok([9; 33]), "emptied past the bound");
        assert_eq!(format!("{cache:?}"), "PublicKeyCache { .. }", "no key in its Debug");
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("m"), Ok(vec![]));
        assert_eq!(parse_path("m/44'/1h/2"), Ok(vec![44 | HARDENED, 1 | HARDENED, 2]));
        for bad in ["", "n/1", "m/", "m/x", "m/2147483648", "m/1''", "m/-1", "m/+1", "m/99999999999"] {
            assert_eq!(parse_path(bad), Err(KeyPathError::BadPath), "{bad}");
        }
        let deep = format!("m{}", "/1".repeat(MAX_DEPTH + 1));
        assert_eq!(parse_path(&deep), Err(KeyPathError::BadPath));
        let deepest = format!("m{}", "/7".repeat(MAX_DEPTH));
        assert_eq!(parse_path(&deepest).map(|p| p.len()), Ok(MAX_DEPTH), "exactly the most levels");
    }

    #[test]
    fn sign_then_verify() {
        let master = master_from_seed(&[1; 64]);
        let key = derive(&master, &[HARDENED, 1]).expect("derive");
        let public = public_key(&key).expect("public");
        let signature = sign(&key, b"hello").expect("sign");
        assert!(verify(&public, b"hello", &signature));
        assert!(!verify(&public, b"hellp", &signature));
        assert!(!verify(&public, b"hello", &signature[..63]));
    }

    #[test]
    fn cached_derivation_matches_uncached() {
        let master = master_from_seed(&hex32("000102030405060708090a0b0c0d0e0f"));
        let cache = PublicKeyCache::default();
        for text in ["m/0'/1/2'/2/1000000000", "m/0h/1", "m/44h/0h/0h/0/0", "m/44h/0h/0h/0/1", "m/1/2/3", "m"] {
            let path = parse_path(text).expect("path");
            for _ in 0..2 {
                let cached = derive_cached(&master, &path, Some(&cache)).expect("derive");
                let plain = derive(&master, &path).expect("derive");
                assert_eq!(cached.expose(), plain.expose(), "{text}");
                let public = cache.public_key(&cached, &path).expect("public");
                assert_eq!(public, public_key(&plain).expect("public").serialize(), "{text}");
            }
        }
        // A full cache starts over and keeps answering right.
        for index in 0..(PublicKeyCache::MAX_PATHS as u32 + 5) {
            let key = derive_cached(&master, &[index], Some(&cache)).expect("derive");
            assert_eq!(cache.public_key(&key, &[index]), Ok(public_key(&key).expect("public").serialize()));
        }
    }

    #[test]
    fn mnemonic_round_trip() {
        let entropy = Entropy::from_bytes(vec![0x42; 16]).expect("length");
        let words = mnemonic_of(&entropy);
        assert_eq!(words.split(' ').count(), 12);
        assert_eq!(entropy_of(&words), Some(entropy));
        assert_eq!(entropy_of("abandon abandon"), None);
    }
}
