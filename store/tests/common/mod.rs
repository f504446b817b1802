//! Helpers shared by the store's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyward_core::Server;
use keyward_core::store::{Account, Store, StoreError, StoredWallet, WalletKey};
use keyward_store::FjallStore;
use keyward_testkit::{Harness, TestClient, test_config};
use serde_json::{Value, json};

/// A wallet key.
pub fn key(dir: &str, name: &str) -> WalletKey {
    WalletKey { dir: dir.into(), name: name.into() }
}

/// A temporary directory and a data directory inside it (not yet created).
pub fn temp_data_dir() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    (temp, data)
}

/// A harness (server + virtual clock) over a fjall store on `data`, randomness from `seed`.
pub fn harness(data: &Path, seed: u8) -> Harness {
    let store = FjallStore::open(data).unwrap();
    Harness { server: Server::new(test_config(), Box::new(store), [seed; 32]), now_ms: 1_000 }
}

/// A `Store` that shares a `FjallStore` with the test, so the test can call its own methods (say,
/// `compact`) while a server uses it.
#[derive(Debug)]
pub struct SharedStore(pub Arc<FjallStore>);

impl Store for SharedStore {
    fn load_wallet(&self, key: &WalletKey) -> Result<Option<StoredWallet>, StoreError> {
        self.0.load_wallet(key)
    }
    fn load_accounts(&self, key: &WalletKey) -> Result<Option<Vec<Account>>, StoreError> {
        self.0.load_accounts(key)
    }
    fn create_wallet(&self, key: &WalletKey, wallet: &StoredWallet) -> Result<(), StoreError> {
        self.0.create_wallet(key, wallet)
    }
    fn replace_seed_record(&self, key: &WalletKey, expected: &[u8], new: &[u8]) -> Result<(), StoreError> {
        self.0.replace_seed_record(key, expected, new)
    }
    fn add_account(&self, key: &WalletKey, account: &Account) -> Result<(), StoreError> {
        self.0.add_account(key, account)
    }
    fn delete_wallet(&self, key: &WalletKey) -> Result<(), StoreError> {
        self.0.delete_wallet(key)
    }
    fn list_wallets(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        self.0.list_wallets(dir)
    }
    fn save_config(&self, dir: &str, config: &[u8]) -> Result<(), StoreError> {
        self.0.save_config(dir, config)
    }
    fn load_config(&self, dir: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.load_config(dir)
    }
    fn directories(&self) -> Result<Vec<String>, StoreError> {
        self.0.directories()
    }
    fn load_failures(&self, principal: &str, key: &WalletKey) -> Result<u32, StoreError> {
        self.0.load_failures(principal, key)
    }
    fn save_failures(&self, principal: &str, key: &WalletKey, failures: u32) -> Result<(), StoreError> {
        self.0.save_failures(principal, key, failures)
    }
    fn load_clients(&self) -> Result<Vec<keyward_core::ClientRecord>, StoreError> {
        self.0.load_clients()
    }
    fn save_client(&self, record: &keyward_core::ClientRecord) -> Result<(), StoreError> {
        self.0.save_client(record)
    }
    fn append_audit(&self, events: &[keyward_core::audit::AuditEvent]) -> Result<(), StoreError> {
        self.0.append_audit(events)
    }
    fn audit_bounds(&self) -> Result<(keyward_core::audit::Anchor, keyward_core::audit::Anchor), StoreError> {
        self.0.audit_bounds()
    }
    fn read_audit(&self, after: u64, limit: usize) -> Result<Vec<keyward_core::audit::AuditRecord>, StoreError> {
        self.0.read_audit(after, limit)
    }
}

/// A harness over a shared store.
pub fn shared_harness(store: &Arc<FjallStore>, seed: u8) -> Harness {
    let store = SharedStore(Arc::clone(store));
    Harness { server: Server::new(test_config(), Box::new(store), [seed; 32]), now_ms: 1_000 }
}

/// Creates a wallet with a fresh 12-word mnemonic.
pub fn create(h: &mut Harness, c: &mut TestClient, name: &str, password: &str) {
    let params = json!({"name": name, "mnemonic": null, "mnemonic_length": 16, "password": password});
    assert_eq!(h.ok(c, "create_wallet", params), Value::Null);
}

/// Opens a wallet and returns its token.
pub fn open(h: &mut Harness, c: &mut TestClient, name: &str, password: &str) -> Value {
    h.ok(c, "open_wallet", json!({"name": name, "password": password}))
}

/// Every regular file under `root`, recursively (symlinks are not followed).
pub fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// Every directory under `root`, `root` included.
pub fn all_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_owned()];
    let mut i = 0;
    while i < out.len() {
        for entry in std::fs::read_dir(&out[i]).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                out.push(entry.path());
            }
        }
        i += 1;
    }
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    // Find candidates by their first byte (fast enough in debug builds for fjall's 64 MiB journals).
    let Some(&first) = needle.first() else { return false };
    let mut from = 0;
    while let Some(offset) = haystack[from..].iter().position(|&b| b == first) {
        let start = from + offset;
        match haystack.get(start..start + needle.len()) {
            Some(window) if window == needle => return true,
            Some(_) => from = start + 1,
            None => return false,
        }
    }
    false
}

/// The files under `root` that contain `needle`.
pub fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    all_files(root).into_iter().filter(|path| contains(&std::fs::read(path).unwrap(), needle)).collect()
}
