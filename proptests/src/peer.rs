//! A minimal V3 client for the tests, built from the core's public envelope functions. Unlike
//! [`keyward_core::Client`] it shows its session keys, so the tests can check that an answer
//! authenticates under its own session's key and under no other client's.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keyward_core::crypto::{self, Cipher, NONCE_LEN};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng as _};
use secp256k1::{PublicKey, SecretKey};
use serde_json::{Value, json};

/// A client key pair drawn from a seeded rng.
#[derive(Debug)]
pub struct KeyPair {
    secret: SecretKey,
    /// The compressed public key, as hex.
    pub public_hex: String,
}

impl KeyPair {
    /// The shared cipher with the server's public key (hex), or `None` if it is not a valid point.
    pub fn cipher_with(&self, server_hex: &str) -> Option<Cipher> {
        let server = crypto::parse_public_key(server_hex).ok()?;
        Some(Cipher::new(&crypto::shared_key(&server, &self.secret)))
    }
}

/// A sealed envelope, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The nonce.
    pub nonce: [u8; NONCE_LEN],
    /// `body_enc`.
    pub body_enc: String,
}

impl Sealed {
    /// The outer request body, with named (`positional == false`) or positional params.
    pub fn body(&self, outer_id: u64, nonce_text: &str, positional: bool) -> Vec<u8> {
        let params = if positional {
            json!([nonce_text, self.body_enc])
        } else {
            json!({"nonce": nonce_text, "body_enc": self.body_enc})
        };
        let request = json!({"jsonrpc": "2.0", "method": "encrypted_request_v3", "id": outer_id, "params": params});
        serde_json::to_vec(&request).expect("JSON serializes")
    }
}

/// Seeded randomness for client keys and nonces.
#[derive(Debug)]
pub struct PeerRng(ChaCha20Rng);

impl PeerRng {
    /// From a seed.
    pub fn new(seed: [u8; 32]) -> Self {
        Self(ChaCha20Rng::from_seed(seed))
    }

    /// A fresh key pair.
    pub fn key_pair(&mut self) -> KeyPair {
        loop {
            let mut bytes = [0u8; 32];
            self.0.fill_bytes(&mut bytes);
            if let Ok(secret) = SecretKey::from_secret_bytes(bytes) {
                let public_hex = hex::encode(PublicKey::from_secret_key(&secret).serialize());
                return KeyPair { secret, public_hex };
            }
        }
    }

    /// A fresh nonce.
    pub fn nonce(&mut self) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        self.0.fill_bytes(&mut nonce);
        nonce
    }

    /// Seals `plaintext` under `cipher` with a fresh nonce.
    pub fn seal(&mut self, cipher: &Cipher, plaintext: &[u8]) -> Sealed {
        let nonce = self.nonce();
        Sealed { nonce, body_enc: cipher.seal(&nonce, plaintext) }
    }
}

/// A plaintext `init_secure_api` request.
pub fn init_body(id: u64, public_hex: &str) -> Vec<u8> {
    let request =
        json!({"jsonrpc": "2.0", "method": "init_secure_api", "id": id, "params": {"ecdh_pubkey": public_hex}});
    serde_json::to_vec(&request).expect("JSON serializes")
}

/// An inner request's plaintext.
pub fn inner_body(id: u64, method: &str, params: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "method": method, "id": id, "params": params}))
        .expect("JSON serializes")
}

/// The parts of an encrypted answer: `(nonce, ciphertext ‖ tag)`.
pub fn envelope_of(answer: &Value) -> Option<([u8; NONCE_LEN], Vec<u8>)> {
    let ok = answer.get("result")?.get("Ok")?;
    let nonce = crypto::parse_nonce(ok.get("nonce")?.as_str()?).ok()?;
    let ciphertext = BASE64.decode(ok.get("body_enc")?.as_str()?).ok()?;
    Some((nonce, ciphertext))
}
