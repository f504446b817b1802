//! The client registry and the audit log on the fjall store: persistence across reopening, the
//! hash chain, retention (by count, by age, bounded per append, never past a damaged record),
//! unreadable data, and appends killed with SIGKILL at random moments.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use keyward_core::audit::{Anchor, AuditEvent, AuditRecord, verify};
use keyward_core::store::{Store, StoreError};
use keyward_core::{ClientRecord, Identity, Role};
use keyward_store::{AuditRetention, FjallStore, MAX_REMOVED_PER_APPEND, StoreOptions};

fn temp_data_dir() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    (temp, data)
}

fn open_with(data: &Path, max_records: u64, max_age_ms: u64) -> FjallStore {
    let options = StoreOptions { audit_retention: AuditRetention { max_records, max_age_ms }, audit_head: None };
    FjallStore::open_with(data, options).unwrap()
}

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        principal: if n.is_multiple_of(3) { "default".into() } else { "uid-1000".into() },
        method: "open_wallet".into(),
        wallet: n.is_multiple_of(2).then(|| format!("w{n}")),
        // Some records name a client (hashed as v3) among the others (v1).
        target: n.is_multiple_of(7).then(|| format!("client{n}")),
        outcome: if n.is_multiple_of(5) { "wrong password".into() } else { "ok".into() },
        count: 1 + (n % 4) as u32,
        span: None,
    }
}

fn events(from: u64, n: u64) -> Vec<AuditEvent> {
    (from..from + n).map(event).collect()
}

/// Every retained record, read in pages of `page`.
fn read_all(store: &dyn Store, page: usize) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = Vec::new();
    loop {
        let after = out.last().map_or(0, |r| r.seq);
        let records = store.read_audit(after, page).unwrap();
        assert!(records.len() <= page);
        let done = records.len() < page;
        out.extend(records);
        if done {
            return out;
        }
    }
}

/// Checks the whole log against its bounds and returns (anchor, head, records).
fn verified(store: &dyn Store) -> (Anchor, Anchor, Vec<AuditRecord>) {
    let (anchor, head) = store.audit_bounds().unwrap();
    let records = read_all(store, 7);
    assert_eq!(verify(&records, anchor, head), Ok(head.seq - anchor.seq), "anchor {anchor:?} head {head:?}");
    (anchor, head, records)
}

fn client(name: &str, uid: u32) -> ClientRecord {
    ClientRecord {
        name: name.into(),
        role: Role::Signer,
        identity: Identity::Uid { uid },
        created_unix_ms: 1_700_000_000_000,
        revoked_unix_ms: None,
    }
}

#[test]
fn clients_persist_across_reopening_and_a_revocation_stays() {
    let (_temp, data) = temp_data_dir();
    let cert =
        ClientRecord { role: Role::Owner, identity: Identity::Cert { spki_sha256: [9; 32] }, ..client("default", 0) };
    {
        let store = FjallStore::open(&data).unwrap();
        assert_eq!(store.load_clients().unwrap(), []);
        store.save_client(&client("reader-1", 1000)).unwrap();
        store.save_client(&cert).unwrap();
        // An upsert: the same name replaces the record.
        let revoked = ClientRecord { revoked_unix_ms: Some(1_700_000_000_500), ..client("reader-1", 1000) };
        store.save_client(&revoked).unwrap();
        assert!(matches!(store.save_client(&client("local", 5)), Err(StoreError::Failed(_))));
        assert!(matches!(store.save_client(&client("../x", 5)), Err(StoreError::Failed(_))));
    }
    let store = FjallStore::open(&data).unwrap();
    let mut loaded = store.load_clients().unwrap();
    loaded.sort_by(|a, b| a.name.cmp(&b.name));
    let revoked = ClientRecord { revoked_unix_ms: Some(1_700_000_000_500), ..client("reader-1", 1000) };
    assert_eq!(loaded, [cert, revoked]);
    assert!(!loaded[1].is_active());
}

#[test]
fn an_unreadable_client_record_is_an_error_naming_the_client() {
    let (_temp, data) = temp_data_dir();
    {
        let store = FjallStore::open(&data).unwrap();
        store.save_client(&client("good", 1)).unwrap();
        store.save_client(&client("other", 2)).unwrap();
    }
    {
        // Damage the store's files the way a broken disk or a hand edit would.
        let db = fjall::Database::builder(data.join("db")).open().unwrap();
        let clients = db.keyspace("clients", fjall::KeyspaceCreateOptions::default).unwrap();
        clients.insert("broken", b"{\"name\":".to_vec()).unwrap();
        // A valid record under another client's name is damage too.
        clients.insert("other", client("good", 1).to_bytes()).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let store = FjallStore::open(&data).unwrap();
    let error = store.load_clients().unwrap_err().to_string();
    assert!(error.contains("'broken'") && error.contains("unreadable"), "{error}");
}

#[test]
fn the_chain_verifies_after_many_appends_across_reopening() {
    let (_temp, data) = temp_data_dir();
    let mut n = 0;
    for round in 0..4u64 {
        let store = FjallStore::open(&data).unwrap();
        for size in [1, 2, 5, 1, 13] {
            store.append_audit(&events(n, size)).unwrap();
            n += size;
        }
        store.append_audit(&[]).unwrap();
        let (anchor, head, records) = verified(&store);
        assert_eq!((anchor, head.seq, records.len() as u64), (Anchor::default(), n, n), "round {round}");
        for (i, record) in records.iter().enumerate() {
            assert_eq!((record.seq, &record.event), (i as u64 + 1, &event(i as u64)));
        }
        let stamped: Vec<_> = records.iter().map(|r| r.time_unix_ms).collect();
        assert!(stamped.iter().all(|&t| t > 1_600_000_000_000), "wall clock times: {stamped:?}");
    }
    let store = FjallStore::open(&data).unwrap();
    store.compact().unwrap();
    verified(&store);
    let page = store.read_audit(10, 3).unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [11, 12, 13]);
    assert_eq!(store.read_audit(n, 10).unwrap(), []);
    assert_eq!(store.read_audit(u64::MAX, 10).unwrap(), []);
    assert_eq!(store.read_audit(0, 0).unwrap(), []);
}

#[test]
fn the_fjall_log_matches_the_memory_store_but_for_time() {
    let (_temp, data) = temp_data_dir();
    let fjall = FjallStore::open(&data).unwrap();
    let memory = keyward_core::MemoryStore::new();
    for size in [3, 1, 4] {
        fjall.append_audit(&events(size, size)).unwrap();
        memory.append_audit(&events(size, size)).unwrap();
    }
    let strip = |records: Vec<AuditRecord>| -> Vec<(u64, AuditEvent)> {
        records.into_iter().map(|r| (r.seq, r.event)).collect()
    };
    assert_eq!(strip(read_all(&fjall, 100)), strip(read_all(&memory, 100)));
}

#[test]
fn retention_by_count_keeps_a_verifiable_tail() {
    let (_temp, data) = temp_data_dir();
    let store = open_with(&data, 10, u64::MAX);
    let mut n = 0;
    for size in [4, 4, 4, 1, 7, 2] {
        store.append_audit(&events(n, size)).unwrap();
        n += size;
        let (anchor, head, records) = verified(&store);
        assert_eq!(head.seq, n);
        assert_eq!(records.len() as u64, n.min(10));
        assert_eq!(anchor.seq, n.saturating_sub(10));
    }
    // One append larger than the limit: some of its own records are never written.
    store.append_audit(&events(n, 25)).unwrap();
    n += 25;
    let (anchor, head, records) = verified(&store);
    assert_eq!((anchor.seq, head.seq, records.len()), (n - 10, n, 10));
    assert_eq!(records[0].event, event(n - 10));
    drop(store);
    // The anchor and head survive reopening; a larger limit keeps what is there and grows.
    let store = open_with(&data, 100, u64::MAX);
    store.append_audit(&events(n, 5)).unwrap();
    let (anchor2, head, records) = verified(&store);
    assert_eq!((anchor2, head.seq, records.len()), (anchor, n + 5, 15));
}

#[test]
fn retention_removes_a_bounded_number_per_append() {
    let (_temp, data) = temp_data_dir();
    let total = 2 * MAX_REMOVED_PER_APPEND as u64 + 500;
    {
        let store = FjallStore::open(&data).unwrap();
        store.append_audit(&events(0, total)).unwrap();
    }
    // A much lower limit is reached over several appends, each removing at most the bound.
    let store = open_with(&data, 100, u64::MAX);
    let mut anchors = Vec::new();
    for i in 0..4 {
        store.append_audit(&events(total + i, 1)).unwrap();
        anchors.push(verified(&store).0.seq);
    }
    let step = MAX_REMOVED_PER_APPEND as u64;
    assert_eq!(anchors, [step, 2 * step, total + 3 - 100, total + 4 - 100]);
}

#[test]
fn retention_by_age_removes_old_records() {
    let (_temp, data) = temp_data_dir();
    let store = open_with(&data, u64::MAX, 300);
    store.append_audit(&events(0, 5)).unwrap();
    store.append_audit(&events(5, 2)).unwrap();
    assert_eq!(verified(&store).0, Anchor::default(), "nothing is old yet");
    std::thread::sleep(Duration::from_millis(400));
    store.append_audit(&events(7, 1)).unwrap();
    let (anchor, head, records) = verified(&store);
    assert_eq!((anchor.seq, head.seq, records.len()), (7, 8, 1));
    assert_eq!(records[0].event, event(7));
}

#[test]
fn retention_never_removes_a_damaged_record() {
    let (_temp, data) = temp_data_dir();
    let store = open_with(&data, 3, u64::MAX);
    store.append_audit(&events(0, 3)).unwrap();
    // Record 2 is edited: retention may remove record 1 but stops at record 2, which stays as
    // evidence (with everything after it) and fails verification.
    let mut edited = AuditRecord::from_bytes(&store.raw_audit_get(2).unwrap().unwrap()).unwrap();
    edited.event.outcome = "ok".into();
    edited.event.principal = "someone-else".into();
    store.raw_audit_put(2, &edited.to_bytes()).unwrap();
    store.append_audit(&events(3, 3)).unwrap();
    let (anchor, head) = store.audit_bounds().unwrap();
    assert_eq!((anchor.seq, head.seq), (1, 6));
    let records = read_all(&store, 100);
    assert_eq!(records.len(), 5);
    let broken = verify(&records, anchor, head).unwrap_err();
    assert_eq!((broken.position, broken.seq), (1, 2), "{broken}");
}

#[test]
fn an_unreadable_record_is_an_error_naming_it() {
    let (_temp, data) = temp_data_dir();
    let store = FjallStore::open(&data).unwrap();
    store.append_audit(&events(0, 4)).unwrap();
    store.raw_audit_put(3, b"not a record").unwrap();
    assert_eq!(store.read_audit(0, 2).unwrap().len(), 2);
    assert_eq!(store.read_audit(0, 10), Err(StoreError::Failed("audit record 3 is unreadable".into())));
    // Appends carry on (the chain follows the head, not the damaged record).
    store.append_audit(&events(4, 1)).unwrap();
    assert_eq!(store.read_audit(3, 10).unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Crash safety: a child process appends in a loop; it is killed with SIGKILL at random moments.

const CHILD_DIR: &str = "KEYWARD_AUDIT_TEST_DIR";
const CHILD_RUN: &str = "KEYWARD_AUDIT_TEST_RUN";
/// A small limit, so that retention runs in every append the child makes.
const CRASH_MAX_RECORDS: u64 = 200;

/// The child's entry point: does nothing unless started by the test below.
#[test]
#[ignore = "a child process of the crash test in this file; does nothing on its own"]
fn audit_child_process() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let run: u64 = std::env::var(CHILD_RUN).unwrap().parse().unwrap();
    let store = open_with(Path::new(&dir), CRASH_MAX_RECORDS, u64::MAX);
    let mut out = std::io::stdout().lock();
    writeln!(out, "@ready").unwrap();
    out.flush().unwrap();
    for i in 0.. {
        store.append_audit(&events(run * 1_000_000 + i, 1 + i % 7)).unwrap();
        let (_, head) = store.audit_bounds().unwrap();
        writeln!(out, "@head {}", head.seq).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_during_appends_leaves_a_verifiable_log() {
    let kills: u64 = std::env::var("KEYWARD_CRASH_KILLS").ok().map_or(8, |v| v.parse().unwrap());
    let (_temp, data) = temp_data_dir();
    drop(FjallStore::open(&data).unwrap());
    let (mut floor, mut appends_seen) = (0, 0);
    for run in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "audit_child_process", "--ignored", "--nocapture", "--test-threads=1", "-q"])
            .env(CHILD_DIR, &data)
            .env(CHILD_RUN, run.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let reader = std::thread::spawn(move || {
            let mut heads = Vec::new();
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if let Some(head) = line.strip_prefix("@head ") {
                    heads.push(head.parse::<u64>().unwrap());
                }
            }
            heads
        });
        // Different moments in the loop: the child needs some milliseconds to open the store.
        std::thread::sleep(Duration::from_millis(60 + 37 * (run % 7)));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let heads = reader.join().unwrap();
        appends_seen += heads.len();
        let last_seen = heads.last().copied().unwrap_or(floor);
        let store = open_with(&data, CRASH_MAX_RECORDS, u64::MAX);
        let (anchor, head, records) = verified(&store);
        // Every append the child saw is there; at most the one in flight beyond it.
        assert!(head.seq >= last_seen && head.seq <= last_seen + 7, "run {run}: head {} seen {last_seen}", head.seq);
        assert!(records.len() as u64 <= CRASH_MAX_RECORDS, "run {run}: {} records", records.len());
        assert_eq!(anchor.seq, head.seq.saturating_sub(CRASH_MAX_RECORDS), "run {run}");
        floor = head.seq;
    }
    eprintln!("audit crash test: {kills} kills, {appends_seen} appends seen, head {floor}");
    assert!(floor > 0, "the child never appended");
}
