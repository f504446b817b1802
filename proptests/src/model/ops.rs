//! Operations: the steps a run is made of ([`Op`]), the inner calls they carry ([`Call`]) and the
//! envelope forms, damage and garbage they may use.

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Plaintext `init_secure_api` (a new session for this client); `bad_key` sends an x-only key.
    Init { c: u8, bad_key: bool },
    /// An encrypted call in one of the equivalent envelope forms.
    Call { c: u8, call: Call, form: Form },
    /// A damaged copy of an encrypted call; then, maybe, the undamaged original.
    Tamper { c: u8, call: Call, how: Tamper, then_original: bool },
    /// A call sealed by `from` but sent (as `from`'s principal) with `to`'s session id.
    CrossSend { from: u8, to: u8, call: Call },
    /// Client `c` speaks as `PRINCIPALS[p]` from now on (another certificate): its sessions, tokens
    /// and openings stay with the principal that made them.
    Become { c: u8, p: u8 },
    /// Client `by` sends, as its own principal, a fresh call sealed by `from` (under `from`'s key),
    /// naming `from`'s session (`hint`) or none: a stolen envelope, or a sibling client's of the
    /// same principal.
    Steal { from: u8, by: u8, call: Call, hint: bool },
    /// Client `by` resends, as its own principal, one of `from`'s earlier accepted envelopes,
    /// naming its session (`hint`) or none.
    StealReplay { from: u8, by: u8, back: u8, hint: bool },
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

impl Call {
    /// The method the call names (`None` for the odd bodies of [`RAW_BODIES`]).
    pub fn method(&self) -> Option<&'static str> {
        Some(match self {
            Self::Reinit { .. } => "init_secure_api",
            Self::TopDir => "get_top_level_directory",
            Self::SetDir(_) => "set_top_level_directory",
            Self::CreateConfig { .. } => "create_config",
            Self::Create { .. } => "create_wallet",
            Self::ImportGrin { .. } => "import_grin_wallet",
            Self::Open { .. } => "open_wallet",
            Self::Close { .. } => "close_wallet",
            Self::Mnemonic { .. } => "get_mnemonic",
            Self::ChangePassword { .. } => "change_password",
            Self::Delete { .. } => "delete_wallet",
            Self::ListWallets => "list_wallets",
            Self::Token { method, .. } => method.name(),
            Self::Raw(_) => return None,
        })
    }
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

impl TokenMethod {
    /// The method's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Accounts => "accounts",
            Self::CreateAccount(_) => "create_account_path",
            Self::SetActive(_) => "set_active_account",
            Self::PublicKey(_) => "get_public_key",
            Self::Sign(_) => "sign_message",
        }
    }
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
