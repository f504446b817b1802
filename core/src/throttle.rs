//! Unlock throttling: failed password attempts on a wallet back off exponentially.
//!
//! The first `free_attempts` failures cost nothing extra; each later one doubles the wait before the
//! next attempt, from `base_ms` up to `max_ms`. A success clears the count.
//!
//! Only wallets that exist are tracked (the caller checks, `lifecycle::check_password`): a failed
//! attempt on a made-up name costs the attacker a KDF like any other attempt, but adds no entry here
//! and writes nothing to the store, so a flood of made-up names can neither fill this table nor lock
//! anyone out.
//!
//! The table holds at most `max_entries` wallets; a full table forgets the entry whose last failure is
//! oldest (see [`Throttle::failure`] for what that gives an attacker).

use std::collections::HashMap;

use crate::store::WalletKey;

/// Throttle settings. They read themselves from a config file's `[throttle]` table (every key
/// optional, unknown keys refused): `free_attempts`, `base_ms`, `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Failures allowed before any wait.
    pub free_attempts: u32,
    /// The first wait, in milliseconds.
    pub base_ms: u64,
    /// The longest wait, in milliseconds.
    pub max_ms: u64,
    /// Most wallets tracked; past that, the entry with the oldest last failure is forgotten.
    #[serde(skip)]
    pub max_entries: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self { free_attempts: 3, base_ms: 1000, max_ms: 15 * 60 * 1000, max_entries: 4096 }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    next_allowed_ms: u64,
    last_failure_ms: u64,
}

/// Failure counts per key: the core keys them by principal and wallet ([`PrincipalWallet`]), so
/// one principal's failures never make another wait.
#[derive(Debug)]
pub struct Throttle<K = PrincipalWallet> {
    config: ThrottleConfig,
    entries: HashMap<K, Entry>,
}

/// A principal's attempts on one wallet: the core's throttle key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrincipalWallet {
    /// The principal's name.
    pub principal: Box<str>,
    /// The wallet.
    pub wallet: WalletKey,
}

impl<K: std::hash::Hash + Eq + Ord + Clone> Throttle<K> {
    /// An empty throttle.
    pub fn new(config: ThrottleConfig) -> Self {
        Self { config, entries: HashMap::new() }
    }

    /// `Err(wait_ms)` if an attempt on `key` must wait. An untracked wallet never waits.
    pub fn check(&self, key: &K, now_ms: u64) -> Result<(), u64> {
        match self.entries.get(key) {
            Some(entry) if entry.next_allowed_ms > now_ms => Err(entry.next_allowed_ms - now_ms),
            _ => Ok(()),
        }
    }

    /// Makes room for one more entry: while the table is full, forgets the entry whose last failure
    /// is oldest (ties broken by key, so the choice does not depend on the hash map's order).
    fn make_room(&mut self) {
        while self.entries.len() >= self.config.max_entries.max(1) {
            let oldest = self
                .entries
                .iter()
                .min_by(|(ka, a), (kb, b)| a.last_failure_ms.cmp(&b.last_failure_ms).then_with(|| ka.cmp(kb)))
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => self.entries.remove(&key),
                None => break,
            };
        }
    }

    /// Whether `key` is tracked (if not, the host may restore a persisted count first).
    pub fn knows(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Restores a persisted failure count (after a restart, or after the entry was forgotten to make
    /// room): the wait it calls for starts now, so neither ever shortens a wait.
    pub fn restore(&mut self, key: &K, failures: u32, now_ms: u64) {
        if failures == 0 || self.entries.contains_key(key) {
            return;
        }
        self.make_room();
        let next_allowed_ms = now_ms.saturating_add(self.wait_for(failures));
        self.entries.insert(key.clone(), Entry { failures, next_allowed_ms, last_failure_ms: now_ms });
    }

    fn wait_for(&self, failures: u32) -> u64 {
        if failures <= self.config.free_attempts {
            return 0;
        }
        let doublings = (failures - self.config.free_attempts - 1).min(40);
        self.config.base_ms.saturating_mul(1u64 << doublings).min(self.config.max_ms)
    }

    /// The failure count of `key`.
    pub fn failures(&self, key: &K) -> u32 {
        self.entries.get(key).map_or(0, |e| e.failures)
    }

    /// Records a failed attempt on an existing wallet. A full table first forgets the entry whose
    /// last failure is oldest.
    ///
    /// What flooding gives an attacker: to push a real wallet's entry out, it must fail on
    /// `max_entries` other *existing* wallets more recently (made-up names add no entry), and each
    /// of those failures is itself throttled and persisted. A pushed-out count is not lost either:
    /// the host persists every count (`Store::save_failures`) and restores it at the wallet's next
    /// attempt, with the wait starting then. Only a count the store failed to save is forgotten.
    pub fn failure(&mut self, key: &K, now_ms: u64) {
        if !self.entries.contains_key(key) {
            self.make_room();
        }
        let wait = self.wait_for(self.failures(key).saturating_add(1));
        let entry = self.entries.entry(key.clone()).or_insert(Entry {
            failures: 0,
            next_allowed_ms: 0,
            last_failure_ms: now_ms,
        });
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure_ms = now_ms;
        if wait > 0 {
            entry.next_allowed_ms = now_ms.saturating_add(wait);
        }
    }

    /// Records a success: the count starts again.
    pub fn success(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_after_free_attempts() {
        let key = WalletKey { dir: String::new(), name: "w".into() };
        let mut throttle =
            Throttle::new(ThrottleConfig { free_attempts: 2, base_ms: 100, max_ms: 350, max_entries: 8 });
        throttle.failure(&key, 0);
        throttle.failure(&key, 0);
        assert_eq!(throttle.check(&key, 0), Ok(()));
        throttle.failure(&key, 0);
        assert_eq!(throttle.check(&key, 0), Err(100));
        throttle.failure(&key, 100);
        assert_eq!(throttle.check(&key, 100), Err(200));
        throttle.failure(&key, 300);
        assert_eq!(throttle.check(&key, 300), Err(350));
        throttle.success(&key);
        assert_eq!(throttle.check(&key, 300), Ok(()));
    }

    fn key(n: u32) -> WalletKey {
        WalletKey { dir: String::new(), name: format!("w{n}") }
    }

    #[test]
    fn a_full_table_forgets_the_oldest_failure_and_refuses_nobody_else() {
        let mut throttle = Throttle::new(ThrottleConfig { free_attempts: 0, base_ms: 10, max_ms: 100, max_entries: 2 });
        throttle.failure(&key(1), 0);
        throttle.failure(&key(2), 5);
        // A full table no longer refuses an untracked wallet.
        assert_eq!(throttle.check(&key(3), 6), Ok(()));
        throttle.failure(&key(3), 6);
        assert!(!throttle.knows(&key(1)), "the oldest failure makes room");
        assert!(throttle.knows(&key(2)) && throttle.knows(&key(3)));
        assert_eq!(throttle.check(&key(1), 6), Ok(()));
        assert_eq!(throttle.check(&key(2), 6), Err(9));
        assert_eq!(throttle.check(&key(3), 6), Err(10));
        assert_eq!(throttle.entries.len(), 2);
    }

    #[test]
    fn a_new_failure_keeps_an_entry_from_being_the_oldest() {
        let mut throttle = Throttle::new(ThrottleConfig { free_attempts: 3, base_ms: 10, max_ms: 100, max_entries: 2 });
        throttle.failure(&key(1), 0);
        throttle.failure(&key(2), 10);
        throttle.failure(&key(1), 20);
        throttle.failure(&key(3), 30);
        assert_eq!((throttle.failures(&key(1)), throttle.failures(&key(2)), throttle.failures(&key(3))), (2, 0, 1));
        // Failures on tracked wallets never evict anyone.
        for t in 31..40 {
            throttle.failure(&key(3), t);
        }
        assert_eq!(throttle.failures(&key(1)), 2);
    }

    #[test]
    fn eviction_does_not_depend_on_the_hash_order() {
        for order in [[2, 1], [1, 2]] {
            let mut throttle =
                Throttle::new(ThrottleConfig { free_attempts: 3, base_ms: 10, max_ms: 100, max_entries: 2 });
            for n in order {
                throttle.failure(&key(n), 0);
            }
            throttle.failure(&key(3), 0);
            assert!(!throttle.knows(&key(1)) && throttle.knows(&key(2)), "ties: the smallest key goes");
        }
    }

    #[test]
    fn restoring_adds_nothing_for_no_failures_and_never_overwrites_a_live_count() {
        let mut throttle = Throttle::new(ThrottleConfig { free_attempts: 0, base_ms: 10, max_ms: 100, max_entries: 4 });
        throttle.restore(&key(1), 0, 5);
        assert!(!throttle.knows(&key(1)));
        throttle.failure(&key(2), 0);
        throttle.restore(&key(2), 5, 50);
        assert_eq!((throttle.failures(&key(2)), throttle.check(&key(2), 5)), (1, Err(5)));
    }

    #[test]
    fn a_free_failure_never_makes_anyone_wait_even_if_the_clock_went_back() {
        let mut throttle = Throttle::new(ThrottleConfig { free_attempts: 2, base_ms: 10, max_ms: 100, max_entries: 4 });
        throttle.failure(&key(1), 100);
        assert_eq!((throttle.failures(&key(1)), throttle.check(&key(1), 50)), (1, Ok(())));
    }

    #[test]
    fn a_restored_count_makes_room_and_its_wait_starts_now() {
        let mut throttle = Throttle::new(ThrottleConfig { free_attempts: 1, base_ms: 10, max_ms: 100, max_entries: 2 });
        throttle.failure(&key(1), 0);
        throttle.failure(&key(2), 1);
        // key(3)'s persisted count (3 failures: one doubling) comes back into a full table.
        throttle.restore(&key(3), 3, 50);
        assert!(!throttle.knows(&key(1)));
        assert_eq!(throttle.check(&key(3), 50), Err(20));
        assert_eq!(throttle.entries.len(), 2);
        // A zero-size table still tracks the wallet at hand.
        let mut tiny = Throttle::new(ThrottleConfig { free_attempts: 0, base_ms: 10, max_ms: 100, max_entries: 0 });
        tiny.failure(&key(1), 0);
        tiny.failure(&key(2), 0);
        assert_eq!((tiny.entries.len(), tiny.check(&key(2), 0)), (1, Err(10)));
    }
}
