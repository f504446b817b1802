//! The reference model: what a Keyward server must do, in a few hundred lines of plain data.
//!
//! It tracks clients (their current session key), sessions (owner, key, created, last used,
//! request count, directory), wallets (password, where their entropy came from, accounts, whether
//! open and with which token), every token ever issued and its status, the unlock throttle, the
//! configs written, the store's armed write failure, and the clock. [`Model::apply`] runs one
//! [`Op`] and records in [`Model::steps`] what the server must answer, request by request; the
//! driver in [`crate::sut`] sends the same requests to a real [`keyward_core::Server`] and checks.
//!
//! Where the protocol leaves a detail to timing the model does not follow (when the vault's lazy
//! sweep runs), it accepts each answer the specification allows, and nothing else.

use std::collections::{BTreeMap, BTreeSet};

use keyward_core::methods::account_path;
use keyward_core::seed_record::KdfParams;
use keyward_core::session::SessionLimits;
use keyward_core::throttle::ThrottleConfig;
use keyward_core::vault::TokenLimits;
use keyward_core::{ServerConfig, SessionId};
use serde_json::{Value, json};

/// Clients in a run. Clients 0 and 1 name their session (`Keyward-Session`); client 2 is a plain V3
/// client found by trial decryption.
pub const CLIENTS: usize = 3;
/// The data root the server is configured with.
pub const DATA_ROOT: &str = "/srv/keyward";
/// Session limits of the model's server: small, so that eviction, expiry and the request cap happen.
pub const SESSIONS: SessionLimits =
    SessionLimits { max_sessions: 3, idle_ms: 6_000, lifetime_ms: 25_000, max_requests: 24 };
/// Token limits of the model's server (other limits, such as how many wallets may be open, stay at
/// their defaults: the model never has more than four wallets).
pub fn tokens() -> TokenLimits {
    TokenLimits { idle_ms: 4_000, lifetime_ms: 15_000, ..TokenLimits::default() }
}
/// Throttle of the model's server.
pub const THROTTLE: ThrottleConfig =
    ThrottleConfig { free_attempts: 2, base_ms: 1_000, max_ms: 8_000, max_entries: 4096 };
/// Weaker KDF parameters of "legacy" records planted in the store, which `open_wallet` upgrades.
pub const LEGACY_KDF: KdfParams = KdfParams { m_cost_kib: 8, t_cost: 1, p_cost: 1 };
/// The clock's start.
pub const START_MS: u64 = 1_000;

/// Passwords; the last one is the grin vector's.
pub const PASSWORDS: [&str; 4] = ["pw0", "pw1", "pw2", "testpass"];
/// `name` params: `null` (the default wallet), `"w1"`, an invalid name, and `"default"` spelled out.
pub const NAME_PARAMS: [Option<&str>; 4] = [None, Some("w1"), Some("../x"), Some("default")];
/// Wallet names in the store.
pub const WALLET_NAMES: [&str; 2] = ["default", "w1"];
/// Top-level directories, relative to the data root.
pub const DIRS: [&str; 2] = ["", "team"];
/// `set_top_level_directory` params and the directory each means (`None`: refused).
pub const SET_DIRS: [(&str, Option<u8>); 5] = [
    (".", Some(0)),
    ("/srv/keyward/team", Some(1)),
    ("team/../../etc", None),
    ("/srv/keyward", Some(0)),
    ("team", Some(1)),
];
/// Account labels; the last is invalid.
pub const LABELS: [&str; 3] = ["savings", "spend", ""];
/// Key paths; the last is invalid.
pub const PATHS: [&str; 3] = ["m/0", "m/44'/0'/0'/0/0", "m/x"];
/// Entropy lengths of new wallets.
pub const LENGTHS: [u32; 3] = [16, 24, 32];
/// The message `sign_message` signs.
pub const MESSAGE: &str = "keyward model";
/// Entropy of planted legacy wallets.
pub const LEGACY_ENTROPY: [u8; 16] = [0x33; 16];
/// The grin `wallet.seed` vector (password `testpass`).
pub const GRIN_SEED: (&str, &str, &str) = (
    "994653864318ff63a974f023fe07ab70fa3841d03658c65e04eb6fe807d33ed66e1cfe6724bc127ec66d720e5db4c378",
    "57ad5a138863f0a0",
    "aefde28ebc85e2b69ed41fa5",
);
/// The grin vector's mnemonic.
pub const GRIN_MNEMONIC: &str = "pizza pipe about immense crawl issue pull head butter bamboo fan spare organ dismiss hurdle elite young isolate essay thumb vast domain hover hope";
/// Most accepted envelopes each client keeps for replays.
pub const KEPT_ENVELOPES: usize = 8;

/// The server configuration the model describes.
pub fn config() -> ServerConfig {
    ServerConfig {
        data_root: DATA_ROOT.into(),
        sessions: SESSIONS,
        tokens: tokens(),
        kdf: KdfParams::INSECURE_FOR_TESTS,
        throttle: THROTTLE,
    }
}

/// A session id that no server hands out in a run (its rng would have to draw it).
pub fn bogus_session() -> SessionId {
    SessionId::from_bytes([0xb0; 16])
}

// ---------------------------------------------------------------------------------------------
// Operations

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Plaintext `init_secure_api` (a new session for this client); `bad_key` sends an x-only key.
    Init { c: u8, bad_key: bool },
    /// An encrypted call in one of the equivalent envelope forms.
    Call { c: u8, call: Call, form: Form },
    /// A damaged copy of an encrypted call; then, maybe, the undamaged original.
    Tamper { c: u8, call: Call, how: Tamper, then_original: bool },
    /// A call sealed by `from` but sent with `to`'s session id.
    CrossSend { from: u8, to: u8, call: Call },
    /// Resends one of the client's earlier accepted envelopes, with its session id or none.
    Replay { c: u8, back: u8, hint: bool },
    /// Bytes that are not a valid request.
    Garbage(Garbage),
    /// The clock moves on.
    Advance(u64),
    /// `handle_timeout(now)`.
    Timeout,
    /// The transport drops the client's session (`drop_session`).
    DropSession { c: u8 },
    /// `shutdown()`.
    Shutdown,
    /// The store's k-th write from now fails (1 to 3).
    ArmFailure(u8),
    /// A wallet with a weaker (legacy) KDF record appears in the store, as if written by an older server.
    PlantLegacy { dir: u8, name: u8, pw: u8 },
}

/// Equivalent envelope encodings, all accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `{"nonce", "body_enc"}`.
    Named,
    /// `[nonce, body_enc]`.
    Positional,
    /// The nonce in upper-case hex.
    UpperNonce,
}

/// Damage done to an envelope. Every kind must be refused and change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Flip one bit of ciphertext ‖ tag.
    FlipCipher(u16),
    /// Cut ciphertext ‖ tag: below the tag length (`short`), or anywhere above it.
    TruncateCipher { short: bool, n: u16 },
    /// Change one hex digit of the 12 nonce bytes used.
    FlipNonce(u8),
    /// A nonce of 11 bytes.
    ShortNonce,
    /// `body_enc` that is not base64.
    BadBase64,
    /// Cut the whole request body.
    TruncateBody(u16),
}

/// Plaintext bodies that are not valid requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Garbage {
    /// Arbitrary bytes.
    Bytes(Vec<u8>),
    /// Not JSON.
    NotJson,
    /// A JSON array.
    Array,
    /// An object without `method`.
    NoMethod,
    /// A wallet method in plaintext.
    PlainCall,
    /// An envelope whose ciphertext no session made (`len` bytes), sent without a session id.
    RandomEnvelope { len: u16 },
}

/// An inner call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Encrypted `init_secure_api` (re-key); `bad_key` sends an x-only key.
    Reinit { bad_key: bool },
    /// `get_top_level_directory`.
    TopDir,
    /// `set_top_level_directory` with `SET_DIRS[i]`.
    SetDir(u8),
    /// `create_config`, with a valid chain type or not.
    CreateConfig { valid: bool },
    /// `create_wallet`.
    Create { name: u8, kind: CreateKind, pw: u8 },
    /// `import_grin_wallet` with the grin vector.
    ImportGrin { name: u8, right_pw: bool },
    /// `open_wallet`.
    Open { name: u8, pw: u8 },
    /// `close_wallet`.
    Close { name: u8 },
    /// `get_mnemonic`.
    Mnemonic { name: u8, pw: u8 },
    /// `change_password`.
    ChangePassword { name: u8, old: u8, new: u8 },
    /// `delete_wallet`.
    Delete { name: u8, pw: u8 },
    /// `list_wallets`.
    ListWallets,
    /// A method that takes a token.
    Token { method: TokenMethod, token: TokenSel },
    /// An odd inner body (see [`RAW_BODIES`]).
    Raw(u8),
}

/// How `create_wallet` is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateKind {
    /// Fresh entropy of `LENGTHS[i]` bytes.
    Random(u8),
    /// Restore from the 24-word vector mnemonic, with `mnemonic_length` 0 or 32.
    Restore { zero_len: bool },
    /// `mnemonic_length` 15.
    BadLength,
    /// A mnemonic with a bad checksum.
    BadMnemonic,
}

/// The token methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMethod {
    /// `accounts`.
    Accounts,
    /// `create_account_path` with `LABELS[i]`.
    CreateAccount(u8),
    /// `set_active_account` with `LABELS[i]`.
    SetActive(u8),
    /// `get_public_key` at `PATHS[i]`.
    PublicKey(u8),
    /// `sign_message` at `PATHS[i]`.
    Sign(u8),
}

/// Which token a token method is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSel {
    /// One of the tokens issued so far (counting back from the newest), as issued.
    Issued(u8),
    /// The same in upper-case hex.
    Upper(u8),
    /// An issued token with one hex digit changed.
    Flipped(u8),
    /// 64 hex digits that were never a token.
    Wrong,
    /// `null`.
    Null,
    /// No `token` param.
    Missing,
    /// `"abc"`.
    Malformed,
    /// A number.
    Number,
}

/// A wallet method sent in plaintext.
pub const GARBAGE_PLAIN_CALL: &[u8] =
    br#"{"jsonrpc":"2.0","method":"open_wallet","params":{"name":null,"password":"pw0"},"id":1}"#;

/// Odd inner bodies and what the server answers: `Raw(i)` sends `RAW_BODIES[i]`.
pub const RAW_BODIES: [&[u8]; 6] = [
    b"\xff\xfe not json",
    b"42",
    br#"{"jsonrpc":"2.0","method":"no_such_method","id":7,"params":{}}"#,
    br#"{"jsonrpc":"2.0","method":5,"id":7}"#,
    br#"[{"jsonrpc":"2.0","method":"list_wallets","id":1},{"jsonrpc":"2.0","method":"nope","id":2}]"#,
    br#"{"jsonrpc":"2.0","method":"open_wallet","id":7,"params":{"name":null,"password":"pw0","x":1}}"#,
];

// ---------------------------------------------------------------------------------------------
// What the server must do

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
    /// [`LEGACY_ENTROPY`].
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
    /// A signature of [`MESSAGE`] at `PATHS[path]`.
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
    /// The sending client.
    pub c: u8,
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

/// One request (or local action) of an op and what must happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Plaintext `init_secure_api`; `session`/`key` are the new model session and key (unused if `bad_key`).
    Init { now: u64, c: u8, bad_key: bool, session: u32, key: u32 },
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

// ---------------------------------------------------------------------------------------------
// Model state

/// A client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientM {
    /// The key its envelopes are sealed with.
    pub key: Option<u32>,
    /// Its latest session (maybe gone).
    pub session: Option<u32>,
    /// Its accepted envelopes: (session, key), oldest first.
    pub envelopes: Vec<(u32, u32)>,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionM {
    /// The client that made it.
    pub owner: u8,
    /// Its key.
    pub key: u32,
    /// When made.
    pub created: u64,
    /// When last used.
    pub last_used: u64,
    /// Envelopes accepted under the current key.
    pub requests: u32,
    /// Its top-level directory (index into [`DIRS`]).
    pub dir: u8,
}

/// An open wallet's vault entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenM {
    /// Its token.
    pub token: u32,
    /// When opened.
    pub opened: u64,
    /// When last used.
    pub last_used: u64,
}

/// A stored wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletM {
    /// Index into [`PASSWORDS`].
    pub password: u8,
    /// Where its entropy came from.
    pub origin: Origin,
    /// Which creation of this (dir, name) it is.
    pub incarnation: u32,
    /// Accounts: (label, index).
    pub accounts: Vec<(String, u32)>,
    /// The vault entry, if open (and not expired).
    pub open: Option<OpenM>,
    /// Whether its record still has the legacy KDF parameters.
    pub legacy: bool,
}

/// A token's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    /// Opens its wallet.
    Current,
    /// Replaced by a later `open_wallet`: `InvalidKeychainMask`.
    Stale,
    /// Its wallet was closed, deleted or swept after expiry: `Wallet has not been opened`.
    Closed,
    /// Its wallet expired and may not have been swept yet (the masked seed may still be in memory).
    ExpiredUnswept,
    /// Its wallet expired and was reopened: stale if the sweep had not run, closed if it had.
    StaleOrClosed,
}

/// A token issued by `open_wallet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenM {
    /// Its wallet: (dir, name).
    pub wallet: (u8, u8),
    /// Its status.
    pub status: TokenStatus,
}

/// A throttle entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleM {
    /// Failures.
    pub failures: u32,
    /// No attempt before this.
    pub next_allowed: u64,
}

/// The whole model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// The clock.
    pub now: u64,
    /// Clients.
    pub clients: Vec<ClientM>,
    /// Live sessions by model number.
    pub sessions: BTreeMap<u32, SessionM>,
    /// Sessions made so far.
    pub session_count: u32,
    /// Keys made so far.
    pub key_count: u32,
    /// Wallet creations so far.
    pub incarnations: u32,
    /// Stored wallets by (dir, name).
    pub wallets: BTreeMap<(u8, u8), WalletM>,
    /// Every token issued, in order.
    pub tokens: Vec<TokenM>,
    /// Throttle entries by (dir, name).
    pub throttle: BTreeMap<(u8, u8), ThrottleM>,
    /// Directories with a config.
    pub configs: BTreeSet<u8>,
    /// The store's armed failure.
    pub armed: Option<u32>,
    /// What the last op must do.
    pub steps: Vec<Step>,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

fn name_key(name: u8) -> Option<u8> {
    match NAME_PARAMS[usize::from(name) % NAME_PARAMS.len()] {
        None | Some("default") => Some(0),
        Some("w1") => Some(1),
        Some(_) => None,
    }
}

impl Model {
    /// A server that has seen nothing.
    pub fn new() -> Self {
        Self {
            now: START_MS,
            clients: vec![ClientM::default(); CLIENTS],
            sessions: BTreeMap::new(),
            session_count: 0,
            key_count: 0,
            incarnations: 0,
            wallets: BTreeMap::new(),
            tokens: Vec::new(),
            throttle: BTreeMap::new(),
            configs: BTreeSet::new(),
            armed: None,
            steps: Vec::new(),
        }
    }

    /// Whether client `c` sends its session id.
    pub fn names_session(c: u8) -> bool {
        c != 2
    }

    /// Applies one op; `steps` then says what the server must do.
    pub fn apply(mut self, op: &Op) -> Self {
        self.steps.clear();
        match op {
            Op::Init { c, bad_key } => self.init(client(*c), *bad_key),
            Op::Call { c, call, form } => self.send(client(*c), *call, *form, None, None),
            Op::Tamper { c, call, how, then_original } => {
                self.send(client(*c), *call, Form::Named, Some(*how), None);
                if *then_original {
                    self.send(client(*c), *call, Form::Named, None, None);
                }
            }
            Op::CrossSend { from, to, call } => {
                let (from, mut to) = (client(*from), client(*to));
                if to == from {
                    to = (from + 1) % CLIENTS as u8;
                }
                let hint = self.clients[usize::from(to)].session.map_or(Hint::Bogus, Hint::Session);
                self.send(from, *call, Form::Named, None, Some(hint));
            }
            Op::Replay { c, back, hint } => self.replay(client(*c), *back, *hint),
            Op::Garbage(garbage) => self.garbage(garbage.clone()),
            Op::Advance(ms) => {
                self.now += ms;
                self.expire();
            }
            Op::Timeout => {
                let now = self.tick();
                for token in &mut self.tokens {
                    if token.status == TokenStatus::ExpiredUnswept {
                        token.status = TokenStatus::Closed;
                    }
                }
                self.steps.push(Step::Timeout { now });
            }
            Op::DropSession { c } => {
                self.tick();
                let session = self.clients[usize::from(client(*c))].session;
                let live = session.is_some_and(|s| self.sessions.remove(&s).is_some());
                self.steps.push(Step::Drop { session, live });
            }
            Op::Shutdown => {
                self.tick();
                self.sessions.clear();
                let keys: Vec<_> = self.wallets.keys().copied().collect();
                for key in keys {
                    self.close_wallet(key);
                }
                self.steps.push(Step::Shutdown);
            }
            Op::ArmFailure(k) => {
                let k = u32::from(*k % 3) + 1;
                self.armed = Some(k);
                self.steps.push(Step::Arm(k));
            }
            Op::PlantLegacy { dir, name, pw } => {
                self.tick();
                let key = (dir % 2, name % 2);
                let pw = pw % PASSWORDS.len() as u8;
                if !self.wallets.contains_key(&key) {
                    self.new_wallet(key, pw, Origin::Legacy);
                    if let Some(wallet) = self.wallets.get_mut(&key) {
                        wallet.legacy = true;
                    }
                    self.steps.push(Step::Plant { dir: key.0, name: key.1, pw });
                }
            }
        }
        self
    }

    /// Advances the clock by one millisecond (every request gets its own instant, so no two
    /// sessions are ever equally idle) and applies expiry.
    fn tick(&mut self) -> u64 {
        self.now += 1;
        self.expire();
        self.now
    }

    /// Sessions and wallets past their idle time or lifetime are gone for every observable purpose
    /// (the server may still hold them until a sweep; the driver bounds that separately).
    fn expire(&mut self) {
        let (now, limits) = (self.now, tokens());
        self.sessions.retain(|_, s| {
            now.saturating_sub(s.last_used) < SESSIONS.idle_ms && now.saturating_sub(s.created) < SESSIONS.lifetime_ms
        });
        for wallet in self.wallets.values_mut() {
            if let Some(open) = &wallet.open
                && (now.saturating_sub(open.last_used) >= limits.idle_ms
                    || now.saturating_sub(open.opened) >= limits.lifetime_ms)
            {
                self.tokens[open.token as usize].status = TokenStatus::ExpiredUnswept;
                wallet.open = None;
            }
        }
    }

    fn init(&mut self, c: u8, bad_key: bool) {
        let now = self.tick();
        let (session, key) = (self.session_count, self.key_count);
        if !bad_key {
            if self.sessions.len() >= SESSIONS.max_sessions
                && let Some(oldest) = self.sessions.iter().min_by_key(|(_, s)| s.last_used).map(|(id, _)| *id)
            {
                self.sessions.remove(&oldest);
            }
            self.sessions
                .insert(session, SessionM { owner: c, key, created: now, last_used: now, requests: 0, dir: 0 });
            self.session_count += 1;
            self.key_count += 1;
            let client = &mut self.clients[usize::from(c)];
            client.key = Some(key);
            client.session = Some(session);
        }
        self.steps.push(Step::Init { now, c, bad_key, session, key });
    }

    /// Where an envelope sealed with `key` and sent with `hint` goes.
    fn route(&self, hint: Hint, key: u32) -> Route {
        match hint {
            Hint::Session(s) => match self.sessions.get(&s) {
                None => Route::NoSession,
                Some(session) if session.key != key => Route::Decryption,
                Some(_) => Route::Accepted(s),
            },
            Hint::Bogus => Route::NoSession,
            Hint::None if self.sessions.is_empty() => Route::NoSession,
            Hint::None => self
                .sessions
                .iter()
                .find(|(_, s)| s.key == key)
                .map_or(Route::Decryption, |(id, _)| Route::Accepted(*id)),
        }
    }

    fn tamper_route(&self, hint: Hint, key: u32, how: Tamper) -> Route {
        let found = self.route(hint, key);
        match how {
            Tamper::ShortNonce | Tamper::BadBase64 => Route::Format,
            Tamper::TruncateBody(_) => Route::Parse,
            _ if found == Route::NoSession => Route::NoSession,
            Tamper::TruncateCipher { short: true, .. } => Route::Format,
            _ => Route::Decryption,
        }
    }

    fn send(&mut self, c: u8, call: Call, form: Form, tamper: Option<Tamper>, cross: Option<Hint>) {
        let now = self.tick();
        let state = &self.clients[usize::from(c)];
        let Some(key) = state.key else {
            return;
        };
        let hint = match cross {
            Some(hint) => hint,
            None if Self::names_session(c) => state.session.map_or(Hint::Bogus, Hint::Session),
            None => Hint::None,
        };
        let resolved = self.resolve(call);
        let route = match tamper {
            Some(how) => self.tamper_route(hint, key, how),
            None => self.route(hint, key),
        };
        let mut step = EnvStep {
            now,
            c,
            source: Source::Fresh { call: resolved.clone(), form, tamper },
            hint,
            key,
            route,
            answer: None,
            rekey_to: None,
        };
        if let Route::Accepted(s) = route {
            let dir = self.accept(c, s, key, now);
            let (answer, after) = self.dispatch(&resolved, dir, now);
            if let Some(new_dir) = after.dir
                && let Some(session) = self.sessions.get_mut(&s)
            {
                session.dir = new_dir;
            }
            if after.rekey {
                let new_key = self.key_count;
                self.key_count += 1;
                if let Some(session) = self.sessions.get_mut(&s) {
                    session.key = new_key;
                    session.requests = 0;
                    session.last_used = now;
                }
                self.clients[usize::from(c)].key = Some(new_key);
                step.rekey_to = Some(new_key);
            }
            step.answer = Some(answer);
        }
        self.steps.push(Step::Envelope(step));
    }

    /// An envelope accepted by session `s`: counted, remembered for replays; the session is dropped
    /// at the request cap. Returns the session's directory.
    fn accept(&mut self, c: u8, s: u32, key: u32, now: u64) -> u8 {
        let session = self.sessions.get_mut(&s).expect("routed to a live session");
        session.requests += 1;
        session.last_used = now;
        let dir = session.dir;
        if session.requests >= SESSIONS.max_requests {
            self.sessions.remove(&s);
        }
        let kept = &mut self.clients[usize::from(c)].envelopes;
        if kept.len() >= KEPT_ENVELOPES {
            kept.remove(0);
        }
        kept.push((s, key));
        dir
    }

    fn replay(&mut self, c: u8, back: u8, hint: bool) {
        let now = self.tick();
        let kept = &self.clients[usize::from(c)].envelopes;
        if kept.is_empty() {
            return;
        }
        let index = kept.len() - 1 - usize::from(back) % kept.len();
        let (session, key) = kept[index];
        let hint = if hint { Hint::Session(session) } else { Hint::None };
        let route = match self.route(hint, key) {
            Route::Accepted(_) => Route::Replay,
            other => other,
        };
        self.steps.push(Step::Envelope(EnvStep {
            now,
            c,
            source: Source::Replay(index),
            hint,
            key,
            route,
            answer: None,
            rekey_to: None,
        }));
    }

    fn garbage(&mut self, garbage: Garbage) {
        let now = self.tick();
        let (code, route) = match &garbage {
            Garbage::Bytes(_) => (None, None),
            Garbage::NotJson => (Some(-32700), None),
            Garbage::Array | Garbage::NoMethod => (Some(-32600), None),
            Garbage::PlainCall => (Some(-32001), None),
            Garbage::RandomEnvelope { len } => {
                let route = if self.sessions.is_empty() {
                    Route::NoSession
                } else if *len < 16 {
                    Route::Format
                } else {
                    Route::Decryption
                };
                (None, Some(route))
            }
        };
        self.steps.push(Step::Garbage { now, garbage, code, route });
    }

    fn resolve(&self, call: Call) -> Resolved {
        let Call::Token { method, token } = call else {
            return Resolved::Plain(call);
        };
        let issued = |back: u8| {
            let n = self.tokens.len() as u32;
            (n > 0).then(|| n - 1 - u32::from(back) % n)
        };
        let arg = match token {
            TokenSel::Issued(back) => {
                issued(back).map_or(TokenArg::Wrong, |index| TokenArg::Issued { index, upper: false })
            }
            TokenSel::Upper(back) => {
                issued(back).map_or(TokenArg::Wrong, |index| TokenArg::Issued { index, upper: true })
            }
            TokenSel::Flipped(back) => issued(back).map_or(TokenArg::Wrong, TokenArg::Flipped),
            TokenSel::Wrong => TokenArg::Wrong,
            TokenSel::Null => TokenArg::Null,
            TokenSel::Missing => TokenArg::Missing,
            TokenSel::Malformed => TokenArg::Malformed,
            TokenSel::Number => TokenArg::Number,
        };
        Resolved::Token(method, arg)
    }

    // -----------------------------------------------------------------------------------------
    // Inner calls

    fn dispatch(&mut self, call: &Resolved, dir: u8, now: u64) -> (Answer, After) {
        let mut after = After::default();
        let answer = match call {
            Resolved::Token(method, arg) => self.token_call(*method, *arg, now),
            Resolved::Plain(call) => match *call {
                Call::Reinit { bad_key: true } => Answer::Err(vec![E_PARAMS]),
                Call::Reinit { bad_key: false } => {
                    after.rekey = true;
                    Answer::Ok(OkVal::ServerKey)
                }
                Call::TopDir => Answer::Ok(OkVal::Exact(json!(top_level_directory(dir)))),
                Call::SetDir(i) => match SET_DIRS[usize::from(i) % SET_DIRS.len()].1 {
                    Some(new_dir) => {
                        after.dir = Some(new_dir);
                        Answer::Ok(OkVal::Null)
                    }
                    None => Answer::Err(vec![E_ARG]),
                },
                Call::CreateConfig { valid: false } => Answer::Err(vec![E_ARG]),
                Call::CreateConfig { valid: true } => {
                    if self.write() {
                        self.configs.insert(dir);
                        Answer::Ok(OkVal::Null)
                    } else {
                        Answer::Err(vec![E_STORE])
                    }
                }
                Call::Create { name, kind, pw } => self.create(dir, name, kind, pw),
                Call::ImportGrin { name, right_pw } => self.import_grin(dir, name, right_pw),
                Call::Open { name, pw } => self.open(dir, name, pw, now),
                Call::Close { name } => match name_key(name) {
                    None => Answer::Err(vec![E_ARG]),
                    Some(name) => {
                        self.close_wallet((dir, name));
                        Answer::Ok(OkVal::Null)
                    }
                },
                Call::Mnemonic { name, pw } => self.with_password(dir, name, pw, now, |model, key| {
                    let wallet = &model.wallets[&key];
                    Answer::Ok(OkVal::Mnemonic { incarnation: wallet.incarnation, origin: wallet.origin })
                }),
                Call::ChangePassword { name, old, new } => self.with_password(dir, name, old, now, |model, key| {
                    if model.write() {
                        if let Some(wallet) = model.wallets.get_mut(&key) {
                            wallet.password = new % PASSWORDS.len() as u8;
                            wallet.legacy = false;
                        }
                        Answer::Ok(OkVal::Null)
                    } else {
                        Answer::Err(vec![E_STORE])
                    }
                }),
                Call::Delete { name, pw } => self.with_password(dir, name, pw, now, |model, key| {
                    model.close_wallet(key);
                    if model.write() {
                        model.wallets.remove(&key);
                        Answer::Ok(OkVal::Null)
                    } else {
                        Answer::Err(vec![E_STORE])
                    }
                }),
                Call::ListWallets => Answer::Ok(OkVal::Exact(self.list_wallets(dir))),
                Call::Raw(i) => self.raw_answer(i, dir),
                Call::Token { .. } => unreachable!("token calls are resolved"),
            },
        };
        (answer, after)
    }

    /// One store write; `false` if it is the armed failure.
    fn write(&mut self) -> bool {
        match self.armed {
            Some(1) => {
                self.armed = None;
                false
            }
            Some(k) => {
                self.armed = Some(k - 1);
                true
            }
            None => true,
        }
    }

    fn new_wallet(&mut self, key: (u8, u8), pw: u8, origin: Origin) {
        let incarnation = self.incarnations;
        self.incarnations += 1;
        let wallet = WalletM {
            password: pw,
            origin,
            incarnation,
            accounts: vec![("default".into(), 0)],
            open: None,
            legacy: false,
        };
        self.wallets.insert(key, wallet);
    }

    fn create(&mut self, dir: u8, name: u8, kind: CreateKind, pw: u8) -> Answer {
        let Some(name) = name_key(name) else {
            return Answer::Err(vec![E_ARG]);
        };
        let origin = match kind {
            CreateKind::BadLength | CreateKind::BadMnemonic => return Answer::Err(vec![E_ARG]),
            CreateKind::Random(i) => Origin::Random(LENGTHS[usize::from(i) % LENGTHS.len()]),
            CreateKind::Restore { .. } => Origin::Restored,
        };
        self.store_new(dir, name, pw % PASSWORDS.len() as u8, origin)
    }

    fn import_grin(&mut self, dir: u8, name: u8, right_pw: bool) -> Answer {
        let Some(name) = name_key(name) else {
            return Answer::Err(vec![E_ARG]);
        };
        if !right_pw {
            return Answer::Err(vec![E_ARG]);
        }
        self.store_new(dir, name, 3, Origin::Grin)
    }

    fn store_new(&mut self, dir: u8, name: u8, pw: u8, origin: Origin) -> Answer {
        if self.wallets.contains_key(&(dir, name)) {
            return Answer::Err(vec![E_EXISTS]);
        }
        if !self.write() {
            return Answer::Err(vec![E_STORE]);
        }
        self.new_wallet((dir, name), pw, origin);
        Answer::Ok(OkVal::Null)
    }

    /// Checks a password as the server does (throttle first, a missing wallet like a wrong
    /// password), then runs `then` on success.
    fn with_password(
        &mut self,
        dir: u8,
        name: u8,
        pw: u8,
        now: u64,
        then: impl FnOnce(&mut Self, (u8, u8)) -> Answer,
    ) -> Answer {
        let Some(name) = name_key(name) else {
            return Answer::Err(vec![E_ARG]);
        };
        let key = (dir, name);
        if self.throttle.get(&key).is_some_and(|t| t.next_allowed > now) {
            return Answer::Err(vec![E_THROTTLED]);
        }
        let pw = pw % PASSWORDS.len() as u8;
        if self.wallets.get(&key).is_some_and(|w| w.password == pw) {
            self.throttle.remove(&key);
            then(self, key)
        } else {
            let entry = self.throttle.entry(key).or_insert(ThrottleM { failures: 0, next_allowed: 0 });
            entry.failures += 1;
            if entry.failures > THROTTLE.free_attempts {
                let doublings = (entry.failures - THROTTLE.free_attempts - 1).min(40);
                entry.next_allowed = now + THROTTLE.base_ms.saturating_mul(1 << doublings).min(THROTTLE.max_ms);
            }
            Answer::Err(vec![E_OPEN])
        }
    }

    fn open(&mut self, dir: u8, name: u8, pw: u8, now: u64) -> Answer {
        self.with_password(dir, name, pw, now, |model, key| {
            // An upgrade of a legacy record is one write; its failure keeps the old record and does
            // not fail the call.
            if model.wallets[&key].legacy && model.write() {
                model.wallets.get_mut(&key).expect("checked").legacy = false;
            }
            for token in model.tokens.iter_mut().filter(|t| t.wallet == key) {
                token.status = match token.status {
                    TokenStatus::Current => TokenStatus::Stale,
                    TokenStatus::ExpiredUnswept => TokenStatus::StaleOrClosed,
                    other => other,
                };
            }
            let token = model.tokens.len() as u32;
            model.tokens.push(TokenM { wallet: key, status: TokenStatus::Current });
            let wallet = model.wallets.get_mut(&key).expect("checked");
            wallet.open = Some(OpenM { token, opened: now, last_used: now });
            Answer::Ok(OkVal::Token(token))
        })
    }

    /// Closes a wallet in the vault (close, delete, shutdown): its token, current or expired, is closed.
    fn close_wallet(&mut self, key: (u8, u8)) {
        if let Some(wallet) = self.wallets.get_mut(&key) {
            wallet.open = None;
        }
        for token in self.tokens.iter_mut().filter(|t| t.wallet == key) {
            if matches!(token.status, TokenStatus::Current | TokenStatus::ExpiredUnswept) {
                token.status = TokenStatus::Closed;
            }
        }
    }

    fn token_call(&mut self, method: TokenMethod, arg: TokenArg, now: u64) -> Answer {
        let key = match arg {
            TokenArg::Missing => return Answer::Err(vec![E_PARAMS]),
            // The specification says −32602 for a token that is neither a string nor null; the code
            // answers InvalidKeychainMask. Either refuses the call, which is what matters here.
            TokenArg::Number => return Answer::Err(vec![E_MASK, E_PARAMS]),
            TokenArg::Flipped(_) | TokenArg::Wrong | TokenArg::Null | TokenArg::Malformed => {
                return Answer::Err(vec![E_MASK]);
            }
            TokenArg::Issued { index, .. } => {
                let token = &mut self.tokens[index as usize];
                match token.status {
                    TokenStatus::Current => token.wallet,
                    TokenStatus::Stale => return Answer::Err(vec![E_MASK]),
                    TokenStatus::Closed => return Answer::Err(vec![E_NOT_OPEN]),
                    TokenStatus::ExpiredUnswept => {
                        token.status = TokenStatus::Closed;
                        return Answer::Err(vec![E_NOT_OPEN]);
                    }
                    TokenStatus::StaleOrClosed => return Answer::Err(vec![E_MASK, E_NOT_OPEN]),
                }
            }
        };
        let wallet = self.wallets.get_mut(&key).expect("a current token's wallet is stored");
        wallet.open.as_mut().expect("a current token's wallet is open").last_used = now;
        let (incarnation, origin) = (wallet.incarnation, wallet.origin);
        match method {
            TokenMethod::Accounts => {
                let mut accounts = wallet.accounts.clone();
                accounts.sort();
                let list: Vec<Value> =
                    accounts.iter().map(|(label, i)| json!({"label": label, "path": account_path(*i)})).collect();
                Answer::Ok(OkVal::Exact(Value::Array(list)))
            }
            TokenMethod::CreateAccount(i) => {
                let label = LABELS[usize::from(i) % LABELS.len()];
                if label.is_empty() {
                    return Answer::Err(vec![E_ARG]);
                }
                if wallet.accounts.iter().any(|(l, _)| l == label) {
                    return Answer::Err(vec![E_LABEL_EXISTS]);
                }
                let index = wallet.accounts.iter().map(|(_, i)| *i).max().map_or(0, |m| m + 1);
                if !self.write() {
                    return Answer::Err(vec![E_STORE]);
                }
                let wallet = self.wallets.get_mut(&key).expect("still stored");
                wallet.accounts.push((label.to_owned(), index));
                Answer::Ok(OkVal::Exact(json!(account_path(index))))
            }
            TokenMethod::SetActive(i) => {
                let label = LABELS[usize::from(i) % LABELS.len()];
                if wallet.accounts.iter().any(|(l, _)| l == label) {
                    Answer::Ok(OkVal::Null)
                } else {
                    Answer::Err(vec![E_UNKNOWN_LABEL])
                }
            }
            TokenMethod::PublicKey(path) => {
                let path = path % PATHS.len() as u8;
                if path == 2 {
                    return Answer::Err(vec![E_ARG]);
                }
                Answer::Ok(OkVal::PublicKey { incarnation, origin, path })
            }
            TokenMethod::Sign(path) => {
                let path = path % PATHS.len() as u8;
                if path == 2 {
                    return Answer::Err(vec![E_ARG]);
                }
                Answer::Ok(OkVal::Signature { incarnation, origin, path })
            }
        }
    }

    /// Live sessions whose key a client holds: the keys that must not open another session's answers.
    pub fn live_keys(&self) -> BTreeSet<u32> {
        self.sessions.values().map(|s| s.key).chain(self.clients.iter().filter_map(|c| c.key)).collect()
    }

    /// Tokens that open their wallet now.
    pub fn current_tokens(&self) -> BTreeSet<u32> {
        self.tokens_with(|s| s == TokenStatus::Current)
    }

    /// Tokens with a status.
    pub fn tokens_with(&self, f: impl Fn(TokenStatus) -> bool) -> BTreeSet<u32> {
        (0..self.tokens.len() as u32).filter(|i| f(self.tokens[*i as usize].status)).collect()
    }
}

/// What an inner call asks of the session after it is answered.
#[derive(Debug, Default)]
struct After {
    rekey: bool,
    dir: Option<u8>,
}

fn client(c: u8) -> u8 {
    c % CLIENTS as u8
}

/// `get_top_level_directory` for a directory.
pub fn top_level_directory(dir: u8) -> String {
    match DIRS[usize::from(dir)] {
        "" => DATA_ROOT.to_owned(),
        d => format!("{DATA_ROOT}/{d}"),
    }
}

impl Model {
    fn list_wallets(&self, dir: u8) -> Value {
        let list = self
            .wallets
            .iter()
            .filter(|((d, _), _)| *d == dir)
            .map(|((_, n), w)| json!({"name": WALLET_NAMES[usize::from(*n)], "open": w.open.is_some()}))
            .collect();
        Value::Array(list)
    }

    /// The whole inner answer to `RAW_BODIES[i]`.
    fn raw_answer(&self, i: u8, dir: u8) -> Answer {
        let error = |id: Value, code: i64, message: &str| json!({"id": id, "jsonrpc": "2.0", "error": {"code": code, "message": message}});
        match i % RAW_BODIES.len() as u8 {
            0 => Answer::NotJson,
            1 => Answer::Whole(error(Value::Null, -32600, "Invalid Request: not a JSON-RPC request")),
            2 => Answer::Whole(error(json!(7), -32601, "Method not found")),
            3 => Answer::Whole(error(Value::Null, -32600, "Invalid Request: not a JSON-RPC request")),
            4 => Answer::Whole(json!([
                {"id": 1, "jsonrpc": "2.0", "result": {"Ok": self.list_wallets(dir)}},
                error(json!(2), -32601, "Method not found"),
            ])),
            _ => Answer::Whole(error(json!(7), -32602, "Invalid params: unexpected param 'x'")),
        }
    }
}
