//! Unlock throttling: failed password attempts on a wallet back off exponentially.
//!
//! The first `free_attempts` failures cost nothing extra; each later one doubles the wait before the
//! next attempt, from `base_ms` up to `max_ms`. A success clears the count. Unknown wallets are
//! throttled the same way, so the throttle does not tell which wallets exist.

use std::collections::HashMap;

use crate::store::WalletKey;

/// Throttle settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures allowed before any wait.
    pub free_attempts: u32,
    /// The first wait, in milliseconds.
    pub base_ms: u64,
    /// The longest wait, in milliseconds.
    pub max_ms: u64,
    /// Most wallets tracked; past that, entries whose wait is over are forgotten first.
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

/// Failure counts per wallet.
#[derive(Debug, Default)]
pub struct Throttle {
    config: ThrottleConfig,
    entries: HashMap<WalletKey, Entry>,
}

impl Throttle {
    /// An empty throttle.
    pub fn new(config: ThrottleConfig) -> Self {
        Self { config, entries: HashMap::new() }
    }

    /// `Err(wait_ms)` if an attempt on `key` must wait. When the table is full and cannot record
    /// `key`, every untracked wallet waits `base_ms` (the throttle fails closed, never open).
    pub fn check(&mut self, key: &WalletKey, now_ms: u64) -> Result<(), u64> {
        if let Some(entry) = self.entries.get(key) {
            return if entry.next_allowed_ms > now_ms { Err(entry.next_allowed_ms - now_ms) } else { Ok(()) };
        }
        if self.has_room(now_ms) { Ok(()) } else { Err(self.config.base_ms.max(1)) }
    }

    /// Makes room by forgetting wallets whose last failure is older than the longest wait.
    fn has_room(&mut self, now_ms: u64) -> bool {
        if self.entries.len() >= self.config.max_entries {
            let forget_after = self.config.max_ms;
            self.entries.retain(|_, e| now_ms.saturating_sub(e.last_failure_ms) < forget_after);
        }
        self.entries.len() < self.config.max_entries
    }

    /// Whether `key` is tracked (if not, the host may restore a persisted count first).
    pub fn knows(&self, key: &WalletKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Restores a persisted failure count (after a restart): the wait it calls for starts now, so
    /// a restart never shortens a wait.
    pub fn restore(&mut self, key: &WalletKey, failures: u32, now_ms: u64) {
        if failures == 0 || self.entries.contains_key(key) || !self.has_room(now_ms) {
            return;
        }
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
    pub fn failures(&self, key: &WalletKey) -> u32 {
        self.entries.get(key).map_or(0, |e| e.failures)
    }

    /// Records a failed attempt.
    pub fn failure(&mut self, key: &WalletKey, now_ms: u64) {
        if !self.entries.contains_key(key) && !self.has_room(now_ms) {
            return;
        }
        let entry = self.entries.entry(key.clone()).or_insert(Entry {
            failures: 0,
            next_allowed_ms: 0,
            last_failure_ms: now_ms,
        });
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure_ms = now_ms;
        let failures = entry.failures;
        let wait = self.wait_for(failures);
        if let Some(entry) = self.entries.get_mut(key)
            && wait > 0
        {
            entry.next_allowed_ms = now_ms.saturating_add(wait);
        }
    }

    /// Records a success: the count starts again.
    pub fn success(&mut self, key: &WalletKey) {
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

    #[test]
    fn a_full_table_fails_closed_and_forgets_old_failures() {
        let key = |n: u32| WalletKey { dir: String::new(), name: format!("w{n}") };
        let mut throttle = Throttle::new(ThrottleConfig { free_attempts: 0, base_ms: 10, max_ms: 100, max_entries: 2 });
        throttle.failure(&key(1), 0);
        throttle.failure(&key(2), 0);
        assert_eq!(throttle.check(&key(3), 50), Err(10));
        throttle.failure(&key(3), 50);
        assert_eq!(throttle.check(&key(1), 50), Ok(()));
        // After the longest wait, old entries are forgotten and new wallets are tracked again.
        assert_eq!(throttle.check(&key(3), 150), Ok(()));
        throttle.failure(&key(3), 150);
        assert_eq!(throttle.check(&key(3), 150), Err(10));
    }
}
