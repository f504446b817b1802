//! A [`Store`] that fails at the k-th write: the in-memory store behind a counter of write calls.
//!
//! Reads never fail. A write that fails changes nothing (as a crash before the write would), so the
//! lifecycle must leave the wallet as it was: openable with the old password.
//!
//! Only the wallet and config writes count (and may fail): the client registry is kept (the model
//! test registers its principals at start) but its writes are not the lifecycle's; throttle counts
//! and the audit log are not kept (the trait's defaults), as before principals.

use std::sync::{Arc, Mutex, PoisonError};

use keyward_core::store::{Account, StoredWallet};
use keyward_core::{ClientRecord, MemoryStore, Store, StoreError, WalletKey};

/// The shared switch of a [`FailingStore`]: arm it to make the k-th write from now fail.
#[derive(Debug, Default)]
pub struct FailPlan {
    state: Mutex<PlanState>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct PlanState {
    /// `Some(k)`: the k-th write from now fails (k ≥ 1), then the plan disarms itself.
    armed: Option<u32>,
    writes: u64,
    failures: u64,
}

impl FailPlan {
    fn with<R>(&self, f: impl FnOnce(&mut PlanState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Makes the `k`-th write from now fail (`k` = 1: the next one); `0` disarms.
    pub fn arm(&self, k: u32) {
        self.with(|s| s.armed = (k > 0).then_some(k));
    }

    /// How many writes remain until the armed failure (`None`: not armed).
    pub fn armed(&self) -> Option<u32> {
        self.with(|s| s.armed)
    }

    /// Writes attempted so far (failed ones included).
    pub fn writes(&self) -> u64 {
        self.with(|s| s.writes)
    }

    /// Writes failed so far.
    pub fn failures(&self) -> u64 {
        self.with(|s| s.failures)
    }

    /// Counts one write; `Err` if this is the armed one.
    fn write(&self) -> Result<(), StoreError> {
        self.with(|s| {
            s.writes += 1;
            match s.armed {
                Some(1) => {
                    s.armed = None;
                    s.failures += 1;
                    Err(StoreError::Failed("injected write failure".into()))
                }
                Some(k) => {
                    s.armed = Some(k - 1);
                    Ok(())
                }
                None => Ok(()),
            }
        })
    }
}

/// [`MemoryStore`] whose writes go through a [`FailPlan`].
#[derive(Debug)]
pub struct FailingStore {
    inner: Arc<MemoryStore>,
    plan: Arc<FailPlan>,
}

impl FailingStore {
    /// A store over `inner` (keep a clone of the `Arc` to inspect or plant data behind the plan's back).
    pub fn new(inner: Arc<MemoryStore>, plan: Arc<FailPlan>) -> Self {
        Self { inner, plan }
    }
}

impl Store for FailingStore {
    fn load_wallet(&self, key: &WalletKey) -> Result<Option<StoredWallet>, StoreError> {
        self.inner.load_wallet(key)
    }

    fn load_accounts(&self, key: &WalletKey) -> Result<Option<Vec<Account>>, StoreError> {
        self.inner.load_accounts(key)
    }

    fn load_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.inner.load_clients()
    }

    fn save_client(&self, record: &ClientRecord) -> Result<(), StoreError> {
        self.inner.save_client(record)
    }

    fn create_wallet(&self, key: &WalletKey, wallet: &StoredWallet) -> Result<(), StoreError> {
        self.plan.write()?;
        self.inner.create_wallet(key, wallet)
    }

    fn replace_seed_record(&self, key: &WalletKey, expected: &[u8], new: &[u8]) -> Result<(), StoreError> {
        self.plan.write()?;
        self.inner.replace_seed_record(key, expected, new)
    }

    fn add_account(&self, key: &WalletKey, account: &Account) -> Result<(), StoreError> {
        self.plan.write()?;
        self.inner.add_account(key, account)
    }

    fn delete_wallet(&self, key: &WalletKey) -> Result<(), StoreError> {
        self.plan.write()?;
        self.inner.delete_wallet(key)
    }

    fn list_wallets(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list_wallets(dir)
    }

    fn save_config(&self, dir: &str, config: &[u8]) -> Result<(), StoreError> {
        self.plan.write()?;
        self.inner.save_config(dir, config)
    }

    fn load_config(&self, dir: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.load_config(dir)
    }
    fn directories(&self) -> Result<Vec<String>, StoreError> {
        self.inner.directories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_exactly_the_armed_write_and_changes_nothing() {
        let inner = Arc::new(MemoryStore::new());
        let plan = Arc::new(FailPlan::default());
        let store = FailingStore::new(Arc::clone(&inner), Arc::clone(&plan));
        plan.arm(2);
        assert!(store.save_config("", b"{}").is_ok());
        assert!(store.save_config("a", b"{}").is_err());
        assert_eq!(inner.load_config("a"), Ok(None));
        assert!(store.save_config("a", b"{}").is_ok());
        assert_eq!((plan.writes(), plan.failures(), plan.armed()), (3, 1, None));
    }
}
