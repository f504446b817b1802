//! The session table's unit tests; envelopes go through the server's own steps (`cipher`, or
//! `by_recent_use` and `try_keys`, then `commit`).

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::*;
use crate::secret::SharedKey;

/// What an accepted envelope gives the dispatcher.
struct Accepted {
    /// The session it belongs to.
    id: SessionId,
    /// The decrypted inner request (wiped on drop).
    plaintext: Zeroizing<Vec<u8>>,
    /// The session's top-level directory.
    dir: String,
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accepted").field("id", &self.id).field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// The server's accept path in one step, for these tests: the key look-up (`cipher` for a named
/// session, `by_recent_use` and `try_keys` otherwise), then `commit`.
trait AcceptOnce {
    fn accept(
        &mut self,
        hint: Option<&SessionId>,
        principal: &str,
        nonce: &[u8; NONCE_LEN],
        ciphertext: Vec<u8>,
        now_ms: u64,
    ) -> Result<Accepted, AcceptError>;
}

impl AcceptOnce for SessionTable {
    fn accept(
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
        let (_, dir, _) = self.commit(&id, &opened_by, nonce, now_ms)?;
        Ok(Accepted { id, plaintext: buffer, dir })
    }
}

/// `insert` where the test expects room.
trait Put {
    fn put(
        &mut self,
        id: SessionId,
        cipher: Cipher,
        dir: String,
        principal: Principal,
        now_ms: u64,
    ) -> Option<SessionId>;
}

impl Put for SessionTable {
    fn put(
        &mut self,
        id: SessionId,
        cipher: Cipher,
        dir: String,
        principal: Principal,
        now_ms: u64,
    ) -> Option<SessionId> {
        self.insert(id, cipher, dir, principal, now_ms).expect("room for the session")
    }
}

fn cipher(byte: u8) -> Cipher {
    Cipher::new(&SharedKey::from_bytes([byte; 32]))
}

fn sealed(byte: u8, nonce: [u8; 12]) -> Vec<u8> {
    let body = cipher(byte).seal(&nonce, b"{}");
    crate::envelope::decode_body(&body).expect("base64")
}

/// Small limits on a clock of tens of milliseconds, without a grace period for new sessions.
fn limits() -> SessionLimits {
    SessionLimits {
        max_sessions: 2,
        idle_ms: 100,
        lifetime_ms: 1000,
        max_requests: 3,
        grace_ms: 0,
        ..SessionLimits::default()
    }
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
    table.put(id, cipher(1), "top".into(), Principal::local(), 0);
    let accepted = table.accept(Some(&id), "local", &[5; 12], sealed(1, [5; 12]), 1).expect("accepted");
    assert_eq!(&**accepted.plaintext, b"{}");
    assert_eq!(format!("{accepted:?}"), format!("Accepted {{ id: {id:?}, dir: \"top\", .. }}"));
}

#[test]
fn a_table_prints_its_limits_and_size_only() {
    let mut table = SessionTable::new(limits());
    table.put(SessionId::from_bytes([1; 16]), cipher(1), String::new(), Principal::local(), 0);
    assert_eq!(format!("{table:?}"), format!("SessionTable {{ limits: {:?}, live: 1 }}", table.limits()));
}

#[test]
fn removing_a_session_or_a_principal_ends_its_sessions_and_frees_their_nonces() {
    let mut table = SessionTable::new(limits_big());
    let ids: Vec<_> = (1..=3).map(|i| SessionId::from_bytes([i; 16])).collect();
    table.put(ids[0], cipher(1), String::new(), Principal::new("a"), 0);
    table.put(ids[1], cipher(2), String::new(), Principal::new("b"), 0);
    table.put(ids[2], cipher(3), String::new(), Principal::new("b"), 0);
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
    table.put(SessionId::from_bytes([1; 16]), cipher(1), String::new(), Principal::local(), 10);
    table.put(SessionId::from_bytes([2; 16]), cipher(2), String::new(), Principal::local(), 20);
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
    table.put(ids[0], cipher(1), String::new(), Principal::new("a"), 0);
    table.put(ids[1], cipher(2), String::new(), Principal::new("b"), 1);
    table.put(ids[2], cipher(3), String::new(), Principal::new("b"), 2);
    // "a" has the session idle the longest and the smaller name, but "b" holds more.
    assert_eq!(table.put(ids[3], cipher(4), String::new(), Principal::new("c"), 3), Some(ids[1]));
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
    table.put(id, cipher(1), String::new(), Principal::local(), 0);
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
    table.put(a, cipher(1), String::new(), Principal::local(), 0);
    table.put(b, cipher(2), String::new(), Principal::local(), 0);
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
    table.put(ids[0], cipher(1), String::new(), Principal::new("owner"), 0);
    table.put(ids[1], cipher(2), String::new(), Principal::new("reader"), 0);
    table.put(ids[2], cipher(3), String::new(), Principal::new("reader"), 0);
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
    table.put(a, cipher(1), String::new(), Principal::local(), 0);
    table.put(b, cipher(2), String::new(), Principal::local(), 0);
    let msg = sealed(2, [5; 12]);
    assert_eq!(table.accept(Some(&a), "local", &[5; 12], msg.clone(), 1).map(|x| x.id), Err(AcceptError::Decryption));
    assert_eq!(table.accept(None, "local", &[5; 12], msg.clone(), 1).map(|x| x.id), Ok(b));
    assert_eq!(table.accept(None, "local", &[5; 12], msg.clone(), 2).map(|x| x.id), Err(AcceptError::Replay));
    assert_eq!(table.accept(Some(&b), "local", &[5; 12], msg.clone(), 2).map(|x| x.id), Err(AcceptError::Replay));
}

#[test]
fn idle_sessions_expire_and_full_table_evicts_longest_idle() {
    let mut table = SessionTable::new(limits());
    let ids: Vec<_> = (1..=3).map(|i| SessionId::from_bytes([i; 16])).collect();
    table.put(ids[0], cipher(1), String::new(), Principal::local(), 0);
    table.put(ids[1], cipher(2), String::new(), Principal::local(), 10);
    assert_eq!(table.put(ids[2], cipher(3), String::new(), Principal::local(), 20), Some(ids[0]));
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
    table.put(ids[0], cipher(1), String::new(), Principal::local(), 0);
    table.put(ids[1], cipher(2), String::new(), Principal::local(), 50);
    // ids[0] is used at 60, so it now expires at 160, after ids[1] (150).
    assert!(table.accept(Some(&ids[0]), "local", &[1; 12], sealed(1, [1; 12]), 60).is_ok());
    table.put(ids[2], cipher(3), String::new(), Principal::local(), 149);
    assert!(table.contains(&ids[0]) && table.contains(&ids[1]));
    table.put(ids[3], cipher(4), String::new(), Principal::local(), 150);
    assert!(table.contains(&ids[0]) && !table.contains(&ids[1]));
    // A clock that goes back and comes forward again still finds what expired.
    assert!(table.accept(Some(&ids[2]), "local", &[2; 12], sealed(3, [2; 12]), 10).is_ok());
    table.put(ids[4], cipher(5), String::new(), Principal::local(), 110);
    assert!(!table.contains(&ids[2]) && table.contains(&ids[0]) && table.contains(&ids[3]));
    // Zero limits expire everything at once.
    let mut table = SessionTable::new(SessionLimits { idle_ms: 0, ..limits() });
    table.put(ids[0], cipher(1), String::new(), Principal::local(), 5);
    table.put(ids[1], cipher(2), String::new(), Principal::local(), 0);
    assert!(!table.contains(&ids[0]) && table.len() == 1);
}

#[test]
fn session_is_dropped_after_max_requests() {
    let mut table = SessionTable::new(limits());
    let id = SessionId::from_bytes([1; 16]);
    table.put(id, cipher(1), String::new(), Principal::local(), 0);
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
    table.put(id, cipher(1), String::new(), Principal::local(), 0);
    (table, id)
}

#[test]
fn unnamed_requests_try_recent_use_first_and_garbage_matches_nothing() {
    let mut table = SessionTable::new(limits_big());
    for i in 1..=20u8 {
        table.put(SessionId::from_bytes([i; 16]), cipher(i), String::new(), Principal::local(), u64::from(i));
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
    table.put(id, cipher(1), String::new(), Principal::local(), 0);
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
fn a_full_table_evicts_the_least_recently_used_of_the_sessions_past_their_grace() {
    let mut table = SessionTable::new(SessionLimits { max_sessions: 3, grace_ms: 100, ..limits_big() });
    let ids: Vec<_> = (1..=5).map(|i| SessionId::from_bytes([i; 16])).collect();
    table.put(ids[0], cipher(1), String::new(), Principal::local(), 0);
    table.put(ids[1], cipher(2), String::new(), Principal::local(), 2);
    assert!(table.accept(Some(&ids[0]), "local", &[1; 12], sealed(1, [1; 12]), 3).is_ok());
    table.put(ids[2], cipher(3), String::new(), Principal::local(), 4);
    // Past the grace period, the never-used ids[1] (made at 2) was used the longest ago.
    assert_eq!(table.put(ids[3], cipher(4), String::new(), Principal::local(), 200), Some(ids[1]));
    // ids[0] (used at 3) goes before ids[2] (made at 4).
    assert_eq!(table.put(ids[4], cipher(5), String::new(), Principal::local(), 201), Some(ids[0]));
    assert!(table.contains(&ids[2]) && table.contains(&ids[3]));
}

/// Issue 23, item 7: a burst of new sessions is not evicted before its first call while the
/// principal has an older idle one; when all are new, the next init is refused and nothing changes.
#[test]
fn a_burst_of_new_sessions_outlives_older_idle_ones_and_never_grows_past_the_bound() {
    let limits = SessionLimits { max_per_principal: 4, grace_ms: 2000, ..limits_big() };
    let mut table = SessionTable::new(SessionLimits { idle_ms: 60_000, lifetime_ms: 600_000, ..limits });
    let ids: Vec<_> = (1..=8).map(|i| SessionId::from_bytes([i; 16])).collect();
    let reader = || Principal::new("reader");
    // Two sessions used once, then idle.
    table.put(ids[0], cipher(1), String::new(), reader(), 0);
    table.put(ids[1], cipher(2), String::new(), reader(), 0);
    assert!(table.accept(Some(&ids[0]), "reader", &[1; 12], sealed(1, [1; 12]), 10).is_ok());
    assert!(table.accept(Some(&ids[1]), "reader", &[2; 12], sealed(2, [2; 12]), 20).is_ok());
    // A burst of four, none used yet: the idle ones go, least recently used first.
    assert_eq!(table.put(ids[2], cipher(3), String::new(), reader(), 5000), None);
    assert_eq!(table.put(ids[3], cipher(4), String::new(), reader(), 5001), None);
    assert_eq!(table.put(ids[4], cipher(5), String::new(), reader(), 5002), Some(ids[0]));
    assert_eq!(table.put(ids[5], cipher(6), String::new(), reader(), 5003), Some(ids[1]));
    // All four are new: the fifth is refused, and no session ended.
    assert_eq!(table.insert(ids[6], cipher(7), String::new(), reader(), 5004), Err(NoRoom));
    assert_eq!(table.count_of("reader"), 4);
    assert!(ids[2..6].iter().all(|id| table.contains(id)) && !table.contains(&ids[6]));
    // Each new one takes its first call.
    for (n, id) in (3u8..).zip(&ids[2..6]) {
        assert!(table.accept(Some(id), "reader", &[n; 12], sealed(n, [n; 12]), 5100 + u64::from(n)).is_ok());
    }
    // Used, they are evicted least recently used first again.
    assert_eq!(table.put(ids[6], cipher(7), String::new(), reader(), 5200), Some(ids[2]));
    // Once the grace period is over, a never-used session is evicted like an idle one.
    let mut table = SessionTable::new(SessionLimits { idle_ms: 60_000, lifetime_ms: 600_000, ..limits });
    for (n, id) in (1u8..).zip(&ids[..4]) {
        table.put(*id, cipher(n), String::new(), reader(), u64::from(n));
    }
    assert_eq!(table.insert(ids[4], cipher(5), String::new(), reader(), 1999), Err(NoRoom));
    assert_eq!(table.put(ids[4], cipher(5), String::new(), reader(), 2001), Some(ids[0]));
}

/// In a full table, another principal's burst gives its oldest session: it cannot refuse this
/// principal's init.
#[test]
fn another_principals_burst_cannot_refuse_an_init_in_a_full_table() {
    let limits = SessionLimits { max_sessions: 3, max_per_principal: 3, grace_ms: 2000, ..limits_big() };
    let mut table = SessionTable::new(limits);
    let ids: Vec<_> = (1..=5).map(|i| SessionId::from_bytes([i; 16])).collect();
    for (n, id) in (1u8..).zip(&ids[..3]) {
        table.put(*id, cipher(n), String::new(), Principal::new("burst"), u64::from(n));
    }
    assert_eq!(table.put(ids[3], cipher(4), String::new(), Principal::new("other"), 10), Some(ids[0]));
    assert_eq!((table.count_of("burst"), table.count_of("other")), (2, 1));
}

#[test]
fn anti_replay_is_exact_and_bounded_in_total() {
    let limits = SessionLimits { max_requests: 50, max_nonces: 60, ..limits_big() };
    let mut table = SessionTable::new(limits);
    let (a, b) = (SessionId::from_bytes([1; 16]), SessionId::from_bytes([2; 16]));
    table.put(a, cipher(1), String::new(), Principal::local(), 0);
    table.put(b, cipher(2), String::new(), Principal::local(), 0);
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
    table.put(owner, cipher(1), String::new(), Principal::new("owner"), 0);
    table.put(flood_a, cipher(2), String::new(), Principal::new("reader"), 0);
    table.put(flood_b, cipher(3), String::new(), Principal::new("reader"), 0);
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
