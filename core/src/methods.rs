//! The method table: every built-in method's name, params, role, speed and handler, in one place
//! that dispatch, the slow/fast split and the OpenRPC check all read. Also the token methods'
//! handlers, and the methods an embedder registers.

use std::fmt;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::admin;
use crate::envelope::Cipher;
use crate::jsonrpc::{self, MethodError, string, take_params};
use crate::keys;
use crate::lifecycle;
use crate::principal::Role::{self, Owner, Reader, Signer};
use crate::secret::{MasterKey, wipe_json};
use crate::state::{CallContext, State, lock, store_error};
use crate::store::{Account, StoreError, WalletKey};
use crate::vault::Unlocked;
use Audit::{Always, RefusalsOnly};
use Speed::{Fast, Slow};
use Subject::{Client, None as NoSubject, Token, Wallet};

/// Whether a call may be answered on a transport's I/O thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Speed {
    /// Microseconds of work: no KDF, no store write. Answered by [`Server::handle_step`] at once.
    ///
    /// [`Server::handle_step`]: crate::Server::handle_step
    Fast,
    /// Runs a KDF or writes to the store (an fsync, in `keyward-store`): set aside as a
    /// [`SlowCall`](crate::SlowCall) for a blocking thread.
    Slow,
}

impl Speed {
    /// The speed's name as `spec/openrpc.json` (`x-keyward-speed`) writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Slow => "slow",
        }
    }
}

/// What one inner request asks of the envelope layer after it is answered.
#[derive(Default)]
pub(crate) struct AfterAnswer {
    /// A new session key (`init_secure_api` inside an envelope), used from the next request on.
    pub(crate) rekey: Option<Cipher>,
    /// A new top-level directory (`set_top_level_directory`), used from the next request on.
    pub(crate) dir: Option<String>,
    /// A client was revoked (`revoke_client`): the server ends its sessions.
    pub(crate) revoked: Option<String>,
    /// The wallet a token call used, for the audit log (named only if a record is written).
    pub(crate) wallet: Option<Arc<WalletKey>>,
    /// Nothing happened that the audit log keeps (a `close_wallet` of a wallet the caller did not
    /// hold open): a client cannot fill the log with made-up names.
    pub(crate) nothing_to_audit: bool,
}

/// A built-in method's code: the shared state, the params in the table's order, the call's context.
type Handler = fn(&State, &[Value], &CallContext, &mut AfterAnswer) -> Result<Value, MethodError>;

/// Which calls of a method the audit log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Audit {
    /// Every call, whatever its outcome (a method that changes or reveals something).
    Always,
    /// Only a call that is refused (forbidden, revoked, throttled, wrong password): a read that
    /// succeeds leaves no record.
    RefusalsOnly,
}

/// What the audit record of a call names: a wallet in its `wallet` field, a client in its `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Subject {
    /// Nothing.
    None,
    /// The wallet this param names (in the session's top-level directory, if one is set).
    Wallet(&'static str),
    /// The client this param names, as the record's `target` (clients have no directory).
    Client(&'static str),
    /// The wallet the call's token opened, once the token is found valid.
    Token,
}

/// One built-in method: everything the server knows about it.
pub struct Method {
    name: &'static str,
    params: &'static [&'static str],
    role: Role,
    speed: Speed,
    audit: Audit,
    subject: Subject,
    handler: Handler,
}

impl Method {
    /// The method's name on the wire.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its params, in grin-wallet's order (positional params are taken in this order).
    pub fn params(&self) -> &'static [&'static str] {
        self.params
    }

    /// The least role that may call it.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether it is answered at once or set aside for a blocking thread.
    pub fn speed(&self) -> Speed {
        self.speed
    }

    /// Which of its calls the audit log records.
    pub fn audit(&self) -> Audit {
        self.audit
    }

    /// What its audit records name.
    pub fn subject(&self) -> Subject {
        self.subject
    }

    /// Takes the params by grin's rules, runs the handler, and wipes the params (they may hold
    /// passwords and mnemonics).
    pub(crate) fn call(
        &self,
        state: &State,
        params: Option<&mut Value>,
        context: &CallContext,
        after: &mut AfterAnswer,
    ) -> Result<Value, MethodError> {
        let mut p = take_params(params, self.params)?;
        let result = (self.handler)(state, &p, context, after);
        p.iter_mut().for_each(wipe_json);
        result
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Method")
            .field("name", &self.name)
            .field("params", &self.params)
            .field("role", &self.role)
            .field("speed", &self.speed)
            .field("audit", &self.audit)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Every built-in method. `encrypted_request_v3` is not here: it is the envelope, which the server
/// opens before any method is looked up. Slow: runs a KDF or writes to the store. Audited `Always`:
/// every call is recorded; `RefusalsOnly`: only a refused one.
#[rustfmt::skip]
pub const METHODS: &[Method] = &[
    // name, params, role, speed, audit, subject, handler
    method("init_secure_api", &["ecdh_pubkey"], Reader, Fast, RefusalsOnly, NoSubject, init_secure_api),
    method("get_top_level_directory", &[], Reader, Fast, RefusalsOnly, NoSubject, get_top_level_directory),
    method("set_top_level_directory", &["dir"], Owner, Fast, Always, NoSubject, set_top_level_directory),
    method(
        "create_config", &["chain_type", "wallet_config", "logging_config", "tor_config"], Owner, Slow, Always,
        NoSubject, |s, p, c, _| lifecycle::create_config(s, p, c),
    ),
    method(
        "create_wallet", &["name", "mnemonic", "mnemonic_length", "password"], Owner, Slow, Always, Wallet("name"),
        |s, p, c, _| lifecycle::create_wallet(s, p, c),
    ),
    method("open_wallet", &["name", "password"], Reader, Slow, Always, Wallet("name"), |s, p, c, _| {
        lifecycle::open_wallet(s, p, c)
    }),
    method("close_wallet", &["name"], Reader, Fast, Always, Wallet("name"), |s, p, c, after| {
        after.nothing_to_audit = !lifecycle::close_wallet(s, p, c)?;
        Ok(Value::Null)
    }),
    method("get_mnemonic", &["name", "password"], Owner, Slow, Always, Wallet("name"), |s, p, c, _| {
        lifecycle::get_mnemonic(s, p, c)
    }),
    method("change_password", &["name", "old", "new"], Owner, Slow, Always, Wallet("name"), |s, p, c, _| {
        lifecycle::change_password(s, p, c)
    }),
    method("delete_wallet", &["name", "password"], Owner, Slow, Always, Wallet("name"), |s, p, c, _| {
        lifecycle::delete_wallet(s, p, c)
    }),
    method(
        "import_grin_wallet", &["name", "wallet_seed", "password"], Owner, Slow, Always, Wallet("name"),
        |s, p, c, _| lifecycle::import_grin_wallet(s, p, c),
    ),
    method("list_wallets", &[], Reader, Fast, RefusalsOnly, NoSubject, |s, _, c, _| lifecycle::list_wallets(s, c)),
    method("accounts", &["token"], Reader, Fast, RefusalsOnly, Token, accounts),
    method("create_account_path", &["token", "label"], Signer, Slow, Always, Token, create_account_path),
    method("set_active_account", &["token", "label"], Signer, Fast, RefusalsOnly, Token, set_active_account),
    method("get_public_key", &["token", "path"], Reader, Fast, RefusalsOnly, Token, get_public_key),
    method("sign_message", &["token", "path", "message"], Signer, Fast, Always, Token, sign_message),
    method(
        "verify_message", &["public_key", "message", "signature"], Reader, Fast, RefusalsOnly, NoSubject,
        |_, p, _, _| verify_message(p),
    ),
    method("add_client", &["name", "role", "public_key", "uid"], Owner, Slow, Always, Client("name"), |s, p, c, _| {
        admin::add_client(s, p, c)
    }),
    method("pair_client", &["name", "role", "ttl_secs"], Owner, Slow, Always, Client("name"), |s, p, c, _| {
        admin::pair_client(s, p, c)
    }),
    method("list_clients", &[], Owner, Fast, RefusalsOnly, NoSubject, |s, _, _, _| Ok(admin::list_clients(s))),
    method("set_client_role", &["name", "role"], Owner, Slow, Always, Client("name"), |s, p, c, _| {
        admin::set_client_role(s, p, c)
    }),
    method("revoke_client", &["name"], Owner, Slow, Always, Client("name"), |s, p, c, after| {
        let revoked = admin::revoke_client(s, p, c)?;
        after.revoked = p[0].as_str().map(str::to_owned);
        Ok(revoked)
    }),
    method("audit_log", &["after", "limit"], Owner, Slow, RefusalsOnly, NoSubject, |s, p, _, _| admin::audit_log(s, p)),
];

/// A row of [`METHODS`].
const fn method(
    name: &'static str,
    params: &'static [&'static str],
    role: Role,
    speed: Speed,
    audit: Audit,
    subject: Subject,
    handler: Handler,
) -> Method {
    Method { name, params, role, speed, audit, subject, handler }
}

/// The built-in method called `name`.
pub fn find(name: &str) -> Option<&'static Method> {
    METHODS.iter().find(|method| method.name == name)
}

fn init_secure_api(state: &State, p: &[Value], _: &CallContext, after: &mut AfterAnswer) -> Result<Value, MethodError> {
    let (public, cipher) = state.session_key_for(&p[0]).map_err(MethodError::InvalidParams)?;
    after.rekey = Some(cipher);
    Ok(Value::String(hex::encode(public.serialize())))
}

fn get_top_level_directory(
    state: &State,
    _: &[Value],
    context: &CallContext,
    _: &mut AfterAnswer,
) -> Result<Value, MethodError> {
    Ok(Value::String(lifecycle::top_level_directory(state, &context.dir)))
}

fn set_top_level_directory(
    state: &State,
    p: &[Value],
    _: &CallContext,
    after: &mut AfterAnswer,
) -> Result<Value, MethodError> {
    after.dir = Some(lifecycle::set_top_level_directory(state, string(&p[0], "dir")?)?);
    Ok(Value::Null)
}

fn accounts(state: &State, p: &[Value], context: &CallContext, after: &mut AfterAnswer) -> Result<Value, MethodError> {
    // Labels and paths only: the seed stays masked.
    let key = state.check_token(&p[0], context)?;
    after.wallet = Some(Arc::clone(&key));
    let mut accounts = state.store.load_accounts(&key).map_err(store_error)?.unwrap_or_default();
    accounts.sort_by(|a, b| a.label.cmp(&b.label));
    Ok(Value::Array(accounts.iter().map(|a| json!({"label": a.label, "path": account_path(a.index)})).collect()))
}

fn create_account_path(
    state: &State,
    p: &[Value],
    context: &CallContext,
    after: &mut AfterAnswer,
) -> Result<Value, MethodError> {
    let unlocked = unlock(state, p, context, after)?;
    let label = string(&p[1], "label")?;
    validate_label(label)?;
    let guard = state.wallet_lock(&unlocked.key);
    let _held = lock(&guard);
    let accounts = state
        .store
        .load_accounts(&unlocked.key)
        .map_err(store_error)?
        .ok_or_else(|| MethodError::Lifecycle("Wallet has not been opened".into()))?;
    if accounts.iter().any(|a| a.label == label) {
        return Err(MethodError::AccountLabelAlreadyExists(label.to_owned()));
    }
    if accounts.len() >= MAX_ACCOUNTS {
        return Err(MethodError::Argument(format!("a wallet holds at most {MAX_ACCOUNTS} accounts")));
    }
    let index = accounts.iter().map(|a| a.index).max().map_or(0, |m| m + 1);
    let account = Account { label: label.to_owned(), index };
    match state.store.add_account(&unlocked.key, &account) {
        Ok(()) => Ok(Value::String(account_path(index))),
        Err(StoreError::AlreadyExists) => Err(MethodError::AccountLabelAlreadyExists(label.to_owned())),
        Err(e) => Err(store_error(e)),
    }
}

fn set_active_account(
    state: &State,
    p: &[Value],
    context: &CallContext,
    after: &mut AfterAnswer,
) -> Result<Value, MethodError> {
    let unlocked = unlock(state, p, context, after)?;
    let label = string(&p[1], "label")?;
    let accounts = state.store.load_accounts(&unlocked.key).map_err(store_error)?;
    if !accounts.is_some_and(|accounts| accounts.iter().any(|a| a.label == label)) {
        return Err(MethodError::UnknownAccountLabel(label.chars().take(64).collect()));
    }
    lock(&state.vault).set_active_account(&unlocked.key, &context.principal, label);
    Ok(Value::Null)
}

fn get_public_key(
    state: &State,
    p: &[Value],
    context: &CallContext,
    after: &mut AfterAnswer,
) -> Result<Value, MethodError> {
    let unlocked = unlock(state, p, context, after)?;
    let path = keys::parse_path(string(&p[1], "path")?).map_err(key_error)?;
    let key = derive_at(&unlocked, &path)?;
    Ok(Value::String(hex::encode(unlocked.public_keys.public_key(&key, &path).map_err(key_error)?)))
}

fn sign_message(
    state: &State,
    p: &[Value],
    context: &CallContext,
    after: &mut AfterAnswer,
) -> Result<Value, MethodError> {
    let unlocked = unlock(state, p, context, after)?;
    let path = keys::parse_path(string(&p[1], "path")?).map_err(key_error)?;
    let key = derive_at(&unlocked, &path)?;
    let message = string(&p[2], "message")?;
    let signature = keys::sign(&key, message.as_bytes()).map_err(key_error)?;
    let public = unlocked.public_keys.public_key(&key, &path).map_err(key_error)?;
    Ok(json!({"public_key": hex::encode(public), "signature": hex::encode(signature)}))
}

/// What an embedder's method receives: the wallet, its master key (only for this call), the params.
pub struct AppCall<'a> {
    /// The wallet the token opened.
    pub wallet: &'a WalletKey,
    /// The unmasked master key; wiped when the call returns.
    pub master: &'a MasterKey,
    /// The label of the wallet's active account (`set_active_account`).
    pub active_account: &'a str,
    /// The params after `token`, in the registered order.
    pub params: &'a [Value],
}

impl fmt::Debug for AppCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCall").field("wallet", &self.wallet).finish_non_exhaustive()
    }
}

/// An embedder method's failure, answered as −32099 `variant: detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    /// The variant name, e.g. `"GenericError"`.
    pub variant: String,
    /// A detail without secrets or paths, possibly empty.
    pub detail: String,
}

/// The speed of every embedder method: its code is unknown, so it is run off the I/O threads.
pub const APP_METHOD_SPEED: Speed = Speed::Slow;

type AppHandler = Box<dyn Fn(&AppCall<'_>) -> Result<Value, AppError> + Send + Sync>;

/// A registered embedder method.
pub(crate) struct AppMethod {
    params: Vec<String>,
    pub(crate) role: Role,
    handler: AppHandler,
}

impl AppMethod {
    pub(crate) fn new<F>(params: &[&str], role: Role, handler: F) -> Self
    where
        F: Fn(&AppCall<'_>) -> Result<Value, AppError> + Send + Sync + 'static,
    {
        Self { params: params.iter().map(|p| (*p).to_owned()).collect(), role, handler: Box::new(handler) }
    }

    /// Takes `token` and the registered params, runs the handler with the wallet's master key
    /// unmasked, and wipes the params.
    pub(crate) fn call(
        &self,
        state: &State,
        params: Option<&mut Value>,
        context: &CallContext,
        after: &mut AfterAnswer,
    ) -> Result<Value, MethodError> {
        let mut names: Vec<&str> = vec!["token"];
        names.extend(self.params.iter().map(String::as_str));
        let mut p = take_params(params, &names)?;
        let result = unlock(state, &p, context, after).and_then(|unlocked| {
            let call = AppCall {
                wallet: &unlocked.key,
                master: &unlocked.master,
                active_account: &unlocked.active_account,
                params: &p[1..],
            };
            (self.handler)(&call).map_err(|e| MethodError::Application { variant: e.variant, detail: e.detail })
        });
        p.iter_mut().for_each(wipe_json);
        result
    }
}

/// The wallet of the token in `p[0]`, unlocked for this call; it is the call's audit subject
/// ([`Subject::Token`]).
fn unlock(state: &State, p: &[Value], context: &CallContext, after: &mut AfterAnswer) -> Result<Unlocked, MethodError> {
    let unlocked = state.unlock(&p[0], context)?;
    after.wallet = Some(Arc::clone(&unlocked.key));
    Ok(unlocked)
}

/// A wallet as the audit log names it: `name`, or `dir/name` in a directory.
pub(crate) fn audit_name(key: &WalletKey) -> String {
    if key.dir.is_empty() { key.name.clone() } else { format!("{}/{}", key.dir, key.name) }
}

/// Why a method could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The name is a built-in method or already registered.
    #[error("method name is taken")]
    NameTaken,
    /// `token` is added by Keyward; do not list it.
    #[error("do not list 'token'; it is always the first param")]
    TokenListed,
}

/// Most accounts in one wallet.
pub const MAX_ACCOUNTS: usize = 1000;

fn validate_label(label: &str) -> Result<(), MethodError> {
    if label.is_empty() || label.chars().count() > 64 || label.chars().any(char::is_control) {
        return Err(MethodError::Argument("account label must be 1 to 64 printable characters".into()));
    }
    Ok(())
}

/// grin's 17-byte account identifier for `m/index/0`: depth 2, then four big-endian u32s.
pub fn account_path(index: u32) -> String {
    let mut bytes = [0u8; 17];
    bytes[0] = 2;
    bytes[1..5].copy_from_slice(&index.to_be_bytes());
    hex::encode(bytes)
}

/// The key at `path` of an unlocked wallet; the public keys the derivation needs come from (and go
/// to) the wallet's cache.
fn derive_at(unlocked: &Unlocked, path: &[u32]) -> Result<MasterKey, MethodError> {
    keys::derive_cached(&unlocked.master, path, Some(&unlocked.public_keys)).map_err(key_error)
}

fn key_error(error: keys::KeyPathError) -> MethodError {
    MethodError::Argument(error.to_string())
}

fn verify_message(p: &[Value]) -> Result<Value, MethodError> {
    let public = crate::envelope::parse_public_key(string(&p[0], "public_key")?)
        .map_err(|e| MethodError::Argument(e.to_string().replace("ecdh_pubkey", "public_key")))?;
    let message = jsonrpc::string(&p[1], "message")?;
    let signature = hex::decode(string(&p[2], "signature")?)
        .map_err(|_| MethodError::Argument("signature must be 64 bytes of hex".into()))?;
    Ok(Value::Bool(keys::verify(&public, message.as_bytes(), &signature)))
}
