//! Sessions: one per client, each with its own V3 key, in a bounded table.
//!
//! * A session is made by a plaintext `init_secure_api` and re-keyed by an encrypted one.
//! * It is found by the id the transport passes in (the `Keyward-Session` header, a QUIC connection),
//!   or, for V3 clients that send none, by trying keys: first the session the same connection used
//!   last, then the others most recently used first. AES-GCM authentication makes a wrong match
//!   practically impossible. The table lock is held only to pick the candidates and to record the
//!   accepted nonce, never while keys are tried (the server does the trials, see
//!   `Server::handle_step`), and a body above `max_unnamed_bytes` is never tried at all.
//! * Anti-replay: a session remembers every request nonce it accepted (8-byte fingerprints), exactly,
//!   for as long as it lives. Memory is bounded twice: a session accepts at most `max_requests`
//!   requests (about a million by default) and then ends; and all sessions together remember at most
//!   `max_nonces`: past it, the least recently used other sessions of the principal remembering the
//!   most end until it fits. A client whose
//!   session ended gets −32001 and calls `init_secure_api` again.
//! * Expiry: a session idle for `idle_ms`, or older than `lifetime_ms`, is dropped.
//! * Principals: a session belongs to the principal that made it. Used by another (by id or by
//!   key) it answers as a wrong key would; keys are tried only among the caller's own sessions.
//!   A principal holds at most `max_per_principal` sessions: its next one evicts its own. When the
//!   whole table is full, a new session evicts from the principal that holds the most: so one
//!   client flooding inits only ever evicts its own sessions. Within a principal the least
//!   recently used goes (a never-used one counts as used when it was made), except that a session
//!   made less than `grace_ms` ago and not yet used is spared: a client that opens many sessions
//!   at once does not lose them before their first call while it has an older idle one to give.
//!   When every session of the principal is such a new one, its next init is refused
//!   ([`NoRoom`], answered −32099 `Busy: …`) rather than ending one of them: the bound holds, and
//!   the failure lands on the call that went past it, not on a session already handed out. (In a
//!   full table, the principal holding the most gives its oldest even when all of its sessions are
//!   new: one client's burst must not refuse another's init.)

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use crate::envelope::{Cipher, NONCE_LEN, OpenError};
use crate::principal::Principal;

mod keys;
pub use keys::{open_in_place, try_keys};

/// A session's id: 16 random bytes, shown as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// Wraps id bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
    /// Parses 32 hex characters.
    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// Limits of the session table. All times are milliseconds on the host's clock. It reads itself from
/// a config file's `[sessions]` table (every key optional, unknown keys refused): `max`,
/// `idle_secs`, `lifetime_secs`, `max_requests`, `max_nonces`, `per_principal`, `max_unnamed_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionLimits {
    /// Most live sessions; a new one evicts the one idle the longest.
    #[serde(rename = "max")]
    pub max_sessions: usize,
    /// A session unused this long is dropped.
    #[serde(rename = "idle_secs", deserialize_with = "crate::units::ms_from_secs")]
    pub idle_ms: u64,
    /// A session older than this is dropped, however busy.
    #[serde(rename = "lifetime_secs", deserialize_with = "crate::units::ms_from_secs")]
    pub lifetime_ms: u64,
    /// Most requests one session accepts (its anti-replay memory bound); then it ends.
    pub max_requests: u32,
    /// Most nonces all sessions together remember; past it, the least recently used other
    /// sessions of the principal remembering the most end. Never below `max_requests` (it is raised to it).
    pub max_nonces: usize,
    /// Most live sessions of one principal; its next one evicts its own.
    #[serde(rename = "per_principal")]
    pub max_per_principal: usize,
    /// Largest body whose session is looked up by trying keys; a larger request must name its
    /// session (header or connection), so a stranger's big body costs one look-up, not one per session.
    pub max_unnamed_bytes: usize,
    /// A session made less than this long ago and never used is not evicted to make room for its
    /// principal's next one (config `grace_secs`, default 2 s). Worst case: a principal that made
    /// `max_per_principal` sessions within it has its next init refused for at most this long.
    #[serde(rename = "grace_secs", deserialize_with = "crate::units::ms_from_secs")]
    pub grace_ms: u64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_sessions: 1024,
            idle_ms: 30 * 60 * 1000,
            lifetime_ms: 24 * 3600 * 1000,
            max_requests: 1 << 20,
            max_nonces: 1 << 21,
            max_per_principal: 256,
            max_unnamed_bytes: 64 * 1024,
            grace_ms: 2000,
        }
    }
}

/// A new session was refused: every session its principal holds (`max_per_principal`) was made
/// within `grace_ms` and has not been used yet. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom;

/// Why an envelope was not accepted. Each maps to a plaintext V3 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptError {
    /// No session to decrypt with (−32001).
    NoSession,
    /// The envelope's fields are malformed (−32002, format error).
    Format(OpenError),
    /// No live session's key authenticates it (−32002, decryption error).
    Decryption,
    /// Its nonce was accepted before on this session (−32002, replay).
    Replay,
    /// It names no session and is larger than `max_unnamed_bytes` (−32002).
    MustName,
}

struct Session {
    cipher: Arc<Cipher>,
    created_ms: u64,
    last_used_ms: u64,
    /// Accepted nonces, as their first 8 bytes (client nonces are random: two accepted nonces of
    /// a session sharing 8 bytes would at worst refuse a request as a replay, never accept one).
    accepted: HashSet<u64>,
    requests: u32,
    /// Whether any envelope was ever accepted on it (re-keying does not clear this).
    used: bool,
    dir: String,
    principal: Principal,
}

impl Session {
    fn new(cipher: Cipher, dir: String, principal: Principal, now_ms: u64) -> Self {
        Self {
            principal,
            cipher: Arc::new(cipher),
            created_ms: now_ms,
            last_used_ms: now_ms,
            accepted: HashSet::new(),
            requests: 0,
            used: false,
            dir,
        }
    }
}

/// The bounded table of live sessions.
pub struct SessionTable {
    limits: SessionLimits,
    sessions: HashMap<SessionId, Session>,
    /// Nonces remembered by all sessions together.
    nonces: usize,
    last_sweep_ms: u64,
    /// No live session expires before this (a lower bound, exact after a sweep): `insert` sweeps
    /// only when some session may have expired, instead of scanning the whole table every time.
    earliest_expiry_ms: u64,
}

/// How often `accept` sweeps the whole table for expired sessions (it checks the session it uses
/// on every call).
const SWEEP_EVERY_MS: u64 = 1000;

impl Session {
    fn expired(&self, limits: &SessionLimits, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_used_ms) >= limits.idle_ms
            || now_ms.saturating_sub(self.created_ms) >= limits.lifetime_ms
    }

    /// No instant before this one makes `expired` hold (0 when a zero limit makes it hold always).
    /// Made less than `grace_ms` ago and never used: not evicted for its principal's next session.
    fn in_grace(&self, limits: &SessionLimits, now_ms: u64) -> bool {
        !self.used && now_ms.saturating_sub(self.created_ms) < limits.grace_ms
    }

    fn expiry_ms(&self, limits: &SessionLimits) -> u64 {
        if limits.idle_ms == 0 || limits.lifetime_ms == 0 {
            return 0;
        }
        self.last_used_ms.saturating_add(limits.idle_ms).min(self.created_ms.saturating_add(limits.lifetime_ms))
    }
}

impl fmt::Debug for SessionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionTable").field("limits", &self.limits).field("live", &self.sessions.len()).finish()
    }
}

impl SessionTable {
    /// An empty table.
    pub fn new(limits: SessionLimits) -> Self {
        let limits = SessionLimits { max_nonces: limits.max_nonces.max(limits.max_requests as usize), ..limits };
        Self { limits, sessions: HashMap::new(), nonces: 0, last_sweep_ms: 0, earliest_expiry_ms: u64::MAX }
    }

    /// The limits in force.
    #[cfg(test)]
    pub fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    /// Nonces remembered by all sessions together.
    #[cfg(test)]
    pub fn remembered_nonces(&self) -> usize {
        self.nonces
    }

    fn remove_session(&mut self, id: &SessionId) -> bool {
        match self.sessions.remove(id) {
            Some(session) => {
                self.nonces -= session.accepted.len();
                true
            }
            None => false,
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is live.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Whether a session is live.
    #[cfg(test)]
    pub fn contains(&self, id: &SessionId) -> bool {
        self.sessions.contains_key(id)
    }

    /// Drops sessions that are idle too long or too old.
    pub fn expire(&mut self, now_ms: u64) {
        let limits = self.limits;
        let mut earliest = u64::MAX;
        let mut forgotten = 0;
        self.sessions.retain(|_, s| {
            let live = !s.expired(&limits, now_ms);
            if live {
                earliest = earliest.min(s.expiry_ms(&limits));
            } else {
                forgotten += s.accepted.len();
            }
            live
        });
        self.nonces -= forgotten;
        self.last_sweep_ms = now_ms;
        self.earliest_expiry_ms = earliest;
    }

    /// The earliest time at which a session will expire, if any is live.
    pub fn next_expiry(&self) -> Option<u64> {
        self.sessions
            .values()
            .map(|s| {
                (s.last_used_ms.saturating_add(self.limits.idle_ms))
                    .min(s.created_ms.saturating_add(self.limits.lifetime_ms))
            })
            .min()
    }

    /// Adds `principal`'s session (or replaces the one with this id). At its `max_per_principal`
    /// it evicts its own least recently used session that is not in its grace period, and is
    /// refused ([`NoRoom`], nothing changes) when all of them are; in a full table, one of the
    /// principal holding the most (its oldest, if all are in grace and it is another principal).
    /// Returns the evicted session's id.
    pub fn insert(
        &mut self,
        id: SessionId,
        cipher: Cipher,
        dir: String,
        principal: Principal,
        now_ms: u64,
    ) -> Result<Option<SessionId>, NoRoom> {
        // Every expired session goes first, as if the whole table were swept; but the sweep runs only
        // when one may have expired (using a session only moves its expiry later), so that making a
        // session does not cost O(table) every time.
        if now_ms >= self.earliest_expiry_ms {
            self.expire(now_ms);
        }
        let mut evicted = None;
        if !self.sessions.contains_key(&id) {
            let own = self.sessions.values().filter(|s| s.principal == principal).count();
            let victim = if own >= self.limits.max_per_principal.max(1) {
                Some(self.eviction_victim(&principal, now_ms).ok_or(NoRoom)?)
            } else if self.sessions.len() >= self.limits.max_sessions.max(1) {
                let holder = self.largest_holder().ok_or(NoRoom)?;
                let victim = self.eviction_victim(&holder, now_ms);
                // Another principal's burst gives its oldest rather than refuse this one.
                let victim = if holder == principal { victim } else { victim.or_else(|| self.oldest(&holder)) };
                Some(victim.ok_or(NoRoom)?)
            } else {
                None
            };
            if let Some(victim) = victim {
                self.remove_session(&victim);
                evicted = Some(victim);
            }
        }
        self.remove_session(&id);
        let session = Session::new(cipher, dir, principal, now_ms);
        self.earliest_expiry_ms = self.earliest_expiry_ms.min(session.expiry_ms(&self.limits));
        self.sessions.insert(id, session);
        Ok(evicted)
    }

    /// The session `principal` gives up: the least recently used of those not in their grace
    /// period (a never-used one was last used when it was made). `None` when every one is new.
    fn eviction_victim(&self, principal: &Principal, now_ms: u64) -> Option<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.principal == *principal && !s.in_grace(&self.limits, now_ms))
            .min_by_key(|(id, s)| (s.last_used_ms, **id))
            .map(|(id, _)| *id)
    }

    /// `principal`'s oldest session, in grace or not.
    fn oldest(&self, principal: &Principal) -> Option<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.principal == *principal)
            .min_by_key(|(id, s)| (s.created_ms, **id))
            .map(|(id, _)| *id)
    }

    /// The principal holding the most sessions (ties: the smallest name, so the choice does not
    /// depend on the hash map's order).
    fn largest_holder(&self) -> Option<Principal> {
        let mut counts: HashMap<&Principal, usize> = HashMap::new();
        for session in self.sessions.values() {
            *counts.entry(&session.principal).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by(|(a, m), (b, n)| m.cmp(n).then_with(|| b.cmp(a)))
            .map(|(principal, _)| principal.clone())
    }

    /// Ends every session of `principal` (revoked). Returns how many.
    pub fn remove_principal(&mut self, principal: &str) -> usize {
        let ids: Vec<SessionId> =
            self.sessions.iter().filter(|(_, s)| s.principal.name() == principal).map(|(id, _)| *id).collect();
        ids.iter().filter(|id| self.remove_session(id)).count()
    }

    /// Live sessions of `principal`.
    pub fn count_of(&self, principal: &str) -> usize {
        self.sessions.values().filter(|s| s.principal.name() == principal).count()
    }

    /// Replaces a session's key (an encrypted re-init): its nonce memory and request count restart,
    /// since no envelope under the old key can authenticate under the new one.
    /// A session that was dropped meanwhile (expired, evicted, or at its request cap) stays dropped,
    /// and its lifetime is not restarted by re-keying.
    pub fn rekey(&mut self, id: SessionId, cipher: Cipher, now_ms: u64) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.cipher = Arc::new(cipher);
            self.nonces -= session.accepted.len();
            session.accepted = HashSet::new();
            session.requests = 0;
            session.last_used_ms = now_ms;
            let expiry = session.expiry_ms(&self.limits);
            self.earliest_expiry_ms = self.earliest_expiry_ms.min(expiry);
        }
    }

    /// Removes a session (a QUIC connection closed, a client went away).
    pub fn remove(&mut self, id: &SessionId) -> bool {
        self.remove_session(id)
    }

    /// Sets a session's top-level directory.
    pub fn set_dir(&mut self, id: &SessionId, dir: String) {
        if let Some(session) = self.sessions.get_mut(id) {
            session.dir = dir;
        }
    }

    /// A live session's cipher, for `principal` (an expired one is dropped on the way):
    /// `NoSession` if there is none, `Decryption` (as for a wrong key) if another principal's.
    pub fn cipher(&mut self, id: &SessionId, principal: &str, now_ms: u64) -> Result<Arc<Cipher>, AcceptError> {
        if now_ms.saturating_sub(self.last_sweep_ms) >= SWEEP_EVERY_MS {
            self.expire(now_ms);
        }
        let session = self.sessions.get(id).ok_or(AcceptError::NoSession)?;
        if session.expired(&self.limits, now_ms) {
            self.remove_session(id);
            return Err(AcceptError::NoSession);
        }
        if session.principal.name() != principal {
            return Err(AcceptError::Decryption);
        }
        Ok(Arc::clone(&session.cipher))
    }

    /// `principal`'s live sessions other than `except`, most recently used first: the order in
    /// which to try their keys on a request that names no session.
    pub fn by_recent_use(
        &self,
        except: Option<&SessionId>,
        principal: &str,
        now_ms: u64,
    ) -> Vec<(SessionId, Arc<Cipher>)> {
        let mut live: Vec<_> = self
            .sessions
            .iter()
            .filter(|(id, s)| {
                Some(*id) != except && s.principal.name() == principal && !s.expired(&self.limits, now_ms)
            })
            .map(|(id, s)| (s.last_used_ms, *id, Arc::clone(&s.cipher)))
            .collect();
        live.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.0));
        live.into_iter().map(|(_, id, cipher)| (id, cipher)).collect()
    }

    /// Records an authenticated envelope's nonce on its session: refuses a replay, counts the
    /// request, ends the session at `max_requests`, and keeps all sessions' nonces within
    /// `max_nonces` by ending the least recently used others. A refusal changes nothing.
    /// `opened_by` is the cipher that authenticated the envelope: if the session was re-keyed
    /// between the trial and this commit, the envelope was sealed under a key the session no
    /// longer has, and it is refused as if it had arrived after the re-key (nothing is recorded
    /// under the new key's nonce memory, so the old key cannot replay into it).
    /// Returns the session's cipher (to seal the answer) and top-level directory.
    pub fn commit(
        &mut self,
        id: &SessionId,
        opened_by: &Arc<Cipher>,
        nonce: &[u8; NONCE_LEN],
        now_ms: u64,
    ) -> Result<(Arc<Cipher>, String, Principal), AcceptError> {
        let limits = self.limits;
        let session = self.sessions.get_mut(id).ok_or(AcceptError::NoSession)?;
        if session.expired(&limits, now_ms) {
            self.remove_session(id);
            return Err(AcceptError::NoSession);
        }
        if !Arc::ptr_eq(&session.cipher, opened_by) {
            return Err(AcceptError::Decryption);
        }
        let mut head = [0u8; 8];
        head.copy_from_slice(&nonce[..8]);
        if !session.accepted.insert(u64::from_le_bytes(head)) {
            return Err(AcceptError::Replay);
        }
        session.requests += 1;
        session.used = true;
        session.last_used_ms = now_ms;
        let committed = (Arc::clone(&session.cipher), session.dir.clone(), session.principal.clone());
        // Only a clock that went back can make an expiry earlier; keep the bound a bound even then.
        let expiry = session.expiry_ms(&limits);
        let at_cap = session.requests >= limits.max_requests;
        self.earliest_expiry_ms = self.earliest_expiry_ms.min(expiry);
        self.nonces += 1;
        if at_cap {
            self.remove_session(id);
        }
        while self.nonces > limits.max_nonces {
            // From the principal whose sessions remember the most nonces (the one spending the
            // budget), its least recently used other session: one client's flood of calls ends
            // its own sessions, not another's.
            let mut held: HashMap<&Principal, usize> = HashMap::new();
            for (other, s) in &self.sessions {
                if other != id {
                    *held.entry(&s.principal).or_default() += s.accepted.len();
                }
            }
            let heaviest = held
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .max_by(|(a, m), (b, n)| m.cmp(n).then_with(|| b.cmp(a)))
                .map(|(p, _)| p.clone());
            let lru = self
                .sessions
                .iter()
                .filter(|(other, s)| *other != id && !s.accepted.is_empty() && Some(&s.principal) == heaviest.as_ref())
                .min_by_key(|(_, s)| s.last_used_ms)
                .map(|(other, _)| *other);
            match lru {
                Some(lru) => {
                    self.remove_session(&lru);
                }
                None => break,
            }
        }
        Ok(committed)
    }
}

#[cfg(test)]
mod tests;
