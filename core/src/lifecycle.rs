//! The wallet lifecycle: config, create (or restore), open, close, mnemonic, password, delete.
//!
//! Slow work (Argon2id, store writes) runs under a per-wallet lock only, never under the session or
//! vault locks. A wrong password and a missing wallet give the same error, after the same KDF cost.

use serde_json::{Value, json};

use crate::jsonrpc::{MethodError, opt_string, string, u32_param};
use crate::keys;
use crate::secret::{Entropy, Password, Token};
use crate::seed_record::{GrinWalletSeed, SeedRecord, SeedRecordError};
use crate::state::{CallContext, State, lock, store_error};
use crate::store::{Account, StoreError, StoredWallet, WalletKey};
use crate::throttle::PrincipalWallet;

/// The name used when a method's `name` is `null`.
pub const DEFAULT_WALLET: &str = "default";
/// Longest wallet name or directory component.
pub const MAX_NAME_LEN: usize = 64;
/// Deepest top-level directory below the data root.
pub const MAX_DIR_DEPTH: usize = 8;
/// Most top-level directories other than the data root that a store holds something in (a config
/// or a wallet). A `create_config`, `create_wallet` or `import_grin_wallet` that would add one
/// more is refused (−32099 `ArgumentError: …`) and changes nothing. Each directory keeps one config
/// (≤ 64 KiB, replaced by the next), so configs take at most `(64 + 1) × 64 KiB` ≈ 4.1 MiB.
/// `set_top_level_directory` stores nothing (a session's own string).
pub const MAX_DIRECTORIES: usize = 64;
/// Chain types `create_config` accepts (grin's names).
pub const CHAIN_TYPES: &[&str] = &["Mainnet", "Testnet", "UserTesting", "AutomatedTesting", "Floonet"];

/// Checks a wallet name or directory component: 1 to 64 of `A-Z a-z 0-9 _ - .`, not starting with a
/// dot. This keeps names inside the data root whatever a store does with them (no `..`, no `/`).
pub fn validate_name(name: &str) -> Result<(), MethodError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(MethodError::Argument(format!(
            "names must be 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 _ - . and not start with a dot"
        )))
    }
}

fn password(value: &Value, name: &str) -> Result<Password, MethodError> {
    Ok(Password::new(string(value, name)?.to_owned()))
}

fn wallet_key(name: &Value, context: &CallContext) -> Result<WalletKey, MethodError> {
    let name = opt_string(name, "name")?.unwrap_or(DEFAULT_WALLET);
    validate_name(name)?;
    Ok(WalletKey { dir: context.dir.clone(), name: name.to_owned() })
}

pub(crate) fn top_level_directory(state: &State, dir: &str) -> String {
    if dir.is_empty() { state.config.data_root.clone() } else { format!("{}/{dir}", state.config.data_root) }
}

/// Resolves a requested top-level directory to a path relative to the data root. Absolute paths
/// must lie under the data root; `..` and anything that is not a valid name are refused.
pub(crate) fn set_top_level_directory(state: &State, requested: &str) -> Result<String, MethodError> {
    let outside = || MethodError::Argument("the directory must be inside the server's data root".into());
    let root = state.config.data_root.trim_end_matches('/');
    let relative = if requested == root {
        ""
    } else if let Some(rest) = requested.strip_prefix(root).and_then(|r| r.strip_prefix('/')) {
        rest
    } else if requested.starts_with('/') || requested.starts_with('\\') || requested.contains(':') {
        return Err(outside());
    } else {
        requested
    };
    let mut parts = Vec::new();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(outside()),
            _ => {
                validate_name(part).map_err(|_| outside())?;
                parts.push(part);
            }
        }
    }
    if parts.len() > MAX_DIR_DEPTH {
        return Err(outside());
    }
    Ok(parts.join("/"))
}

pub(crate) fn create_config(state: &State, p: &[Value], context: &CallContext) -> Result<Value, MethodError> {
    let chain_type = string(&p[0], "chain_type")?;
    if !CHAIN_TYPES.contains(&chain_type) {
        return Err(MethodError::Argument(format!("chain_type must be one of {CHAIN_TYPES:?}")));
    }
    for (value, name) in p[1..].iter().zip(["wallet_config", "logging_config", "tor_config"]) {
        if !(value.is_null() || value.is_object()) {
            return Err(MethodError::InvalidParams(format!("'{name}' must be an object or null")));
        }
    }
    let config = json!({
        "chain_type": chain_type,
        "wallet_config": p[1],
        "logging_config": p[2],
        "tor_config": p[3],
    });
    let bytes = serde_json::to_vec(&config).map_err(|_| MethodError::Argument("config is not JSON".into()))?;
    if bytes.len() > 64 * 1024 {
        return Err(MethodError::Argument("config is larger than 64 KiB".into()));
    }
    let _directories = lock(&state.directories);
    room_for(state, &context.dir)?;
    state.store.save_config(&context.dir, &bytes).map_err(store_error)?;
    Ok(Value::Null)
}

pub(crate) fn create_wallet(state: &State, p: &[Value], context: &CallContext) -> Result<Value, MethodError> {
    let key = wallet_key(&p[0], context)?;
    let mnemonic = opt_string(&p[1], "mnemonic")?;
    let length = u32_param(&p[2], "mnemonic_length")? as usize;
    let password = password(&p[3], "password")?;
    let entropy = match mnemonic {
        Some(words) => {
            let entropy = keys::entropy_of(words)
                .ok_or_else(|| MethodError::Argument("mnemonic is not a valid English BIP39 mnemonic".into()))?;
            // Like grin, a restore takes the length from the mnemonic and ignores mnemonic_length.
            let _ = length;
            entropy
        }
        None => {
            if !Entropy::LENGTHS.contains(&length) {
                return Err(MethodError::Argument(
                    "mnemonic_length must be 16, 20, 24, 28 or 32 (bytes of entropy: 12 to 24 words)".into(),
                ));
            }
            let bytes = state.random_secret::<32>();
            // The length was checked against `Entropy::LENGTHS` just above.
            Entropy::from_bytes(bytes[..length].to_vec()).expect("length is a BIP39 length")
        }
    };
    store_new_wallet(state, &key, &entropy, &password)
}

/// Imports grin-wallet's `wallet.seed` (the file's JSON, as an object or a string): decrypts it
/// with its password and stores it as a Keyward record (Argon2id) under the same password.
pub(crate) fn import_grin_wallet(state: &State, p: &[Value], context: &CallContext) -> Result<Value, MethodError> {
    let key = wallet_key(&p[0], context)?;
    let file = match &p[1] {
        Value::String(text) => GrinWalletSeed::from_bytes(text.as_bytes()),
        Value::Object(_) => GrinWalletSeed::from_json(&p[1]),
        _ => return Err(MethodError::InvalidParams("'wallet_seed' must be an object or a string".into())),
    }
    .map_err(|_| MethodError::Argument("wallet_seed is not a grin-wallet wallet.seed file".into()))?;
    let password = password(&p[2], "password")?;
    let entropy = file.open(&password).map_err(|e| match e {
        SeedRecordError::WrongPassword => {
            MethodError::Argument("wallet_seed does not decrypt with this password".into())
        }
        SeedRecordError::Malformed => MethodError::Argument("wallet_seed is not a grin-wallet wallet.seed file".into()),
    })?;
    store_new_wallet(state, &key, &entropy, &password)
}

fn store_new_wallet(
    state: &State,
    key: &WalletKey,
    entropy: &Entropy,
    password: &Password,
) -> Result<Value, MethodError> {
    let guard = state.wallet_lock(key);
    let _held = lock(&guard);
    if state.store.load_wallet(key).map_err(store_error)?.is_some() {
        return Err(MethodError::WalletSeedExists);
    }
    let record = seal_record(state, entropy, password)?;
    // After the KDF, which must not run under a lock every directory shares.
    let _directories = lock(&state.directories);
    room_for(state, &key.dir)?;
    let wallet =
        StoredWallet { seed_record: record.to_bytes(), accounts: vec![Account { label: "default".into(), index: 0 }] };
    match state.store.create_wallet(key, &wallet) {
        Ok(()) => Ok(Value::Null),
        Err(StoreError::AlreadyExists) => Err(MethodError::WalletSeedExists),
        Err(e) => Err(store_error(e)),
    }
}

/// Whether `dir` may hold something: the root, a directory that holds something already, or a new
/// one while the store holds fewer than [`MAX_DIRECTORIES`]. The caller holds `state.directories`
/// until it has written, so two calls cannot both take the last place.
fn room_for(state: &State, dir: &str) -> Result<(), MethodError> {
    if dir.is_empty() {
        return Ok(());
    }
    let held = state.store.directories().map_err(store_error)?;
    if held.len() < MAX_DIRECTORIES || held.iter().any(|d| d == dir) {
        return Ok(());
    }
    Err(MethodError::Argument(format!(
        "the store holds wallets or configs in {MAX_DIRECTORIES} directories, the most it keeps: use one of them"
    )))
}

fn seal_record(state: &State, entropy: &Entropy, password: &Password) -> Result<SeedRecord, MethodError> {
    SeedRecord::seal(entropy, password, state.config.kdf, state.random(), state.random())
        .map_err(|_| MethodError::Argument("the configured KDF parameters are invalid".into()))
}

/// Checks a wallet's password, under the unlock throttle. Returns the stored wallet, the parsed
/// record and the entropy. A missing wallet costs one KDF too and fails the same way, but is not
/// throttled: it gets no throttle entry and no store write. The caller holds the wallet's lock, so
/// the wallet cannot appear or vanish during the check.
fn check_password(
    state: &State,
    key: &WalletKey,
    password: &Password,
    context: &CallContext,
) -> Result<(StoredWallet, SeedRecord, Entropy), MethodError> {
    let now_ms = context.now_ms;
    let Some(stored) = state.store.load_wallet(key).map_err(store_error)? else {
        // Same cost as a real attempt, so timing does not tell which wallets exist. Nothing is
        // recorded: a flood of made-up names must not fill the throttle's table or the store.
        let _ = state.config.kdf.derive(password, &[0u8; 16]);
        return Err(MethodError::WrongPassword);
    };
    // Each principal's attempts are counted apart: one client's failures never make another wait.
    let at = PrincipalWallet { principal: context.principal.name().into(), wallet: key.clone() };
    if !lock(&state.throttle).knows(&at) {
        // After a restart (or once the entry made room for others), the persisted count applies again.
        let failures = state.store.load_failures(context.principal.name(), key).map_err(store_error)?;
        lock(&state.throttle).restore(&at, failures, now_ms);
    }
    if let Err(wait) = lock(&state.throttle).check(&at, now_ms) {
        return Err(MethodError::Throttled { retry_after_ms: wait });
    }
    let outcome = match SeedRecord::from_bytes(&stored.seed_record) {
        Ok(record) => match record.open(password) {
            Ok(entropy) => Ok((stored, record, entropy)),
            Err(_) => Err(MethodError::WrongPassword),
        },
        Err(SeedRecordError::Malformed | SeedRecordError::WrongPassword) => {
            tracing::error!(wallet = %key.name, "seed record is damaged or of an unknown version");
            let _ = state.config.kdf.derive(password, &[0u8; 16]);
            Err(MethodError::WrongPassword)
        }
    };
    let (before, after) = {
        let mut throttle = lock(&state.throttle);
        let before = throttle.failures(&at);
        match &outcome {
            Ok(_) => throttle.success(&at),
            Err(_) => throttle.failure(&at, now_ms),
        }
        (before, throttle.failures(&at))
    };
    if before != after {
        // Persist the count so a restart does not reset the backoff. A store failure here is
        // logged; the in-memory throttle still applies.
        let _ = state.store.save_failures(context.principal.name(), key, after).map_err(store_error);
    }
    outcome
}

pub(crate) fn open_wallet(state: &State, p: &[Value], context: &CallContext) -> Result<Value, MethodError> {
    let key = wallet_key(&p[0], context)?;
    let password = password(&p[1], "password")?;
    let guard = state.wallet_lock(&key);
    let _held = lock(&guard);
    let (stored, record, entropy) = check_password(state, &key, &password, context)?;
    if state.config.kdf.stronger_than(&record.kdf) {
        // Upgrade the record to the configured parameters; a failure leaves the old record.
        if let Ok(new) = seal_record(state, &entropy, &password) {
            let _ = state.store.replace_seed_record(&key, &stored.seed_record, &new.to_bytes());
        }
    }
    let master = keys::master_key(&entropy);
    let token = loop {
        let candidate = Token::from_bytes(*state.random_secret());
        if secp256k1::SecretKey::from_secret_bytes(*candidate.expose()).is_ok() {
            break candidate;
        }
    };
    let limit = state.config.tokens.max_open_wallets;
    let mut vault = lock(&state.vault);
    // A revocation while the KDF ran closed this principal's openings: do not make a new one
    // (revoke writes the registry before it takes the vault lock, so this check sees it).
    if state.role_of(context.principal.name()).is_none() {
        return Err(MethodError::Revoked);
    }
    vault
        .open(key, &context.principal, &master, &token, context.now_ms)
        .map_err(|_| MethodError::Lifecycle(format!("too many open wallets (at most {limit}): close one first")))?;
    Ok(Value::String(token.to_hex().to_string()))
}

/// Closes the caller's opening of a wallet; whether it held one.
pub(crate) fn close_wallet(state: &State, p: &[Value], context: &CallContext) -> Result<bool, MethodError> {
    let key = wallet_key(&p[0], context)?;
    // The caller's own opening: another principal's stays open (and its seed in the vault).
    Ok(lock(&state.vault).close(&key, &context.principal))
}

pub(crate) fn get_mnemonic(state: &State, p: &[Value], context: &CallContext) -> Result<Value, MethodError> {
    let key = wallet_key(&p[0], context)?;
    let password = password(&p[1], "password")?;
    // Under the wallet's lock like every password check, so parallel guesses are serialized
    // through the throttle.
    let guard = state.wallet_lock(&key);
    let _held = lock(&guard);
    let (_, _, entropy) = check_password(state, &key, &password, context)?;
    Ok(Value::String(keys::mnemonic_of(&entropy).to_string()))
}

pub(crate) fn change_password(state: &State, p: &[Value], context: &CallContext) -> Result<Value, MethodError> {
    let key = wallet_key(&p[0], context)?;
    let old = password(&p[1], "old")?;
    let new = password(&p[2], "new")?;
    let guard = state.wallet_lock(&key);
    let _held = lock(&guard);
    let (stored, _, entropy) = check_password(state, &key, &old, context)?;
    let record = seal_record(state, &entropy, &new)?;
    state.store.replace_seed_record(&key, &stored.seed_record, &record.to_bytes()).map_err(store_error)?;
    if state.config.tokens.close_on_password_change {
        // Only once the new password is stored: a failed change leaves every opening as it was.
        lock(&state.vault).close_everywhere(&key);
    }
    Ok(Value::Null)
}

pub(crate) fn delete_wallet(state: &State, p: &[Value], context: &CallContext) -> Result<Value, MethodError> {
    let key = wallet_key(&p[0], context)?;
    let password = password(&p[1], "password")?;
    let guard = state.wallet_lock(&key);
    let _held = lock(&guard);
    check_password(state, &key, &password, context)?;
    lock(&state.vault).close_everywhere(&key);
    match state.store.delete_wallet(&key) {
        Ok(()) | Err(StoreError::NotFound) => Ok(Value::Null),
        Err(e) => Err(store_error(e)),
    }
}

pub(crate) fn list_wallets(state: &State, context: &CallContext) -> Result<Value, MethodError> {
    let names = state.store.list_wallets(&context.dir).map_err(store_error)?;
    let vault = lock(&state.vault);
    Ok(Value::Array(
        names
            .into_iter()
            .map(|name| {
                let open = vault.is_open(
                    &WalletKey { dir: context.dir.clone(), name: name.clone() },
                    &context.principal,
                    context.now_ms,
                );
                json!({"name": name, "open": open})
            })
            .collect(),
    ))
}
