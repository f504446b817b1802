//! The reference model: what a Keyward server must do, in a few hundred lines of plain data.
//!
//! It tracks clients (the principal each speaks as, their current session key), sessions (client,
//! principal, key, created, last used, request count, directory), wallets (password, where their
//! entropy came from, accounts, which principals hold it open and with which token), every token
//! ever issued with its principal and status, the unlock throttle per principal and wallet, the
//! configs written, the store's armed write failure, and the clock.
//!
//! Principals (spec/protocol.md section 7.2): a call below its method's role is refused
//! `Forbidden` and changes nothing; a session answers only its own principal (another's envelope
//! reads as a wrong key, and a request naming no session is tried only against the caller's own);
//! a token opens its wallet only for the principal that opened it; openings, `close_wallet`,
//! `list_wallets`' "open", re-opening and the unlock throttle are per principal; `delete_wallet`
//! closes every opening; a new session evicts its principal's own at `max_per_principal`, else
//! from the largest holder in a full table (the least recently used). [`Model::apply`] runs one
//! [`Op`] and records in [`Model::steps`] what the server must answer, request by request; the
//! driver in [`crate::sut`] sends the same requests to a real [`keyward_core::Server`] and checks.
//!
//! Where the protocol leaves a detail to timing the model does not follow (when the vault's lazy
//! sweep runs), it accepts each answer the specification allows, and nothing else.
//!
//! Layout: `config` (the model's server and the run's fixed vocabulary), `ops` (the operations and
//! inner calls), `expect` (answers, routes and the steps the server must take), `state` (the
//! model's data), `transitions` ([`Model::apply`]: clock, sessions, routing) and `calls` (what each
//! inner call does and answers). Everything is re-exported here: use `model::X`.

mod calls;
mod config;
mod expect;
mod ops;
mod state;
mod transitions;

pub use calls::{ANOTHERS_CLOSED_TOKEN, name_key, top_level_directory};
pub use config::{
    CLIENT1_STARTS, CLIENTS, DATA_ROOT, DIRS, GRIN_MNEMONIC, GRIN_SEED, KEPT_ENVELOPES, LABELS, LEGACY_ENTROPY,
    LEGACY_KDF, LENGTHS, LOCAL, MESSAGE, NAME_PARAMS, OWNER, PASSWORDS, PATHS, PRINCIPALS, READER, SESSIONS, SET_DIRS,
    SIGNER, START_MS, THROTTLE, V3, WALLET_NAMES, bogus_session, config, registered_clients, tokens,
};
pub use expect::{
    Answer, E_ARG, E_EXISTS, E_LABEL_EXISTS, E_MASK, E_METHOD, E_NOT_OPEN, E_OPEN, E_PARAMS, E_REQUEST, E_STORE,
    E_THROTTLED, E_UNKNOWN_LABEL, EnvStep, ErrPat, Evicted, Hint, OkVal, Origin, Resolved, Route, Source, Step,
    TokenArg,
};
pub use ops::{Call, CreateKind, Form, GARBAGE_PLAIN_CALL, Garbage, Op, RAW_BODIES, Tamper, TokenMethod, TokenSel};
pub use state::{ClientM, Model, OpenM, SessionM, ThrottleM, TokenM, TokenStatus, WalletM};
