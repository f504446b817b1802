//! # keyward-store
//!
//! The persistent [`Store`] of Keyward: wallets, their encrypted seed records, accounts and config
//! in a data directory, on [fjall](https://crates.io/crates/fjall) (an embedded LSM key-value store)
//! plus one small file per seed record. `spec/storage.md` is the full description of the layout.
//!
//! ```text
//! <data_dir>/            0700
//!   LOCK                 flock'ed while a store is open: a second opener is refused
//!   FORMAT               "keyward-store format 1\n", written once, before anything else
//!   db/                  the fjall database: keyspaces `wallets`, `accounts`, `config`, `throttle`,
//!                        `clients` (the client registry), `audit` and `audit_meta` (the audit log)
//!   seeds/<id>.rec       one encrypted seed record per file, named from `wallets`
//! ```
//!
//! * **Atomic, durable changes.** A seed record file is written to a temporary name, fsynced,
//!   renamed and its directory fsynced *before* the fjall batch that names it commits with
//!   `PersistMode::SyncAll`. The batch is the commit point of every change (create wallet, change
//!   password, add account, delete wallet, save config). Record files no committed state names
//!   (leftovers of a crash) are removed when the store opens.
//! * **Delete means gone.** Seed records never enter fjall (whose journal and old segments keep
//!   deleted values until compaction); deleting a wallet, or replacing its record, overwrites the
//!   old record file with zeros and unlinks it.
//! * **Private files.** Directories are 0700, files 0600 (fjall's own files are tightened at open,
//!   after every write and at close; they sit in 0700 directories in between).
//! * **A chained audit log.** Each append numbers, stamps (the wall clock) and chains its records
//!   and moves the log's head in one batch; retention ([`AuditRetention`]) removes the oldest in the
//!   same batch and moves the anchor the rest verifies from. See the `audit` module.
//! * **One process.** [`FjallStore::open`] takes an exclusive lock on `LOCK` and refuses with
//!   [`OpenError::InUse`] if another store (in this or another process) holds it.
//!
//! Every method is synchronous. Writes are serialized by one lock per store (each costs a few
//! fsyncs); reads run in parallel with each other.

mod audit;
mod files;
pub mod head;
mod keys;
mod open;

pub use audit::{AuditRetention, MAX_REMOVED_PER_APPEND};
pub use open::StoreOptions;

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use fjall::{Database, Keyspace, PersistMode};
use keyward_core::audit::{Anchor, AuditEvent, AuditRecord};
use keyward_core::store::{Account, Store, StoreError, StoredWallet, WalletKey};
use keyward_core::{ClientRecord, valid_client_name};
use serde::{Deserialize, Serialize};

use open::DirLock;

/// The on-disk format this code writes and reads (see `spec/storage.md`).
pub const FORMAT_VERSION: u32 = 1;

const FORMAT_FILE: &str = "FORMAT";
const FORMAT_PREFIX: &str = "keyward-store format ";
const LOCK_FILE: &str = "LOCK";
const DB_DIR: &str = "db";
const SEEDS_DIR: &str = "seeds";
const RECORD_SUFFIX: &str = ".rec";
const TEMP_SUFFIX: &str = ".tmp";
/// Seed records are a few hundred bytes; a larger file is damage, not a record.
const MAX_RECORD_LEN: u64 = 64 * 1024;

const WALLETS: &str = "wallets";
const ACCOUNTS: &str = "accounts";
const CONFIG: &str = "config";
const THROTTLE: &str = "throttle";
const CLIENTS: &str = "clients";
const AUDIT: &str = "audit";
const AUDIT_META: &str = "audit_meta";

/// Why a data directory could not be opened. Messages name no paths (the host knows the path it
/// passed and can add it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another store holds the directory's lock: another keyward process, or this one.
    #[error("data directory is in use by another keyward process (its LOCK file is locked)")]
    InUse,
    /// The directory was written in a format this version does not read.
    #[error(
        "data directory has store format {found}, but this keyward reads format {supported} only \
         (was it written by a newer keyward?)"
    )]
    UnsupportedFormat {
        /// The format found in `FORMAT`.
        found: u32,
        /// The format this code reads.
        supported: u32,
    },
    /// The directory's store files are inconsistent.
    #[error("data directory is damaged: {0}")]
    Damaged(&'static str),
    /// A file system operation failed.
    #[error("could not {context}: {kind}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The I/O error's kind.
        kind: io::ErrorKind,
    },
    /// fjall could not open its database.
    #[error("the database could not be opened: {0}")]
    Database(String),
}

fn io_open(context: &'static str) -> impl FnOnce(io::Error) -> OpenError {
    move |e| OpenError::Io { context, kind: e.kind() }
}

fn io_failed(context: &'static str) -> impl FnOnce(io::Error) -> StoreError {
    move |e| StoreError::Failed(format!("{context}: {}", e.kind()))
}

/// A fjall error as text without paths: the I/O kind or the error's variant only.
fn describe(e: &fjall::Error) -> String {
    match e {
        fjall::Error::Io(e) => format!("I/O error: {}", e.kind()),
        fjall::Error::Storage(lsm_error) => match lsm_error {
            fjall::LsmError::Io(e) => format!("storage I/O error: {}", e.kind()),
            _ => "storage engine error (data damaged?)".into(),
        },
        fjall::Error::JournalRecovery(_) => "journal recovery failed (data damaged?)".into(),
        fjall::Error::InvalidVersion(_) => "unknown fjall format version".into(),
        fjall::Error::Decompress(_) | fjall::Error::InvalidTrailer | fjall::Error::InvalidTag(_) => {
            "damaged data".into()
        }
        fjall::Error::Poisoned => "an earlier write failed; no more writes until restart".into(),
        fjall::Error::KeyspaceDeleted => "keyspace deleted".into(),
        fjall::Error::Locked => "database locked by another process".into(),
        fjall::Error::Unrecoverable => "database unrecoverable".into(),
        _ => "database error".into(),
    }
}

fn db_failed(context: &'static str) -> impl FnOnce(fjall::Error) -> StoreError {
    move |e| StoreError::Failed(format!("{context}: {}", describe(&e)))
}

/// The value stored for a wallet in the `wallets` keyspace.
#[derive(Debug, Serialize, Deserialize)]
struct WalletMeta {
    /// The id of the wallet's seed record file, `seeds/<id as 16 hex digits>.rec`.
    record: u64,
}

impl WalletMeta {
    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|_| StoreError::Failed("wallet metadata is damaged".into()))
    }

    fn encode(&self) -> Vec<u8> {
        // A struct of one integer serializes.
        serde_json::to_vec(self).expect("wallet metadata serializes")
    }
}

fn record_name(id: u64) -> String {
    format!("{id:016x}{RECORD_SUFFIX}")
}

fn temp_name(id: u64) -> String {
    format!("{id:016x}{TEMP_SUFFIX}")
}

/// The id in a file name of `seeds/`, and whether it is a finished record (`.rec`) or a temporary
/// file (`.tmp`). `None` for names this store does not write.
fn parse_seed_file_name(name: &str) -> Option<(u64, bool)> {
    let (hex, is_record) = if let Some(hex) = name.strip_suffix(RECORD_SUFFIX) {
        (hex, true)
    } else {
        (name.strip_suffix(TEMP_SUFFIX)?, false)
    };
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    Some((u64::from_str_radix(hex, 16).ok()?, is_record))
}

/// Mutable state, under the store's lock.
#[derive(Debug)]
struct State {
    /// The id the next record file gets. Ids are never reused while a file with that id exists.
    next_record: u64,
    /// Record files whose removal failed after their wallet's change committed; retried on every
    /// write and at the next open.
    unremoved: Vec<u64>,
}

/// The fjall-backed [`Store`]. See the crate documentation for the layout and its guarantees.
pub struct FjallStore {
    state: RwLock<State>,
    db: Database,
    wallets: Keyspace,
    accounts: Keyspace,
    config: Keyspace,
    throttle: Keyspace,
    clients: Keyspace,
    audit: Keyspace,
    audit_meta: Keyspace,
    retention: AuditRetention,
    /// Where the audit log's head is kept outside the store, if anywhere.
    audit_head: Option<PathBuf>,
    seeds: PathBuf,
    db_path: PathBuf,
    // Last: dropped after the database handles above.
    lock: DirLock,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("format", &FORMAT_VERSION)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl FjallStore {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        // The state is two plain fields that every writer leaves consistent; keep serving after a panic.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_record(&self, id: u64) -> Result<Vec<u8>, StoreError> {
        let file = File::open(self.seeds.join(record_name(id))).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::Failed("a wallet's seed record file is missing".into())
            } else {
                io_failed("read a seed record")(e)
            }
        })?;
        let mut bytes = Vec::new();
        file.take(MAX_RECORD_LEN + 1).read_to_end(&mut bytes).map_err(io_failed("read a seed record"))?;
        if bytes.len() as u64 > MAX_RECORD_LEN {
            return Err(StoreError::Failed("a seed record file is too large".into()));
        }
        Ok(bytes)
    }

    /// Writes a new record file durably and returns its id.
    fn write_record(&self, state: &mut State, bytes: &[u8]) -> Result<u64, StoreError> {
        if bytes.len() as u64 > MAX_RECORD_LEN {
            return Err(StoreError::Failed("the seed record is too large".into()));
        }
        let id = state.next_record;
        state.next_record += 1;
        let (temp, path) = (self.seeds.join(temp_name(id)), self.seeds.join(record_name(id)));
        files::write_atomic(&self.seeds, &temp, &path, bytes).map_err(io_failed("write a seed record"))?;
        Ok(id)
    }

    /// Removes record files whose wallet state no longer names them. On failure the ids stay queued.
    fn remove_records(&self, state: &mut State, ids: &[u64]) -> Result<(), StoreError> {
        state.unremoved.extend_from_slice(ids);
        let mut failed = Vec::new();
        let mut first_error = None;
        for id in std::mem::take(&mut state.unremoved) {
            if let Err(e) = files::overwrite_and_remove(&self.seeds.join(record_name(id))) {
                failed.push(id);
                first_error.get_or_insert(e);
            }
        }
        state.unremoved = failed;
        if let Some(e) = first_error {
            return Err(io_failed("remove an old seed record (it is removed at the next open)")(e));
        }
        files::sync_dir(&self.seeds).map_err(io_failed("sync the seeds directory"))
    }

    /// Commits a batch durably (fsync of the journal): the commit point of every change.
    fn commit(&self, batch: fjall::OwnedWriteBatch) -> Result<(), StoreError> {
        batch.durability(Some(PersistMode::SyncAll)).commit().map_err(db_failed("commit"))?;
        // fjall creates files with the process umask; keep them private (best effort, see docs).
        let _ = files::tighten_tree(&self.db_path);
        Ok(())
    }

    fn meta(&self, wallet: &[u8]) -> Result<Option<WalletMeta>, StoreError> {
        match self.wallets.get(wallet).map_err(db_failed("read a wallet"))? {
            Some(bytes) => Ok(Some(WalletMeta::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// A wallet's accounts with their positions, in position order.
    fn accounts_of(&self, wallet: &[u8]) -> Result<Vec<(u32, Account)>, StoreError> {
        let mut out = Vec::new();
        for guard in self.accounts.prefix(wallet) {
            let (key, value) = guard.into_inner().map_err(db_failed("read accounts"))?;
            let Some(position) = keys::position_of(wallet, &key) else { continue };
            let account: Account = serde_json::from_slice(&value)
                .map_err(|_| StoreError::Failed("an account record is damaged".into()))?;
            out.push((position, account));
        }
        Ok(out)
    }

    /// Forces every keyspace's in-memory data into table files and compacts them. Not needed for
    /// correctness or durability (the journal is fsynced on every change); used by tests and tools.
    #[doc(hidden)]
    pub fn compact(&self) -> Result<(), StoreError> {
        let _state = self.write();
        let keyspaces =
            [&self.wallets, &self.accounts, &self.config, &self.throttle, &self.clients, &self.audit, &self.audit_meta];
        for keyspace in keyspaces {
            keyspace.rotate_memtable_and_wait().map_err(db_failed("flush"))?;
            keyspace.major_compact().map_err(db_failed("compact"))?;
        }
        let _ = files::tighten_tree(&self.db_path);
        Ok(())
    }
}

fn account_bytes(account: &Account) -> Vec<u8> {
    // A struct of a string and an integer serializes.
    serde_json::to_vec(account).expect("an account serializes")
}

impl Store for FjallStore {
    fn load_wallet(&self, key: &WalletKey) -> Result<Option<StoredWallet>, StoreError> {
        let wallet = keys::wallet_key(key)?;
        let _state = self.read();
        let Some(meta) = self.meta(&wallet)? else { return Ok(None) };
        let seed_record = self.read_record(meta.record)?;
        let accounts = self.accounts_of(&wallet)?.into_iter().map(|(_, account)| account).collect();
        Ok(Some(StoredWallet { seed_record, accounts }))
    }

    fn load_accounts(&self, key: &WalletKey) -> Result<Option<Vec<Account>>, StoreError> {
        // The hot path of token methods: no seed record file is read.
        let wallet = keys::wallet_key(key)?;
        let _state = self.read();
        if self.meta(&wallet)?.is_none() {
            return Ok(None);
        }
        Ok(Some(self.accounts_of(&wallet)?.into_iter().map(|(_, account)| account).collect()))
    }

    fn create_wallet(&self, key: &WalletKey, wallet: &StoredWallet) -> Result<(), StoreError> {
        let wallet_key = keys::wallet_key(key)?;
        let positions =
            u32::try_from(wallet.accounts.len()).map_err(|_| StoreError::Failed("too many accounts".into()))?;
        let mut state = self.write();
        if self.meta(&wallet_key)?.is_some() {
            return Err(StoreError::AlreadyExists);
        }
        // The record is durable before the batch that names it commits; if the batch does not
        // commit, the unnamed file is removed at the next open.
        let record = self.write_record(&mut state, &wallet.seed_record)?;
        let mut batch = self.db.batch();
        batch.insert(&self.wallets, wallet_key.clone(), WalletMeta { record }.encode());
        for (position, account) in (0..positions).zip(&wallet.accounts) {
            batch.insert(&self.accounts, keys::account_key(&wallet_key, position), account_bytes(account));
        }
        self.commit(batch)?;
        if !state.unremoved.is_empty() {
            let _ = self.remove_records(&mut state, &[]);
        }
        Ok(())
    }

    fn replace_seed_record(&self, key: &WalletKey, expected: &[u8], new: &[u8]) -> Result<(), StoreError> {
        let wallet_key = keys::wallet_key(key)?;
        let mut state = self.write();
        let meta = self.meta(&wallet_key)?.ok_or(StoreError::NotFound)?;
        if self.read_record(meta.record)? != expected {
            return Err(StoreError::Conflict);
        }
        // New record first, then the switch (the commit point), then the old record goes. A crash
        // before the switch leaves the old password; after it, the new one.
        let record = self.write_record(&mut state, new)?;
        let mut batch = self.db.batch();
        batch.insert(&self.wallets, wallet_key, WalletMeta { record }.encode());
        self.commit(batch)?;
        // The change is committed: a failure to remove the old file is not the caller's failure
        // (it stays queued and is removed at the next open at the latest).
        let _ = self.remove_records(&mut state, &[meta.record]);
        Ok(())
    }

    fn add_account(&self, key: &WalletKey, account: &Account) -> Result<(), StoreError> {
        let wallet_key = keys::wallet_key(key)?;
        let _state = self.write();
        if self.meta(&wallet_key)?.is_none() {
            return Err(StoreError::NotFound);
        }
        let existing = self.accounts_of(&wallet_key)?;
        if existing.iter().any(|(_, a)| a.label == account.label) {
            return Err(StoreError::AlreadyExists);
        }
        let position = match existing.last() {
            Some((last, _)) => last.checked_add(1).ok_or_else(|| StoreError::Failed("too many accounts".into()))?,
            None => 0,
        };
        let mut batch = self.db.batch();
        batch.insert(&self.accounts, keys::account_key(&wallet_key, position), account_bytes(account));
        self.commit(batch)
    }

    fn delete_wallet(&self, key: &WalletKey) -> Result<(), StoreError> {
        let wallet_key = keys::wallet_key(key)?;
        let mut state = self.write();
        let meta = self.meta(&wallet_key)?.ok_or(StoreError::NotFound)?;
        let mut batch = self.db.batch();
        batch.remove(&self.wallets, wallet_key.clone());
        for (position, _) in self.accounts_of(&wallet_key)? {
            batch.remove(&self.accounts, keys::account_key(&wallet_key, position));
        }
        self.commit(batch)?;
        // Only now is the record unnamed; it must be gone before this returns `Ok`.
        self.remove_records(&mut state, &[meta.record])
    }

    fn list_wallets(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let prefix = keys::dir_prefix(dir)?;
        let _state = self.read();
        let mut names = Vec::new();
        for guard in self.wallets.prefix(&prefix) {
            let key = guard.key().map_err(db_failed("list wallets"))?;
            if let Some(name) = keys::name_of(&prefix, &key) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn load_failures(&self, principal: &str, key: &WalletKey) -> Result<u32, StoreError> {
        let key = keys::failures_key(principal, key)?;
        let _state = self.read();
        let value = self.throttle.get(key).map_err(db_failed("read the throttle"))?;
        Ok(value.and_then(|v| <[u8; 4]>::try_from(&v[..]).ok()).map_or(0, u32::from_le_bytes))
    }

    fn save_failures(&self, principal: &str, key: &WalletKey, failures: u32) -> Result<(), StoreError> {
        let key = keys::failures_key(principal, key)?;
        let _state = self.write();
        let mut batch = self.db.batch();
        if failures == 0 {
            batch.remove(&self.throttle, key);
        } else {
            batch.insert(&self.throttle, key, failures.to_le_bytes().to_vec());
        }
        self.commit(batch)
    }

    fn load_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let _state = self.read();
        let mut records = Vec::new();
        for guard in self.clients.iter() {
            let (key, value) = guard.into_inner().map_err(db_failed("read the client registry"))?;
            let record = ClientRecord::from_bytes(&value).filter(|record| record.name.as_bytes() == &*key);
            let Some(record) = record else {
                let name: String = String::from_utf8_lossy(&key).chars().take(64).collect();
                return Err(StoreError::Failed(format!(
                    "the record of client '{}' is unreadable",
                    name.escape_debug()
                )));
            };
            records.push(record);
        }
        Ok(records)
    }

    fn save_client(&self, record: &ClientRecord) -> Result<(), StoreError> {
        // `load_clients` refuses a record whose name is not valid: never write one.
        if !valid_client_name(&record.name) {
            return Err(StoreError::Failed("not a valid client name".into()));
        }
        let _state = self.write();
        let mut batch = self.db.batch();
        batch.insert(&self.clients, record.name.as_bytes(), record.to_bytes());
        self.commit(batch)
    }

    fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.audit_append(events)
    }

    fn audit_bounds(&self) -> Result<(Anchor, Anchor), StoreError> {
        self.audit_bounds_now()
    }

    fn read_audit(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_read(after, limit)
    }

    fn save_config(&self, dir: &str, config: &[u8]) -> Result<(), StoreError> {
        let key = keys::dir_prefix(dir)?;
        let _state = self.write();
        let mut batch = self.db.batch();
        batch.insert(&self.config, key, config.to_vec());
        self.commit(batch)
    }

    fn load_config(&self, dir: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = keys::dir_prefix(dir)?;
        let _state = self.read();
        Ok(self.config.get(key).map_err(db_failed("read config"))?.map(|value| value.to_vec()))
    }

    fn directories(&self) -> Result<Vec<String>, StoreError> {
        let _state = self.read();
        let mut dirs = std::collections::BTreeSet::new();
        // Every wallet and config key: bounded by the wallets a store holds (a call that may add a
        // directory pays it, under the core's directory lock, after its KDF).
        for guard in self.config.iter().chain(self.wallets.iter()) {
            let key = guard.key().map_err(db_failed("list directories"))?;
            if let Some(dir) = keys::dir_of(&key).filter(|dir| !dir.is_empty()) {
                dirs.insert(dir);
            }
        }
        Ok(dirs.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fjall_errors_are_described_by_kind_without_paths() {
        let io = || io::Error::new(io::ErrorKind::PermissionDenied, "/home/someone/keyward/db/journal");
        let cases = [
            (fjall::Error::Io(io()), "I/O error: permission denied"),
            (
                fjall::Error::JournalRecovery(fjall::JournalRecoveryError::TooManyItems),
                "journal recovery failed (data damaged?)",
            ),
            (fjall::Error::InvalidTrailer, "damaged data"),
            (fjall::Error::Poisoned, "an earlier write failed; no more writes until restart"),
            (fjall::Error::KeyspaceDeleted, "keyspace deleted"),
            (fjall::Error::Locked, "database locked by another process"),
            (fjall::Error::Unrecoverable, "database unrecoverable"),
        ];
        for (error, text) in cases {
            assert_eq!(describe(&error), text);
        }
    }

    #[test]
    fn seed_file_names_parse() {
        assert_eq!(parse_seed_file_name(&record_name(0x2a)), Some((0x2a, true)));
        assert_eq!(parse_seed_file_name(&temp_name(u64::MAX)), Some((u64::MAX, false)));
        for other in ["", ".rec", "2a.rec", "000000000000002A.rec", "000000000000002a.rec.bak", "x.tmp"] {
            assert_eq!(parse_seed_file_name(other), None, "{other}");
        }
    }
}
