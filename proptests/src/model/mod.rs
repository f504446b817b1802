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

pub use calls::top_level_directory;
pub use config::{
    CLIENTS, DATA_ROOT, DIRS, GRIN_MNEMONIC, GRIN_SEED, KEPT_ENVELOPES, LABELS, LEGACY_ENTROPY, LEGACY_KDF, LENGTHS,
    MESSAGE, NAME_PARAMS, PASSWORDS, PATHS, SESSIONS, SET_DIRS, START_MS, THROTTLE, WALLET_NAMES, bogus_session,
    config, tokens,
};
pub use expect::{
    Answer, E_ARG, E_EXISTS, E_LABEL_EXISTS, E_MASK, E_METHOD, E_NOT_OPEN, E_OPEN, E_PARAMS, E_REQUEST, E_STORE,
    E_THROTTLED, E_UNKNOWN_LABEL, EnvStep, ErrPat, Hint, OkVal, Origin, Resolved, Route, Source, Step, TokenArg,
};
pub use ops::{Call, CreateKind, Form, GARBAGE_PLAIN_CALL, Garbage, Op, RAW_BODIES, Tamper, TokenMethod, TokenSel};
pub use state::{ClientM, Model, OpenM, SessionM, ThrottleM, TokenM, TokenStatus, WalletM};
