//! The fjall store in one process: persistence across restarts, delete leaving no trace, file
//! modes, the data directory lock, format markers, crash leftovers, and the `Store` contract.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use common::{all_dirs, all_files, create, files_containing, harness, key, open, shared_harness, temp_data_dir};
use keyward_core::store::{Account, Store, StoreError, StoredWallet};
use keyward_store::{FORMAT_VERSION, FjallStore, OpenError};
use keyward_testkit::assert_rpc_error;
use serde_json::{Value, json};

fn account(label: &str, index: u32) -> Account {
    Account { label: label.into(), index }
}

fn wallet(record: &[u8]) -> StoredWallet {
    StoredWallet { seed_record: record.to_vec(), accounts: vec![account("default", 0)] }
}

#[test]
fn restart_keeps_wallets_accounts_and_config() {
    let (_temp, data) = temp_data_dir();
    let config = json!({"chain_type": "Mainnet", "wallet_config": null, "logging_config": null, "tor_config": null});
    let team_config =
        json!({"chain_type": "Testnet", "wallet_config": {"x": 1}, "logging_config": null, "tor_config": null});
    let public = {
        let mut h = harness(&data, 1);
        let mut c = h.client(1, true);
        h.ok(&mut c, "create_config", config.clone());
        create(&mut h, &mut c, "alice", "a1");
        let token = open(&mut h, &mut c, "alice", "a1");
        h.ok(&mut c, "create_account_path", json!({"token": token, "label": "savings"}));
        h.ok(&mut c, "change_password", json!({"name": "alice", "old": "a1", "new": "a2"}));
        // The change closed the wallet (`[tokens] close_on_password_change`): open it again.
        let token = open(&mut h, &mut c, "alice", "a2");
        let public = h.ok(&mut c, "get_public_key", json!({"token": token, "path": "m/0"}));
        h.ok(&mut c, "set_top_level_directory", json!({"dir": "team"}));
        h.ok(&mut c, "create_config", team_config.clone());
        create(&mut h, &mut c, "bob", "b");
        public
    };
    // Reopen a few times: each open replays fjall's journal.
    for round in 0..3u8 {
        let mut h = harness(&data, 10 + round);
        let mut c = h.client(2, round % 2 == 0);
        assert_eq!(h.ok(&mut c, "list_wallets", json!({})), json!([{"name": "alice", "open": false}]));
        assert_rpc_error(h.call(&mut c, "open_wallet", json!({"name": "alice", "password": "a1"})), -32099, "Error");
        let token = open(&mut h, &mut c, "alice", "a2");
        assert_eq!(
            h.ok(&mut c, "accounts", json!({"token": token})),
            json!([
                {"label": "default", "path": "0200000000000000000000000000000000"},
                {"label": "savings", "path": "0200000001000000000000000000000000"},
            ])
        );
        assert_eq!(h.ok(&mut c, "get_public_key", json!({"token": token, "path": "m/0"})), public);
        let stored = h.server.store().load_config("").unwrap().unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&stored).unwrap(), config);
        let stored = h.server.store().load_config("team").unwrap().unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&stored).unwrap(), team_config);
        h.ok(&mut c, "set_top_level_directory", json!({"dir": "team"}));
        assert_eq!(h.ok(&mut c, "list_wallets", json!({})), json!([{"name": "bob", "open": false}]));
        open(&mut h, &mut c, "bob", "b");
    }
}

/// The needles that must vanish with a seed record: its bytes, its ciphertext in hex (as the
/// record holds it) and the raw ciphertext bytes.
fn record_needles(record: &[u8]) -> Vec<Vec<u8>> {
    let json: Value = serde_json::from_slice(record).unwrap();
    let hex = json["ciphertext"].as_str().unwrap().to_owned();
    let raw = hex::decode(&hex).unwrap();
    assert!(raw.len() >= 32);
    vec![record.to_vec(), hex.into_bytes(), raw]
}

#[test]
fn delete_leaves_no_trace_of_the_seed_record_in_any_file() {
    let (_temp, data) = temp_data_dir();
    let shared = Arc::new(FjallStore::open(&data).unwrap());
    let mut h = shared_harness(&shared, 3);
    let mut c = h.client(1, true);
    let load = |h: &keyward_testkit::Harness, name: &str| {
        h.server.store().load_wallet(&key("", name)).unwrap().unwrap().seed_record
    };
    create(&mut h, &mut c, "bystander", "b");
    create(&mut h, &mut c, "victim", "v1");
    let first = load(&h, "victim");
    let token = open(&mut h, &mut c, "victim", "v1");
    h.ok(&mut c, "create_account_path", json!({"token": token, "label": "savings"}));
    h.ok(&mut c, "change_password", json!({"name": "victim", "old": "v1", "new": "v2"}));
    let second = load(&h, "victim");
    let bystander = load(&h, "bystander");
    assert_ne!(first, second);

    // The scan finds a record that is there (so an empty result below means something).
    assert_eq!(files_containing(&data, &second).len(), 1);
    let [record, hex, raw] = <[Vec<u8>; 3]>::try_from(record_needles(&second)).unwrap();
    assert_eq!(files_containing(&data, &record).len(), 1);
    assert_eq!(files_containing(&data, &hex).len(), 1);
    assert_eq!(files_containing(&data, &raw).len(), 0, "the raw ciphertext is only ever stored as hex");
    // A replaced record is gone as soon as the change returns.
    for needle in record_needles(&first) {
        assert_eq!(files_containing(&data, &needle), Vec::<std::path::PathBuf>::new(), "old record left");
    }
    // Make fjall write table files too (wallet metadata and accounts leave the journal).
    shared.compact().unwrap();

    h.ok(&mut c, "delete_wallet", json!({"name": "victim", "password": "v2"}));
    let check = |when: &str| {
        for needle in record_needles(&first).into_iter().chain(record_needles(&second)) {
            assert_eq!(files_containing(&data, &needle), Vec::<std::path::PathBuf>::new(), "{when}");
        }
        assert_eq!(files_containing(&data, &bystander).len(), 1, "{when}: the other wallet's record is kept");
    };
    check("after delete_wallet returned");
    shared.compact().unwrap();
    check("after compacting");
    drop(h);
    drop(shared);
    check("after the store closed");
    let store = FjallStore::open(&data).unwrap();
    store.compact().unwrap();
    assert_eq!(store.load_wallet(&key("", "victim")).unwrap(), None);
    check("after reopening and compacting");
}

#[test]
fn files_are_0600_and_directories_0700() {
    let (_temp, data) = temp_data_dir();
    // A data directory that exists with a lax mode is tightened; the test's umask (often 022)
    // would give fjall's files 0644.
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let check = |when: &str| {
        for dir in all_dirs(&data) {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o700, "{when}: {}", dir.display());
        }
        let files = all_files(&data);
        assert!(files.len() > 5, "{files:?}");
        for file in files {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o600, "{when}: {}", file.display());
        }
    };
    {
        let store = FjallStore::open(&data).unwrap();
        for i in 0..5u8 {
            store.create_wallet(&key("d", &format!("w{i}")), &wallet(&[b'r', i])).unwrap();
        }
        store.replace_seed_record(&key("d", "w0"), b"r\0", b"new").unwrap();
        store.add_account(&key("d", "w1"), &account("a", 1)).unwrap();
        store.save_config("d", b"{}").unwrap();
        store.delete_wallet(&key("d", "w2")).unwrap();
        store.compact().unwrap();
        check("while open");
        // A file fjall writes with the process's umask between two writes is tightened at close.
        let journal = all_files(&data.join("db")).into_iter().next().unwrap();
        std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    check("after close");
    drop(FjallStore::open(&data).unwrap());
    check("after reopening");
}

#[test]
fn a_second_opener_in_the_same_process_is_refused() {
    let (_temp, data) = temp_data_dir();
    let first = FjallStore::open(&data).unwrap();
    first.save_config("", b"1").unwrap();
    let refused = FjallStore::open(&data).unwrap_err();
    assert!(matches!(refused, OpenError::InUse), "{refused:?}");
    assert_eq!(refused.to_string(), "data directory is in use by another keyward process (its LOCK file is locked)");
    assert!(!refused.to_string().contains(data.to_str().unwrap()));
    // The refused opener changed nothing.
    assert_eq!(first.load_config("").unwrap().as_deref(), Some(&b"1"[..]));
    drop(first);
    let again = FjallStore::open(&data).unwrap();
    assert_eq!(again.load_config("").unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn format_marker_is_written_checked_and_future_formats_are_refused() {
    let (_temp, data) = temp_data_dir();
    drop(FjallStore::open(&data).unwrap());
    let marker = data.join("FORMAT");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), format!("keyward-store format {FORMAT_VERSION}\n"));

    std::fs::write(&marker, "keyward-store format 2\n").unwrap();
    let error = FjallStore::open(&data).unwrap_err();
    assert!(matches!(error, OpenError::UnsupportedFormat { found: 2, supported: 1 }), "{error:?}");
    assert!(error.to_string().contains("newer keyward"), "{error}");

    std::fs::write(&marker, "something else").unwrap();
    let error = FjallStore::open(&data).unwrap_err();
    assert!(matches!(error, OpenError::Damaged(_)), "{error:?}");

    std::fs::remove_file(&marker).unwrap();
    let error = FjallStore::open(&data).unwrap_err();
    assert!(matches!(error, OpenError::Damaged(_)), "{error:?}");
    assert!(error.to_string().contains("FORMAT file is missing"), "{error}");
    assert!(!error.to_string().contains(data.to_str().unwrap()));

    // A FORMAT that cannot be read is an I/O error, not a missing marker.
    std::fs::create_dir(&marker).unwrap();
    let error = FjallStore::open(&data).unwrap_err();
    let expected = OpenError::Io { context: "read the FORMAT file", kind: std::io::ErrorKind::IsADirectory };
    assert_eq!(error.to_string(), expected.to_string());
    std::fs::remove_dir(&marker).unwrap();

    std::fs::write(&marker, "keyward-store format 1\n").unwrap();
    drop(FjallStore::open(&data).unwrap());
}

#[test]
fn record_files_left_by_a_crash_are_removed_at_open() {
    let (_temp, data) = temp_data_dir();
    {
        let store = FjallStore::open(&data).unwrap();
        store.create_wallet(&key("", "w"), &wallet(b"kept")).unwrap();
    }
    let seeds = data.join("seeds");
    std::fs::write(seeds.join("00000000000000ff.rec"), b"STALE-RECORD").unwrap();
    std::fs::write(seeds.join("0000000000000100.tmp"), b"HALF-WRITTEN").unwrap();
    std::fs::write(seeds.join("notes.txt"), b"not ours").unwrap();
    let store = FjallStore::open(&data).unwrap();
    let mut names: Vec<_> =
        std::fs::read_dir(&seeds).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["0000000000000001.rec", "notes.txt"]);
    assert!(files_containing(&data, b"STALE-RECORD").is_empty());
    assert!(files_containing(&data, b"HALF-WRITTEN").is_empty());
    assert_eq!(store.load_wallet(&key("", "w")).unwrap().unwrap().seed_record, b"kept");
    // New records never reuse the id of a file that was there.
    store.create_wallet(&key("", "x"), &wallet(b"next")).unwrap();
    assert!(seeds.join("0000000000000101.rec").exists());
}

#[test]
fn store_contract() {
    let (_temp, data) = temp_data_dir();
    let store = FjallStore::open(&data).unwrap();
    let w = key("", "w");
    assert_eq!(store.load_wallet(&w).unwrap(), None);
    assert_eq!(store.replace_seed_record(&w, b"a", b"b"), Err(StoreError::NotFound));
    assert_eq!(store.add_account(&w, &account("x", 1)), Err(StoreError::NotFound));
    assert_eq!(store.delete_wallet(&w), Err(StoreError::NotFound));
    store.create_wallet(&w, &wallet(b"one")).unwrap();
    assert_eq!(store.create_wallet(&w, &wallet(b"other")), Err(StoreError::AlreadyExists));
    assert_eq!(store.load_wallet(&w).unwrap().unwrap().seed_record, b"one");
    assert_eq!(store.replace_seed_record(&w, b"not it", b"two"), Err(StoreError::Conflict));
    store.replace_seed_record(&w, b"one", b"two").unwrap();
    // Accounts keep the order they were added in, labels are unique.
    store.add_account(&w, &account("zeta", 1)).unwrap();
    store.add_account(&w, &account("alpha", 2)).unwrap();
    assert_eq!(store.add_account(&w, &account("zeta", 3)), Err(StoreError::AlreadyExists));
    let loaded = store.load_wallet(&w).unwrap().unwrap();
    assert_eq!(loaded.seed_record, b"two");
    assert_eq!(loaded.accounts, [account("default", 0), account("zeta", 1), account("alpha", 2)]);
    assert_eq!(store.load_accounts(&w).unwrap().unwrap(), loaded.accounts);
    assert_eq!(store.load_accounts(&key("", "nope")).unwrap(), None);
    // Directories keep apart, names list sorted; keys are injective for any strings.
    for (dir, name) in [("a", "b"), ("a/b", "c"), ("", "a/b"), ("ab", "x"), ("a", "aa"), ("a", "z"), ("", "n\0ul")] {
        store.create_wallet(&key(dir, name), &wallet(format!("{dir}|{name}").as_bytes())).unwrap();
    }
    assert_eq!(store.list_wallets("").unwrap(), ["a/b", "n\0ul", "w"]);
    assert_eq!(store.list_wallets("a").unwrap(), ["aa", "b", "z"]);
    assert_eq!(store.list_wallets("a/b").unwrap(), ["c"]);
    assert_eq!(store.list_wallets("nope").unwrap(), Vec::<String>::new());
    assert_eq!(store.load_wallet(&key("a", "b")).unwrap().unwrap().seed_record, b"a|b");
    // Delete removes the accounts too: a new wallet of the same name starts afresh.
    store.delete_wallet(&w).unwrap();
    assert_eq!(store.load_wallet(&w).unwrap(), None);
    store.create_wallet(&w, &wallet(b"three")).unwrap();
    assert_eq!(store.load_wallet(&w).unwrap().unwrap().accounts, [account("default", 0)]);
    // Config per directory, replaced on save.
    assert_eq!(store.load_config("").unwrap(), None);
    store.save_config("", b"1").unwrap();
    store.save_config("", b"2").unwrap();
    store.save_config("a", b"3").unwrap();
    assert_eq!(store.load_config("").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(store.load_config("a").unwrap().as_deref(), Some(&b"3"[..]));
    // Overlong keys are a failure, not a panic.
    assert!(matches!(store.create_wallet(&key(&"d".repeat(70_000), "x"), &wallet(b"r")), Err(StoreError::Failed(_))));
}

#[test]
fn failures_name_no_paths() {
    let (_temp, data) = temp_data_dir();
    let store = FjallStore::open(&data).unwrap();
    store.create_wallet(&key("", "w"), &wallet(b"r")).unwrap();
    for entry in std::fs::read_dir(data.join("seeds")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let Err(StoreError::Failed(message)) = store.load_wallet(&key("", "w")) else { panic!("expected a failure") };
    assert!(message.contains("missing"), "{message}");
    assert!(!message.contains('/'), "{message}");
}

#[test]
fn concurrent_writers_and_readers_see_whole_wallets() {
    let (_temp, data) = temp_data_dir();
    let store = Arc::new(FjallStore::open(&data).unwrap());
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let w = key("", &format!("w{t}"));
                store.create_wallet(&w, &wallet(b"0")).unwrap();
                for i in 0..8u32 {
                    store.replace_seed_record(&w, i.to_string().as_bytes(), (i + 1).to_string().as_bytes()).unwrap();
                    store.add_account(&w, &account(&format!("a{i}"), i + 1)).unwrap();
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    for name in store.list_wallets("").unwrap() {
                        // A listed wallet always loads whole (its record file is there).
                        let loaded = store.load_wallet(&key("", &name)).unwrap().unwrap();
                        assert_eq!(loaded.accounts[0], account("default", 0));
                    }
                }
            })
        })
        .collect();
    for thread in writers.into_iter().chain(readers) {
        thread.join().unwrap();
    }
    for t in 0..3 {
        let loaded = store.load_wallet(&key("", &format!("w{t}"))).unwrap().unwrap();
        assert_eq!(loaded.seed_record, b"8");
        assert_eq!(loaded.accounts.len(), 9);
    }
    // Exactly one record file per wallet.
    assert_eq!(std::fs::read_dir(data.join("seeds")).unwrap().count(), 3);
}

#[test]
fn a_seed_record_may_be_up_to_64_kib_and_no_larger() {
    let (_temp, data) = temp_data_dir();
    let store = FjallStore::open(&data).unwrap();
    let largest = vec![0x5a; 64 * 1024];
    store.create_wallet(&key("", "big"), &wallet(&largest)).unwrap();
    assert_eq!(store.load_wallet(&key("", "big")).unwrap().map(|w| w.seed_record), Some(largest.clone()));
    let too_large = vec![0x5a; 64 * 1024 + 1];
    assert_eq!(
        store.create_wallet(&key("", "bigger"), &wallet(&too_large)),
        Err(StoreError::Failed("the seed record is too large".into()))
    );
    assert_eq!(store.load_wallet(&key("", "bigger")).unwrap(), None, "nothing was written");
    // A record replaced by a larger one is refused the same way, and the old one stays.
    assert!(store.replace_seed_record(&key("", "big"), &largest, &too_large).is_err());
    assert_eq!(store.load_wallet(&key("", "big")).unwrap().map(|w| w.seed_record), Some(largest));
    // A record file that grew past the limit on disk is damage, not a record.
    let file = std::fs::read_dir(data.join("seeds"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "rec"))
        .unwrap();
    std::fs::write(&file, vec![0x5a; 64 * 1024 + 1]).unwrap();
    assert_eq!(store.load_wallet(&key("", "big")), Err(StoreError::Failed("a seed record file is too large".into())));
}

#[test]
fn a_lost_record_file_keeps_its_id_and_no_new_wallet_takes_it() {
    let (_temp, data) = temp_data_dir();
    assert!(!FjallStore::exists_in(&data).unwrap(), "nothing there yet");
    {
        let store = FjallStore::open(&data).unwrap();
        store.create_wallet(&key("", "a"), &wallet(b"record a")).unwrap();
        store.create_wallet(&key("", "b"), &wallet(b"record b")).unwrap();
    }
    assert!(FjallStore::exists_in(&data).unwrap());
    // The newest record file is lost (say, a disk fault); its wallet still names it.
    let mut records: Vec<_> = std::fs::read_dir(data.join("seeds")).unwrap().map(|e| e.unwrap().path()).collect();
    records.sort();
    std::fs::remove_file(records.last().unwrap()).unwrap();
    let store = FjallStore::open(&data).unwrap();
    store.create_wallet(&key("", "c"), &wallet(b"record c")).unwrap();
    assert_eq!(
        store.load_wallet(&key("", "b")),
        Err(StoreError::Failed("a wallet's seed record file is missing".into())),
        "b must not read c's record"
    );
    assert_eq!(store.load_wallet(&key("", "c")).unwrap().map(|w| w.seed_record), Some(b"record c".to_vec()));
}
