//! The server side of the protocol: one `handle` call per request body, nothing else.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng as _};
use secp256k1::{PublicKey, SecretKey};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::envelope::{self, Cipher};
use crate::jsonrpc::{self, EnvelopeError, MethodError};
use crate::methods::AppMethod;
use crate::secret::{WipedJson, wipe_json};
use crate::seed_record::KdfParams;
use crate::session::{AcceptError, SessionId, SessionLimits, SessionTable};
use crate::store::{Store, WalletKey};
use crate::throttle::{Throttle, ThrottleConfig};
use crate::vault::{TokenLimits, Vault};

/// Everything a server is configured with. Times are milliseconds on the host's clock.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data root as shown to clients by `get_top_level_directory` (the core never touches it).
    pub data_root: String,
    /// Session table limits.
    pub sessions: SessionLimits,
    /// Token lifetimes.
    pub tokens: TokenLimits,
    /// Argon2id parameters for new and re-encrypted seed records.
    pub kdf: KdfParams,
    /// Unlock throttling.
    pub throttle: ThrottleConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_root: "keyward-data".into(),
            sessions: SessionLimits::default(),
            tokens: TokenLimits::default(),
            kdf: KdfParams::DEFAULT,
            throttle: ThrottleConfig::default(),
        }
    }
}

/// One request, as the transport hands it in.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The HTTP body or QUIC stream bytes.
    pub body: &'a [u8],
    /// The session the transport knows this request belongs to (`Keyward-Session` header, QUIC
    /// connection); `None` for V3 clients that name none.
    pub session: Option<SessionId>,
    /// The host's clock, in milliseconds from any fixed origin.
    pub now_ms: u64,
}

/// The answer to one request.
#[derive(Debug)]
pub struct Outgoing {
    /// The JSON-RPC answer.
    pub body: Vec<u8>,
    /// The session that handled the request, or the one a plaintext `init_secure_api` created.
    pub session: Option<SessionId>,
    /// Whether `session` was created by this request (the transport should tell the client its id).
    pub created_session: bool,
}

/// What the dispatcher knows about the call it is handling.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The caller's session.
    pub session: SessionId,
    /// The session's top-level directory.
    pub dir: String,
    /// The host's clock.
    pub now_ms: u64,
}

/// The sans-IO owner API server. Share it between threads (`Arc<Server>`): every method takes `&self`
/// and its locks are held only for table look-ups, never during a KDF or a store write.
pub struct Server {
    pub(crate) config: ServerConfig,
    pub(crate) store: Box<dyn Store>,
    pub(crate) sessions: Mutex<SessionTable>,
    pub(crate) vault: Mutex<Vault>,
    pub(crate) throttle: Mutex<Throttle>,
    rng: Mutex<ChaCha20Rng>,
    wallet_locks: Mutex<HashMap<WalletKey, Arc<Mutex<()>>>>,
    pub(crate) app_methods: HashMap<String, AppMethod>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Locks a mutex; a panic in another thread while holding it leaves consistent tables behind
/// (every update is a single insert or remove), so keep serving.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one inner request asks of the envelope layer after it is answered.
#[derive(Default)]
pub(crate) struct AfterAnswer {
    pub(crate) rekey: Option<Cipher>,
    pub(crate) dir: Option<String>,
}

impl Server {
    /// A server over `store`, with randomness from `rng_seed` (give it 32 bytes from the OS in
    /// production, a constant in tests for byte-identical transcripts).
    pub fn new(config: ServerConfig, store: Box<dyn Store>, rng_seed: [u8; 32]) -> Self {
        let mut rng = ChaCha20Rng::from_seed(rng_seed);
        let mut vault_key = [0u8; 32];
        rng.fill_bytes(&mut vault_key);
        let server = Self {
            sessions: Mutex::new(SessionTable::new(config.sessions)),
            vault: Mutex::new(Vault::new(vault_key, config.tokens)),
            throttle: Mutex::new(Throttle::new(config.throttle)),
            rng: Mutex::new(rng),
            wallet_locks: Mutex::new(HashMap::new()),
            app_methods: HashMap::new(),
            config,
            store,
        };
        zeroize::Zeroize::zeroize(&mut vault_key);
        server
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub(crate) fn random<const N: usize>(&self) -> [u8; N] {
        let mut out = [0u8; N];
        lock(&self.rng).fill_bytes(&mut out);
        out
    }

    pub(crate) fn random_secret_key(&self) -> SecretKey {
        loop {
            let mut bytes = self.random::<32>();
            let key = SecretKey::from_secret_bytes(bytes);
            zeroize::Zeroize::zeroize(&mut bytes);
            if let Ok(key) = key {
                return key;
            }
        }
    }

    /// A lock that serializes the slow operations (KDF + store write) on one wallet, so that two
    /// password changes cannot interleave; other wallets and other clients are not held up.
    pub(crate) fn wallet_lock(&self, key: &WalletKey) -> Arc<Mutex<()>> {
        let mut locks = lock(&self.wallet_locks);
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        Arc::clone(locks.entry(key.clone()).or_default())
    }

    /// Handles one request body and returns the answer. Never panics on any input.
    pub fn handle(&self, incoming: Incoming<'_>) -> Outgoing {
        let mut request: Value = match serde_json::from_slice(incoming.body) {
            Ok(value) => value,
            Err(_) => return plain_error(&Value::Null, &EnvelopeError::Parse, incoming.session),
        };
        let Some(object) = request.as_object_mut() else {
            return plain_error(&Value::Null, &EnvelopeError::InvalidRequest("not an object"), incoming.session);
        };
        let id = object.get("id").cloned().unwrap_or(Value::Null);
        let method = match object.get("method") {
            Some(Value::String(method)) => method.clone(),
            _ => return plain_error(&id, &EnvelopeError::InvalidRequest("no method"), incoming.session),
        };
        let params = object.get_mut("params").map(Value::take);
        match method.as_str() {
            "init_secure_api" => self.handle_plain_init(&id, params, incoming.now_ms),
            "encrypted_request_v3" => self.handle_encrypted(&id, params, incoming),
            _ => plain_error(&id, &EnvelopeError::EncryptionRequired, incoming.session),
        }
    }

    /// Drops a session (its QUIC connection closed). Open wallets stay open until closed or expired.
    pub fn drop_session(&self, id: &SessionId) -> bool {
        lock(&self.sessions).remove(id)
    }

    /// Expires idle sessions and tokens. Call it at `poll_timeout()`, or whenever convenient.
    pub fn handle_timeout(&self, now_ms: u64) {
        lock(&self.sessions).expire(now_ms);
        lock(&self.vault).expire(now_ms);
    }

    /// When `handle_timeout` next has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        let sessions = lock(&self.sessions).next_expiry();
        let tokens = lock(&self.vault).next_expiry();
        match (sessions, tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Closes every wallet and forgets every session (shutdown).
    pub fn shutdown(&self) {
        lock(&self.vault).close_all();
        *lock(&self.sessions) = SessionTable::new(self.config.sessions);
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Number of open wallets, i.e. masked seeds held in the vault.
    pub fn open_wallet_count(&self) -> usize {
        lock(&self.vault).open_count()
    }

    /// Test probe: every masked seed byte in the vault.
    #[cfg(feature = "testing")]
    pub fn vault_masked_bytes(&self) -> Vec<u8> {
        lock(&self.vault).masked_bytes()
    }

    /// A fresh server key pair for `init_secure_api` and the shared key with the client's key.
    pub(crate) fn new_session_key(&self, params: Option<Value>) -> Result<(PublicKey, Cipher), String> {
        let mut params = params;
        let mut values = jsonrpc::take_params(params.as_mut(), &["ecdh_pubkey"]).map_err(|e| e.wire().1)?;
        let text = values[0].take();
        let text = text.as_str().ok_or("'ecdh_pubkey' must be a hex string")?;
        let client = envelope::parse_public_key(text).map_err(|e| e.to_string())?;
        let mut secret = self.random_secret_key();
        let shared = envelope::shared_key(&client, &secret);
        let public = PublicKey::from_secret_key(&secret);
        secret.non_secure_erase();
        Ok((public, Cipher::new(&shared)))
    }

    fn handle_plain_init(&self, id: &Value, params: Option<Value>, now_ms: u64) -> Outgoing {
        let (public, cipher) = match self.new_session_key(params) {
            Ok(pair) => pair,
            Err(why) => return plain_error(id, &EnvelopeError::InitParams(why), None),
        };
        let session = SessionId::from_bytes(self.random());
        lock(&self.sessions).insert(session, cipher, String::new(), now_ms);
        let mut body = Zeroizing::new(Vec::with_capacity(128));
        jsonrpc::write_ok(id, &Value::String(hex::encode(public.serialize())), &mut body);
        Outgoing { body: body.to_vec(), session: Some(session), created_session: true }
    }

    fn handle_encrypted(&self, id: &Value, params: Option<Value>, incoming: Incoming<'_>) -> Outgoing {
        let hint = incoming.session;
        let mut params = params;
        let values = match jsonrpc::take_params(params.as_mut(), &["nonce", "body_enc"]) {
            Ok(values) => values,
            Err(e) => return plain_error(id, &EnvelopeError::Format(e.wire().1), hint),
        };
        let (Some(nonce), Some(body_enc)) = (values[0].as_str(), values[1].as_str()) else {
            return plain_error(id, &EnvelopeError::Format("nonce and body_enc must be strings".into()), hint);
        };
        let nonce = match envelope::parse_nonce(nonce) {
            Ok(nonce) => nonce,
            Err(e) => return plain_error(id, &EnvelopeError::Format(e.to_string()), hint),
        };
        let ciphertext = match envelope::decode_body(body_enc) {
            Ok(bytes) => bytes,
            Err(e) => return plain_error(id, &EnvelopeError::Format(e.to_string()), hint),
        };
        let accepted = lock(&self.sessions).accept(hint.as_ref(), &nonce, &ciphertext, incoming.now_ms);
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(AcceptError::NoSession) => return plain_error(id, &EnvelopeError::EncryptionRequired, hint),
            Err(AcceptError::Format(e)) => return plain_error(id, &EnvelopeError::Format(e.to_string()), hint),
            Err(AcceptError::Decryption) => {
                let why = if hint.is_some() {
                    "authentication failed under this session's key"
                } else {
                    "no live session's key authenticates this request (call init_secure_api again if yours expired)"
                };
                return plain_error(id, &EnvelopeError::Decryption(why.into()), hint);
            }
            Err(AcceptError::Replay) => return plain_error(id, &EnvelopeError::Replay, hint),
        };
        let session = Some(accepted.id);
        let inner = match serde_json::from_slice::<Value>(&accepted.plaintext) {
            Ok(value) => WipedJson(value),
            Err(_) => {
                return plain_error(
                    id,
                    &EnvelopeError::Decryption("the decrypted body is not UTF-8 JSON".into()),
                    session,
                );
            }
        };
        let context = CallContext { session: accepted.id, dir: accepted.dir.clone(), now_ms: incoming.now_ms };
        let mut answer = Zeroizing::new(Vec::with_capacity(512));
        let after = self.answer_inner(inner, &context, &mut answer);
        let reply_nonce: [u8; envelope::NONCE_LEN] = self.random();
        let body_enc = accepted.cipher.seal_in_place(&reply_nonce, &mut answer);
        if body_enc.is_empty() {
            return plain_error(id, &EnvelopeError::Encryption, session);
        }
        if let Some(dir) = after.dir {
            lock(&self.sessions).set_dir(&accepted.id, dir);
        }
        if let Some(cipher) = after.rekey {
            lock(&self.sessions).rekey(accepted.id, cipher, incoming.now_ms);
        }
        let envelope = serde_json::json!({"nonce": hex::encode(reply_nonce), "body_enc": body_enc});
        let mut body = Zeroizing::new(Vec::with_capacity(body_enc.len() + 96));
        jsonrpc::write_ok(id, &envelope, &mut body);
        Outgoing { body: body.to_vec(), session, created_session: false }
    }

    /// Answers a decrypted inner body: one request or a batch.
    fn answer_inner(&self, mut inner: WipedJson, context: &CallContext, out: &mut Zeroizing<Vec<u8>>) -> AfterAnswer {
        let mut after = AfterAnswer::default();
        match &mut inner.0 {
            Value::Array(requests) if !requests.is_empty() => {
                out.push(b'[');
                for (i, request) in requests.iter_mut().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.answer_one(request, context, &mut after, out);
                }
                out.push(b']');
            }
            Value::Object(_) => self.answer_one(&mut inner.0, context, &mut after, out),
            _ => {
                let (code, message) = MethodError::InvalidRequest("not a JSON-RPC request".into()).wire();
                jsonrpc::write_error(&Value::Null, code, &message, out);
            }
        }
        after
    }

    fn answer_one(
        &self,
        request: &mut Value,
        context: &CallContext,
        after: &mut AfterAnswer,
        out: &mut Zeroizing<Vec<u8>>,
    ) {
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let method = match request.get("method") {
            Some(Value::String(method)) => method.clone(),
            _ => {
                let (code, message) = MethodError::InvalidRequest("no method".into()).wire();
                return jsonrpc::write_error(&id, code, &message, out);
            }
        };
        let params = request.get_mut("params");
        match self.dispatch(&method, params, context, after) {
            Ok(mut value) => {
                jsonrpc::write_ok(&id, &value, out);
                wipe_json(&mut value);
            }
            Err(error) => {
                let (code, message) = error.wire();
                jsonrpc::write_error(&id, code, &message, out);
            }
        }
    }
}

fn plain_error(id: &Value, error: &EnvelopeError, session: Option<SessionId>) -> Outgoing {
    let (code, message) = error.wire();
    Outgoing { body: jsonrpc::error_bytes(id, code, &message), session, created_session: false }
}
