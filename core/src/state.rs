//! The state every call shares: configuration, store, vault, throttle, random generators and
//! per-wallet locks. Method handlers (`lifecycle`, `methods`) take it as their context; the
//! envelope layer (`server`) owns it and never lets a handler see the session table.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng as _};
use secp256k1::{PublicKey, SecretKey};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use crate::audit::{AuditEvent, AuditQueue, Kind};
use crate::envelope::{self, Cipher};
use crate::jsonrpc::{self, MethodError};
use crate::principal::{Principal, Registry, Role};
use crate::secret::Token;
use crate::seed_record::KdfParams;
use crate::session::{SessionId, SessionLimits};
use crate::store::{Store, StoreError, WalletKey};
use crate::sync::{AtomicU64, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
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
    /// The role of the `local-http` principal (loopback plain HTTP, the weakest door): `owner` by
    /// default, so that V3 clients that cannot do TLS keep working.
    pub local_http_role: Role,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_root: "keyward-data".into(),
            sessions: SessionLimits::default(),
            tokens: TokenLimits::default(),
            kdf: KdfParams::DEFAULT,
            throttle: ThrottleConfig::default(),
            local_http_role: Role::Owner,
        }
    }
}

/// What the dispatcher knows about the call it is handling.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// Who is calling (the principal its session belongs to).
    pub principal: Principal,
    /// Its role now (read from the registry for every request, so a change applies at once);
    /// `None` once it is revoked.
    pub role: Option<Role>,
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
    /// The client registry (loaded from the store; written through to it).
    pub(crate) clients: RwLock<Registry>,
    /// Audit events not yet written to the store.
    pub(crate) audit: Mutex<AuditQueue>,
    /// What the host provides: its wall clock, and certificates for new clients.
    pub(crate) host: Option<Arc<dyn Host>>,
    /// How many revocations happened (a host that closes revoked clients' connections watches it).
    pub(crate) revocations: AtomicU64,
    pub(crate) vault: Mutex<Vault>,
    pub(crate) throttle: Mutex<Throttle>,
    rng: Mutex<ChaCha20Rng>,
    secret_rng: Mutex<ChaCha20Rng>,
    wallet_locks: Mutex<HashMap<WalletKey, Arc<Mutex<()>>>>,
    /// Held while a call checks the directory bound and writes (`lifecycle::MAX_DIRECTORIES`).
    pub(crate) directories: Mutex<()>,
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
        let clients = match store.load_clients() {
            Ok(records) => Registry::new(records),
            Err(error) => {
                // Served with an empty registry: only built-in principals (local, local-http) work.
                tracing::error!(%error, "cannot load the client registry");
                Registry::default()
            }
        };
        let state = Self {
            clients: RwLock::new(clients),
            audit: Mutex::new(AuditQueue::default()),
            host: None,
            revocations: AtomicU64::new(0),
            vault: Mutex::new(Vault::new(vault_key, config.tokens)),
            throttle: Mutex::new(Throttle::new(config.throttle)),
            rng: Mutex::new(rng),
            secret_rng: Mutex::new(secret_rng),
            wallet_locks: Mutex::new(HashMap::new()),
            directories: Mutex::new(()),
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
        let values = jsonrpc::take_params(params.as_mut(), &["ecdh_pubkey"]).map_err(|e| match e {
            MethodError::InvalidParams(why) => why,
            other => other.wire().1,
        })?;
        self.session_key_for(&values[0])
    }

    /// A new session key for the client's `ecdh_pubkey` param: this side's public key and the
    /// cipher of the shared secret.
    pub(crate) fn session_key_for(&self, ecdh_pubkey: &Value) -> Result<(PublicKey, Cipher), String> {
        let text = ecdh_pubkey.as_str().ok_or("'ecdh_pubkey' must be a hex string")?;
        let client = envelope::parse_public_key(text).map_err(|e| e.to_string())?;
        let mut secret = self.random_secret_key();
        let shared = envelope::shared_key(&client, &secret);
        let public = PublicKey::from_secret_key(&secret);
        secret.non_secure_erase();
        Ok((public, Cipher::new(&shared)))
    }

    /// Checks a token and unmasks its wallet's master key for this call.
    pub(crate) fn unlock(&self, token: &Value, context: &CallContext) -> Result<Unlocked, MethodError> {
        let token = token_of(token)?;
        lock(&self.vault).unlock(&token, context.principal.name(), context.now_ms).map_err(unlock_error)
    }

    /// Checks a token for a call that needs its wallet, not its master key (the seed stays masked).
    pub(crate) fn check_token(&self, token: &Value, context: &CallContext) -> Result<Arc<WalletKey>, MethodError> {
        let token = token_of(token)?;
        lock(&self.vault).check(&token, context.principal.name(), context.now_ms).map_err(unlock_error)
    }
}

/// A token parameter: 64 hex digits (`null` and anything else are a wrong token).
fn token_of(token: &Value) -> Result<Token, MethodError> {
    match token {
        Value::String(text) => Token::from_hex(text).ok_or(MethodError::InvalidKeychainMask),
        _ => Err(MethodError::InvalidKeychainMask),
    }
}

fn unlock_error(error: UnlockError) -> MethodError {
    match error {
        UnlockError::InvalidToken => MethodError::InvalidKeychainMask,
        UnlockError::Closed => MethodError::Lifecycle("Wallet has not been opened".into()),
    }
}

/// What the host gives the core beyond bytes and a monotonic clock: its wall clock (for the
/// registry's and the audit log's times) and, when it keeps the CA key, certificates for clients
/// added over the API.
pub trait Host: Send + Sync {
    /// Unix time in milliseconds.
    fn unix_time_ms(&self) -> u64;
    /// A client certificate for `name` over `public_key_pem` (a PEM SubjectPublicKeyInfo), signed
    /// by the server's CA: the certificate and the CA's (PEM) and the SPKI's SHA-256. The default
    /// refuses: such a server adds clients only while stopped (`keyward clients add`).
    fn issue_certificate(&self, name: &str, public_key_pem: &str) -> Result<IssuedCertificate, String> {
        let _ = (name, public_key_pem);
        Err("this server keeps no CA key: add clients while it is stopped".into())
    }
    /// Starts pairing for a new client `name` with `role`: a one-time code that lives `ttl_secs`
    /// (the host's default when `None`), and where the front end pairs with it. The host registers
    /// the client when the front end pairs. The default refuses: such a server does not pair.
    fn start_pairing(
        &self,
        name: &str,
        role: crate::principal::Role,
        ttl_secs: Option<u64>,
    ) -> Result<PairingTicket, String> {
        let _ = (name, role, ttl_secs);
        Err("this server does not pair clients (no pairing address is configured)".into())
    }
}

/// A pairing code a [`Host`] made.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingTicket {
    /// The one-time code, for the owner to hand to the front end (a secret until used).
    pub code: zeroize::Zeroizing<String>,
    /// When it expires (Unix milliseconds).
    pub expires_unix_ms: u64,
    /// Where the front end pairs (`tcp://IP:PORT`).
    pub pair_url: String,
}

impl std::fmt::Debug for PairingTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairingTicket")
            .field("expires_unix_ms", &self.expires_unix_ms)
            .field("pair_url", &self.pair_url)
            .finish_non_exhaustive()
    }
}

/// A certificate a [`Host`] issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The client's certificate (PEM).
    pub certificate_pem: String,
    /// The CA's certificate (PEM).
    pub ca_certificate_pem: String,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo (what the registry records).
    pub spki_sha256: [u8; 32],
}

/// Reads a lock that guards plain tables (see [`lock`]).
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Writes a lock that guards plain tables (see [`lock`]).
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    /// The host's wall clock, or 0 when none was given.
    pub(crate) fn unix_time_ms(&self) -> u64 {
        self.host.as_ref().map_or(0, |host| host.unix_time_ms())
    }

    /// The role of `principal` now: built-in principals first, then the registry (`None`: unknown
    /// or revoked).
    pub(crate) fn role_of(&self, principal: &str) -> Option<Role> {
        match principal {
            Principal::LOCAL => Some(Role::Owner),
            Principal::LOCAL_HTTP => Some(self.config.local_http_role),
            name => read(&self.clients).get(name).filter(|r| r.is_active()).map(|r| r.role),
        }
    }

    /// Queues an audit event of `kind`, at the host's time. A cheap one is charged to its
    /// principal's budget, or to the shared one of peers that are no active client.
    pub(crate) fn audit(&self, event: AuditEvent, kind: Kind) {
        let bucket = match kind {
            Kind::Cheap if self.role_of(&event.principal).is_none() => crate::audit::SHARED.to_owned(),
            _ => event.principal.clone(),
        };
        let now = self.unix_time_ms();
        lock(&self.audit).push(event, kind, &bucket, now);
    }
}

/// A store failure as clients see it: no detail (it may name a path); the detail goes to the log.
pub(crate) fn store_error(error: StoreError) -> MethodError {
    tracing::error!(%error, "wallet store failure");
    MethodError::Storage
}
