//! `keyward audit show|verify` as a person uses it: on a closed data directory (read from the
//! store), on one a server holds (read over the API), and on copies tampered with the way someone
//! with the files could: an edited record, a record removed from the middle or the end, two records
//! swapped. Each tampering makes `verify` exit non-zero naming the first bad record.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::{copy_dir, keyward, text};
use keyward_core::audit::{AuditEvent, AuditRecord};
use keyward_store::FjallStore;
use keyward_testkit::Harness;
use serde_json::{Value, json};

/// Records written directly, after the server's own.
const APPENDED: u64 = 12;

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        principal: if n.is_multiple_of(2) { "dashboard".into() } else { "uid-1000".into() },
        method: "sign_message".into(),
        wallet: Some(format!("w{n}")),
        target: None,
        outcome: "ok".into(),
        count: if n == 3 { 40 } else { 1 },
        span: None,
    }
}

/// A data directory whose store holds a log of real calls, [`APPENDED`] appended events and `bulk`
/// more; returns its number of records.
fn make_data_dir(data: &Path, bulk: u64) -> u64 {
    // Opened as `keyward serve` opens it: the log's head kept in `audit.head`.
    let options = keyward_store::StoreOptions { audit_head: Some(data.join("audit.head")), ..Default::default() };
    let store = FjallStore::open_with(&data.join("store"), options).unwrap();
    let mut h = Harness::new(Box::new(store));
    let mut c = h.client(1, true);
    let params = json!({"name": "alice", "mnemonic": null, "mnemonic_length": 16, "password": "pw"});
    assert_eq!(h.ok(&mut c, "create_wallet", params), Value::Null);
    let _ = h.call(&mut c, "open_wallet", json!({"name": "alice", "password": "wrong"}));
    h.ok(&mut c, "open_wallet", json!({"name": "alice", "password": "pw"}));
    h.ok(&mut c, "close_wallet", json!({"name": "alice"}));
    h.server.flush_audit();
    let store = h.server.store();
    for n in 0..APPENDED {
        store.append_audit(&[event(n)]).unwrap();
    }
    let bulk: Vec<AuditEvent> = (0..bulk).map(|n| AuditEvent { principal: "bulk".into(), ..event(n) }).collect();
    store.append_audit(&bulk).unwrap();
    let (anchor, head) = store.audit_bounds().unwrap();
    assert_eq!(anchor.seq, 0);
    assert!(head.seq >= APPENDED + 4, "the calls were audited: head {}", head.seq);
    head.seq
}

fn audit(data: &Path, args: &[&str]) -> Output {
    let mut command = keyward();
    command.env_remove("KEYWARD_DATA_DIR").arg("audit").args(args).arg("--data-dir").arg(data);
    command.stdin(Stdio::null()).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A fresh copy of `original`, changed by `tamper` through the store's raw access.
fn tampered(original: &Path, name: &str, tamper: impl FnOnce(&FjallStore)) -> PathBuf {
    let copy = original.parent().unwrap().join(name);
    copy_dir(original, &copy);
    let store = FjallStore::open(&copy.join("store")).unwrap();
    tamper(&store);
    copy
}

/// A change made to a copy of the store.
type Tamper = Box<dyn FnOnce(&FjallStore)>;

fn raw_record(store: &FjallStore, seq: u64) -> AuditRecord {
    AuditRecord::from_bytes(&store.raw_audit_get(seq).unwrap().unwrap()).unwrap()
}

#[test]
fn verify_names_the_first_bad_record_of_every_tampering() {
    let temp = tempfile::tempdir().unwrap();
    let original = temp.path().join("original");
    let n = make_data_dir(&original, 0);
    let middle = n / 2;

    let output = audit(&original, &["verify"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(stdout(&output), format!("audit log verified: {n} records (seq 1..{n}), and audit.head matches\n"));

    let cases: Vec<(&str, Tamper, String)> = vec![
        (
            "edited",
            Box::new(move |store| {
                let mut record = raw_record(store, middle);
                record.event.outcome = "forbidden".into();
                store.raw_audit_put(middle, &record.to_bytes()).unwrap();
            }),
            format!("broken at record {middle} (seq {middle}): its contents do not match its hash (edited)"),
        ),
        (
            "removed",
            Box::new(move |store| store.raw_audit_remove(middle).unwrap()),
            format!("broken at record {middle} (seq {}): out of sequence", middle + 1),
        ),
        (
            "swapped",
            Box::new(move |store| {
                let (a, b) = (store.raw_audit_get(3).unwrap().unwrap(), store.raw_audit_get(middle).unwrap().unwrap());
                store.raw_audit_put(3, &b).unwrap();
                store.raw_audit_put(middle, &a).unwrap();
            }),
            format!("broken at record 3 (seq {middle}): out of sequence"),
        ),
        (
            "truncated",
            Box::new(move |store| store.raw_audit_remove(n).unwrap()),
            format!("broken at record {n} (seq {n}): the log ends before its last record"),
        ),
    ];
    for (name, tamper, expected) in cases {
        let copy = tampered(&original, name, tamper);
        let output = audit(&copy, &["verify"]);
        assert!(!output.status.success(), "{name}: {}", text(&output));
        assert!(text(&output).contains(&format!("audit log {expected}")), "{name}: {}", text(&output));
    }

    // A record that no longer parses is named too.
    let copy = tampered(&original, "garbled", |store| store.raw_audit_put(5, b"{\"seq\":").unwrap());
    let output = audit(&copy, &["verify"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("audit record 5 is unreadable"), "{}", text(&output));

    // Reading never changed the original.
    let output = audit(&original, &["verify"]);
    assert_eq!(stdout(&output), format!("audit log verified: {n} records (seq 1..{n}), and audit.head matches\n"));
}

#[test]
fn show_prints_filters_and_writes_json() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let n = make_data_dir(&data, 0);

    let output = audit(&data, &["show"]);
    assert!(output.status.success(), "{}", text(&output));
    let shown = stdout(&output);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len() as u64, n, "{shown}");
    // time, seq, principal, method, wallet, outcome (and the count when above 1).
    assert!(lines.iter().any(|l| l.contains("  local  create_wallet  alice  ok")), "{shown}");
    assert!(lines.iter().any(|l| l.contains("  local  close_wallet  alice  ok")), "{shown}");
    assert!(lines.iter().any(|l| l.ends_with("  uid-1000  sign_message  w3  ok  x 40")), "{shown}");
    let first = lines[0];
    assert_eq!(&first[4..5], "-");
    assert_eq!(&first[10..11], "T");
    assert_eq!(&first[23..26], "Z  ");
    assert!(first[26..].trim_start().starts_with("1  local  create_wallet"), "{first}");
    assert!(lines.iter().any(|l| l.contains("  local  open_wallet  alice  wrong password")), "{shown}");

    let json = audit(&data, &["show", "--json", "--principal", "dashboard"]);
    assert!(json.status.success(), "{}", text(&json));
    let records: Vec<AuditRecord> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(records.len() as u64, APPENDED / 2);
    assert!(records.iter().all(|r| r.event.principal == "dashboard" && r.hash == r.expected_hash()));

    let since_all = audit(&data, &["show", "--since", "2000-01-01T00:00:00Z"]);
    assert_eq!(stdout(&since_all), shown);
    let since_ms = audit(&data, &["show", "--since", "0", "--principal", "nobody", "--json"]);
    assert_eq!(stdout(&since_ms), "[]\n");
    let future = audit(&data, &["show", "--since", "2999-12-31T23:59:59.999+01:00"]);
    assert!(future.status.success() && stdout(&future).is_empty(), "{}", text(&future));
    let bad = audit(&data, &["show", "--since", "yesterday"]);
    assert!(!bad.status.success() && text(&bad).contains("RFC 3339"), "{}", text(&bad));

    let missing = audit(&temp.path().join("nothing-here"), &["verify"]);
    assert!(!missing.status.success() && text(&missing).contains("holds no keyward store"), "{}", text(&missing));
    assert!(!temp.path().join("nothing-here").exists(), "audit made no data directory");
}

#[test]
fn a_running_server_is_read_over_the_api() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    // More than two pages of `audit_log`.
    let n = make_data_dir(&data, 2345);
    let ready = temp.path().join("ready.json");
    let mut command = keyward();
    command.env_remove("KEYWARD_DATA_DIR").stderr(Stdio::null());
    command.args(["serve", "--https", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--data-dir"]).arg(&data);
    command.arg("--ready-file").arg(&ready);
    let (serve, info) = common::serve(command, &ready);
    let url = format!("https://{}/v3/owner", info["https"].as_str().unwrap());

    // The store is locked: without an address, the default one is tried and the error says why.
    let output = audit(&data, &["verify"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("its store is locked"), "{}", text(&output));

    for transport in [["--url", url.as_str()], ["--quic", info["quic"].as_str().unwrap()]] {
        let output = audit(&data, &["verify", transport[0], transport[1]]);
        assert!(output.status.success(), "{}", text(&output));
        let verdict = stdout(&output);
        assert!(verdict.starts_with("audit log verified: ") && verdict.contains("(seq 1.."), "{verdict}");
        let output = audit(&data, &["show", "--json", transport[0], transport[1]]);
        assert!(output.status.success(), "{}", text(&output));
        let records: Vec<AuditRecord> = serde_json::from_slice(&output.stdout).unwrap();
        assert!(records.len() as u64 >= n, "{} records", records.len());
        assert_eq!(records[3].event.method, "close_wallet");
    }
    drop(serve);
}

#[test]
fn a_log_of_many_pages_verifies_and_a_break_on_a_later_page_is_named() {
    let temp = tempfile::tempdir().unwrap();
    let original = temp.path().join("original");
    let n = make_data_dir(&original, 2 * keyward_core::AUDIT_PAGE_MAX as u64 + 345);
    let output = audit(&original, &["verify"]);
    assert_eq!(
        stdout(&output),
        format!("audit log verified: {n} records (seq 1..{n}), and audit.head matches\n"),
        "{}",
        text(&output)
    );
    let shown = audit(&original, &["show", "--principal", "bulk"]);
    assert_eq!(stdout(&shown).lines().count() as u64, n - APPENDED - 4);

    let removed = tampered(&original, "removed", |store| store.raw_audit_remove(1501).unwrap());
    let output = audit(&removed, &["verify"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("broken at record 1501 (seq 1502): out of sequence"), "{}", text(&output));
    let truncated = tampered(&original, "truncated", |store| store.raw_audit_remove(n).unwrap());
    let output = audit(&truncated, &["verify"]);
    assert!(text(&output).contains(&format!("broken at record {n} (seq {n}): the log ends")), "{}", text(&output));
}
