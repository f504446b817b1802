//! JSON-RPC 2.0 shapes as Owner API V3 writes them, parameter rules, and the one place where
//! errors become wire codes and messages.
//!
//! Answers are written `{"id":…,"jsonrpc":"2.0","result":{"Ok":…}}` or
//! `{"id":…,"jsonrpc":"2.0","error":{"code":…,"message":"…"}}`, in that field order, as grin-wallet does.
//!
//! Inner answers are written into a [`SecretBuffer`] that is then encrypted in place, so the plaintext
//! (which may hold a token or a mnemonic) is overwritten by its own ciphertext, and a buffer that had
//! to grow wiped its old block.

use serde::Serialize;
use serde_json::Value;

use crate::secret::SecretBuffer;

/// Where answers are written: a `Vec<u8>` (plaintext answers) or a [`SecretBuffer`] (inner answers,
/// which may hold secrets). Writing into either cannot fail.
pub trait AnswerBuffer: std::io::Write + sealed::Sealed {}

impl AnswerBuffer for Vec<u8> {}
impl AnswerBuffer for SecretBuffer {}

mod sealed {
    /// Keeps [`AnswerBuffer`](super::AnswerBuffer) to the buffers whose writes cannot fail.
    pub trait Sealed {}
    impl Sealed for Vec<u8> {}
    impl Sealed for crate::secret::SecretBuffer {}
}

/// Errors of the envelope layer, answered in plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The body is not JSON (−32700).
    Parse,
    /// The body is JSON but not a request (−32600).
    InvalidRequest(&'static str),
    /// `init_secure_api` params are wrong (−32602).
    InitParams(String),
    /// No session for this request (−32001).
    EncryptionRequired,
    /// The envelope fields are malformed (−32002).
    Format(String),
    /// Nothing authenticates it, or the plaintext is not JSON (−32002).
    Decryption(String),
    /// The nonce was accepted before (−32002).
    Replay,
    /// The answer could not be encrypted (−32003).
    Encryption,
    /// A plaintext `init_secure_api` found its principal holding `max` sessions, all made within
    /// the grace period and not used yet: no new one until one is used or older (−32099 `Busy: …`).
    SessionsAllNew {
        /// The principal's bound (`[sessions] per_principal`).
        max: usize,
        /// The grace period, in milliseconds.
        grace_ms: u64,
    },
}

impl EnvelopeError {
    /// The wire code and message. Messages carry no secrets and no paths.
    pub fn wire(&self) -> (i64, String) {
        match self {
            Self::Parse => (-32700, "Parse error".into()),
            Self::InvalidRequest(why) => (-32600, format!("Invalid Request: {why}")),
            Self::InitParams(why) => (-32602, format!("Invalid params: {why}")),
            Self::EncryptionRequired => {
                (-32001, "Encryption must be enabled. Please call 'init_secure_api` first".into())
            }
            Self::Format(why) => (-32002, format!("Encrypted request format error: {why}")),
            Self::Decryption(why) => (-32002, format!("Decryption error: {why}")),
            Self::Replay => {
                (-32002, "Encrypted request format error: replayed nonce: this envelope was already accepted".into())
            }
            Self::Encryption => (-32003, "Encryption error: the answer could not be encrypted".into()),
            Self::SessionsAllNew { max, grace_ms } => (
                -32099,
                format!(
                    "Busy: this client's {max} sessions were all made in the last {grace_ms} ms and none is used yet; \
                     use one, or try again shortly"
                ),
            ),
        }
    }
}

/// Errors of an inner call, answered inside the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MethodError {
    /// The inner body is not a request (−32600).
    InvalidRequest(String),
    /// Unknown method (−32601).
    MethodNotFound,
    /// Missing, extra or mistyped params (−32602).
    InvalidParams(String),
    /// A lifecycle failure (−32099 `Lifecycle: …`).
    Lifecycle(String),
    /// The password is wrong, or the wallet does not exist: the same wire text for both
    /// (−32099 `Lifecycle: Error opening wallet (is password correct?)`), so a client cannot tell
    /// which wallets exist. The audit log records it as a refusal.
    WrongPassword,
    /// Wrong, stale or missing token (−32099 `InvalidKeychainMask`).
    InvalidKeychainMask,
    /// The wallet exists already (−32099 `WalletSeedExists: …`).
    WalletSeedExists,
    /// A bad argument value (−32099 `ArgumentError: …`).
    Argument(String),
    /// An account label is taken (−32099 `AccountLabelAlreadyExists: …`).
    AccountLabelAlreadyExists(String),
    /// No account has this label (−32099 `UnknownAccountLabel: …`).
    UnknownAccountLabel(String),
    /// Too many failed password attempts (−32099 `Lifecycle: …`).
    Throttled {
        /// Milliseconds until the next attempt is allowed.
        retry_after_ms: u64,
    },
    /// Storage failed; details go to the host's logs, never to the client (−32099 `StoreError`).
    Storage,
    /// The call was set aside as slow and the transport's pool of slow calls is full: it did not
    /// run (−32099 `Busy: …`).
    Busy,
    /// The caller's role does not allow the method (−32099 `Forbidden: <method> needs the <role>
    /// role`); nothing ran.
    Forbidden {
        /// The method.
        method: String,
        /// The least role it needs.
        needs: crate::principal::Role,
    },
    /// The caller's client was revoked (−32099 `Forbidden: this client is revoked`); nothing ran.
    Revoked,
    /// An embedder's method failed (−32099 `Variant: detail`).
    Application {
        /// The variant name.
        variant: String,
        /// The detail, possibly empty.
        detail: String,
    },
}

/// The message of a wrong password and of a missing wallet: the same, so they cannot be told apart.
const OPEN_ERROR: &str = "Error opening wallet (is password correct?)";

impl MethodError {
    /// The outcome the audit log records for this error: a fixed phrase, never the message (which
    /// may quote what the client sent).
    pub fn audit_outcome(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid request",
            Self::MethodNotFound => "no such method",
            Self::InvalidParams(_) => "invalid params",
            Self::WrongPassword => "wrong password",
            Self::Lifecycle(_) => "failed",
            Self::InvalidKeychainMask => "invalid token",
            Self::WalletSeedExists => "wallet exists",
            Self::Argument(_) => "invalid argument",
            Self::AccountLabelAlreadyExists(_) => "label taken",
            Self::UnknownAccountLabel(_) => "unknown label",
            Self::Throttled { .. } => "throttled",
            Self::Storage => "store failure",
            Self::Busy => "busy",
            Self::Forbidden { .. } => "forbidden",
            Self::Revoked => "revoked",
            Self::Application { .. } => "failed",
        }
    }

    /// Whether the audit log records this refusal whatever the method.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Forbidden { .. } | Self::Revoked | Self::Throttled { .. } | Self::WrongPassword)
    }

    /// The wire code and message. Messages carry no secrets and no paths.
    pub fn wire(&self) -> (i64, String) {
        match self {
            Self::InvalidRequest(why) => (-32600, format!("Invalid Request: {why}")),
            Self::MethodNotFound => (-32601, "Method not found".into()),
            Self::InvalidParams(why) => (-32602, format!("Invalid params: {why}")),
            Self::Lifecycle(why) => (-32099, format!("Lifecycle: {why}")),
            Self::WrongPassword => (-32099, format!("Lifecycle: {OPEN_ERROR}")),
            Self::InvalidKeychainMask => (-32099, "InvalidKeychainMask".into()),
            Self::WalletSeedExists => (-32099, "WalletSeedExists: Wallet seed already exists".into()),
            Self::Argument(why) => (-32099, format!("ArgumentError: {why}")),
            Self::AccountLabelAlreadyExists(label) => (-32099, format!("AccountLabelAlreadyExists: {label}")),
            Self::UnknownAccountLabel(label) => (-32099, format!("UnknownAccountLabel: {label}")),
            Self::Throttled { retry_after_ms } => (
                -32099,
                format!(
                    "Lifecycle: too many failed attempts for this wallet, retry in {} s",
                    retry_after_ms.div_ceil(1000)
                ),
            ),
            Self::Storage => (-32099, "StoreError: the wallet store failed; see the server log".into()),
            Self::Busy => (-32099, "Busy: too many slow calls at once, try again shortly".into()),
            Self::Forbidden { method, needs } => (-32099, format!("Forbidden: {method} needs the {needs} role")),
            Self::Revoked => (-32099, "Forbidden: this client is revoked".into()),
            Self::Application { variant, detail } if detail.is_empty() => (-32099, variant.clone()),
            Self::Application { variant, detail } => (-32099, format!("{variant}: {detail}")),
        }
    }
}

#[derive(Serialize)]
struct OkWrap<'a, T: Serialize + ?Sized> {
    #[serde(rename = "Ok")]
    ok: &'a T,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: i64,
    message: &'a str,
}

#[derive(Serialize)]
struct Answer<'a, I: Serialize + ?Sized, T: Serialize + ?Sized> {
    id: &'a I,
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<OkWrap<'a, T>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorObject<'a>>,
}

fn write<I: Serialize + ?Sized, T: Serialize + ?Sized>(answer: &Answer<'_, I, T>, out: &mut impl AnswerBuffer) {
    // Writing JSON values and plain structs into an `AnswerBuffer` cannot fail.
    serde_json::to_writer(out, answer).expect("serializing JSON into an AnswerBuffer cannot fail");
}

/// Appends `{"id":…,"jsonrpc":"2.0","result":{"Ok":value}}`.
pub fn write_ok<I: Serialize + ?Sized, T: Serialize + ?Sized>(id: &I, value: &T, out: &mut impl AnswerBuffer) {
    write(&Answer { id, jsonrpc: "2.0", result: Some(OkWrap { ok: value }), error: None }, out);
}

/// Appends `{"id":…,"jsonrpc":"2.0","error":{"code":…,"message":…}}`.
pub fn write_error<I: Serialize + ?Sized>(id: &I, code: i64, message: &str, out: &mut impl AnswerBuffer) {
    let answer: Answer<'_, I, Value> =
        Answer { id, jsonrpc: "2.0", result: None, error: Some(ErrorObject { code, message }) };
    write(&answer, out);
}

/// An error answer as bytes.
pub fn error_bytes<I: Serialize + ?Sized>(id: &I, code: i64, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_error(id, code, message, &mut out);
    out
}

/// Takes a method's params by grin's rules: named params must all be present (optional ones as
/// `null`) and no others; positional params must have exactly the right count. A method with no
/// params also accepts a missing or `null` `params`.
pub fn take_params(params: Option<&mut Value>, names: &[&str]) -> Result<Vec<Value>, MethodError> {
    match params {
        None | Some(Value::Null) if names.is_empty() => Ok(Vec::new()),
        None | Some(Value::Null) => Err(MethodError::InvalidParams(format!("missing params: expected {names:?}"))),
        Some(Value::Object(map)) => {
            if let Some(extra) = map.keys().find(|k| !names.contains(&k.as_str())) {
                return Err(MethodError::InvalidParams(format!("unexpected param '{}'", truncate(extra))));
            }
            names
                .iter()
                .map(|name| {
                    map.get_mut(*name)
                        .map(Value::take)
                        .ok_or_else(|| MethodError::InvalidParams(format!("missing param '{name}'")))
                })
                .collect()
        }
        Some(Value::Array(items)) => {
            if items.len() != names.len() {
                return Err(MethodError::InvalidParams(format!(
                    "expected {} positional params {names:?}, got {}",
                    names.len(),
                    items.len()
                )));
            }
            Ok(items.iter_mut().map(Value::take).collect())
        }
        Some(_) => Err(MethodError::InvalidParams("params must be an object or an array".into())),
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

/// A required string param.
pub fn string<'a>(value: &'a Value, name: &str) -> Result<&'a str, MethodError> {
    value.as_str().ok_or_else(|| MethodError::InvalidParams(format!("'{name}' must be a string")))
}

/// An optional string param (`null` = absent).
pub fn opt_string<'a>(value: &'a Value, name: &str) -> Result<Option<&'a str>, MethodError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text)),
        _ => Err(MethodError::InvalidParams(format!("'{name}' must be a string or null"))),
    }
}

/// A required unsigned 32-bit integer param.
pub fn u32_param(value: &Value, name: &str) -> Result<u32, MethodError> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| MethodError::InvalidParams(format!("'{name}' must be an unsigned 32-bit integer")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_errors_carry_grins_codes() {
        let codes: Vec<i64> = [
            EnvelopeError::Parse,
            EnvelopeError::InvalidRequest("x"),
            EnvelopeError::InitParams("x".into()),
            EnvelopeError::EncryptionRequired,
            EnvelopeError::Format("x".into()),
            EnvelopeError::Decryption("x".into()),
            EnvelopeError::Replay,
            EnvelopeError::Encryption,
        ]
        .iter()
        .map(|e| e.wire().0)
        .collect();
        assert_eq!(codes, [-32700, -32600, -32602, -32001, -32002, -32002, -32002, -32003]);
    }

    #[test]
    fn a_wrong_password_is_audited_as_such_and_other_lifecycle_errors_as_failed() {
        assert_eq!(MethodError::WrongPassword.audit_outcome(), "wrong password");
        assert_eq!(MethodError::Lifecycle("Wallet is locked".into()).audit_outcome(), "failed");
        // A lifecycle error that happens to carry the same text is not taken for one.
        assert_eq!(MethodError::Lifecycle(OPEN_ERROR.into()).audit_outcome(), "failed");
        assert!(!MethodError::Lifecycle(OPEN_ERROR.into()).is_refusal());
        // On the wire a wrong password reads as grin-wallet's own text.
        assert_eq!(
            MethodError::WrongPassword.wire(),
            (-32099, "Lifecycle: Error opening wallet (is password correct?)".to_owned())
        );
    }

    #[test]
    fn only_refusals_are_audited_whatever_the_method() {
        let refusals = [
            MethodError::Forbidden { method: "get_mnemonic".into(), needs: crate::principal::Role::Owner },
            MethodError::Revoked,
            MethodError::Throttled { retry_after_ms: 1 },
            MethodError::WrongPassword,
        ];
        assert!(refusals.iter().all(MethodError::is_refusal));
        let others = [
            MethodError::Lifecycle("Wallet is locked".into()),
            MethodError::InvalidKeychainMask,
            MethodError::Argument("x".into()),
            MethodError::MethodNotFound,
        ];
        assert!(!others.iter().any(MethodError::is_refusal));
    }

    #[test]
    fn an_application_error_shows_its_detail_only_when_it_has_one() {
        let bare = MethodError::Application { variant: "NotEnoughFunds".into(), detail: String::new() };
        assert_eq!(bare.wire(), (-32099, "NotEnoughFunds".into()));
        let detailed = MethodError::Application { variant: "NotEnoughFunds".into(), detail: "need 5".into() };
        assert_eq!(detailed.wire(), (-32099, "NotEnoughFunds: need 5".into()));
    }

    #[test]
    fn method_errors_carry_grins_codes() {
        use crate::principal::Role;
        let errors = [
            (MethodError::InvalidRequest("x".into()), -32600),
            (MethodError::MethodNotFound, -32601),
            (MethodError::InvalidParams("x".into()), -32602),
            (MethodError::Lifecycle("x".into()), -32099),
            (MethodError::InvalidKeychainMask, -32099),
            (MethodError::WalletSeedExists, -32099),
            (MethodError::Argument("x".into()), -32099),
            (MethodError::AccountLabelAlreadyExists("x".into()), -32099),
            (MethodError::UnknownAccountLabel("x".into()), -32099),
            (MethodError::Throttled { retry_after_ms: 1500 }, -32099),
            (MethodError::Storage, -32099),
            (MethodError::Busy, -32099),
            (MethodError::Forbidden { method: "m".into(), needs: Role::Owner }, -32099),
            (MethodError::Revoked, -32099),
            (MethodError::Application { variant: "V".into(), detail: String::new() }, -32099),
            (MethodError::Application { variant: "V".into(), detail: "d".into() }, -32099),
        ];
        for (error, code) in errors {
            assert_eq!(error.wire().0, code, "{error:?}");
        }
        let throttled = MethodError::Throttled { retry_after_ms: 1500 }.wire().1;
        assert_eq!(throttled, "Lifecycle: too many failed attempts for this wallet, retry in 2 s");
    }

    #[test]
    fn an_unexpected_param_is_named_in_at_most_64_characters() {
        let long = "p".repeat(100);
        let mut params = json!({"name": "w", long.clone(): 1});
        let error = take_params(Some(&mut params), &["name"]);
        assert_eq!(error, Err(MethodError::InvalidParams(format!("unexpected param '{}'", &long[..64]))));
        let mut params = json!({"name": "w", "naem": 1});
        let error = take_params(Some(&mut params), &["name"]);
        assert_eq!(error, Err(MethodError::InvalidParams("unexpected param 'naem'".into())));
    }

    #[test]
    fn answers_have_grins_field_order() {
        let mut out = Vec::new();
        write_ok(&json!(1), &json!("x"), &mut out);
        assert_eq!(&out[..], br#"{"id":1,"jsonrpc":"2.0","result":{"Ok":"x"}}"#);
        assert_eq!(
            error_bytes(&json!("a"), -32601, "Method not found"),
            br#"{"id":"a","jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"}}"#
        );
    }

    #[test]
    fn params_follow_grins_rules() {
        let names = ["name", "password"];
        let mut named = json!({"name": null, "password": "p"});
        assert_eq!(take_params(Some(&mut named), &names), Ok(vec![json!(null), json!("p")]));
        let mut missing = json!({"password": "p"});
        assert!(take_params(Some(&mut missing), &names).is_err());
        let mut extra = json!({"name": null, "password": "p", "x": 1});
        assert!(take_params(Some(&mut extra), &names).is_err());
        let mut positional = json!([null, "p"]);
        assert_eq!(take_params(Some(&mut positional), &names), Ok(vec![json!(null), json!("p")]));
        let mut short = json!(["p"]);
        assert!(take_params(Some(&mut short), &names).is_err());
        assert_eq!(take_params(None, &[]), Ok(vec![]));
        assert!(take_params(None, &names).is_err());
        assert!(take_params(Some(&mut json!(5)), &names).is_err());
    }
}
