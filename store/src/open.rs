//! Opening a store: the exclusive `LOCK` (held until the store is dropped, when the modes of its
//! files are tightened once more), the `FORMAT` marker (checked, or written into a fresh
//! directory), the private directories, and the removal of seed record files that no committed
//! wallet names (what a crash leaves behind).

use std::collections::HashSet;
use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use fjall::{Database, KeyspaceCreateOptions};

use crate::{
    ACCOUNTS, AUDIT, AUDIT_META, AuditRetention, CLIENTS, CONFIG, DB_DIR, FORMAT_FILE, FORMAT_PREFIX, FORMAT_VERSION,
    FjallStore, LOCK_FILE, OpenError, SEEDS_DIR, State, THROTTLE, WALLETS, WalletMeta, describe, files, io_open,
    parse_seed_file_name,
};

/// How a [`FjallStore`] is opened: [`FjallStore::open_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// How much of the audit log is kept.
    pub audit_retention: AuditRetention,
    /// Where the audit log's head is kept outside the store ([`crate::head`]): compared with the
    /// log when the store opens, written after every append. Put it outside the store's directory
    /// (`keyward serve` uses `DATA_DIR/audit.head`). `None`: not kept.
    pub audit_head: Option<PathBuf>,
}

impl FjallStore {
    /// Opens the store in `data_dir` with the default [`StoreOptions`], creating the directory
    /// (0700) and the store if needed.
    ///
    /// Refuses a directory another store holds ([`OpenError::InUse`]) and one written in another
    /// format ([`OpenError::UnsupportedFormat`]). Removes seed record files no wallet names (left by
    /// a crash between writing a record and committing it, or between committing a delete or a
    /// password change and removing the old record).
    pub fn open(data_dir: &Path) -> Result<Self, OpenError> {
        Self::open_with(data_dir, StoreOptions::default())
    }

    /// Opens the store in `data_dir` as [`FjallStore::open`] does, with `options`.
    pub fn open_with(data_dir: &Path, options: StoreOptions) -> Result<Self, OpenError> {
        files::create_private_dir_all(data_dir).map_err(io_open("create the data directory"))?;
        if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Best effort: the data directory's own entry (its parent may not be ours to open).
            let _ = files::sync_dir(parent);
        }
        let lock = DirLock::acquire(data_dir)?;
        check_format(data_dir)?;
        let seeds = data_dir.join(SEEDS_DIR);
        let db_path = data_dir.join(DB_DIR);
        files::create_private_dir_all(&seeds).map_err(io_open("create the seeds directory"))?;
        files::create_private_dir_all(&db_path).map_err(io_open("create the database directory"))?;
        // Make the directory entries durable before anything in them is committed.
        files::sync_dir(data_dir).map_err(io_open("sync the data directory"))?;
        let db = Database::builder(&db_path).cache_size(8 * 1024 * 1024).open().map_err(|e| match e {
            fjall::Error::Locked => OpenError::InUse,
            e => OpenError::Database(describe(&e)),
        })?;
        let keyspace = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default).map_err(|e| OpenError::Database(describe(&e)))
        };
        let (wallets, accounts, config) = (keyspace(WALLETS)?, keyspace(ACCOUNTS)?, keyspace(CONFIG)?);
        let throttle = keyspace(THROTTLE)?;
        let (clients, audit, audit_meta) = (keyspace(CLIENTS)?, keyspace(AUDIT)?, keyspace(AUDIT_META)?);

        // Collect the records the committed state names, then remove every other record file.
        let mut referenced = HashSet::new();
        for guard in wallets.iter() {
            let (_, value) = guard.into_inner().map_err(|e| OpenError::Database(describe(&e)))?;
            let meta = WalletMeta::decode(&value).map_err(|_| OpenError::Damaged("wallet metadata is damaged"))?;
            referenced.insert(meta.record);
        }
        let mut next_record = referenced.iter().max().map_or(1, |max| max + 1);
        let mut removed = false;
        for entry in fs::read_dir(&seeds).map_err(io_open("list the seeds directory"))? {
            let entry = entry.map_err(io_open("list the seeds directory"))?;
            let name = entry.file_name();
            let Some((id, is_record)) = name.to_str().and_then(parse_seed_file_name) else { continue };
            next_record = next_record.max(id.saturating_add(1));
            if !(is_record && referenced.remove(&id)) {
                files::overwrite_and_remove(&entry.path()).map_err(io_open("remove a stale seed record"))?;
                removed = true;
            }
        }
        // A wallet whose record file is missing (damage) stays listed; loading it fails.
        if removed {
            files::sync_dir(&seeds).map_err(io_open("sync the seeds directory"))?;
        }
        tighten_store_files(data_dir).map_err(io_open("set the modes of the store's files"))?;
        let store = Self {
            state: RwLock::new(State { next_record, unremoved: Vec::new() }),
            db,
            wallets,
            accounts,
            config,
            throttle,
            clients,
            audit,
            audit_meta,
            retention: options.audit_retention,
            audit_head: options.audit_head,
            seeds,
            db_path,
            lock,
        };
        store.check_audit_head()?;
        Ok(store)
    }

    /// Whether `data_dir` holds a store (its format marker), found without opening, locking or
    /// creating anything: for tools that read a store but must not make one.
    pub fn exists_in(data_dir: &Path) -> io::Result<bool> {
        data_dir.join(FORMAT_FILE).try_exists()
    }

    /// The data directory this store was opened on.
    pub fn data_dir(&self) -> &Path {
        &self.lock.root
    }
}

/// The exclusive lock on `<data_dir>/LOCK`. Declared last in [`FjallStore`], so it is released
/// after the database has closed; on release it tightens the modes of the store's files once more.
pub(crate) struct DirLock {
    root: PathBuf,
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(root: &Path) -> Result<Self, OpenError> {
        let file = files::open_private(&root.join(LOCK_FILE)).map_err(io_open("open the LOCK file"))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { root: root.to_owned(), _file: file }),
            Err(TryLockError::WouldBlock) => Err(OpenError::InUse),
            Err(TryLockError::Error(e)) => Err(io_open("lock the LOCK file")(e)),
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Best effort: fjall may have written files since the last write through this store.
        let _ = tighten_store_files(&self.root);
    }
}

/// Sets the modes of everything the store owns under `root`: 0700 directories, 0600 files.
fn tighten_store_files(root: &Path) -> io::Result<()> {
    for name in [LOCK_FILE, FORMAT_FILE, DB_DIR, SEEDS_DIR] {
        files::tighten_tree(&root.join(name))?;
    }
    Ok(())
}

/// Reads `FORMAT`, or writes it when the directory holds no store yet.
fn check_format(root: &Path) -> Result<(), OpenError> {
    let path = root.join(FORMAT_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let text = std::str::from_utf8(&bytes).map_err(|_| OpenError::Damaged("the FORMAT file is not text"))?;
            let version = text
                .strip_prefix(FORMAT_PREFIX)
                .and_then(|rest| rest.trim_end().parse::<u32>().ok())
                .ok_or(OpenError::Damaged("the FORMAT file is not a keyward-store format marker"))?;
            if version != FORMAT_VERSION {
                return Err(OpenError::UnsupportedFormat { found: version, supported: FORMAT_VERSION });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A store's other files without its marker are damage, not a fresh directory.
            for name in [DB_DIR, SEEDS_DIR] {
                if root.join(name).try_exists().map_err(io_open("inspect the data directory"))? {
                    return Err(OpenError::Damaged("store files are present but the FORMAT file is missing"));
                }
            }
            let marker = format!("{FORMAT_PREFIX}{FORMAT_VERSION}\n");
            files::write_atomic(root, &root.join("FORMAT.tmp"), &path, marker.as_bytes())
                .map_err(io_open("write the FORMAT file"))
        }
        Err(e) => Err(io_open("read the FORMAT file")(e)),
    }
}
