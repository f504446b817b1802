//! Seed records at rest: the wallet's BIP39 entropy encrypted under a key from Argon2id.
//!
//! A record is JSON (versioned, self-describing):
//! `{"version":1,"kdf":{"algorithm":"argon2id","m_cost_kib":65536,"t_cost":3,"p_cost":4},
//!   "salt":"<32 hex>","nonce":"<24 hex>","ciphertext":"<hex: AES-256-GCM ciphertext ‖ tag>"}`.
//! The AAD binds the version, the KDF parameters and the salt, so a record whose parameters were
//! edited (say, weakened) does not decrypt.
//!
//! grin-wallet's `wallet.seed` (PBKDF2-HMAC-SHA512 ×100 + ChaCha20-Poly1305) is read for import only.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::secret::{Entropy, Password};

/// The record version this code writes.
pub const VERSION: u32 = 1;

/// Argon2id parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// The default: m = 64 MiB, t = 3, p = 4.
    pub const DEFAULT: Self = Self { m_cost_kib: 64 * 1024, t_cost: 3, p_cost: 4 };
    /// Small parameters for tests and fuzzing only (about a millisecond).
    pub const INSECURE_FOR_TESTS: Self = Self { m_cost_kib: 64, t_cost: 1, p_cost: 1 };
    /// The largest memory cost a record may ask for (1 GiB), so a damaged record cannot exhaust memory.
    pub const MAX_M_COST_KIB: u32 = 1024 * 1024;
    /// The largest pass and lane counts a record may ask for.
    pub const MAX_T_P: u32 = 64;

    /// Whether these parameters cost at least as much as `other` in every dimension, and more in one.
    pub fn stronger_than(&self, other: &KdfParams) -> bool {
        self.m_cost_kib >= other.m_cost_kib
            && self.t_cost >= other.t_cost
            && self.p_cost >= other.p_cost
            && self != other
    }

    fn argon2(&self) -> Result<argon2::Argon2<'static>, SeedRecordError> {
        if self.m_cost_kib > Self::MAX_M_COST_KIB || self.t_cost > Self::MAX_T_P || self.p_cost > Self::MAX_T_P {
            return Err(SeedRecordError::Malformed);
        }
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|_| SeedRecordError::Malformed)?;
        Ok(argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params))
    }

    /// Derives a 32-byte key from a password and salt.
    pub fn derive(&self, password: &Password, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, SeedRecordError> {
        let mut key = Zeroizing::new([0u8; 32]);
        self.argon2()?
            .hash_password_into(password.expose().as_bytes(), salt, &mut *key)
            .map_err(|_| SeedRecordError::Malformed)?;
        Ok(key)
    }
}

/// Why a seed record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeedRecordError {
    /// The bytes are not a record of a version this code knows, or its parameters are out of range.
    #[error("seed record is malformed or of an unknown version")]
    Malformed,
    /// The password is wrong (or the record was altered).
    #[error("wrong password")]
    WrongPassword,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfField {
    algorithm: String,
    #[serde(flatten)]
    params: KdfParams,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordJson {
    version: u32,
    kdf: KdfField,
    salt: String,
    nonce: String,
    ciphertext: String,
}

/// An encrypted seed record, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedRecord {
    /// The KDF parameters it was written with.
    pub kdf: KdfParams,
    salt: [u8; 16],
    nonce: [u8; 12],
    ciphertext: Vec<u8>,
}

fn aad(kdf: &KdfParams, salt: &[u8; 16]) -> Vec<u8> {
    format!(
        "keyward-seed-record/v{VERSION}/argon2id/m={}/t={}/p={}/salt={}",
        kdf.m_cost_kib,
        kdf.t_cost,
        kdf.p_cost,
        hex::encode(salt)
    )
    .into_bytes()
}

impl SeedRecord {
    /// Encrypts entropy under a password. `salt` and `nonce` must be fresh random bytes.
    pub fn seal(
        entropy: &Entropy,
        password: &Password,
        kdf: KdfParams,
        salt: [u8; 16],
        nonce: [u8; 12],
    ) -> Result<Self, SeedRecordError> {
        let key = kdf.derive(password, &salt)?;
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
        let mut buffer = Zeroizing::new(Vec::with_capacity(entropy.expose().len() + 16));
        buffer.extend_from_slice(entropy.expose());
        cipher
            .encrypt_in_place(&Nonce::from(nonce), &aad(&kdf, &salt), &mut *buffer)
            .map_err(|_| SeedRecordError::Malformed)?;
        Ok(Self { kdf, salt, nonce, ciphertext: buffer.to_vec() })
    }

    /// Decrypts with a password.
    pub fn open(&self, password: &Password) -> Result<Entropy, SeedRecordError> {
        let key = self.kdf.derive(password, &self.salt)?;
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
        let mut buffer = Zeroizing::new(self.ciphertext.clone());
        cipher
            .decrypt_in_place(&Nonce::from(self.nonce), &aad(&self.kdf, &self.salt), &mut *buffer)
            .map_err(|_| SeedRecordError::WrongPassword)?;
        Entropy::from_bytes(buffer.to_vec()).ok_or(SeedRecordError::Malformed)
    }

    /// The record's bytes as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        let json = RecordJson {
            version: VERSION,
            kdf: KdfField { algorithm: "argon2id".into(), params: self.kdf },
            salt: hex::encode(self.salt),
            nonce: hex::encode(self.nonce),
            ciphertext: hex::encode(&self.ciphertext),
        };
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(&json).expect("a record of strings and integers serializes")
    }

    /// Parses stored bytes; any damage gives `Malformed`, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SeedRecordError> {
        let json: RecordJson = serde_json::from_slice(bytes).map_err(|_| SeedRecordError::Malformed)?;
        if json.version != VERSION || json.kdf.algorithm != "argon2id" {
            return Err(SeedRecordError::Malformed);
        }
        json.kdf.params.argon2()?;
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 12];
        hex::decode_to_slice(&json.salt, &mut salt).map_err(|_| SeedRecordError::Malformed)?;
        hex::decode_to_slice(&json.nonce, &mut nonce).map_err(|_| SeedRecordError::Malformed)?;
        let ciphertext = hex::decode(&json.ciphertext).map_err(|_| SeedRecordError::Malformed)?;
        if !(16 + 16..=32 + 16).contains(&ciphertext.len()) {
            return Err(SeedRecordError::Malformed);
        }
        Ok(Self { kdf: json.kdf.params, salt, nonce, ciphertext })
    }
}

/// grin-wallet's `wallet.seed`: `{"encrypted_seed","salt","nonce"}` in lowercase hex.
#[derive(Debug, Clone, Deserialize)]
pub struct GrinWalletSeed {
    encrypted_seed: String,
    salt: String,
    nonce: String,
}

/// The iteration count grin-wallet uses for its seed file.
pub const GRIN_PBKDF2_ROUNDS: u32 = 100;

impl GrinWalletSeed {
    /// Parses the file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SeedRecordError> {
        serde_json::from_slice(bytes).map_err(|_| SeedRecordError::Malformed)
    }

    /// Parses the file's JSON value.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, SeedRecordError> {
        Self::deserialize(value).map_err(|_| SeedRecordError::Malformed)
    }

    /// grin's key: PBKDF2-HMAC-SHA512(password, salt, 100 rounds, 32 bytes).
    pub fn derive_key(password: &Password, salt: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut key = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.expose().as_bytes(), salt, GRIN_PBKDF2_ROUNDS, &mut *key);
        key
    }

    /// Decrypts the entropy with ChaCha20-Poly1305 (empty AAD).
    pub fn open(&self, password: &Password) -> Result<Entropy, SeedRecordError> {
        use chacha20poly1305::ChaCha20Poly1305;
        let salt = hex::decode(&self.salt).map_err(|_| SeedRecordError::Malformed)?;
        let mut nonce = [0u8; 12];
        hex::decode_to_slice(&self.nonce, &mut nonce).map_err(|_| SeedRecordError::Malformed)?;
        let ciphertext = hex::decode(&self.encrypted_seed).map_err(|_| SeedRecordError::Malformed)?;
        if salt.is_empty() || salt.len() > 64 || !(16 + 16..=32 + 16).contains(&ciphertext.len()) {
            return Err(SeedRecordError::Malformed);
        }
        let key = Self::derive_key(password, &salt);
        let cipher = ChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key));
        let mut buffer = Zeroizing::new(ciphertext);
        cipher
            .decrypt_in_place(&chacha20poly1305::Nonce::from(nonce), b"", &mut *buffer)
            .map_err(|_| SeedRecordError::WrongPassword)?;
        Entropy::from_bytes(buffer.to_vec()).ok_or(SeedRecordError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entropy() -> Entropy {
        Entropy::from_bytes((0u8..32).collect()).expect("32 bytes")
    }

    #[test]
    fn seal_open_round_trip() {
        let password = Password::from("pw");
        let record =
            SeedRecord::seal(&entropy(), &password, KdfParams::INSECURE_FOR_TESTS, [1; 16], [2; 12]).expect("seal");
        let bytes = record.to_bytes();
        let parsed = SeedRecord::from_bytes(&bytes).expect("parse");
        assert_eq!(parsed, record);
        assert_eq!(parsed.open(&password).expect("open"), entropy());
        assert_eq!(parsed.open(&Password::from("px")), Err(SeedRecordError::WrongPassword));
    }

    #[test]
    fn edited_parameters_do_not_decrypt() {
        let password = Password::from("pw");
        let record =
            SeedRecord::seal(&entropy(), &password, KdfParams::INSECURE_FOR_TESTS, [1; 16], [2; 12]).expect("seal");
        let text = String::from_utf8(record.to_bytes()).expect("utf8");
        let edited = text.replace("\"t_cost\":1", "\"t_cost\":2");
        assert_ne!(edited, text);
        let parsed = SeedRecord::from_bytes(edited.as_bytes()).expect("still parses");
        assert_eq!(parsed.open(&password), Err(SeedRecordError::WrongPassword));
    }

    #[test]
    fn a_stronger_kdf_costs_at_least_as_much_everywhere_and_more_somewhere() {
        let base = KdfParams { m_cost_kib: 64, t_cost: 2, p_cost: 2 };
        assert!(!base.stronger_than(&base));
        for stronger in
            [KdfParams { m_cost_kib: 65, ..base }, KdfParams { t_cost: 3, ..base }, KdfParams { p_cost: 3, ..base }]
        {
            assert!(stronger.stronger_than(&base), "{stronger:?}");
            assert!(!base.stronger_than(&stronger), "{stronger:?}");
        }
        for mixed in [
            KdfParams { m_cost_kib: 128, t_cost: 1, ..base },
            KdfParams { m_cost_kib: 128, p_cost: 1, ..base },
            KdfParams { t_cost: 3, m_cost_kib: 32, ..base },
        ] {
            assert!(!mixed.stronger_than(&base), "{mixed:?}");
        }
        assert_eq!(KdfParams::DEFAULT, KdfParams { m_cost_kib: 65536, t_cost: 3, p_cost: 4 });
        assert!(KdfParams::DEFAULT.stronger_than(&KdfParams::INSECURE_FOR_TESTS));
    }

    #[test]
    fn records_may_ask_for_up_to_1_gib_and_64_passes_and_lanes() {
        let record = |m: u32, t: u32, p: u32| {
            let text = format!(
                r#"{{"version":1,"kdf":{{"algorithm":"argon2id","m_cost_kib":{m},"t_cost":{t},"p_cost":{p}}},"salt":"{}","nonce":"{}","ciphertext":"{}"}}"#,
                "00".repeat(16),
                "00".repeat(12),
                "00".repeat(48)
            );
            SeedRecord::from_bytes(text.as_bytes()).map(|r| r.kdf)
        };
        assert_eq!(record(1 << 20, 64, 64), Ok(KdfParams { m_cost_kib: 1 << 20, t_cost: 64, p_cost: 64 }));
        assert_eq!(record((1 << 20) + 1, 1, 1), Err(SeedRecordError::Malformed));
        assert_eq!(record(64, 65, 1), Err(SeedRecordError::Malformed));
        assert_eq!(record(1024, 1, 65), Err(SeedRecordError::Malformed));
    }

    #[test]
    fn the_aad_binds_the_version_kdf_and_salt() {
        let kdf = KdfParams { m_cost_kib: 64, t_cost: 2, p_cost: 3 };
        let expected = format!("keyward-seed-record/v1/argon2id/m=64/t=2/p=3/salt={}", "ab".repeat(16));
        assert_eq!(aad(&kdf, &[0xab; 16]), expected.into_bytes());
    }

    /// A record with a given algorithm, version, and ciphertext and salt lengths (in bytes).
    fn record_text(version: u32, algorithm: &str, ciphertext_len: usize) -> String {
        format!(
            r#"{{"version":{version},"kdf":{{"algorithm":"{algorithm}","m_cost_kib":64,"t_cost":1,"p_cost":1}},"salt":"{}","nonce":"{}","ciphertext":"{}"}}"#,
            "00".repeat(16),
            "00".repeat(12),
            "00".repeat(ciphertext_len)
        )
    }

    #[test]
    fn only_version_1_argon2id_records_with_16_to_32_bytes_of_entropy_parse() {
        let parse = |text: String| SeedRecord::from_bytes(text.as_bytes()).map(|r| r.ciphertext.len());
        assert_eq!(parse(record_text(1, "argon2id", 32)), Ok(32));
        assert_eq!(parse(record_text(1, "argon2id", 48)), Ok(48));
        for bad in [
            record_text(2, "argon2id", 48),
            record_text(1, "scrypt", 48),
            record_text(1, "argon2id", 31),
            record_text(1, "argon2id", 49),
            record_text(1, "argon2id", 16),
        ] {
            assert_eq!(parse(bad.clone()), Err(SeedRecordError::Malformed), "{bad}");
        }
    }

    #[test]
    fn grin_seeds_with_a_bad_salt_or_length_are_malformed_before_any_key_is_derived() {
        let seed = |salt_len: usize, ciphertext_len: usize| GrinWalletSeed {
            encrypted_seed: "00".repeat(ciphertext_len),
            salt: "00".repeat(salt_len),
            nonce: "00".repeat(12),
        };
        let password = Password::from("pw");
        // Well-formed but not sealed under this password: the decryption fails.
        for (salt, ciphertext) in [(1, 32), (64, 48), (8, 40)] {
            assert_eq!(seed(salt, ciphertext).open(&password), Err(SeedRecordError::WrongPassword));
        }
        for (salt, ciphertext) in [(0, 48), (65, 48), (16, 31), (16, 49), (16, 16)] {
            assert_eq!(
                seed(salt, ciphertext).open(&password),
                Err(SeedRecordError::Malformed),
                "salt {salt}, ciphertext {ciphertext}"
            );
        }
    }

    #[test]
    fn damaged_records_are_malformed() {
        for bad in [&b""[..], b"{}", b"[1]", b"{\"version\":2}", b"\xff\xfe"] {
            assert_eq!(SeedRecord::from_bytes(bad), Err(SeedRecordError::Malformed));
        }
        let huge = br#"{"version":1,"kdf":{"algorithm":"argon2id","m_cost_kib":4294967295,"t_cost":3,"p_cost":4},"salt":"00000000000000000000000000000000","nonce":"000000000000000000000000","ciphertext":"00000000000000000000000000000000000000000000000000000000000000000000000000000000"}"#;
        assert_eq!(SeedRecord::from_bytes(huge), Err(SeedRecordError::Malformed));
    }
}
