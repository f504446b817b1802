//! The storage interface the lifecycle runs on, and an in-memory implementation for tests.
//!
//! A `Store` is synchronous and shared between threads. Every method is one atomic change: after a
//! crash either all of it happened or none of it (the fjall store in `keyward-store` makes that true on
//! disk). Seed records are opaque bytes here; `seed_record` knows their format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::{Anchor, AuditEvent, AuditRecord};
use crate::principal::ClientRecord;
/// A wallet's seed record (the bytes a store keeps opaque) and its KDF parameters, for a store's
/// own checks and tools.
pub use crate::seed_record::{GrinWalletSeed, KdfParams, SeedRecord, SeedRecordError};

/// Where a wallet lives: a directory relative to the data root ("" for the root) and a wallet name.
/// Both are validated before a key is made (see `lifecycle::validate_name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalletKey {
    /// Relative directory, components joined by `/`; empty for the data root.
    pub dir: String,
    /// Wallet name.
    pub name: String,
}

/// One account of a wallet: a label and its BIP32 account index (path `m/index/0`, as grin does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Account label, unique in its wallet.
    pub label: String,
    /// The account's index.
    pub index: u32,
}

/// Everything stored for one wallet.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredWallet {
    /// The encrypted seed record (see `seed_record`).
    pub seed_record: Vec<u8>,
    /// The wallet's accounts, at least `default` (index 0).
    pub accounts: Vec<Account>,
}

impl std::fmt::Debug for StoredWallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredWallet")
            .field("seed_record", &format_args!("<{} bytes>", self.seed_record.len()))
            .field("accounts", &self.accounts)
            .finish()
    }
}

/// Storage failures. Messages name no file system paths and no secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `create_wallet` found a wallet already there.
    #[error("wallet already exists")]
    AlreadyExists,
    /// The wallet is not there.
    #[error("wallet not found")]
    NotFound,
    /// A compare-and-swap found a different value than expected (a concurrent change).
    #[error("wallet changed concurrently")]
    Conflict,
    /// The storage itself failed (I/O, corruption, an injected failure in tests).
    #[error("storage failure: {0}")]
    Failed(String),
}

/// Wallet storage. Implementations must make each call atomic and durable when it returns `Ok`.
pub trait Store: Send + Sync {
    /// Loads a wallet.
    fn load_wallet(&self, key: &WalletKey) -> Result<Option<StoredWallet>, StoreError>;
    /// Loads only a wallet's accounts (the hot path of token methods); `None` if there is no wallet.
    /// The default reads the whole wallet; stores that keep seed records apart should override it.
    fn load_accounts(&self, key: &WalletKey) -> Result<Option<Vec<Account>>, StoreError> {
        Ok(self.load_wallet(key)?.map(|w| w.accounts))
    }
    /// Failed password attempts a principal made on a wallet, so that the unlock throttle survives
    /// a restart. The default keeps nothing.
    fn load_failures(&self, principal: &str, key: &WalletKey) -> Result<u32, StoreError> {
        let _ = (principal, key);
        Ok(0)
    }
    /// Records the count of a principal's failed attempts on a wallet (0 clears it). The default
    /// keeps nothing.
    fn save_failures(&self, principal: &str, key: &WalletKey, failures: u32) -> Result<(), StoreError> {
        let _ = (principal, key, failures);
        Ok(())
    }
    /// The client registry, every record (revoked ones too). The default has none.
    fn load_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        Ok(Vec::new())
    }
    /// Adds or replaces (by name) a client's record. The default keeps no registry.
    fn save_client(&self, record: &ClientRecord) -> Result<(), StoreError> {
        let _ = record;
        Err(StoreError::Failed("this store keeps no client registry".into()))
    }
    /// Appends events to the audit log, in order, in one atomic write: each becomes an
    /// [`AuditRecord`] numbered after the last, stamped with the store's wall clock and chained to
    /// the one before. The store also applies its retention. The default keeps no log.
    fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let _ = events;
        Ok(())
    }
    /// The audit log's bounds: the anchor its retained records chain from and its head (the last
    /// record written).
    fn audit_bounds(&self) -> Result<(Anchor, Anchor), StoreError> {
        Ok((Anchor::default(), Anchor::default()))
    }
    /// Up to `limit` audit records after sequence number `after`, in stored order. A record that
    /// cannot be read is an error naming its sequence number.
    fn read_audit(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let _ = (after, limit);
        Ok(Vec::new())
    }
    /// Creates a wallet; `AlreadyExists` if one is there (and nothing changes).
    fn create_wallet(&self, key: &WalletKey, wallet: &StoredWallet) -> Result<(), StoreError>;
    /// Replaces the seed record if the current one equals `expected` (`Conflict` otherwise).
    fn replace_seed_record(&self, key: &WalletKey, expected: &[u8], new: &[u8]) -> Result<(), StoreError>;
    /// Adds an account (`AlreadyExists` if the label is taken).
    fn add_account(&self, key: &WalletKey, account: &Account) -> Result<(), StoreError>;
    /// Deletes a wallet and everything stored for it; `NotFound` if it is not there.
    fn delete_wallet(&self, key: &WalletKey) -> Result<(), StoreError>;
    /// Names of the wallets in a directory, sorted.
    fn list_wallets(&self, dir: &str) -> Result<Vec<String>, StoreError>;
    /// Saves a directory's config (JSON bytes), replacing any earlier one.
    fn save_config(&self, dir: &str, config: &[u8]) -> Result<(), StoreError>;
    /// Loads a directory's config.
    fn load_config(&self, dir: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The directories other than the root that hold a config or a wallet, sorted (the core
    /// bounds their number). The default, for a store that keeps no directories, is none.
    fn directories(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
}

/// A shared store is a store (tests restart a server on the same store this way).
impl<T: Store + ?Sized> Store for std::sync::Arc<T> {
    fn load_wallet(&self, key: &WalletKey) -> Result<Option<StoredWallet>, StoreError> {
        (**self).load_wallet(key)
    }
    fn load_accounts(&self, key: &WalletKey) -> Result<Option<Vec<Account>>, StoreError> {
        (**self).load_accounts(key)
    }
    fn load_failures(&self, principal: &str, key: &WalletKey) -> Result<u32, StoreError> {
        (**self).load_failures(principal, key)
    }
    fn save_failures(&self, principal: &str, key: &WalletKey, failures: u32) -> Result<(), StoreError> {
        (**self).save_failures(principal, key, failures)
    }
    fn load_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        (**self).load_clients()
    }
    fn save_client(&self, record: &ClientRecord) -> Result<(), StoreError> {
        (**self).save_client(record)
    }
    fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        (**self).append_audit(events)
    }
    fn audit_bounds(&self) -> Result<(Anchor, Anchor), StoreError> {
        (**self).audit_bounds()
    }
    fn read_audit(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        (**self).read_audit(after, limit)
    }
    fn create_wallet(&self, key: &WalletKey, wallet: &StoredWallet) -> Result<(), StoreError> {
        (**self).create_wallet(key, wallet)
    }
    fn replace_seed_record(&self, key: &WalletKey, expected: &[u8], new: &[u8]) -> Result<(), StoreError> {
        (**self).replace_seed_record(key, expected, new)
    }
    fn add_account(&self, key: &WalletKey, account: &Account) -> Result<(), StoreError> {
        (**self).add_account(key, account)
    }
    fn delete_wallet(&self, key: &WalletKey) -> Result<(), StoreError> {
        (**self).delete_wallet(key)
    }
    fn list_wallets(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        (**self).list_wallets(dir)
    }
    fn save_config(&self, dir: &str, config: &[u8]) -> Result<(), StoreError> {
        (**self).save_config(dir, config)
    }
    fn load_config(&self, dir: &str) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).load_config(dir)
    }
    fn directories(&self) -> Result<Vec<String>, StoreError> {
        (**self).directories()
    }
}

/// A `Store` in memory, for tests of the core and for embedders that persist elsewhere.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: crate::sync::Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    wallets: BTreeMap<WalletKey, StoredWallet>,
    configs: BTreeMap<String, Vec<u8>>,
    failures: BTreeMap<(String, WalletKey), u32>,
    clients: BTreeMap<String, ClientRecord>,
    audit: Vec<AuditRecord>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn load_wallet(&self, key: &WalletKey) -> Result<Option<StoredWallet>, StoreError> {
        Ok(self.lock().wallets.get(key).cloned())
    }

    fn load_accounts(&self, key: &WalletKey) -> Result<Option<Vec<Account>>, StoreError> {
        Ok(self.lock().wallets.get(key).map(|w| w.accounts.clone()))
    }

    fn load_failures(&self, principal: &str, key: &WalletKey) -> Result<u32, StoreError> {
        Ok(self.lock().failures.get(&(principal.to_owned(), key.clone())).copied().unwrap_or(0))
    }

    fn save_failures(&self, principal: &str, key: &WalletKey, failures: u32) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let at = (principal.to_owned(), key.clone());
        if failures == 0 {
            inner.failures.remove(&at);
        } else {
            inner.failures.insert(at, failures);
        }
        Ok(())
    }

    fn load_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        Ok(self.lock().clients.values().cloned().collect())
    }

    fn save_client(&self, record: &ClientRecord) -> Result<(), StoreError> {
        self.lock().clients.insert(record.name.clone(), record.clone());
        Ok(())
    }

    /// Records are stamped with time 0: the core's store has no clock.
    fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for event in events {
            let (seq, prev) = inner.audit.last().map_or((1, [0; 32]), |last| (last.seq + 1, last.hash));
            inner.audit.push(AuditRecord::seal(prev, seq, 0, event.clone()));
        }
        Ok(())
    }

    fn audit_bounds(&self) -> Result<(Anchor, Anchor), StoreError> {
        let inner = self.lock();
        let head = inner.audit.last().map_or(Anchor::default(), |last| Anchor { seq: last.seq, hash: last.hash });
        Ok((Anchor::default(), head))
    }

    fn read_audit(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(self.lock().audit.iter().filter(|r| r.seq > after).take(limit).cloned().collect())
    }

    fn create_wallet(&self, key: &WalletKey, wallet: &StoredWallet) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.wallets.contains_key(key) {
            return Err(StoreError::AlreadyExists);
        }
        inner.wallets.insert(key.clone(), wallet.clone());
        Ok(())
    }

    fn replace_seed_record(&self, key: &WalletKey, expected: &[u8], new: &[u8]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let wallet = inner.wallets.get_mut(key).ok_or(StoreError::NotFound)?;
        if wallet.seed_record != expected {
            return Err(StoreError::Conflict);
        }
        wallet.seed_record = new.to_vec();
        Ok(())
    }

    fn add_account(&self, key: &WalletKey, account: &Account) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let wallet = inner.wallets.get_mut(key).ok_or(StoreError::NotFound)?;
        if wallet.accounts.iter().any(|a| a.label == account.label) {
            return Err(StoreError::AlreadyExists);
        }
        wallet.accounts.push(account.clone());
        Ok(())
    }

    fn delete_wallet(&self, key: &WalletKey) -> Result<(), StoreError> {
        self.lock().wallets.remove(key).map(|_| ()).ok_or(StoreError::NotFound)
    }

    fn list_wallets(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().wallets.keys().filter(|k| k.dir == dir).map(|k| k.name.clone()).collect())
    }

    fn save_config(&self, dir: &str, config: &[u8]) -> Result<(), StoreError> {
        self.lock().configs.insert(dir.to_owned(), config.to_vec());
        Ok(())
    }

    fn load_config(&self, dir: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().configs.get(dir).cloned())
    }

    fn directories(&self) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        let dirs: std::collections::BTreeSet<&String> =
            inner.configs.keys().chain(inner.wallets.keys().map(|k| &k.dir)).filter(|d| !d.is_empty()).collect();
        Ok(dirs.into_iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that implements only what it must: every optional part takes the trait's default.
    struct Minimal(StoredWallet);

    impl Store for Minimal {
        fn load_wallet(&self, _: &WalletKey) -> Result<Option<StoredWallet>, StoreError> {
            Ok(Some(self.0.clone()))
        }
        fn create_wallet(&self, _: &WalletKey, _: &StoredWallet) -> Result<(), StoreError> {
            Err(StoreError::AlreadyExists)
        }
        fn replace_seed_record(&self, _: &WalletKey, _: &[u8], _: &[u8]) -> Result<(), StoreError> {
            Err(StoreError::Conflict)
        }
        fn add_account(&self, _: &WalletKey, _: &Account) -> Result<(), StoreError> {
            Err(StoreError::AlreadyExists)
        }
        fn delete_wallet(&self, _: &WalletKey) -> Result<(), StoreError> {
            Err(StoreError::NotFound)
        }
        fn list_wallets(&self, _: &str) -> Result<Vec<String>, StoreError> {
            Ok(Vec::new())
        }
        fn save_config(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
            Ok(())
        }
        fn load_config(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
    }

    fn client() -> ClientRecord {
        ClientRecord {
            name: "c".into(),
            role: crate::principal::Role::Reader,
            identity: crate::principal::Identity::Uid { uid: 1 },
            created_unix_ms: 0,
            revoked_unix_ms: None,
        }
    }

    fn wallet() -> StoredWallet {
        let accounts =
            vec![Account { label: "default".into(), index: 0 }, Account { label: "savings".into(), index: 1 }];
        StoredWallet { seed_record: b"secret-bearing record".to_vec(), accounts }
    }

    #[test]
    fn the_optional_parts_default_to_keeping_nothing_and_refusing_clients() {
        let store = Minimal(wallet());
        let key = WalletKey { dir: String::new(), name: "w".into() };
        assert_eq!(store.load_accounts(&key), Ok(Some(wallet().accounts)), "read from the whole wallet");
        store.save_failures("local", &key, 3).expect("accepted");
        assert_eq!(store.load_failures("local", &key), Ok(0), "kept nowhere");
        assert_eq!(store.load_clients(), Ok(Vec::new()));
        let record = client();
        assert_eq!(store.save_client(&record), Err(StoreError::Failed("this store keeps no client registry".into())));
        store.append_audit(&[]).expect("accepted");
        assert_eq!(store.audit_bounds(), Ok((Anchor::default(), Anchor::default())));
        assert_eq!(store.read_audit(0, 10), Ok(Vec::new()));
    }

    #[test]
    fn a_shared_store_passes_every_call_through() {
        let inner = std::sync::Arc::new(MemoryStore::new());
        let shared: &dyn Store = &inner;
        let key = WalletKey { dir: "d".into(), name: "w".into() };
        shared.create_wallet(&key, &wallet()).expect("created");
        assert_eq!(shared.create_wallet(&key, &wallet()), Err(StoreError::AlreadyExists));
        assert_eq!(shared.list_wallets("d"), Ok(vec!["w".to_owned()]));
        assert_eq!(shared.load_accounts(&key), Ok(Some(wallet().accounts)));
        let savings = Account { label: "savings".into(), index: 1 };
        assert_eq!(shared.add_account(&key, &savings), Err(StoreError::AlreadyExists));
        assert_eq!(shared.replace_seed_record(&key, b"not it", b"new"), Err(StoreError::Conflict));
        shared.replace_seed_record(&key, &wallet().seed_record, b"new").expect("replaced");
        assert_eq!(inner.load_wallet(&key).expect("loads").map(|w| w.seed_record), Some(b"new".to_vec()));
        shared.save_failures("p", &key, 4).expect("saved");
        assert_eq!(shared.load_failures("p", &key), Ok(4));
        shared.save_config("d", b"{}").expect("saved");
        assert_eq!(shared.load_config("d"), Ok(Some(b"{}".to_vec())));
        let record = client();
        shared.save_client(&record).expect("saved");
        assert_eq!(shared.load_clients(), Ok(vec![record]));
        let event = AuditEvent::new("p", "m", None, "ok");
        shared.append_audit(std::slice::from_ref(&event)).expect("appended");
        let records = shared.read_audit(0, 10).expect("read");
        assert_eq!(records.iter().map(|r| &r.event).collect::<Vec<_>>(), [&event]);
        let head = Anchor { seq: records[0].seq, hash: records[0].hash };
        assert_eq!(shared.audit_bounds(), Ok((Anchor::default(), head)));
        shared.append_audit(std::slice::from_ref(&event)).expect("appended");
        let after_first = shared.read_audit(records[0].seq, 10).expect("read");
        assert_eq!(after_first.iter().map(|r| r.seq).collect::<Vec<_>>(), [records[0].seq + 1], "strictly after");
        shared.delete_wallet(&key).expect("deleted");
        assert_eq!(shared.delete_wallet(&key), Err(StoreError::NotFound));
        assert_eq!(shared.load_wallet(&key), Ok(None));
    }

    #[test]
    fn a_stored_wallets_debug_shows_its_accounts_and_only_the_seed_records_length() {
        let text = format!("{:?}", wallet());
        assert!(text.starts_with("StoredWallet { seed_record: <21 bytes>, accounts: [Account {"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
