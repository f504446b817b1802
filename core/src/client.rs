//! The client side of the protocol, sans-IO: build the init request, derive the key, seal requests,
//! open answers, and check that every answer's nonce is fresh.
//!
//! ```text
//! let mut client = Client::new(seed);
//! send(client.init_request())            → client.handle_init_answer(&answer)?
//! let (body, pending) = client.seal("open_wallet", params)?;
//! send(body)                             → client.open(pending, &answer)?   // the "Ok" value
//! ```

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::fmt;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng as _};
use secp256k1::{PublicKey, SecretKey};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::envelope::{self, Cipher, NONCE_LEN};
use crate::secret::{SecretBuffer, WipedJson, wipe_json};

/// How many answer nonces a client remembers to refuse a replayed answer.
pub const REMEMBERED_NONCES: usize = 65_536;

/// Client-side failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `seal` before `init_secure_api` succeeded.
    #[error("no shared key yet: call init_secure_api first")]
    NotInitialized,
    /// The answer is not the JSON-RPC shape expected.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The server answered with a JSON-RPC error (plaintext envelope error or inner error).
    #[error("error {code}: {message}")]
    Rpc {
        /// The JSON-RPC code.
        code: i64,
        /// The message.
        message: String,
    },
    /// The answer did not authenticate under the session key.
    #[error("the answer did not authenticate")]
    Decryption,
    /// The answer's nonce was seen before (a replayed answer) or equals the request's.
    #[error("the answer's nonce is not fresh")]
    StaleNonce,
    /// The answer's id is not the request's.
    #[error("the answer's id does not match the request")]
    IdMismatch,
}

/// A sent request waiting for its answer.
pub struct Pending {
    outer_id: u64,
    inner_id: u64,
    nonce: [u8; NONCE_LEN],
    rekey: Option<SecretKey>,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending").field("outer_id", &self.outer_id).field("inner_id", &self.inner_id).finish()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(key) = self.rekey.as_mut() {
            key.non_secure_erase();
        }
    }
}

/// One client's end of a V3 secure session.
pub struct Client {
    rng: ChaCha20Rng,
    next_id: u64,
    cipher: Option<Cipher>,
    /// The session key itself (the cipher holds only its expanded form), for [`Client::session_key`].
    key: Option<crate::secret::SharedKey>,
    init_secret: Option<SecretKey>,
    seen: HashSet<[u8; NONCE_LEN]>,
    seen_order: VecDeque<[u8; NONCE_LEN]>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("ready", &self.cipher.is_some()).finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(key) = self.init_secret.as_mut() {
            key.non_secure_erase();
        }
    }
}

fn field<'a>(value: &'a Value, name: &str) -> Result<&'a Value, ClientError> {
    value.get(name).ok_or_else(|| ClientError::Malformed(format!("no '{name}'")))
}

/// The `"Ok"` value of a JSON-RPC answer, or its error.
pub fn ok_value(mut answer: Value) -> Result<Value, ClientError> {
    if let Some(error) = answer.get("error") {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = error.get("message").and_then(Value::as_str).unwrap_or("").to_owned();
        return Err(ClientError::Rpc { code, message });
    }
    answer
        .get_mut("result")
        .and_then(|r| r.get_mut("Ok"))
        .map(Value::take)
        .ok_or_else(|| ClientError::Malformed("no result.Ok".into()))
}

impl Client {
    /// A client with randomness from `rng_seed` (OS randomness in production, a constant in tests).
    pub fn new(rng_seed: [u8; 32]) -> Self {
        Self {
            rng: ChaCha20Rng::from_seed(rng_seed),
            next_id: 1,
            cipher: None,
            key: None,
            init_secret: None,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
        }
    }

    /// Whether a shared key is in place.
    pub fn is_ready(&self) -> bool {
        self.cipher.is_some()
    }

    fn new_secret(&mut self) -> SecretKey {
        loop {
            let mut bytes = [0u8; 32];
            self.rng.fill_bytes(&mut bytes);
            let key = SecretKey::from_secret_bytes(bytes);
            zeroize::Zeroize::zeroize(&mut bytes);
            if let Ok(key) = key {
                return key;
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The plaintext `init_secure_api` request, with a fresh client key pair.
    pub fn init_request(&mut self) -> Vec<u8> {
        let secret = self.new_secret();
        let public = PublicKey::from_secret_key(&secret);
        self.init_secret = Some(secret);
        let id = self.next_id();
        let request = json!({
            "jsonrpc": "2.0",
            "method": "init_secure_api",
            "params": {"ecdh_pubkey": hex::encode(public.serialize())},
            "id": id,
        });
        serde_json::to_vec(&request).expect("a JSON value serializes")
    }

    /// Takes the answer to `init_request`: derives the shared key from the server's public key.
    pub fn handle_init_answer(&mut self, body: &[u8]) -> Result<(), ClientError> {
        let answer: Value = serde_json::from_slice(body).map_err(|_| ClientError::Malformed("not JSON".into()))?;
        let server = ok_value(answer)?;
        let server = server.as_str().ok_or_else(|| ClientError::Malformed("server key is not a string".into()))?;
        let server = envelope::parse_public_key(server).map_err(|e| ClientError::Malformed(e.to_string()))?;
        let mut secret = self.init_secret.take().ok_or(ClientError::NotInitialized)?;
        let key = envelope::shared_key(&server, &secret);
        self.cipher = Some(Cipher::new(&key));
        self.key = Some(key);
        secret.non_secure_erase();
        Ok(())
    }

    /// The session key (a secret: it decrypts the session's traffic). It exists for the memory
    /// residency tests, which search a server's memory for it, and for debugging tools; a client
    /// that only calls needs nothing but [`Client::seal`] and [`Client::open`].
    pub fn session_key(&self) -> Option<&crate::secret::SharedKey> {
        self.key.as_ref()
    }

    /// Seals an inner call `method(params)`; the params are wiped afterwards.
    pub fn seal(&mut self, method: &str, params: Value) -> Result<(Vec<u8>, Pending), ClientError> {
        let inner_id = self.next_id();
        let params = WipedJson(params);
        // Room for every built-in call and its tag: the plaintext is neither reallocated (leaving a
        // copy) nor copied, but encrypted where it was written.
        let mut plaintext = SecretBuffer::with_capacity(1024);
        let request = InnerCall { id: inner_id, jsonrpc: "2.0", method, params: &params.0 };
        serde_json::to_writer(&mut plaintext, &request).expect("a JSON value serializes");
        self.seal_buffer(plaintext, inner_id, None)
    }

    /// Seals an encrypted `init_secure_api` (re-keying): the answer comes under the current key and
    /// the new key applies from the next request.
    pub fn seal_reinit(&mut self) -> Result<(Vec<u8>, Pending), ClientError> {
        let secret = self.new_secret();
        let public = PublicKey::from_secret_key(&secret);
        let inner_id = self.next_id();
        let request = json!({
            "jsonrpc": "2.0", "method": "init_secure_api", "id": inner_id,
            "params": {"ecdh_pubkey": hex::encode(public.serialize())},
        });
        let plaintext = serde_json::to_vec(&request).expect("a JSON value serializes");
        self.seal_raw(&plaintext, inner_id, Some(secret))
    }

    /// Seals arbitrary plaintext as an `encrypted_request_v3` (for batches and tests).
    pub fn seal_raw(
        &mut self,
        plaintext: &[u8],
        inner_id: u64,
        rekey: Option<SecretKey>,
    ) -> Result<(Vec<u8>, Pending), ClientError> {
        let mut buffer = SecretBuffer::with_capacity(plaintext.len() + envelope::TAG_LEN);
        buffer.extend_from_slice(plaintext);
        self.seal_buffer(buffer, inner_id, rekey)
    }

    /// Encrypts `plaintext` in place (it is wiped when dropped) and writes the envelope around it.
    fn seal_buffer(
        &mut self,
        mut plaintext: SecretBuffer,
        inner_id: u64,
        rekey: Option<SecretKey>,
    ) -> Result<(Vec<u8>, Pending), ClientError> {
        let cipher = self.cipher.as_ref().ok_or(ClientError::NotInitialized)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        // Room for the tag first, so that encrypting does not grow the `Vec` (leaving the plaintext).
        plaintext.reserve(envelope::TAG_LEN);
        let body_enc = cipher.seal_in_place(&nonce, plaintext.as_mut_vec());
        drop(plaintext);
        let outer_id = self.next_id();
        let mut nonce_hex = [0u8; 2 * NONCE_LEN];
        hex::encode_to_slice(nonce, &mut nonce_hex).expect("twice the nonce's length");
        let nonce_hex = std::str::from_utf8(&nonce_hex).expect("hex is ASCII");
        let request = OuterCall {
            id: outer_id,
            jsonrpc: "2.0",
            method: "encrypted_request_v3",
            params: EnvelopeFields { body_enc: Cow::Borrowed(&body_enc), nonce: Cow::Borrowed(nonce_hex) },
        };
        let mut body = Vec::with_capacity(body_enc.len() + 128);
        serde_json::to_writer(&mut body, &request).expect("a JSON value serializes");
        Ok((body, Pending { outer_id, inner_id, nonce, rekey }))
    }

    /// Opens the answer to a sealed call and returns the whole inner JSON-RPC answer.
    pub fn open_raw(&mut self, mut pending: Pending, body: &[u8]) -> Result<Value, ClientError> {
        // The usual answer, `{"id": n, "result": {"Ok": {"nonce", "body_enc"}}}` without an error, is
        // read in place; anything else takes the general path, which gives the same verdicts.
        let (nonce, body_enc) = match serde_json::from_slice::<EnvelopeAnswer<'_>>(body) {
            Ok(EnvelopeAnswer { id, error: None, result }) => {
                if id != pending.outer_id {
                    return Err(ClientError::IdMismatch);
                }
                (result.ok.nonce, result.ok.body_enc)
            }
            _ => {
                let answer: Value =
                    serde_json::from_slice(body).map_err(|_| ClientError::Malformed("not JSON".into()))?;
                if answer.get("id") != Some(&json!(pending.outer_id)) && answer.get("error").is_none() {
                    return Err(ClientError::IdMismatch);
                }
                let envelope = ok_value(answer)?;
                let nonce = field(&envelope, "nonce")?.as_str().ok_or(ClientError::Malformed("nonce".into()))?;
                let body_enc =
                    field(&envelope, "body_enc")?.as_str().ok_or(ClientError::Malformed("body_enc".into()))?;
                (Cow::Owned(nonce.to_owned()), Cow::Owned(body_enc.to_owned()))
            }
        };
        let nonce = envelope::parse_nonce(&nonce).map_err(|e| ClientError::Malformed(e.to_string()))?;
        if nonce == pending.nonce || self.seen.contains(&nonce) {
            return Err(ClientError::StaleNonce);
        }
        let cipher = self.cipher.as_ref().ok_or(ClientError::NotInitialized)?;
        let plaintext = cipher.open(&nonce, &body_enc).map_err(|_| ClientError::Decryption)?;
        self.remember(nonce);
        let inner: Value = serde_json::from_slice(&plaintext)
            .map_err(|_| ClientError::Malformed("inner answer is not JSON".into()))?;
        let unattributed_error = inner.get("error").is_some() && inner.get("id") == Some(&Value::Null);
        if inner.is_object() && !unattributed_error && inner.get("id") != Some(&json!(pending.inner_id)) {
            return Err(ClientError::IdMismatch);
        }
        if let Some(mut secret) = pending.rekey.take() {
            if let Some(server) = inner.get("result").and_then(|r| r.get("Ok")).and_then(Value::as_str) {
                let server = envelope::parse_public_key(server).map_err(|e| ClientError::Malformed(e.to_string()))?;
                self.cipher = Some(Cipher::new(&envelope::shared_key(&server, &secret)));
                self.seen.clear();
                self.seen_order.clear();
            }
            secret.non_secure_erase();
        }
        Ok(inner)
    }

    /// Opens the answer to a sealed call and returns its `"Ok"` value (or the error it carries).
    pub fn open(&mut self, pending: Pending, body: &[u8]) -> Result<Value, ClientError> {
        let inner = self.open_raw(pending, body)?;
        ok_value(inner)
    }

    fn remember(&mut self, nonce: [u8; NONCE_LEN]) {
        if self.seen_order.len() >= REMEMBERED_NONCES
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(nonce);
        self.seen_order.push_back(nonce);
    }
}

/// An inner call as the client writes it (the keys in the order `json!` would give them).
#[derive(Serialize)]
struct InnerCall<'a> {
    id: u64,
    jsonrpc: &'static str,
    method: &'a str,
    params: &'a Value,
}

/// An `encrypted_request_v3` as the client writes it.
#[derive(Serialize)]
struct OuterCall<'a> {
    id: u64,
    jsonrpc: &'static str,
    method: &'static str,
    params: EnvelopeFields<'a>,
}

#[derive(Serialize, Deserialize)]
struct EnvelopeFields<'a> {
    #[serde(borrow)]
    body_enc: Cow<'a, str>,
    #[serde(borrow)]
    nonce: Cow<'a, str>,
}

/// The usual answer to an `encrypted_request_v3`, read in place.
#[derive(Deserialize)]
struct EnvelopeAnswer<'a> {
    id: u64,
    #[serde(default)]
    error: Option<IgnoredAny>,
    #[serde(borrow)]
    result: EnvelopeResult<'a>,
}

#[derive(Deserialize)]
struct EnvelopeResult<'a> {
    #[serde(rename = "Ok", borrow)]
    ok: EnvelopeFields<'a>,
}

/// Wipes the strings of an answer the caller is done with (mnemonics, tokens).
pub fn wipe(value: &mut Value) {
    wipe_json(value);
}
