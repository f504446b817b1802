//! The system under test: a real [`Server`] over a [`FailingStore`], driven by the requests the
//! model's [`Step`](model::Step)s describe, with every answer and, after every op, the invariants
//! checked.
//!
//! The server knows the model's principals: `local` is built in, the others with a role are
//! registered at start (`Server::add_client`, one uid each); every request goes in as the principal
//! the model says sends it.
//!
//! Checks after each request: the route (which session, or which plaintext error), the inner answer,
//! that an answer authenticates under its own session's key and under no other live key, that reply
//! nonces never repeat, that a refused request or a `Forbidden` call changed nothing (store, vault,
//! armed failure), that the vault gained a masked seed only on a successful `open_wallet`, and after
//! a new session that the table holds exactly the model's sessions, per principal (the server
//! sweeps expired sessions before it evicts one).
//!
//! Invariants after each op: the vault holds masked seeds only of wallets whose token is current (or
//! expired but not yet swept), exactly those of current tokens after `handle_timeout`, nothing after
//! `shutdown`, and never a known master key in the clear; the store holds what the model says
//! (wallets, accounts, KDF parameters, configs); after a failed write every wallet still opens with
//! its model password; the live session count, in all and per principal, is at least the model's,
//! and equal after a timeout.
//!
//! Layout: this file holds the [`Sut`] (its state, construction and the snapshot of what must not
//! change) and [`run`]; `drive.rs` turns the model's steps into requests and sends them;
//! `check.rs` checks each answer against what the model expects; `invariants.rs` holds the
//! invariants checked after each op.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use keyward_core::crypto;
use keyward_core::crypto::{Cipher, NONCE_LEN};
use keyward_core::crypto::{Entropy, MasterKey};
use keyward_core::store::StoredWallet;
use keyward_core::{Incoming, MemoryStore, Outgoing, Server, SessionId, Store, WalletKey};
use keyward_testkit::VECTOR_MNEMONIC;
use serde_json::Value;

use crate::failing_store::{FailPlan, FailingStore};
use crate::model::{
    self, DIRS, ErrPat, Hint, LEGACY_ENTROPY, Model, NAME_PARAMS, Origin, PASSWORDS, PRINCIPALS, WALLET_NAMES,
};
use crate::peer::{KeyPair, PeerRng};

mod check;
mod drive;
mod invariants;

/// Counts of what runs exercised (routes, answers), for `KEYWARD_STATS=1` reports.
static STATS: std::sync::Mutex<BTreeMap<String, u64>> = std::sync::Mutex::new(BTreeMap::new());

fn bump(what: impl FnOnce() -> String) {
    if std::env::var_os("KEYWARD_STATS").is_some() {
        *STATS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(what()).or_default() += 1;
    }
}

/// The counts gathered so far (only with `KEYWARD_STATS` set).
pub fn stats() -> BTreeMap<String, u64> {
    STATS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// What the tests learned about one wallet incarnation.
#[derive(Debug, Default)]
struct Observed {
    mnemonic: Option<String>,
    master: Option<MasterKey>,
    public_keys: BTreeMap<u8, String>,
}

/// Everything compared before and after a request that must change nothing.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    wallets: Vec<Option<StoredWallet>>,
    configs: Vec<Option<Vec<u8>>>,
    vault: Vec<u8>,
    open: usize,
    armed: Option<u32>,
    writes: u64,
}

/// The real server and the client-side state that mirrors the model.
#[derive(Debug)]
pub struct Sut {
    /// The server under test.
    pub server: Server,
    /// Its store's failure switch.
    pub plan: Arc<FailPlan>,
    /// Its store, seen directly.
    pub store: Arc<MemoryStore>,
    rng: PeerRng,
    next_id: u64,
    ciphers: BTreeMap<u32, Cipher>,
    rekey_pair: Option<KeyPair>,
    session_ids: BTreeMap<u32, SessionId>,
    tokens: Vec<String>,
    kept: Vec<Vec<Vec<u8>>>,
    observed: BTreeMap<u32, Observed>,
    reply_nonces: HashSet<[u8; NONCE_LEN]>,
    chunk_owner: HashMap<Vec<u8>, u32>,
    failures_checked: u64,
}

fn wallet_key(dir: u8, name: u8) -> WalletKey {
    WalletKey { dir: DIRS[usize::from(dir)].to_owned(), name: WALLET_NAMES[usize::from(name)].to_owned() }
}

fn name_param(name: u8) -> Value {
    NAME_PARAMS[usize::from(name) % NAME_PARAMS.len()].map_or(Value::Null, Value::from)
}

fn password(pw: u8) -> &'static str {
    PASSWORDS[usize::from(pw) % PASSWORDS.len()]
}

fn parse(body: &[u8]) -> Value {
    match crate::answer::parse_answer(body) {
        Some(value) => value,
        None => panic!("the server's answer is not JSON: {}", String::from_utf8_lossy(body)),
    }
}

fn error_of(answer: &Value) -> (i64, String) {
    let error = answer.get("error").unwrap_or_else(|| panic!("expected an error answer, got {answer}"));
    let code = error["code"].as_i64().unwrap_or_else(|| panic!("error without a code: {answer}"));
    (code, error["message"].as_str().unwrap_or_default().to_owned())
}

fn matches(pattern: &ErrPat, code: i64, message: &str) -> bool {
    pattern.code == code && message.contains(pattern.contains)
}

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The entropy of a wallet whose origin says what it is.
fn known_entropy(origin: Origin) -> Option<Entropy> {
    match origin {
        Origin::Restored => crypto::entropy_of(VECTOR_MNEMONIC),
        Origin::Grin => crypto::entropy_of(model::GRIN_MNEMONIC),
        Origin::Legacy => Entropy::from_bytes(LEGACY_ENTROPY.to_vec()),
        Origin::Random(_) => None,
    }
}

impl Default for Sut {
    fn default() -> Self {
        Self::new()
    }
}

impl Sut {
    /// A fresh server with the model's configuration, its registered clients and fixed randomness.
    pub fn new() -> Self {
        let store = Arc::new(MemoryStore::new());
        let plan = Arc::new(FailPlan::default());
        let failing = FailingStore::new(Arc::clone(&store), Arc::clone(&plan));
        let server = Server::new(model::config(), Box::new(failing), [0x5e; 32]);
        for record in model::registered_clients() {
            let name = record.name.clone();
            server.add_client(record).unwrap_or_else(|e| panic!("registering {name}: {e}"));
        }
        for (name, role) in PRINCIPALS {
            assert_eq!(server.role_of(name), role, "the role of {name}");
        }
        Self {
            server,
            plan,
            store,
            rng: PeerRng::new([0x42; 32]),
            next_id: 1,
            ciphers: BTreeMap::new(),
            rekey_pair: None,
            session_ids: BTreeMap::new(),
            tokens: Vec::new(),
            kept: vec![Vec::new(); model::CLIENTS],
            observed: BTreeMap::new(),
            reply_nonces: HashSet::new(),
            chunk_owner: HashMap::new(),
            failures_checked: 0,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn hint(&self, hint: Hint) -> Option<SessionId> {
        match hint {
            Hint::None => None,
            Hint::Session(s) => Some(self.session_ids[&s]),
            Hint::Bogus => Some(model::bogus_session()),
        }
    }

    fn handle(&self, body: &[u8], session: Option<SessionId>, principal: u8, now_ms: u64) -> Outgoing {
        let principal = keyward_core::Principal::new(Model::name_of(principal));
        self.server.handle(Incoming { body, session, recent: None, principal: &principal, now_ms })
    }

    fn snapshot(&self) -> Snapshot {
        let mut wallets = Vec::new();
        for dir in 0..2 {
            for name in 0..2 {
                wallets.push(self.store.load_wallet(&wallet_key(dir, name)).expect("memory store reads"));
            }
        }
        let configs = DIRS.iter().map(|d| self.store.load_config(d).expect("memory store reads")).collect();
        Snapshot {
            wallets,
            configs,
            vault: self.server.vault_masked_bytes(),
            open: self.server.open_wallet_count(),
            armed: self.plan.armed(),
            writes: self.plan.writes(),
        }
    }
}

/// Runs a sequence of ops through the model and the real server, checking after every step.
/// Panics on the first disagreement.
pub fn run(ops: &[crate::model::Op]) {
    let mut model = Model::new();
    let mut sut = Sut::new();
    sut.check(&model);
    for op in ops {
        model = model.apply(op);
        sut.apply(&model);
    }
}
