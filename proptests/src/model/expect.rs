//! What the server must do: the error patterns, routes and answers the model expects, and the
//! [`Step`]s that [`Model::apply`](super::Model::apply) records for the driver to check.

use keyward_core::Role;
use serde_json::Value;

use super::{Call, Form, Garbage, Tamper, TokenMethod};

/// An error answer: its code and a piece of its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrPat {
    /// JSON-RPC code.
    pub code: i64,
    /// Text the message contains.
    pub contains: &'static str,
}

const fn err(code: i64, contains: &'static str) -> ErrPat {
    ErrPat { code, contains }
}

/// Wrong, stale, missing or malformed token.
pub const E_MASK: ErrPat = err(-32099, "InvalidKeychainMask");
/// Token of a closed, expired or deleted wallet.
pub const E_NOT_OPEN: ErrPat = err(-32099, "Lifecycle: Wallet has not been opened");
/// Wrong password or no such wallet.
pub const E_OPEN: ErrPat = err(-32099, "Lifecycle: Error opening wallet (is password correct?)");
/// Throttled.
pub const E_THROTTLED: ErrPat = err(-32099, "Lifecycle: too many failed attempts");
/// The wallet exists.
pub const E_EXISTS: ErrPat = err(-32099, "WalletSeedExists");
/// A bad argument.
pub const E_ARG: ErrPat = err(-32099, "ArgumentError");
/// The store failed.
pub const E_STORE: ErrPat = err(-32099, "StoreError");
/// Bad params.
pub const E_PARAMS: ErrPat = err(-32602, "Invalid params");
/// Label taken.
pub const E_LABEL_EXISTS: ErrPat = err(-32099, "AccountLabelAlreadyExists");
/// Label unknown.
pub const E_UNKNOWN_LABEL: ErrPat = err(-32099, "UnknownAccountLabel");
/// Unknown method.
pub const E_METHOD: ErrPat = err(-32601, "Method not found");
/// Not a request.
pub const E_REQUEST: ErrPat = err(-32600, "Invalid Request");

/// Where an envelope ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Accepted by this (model) session.
    Accepted(u32),
    /// −32001: no session.
    NoSession,
    /// −32002: does not authenticate.
    Decryption,
    /// −32002: replayed nonce.
    Replay,
    /// −32002: malformed envelope.
    Format,
    /// −32700: not JSON.
    Parse,
    /// −32099 `Forbidden: this client is revoked`: the principal is unknown; nothing is parsed.
    Revoked,
}

/// The session id sent with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// None (a V3 client).
    None,
    /// The id of this model session.
    Session(u32),
    /// An id no session has.
    Bogus,
}

/// Where a wallet's entropy came from (what its mnemonic must be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Fresh from the server rng, this many bytes.
    Random(u32),
    /// The 24-word vector mnemonic.
    Restored,
    /// The grin vector.
    Grin,
    /// [`LEGACY_ENTROPY`](super::LEGACY_ENTROPY).
    Legacy,
}

/// A successful inner answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OkVal {
    /// `null`.
    Null,
    /// Exactly this value.
    Exact(Value),
    /// A new token: the model's token number.
    Token(u32),
    /// A server public key (re-key).
    ServerKey,
    /// The mnemonic of this wallet incarnation.
    Mnemonic { incarnation: u32, origin: Origin },
    /// The public key at `PATHS[path]`.
    PublicKey { incarnation: u32, origin: Origin, path: u8 },
    /// A signature of [`MESSAGE`](super::MESSAGE) at `PATHS[path]`.
    Signature { incarnation: u32, origin: Origin, path: u8 },
}

/// The inner answer of an accepted envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `{"Ok": …}`.
    Ok(OkVal),
    /// An error matching one of these.
    Err(Vec<ErrPat>),
    /// Exactly this whole inner answer (batches, odd bodies).
    Whole(Value),
    /// The plaintext was not JSON: a plaintext −32002 instead of an encrypted answer.
    NotJson,
    /// −32099 `Forbidden: <method> needs the <needs> role`, and nothing changed.
    Forbidden { method: &'static str, needs: Role },
}

/// A token param, resolved against the tokens issued so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenArg {
    /// Token number `i`, in lower- or upper-case hex.
    Issued { index: u32, upper: bool },
    /// Token number `i` with a digit changed.
    Flipped(u32),
    /// Never a token.
    Wrong,
    /// `null`.
    Null,
    /// Left out.
    Missing,
    /// `"abc"`.
    Malformed,
    /// `5`.
    Number,
}

/// An inner call with everything the driver needs to write its params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A call whose params do not depend on tokens.
    Plain(Call),
    /// A token method.
    Token(TokenMethod, TokenArg),
}

impl Resolved {
    /// The method the call names (`None` for an odd body).
    pub fn method(&self) -> Option<&'static str> {
        match self {
            Self::Plain(call) => call.method(),
            Self::Token(method, _) => Some(method.name()),
        }
    }
}

/// Where an envelope's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A fresh envelope of this call, in this form, maybe damaged.
    Fresh { call: Resolved, form: Form, tamper: Option<Tamper> },
    /// The client's kept envelope number `i` (oldest first).
    Replay(usize),
}

/// One envelope and what must happen to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvStep {
    /// The clock.
    pub now: u64,
    /// The client whose key sealed it (and who keeps it for replays).
    pub c: u8,
    /// The principal that sends it (index into [`PRINCIPALS`](super::PRINCIPALS)).
    pub principal: u8,
    /// What is sent.
    pub source: Source,
    /// The session id sent.
    pub hint: Hint,
    /// The key a fresh envelope is sealed with (the client's current key).
    pub key: u32,
    /// Where it must end up.
    pub route: Route,
    /// The inner answer, if accepted.
    pub answer: Option<Answer>,
    /// The client's key after the answer (a successful re-key).
    pub rekey_to: Option<u32>,
}

/// A session a new one pushed out, and by which rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// The model session.
    pub session: u32,
    /// The principal it belonged to.
    pub principal: u8,
    /// The new session's principal was at `max_per_principal`: one of its own went.
    pub own_cap: bool,
    /// Whether the evicted session had ever been used.
    pub used: bool,
}

/// One request (or local action) of an op and what must happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Plaintext `init_secure_api` by `principal`; `session`/`key` are the new model session and
    /// key (unused if `bad_key` or the principal is unknown); `evicted` is the session it pushed out.
    Init { now: u64, c: u8, principal: u8, bad_key: bool, session: u32, key: u32, evicted: Option<Evicted> },
    /// An envelope.
    Envelope(EnvStep),
    /// Garbage: refused with `code` (`None`: any plaintext error) and nothing changes.
    Garbage { now: u64, garbage: Garbage, code: Option<i64>, route: Option<Route> },
    /// `handle_timeout(now)`.
    Timeout { now: u64 },
    /// `drop_session` of this model session (`None`: the client never had one).
    Drop { session: Option<u32>, live: bool },
    /// `shutdown()`.
    Shutdown,
    /// Arm the store.
    Arm(u32),
    /// Plant a legacy wallet.
    Plant { dir: u8, name: u8, pw: u8 },
}
