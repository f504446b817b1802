//! Bounded exhaustive enumeration: every sequence of up to `depth` actions over a small fixed
//! alphabet, each run against the real server ([`Sut`]) and the reference [`Model`] and checked
//! after every op exactly as the model test checks (`model.apply(op)`, then `sut.apply(&model)`).
//!
//! * **Start**: a fresh server, client 1 speaking as one of [`Config::client1`] (one enumeration
//!   per principal), then the setup [`SETUP`]: client 0 (`local`) makes a session and restores the
//!   default wallet from the test vector (password `pw0`), so that depth 1 can already open it.
//! * **Alphabet** ([`alphabet`]): per client 0 and 1 (both name their session): plaintext
//!   `init_secure_api`, encrypted re-key, replay of its last accepted envelope(s) with its session
//!   id, and per wallet (`default`, and `w1` with two wallets) `open_wallet` with the right and a
//!   wrong password, `close_wallet`, `get_mnemonic`, `delete_wallet` (right password),
//!   `create_wallet`; `accounts` with the newest token of the client's principal (else the newest
//!   of anyone's); and, once, a jump of the clock past each limit followed by `handle_timeout`:
//!   1 s (the throttle's first wait), 4 s (a token's idle time), 6 s (a session's idle time), 15 s
//!   (a token's lifetime, and past the throttle's longest wait). An action resolves to ops against
//!   the model state it starts from (the right password, the token's index).
//! * **Pruning**: breadth first. After each sequence the model state is reduced to a canonical form
//!   ([`digest`]) and hashed; a sequence whose digest was already seen (at the same or a smaller
//!   depth: breadth first sees the smaller first) is run and checked but not extended.
//! * **Cost**: the server cannot be cloned, so each sequence runs from a fresh server; every
//!   action of every sequence is checked (prefixes again, deterministically). Work is shared among
//!   threads; the counts do not depend on how many.
//!
//! The canonical form keeps what the model's future answers depend on, given the alphabet: ages
//! (and the throttle's remaining waits) in whole seconds, since every limit and every jump is a
//! whole number of seconds and a run ticks the clock by fewer than 1000 ms in all (so `age + later
//! time ≥ limit` depends on the whole seconds only); the order of last use of each principal's
//! sessions (eviction); sessions, keys, tokens and wallet incarnations renumbered by order; only the
//! envelopes and tokens an action may still name, and tokens that can still change. Two prefixes
//! with one digest get the same answers from the model to every continuation (up to the numbering
//! of sessions, keys, tokens and incarnations). What the model does not see (the server's lazy
//! sweeps, its random ids) may differ between them: pruning trusts the model there.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::model::{CLIENTS, Call, CreateKind, Form, LOCAL, Model, OWNER, Op, PASSWORDS, TokenMethod, TokenSel};
use crate::sut::Sut;

mod canonical;

pub use canonical::{Canonical, canonical, digest, digest_is_exact};

/// Clock jumps, in ms: past the throttle's first wait, a token's idle time, a session's idle
/// time, a token's lifetime (and the throttle's longest wait). A session's lifetime (25 s) would
/// act as 15 s does: everything idle is gone by then.
pub const JUMPS: [u64; 4] = [1_000, 4_000, 6_000, 15_000];

/// Ops run before the enumeration starts: client 0 makes a session and restores the default
/// wallet (password `pw0`).
pub const SETUP: [Op; 2] = [
    Op::Init { c: 0, bad_key: false },
    Op::Call {
        c: 0,
        call: Call::Create { name: 0, kind: CreateKind::Restore { zero_len: false }, pw: 0 },
        form: Form::Named,
    },
];

/// Clients the alphabet drives (0: `local`; 1: [`Config::client1`]).
const DRIVEN: [u8; 2] = [0, 1];

/// One letter of the alphabet: resolves to one or more ops against the current model state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Plaintext `init_secure_api` by client `c`.
    Init(u8),
    /// Encrypted `init_secure_api` (re-key) by client `c`.
    Rekey(u8),
    /// Client `c` resends its accepted envelope `back` places before the newest, naming its session.
    Replay { c: u8, back: u8 },
    /// `open_wallet` of wallet `w` with its password (`right`) or another.
    Open { c: u8, w: u8, right: bool },
    /// `close_wallet` of wallet `w`.
    Close { c: u8, w: u8 },
    /// `accounts` with the newest token of client `c`'s principal (else the newest token).
    Token(u8),
    /// `get_mnemonic` of wallet `w` with its password.
    Mnemonic { c: u8, w: u8 },
    /// `delete_wallet` of wallet `w` with its password.
    Delete { c: u8, w: u8 },
    /// `create_wallet` `w` (16 bytes of fresh entropy, password `pw0`).
    Create { c: u8, w: u8 },
    /// The clock moves on this many ms, then `handle_timeout`.
    Jump(u64),
}

impl Action {
    /// The ops this action is in `model`'s state.
    pub fn ops(self, model: &Model) -> Vec<Op> {
        let call = |c: u8, call: Call| vec![Op::Call { c, call, form: Form::Named }];
        // The alphabet never changes a session's directory: wallets live in directory 0.
        let password = |w: u8| model.wallets.get(&(0, w)).map_or(0, |wallet| wallet.password);
        match self {
            Self::Init(c) => vec![Op::Init { c, bad_key: false }],
            Self::Rekey(c) => call(c, Call::Reinit { bad_key: false }),
            Self::Replay { c, back } => vec![Op::Replay { c, back, hint: true }],
            Self::Open { c, w, right } => {
                let pw = if right { password(w) } else { (password(w) + 1) % PASSWORDS.len() as u8 };
                call(c, Call::Open { name: w, pw })
            }
            Self::Close { c, w } => call(c, Call::Close { name: w }),
            Self::Token(c) => {
                let p = model.principal_of(c);
                let newest = model.tokens.iter().rposition(|t| t.principal == p);
                let index = newest.or_else(|| model.tokens.len().checked_sub(1));
                let back = index.map_or(0, |i| model.tokens.len() - 1 - i);
                let back = u8::try_from(back).expect("fewer than 256 tokens");
                call(c, Call::Token { method: TokenMethod::Accounts, token: TokenSel::Issued(back) })
            }
            Self::Mnemonic { c, w } => call(c, Call::Mnemonic { name: w, pw: password(w) }),
            Self::Delete { c, w } => call(c, Call::Delete { name: w, pw: password(w) }),
            Self::Create { c, w } => call(c, Call::Create { name: w, kind: CreateKind::Random(0), pw: 0 }),
            Self::Jump(ms) => vec![Op::Advance(ms), Op::Timeout],
        }
    }
}

/// What is enumerated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Actions per sequence (after [`SETUP`]).
    pub depth: usize,
    /// The principals client 1 starts as (indexes into [`PRINCIPALS`](crate::model::PRINCIPALS)),
    /// one enumeration each.
    pub client1: Vec<u8>,
    /// Wallets the alphabet names: 1 (`default`) or 2 (and `w1`).
    pub wallets: u8,
    /// Replays of the newest `replays` accepted envelopes per client.
    pub replays: u8,
    /// Worker threads.
    pub threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { depth: 3, client1: vec![OWNER, LOCAL], wallets: 1, replays: 2, threads: 1 }
    }
}

/// The alphabet of a configuration, in a fixed order.
pub fn alphabet(config: &Config) -> Vec<Action> {
    let mut actions = Vec::new();
    for c in DRIVEN {
        actions.push(Action::Init(c));
        actions.push(Action::Rekey(c));
        actions.extend((0..config.replays).map(|back| Action::Replay { c, back }));
        actions.push(Action::Token(c));
        for w in 0..config.wallets {
            actions.push(Action::Open { c, w, right: true });
            actions.push(Action::Open { c, w, right: false });
            actions.push(Action::Close { c, w });
            actions.push(Action::Mnemonic { c, w });
            actions.push(Action::Delete { c, w });
            actions.push(Action::Create { c, w });
        }
    }
    actions.extend(JUMPS.map(Action::Jump));
    actions
}

/// Runs [`SETUP`] and then `actions` against a fresh server and the model (client 1 as principal
/// `client1`), checking after every op. Panics on the first disagreement; returns the model.
pub fn run(client1: u8, actions: &[Action]) -> Model {
    let mut model = Model::with_client1(client1);
    let mut sut = Sut::new();
    sut.check(&model);
    let mut step = |model: Model, op: &Op| {
        let model = model.apply(op);
        sut.apply(&model);
        model
    };
    for op in &SETUP {
        model = step(model, op);
    }
    for action in actions {
        for op in action.ops(&model) {
            model = step(model, &op);
        }
    }
    model
}

/// What one depth added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    /// The depth (actions after the setup).
    pub depth: usize,
    /// Sequences of this length run and checked.
    pub sequences: u64,
    /// New distinct states among them (the ones extended at the next depth).
    pub new_states: u64,
    /// Wall time of the level.
    pub elapsed: Duration,
}

/// The whole enumeration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Per depth, 0 (the start states) first.
    pub levels: Vec<Level>,
    /// Sequences run and checked, the empty ones (the start states) included.
    pub sequences: u64,
    /// Distinct model states seen.
    pub states: u64,
    /// The depth enumerated.
    pub depth: usize,
}

/// A sequence on which the server and the model disagreed.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// Client 1's principal.
    pub client1: u8,
    /// The actions after the setup.
    pub actions: Vec<Action>,
    /// The ops they resolved to.
    pub ops: Vec<Op>,
    /// The check that failed.
    pub message: String,
    /// Sequences run before it was found, and the wall time.
    pub after: (u64, Duration),
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let principal = Model::name_of(self.client1);
        writeln!(f, "the server and the model disagree (client 1 speaking as `{principal}`):")?;
        writeln!(f, "  actions after the setup: {:?}", self.actions)?;
        writeln!(f, "  ops: {:?}", self.ops)?;
        writeln!(f, "  check: {}", self.message)?;
        write!(f, "  found after {} sequences, {:.1?}", self.after.0, self.after.1)
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// The ops `actions` resolve to (the model alone), for reports.
fn resolved_ops(client1: u8, actions: &[Action]) -> Vec<Op> {
    let mut model = Model::with_client1(client1);
    let mut ops = Vec::new();
    for op in &SETUP {
        model = model.apply(op);
    }
    for action in actions {
        for op in action.ops(&model) {
            model = model.apply(&op);
            ops.push(op);
        }
    }
    ops
}

/// A sequence to extend: client 1's principal and the actions so far.
type Node = (u8, Vec<Action>);

/// Enumerates every sequence up to `config.depth`, breadth first, pruning repeated model states;
/// `progress` hears of each finished depth. Stops at the first sequence on which the server and
/// the model disagree.
pub fn enumerate(config: &Config, mut progress: impl FnMut(&Level)) -> Result<Report, Box<Mismatch>> {
    assert!(digest_is_exact(config.depth), "the digest's reduction of time is not exact at this depth");
    assert!(CLIENTS > usize::from(DRIVEN[1]), "the model has both driven clients");
    let alphabet = alphabet(config);
    let started = Instant::now();
    let mut seen = HashSet::<u64>::new();
    let mut levels = Vec::new();
    let mut sequences = 0u64;
    let mut frontier: Vec<Node> = Vec::new();
    // Depth 0: the start states.
    let level_start = Instant::now();
    for &p in &config.client1 {
        let model = checked(p, &[], 0, started)?;
        if seen.insert(digest(&model, config.replays)) {
            frontier.push((p, Vec::new()));
        }
        sequences += 1;
    }
    let level = Level {
        depth: 0,
        sequences: config.client1.len() as u64,
        new_states: frontier.len() as u64,
        elapsed: level_start.elapsed(),
    };
    progress(&level);
    levels.push(level);
    for depth in 1..=config.depth {
        let level_start = Instant::now();
        let children = frontier.len() * alphabet.len();
        let digests = run_level(&frontier, &alphabet, config, sequences, started)?;
        let mut next = Vec::new();
        let mut new_states = 0;
        for (i, d) in digests.into_iter().enumerate() {
            if seen.insert(d) {
                new_states += 1;
                if depth < config.depth {
                    let (p, actions) = &frontier[i / alphabet.len()];
                    let mut actions = actions.clone();
                    actions.push(alphabet[i % alphabet.len()]);
                    next.push((*p, actions));
                }
            }
        }
        sequences += children as u64;
        let level = Level { depth, sequences: children as u64, new_states, elapsed: level_start.elapsed() };
        progress(&level);
        levels.push(level);
        frontier = next;
    }
    Ok(Report { levels, sequences, states: seen.len() as u64, depth: config.depth })
}

/// Runs one sequence and returns its final model, or the mismatch.
fn checked(p: u8, actions: &[Action], before: u64, started: Instant) -> Result<Model, Box<Mismatch>> {
    catch_unwind(AssertUnwindSafe(|| run(p, actions))).map_err(|panic| {
        Box::new(Mismatch {
            client1: p,
            actions: actions.to_vec(),
            ops: resolved_ops(p, actions),
            message: panic_message(panic.as_ref()),
            after: (before, started.elapsed()),
        })
    })
}

/// Runs every child of `frontier` (each node with each action), on `config.threads` threads;
/// returns their digests in order.
fn run_level(
    frontier: &[Node],
    alphabet: &[Action],
    config: &Config,
    before: u64,
    started: Instant,
) -> Result<Vec<u64>, Box<Mismatch>> {
    let total = frontier.len() * alphabet.len();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let digests = Mutex::new(vec![0u64; total]);
    let failure = Mutex::new(None::<Box<Mismatch>>);
    // Nodes are handed out whole, so a thread's children share nothing but the counters.
    std::thread::scope(|scope| {
        for _ in 0..config.threads.max(1) {
            scope.spawn(|| {
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let node = next.fetch_add(1, Ordering::Relaxed);
                    let Some((p, prefix)) = frontier.get(node) else { break };
                    for (a, action) in alphabet.iter().enumerate() {
                        let mut actions = prefix.clone();
                        actions.push(*action);
                        let ran = before + done.fetch_add(1, Ordering::Relaxed) as u64;
                        match checked(*p, &actions, ran, started) {
                            Ok(model) => mine.push((node * alphabet.len() + a, digest(&model, config.replays))),
                            Err(mismatch) => {
                                stop.store(true, Ordering::Relaxed);
                                failure
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .get_or_insert(mismatch);
                                return;
                            }
                        }
                    }
                }
                let mut digests = digests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (i, d) in mine {
                    digests[i] = d;
                }
            });
        }
    });
    if let Some(mismatch) = failure.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
        return Err(mismatch);
    }
    Ok(digests.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(actions: &[Action]) -> u64 {
        digest(&run(OWNER, actions), 1)
    }

    #[test]
    fn a_refused_replay_leaves_the_start_state() {
        // Only the clock moved (by a millisecond).
        assert_eq!(digest_of(&[Action::Replay { c: 0, back: 0 }]), digest_of(&[]));
    }

    #[test]
    fn calls_of_two_principals_commute() {
        let (zero, one) = (Action::Open { c: 0, w: 0, right: false }, Action::Open { c: 1, w: 0, right: false });
        assert_eq!(digest_of(&[Action::Init(1), zero, one]), digest_of(&[Action::Init(1), one, zero]));
    }

    #[test]
    fn what_changes_the_future_changes_the_digest() {
        let start = digest_of(&[]);
        for action in [
            Action::Open { c: 0, w: 0, right: true },
            Action::Open { c: 0, w: 0, right: false },
            Action::Init(1),
            Action::Rekey(0),
            Action::Jump(6_000),
            Action::Delete { c: 0, w: 0 },
        ] {
            assert_ne!(digest_of(&[action]), start, "{action:?}");
        }
        // The order of one principal's sessions' last use decides which a third session evicts
        // (client 1 speaking as `local`, as client 0 does).
        let (zero, one) = (Action::Token(0), Action::Token(1));
        let same = |actions: &[Action]| digest(&run(LOCAL, actions), 1);
        assert_ne!(same(&[Action::Init(1), zero, one]), same(&[Action::Init(1), one, zero]));
    }

    #[test]
    fn the_alphabet_has_every_letter_once() {
        let config = Config { wallets: 2, replays: 2, ..Config::default() };
        let letters = alphabet(&config);
        assert_eq!(letters.iter().collect::<HashSet<_>>().len(), letters.len());
        assert_eq!(letters.len(), 2 * (1 + 1 + 2 + 1 + 2 * 6) + JUMPS.len());
        assert!(digest_is_exact(64));
    }
}
