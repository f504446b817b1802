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
//!   client flooding inits only ever evicts its own sessions. Within a principal, a never-used
//!   session goes first (the one idle the longest), else the one idle the longest.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::envelope::{Cipher, NONCE_LEN, OpenError};
use crate::principal::Principal;

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

/// Limits of the session table. All times are milliseconds on the host's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Most live sessions; a new one evicts the one idle the longest.
    pub max_sessions: usize,
    /// A session unused this long is dropped.
    pub idle_ms: u64,
    /// A session older than this is dropped, however busy.
    pub lifetime_ms: u64,
    /// Most requests one session accepts (its anti-replay memory bound); then it ends.
    pub max_requests: u32,
    /// Most nonces all sessions together remember; past it, the least recently used other
    /// sessions of the principal remembering the most end. Never below `max_requests` (it is raised to it).
    pub max_nonces: usize,
    /// Most live sessions of one principal; its next one evicts its own.
    pub max_per_principal: usize,
    /// Largest body whose session is looked up by trying keys; a larger request must name its
    /// session (header or connection), so a stranger's big body costs one look-up, not one per session.
    pub max_unnamed_bytes: usize,
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
        }
    }
}

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

/// What an accepted envelope gives the dispatcher.
pub struct Accepted {
    /// The session it belongs to.
    pub id: SessionId,
    /// The session's cipher, to seal the answer.
    pub cipher: Arc<Cipher>,
    /// The decrypted inner request (wiped on drop).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The session's top-level directory.
    pub dir: String,
    /// The principal the session belongs to (the caller).
    pub principal: Principal,
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accepted").field("id", &self.id).field("dir", &self.dir).finish_non_exhaustive()
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
    pub fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    /// Nonces remembered by all sessions together.
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
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Whether a session is live.
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
    /// it evicts one of its own; in a full table, one of the principal holding the most.
    /// Returns the evicted session's id.
    pub fn insert(
        &mut self,
        id: SessionId,
        cipher: Cipher,
        dir: String,
        principal: Principal,
        now_ms: u64,
    ) -> Option<SessionId> {
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
                self.eviction_victim(&principal)
            } else if self.sessions.len() >= self.limits.max_sessions.max(1) {
                self.largest_holder().and_then(|holder| self.eviction_victim(&holder))
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
        evicted
    }

    /// The session `principal` gives up: a never-used one if any (idle the longest), else the one
    /// idle the longest. A flood of inits that are never used evicts its own kind first.
    fn eviction_victim(&self, principal: &Principal) -> Option<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.principal == *principal)
            .min_by_key(|(id, s)| (s.used, s.last_used_ms, **id))
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

    /// Authenticates, decrypts and records an envelope in one step, under the caller's hold of the
    /// table: by `hint`, or by trying every live session's key. The server uses
    /// [`SessionTable::cipher`], [`SessionTable::by_recent_use`] and [`SessionTable::commit`] so that
    /// no key is tried while the table is locked; this is the same logic for single-threaded hosts
    /// and tests. A refused envelope changes nothing.
    pub fn accept(
        &mut self,
        hint: Option<&SessionId>,
        principal: &str,
        nonce: &[u8; NONCE_LEN],
        ciphertext: Vec<u8>,
        now_ms: u64,
    ) -> Result<Accepted, AcceptError> {
        let mut buffer = Zeroizing::new(ciphertext);
        let (id, opened_by) = match hint {
            Some(id) => {
                let cipher = self.cipher(id, principal, now_ms)?;
                open_in_place(&cipher, nonce, &mut buffer)?;
                (*id, cipher)
            }
            None => {
                if buffer.len() > self.limits.max_unnamed_bytes {
                    return Err(AcceptError::MustName);
                }
                let candidates = self.by_recent_use(None, principal, now_ms);
                let found = try_keys(&candidates, nonce, &buffer, true)?;
                buffer = found.plaintext;
                (found.id, found.cipher)
            }
        };
        let (cipher, dir, principal) = self.commit(&id, &opened_by, nonce, now_ms)?;
        Ok(Accepted { id, cipher, plaintext: buffer, dir, principal })
    }
}

/// Decrypts under one session's key.
pub fn open_in_place(cipher: &Cipher, nonce: &[u8; NONCE_LEN], buffer: &mut Vec<u8>) -> Result<(), AcceptError> {
    cipher.open_in_place(nonce, buffer).map_err(|e| match e {
        OpenError::Authentication => AcceptError::Decryption,
        other => AcceptError::Format(other),
    })
}

/// Tries `candidates`' keys in order on a request that named no session. With `screen`, each key
/// first decrypts one block to see whether the plaintext can start a JSON-RPC request
/// ([`Cipher::may_start_json`]) and only then runs the whole AES-GCM check, so a stranger's
/// garbage costs about one block per session, not one pass over the body per session (the
/// connection's own last session is tried without the screen). −32001 when nothing matches (the
/// client's session ended, or never was), as V3 clients expect.
pub fn try_keys(
    candidates: &[(SessionId, Arc<Cipher>)],
    nonce: &[u8; NONCE_LEN],
    ciphertext: &[u8],
    screen: bool,
) -> Result<Found, AcceptError> {
    if candidates.is_empty() {
        return Err(AcceptError::NoSession);
    }
    if ciphertext.len() < crate::envelope::TAG_LEN {
        return Err(AcceptError::Format(OpenError::Truncated));
    }
    candidates
        .iter()
        .filter(|(_, cipher)| !screen || cipher.may_start_json(nonce, ciphertext))
        .find_map(|(id, cipher)| {
            let plaintext = cipher.open_bytes(nonce, ciphertext).ok()?;
            Some(Found { id: *id, cipher: Arc::clone(cipher), plaintext })
        })
        .ok_or(AcceptError::NoSession)
}

/// The session whose key opened a request that named none, the key that did, and the plaintext.
pub struct Found {
    /// The session.
    pub id: SessionId,
    /// The key tried (passed on to [`SessionTable::commit`]).
    pub cipher: Arc<Cipher>,
    /// The decrypted request.
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Found {
    /// The session only: the key and the plaintext are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Found").field("id", &self.id).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SharedKey;

    fn cipher(byte: u8) -> Cipher {
        Cipher::new(&SharedKey::from_bytes([byte; 32]))
    }

    fn sealed(byte: u8, nonce: [u8; 12]) -> Vec<u8> {
        let body = cipher(byte).seal(&nonce, b"{}");
        crate::envelope::decode_body(&body).expect("base64")
    }

    fn limits() -> SessionLimits {
        SessionLimits { max_sessions: 2, idle_ms: 100, lifetime_ms: 1000, max_requests: 3, ..SessionLimits::default() }
    }

    #[test]
    fn session_ids_print_and_parse_as_hex() {
        let id = SessionId::from_bytes([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(format!("{id:?}"), format!("SessionId({})", "ab".repeat(16)));
        assert_eq!(SessionId::parse(&format!(" {} ", "AB".repeat(16))), Some(id));
        assert_eq!(SessionId::parse(&"ab".repeat(15)), None);
        assert_eq!(SessionId::parse(&"zz".repeat(16)), None);
    }

    #[test]
    fn an_accepted_envelope_prints_its_session_not_its_plaintext() {
        let mut table = SessionTable::new(limits());
        let id = SessionId::from_bytes([1; 16]);
        table.insert(id, cipher(1), "top".into(), Principal::local(), 0);
        let accepted = table.accept(Some(&id), "local", &[5; 12], sealed(1, [5; 12]), 1).expect("accepted");
        assert_eq!(&**accepted.plaintext, b"{}");
        assert_eq!(format!("{accepted:?}"), format!("Accepted {{ id: {id:?}, dir: \"top\", .. }}"));
    }

    #[test]
    fn a_table_prints_its_limits_and_size_only() {
        let mut table = SessionTable::new(limits());
        table.insert(SessionId::from_bytes([1; 16]), cipher(1), String::new(), Principal::local(), 0);
        assert_eq!(format!("{table:?}"), format!("SessionTable {{ limits: {:?}, live: 1 }}", table.limits()));
    }

    #[test]
    fn removing_a_session_or_a_principal_ends_its_sessions_and_frees_their_nonces() {
        let mut table = SessionTable::new(limits_big());
        let ids: Vec<_> = (1..=3).map(|i| SessionId::from_bytes([i; 16])).collect();
        table.insert(ids[0], cipher(1), String::new(), Principal::new("a"), 0);
        table.insert(ids[1], cipher(2), String::new(), Principal::new("b"), 0);
        table.insert(ids[2], cipher(3), String::new(), Principal::new("b"), 0);
        assert!(table.accept(Some(&ids[0]), "a", &[1; 12], sealed(1, [1; 12]), 1).is_ok());
        assert!(table.accept(Some(&ids[1]), "b", &[1; 12], sealed(2, [1; 12]), 1).is_ok());
        assert_eq!((table.count_of("a"), table.count_of("b"), table.remembered_nonces()), (1, 2, 2));
        assert!(!table.is_empty());
        assert!(table.remove(&ids[0]));
        assert!(!table.remove(&ids[0]), "already gone");
        assert!(!table.contains(&ids[0]));
        assert_eq!(table.remembered_nonces(), 1);
        assert_eq!(table.remove_principal("b"), 2);
        assert_eq!(table.remove_principal("b"), 0);
        assert!(table.is_empty());
        assert_eq!(table.remembered_nonces(), 0);
    }

    #[test]
    fn the_earliest_expiry_is_exact_after_a_sweep() {
        let limits = SessionLimits { idle_ms: 100, lifetime_ms: 150, ..limits_big() };
        let mut table = SessionTable::new(limits);
        assert_eq!(table.next_expiry(), None);
        table.insert(SessionId::from_bytes([1; 16]), cipher(1), String::new(), Principal::local(), 10);
        table.insert(SessionId::from_bytes([2; 16]), cipher(2), String::new(), Principal::local(), 20);
        // Used at 90, session 1 would idle out at 190 but its lifetime ends at 160.
        assert!(table.accept(Some(&SessionId::from_bytes([1; 16])), "local", &[1; 12], sealed(1, [1; 12]), 90).is_ok());
        table.expire(95);
        assert_eq!((table.earliest_expiry_ms, table.next_expiry()), (120, Some(120)));
        table.expire(120);
        assert_eq!((table.earliest_expiry_ms, table.next_expiry()), (160, Some(160)));
        assert_eq!(table.remembered_nonces(), 1);
        table.expire(160);
        assert_eq!((table.earliest_expiry_ms, table.next_expiry()), (u64::MAX, None));
        assert_eq!(table.remembered_nonces(), 0, "an expired session's nonces are forgotten with it");
    }

    #[test]
    fn a_full_table_evicts_from_the_principal_holding_the_most() {
        let mut table = SessionTable::new(SessionLimits { max_sessions: 3, ..limits_big() });
        let ids: Vec<_> = (1..=4).map(|i| SessionId::from_bytes([i; 16])).collect();
        table.insert(ids[0], cipher(1), String::new(), Principal::new("a"), 0);
        table.insert(ids[1], cipher(2), String::new(), Principal::new("b"), 1);
        table.insert(ids[2], cipher(3), String::new(), Principal::new("b"), 2);
        // "a" has the session idle the longest and the smaller name, but "b" holds more.
        assert_eq!(table.insert(ids[3], cipher(4), String::new(), Principal::new("c"), 3), Some(ids[1]));
        assert_eq!((table.count_of("a"), table.count_of("b"), table.count_of("c")), (1, 1, 1));
    }

    fn numbered(n: u32) -> [u8; 12] {
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        bytes
    }

    #[test]
    fn re_keying_forgets_the_old_keys_nonces() {
        let mut table = SessionTable::new(limits_big());
        let id = SessionId::from_bytes([1; 16]);
        table.insert(id, cipher(1), String::new(), Principal::local(), 0);
        for n in 0..3 {
            assert!(table.accept(Some(&id), "local", &numbered(n), sealed(1, numbered(n)), 1).is_ok());
        }
        assert_eq!(table.remembered_nonces(), 3);
        table.rekey(id, cipher(2), 2);
        assert_eq!(table.remembered_nonces(), 0);
        assert!(table.accept(Some(&id), "local", &numbered(0), sealed(2, numbered(0)), 3).is_ok());
        assert_eq!(table.remembered_nonces(), 1);
    }

    #[test]
    fn a_named_call_sweeps_the_table_once_a_second() {
        let mut table = SessionTable::new(SessionLimits { idle_ms: 500, lifetime_ms: 100_000, ..limits_big() });
        let (a, b) = (SessionId::from_bytes([1; 16]), SessionId::from_bytes([2; 16]));
        table.insert(a, cipher(1), String::new(), Principal::local(), 0);
        table.insert(b, cipher(2), String::new(), Principal::local(), 0);
        // Keep b alive; a idles out at 500 but stays in the table until a sweep.
        assert!(table.accept(Some(&b), "local", &[1; 12], sealed(2, [1; 12]), 400).is_ok());
        assert!(table.accept(Some(&b), "local", &[2; 12], sealed(2, [2; 12]), 800).is_ok());
        assert!(table.contains(&a), "no sweep within a second of the last");
        assert!(table.cipher(&b, "local", 1000).is_ok());
        assert!(!table.contains(&a), "the sweep a second later drops it");
    }

    #[test]
    fn the_nonce_budget_does_not_count_the_committing_session() {
        let limits = SessionLimits { max_requests: 50, max_nonces: 60, ..limits_big() };
        let mut table = SessionTable::new(limits);
        let ids: Vec<_> = (1..=3).map(|i| SessionId::from_bytes([i; 16])).collect();
        table.insert(ids[0], cipher(1), String::new(), Principal::new("owner"), 0);
        table.insert(ids[1], cipher(2), String::new(), Principal::new("reader"), 0);
        table.insert(ids[2], cipher(3), String::new(), Principal::new("reader"), 0);
        for n in 0..30 {
            assert!(table.accept(Some(&ids[0]), "owner", &numbered(n), sealed(1, numbered(n)), 1).is_ok());
        }
        for n in 0..20 {
            assert!(table.accept(Some(&ids[1]), "reader", &numbered(n), sealed(2, numbered(n)), 2).is_ok());
        }
        for n in 0..11 {
            assert!(table.accept(Some(&ids[2]), "reader", &numbered(n), sealed(3, numbered(n)), 3).is_ok());
        }
        // Besides the committing session, the owner's 30 outweigh the reader's 20.
        assert!(!table.contains(&ids[0]) && table.contains(&ids[1]) && table.contains(&ids[2]));
        assert_eq!(table.remembered_nonces(), 31);
    }

    #[test]
    fn key_trials_take_a_body_of_exactly_the_limit_and_refuse_one_shorter_than_a_tag() {
        let (mut table, id) = one_session_with_unnamed_limit(64);
        let body = crate::envelope::decode_body(&cipher(1).seal(&[2; 12], &[b' '; 48])).expect("base64");
        assert_eq!(body.len(), 64);
        assert_eq!(table.accept(None, "local", &[2; 12], body, 1).map(|a| a.id), Ok(id));
        let candidates = table.by_recent_use(None, "local", 1);
        let empty = crate::envelope::decode_body(&cipher(1).seal(&[3; 12], b"")).expect("base64");
        let found = try_keys(&candidates, &[3; 12], &empty, true).expect("a bare tag is an empty message");
        assert_eq!((found.id, found.plaintext.len()), (id, 0));
        assert_eq!(
            try_keys(&candidates, &[3; 12], &empty[..15], true).map(|f| f.id),
            Err(AcceptError::Format(OpenError::Truncated))
        );
    }

    #[test]
    fn without_the_screen_any_plaintext_is_found_and_printed_by_its_session_only() {
        let id = SessionId::from_bytes([1; 16]);
        let candidates = vec![(id, Arc::new(cipher(1)))];
        let body = crate::envelope::decode_body(&cipher(1).seal(&[4; 12], b"not json")).expect("base64");
        assert_eq!(try_keys(&candidates, &[4; 12], &body, true).map(|f| f.id), Err(AcceptError::NoSession));
        let found = try_keys(&candidates, &[4; 12], &body, false).expect("found unscreened");
        assert_eq!(&**found.plaintext, b"not json");
        assert_eq!(format!("{found:?}"), format!("Found {{ id: {id:?}, .. }}"));
    }

    #[test]
    fn finds_by_id_or_by_key_and_refuses_replay() {
        let mut table = SessionTable::new(limits());
        let a = SessionId::from_bytes([1; 16]);
        let b = SessionId::from_bytes([2; 16]);
        table.insert(a, cipher(1), String::new(), Principal::local(), 0);
        table.insert(b, cipher(2), String::new(), Principal::local(), 0);
        let msg = sealed(2, [5; 12]);
        assert_eq!(
            table.accept(Some(&a), "local", &[5; 12], msg.clone(), 1).map(|x| x.id),
            Err(AcceptError::Decryption)
        );
        assert_eq!(table.accept(None, "local", &[5; 12], msg.clone(), 1).map(|x| x.id), Ok(b));
        assert_eq!(table.accept(None, "local", &[5; 12], msg.clone(), 2).map(|x| x.id), Err(AcceptError::Replay));
        assert_eq!(table.accept(Some(&b), "local", &[5; 12], msg.clone(), 2).map(|x| x.id), Err(AcceptError::Replay));
    }

    #[test]
    fn idle_sessions_expire_and_full_table_evicts_longest_idle() {
        let mut table = SessionTable::new(limits());
        let ids: Vec<_> = (1..=3).map(|i| SessionId::from_bytes([i; 16])).collect();
        table.insert(ids[0], cipher(1), String::new(), Principal::local(), 0);
        table.insert(ids[1], cipher(2), String::new(), Principal::local(), 10);
        assert_eq!(table.insert(ids[2], cipher(3), String::new(), Principal::local(), 20), Some(ids[0]));
        assert!(!table.contains(&ids[0]));
        table.expire(115);
        assert!(!table.contains(&ids[1]) && table.contains(&ids[2]));
        table.expire(120);
        assert!(table.is_empty());
        let msg = sealed(3, [1; 12]);
        assert_eq!(table.accept(None, "local", &[1; 12], msg, 121).map(|x| x.id), Err(AcceptError::NoSession));
    }

    #[test]
    fn insert_drops_every_expired_session_without_sweeping_each_time() {
        let mut table = SessionTable::new(SessionLimits { max_sessions: 100, ..limits() });
        let ids: Vec<_> = (1..=5).map(|i| SessionId::from_bytes([i; 16])).collect();
        table.insert(ids[0], cipher(1), String::new(), Principal::local(), 0);
        table.insert(ids[1], cipher(2), String::new(), Principal::local(), 50);
        // ids[0] is used at 60, so it now expires at 160, after ids[1] (150).
        assert!(table.accept(Some(&ids[0]), "local", &[1; 12], sealed(1, [1; 12]), 60).is_ok());
        table.insert(ids[2], cipher(3), String::new(), Principal::local(), 149);
        assert!(table.contains(&ids[0]) && table.contains(&ids[1]));
        table.insert(ids[3], cipher(4), String::new(), Principal::local(), 150);
        assert!(table.contains(&ids[0]) && !table.contains(&ids[1]));
        // A clock that goes back and comes forward again still finds what expired.
        assert!(table.accept(Some(&ids[2]), "local", &[2; 12], sealed(3, [2; 12]), 10).is_ok());
        table.insert(ids[4], cipher(5), String::new(), Principal::local(), 110);
        assert!(!table.contains(&ids[2]) && table.contains(&ids[0]) && table.contains(&ids[3]));
        // Zero limits expire everything at once.
        let mut table = SessionTable::new(SessionLimits { idle_ms: 0, ..limits() });
        table.insert(ids[0], cipher(1), String::new(), Principal::local(), 5);
        table.insert(ids[1], cipher(2), String::new(), Principal::local(), 0);
        assert!(!table.contains(&ids[0]) && table.len() == 1);
    }

    #[test]
    fn session_is_dropped_after_max_requests() {
        let mut table = SessionTable::new(limits());
        let id = SessionId::from_bytes([1; 16]);
        table.insert(id, cipher(1), String::new(), Principal::local(), 0);
        for n in 0..3u8 {
            let msg = sealed(1, [n; 12]);
            assert!(table.accept(Some(&id), "local", &[n; 12], msg, 1).is_ok());
        }
        assert!(!table.contains(&id));
        let msg = sealed(1, [0; 12]);
        assert_eq!(table.accept(Some(&id), "local", &[0; 12], msg, 1).map(|x| x.id), Err(AcceptError::NoSession));
    }

    fn limits_big() -> SessionLimits {
        SessionLimits { max_sessions: 100, idle_ms: 1000, lifetime_ms: 10_000, ..SessionLimits::default() }
    }

    /// A table whose unnamed bodies may be `max_unnamed_bytes` long, with one session (key 1).
    fn one_session_with_unnamed_limit(max_unnamed_bytes: usize) -> (SessionTable, SessionId) {
        let mut table = SessionTable::new(SessionLimits { max_unnamed_bytes, ..limits_big() });
        let id = SessionId::from_bytes([1; 16]);
        table.insert(id, cipher(1), String::new(), Principal::local(), 0);
        (table, id)
    }

    #[test]
    fn unnamed_requests_try_recent_use_first_and_garbage_matches_nothing() {
        let mut table = SessionTable::new(limits_big());
        for i in 1..=20u8 {
            table.insert(SessionId::from_bytes([i; 16]), cipher(i), String::new(), Principal::local(), u64::from(i));
        }
        let order: Vec<_> = table.by_recent_use(None, "local", 30).into_iter().map(|(id, _)| id).collect();
        assert_eq!(order.first(), Some(&SessionId::from_bytes([20; 16])));
        assert_eq!(order.last(), Some(&SessionId::from_bytes([1; 16])));
        let except = SessionId::from_bytes([20; 16]);
        assert!(!table.by_recent_use(Some(&except), "local", 30).iter().any(|(id, _)| *id == except));
        // Garbage authenticates under no key: -32001 for a client that names no session.
        let garbage = vec![0x5a; 4096];
        let candidates = table.by_recent_use(None, "local", 30);
        assert!(matches!(try_keys(&candidates, &[1; 12], &garbage, true), Err(AcceptError::NoSession)));
        // The one-block check turns away nearly every key before the AEAD pass.
        let passed = candidates.iter().filter(|(_, c)| c.may_start_json(&[1; 12], &garbage)).count();
        assert!(passed <= 1, "{passed} of 20 keys would be tried in full");
        let found = try_keys(&candidates, &[7; 12], &sealed(3, [7; 12]), true).expect("session 3 matches");
        assert_eq!((found.id, found.plaintext.as_slice()), (SessionId::from_bytes([3; 16]), &b"{}"[..]));
    }

    #[test]
    fn a_large_unnamed_body_is_never_tried() {
        let (mut table, id) = one_session_with_unnamed_limit(64);
        let body = crate::envelope::decode_body(&cipher(1).seal(&[2; 12], &[b' '; 100])).expect("base64");
        assert_eq!(table.accept(None, "local", &[2; 12], body.clone(), 1).map(|a| a.id), Err(AcceptError::MustName));
        assert_eq!(table.accept(Some(&id), "local", &[2; 12], body, 1).map(|a| a.id), Ok(id));
    }

    #[test]
    fn an_envelope_opened_under_a_key_replaced_before_commit_is_refused_and_records_nothing() {
        // The server tries keys with the table unlocked; a re-key may land between the trial and
        // the commit. The old key's envelope must not be recorded against (or answered under) the
        // new key.
        let mut table = SessionTable::new(limits_big());
        let id = SessionId::from_bytes([1; 16]);
        table.insert(id, cipher(1), String::new(), Principal::local(), 0);
        let old = table.cipher(&id, "local", 1).expect("live");
        let mut body = sealed(1, [7; 12]);
        open_in_place(&old, &[7; 12], &mut body).expect("opens under the old key");
        table.rekey(id, cipher(2), 2);
        assert_eq!(table.commit(&id, &old, &[7; 12], 3).map(|c| c.1), Err(AcceptError::Decryption));
        assert_eq!(table.remembered_nonces(), 0);
        // The same nonce under the new key is still fresh, and is answered under the new key.
        let new = table.cipher(&id, "local", 4).expect("live");
        let (answer_key, _, _) = table.commit(&id, &new, &[7; 12], 4).expect("accepted");
        assert!(Arc::ptr_eq(&answer_key, &new));
        assert_eq!(table.remembered_nonces(), 1);
    }

    #[test]
    fn a_full_table_evicts_never_used_sessions_first() {
        let mut table = SessionTable::new(SessionLimits { max_sessions: 3, ..limits_big() });
        let ids: Vec<_> = (1..=5).map(|i| SessionId::from_bytes([i; 16])).collect();
        table.insert(ids[0], cipher(1), String::new(), Principal::local(), 0);
        assert!(table.accept(Some(&ids[0]), "local", &[1; 12], sealed(1, [1; 12]), 1).is_ok());
        table.insert(ids[1], cipher(2), String::new(), Principal::local(), 2);
        table.insert(ids[2], cipher(3), String::new(), Principal::local(), 3);
        // ids[0] is idle the longest but was used: the never-used ids[1] goes first, then ids[2].
        assert_eq!(table.insert(ids[3], cipher(4), String::new(), Principal::local(), 4), Some(ids[1]));
        assert_eq!(table.insert(ids[4], cipher(5), String::new(), Principal::local(), 5), Some(ids[2]));
        assert!(table.contains(&ids[0]));
    }

    #[test]
    fn anti_replay_is_exact_and_bounded_in_total() {
        let limits = SessionLimits { max_requests: 50, max_nonces: 60, ..limits_big() };
        let mut table = SessionTable::new(limits);
        let (a, b) = (SessionId::from_bytes([1; 16]), SessionId::from_bytes([2; 16]));
        table.insert(a, cipher(1), String::new(), Principal::local(), 0);
        table.insert(b, cipher(2), String::new(), Principal::local(), 0);
        let nonce = |n: u32| {
            let mut bytes = [0u8; 12];
            bytes[..4].copy_from_slice(&n.to_le_bytes());
            bytes
        };
        for n in 0..40 {
            assert!(table.accept(Some(&a), "local", &nonce(n), sealed(1, nonce(n)), 1).is_ok());
        }
        // Every accepted nonce is refused again, and a refusal records nothing.
        for n in 0..40 {
            assert_eq!(
                table.accept(Some(&a), "local", &nonce(n), sealed(1, nonce(n)), 2).map(|x| x.id),
                Err(AcceptError::Replay)
            );
        }
        assert_eq!(table.remembered_nonces(), 40);
        // b's 21st nonce passes the total of 60: a, the least recently used other, ends.
        for n in 0..20 {
            assert!(table.accept(Some(&b), "local", &nonce(n), sealed(2, nonce(n)), 3).is_ok());
        }
        assert!(table.contains(&a));
        assert!(table.accept(Some(&b), "local", &nonce(20), sealed(2, nonce(20)), 4).is_ok());
        assert!(!table.contains(&a) && table.contains(&b));
        assert_eq!(table.remembered_nonces(), 21);
        // max_nonces is never below max_requests.
        let table = SessionTable::new(SessionLimits { max_requests: 100, max_nonces: 10, ..limits_big() });
        assert_eq!(table.limits().max_nonces, 100);
    }

    #[test]
    fn the_nonce_budget_ends_the_heaviest_principals_sessions_first() {
        let limits = SessionLimits { max_requests: 50, max_nonces: 60, ..limits_big() };
        let mut table = SessionTable::new(limits);
        let owner = SessionId::from_bytes([1; 16]);
        let (flood_a, flood_b) = (SessionId::from_bytes([2; 16]), SessionId::from_bytes([3; 16]));
        table.insert(owner, cipher(1), String::new(), Principal::new("owner"), 0);
        table.insert(flood_a, cipher(2), String::new(), Principal::new("reader"), 0);
        table.insert(flood_b, cipher(3), String::new(), Principal::new("reader"), 0);
        let nonce = |n: u32| {
            let mut bytes = [0u8; 12];
            bytes[..4].copy_from_slice(&n.to_le_bytes());
            bytes
        };
        // The owner's one call is the least recent of all; the reader spends the budget.
        assert!(table.accept(Some(&owner), "owner", &nonce(0), sealed(1, nonce(0)), 1).is_ok());
        for n in 0..40 {
            assert!(table.accept(Some(&flood_a), "reader", &nonce(n), sealed(2, nonce(n)), 2).is_ok());
        }
        for n in 0..25 {
            assert!(table.accept(Some(&flood_b), "reader", &nonce(n), sealed(3, nonce(n)), 3).is_ok());
        }
        assert!(table.contains(&owner), "the owner's session outlives the reader's flood");
        assert!(!table.contains(&flood_a), "the reader's own older session ended");
    }
}
