//! The model's state: clients, sessions, wallets, tokens and the throttle, and the queries the
//! driver checks the invariants with.

use std::collections::{BTreeMap, BTreeSet};

use keyward_core::Role;

use super::{CLIENTS, LOCAL, OWNER, Origin, PRINCIPALS, START_MS, Step, V3};

/// A client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientM {
    /// The principal it speaks as (index into [`PRINCIPALS`]).
    pub principal: u8,
    /// The key its envelopes are sealed with.
    pub key: Option<u32>,
    /// Its latest session (maybe gone).
    pub session: Option<u32>,
    /// Its accepted envelopes: (session, key, whether the plaintext can start a JSON request),
    /// oldest first.
    pub envelopes: Vec<(u32, u32, bool)>,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionM {
    /// The client that made it.
    pub owner: u8,
    /// The principal it belongs to.
    pub principal: u8,
    /// Its key.
    pub key: u32,
    /// When made.
    pub created: u64,
    /// When last used.
    pub last_used: u64,
    /// Envelopes accepted under the current key.
    pub requests: u32,
    /// Whether any envelope was ever accepted on it (a full table evicts unused sessions first).
    pub used: bool,
    /// Its top-level directory (index into [`DIRS`](super::DIRS)).
    pub dir: u8,
}

/// One principal's opening of a wallet (its vault entry).
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
    /// Index into [`PASSWORDS`](super::PASSWORDS).
    pub password: u8,
    /// Where its entropy came from.
    pub origin: Origin,
    /// Which creation of this (dir, name) it is.
    pub incarnation: u32,
    /// Accounts: (label, index).
    pub accounts: Vec<(String, u32)>,
    /// The openings that have not expired, by principal.
    pub opens: BTreeMap<u8, OpenM>,
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
    /// The principal that opened the wallet (the only one it opens it for).
    pub principal: u8,
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
    /// Throttle entries by principal and wallet (dir, name).
    pub throttle: BTreeMap<(u8, (u8, u8)), ThrottleM>,
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

impl Model {
    /// A server that has seen nothing, client 1 speaking as the registered `owner`: a principal of
    /// its own, but one that may call everything, so the fuzz inputs and seeds saved before there
    /// were principals (`sut::run`) still run the lifecycle they were written for. The model test
    /// picks client 1's start per case; fuzz inputs reach the other roles with `Op::Become`.
    pub fn new() -> Self {
        Self::with_client1(OWNER)
    }

    /// A server that has seen nothing, client 1 speaking as `PRINCIPALS[p]`.
    pub fn with_client1(p: u8) -> Self {
        let principals: [u8; CLIENTS] = [LOCAL, p % PRINCIPALS.len() as u8, V3];
        Self {
            now: START_MS,
            clients: principals.iter().map(|&principal| ClientM { principal, ..ClientM::default() }).collect(),
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

    /// The name of principal `p`.
    pub fn name_of(p: u8) -> &'static str {
        PRINCIPALS[usize::from(p)].0
    }

    /// The role of principal `p` (`None`: unknown to the server).
    pub fn role_of(p: u8) -> Option<Role> {
        PRINCIPALS[usize::from(p)].1
    }

    /// The principal client `c` speaks as.
    pub fn principal_of(&self, c: u8) -> u8 {
        self.clients[usize::from(c)].principal
    }

    /// Live sessions of principal `p`.
    pub fn sessions_of(&self, p: u8) -> impl Iterator<Item = (&u32, &SessionM)> {
        self.sessions.iter().filter(move |(_, s)| s.principal == p)
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
