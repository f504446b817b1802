//! Sessions: one per client, each with its own V3 key, in a bounded table.
//!
//! * A session is made by a plaintext `init_secure_api` and re-keyed by an encrypted one.
//! * It is found by the id the transport passes in (the `Keyward-Session` header, a QUIC connection),
//!   or, for V3 clients that send none, by trying the live sessions' keys: AES-GCM authentication makes
//!   a wrong match practically impossible, and the table bound keeps the cost bounded.
//! * Anti-replay: a session remembers every request nonce it accepted. To keep memory bounded it
//!   accepts at most `max_requests` requests; then it is dropped and the client must call
//!   `init_secure_api` again (a replay of any of its envelopes then finds no session at all).
//! * Expiry: a session idle for `idle_ms`, or older than `lifetime_ms`, is dropped. When the table is
//!   full, a new session evicts the one idle the longest.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::envelope::{Cipher, NONCE_LEN, OpenError};

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
    /// Most requests one session accepts (the anti-replay memory bound).
    pub max_requests: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self { max_sessions: 1024, idle_ms: 30 * 60 * 1000, lifetime_ms: 24 * 3600 * 1000, max_requests: 8192 }
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
}

struct Session {
    cipher: Arc<Cipher>,
    created_ms: u64,
    last_used_ms: u64,
    /// Accepted nonces, as their first 8 bytes (client nonces are random: two accepted nonces of
    /// a session sharing 8 bytes would at worst refuse a request as a replay, never accept one).
    accepted: HashSet<u64>,
    requests: u32,
    dir: String,
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
        Self { limits, sessions: HashMap::new(), last_sweep_ms: 0, earliest_expiry_ms: u64::MAX }
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
        self.sessions.retain(|_, s| {
            let live = !s.expired(&limits, now_ms);
            if live {
                earliest = earliest.min(s.expiry_ms(&limits));
            }
            live
        });
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

    /// Adds a session (or replaces the one with this id), evicting the longest idle if full.
    /// Returns the evicted session's id.
    pub fn insert(&mut self, id: SessionId, cipher: Cipher, dir: String, now_ms: u64) -> Option<SessionId> {
        // Every expired session goes first, as if the whole table were swept; but the sweep runs only
        // when one may have expired (using a session only moves its expiry later), so that making a
        // session does not cost O(table) every time.
        if now_ms >= self.earliest_expiry_ms {
            self.expire(now_ms);
        }
        let mut evicted = None;
        if !self.sessions.contains_key(&id)
            && self.sessions.len() >= self.limits.max_sessions.max(1)
            && let Some(oldest) = self.sessions.iter().min_by_key(|(_, s)| s.last_used_ms).map(|(id, _)| *id)
        {
            self.sessions.remove(&oldest);
            evicted = Some(oldest);
        }
        let session = Session {
            cipher: Arc::new(cipher),
            created_ms: now_ms,
            last_used_ms: now_ms,
            accepted: HashSet::new(),
            requests: 0,
            dir,
        };
        self.earliest_expiry_ms = self.earliest_expiry_ms.min(session.expiry_ms(&self.limits));
        self.sessions.insert(id, session);
        evicted
    }

    /// Replaces a session's key (an encrypted re-init): its nonce memory and request count restart,
    /// since no envelope under the old key can authenticate under the new one.
    /// A session that was dropped meanwhile (expired, evicted, or at its request cap) stays dropped,
    /// and its lifetime is not restarted by re-keying.
    pub fn rekey(&mut self, id: SessionId, cipher: Cipher, now_ms: u64) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.cipher = Arc::new(cipher);
            session.accepted.clear();
            session.requests = 0;
            session.last_used_ms = now_ms;
            let expiry = session.expiry_ms(&self.limits);
            self.earliest_expiry_ms = self.earliest_expiry_ms.min(expiry);
        }
    }

    /// Removes a session (a QUIC connection closed, a client went away).
    pub fn remove(&mut self, id: &SessionId) -> bool {
        self.sessions.remove(id).is_some()
    }

    /// Sets a session's top-level directory.
    pub fn set_dir(&mut self, id: &SessionId, dir: String) {
        if let Some(session) = self.sessions.get_mut(id) {
            session.dir = dir;
        }
    }

    /// Authenticates and decrypts an envelope: finds the session (by `hint`, or by trying keys),
    /// refuses replays, and only then records the nonce. A refused envelope changes nothing.
    pub fn accept(
        &mut self,
        hint: Option<&SessionId>,
        nonce: &[u8; NONCE_LEN],
        ciphertext: Vec<u8>,
        now_ms: u64,
    ) -> Result<Accepted, AcceptError> {
        if now_ms.saturating_sub(self.last_sweep_ms) >= SWEEP_EVERY_MS {
            self.expire(now_ms);
        }
        let limits = self.limits;
        let mut buffer = Zeroizing::new(ciphertext);
        let id = match hint {
            Some(id) => {
                let session = self.sessions.get(id).ok_or(AcceptError::NoSession)?;
                if session.expired(&limits, now_ms) {
                    self.sessions.remove(id);
                    return Err(AcceptError::NoSession);
                }
                session.cipher.open_in_place(nonce, &mut buffer).map_err(|e| match e {
                    OpenError::Authentication => AcceptError::Decryption,
                    other => AcceptError::Format(other),
                })?;
                *id
            }
            None => {
                if self.sessions.values().all(|s| s.expired(&limits, now_ms)) {
                    return Err(AcceptError::NoSession);
                }
                if buffer.len() < crate::envelope::TAG_LEN {
                    return Err(AcceptError::Format(OpenError::Truncated));
                }
                let (id, plaintext) = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| !s.expired(&limits, now_ms))
                    .find_map(|(id, s)| s.cipher.open_bytes(nonce, &buffer).ok().map(|p| (*id, p)))
                    .ok_or(AcceptError::Decryption)?;
                buffer = plaintext;
                id
            }
        };
        let Some(session) = self.sessions.get_mut(&id) else {
            return Err(AcceptError::NoSession);
        };
        let mut head = [0u8; 8];
        head.copy_from_slice(&nonce[..8]);
        if !session.accepted.insert(u64::from_le_bytes(head)) {
            return Err(AcceptError::Replay);
        }
        session.requests += 1;
        session.last_used_ms = now_ms;
        // Only a clock that went back can make an expiry earlier; keep the bound a bound even then.
        let expiry = session.expiry_ms(&limits);
        let accepted =
            Accepted { id, cipher: Arc::clone(&session.cipher), plaintext: buffer, dir: session.dir.clone() };
        self.earliest_expiry_ms = self.earliest_expiry_ms.min(expiry);
        if session.requests >= limits.max_requests {
            self.sessions.remove(&id);
        }
        Ok(accepted)
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
        SessionLimits { max_sessions: 2, idle_ms: 100, lifetime_ms: 1000, max_requests: 3 }
    }

    #[test]
    fn finds_by_id_or_by_key_and_refuses_replay() {
        let mut table = SessionTable::new(limits());
        let a = SessionId::from_bytes([1; 16]);
        let b = SessionId::from_bytes([2; 16]);
        table.insert(a, cipher(1), String::new(), 0);
        table.insert(b, cipher(2), String::new(), 0);
        let msg = sealed(2, [5; 12]);
        assert_eq!(table.accept(Some(&a), &[5; 12], msg.clone(), 1).map(|x| x.id), Err(AcceptError::Decryption));
        assert_eq!(table.accept(None, &[5; 12], msg.clone(), 1).map(|x| x.id), Ok(b));
        assert_eq!(table.accept(None, &[5; 12], msg.clone(), 2).map(|x| x.id), Err(AcceptError::Replay));
        assert_eq!(table.accept(Some(&b), &[5; 12], msg.clone(), 2).map(|x| x.id), Err(AcceptError::Replay));
    }

    #[test]
    fn idle_sessions_expire_and_full_table_evicts_longest_idle() {
        let mut table = SessionTable::new(limits());
        let ids: Vec<_> = (1..=3).map(|i| SessionId::from_bytes([i; 16])).collect();
        table.insert(ids[0], cipher(1), String::new(), 0);
        table.insert(ids[1], cipher(2), String::new(), 10);
        assert_eq!(table.insert(ids[2], cipher(3), String::new(), 20), Some(ids[0]));
        assert!(!table.contains(&ids[0]));
        table.expire(115);
        assert!(!table.contains(&ids[1]) && table.contains(&ids[2]));
        table.expire(120);
        assert!(table.is_empty());
        let msg = sealed(3, [1; 12]);
        assert_eq!(table.accept(None, &[1; 12], msg, 121).map(|x| x.id), Err(AcceptError::NoSession));
    }

    #[test]
    fn insert_drops_every_expired_session_without_sweeping_each_time() {
        let mut table = SessionTable::new(SessionLimits { max_sessions: 100, ..limits() });
        let ids: Vec<_> = (1..=5).map(|i| SessionId::from_bytes([i; 16])).collect();
        table.insert(ids[0], cipher(1), String::new(), 0);
        table.insert(ids[1], cipher(2), String::new(), 50);
        // ids[0] is used at 60, so it now expires at 160, after ids[1] (150).
        assert!(table.accept(Some(&ids[0]), &[1; 12], sealed(1, [1; 12]), 60).is_ok());
        table.insert(ids[2], cipher(3), String::new(), 149);
        assert!(table.contains(&ids[0]) && table.contains(&ids[1]));
        table.insert(ids[3], cipher(4), String::new(), 150);
        assert!(table.contains(&ids[0]) && !table.contains(&ids[1]));
        // A clock that goes back and comes forward again still finds what expired.
        assert!(table.accept(Some(&ids[2]), &[2; 12], sealed(3, [2; 12]), 10).is_ok());
        table.insert(ids[4], cipher(5), String::new(), 110);
        assert!(!table.contains(&ids[2]) && table.contains(&ids[0]) && table.contains(&ids[3]));
        // Zero limits expire everything at once.
        let mut table = SessionTable::new(SessionLimits { idle_ms: 0, ..limits() });
        table.insert(ids[0], cipher(1), String::new(), 5);
        table.insert(ids[1], cipher(2), String::new(), 0);
        assert!(!table.contains(&ids[0]) && table.len() == 1);
    }

    #[test]
    fn session_is_dropped_after_max_requests() {
        let mut table = SessionTable::new(limits());
        let id = SessionId::from_bytes([1; 16]);
        table.insert(id, cipher(1), String::new(), 0);
        for n in 0..3u8 {
            let msg = sealed(1, [n; 12]);
            assert!(table.accept(Some(&id), &[n; 12], msg, 1).is_ok());
        }
        assert!(!table.contains(&id));
        let msg = sealed(1, [0; 12]);
        assert_eq!(table.accept(Some(&id), &[0; 12], msg, 1).map(|x| x.id), Err(AcceptError::NoSession));
    }
}
