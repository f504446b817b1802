//! The audit log's head kept outside the store (`DATA_DIR/audit.head`): cutting the store's journal
//! or putting back an older copy of the store makes `keyward audit verify` fail, naming the missing
//! range, where (without the kept head, as before) it passed; `audit head` and `audit export` give a
//! monitor the head and the records.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use common::{copy_dir, keyward, text};
use keyward_core::Store as _;
use keyward_core::audit::{Anchor, AuditEvent, AuditRecord, verify};
use keyward_store::{FjallStore, StoreOptions};

fn options(data: &Path, keep_head: bool) -> StoreOptions {
    StoreOptions { audit_head: keep_head.then(|| data.join("audit.head")), ..StoreOptions::default() }
}

fn open(data: &Path, keep_head: bool) -> FjallStore {
    FjallStore::open_with(&data.join("store"), options(data, keep_head)).unwrap()
}

/// Appends `n` events, one batch each (as a server writes them, a second apart).
fn append(data: &Path, keep_head: bool, n: u64) {
    let store = open(data, keep_head);
    for i in 0..n {
        let event = AuditEvent::new("owner", "get_mnemonic", Some(format!("w{i}")), "ok");
        store.append_audit(&[event]).unwrap();
    }
}

fn audit(data: &Path, args: &[&str]) -> Output {
    let mut command = keyward();
    command.env_remove("KEYWARD_DATA_DIR").arg("audit").args(args).arg("--data-dir").arg(data);
    command.stdin(Stdio::null()).output().unwrap()
}

/// A verdict on a log that never kept its head: the missing records are not named (nothing shows
/// them), only that the head was not kept, which verify reports until accepted.
fn not_kept_only(output: &Output) {
    assert!(!output.status.success(), "{}", text(output));
    assert!(text(output).contains("head not kept: the log had"), "{}", text(output));
    assert!(!text(output).contains("missing"), "{}", text(output));
}

/// Puts back the copy of `store/` taken in `backup`.
fn restore(data: &Path, backup: &Path) {
    std::fs::remove_dir_all(data.join("store")).unwrap();
    copy_dir(backup, &data.join("store"));
}

#[test]
fn restoring_an_older_copy_of_the_store_fails_verify_naming_the_missing_records() {
    let temp = tempfile::tempdir().unwrap();
    for keep_head in [false, true] {
        let data = temp.path().join(if keep_head { "kept" } else { "not-kept" });
        let backup = temp.path().join(if keep_head { "kept-backup" } else { "not-kept-backup" });
        append(&data, keep_head, 10);
        copy_dir(&data.join("store"), &backup);
        append(&data, keep_head, 5);
        restore(&data, &backup);
        let output = audit(&data, &["verify"]);
        if !keep_head {
            // What the log did before it kept its head: the rollback goes unseen (the chain holds);
            // all verify can say is that no head was kept for it.
            not_kept_only(&output);
            continue;
        }
        assert!(!output.status.success(), "a rolled back store verified: {}", text(&output));
        assert!(text(&output).contains("records 11..=15 are missing"), "{}", text(&output));
        // The finding is in the log itself (record 11): it fails again, until looked into.
        let again = audit(&data, &["verify"]);
        assert!(!again.status.success());
        assert!(text(&again).contains("record 11 says: log gap: records 11..=15 are missing"), "{}", text(&again));
        let accepted = audit(&data, &["verify", "--accept-gap", "11"]);
        assert!(accepted.status.success(), "{}", text(&accepted));
        assert!(text(&accepted).contains("verified: 11 records") && text(&accepted).contains("gap record 11 accepted"));
    }
}

#[test]
fn cutting_the_journal_fails_verify_naming_the_missing_records() {
    let temp = tempfile::tempdir().unwrap();
    for keep_head in [false, true] {
        let data = temp.path().join(if keep_head { "kept" } else { "not-kept" });
        append(&data, keep_head, 20);
        let journal = std::fs::read_dir(data.join("store/db"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
            .max()
            .expect("a journal");
        // The journal is preallocated: its written part ends at its last non-zero byte.
        let bytes = std::fs::read(&journal).unwrap();
        let end = bytes.iter().rposition(|&b| b != 0).expect("a written journal") as u64 + 1;
        std::fs::OpenOptions::new().write(true).open(&journal).unwrap().set_len(end - 300).unwrap();
        let (_, head) = open(&data, false).audit_bounds().unwrap();
        assert!(head.seq < 20, "the cut removed records: head {}", head.seq);
        let output = audit(&data, &["verify"]);
        if !keep_head {
            not_kept_only(&output);
            continue;
        }
        assert!(!output.status.success(), "a cut journal verified: {}", text(&output));
        let missing = format!("records {}..=20 are missing", head.seq + 1);
        assert!(text(&output).contains(&missing), "{}", text(&output));
    }
}

#[test]
fn a_replaced_store_with_as_many_records_fails_verify() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let other = temp.path().join("other");
    append(&data, true, 6);
    append(&other, false, 6);
    restore(&data, &other.join("store"));
    let output = audit(&data, &["verify"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("log replaced: record 6 is not the one audit.head names"), "{}", text(&output));
}

#[test]
fn head_and_export_give_a_monitor_what_it_keeps() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    append(&data, true, 7);
    let output = audit(&data, &["head", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let head: Anchor = serde_json::from_slice(&output.stdout).unwrap();
    let kept: Anchor = serde_json::from_slice(&std::fs::read(data.join("audit.head")).unwrap()).unwrap();
    assert_eq!((head, head.seq), (kept, 7));
    let plain = audit(&data, &["head"]);
    assert_eq!(String::from_utf8_lossy(&plain.stdout).trim(), format!("seq 7 hash {}", hex::encode(head.hash)));

    let output = audit(&data, &["export", "--json", "--after", "3"]);
    assert!(output.status.success(), "{}", text(&output));
    let records: Vec<AuditRecord> =
        String::from_utf8_lossy(&output.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 5, 6, 7]);
    let all = audit(&data, &["export"]);
    let first: Vec<AuditRecord> =
        String::from_utf8_lossy(&all.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let anchor = Anchor { seq: 3, hash: first[2].hash };
    assert_eq!(verify(&records, anchor, head), Ok(4), "the exported lines chain to the head");
}
