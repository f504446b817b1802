//! Method dispatch: the inner JSON-RPC methods, their params, the token methods, and methods that
//! an embedder registers.

use std::fmt;

use serde_json::{Value, json};

use crate::jsonrpc::{self, MethodError, string, take_params};
use crate::keys;
use crate::secret::{MasterKey, Token};
use crate::server::{AfterAnswer, CallContext, Server, lock};
use crate::store::{Account, StoreError, WalletKey};
use crate::vault::{UnlockError, Unlocked};

/// Every built-in method and its params, in grin-wallet's order.
pub const METHODS: &[(&str, &[&str])] = &[
    ("init_secure_api", &["ecdh_pubkey"]),
    ("get_top_level_directory", &[]),
    ("set_top_level_directory", &["dir"]),
    ("create_config", &["chain_type", "wallet_config", "logging_config", "tor_config"]),
    ("create_wallet", &["name", "mnemonic", "mnemonic_length", "password"]),
    ("open_wallet", &["name", "password"]),
    ("close_wallet", &["name"]),
    ("get_mnemonic", &["name", "password"]),
    ("change_password", &["name", "old", "new"]),
    ("delete_wallet", &["name", "password"]),
    ("import_grin_wallet", &["name", "wallet_seed", "password"]),
    ("list_wallets", &[]),
    ("accounts", &["token"]),
    ("create_account_path", &["token", "label"]),
    ("set_active_account", &["token", "label"]),
    ("get_public_key", &["token", "path"]),
    ("sign_message", &["token", "path", "message"]),
    ("verify_message", &["public_key", "message", "signature"]),
];

fn param_names(method: &str) -> Option<&'static [&'static str]> {
    METHODS.iter().find(|(name, _)| *name == method).map(|(_, params)| *params)
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

type AppHandler = Box<dyn Fn(&AppCall<'_>) -> Result<Value, AppError> + Send + Sync>;

/// A registered embedder method.
pub(crate) struct AppMethod {
    params: Vec<String>,
    handler: AppHandler,
}

/// Why a method could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The name is a built-in method or already registered.
    #[error("method name is taken")]
    NameTaken,
    /// `token` is added by Keyward; do not list it.
    #[error("do not list 'token'; it is always the first param")]
    TokenListed,
}

impl Server {
    /// Registers an embedder's method. Its params are `token` followed by `params`; the handler
    /// runs with the wallet's unmasked master key, which is wiped when it returns.
    pub fn register_method<F>(&mut self, name: &str, params: &[&str], handler: F) -> Result<(), RegisterError>
    where
        F: Fn(&AppCall<'_>) -> Result<Value, AppError> + Send + Sync + 'static,
    {
        if param_names(name).is_some() || self.app_methods.contains_key(name) || name == "encrypted_request_v3" {
            return Err(RegisterError::NameTaken);
        }
        if params.contains(&"token") {
            return Err(RegisterError::TokenListed);
        }
        let method = AppMethod { params: params.iter().map(|p| (*p).to_owned()).collect(), handler: Box::new(handler) };
        self.app_methods.insert(name.to_owned(), method);
        Ok(())
    }

    pub(crate) fn dispatch(
        &self,
        method: &str,
        params: Option<&mut Value>,
        context: &CallContext,
        after: &mut AfterAnswer,
    ) -> Result<Value, MethodError> {
        let Some(names) = param_names(method) else {
            return self.dispatch_app(method, params, context);
        };
        let mut p = take_params(params, names)?;
        let result = self.dispatch_builtin(method, &p, context, after);
        p.iter_mut().for_each(crate::secret::wipe_json);
        result
    }

    fn dispatch_builtin(
        &self,
        method: &str,
        p: &[Value],
        context: &CallContext,
        after: &mut AfterAnswer,
    ) -> Result<Value, MethodError> {
        match method {
            "init_secure_api" => {
                let (public, cipher) =
                    self.new_session_key(Some(Value::Array(p.to_vec()))).map_err(MethodError::InvalidParams)?;
                after.rekey = Some(cipher);
                Ok(Value::String(hex::encode(public.serialize())))
            }
            "get_top_level_directory" => Ok(Value::String(self.top_level_directory(&context.dir))),
            "set_top_level_directory" => {
                after.dir = Some(self.set_top_level_directory(string(&p[0], "dir")?)?);
                Ok(Value::Null)
            }
            "create_config" => self.create_config(p, context),
            "create_wallet" => self.create_wallet(p, context),
            "open_wallet" => self.open_wallet(p, context),
            "close_wallet" => self.close_wallet(p, context),
            "get_mnemonic" => self.get_mnemonic(p, context),
            "change_password" => self.change_password(p, context),
            "delete_wallet" => self.delete_wallet(p, context),
            "import_grin_wallet" => self.import_grin_wallet(p, context),
            "list_wallets" => self.list_wallets(context),
            "accounts" => self.accounts(&self.unlock(&p[0], context)?),
            "create_account_path" => self.create_account_path(&self.unlock(&p[0], context)?, string(&p[1], "label")?),
            "set_active_account" => self.set_active_account(&self.unlock(&p[0], context)?, string(&p[1], "label")?),
            "get_public_key" => {
                let unlocked = self.unlock(&p[0], context)?;
                let path = keys::parse_path(string(&p[1], "path")?).map_err(key_error)?;
                let key = derive_at(&unlocked, &path)?;
                Ok(Value::String(hex::encode(unlocked.public_keys.public_key(&key, &path).map_err(key_error)?)))
            }
            "sign_message" => {
                let unlocked = self.unlock(&p[0], context)?;
                let path = keys::parse_path(string(&p[1], "path")?).map_err(key_error)?;
                let key = derive_at(&unlocked, &path)?;
                let message = string(&p[2], "message")?;
                let signature = keys::sign(&key, message.as_bytes()).map_err(key_error)?;
                let public = unlocked.public_keys.public_key(&key, &path).map_err(key_error)?;
                Ok(json!({"public_key": hex::encode(public), "signature": hex::encode(signature)}))
            }
            "verify_message" => verify_message(p),
            _ => Err(MethodError::MethodNotFound),
        }
    }

    fn dispatch_app(
        &self,
        method: &str,
        params: Option<&mut Value>,
        context: &CallContext,
    ) -> Result<Value, MethodError> {
        let app = self.app_methods.get(method).ok_or(MethodError::MethodNotFound)?;
        let mut names: Vec<&str> = vec!["token"];
        names.extend(app.params.iter().map(String::as_str));
        let mut p = take_params(params, &names)?;
        let result = self.unlock(&p[0], context).and_then(|unlocked| {
            let call = AppCall {
                wallet: &unlocked.key,
                master: &unlocked.master,
                active_account: &unlocked.active_account,
                params: &p[1..],
            };
            (app.handler)(&call).map_err(|e| MethodError::Application { variant: e.variant, detail: e.detail })
        });
        p.iter_mut().for_each(crate::secret::wipe_json);
        result
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

    fn accounts(&self, unlocked: &Unlocked) -> Result<Value, MethodError> {
        let mut accounts = self.store.load_accounts(&unlocked.key).map_err(store_error)?.unwrap_or_default();
        accounts.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(Value::Array(accounts.iter().map(|a| json!({"label": a.label, "path": account_path(a.index)})).collect()))
    }

    fn create_account_path(&self, unlocked: &Unlocked, label: &str) -> Result<Value, MethodError> {
        validate_label(label)?;
        let _guard = self.wallet_lock(&unlocked.key);
        let _held = lock(&_guard);
        let accounts = self
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
        match self.store.add_account(&unlocked.key, &account) {
            Ok(()) => Ok(Value::String(account_path(index))),
            Err(StoreError::AlreadyExists) => Err(MethodError::AccountLabelAlreadyExists(label.to_owned())),
            Err(e) => Err(store_error(e)),
        }
    }

    fn set_active_account(&self, unlocked: &Unlocked, label: &str) -> Result<Value, MethodError> {
        let accounts = self.store.load_accounts(&unlocked.key).map_err(store_error)?;
        if !accounts.is_some_and(|accounts| accounts.iter().any(|a| a.label == label)) {
            return Err(MethodError::UnknownAccountLabel(label.chars().take(64).collect()));
        }
        lock(&self.vault).set_active_account(&unlocked.key, label);
        Ok(Value::Null)
    }
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

pub(crate) fn store_error(error: StoreError) -> MethodError {
    tracing::error!(%error, "wallet store failure");
    MethodError::Storage
}

fn verify_message(p: &[Value]) -> Result<Value, MethodError> {
    let public = crate::envelope::parse_public_key(string(&p[0], "public_key")?)
        .map_err(|e| MethodError::Argument(e.to_string().replace("ecdh_pubkey", "public_key")))?;
    let message = jsonrpc::string(&p[1], "message")?;
    let signature = hex::decode(string(&p[2], "signature")?)
        .map_err(|_| MethodError::Argument("signature must be 64 bytes of hex".into()))?;
    Ok(Value::Bool(keys::verify(&public, message.as_bytes(), &signature)))
}
