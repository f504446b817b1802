//! A memory store that reports every call that changes what it holds, for tests that check where
//! and when writes happen.

use keyward_core::ClientRecord;
use keyward_core::audit::{Anchor, AuditEvent, AuditRecord};
use keyward_core::store::{Account, StoredWallet};
use keyward_core::{MemoryStore, Store, StoreError, WalletKey};

/// What a [`WatchedStore`] calls before each write, with the write's name.
pub type OnWrite = Box<dyn Fn(&'static str) + Send + Sync>;

/// A [`MemoryStore`] that calls `on_write` before every write (reads are passed through).
pub struct WatchedStore {
    inner: MemoryStore,
    on_write: OnWrite,
}

impl std::fmt::Debug for WatchedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedStore").finish_non_exhaustive()
    }
}

impl WatchedStore {
    /// An empty store watched by `on_write`.
    pub fn new(on_write: impl Fn(&'static str) + Send + Sync + 'static) -> Self {
        Self { inner: MemoryStore::new(), on_write: Box::new(on_write) }
    }
}

impl Store for WatchedStore {
    fn load_wallet(&self, key: &WalletKey) -> Result<Option<StoredWallet>, StoreError> {
        self.inner.load_wallet(key)
    }
    fn load_accounts(&self, key: &WalletKey) -> Result<Option<Vec<Account>>, StoreError> {
        self.inner.load_accounts(key)
    }
    fn load_failures(&self, principal: &str, key: &WalletKey) -> Result<u32, StoreError> {
        self.inner.load_failures(principal, key)
    }
    fn save_failures(&self, principal: &str, key: &WalletKey, failures: u32) -> Result<(), StoreError> {
        (self.on_write)("save_failures");
        self.inner.save_failures(principal, key, failures)
    }
    fn load_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.inner.load_clients()
    }
    fn save_client(&self, record: &ClientRecord) -> Result<(), StoreError> {
        (self.on_write)("save_client");
        self.inner.save_client(record)
    }
    fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        (self.on_write)("append_audit");
        self.inner.append_audit(events)
    }
    fn audit_bounds(&self) -> Result<(Anchor, Anchor), StoreError> {
        self.inner.audit_bounds()
    }
    fn read_audit(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.read_audit(after, limit)
    }
    fn create_wallet(&self, key: &WalletKey, wallet: &StoredWallet) -> Result<(), StoreError> {
        (self.on_write)("create_wallet");
        self.inner.create_wallet(key, wallet)
    }
    fn replace_seed_record(&self, key: &WalletKey, expected: &[u8], new: &[u8]) -> Result<(), StoreError> {
        (self.on_write)("replace_seed_record");
        self.inner.replace_seed_record(key, expected, new)
    }
    fn add_account(&self, key: &WalletKey, account: &Account) -> Result<(), StoreError> {
        (self.on_write)("add_account");
        self.inner.add_account(key, account)
    }
    fn delete_wallet(&self, key: &WalletKey) -> Result<(), StoreError> {
        (self.on_write)("delete_wallet");
        self.inner.delete_wallet(key)
    }
    fn list_wallets(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list_wallets(dir)
    }
    fn save_config(&self, dir: &str, config: &[u8]) -> Result<(), StoreError> {
        (self.on_write)("save_config");
        self.inner.save_config(dir, config)
    }
    fn load_config(&self, dir: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.load_config(dir)
    }
    fn directories(&self) -> Result<Vec<String>, StoreError> {
        self.inner.directories()
    }
}
