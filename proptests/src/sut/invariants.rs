//! The invariants checked after every op: what the vault holds (masked seeds of current tokens
//! only, never a known master key in the clear), the live sessions, the armed store failure, and
//! that the store holds what the model says.

use std::collections::BTreeSet;

use keyward_core::Store;
use keyward_core::crypto::Password;
use keyward_core::store::{KdfParams, SeedRecord};

use crate::model::{DIRS, LEGACY_KDF, Model, PRINCIPALS, Step, TokenStatus};

use super::{Sut, password, wallet_key};

impl Sut {
    /// The vault's masked seeds, 64 bytes each.
    fn vault_chunks(&self) -> Vec<Vec<u8>> {
        let bytes = self.server.vault_masked_bytes();
        assert_eq!(bytes.len() % 64, 0, "masked seeds are 64 bytes");
        let chunks: Vec<Vec<u8>> = bytes.chunks(64).map(<[u8]>::to_vec).collect();
        assert_eq!(chunks.len(), self.server.open_wallet_count(), "open count and vault disagree");
        chunks
    }

    /// After each request: the vault gains a masked seed only when `open_wallet` issued `token`.
    pub(super) fn track_vault(&mut self, token: Option<u32>) {
        let fresh: Vec<Vec<u8>> =
            self.vault_chunks().into_iter().filter(|c| !self.chunk_owner.contains_key(c)).collect();
        match token {
            Some(token) => {
                assert_eq!(fresh.len(), 1, "open_wallet must add exactly one masked seed");
                self.chunk_owner.insert(fresh[0].clone(), token);
            }
            None => assert!(fresh.is_empty(), "the vault gained a masked seed without open_wallet"),
        }
    }

    /// The invariants, after every op.
    pub fn check(&mut self, model: &Model) {
        self.track_vault(None);
        let chunks = self.vault_chunks();
        let owners: BTreeSet<u32> = chunks.iter().map(|c| self.chunk_owner[c]).collect();
        assert_eq!(owners.len(), chunks.len(), "two masked seeds for one token");
        let current = model.current_tokens();
        let holdable = model.tokens_with(|s| matches!(s, TokenStatus::Current | TokenStatus::ExpiredUnswept));
        assert!(current.is_subset(&owners), "an open wallet's seed is missing from the vault");
        assert!(
            owners.is_subset(&holdable),
            "the vault holds the seed of a closed, stale or deleted wallet: owners {owners:?}, allowed {holdable:?}"
        );
        let swept = model.steps.iter().any(|s| matches!(s, Step::Timeout { .. } | Step::Shutdown));
        if swept {
            assert_eq!(owners, current, "after handle_timeout/shutdown the vault holds exactly the open wallets");
            assert_eq!(self.server.session_count(), model.sessions.len(), "live sessions after a sweep");
        }
        for (p, (name, _)) in (0u8..).zip(PRINCIPALS) {
            let (live, modelled) = (self.server.session_count_of(name), model.sessions_of(p).count());
            assert!(live >= modelled, "a live session of {name} is missing");
            assert!(!swept || live == modelled, "live sessions of {name} after a sweep");
        }
        for observed in self.observed.values() {
            if let Some(master) = &observed.master {
                let (secret, chain) = master.expose().split_at(32);
                for chunk in &chunks {
                    assert!(!chunk.windows(32).any(|w| w == secret || w == chain), "an unmasked seed is in the vault");
                }
            }
        }
        assert!(self.server.session_count() >= model.sessions.len(), "a live session is missing");
        assert_eq!(self.plan.armed(), model.armed, "armed store failure");
        self.check_store(model);
    }

    fn check_store(&mut self, model: &Model) {
        let failures = self.plan.failures();
        let failed_since = failures > self.failures_checked;
        self.failures_checked = failures;
        for dir in 0..2u8 {
            let config = self.store.load_config(DIRS[usize::from(dir)]).expect("reads");
            assert_eq!(config.is_some(), model.configs.contains(&dir), "config of dir {dir}");
            for name in 0..2u8 {
                let stored = self.store.load_wallet(&wallet_key(dir, name)).expect("reads");
                let expected = model.wallets.get(&(dir, name));
                let (Some(stored), Some(wallet)) = (&stored, expected) else {
                    assert_eq!(stored.is_some(), expected.is_some(), "wallet ({dir}, {name}) stored");
                    continue;
                };
                let mut accounts: Vec<(String, u32)> =
                    stored.accounts.iter().map(|a| (a.label.clone(), a.index)).collect();
                accounts.sort();
                let mut want = wallet.accounts.clone();
                want.sort();
                assert_eq!(accounts, want, "accounts of ({dir}, {name})");
                let record = SeedRecord::from_bytes(&stored.seed_record).expect("a stored record parses");
                let kdf = if wallet.legacy { LEGACY_KDF } else { KdfParams::INSECURE_FOR_TESTS };
                assert_eq!(record.kdf, kdf, "KDF parameters of ({dir}, {name})");
                if failed_since {
                    // A failed write must leave every wallet openable with the password it had.
                    assert!(
                        record.open(&Password::from(password(wallet.password))).is_ok(),
                        "after a failed store write, wallet ({dir}, {name}) does not open with its password"
                    );
                }
            }
        }
    }
}
