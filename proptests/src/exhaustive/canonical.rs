//! The canonical form of a model state and its digest, by which the enumeration prunes repeated
//! states: what the form keeps and why is in the doc of the parent module ([`crate::exhaustive`]),
//! the "module doc" the items below refer to.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::model::{Model, Origin, SESSIONS, THROTTLE, TokenStatus, tokens};

use super::{JUMPS, SETUP};

fn status_code(status: TokenStatus) -> u8 {
    match status {
        TokenStatus::Current => 0,
        TokenStatus::Stale => 1,
        TokenStatus::Closed => 2,
        TokenStatus::ExpiredUnswept => 3,
        TokenStatus::StaleOrClosed => 4,
    }
}

fn origin_code(origin: Origin) -> (u8, u32) {
    match origin {
        Origin::Random(length) => (0, length),
        Origin::Restored => (1, 0),
        Origin::Grin => (2, 0),
        Origin::Legacy => (3, 0),
    }
}

/// A reference to a session or key that no longer exists (it behaves as any other gone one).
const GONE: u32 = u32::MAX;
/// No session yet.
const NONE: u32 = u32::MAX - 1;

/// Whole seconds of an age (see the module doc).
fn secs(ms: u64) -> u64 {
    ms / 1_000
}

/// Whether the digest's reduction of time to whole seconds is exact for this model's limits, the
/// jumps and runs of `depth` actions (each ticks the clock by at most 2 ms; see the module doc).
pub fn digest_is_exact(depth: usize) -> bool {
    let limits = [
        SESSIONS.idle_ms,
        SESSIONS.lifetime_ms,
        tokens().idle_ms,
        tokens().lifetime_ms,
        THROTTLE.base_ms,
        THROTTLE.max_ms,
    ];
    let whole = limits.iter().chain(&JUMPS).all(|ms| ms % 1_000 == 0);
    whole && 2 * (depth + SETUP.len()) < 1_000
}

/// The digest of a model state: a hash of its canonical form for an alphabet that replays the
/// newest `replays` envelopes of each client (see the module doc).
pub fn digest(model: &Model, replays: u8) -> u64 {
    let mut hasher = DefaultHasher::new();
    canonical(model, replays).hash(&mut hasher);
    hasher.finish()
}

/// A client in the canonical form: principal, key, session, replayable envelopes (session, key,
/// whether it may start a JSON request).
type ClientC = (u8, u32, u32, Vec<(u32, u32, bool)>);
/// A live session: owner, principal, key, age and idle time (whole seconds), requests, used,
/// directory.
type SessionC = (u8, u8, u32, u64, u64, u32, bool, u8);
/// An opening: principal, token, age and idle time (whole seconds).
type OpenC = (u8, u32, u64, u64);
/// A wallet: key, password, origin, incarnation, accounts, openings, legacy.
type WalletC = ((u8, u8), u8, (u8, u32), u32, Vec<(String, u32)>, Vec<OpenC>, bool);

/// The canonical form behind [`digest`].
#[derive(Debug, Hash, PartialEq, Eq)]
pub struct Canonical {
    /// The clients, in order.
    clients: Vec<ClientC>,
    /// Live sessions, by principal and then last use (numbered in this order).
    sessions: Vec<SessionC>,
    /// Stored wallets, by key.
    wallets: Vec<WalletC>,
    /// Tokens an action may name or whose status may still change, in issue order: wallet,
    /// principal, status.
    tokens: Vec<((u8, u8), u8, u8)>,
    /// Throttle entries: principal, wallet, failures, whole seconds of wait left (rounded up).
    throttle: Vec<(u8, (u8, u8), u32, u64)>,
    /// Directories with a config.
    configs: Vec<u8>,
    /// The store's armed failure.
    armed: Option<u32>,
}

/// The canonical form of `model` (see the module doc).
pub fn canonical(model: &Model, replays: u8) -> Canonical {
    let now = model.now;
    // Sessions by principal, then by last use (the order eviction reads); numbered in that order.
    let mut live: Vec<(&u32, &crate::model::SessionM)> = model.sessions.iter().collect();
    live.sort_by_key(|(_, s)| (s.principal, s.last_used));
    let session_ids: BTreeMap<u32, u32> = live.iter().zip(0u32..).map(|((id, _), n)| (**id, n)).collect();
    // Keys numbered by first appearance: sessions' keys, then clients' keys.
    let mut key_ids = BTreeMap::<u32, u32>::new();
    let keys = live.iter().map(|(_, s)| s.key).chain(model.clients.iter().filter_map(|c| c.key));
    for key in keys {
        let next = key_ids.len() as u32;
        key_ids.entry(key).or_insert(next);
    }
    let key_ref = |key: u32| key_ids.get(&key).copied().unwrap_or(GONE);
    let session_ref = |s: u32| session_ids.get(&s).copied().unwrap_or(GONE);
    let clients = model
        .clients
        .iter()
        .map(|client| {
            let kept = client.envelopes.len().saturating_sub(usize::from(replays.max(1)));
            let envelopes =
                client.envelopes[kept..].iter().map(|(s, key, json)| (session_ref(*s), key_ref(*key), *json)).collect();
            let session = client.session.map_or(NONE, session_ref);
            (client.principal, client.key.map_or(NONE, key_ref), session, envelopes)
        })
        .collect();
    let sessions = live
        .iter()
        .map(|(_, s)| {
            let age = secs(now - s.created);
            let idle = secs(now - s.last_used);
            (s.owner, s.principal, key_ref(s.key), age, idle, s.requests, s.used, s.dir)
        })
        .collect();
    // Tokens: the newest of each principal and the newest of all (an action may name them), and
    // any whose status may still change; numbered in issue order.
    let mut named: HashSet<usize> = HashSet::new();
    named.extend(model.tokens.len().checked_sub(1));
    for p in model.clients.iter().map(|c| c.principal) {
        named.extend(model.tokens.iter().rposition(|t| t.principal == p));
    }
    let mut token_ids = BTreeMap::<u32, u32>::new();
    let mut kept_tokens = Vec::new();
    for (i, token) in model.tokens.iter().enumerate() {
        let live = matches!(token.status, TokenStatus::Current | TokenStatus::ExpiredUnswept);
        if live || named.contains(&i) {
            token_ids.insert(i as u32, kept_tokens.len() as u32);
            kept_tokens.push((token.wallet, token.principal, status_code(token.status)));
        }
    }
    let mut incarnations: Vec<u32> = model.wallets.values().map(|w| w.incarnation).collect();
    incarnations.sort_unstable();
    let wallets = model
        .wallets
        .iter()
        .map(|(key, w)| {
            let opens = w
                .opens
                .iter()
                .map(|(p, open)| {
                    let token = token_ids.get(&open.token).copied().unwrap_or(GONE);
                    (*p, token, secs(now - open.opened), secs(now - open.last_used))
                })
                .collect();
            let incarnation = incarnations.binary_search(&w.incarnation).unwrap_or_default() as u32;
            (*key, w.password, origin_code(w.origin), incarnation, w.accounts.clone(), opens, w.legacy)
        })
        .collect();
    let throttle = model
        .throttle
        .iter()
        .map(|((p, key), t)| (*p, *key, t.failures, t.next_allowed.saturating_sub(now).div_ceil(1_000)))
        .collect();
    Canonical {
        clients,
        sessions,
        wallets,
        tokens: kept_tokens,
        throttle,
        configs: model.configs.iter().copied().collect(),
        armed: model.armed,
    }
}
