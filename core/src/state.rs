//! The state every call shares: configuration, store, vault, throttle, random generators and
//! per-wallet locks. Method handlers (`lifecycle`, `methods`) take it as their context; the
//! envelope layer (`server`) owns it and never lets a handler see the session table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng as _};
use secp256k1::{PublicKey, SecretKey};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use crate::envelope::{self, Cipher};
use crate::jsonrpc::{self, MethodError};
use crate::secret::Token;
use crate::seed_record::KdfParams;
use crate::session::{SessionId, SessionLimits};
use crate::store::{Store, StoreError, WalletKey};
use crate::throttle::{Throttle, ThrottleConfig};
use crate::vault::{TokenLimits, UnlockError, Unlocked, Vault};

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

/// Locks a mutex; a panic in another thread while holding it leaves consistent tables behind
/// (every update is a single insert or remove), so keep serving.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Size of the ChaCha20 generator's output buffer (64 words): drawing this many bytes replaces it.
const RNG_BUFFER_BYTES: usize = 256;

/// The shared state. Its locks are held for table look-ups and the microsecond-scale crypto tied to
/// them (unmasking a seed), never during a KDF or a store write.
pub(crate) struct State {
    pub(crate) config: ServerConfig,
    pub(crate) store: Box<dyn Store>,
    pub(crate) vault: Mutex<Vault>,
    pub(crate) throttle: Mutex<Throttle>,
    rng: Mutex<ChaCha20Rng>,
    secret_rng: Mutex<ChaCha20Rng>,
    wallet_locks: Mutex<HashMap<WalletKey, Arc<Mutex<()>>>>,
}

impl State {
    /// The state over `store`, with randomness from `rng_seed`. The order of the draws below is
    /// part of the byte-identical transcripts (`spec/vectors/transcript.json`).
    pub(crate) fn new(config: ServerConfig, store: Box<dyn Store>, rng_seed: [u8; 32]) -> Self {
        let mut rng = ChaCha20Rng::from_seed(rng_seed);
        let mut vault_key = [0u8; 32];
        rng.fill_bytes(&mut vault_key);
        let mut secret_seed = [0u8; 32];
        rng.fill_bytes(&mut secret_seed);
        let secret_rng = ChaCha20Rng::from_seed(secret_seed);
        secret_seed.zeroize();
        // Later draws come from blocks generated later, not from the one that held these keys.
        let mut flush = [0u8; RNG_BUFFER_BYTES];
        rng.fill_bytes(&mut flush);
        flush.zeroize();
        let state = Self {
            vault: Mutex::new(Vault::new(vault_key, config.tokens)),
            throttle: Mutex::new(Throttle::new(config.throttle)),
            rng: Mutex::new(rng),
            secret_rng: Mutex::new(secret_rng),
            wallet_locks: Mutex::new(HashMap::new()),
            config,
            store,
        };
        vault_key.zeroize();
        state
    }

    /// Secret random bytes (keys, tokens, entropy), from their own generator, drawn so that no copy
    /// stays behind in it: its buffer is flushed before the draw (the bytes come from a block
    /// generated now, on this thread, whose stack the call scrubs) and after it (the buffer no
    /// longer holds them).
    pub(crate) fn random_secret<const N: usize>(&self) -> Zeroizing<[u8; N]> {
        let mut out = Zeroizing::new([0u8; N]);
        let mut rng = lock(&self.secret_rng);
        let mut flush = [0u8; RNG_BUFFER_BYTES];
        rng.fill_bytes(&mut flush);
        rng.fill_bytes(&mut *out);
        rng.fill_bytes(&mut flush);
        flush.zeroize();
        out
    }

    /// Public random bytes (nonces, session ids, salts).
    pub(crate) fn random<const N: usize>(&self) -> [u8; N] {
        let mut out = [0u8; N];
        lock(&self.rng).fill_bytes(&mut out);
        out
    }

    fn random_secret_key(&self) -> SecretKey {
        loop {
            let bytes = self.random_secret::<32>();
            if let Ok(key) = SecretKey::from_secret_bytes(*bytes) {
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

    /// A fresh server key pair for `init_secure_api` and the shared key with the client's key.
    pub(crate) fn new_session_key(&self, params: Option<Value>) -> Result<(PublicKey, Cipher), String> {
        let mut params = params;
        let mut values = jsonrpc::take_params(params.as_mut(), &["ecdh_pubkey"]).map_err(|e| match e {
            MethodError::InvalidParams(why) => why,
            other => other.wire().1,
        })?;
        let text = values[0].take();
        let text = text.as_str().ok_or("'ecdh_pubkey' must be a hex string")?;
        let client = envelope::parse_public_key(text).map_err(|e| e.to_string())?;
        let mut secret = self.random_secret_key();
        let shared = envelope::shared_key(&client, &secret);
        let public = PublicKey::from_secret_key(&secret);
        secret.non_secure_erase();
        Ok((public, Cipher::new(&shared)))
    }

    /// Checks a token and unmasks its wallet's master key for this call.
    pub(crate) fn unlock(&self, token: &Value, context: &CallContext) -> Result<Unlocked, MethodError> {
        let token = match token {
            Value::String(text) => Token::from_hex(text).ok_or(MethodError::InvalidKeychainMask)?,
            Value::Null => return Err(MethodError::InvalidKeychainMask),
            _ => return Err(MethodError::InvalidKeychainMask),
        };
        lock(&self.vault).unlock(&token, context.now_ms).map_err(|e| match e {
            UnlockError::InvalidToken => MethodError::InvalidKeychainMask,
            UnlockError::Closed => MethodError::Lifecycle("Wallet has not been opened".into()),
        })
    }
}

/// A store failure as clients see it: no detail (it may name a path); the detail goes to the log.
pub(crate) fn store_error(error: StoreError) -> MethodError {
    tracing::error!(%error, "wallet store failure");
    MethodError::Storage
}
