//! The audit log's head kept outside the store, on a real fjall store: written after every append,
//! compared at open, and a cut, a rollback, a replacement or a missing file recorded in the log.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::path::Path;

use keyward_core::Store as _;
use keyward_core::audit::{Anchor, AuditEvent, AuditRecord};
use keyward_store::{FjallStore, StoreOptions, head};

fn open(data: &Path) -> FjallStore {
    let options = StoreOptions { audit_head: Some(data.join("audit.head")), ..StoreOptions::default() };
    FjallStore::open_with(&data.join("store"), options).unwrap()
}

fn kept(data: &Path) -> Anchor {
    serde_json::from_slice(&std::fs::read(data.join("audit.head")).unwrap()).unwrap()
}

fn append(store: &FjallStore, n: u64) {
    for i in 0..n {
        store.append_audit(&[AuditEvent::new("owner", "sign_message", Some(format!("w{i}")), "ok")]).unwrap();
    }
}

fn records(store: &FjallStore) -> Vec<AuditRecord> {
    store.read_audit(0, 1000).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn the_head_is_kept_after_every_append_and_an_empty_log_records_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path();
    let store = open(data);
    assert_eq!(kept(data), Anchor::default(), "written at open, even for an empty log");
    append(&store, 3);
    let (_, head) = store.audit_bounds().unwrap();
    assert_eq!((kept(data), head.seq), (head, 3));
    drop(store);
    let store = open(data);
    assert_eq!(records(&store).len(), 3, "the same log: nothing recorded at open");
    assert_eq!(kept(data), head);
}

#[test]
fn a_store_put_back_from_an_older_copy_records_the_missing_range() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    append(&open(&data), 4);
    copy_dir(&data.join("store"), &temp.path().join("older"));
    append(&open(&data), 3);
    std::fs::remove_dir_all(data.join("store")).unwrap();
    copy_dir(&temp.path().join("older"), &data.join("store"));
    let store = open(&data);
    let records = records(&store);
    let last = records.last().unwrap();
    assert_eq!((last.seq, last.event.principal.as_str(), last.event.method.as_str()), (5, "keyward", "audit"));
    assert!(last.event.outcome.starts_with(head::GAP), "{}", last.event.outcome);
    assert!(last.event.outcome.contains("records 5..=7 are missing"), "{}", last.event.outcome);
    assert_eq!(kept(&data).seq, 5, "the file follows the log from now on");
}

#[test]
fn another_log_with_as_many_records_is_found() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    append(&open(&data), 3);
    let other = temp.path().join("other");
    let store = FjallStore::open(&other.join("store")).unwrap();
    store.append_audit(&[AuditEvent::new("owner", "get_mnemonic", None, "ok")]).unwrap();
    append(&store, 2);
    drop(store);
    std::fs::remove_dir_all(data.join("store")).unwrap();
    copy_dir(&other.join("store"), &data.join("store"));
    let records = records(&open(&data));
    assert_eq!(records.len(), 4);
    assert!(records[3].event.outcome.starts_with(head::REPLACED), "{}", records[3].event.outcome);
}

#[test]
fn a_log_without_its_kept_head_says_so_once_and_an_older_kept_head_is_brought_up_to_date() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path();
    // A store written without the file (an older version), then opened with it.
    append(&FjallStore::open(&data.join("store")).unwrap(), 2);
    let store = open(data);
    let records = records(&store);
    assert_eq!(records.len(), 3);
    assert!(records[2].event.outcome.starts_with(head::NOT_KEPT), "{}", records[2].event.outcome);
    assert!(records[2].event.outcome.contains("had 2 records"));
    assert_eq!(kept(data).seq, 3);
    // A kept head older than the log (a crash between the commit and the file's write) is fine.
    let older = kept(data);
    append(&store, 2);
    drop(store);
    std::fs::write(data.join("audit.head"), serde_json::to_vec(&older).unwrap()).unwrap();
    let store = open(data);
    assert_eq!(store.read_audit(0, 100).unwrap().len(), 5, "nothing recorded");
    assert_eq!(kept(data).seq, 5, "brought up to date");
}
