//! The seed vault: open wallets' master keys, kept only masked with a mask derived from the token.
//!
//! * `open` stores `master ⊕ SHA-512("keyward/vault/mask/v1" ‖ token)`, a lookup fingerprint
//!   `HMAC-SHA256(vault_key, "keyward/vault/fingerprint/v1" ‖ token)` and a keyed checksum
//!   `HMAC-SHA256(vault_key, "keyward/vault/checksum/v1" ‖ master)`. The token itself is not kept: only the client has it.
//! * `unlock` finds the wallet by the token's fingerprint, unmasks a copy of the master key outside the
//!   vault's lock, and checks the checksum in constant time. The copy is wiped when the call drops it.
//! * `close` and idle expiry wipe the masked key. A closed token's fingerprint is remembered (bounded)
//!   only to answer "Wallet has not been opened" rather than `InvalidKeychainMask`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::keys::PublicKeyCache;
use crate::principal::Principal;
use crate::secret::{MasterKey, Token};
use crate::store::WalletKey;

/// How many closed tokens are remembered for the friendlier error.
const CLOSED_TOKENS_REMEMBERED: usize = 1024;

/// `open` found every slot of the vault taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaultFull;

/// Why a token did not unlock a wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlockError {
    /// Wrong, stale or garbled token.
    InvalidToken,
    /// The token belonged to a wallet that was closed or expired since.
    Closed,
}

#[derive(Zeroize, ZeroizeOnDrop)]
struct MaskedSeed {
    masked: [u8; 64],
    checksum: [u8; 32],
}

struct OpenWallet {
    key: Arc<WalletKey>,
    /// Who opened it: its token works for this principal only.
    principal: Principal,
    /// Index of its masked seed in the vault's slots.
    slot: usize,
    opened_ms: u64,
    last_used_ms: u64,
    active_account: Arc<str>,
    /// Public keys computed for this wallet (public data; dropped with it).
    public_keys: Arc<PublicKeyCache>,
}

impl OpenWallet {
    fn expired(&self, limits: &TokenLimits, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_used_ms) >= limits.idle_ms
            || now_ms.saturating_sub(self.opened_ms) >= limits.lifetime_ms
    }
}

/// A wallet unlocked for one call.
pub struct Unlocked {
    /// Which wallet.
    pub key: Arc<WalletKey>,
    /// Its master key, wiped on drop.
    pub master: MasterKey,
    /// The label of its active account.
    pub active_account: Arc<str>,
    /// The public keys computed for this wallet since it was opened.
    pub public_keys: Arc<PublicKeyCache>,
}

impl fmt::Debug for Unlocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unlocked").field("key", &self.key).finish_non_exhaustive()
    }
}

/// Idle and absolute lifetimes of tokens, in milliseconds, how many wallets may be open, and
/// whether a password change ends the wallet's openings. It reads itself from a config file's
/// `[tokens]` table (every key optional, unknown keys refused): `max_open_wallets`, `idle_secs`,
/// `lifetime_secs`, `close_on_password_change`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenLimits {
    /// Most wallets open at once: the vault's masked seeds live in one fixed block of this many
    /// slots, allocated once, which the host can lock in memory (`mlock`).
    pub max_open_wallets: usize,
    /// A token unused this long expires and its wallet closes.
    #[serde(rename = "idle_secs", deserialize_with = "crate::units::ms_from_secs")]
    pub idle_ms: u64,
    /// A token older than this expires however busy.
    #[serde(rename = "lifetime_secs", deserialize_with = "crate::units::ms_from_secs")]
    pub lifetime_ms: u64,
    /// A successful `change_password` closes every opening of the wallet (every principal's, the
    /// caller's too), so no token issued under the old password outlives it: a password change is
    /// often the answer to a leak. Default `true`; each holder opens again with the new password.
    pub close_on_password_change: bool,
}

impl Default for TokenLimits {
    fn default() -> Self {
        Self {
            max_open_wallets: 64,
            idle_ms: 15 * 60 * 1000,
            lifetime_ms: 12 * 3600 * 1000,
            close_on_password_change: true,
        }
    }
}

/// The vault of open wallets.
pub struct Vault {
    fingerprint_mac: Hmac<Sha256>,
    checksum_mac: Hmac<Sha256>,
    last_sweep_ms: u64,
    limits: TokenLimits,
    /// The masked seeds, in one fixed block (see [`Vault::region`]); a free slot is all zeros.
    slots: Box<[MaskedSeed]>,
    free: Vec<usize>,
    /// Open wallets by their token's fingerprint: one look-up per call.
    by_fingerprint: HashMap<[u8; 32], OpenWallet>,
    /// Fingerprints by opening (a wallet and the principal that opened it), to close by name.
    by_key: HashMap<(WalletKey, Principal), [u8; 32]>,
    /// Closed tokens' fingerprints, with the principal that had opened them.
    closed: VecDeque<([u8; 32], Principal)>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault").field("open_wallets", &self.by_key.len()).finish_non_exhaustive()
    }
}

fn keyed_mac(key: &[u8; 32], label: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label);
    mac
}

fn mac(keyed: &Hmac<Sha256>, data: &[u8]) -> [u8; 32] {
    let mut mac = keyed.clone();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn apply_mask(token: &Token, bytes: &mut [u8; 64]) {
    let mut hasher = Sha512::new();
    hasher.update(b"keyward/vault/mask/v1");
    hasher.update(token.expose());
    let mut mask: [u8; 64] = hasher.finalize().into();
    for (b, m) in bytes.iter_mut().zip(mask.iter()) {
        *b ^= m;
    }
    mask.zeroize();
}

impl Vault {
    /// An empty vault keyed with 32 random bytes.
    pub fn new(mut vault_key: [u8; 32], limits: TokenLimits) -> Self {
        let fingerprint_mac = keyed_mac(&vault_key, b"keyward/vault/fingerprint/v1");
        let checksum_mac = keyed_mac(&vault_key, b"keyward/vault/checksum/v1");
        vault_key.zeroize();
        let capacity = limits.max_open_wallets.max(1);
        let slots = (0..capacity).map(|_| MaskedSeed { masked: [0; 64], checksum: [0; 32] }).collect();
        Self {
            slots,
            free: (0..capacity).rev().collect(),
            fingerprint_mac,
            checksum_mac,
            last_sweep_ms: 0,
            limits,
            by_fingerprint: HashMap::new(),
            by_key: HashMap::new(),
            closed: VecDeque::new(),
        }
    }

    fn fingerprint(&self, token: &Token) -> [u8; 32] {
        mac(&self.fingerprint_mac, token.expose())
    }

    /// Puts a wallet's master key in the vault under a fresh token for `principal`, replacing (and
    /// so invalidating) that principal's earlier token of that wallet. Each principal's opening is
    /// its own: another's stays open, under its own token.
    /// Fails with `VaultFull` when `max_open_wallets` openings are held already.
    pub fn open(
        &mut self,
        key: WalletKey,
        principal: &Principal,
        master: &MasterKey,
        token: &Token,
        now_ms: u64,
    ) -> Result<(), VaultFull> {
        // The earlier token becomes stale (`InvalidKeychainMask`), not "closed".
        let opening = (key, principal.clone());
        if let Some(earlier) = self.by_key.remove(&opening)
            && let Some(wallet) = self.by_fingerprint.remove(&earlier)
        {
            self.release(wallet.slot);
        }
        self.expire(now_ms);
        let slot = self.free.pop().ok_or(VaultFull)?;
        let seed = &mut self.slots[slot];
        seed.checksum = mac(&self.checksum_mac, master.expose());
        seed.masked = *master.expose();
        apply_mask(token, &mut seed.masked);
        let fingerprint = self.fingerprint(token);
        let wallet = OpenWallet {
            key: Arc::new(opening.0.clone()),
            principal: principal.clone(),
            slot,
            opened_ms: now_ms,
            last_used_ms: now_ms,
            active_account: Arc::from("default"),
            public_keys: Arc::default(),
        };
        self.by_key.insert(opening, fingerprint);
        self.by_fingerprint.insert(fingerprint, wallet);
        Ok(())
    }

    fn release(&mut self, slot: usize) {
        self.slots[slot].zeroize();
        self.free.push(slot);
    }

    /// The address and length of the block that holds every masked seed, for the host to lock in
    /// memory (`mlock`) so that it is never swapped out. It does not move for the vault's life.
    pub fn region(&self) -> (usize, usize) {
        (self.slots.as_ptr() as usize, std::mem::size_of_val(&*self.slots))
    }

    /// Closes `principal`'s opening of a wallet: its masked key is wiped and its token stops
    /// working. Other principals' openings stay. Returns whether it was open.
    pub fn close(&mut self, key: &WalletKey, principal: &Principal) -> bool {
        let Some(fingerprint) = self.by_key.remove(&(key.clone(), principal.clone())) else {
            return false;
        };
        self.forget(fingerprint);
        true
    }

    /// Closes every opening of a wallet (it is being deleted). Returns how many.
    pub fn close_everywhere(&mut self, key: &WalletKey) -> usize {
        let openings: Vec<_> = self.by_key.keys().filter(|(k, _)| k == key).cloned().collect();
        openings.iter().filter(|(k, p)| self.close(k, p)).count()
    }

    /// Closes every opening of a principal (it was revoked). Returns how many.
    pub fn close_principal(&mut self, principal: &str) -> usize {
        let openings: Vec<_> = self.by_key.keys().filter(|(_, p)| p.name() == principal).cloned().collect();
        openings.iter().filter(|(k, p)| self.close(k, p)).count()
    }

    fn forget(&mut self, fingerprint: [u8; 32]) {
        let Some(wallet) = self.by_fingerprint.remove(&fingerprint) else {
            return;
        };
        self.release(wallet.slot);
        if self.closed.len() >= CLOSED_TOKENS_REMEMBERED {
            self.closed.pop_front();
        }
        self.closed.push_back((fingerprint, wallet.principal));
    }

    /// Closes every wallet (shutdown).
    pub fn close_all(&mut self) {
        let openings: Vec<_> = self.by_key.keys().cloned().collect();
        for (key, principal) in openings {
            self.close(&key, &principal);
        }
    }

    /// Closes wallets whose token is idle too long or too old.
    pub fn expire(&mut self, now_ms: u64) {
        let limits = self.limits;
        self.last_sweep_ms = now_ms;
        let expired: Vec<(WalletKey, Principal)> = self
            .by_fingerprint
            .values()
            .filter(|w| w.expired(&limits, now_ms))
            .map(|w| (WalletKey::clone(&w.key), w.principal.clone()))
            .collect();
        for (key, principal) in expired {
            self.close(&key, &principal);
        }
    }

    /// The earliest time a token will expire, if any wallet is open.
    pub fn next_expiry(&self) -> Option<u64> {
        self.by_fingerprint
            .values()
            .map(|w| {
                w.last_used_ms
                    .saturating_add(self.limits.idle_ms)
                    .min(w.opened_ms.saturating_add(self.limits.lifetime_ms))
            })
            .min()
    }

    /// Finds the wallet of a token opened by `principal` and returns an unmasked copy of its master
    /// key. Another principal's token is refused as a wrong one is.
    pub fn unlock(&mut self, token: &Token, principal: &str, now_ms: u64) -> Result<Unlocked, UnlockError> {
        let fingerprint = self.find(token, principal, now_ms)?;
        let slot = self.by_fingerprint.get(&fingerprint).ok_or(UnlockError::InvalidToken)?.slot;
        let seed = &self.slots[slot];
        let mut bytes = seed.masked;
        apply_mask(token, &mut bytes);
        let master = MasterKey::from_bytes(bytes);
        bytes.zeroize();
        let checksum = mac(&self.checksum_mac, master.expose());
        if !bool::from(checksum.ct_eq(&seed.checksum)) {
            return Err(UnlockError::InvalidToken);
        }
        let wallet = self.used(&fingerprint, now_ms)?;
        Ok(Unlocked {
            key: Arc::clone(&wallet.key),
            master,
            active_account: Arc::clone(&wallet.active_account),
            public_keys: Arc::clone(&wallet.public_keys),
        })
    }

    /// Checks a token as [`Vault::unlock`] does, for a call that needs its wallet but not the
    /// master key (`accounts`): the seed stays masked. (The fingerprint, a keyed SHA-256 of the
    /// token, already names the one token that opened it; the checksum only guards the unmasking.)
    pub fn check(&mut self, token: &Token, principal: &str, now_ms: u64) -> Result<Arc<WalletKey>, UnlockError> {
        let fingerprint = self.find(token, principal, now_ms)?;
        Ok(Arc::clone(&self.used(&fingerprint, now_ms)?.key))
    }

    /// The fingerprint of `principal`'s live opening that `token` names.
    fn find(&mut self, token: &Token, principal: &str, now_ms: u64) -> Result<[u8; 32], UnlockError> {
        if now_ms.saturating_sub(self.last_sweep_ms) >= 1000 {
            self.expire(now_ms);
        }
        let fingerprint = self.fingerprint(token);
        let limits = self.limits;
        let Some(wallet) = self.by_fingerprint.get(&fingerprint) else {
            // Only its own principal learns that a token was real and is now closed; to anyone
            // else it is a wrong token.
            let own_closed = self.closed.iter().any(|(f, p)| *f == fingerprint && p.name() == principal);
            return Err(if own_closed { UnlockError::Closed } else { UnlockError::InvalidToken });
        };
        if wallet.principal.name() != principal {
            return Err(UnlockError::InvalidToken);
        }
        if wallet.expired(&limits, now_ms) {
            let (key, owner) = (WalletKey::clone(&wallet.key), wallet.principal.clone());
            self.close(&key, &owner);
            return Err(UnlockError::Closed);
        }
        Ok(fingerprint)
    }

    /// Marks an opening [`Vault::find`] found used now (it is there: `&mut self` held since).
    fn used(&mut self, fingerprint: &[u8; 32], now_ms: u64) -> Result<&OpenWallet, UnlockError> {
        let wallet = self.by_fingerprint.get_mut(fingerprint).ok_or(UnlockError::InvalidToken)?;
        wallet.last_used_ms = now_ms;
        Ok(wallet)
    }

    /// Sets the active account of `principal`'s opening of a wallet.
    pub fn set_active_account(&mut self, key: &WalletKey, principal: &Principal, label: &str) {
        let opening = (key.clone(), principal.clone());
        if let Some(wallet) = self.by_key.get(&opening).and_then(|f| self.by_fingerprint.get_mut(f)) {
            wallet.active_account = Arc::from(label);
        }
    }

    /// Whether `principal` holds a wallet open.
    pub fn is_open(&self, key: &WalletKey, principal: &Principal, now_ms: u64) -> bool {
        let opening = (key.clone(), principal.clone());
        self.by_key
            .get(&opening)
            .and_then(|f| self.by_fingerprint.get(f))
            .is_some_and(|w| !w.expired(&self.limits, now_ms))
    }

    /// How many principals hold wallets open, counted per wallet and principal (how many masked
    /// seeds the vault holds).
    pub fn open_count(&self) -> usize {
        self.by_key.len()
    }

    /// Every masked seed byte the vault holds (nothing once all wallets are closed), for the
    /// residency tests; panics if a free slot still holds bytes.
    #[cfg(any(test, feature = "test-probes"))]
    pub fn masked_bytes(&self) -> Vec<u8> {
        let free_slots_wiped =
            self.free.iter().all(|&i| self.slots[i].masked == [0; 64] && self.slots[i].checksum == [0; 32]);
        assert!(free_slots_wiped, "a free vault slot still holds a masked seed");
        self.by_fingerprint.values().flat_map(|w| self.slots[w.slot].masked).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> WalletKey {
        WalletKey { dir: String::new(), name: name.into() }
    }

    #[test]
    fn token_unlocks_only_its_wallet_and_masks_the_seed() {
        let mut vault = Vault::new(
            [9; 32],
            TokenLimits { max_open_wallets: 2, idle_ms: 100, lifetime_ms: 1000, ..TokenLimits::default() },
        );
        let master = MasterKey::from_bytes([7; 64]);
        let token = Token::from_bytes([1; 32]);
        vault.open(key("a"), &Principal::local(), &master, &token, 0).expect("room");
        let slot = vault.by_fingerprint.values().next().expect("one open wallet").slot;
        let held = &vault.slots[slot].masked;
        assert_ne!(held, master.expose());
        let unlocked = vault.unlock(&token, "local", 1).expect("unlocks");
        assert_eq!(unlocked.master.expose(), master.expose());
        assert_eq!(*unlocked.key, key("a"));
        assert_eq!(
            vault.unlock(&Token::from_bytes([2; 32]), "local", 1).map(|u| u.key),
            Err(UnlockError::InvalidToken)
        );
    }

    #[test]
    fn reopen_makes_old_token_stale_and_close_forgets_seed() {
        let mut vault = Vault::new([9; 32], TokenLimits::default());
        let master = MasterKey::from_bytes([7; 64]);
        let first = Token::from_bytes([1; 32]);
        let second = Token::from_bytes([2; 32]);
        vault.open(key("a"), &Principal::local(), &master, &first, 0).expect("room");
        vault.open(key("a"), &Principal::local(), &master, &second, 0).expect("room");
        assert!(vault.unlock(&first, "local", 0).is_err());
        assert!(vault.unlock(&second, "local", 0).is_ok());
        assert!(vault.close(&key("a"), &Principal::local()));
        assert_eq!(vault.open_count(), 0);
        assert_eq!(vault.unlock(&second, "local", 0).map(|u| u.key), Err(UnlockError::Closed));
    }

    #[test]
    fn idle_tokens_expire() {
        let mut vault = Vault::new(
            [9; 32],
            TokenLimits { max_open_wallets: 2, idle_ms: 100, lifetime_ms: 1000, ..TokenLimits::default() },
        );
        let token = Token::from_bytes([1; 32]);
        vault.open(key("a"), &Principal::local(), &MasterKey::from_bytes([7; 64]), &token, 0).expect("room");
        assert!(vault.unlock(&token, "local", 99).is_ok());
        assert!(vault.unlock(&token, "local", 198).is_ok());
        assert_eq!(vault.unlock(&token, "local", 298).map(|u| u.key), Err(UnlockError::Closed));
        assert_eq!(vault.open_count(), 0);
    }

    #[test]
    fn each_principal_has_its_own_opening_and_token() {
        let mut vault = Vault::new([9; 32], TokenLimits::default());
        let master = MasterKey::from_bytes([7; 64]);
        let (owner, reader) = (Principal::new("owner"), Principal::new("reader"));
        let (owner_token, reader_token) = (Token::from_bytes([1; 32]), Token::from_bytes([2; 32]));
        vault.open(key("a"), &owner, &master, &owner_token, 0).expect("room");
        vault.open(key("a"), &reader, &master, &reader_token, 0).expect("room");
        assert_eq!(vault.open_count(), 2);
        // A token works for the principal that opened the wallet only, and is refused to another
        // exactly as a wrong token is.
        assert!(vault.unlock(&owner_token, "owner", 1).is_ok());
        assert_eq!(vault.unlock(&owner_token, "reader", 1).map(|u| u.key), Err(UnlockError::InvalidToken));
        // Closing is per principal: the other's opening stays until it closes too.
        assert!(vault.close(&key("a"), &reader));
        assert!(!vault.close(&key("a"), &reader));
        assert!(vault.is_open(&key("a"), &owner, 1) && !vault.is_open(&key("a"), &reader, 1));
        assert!(vault.unlock(&owner_token, "owner", 2).is_ok());
        assert_eq!(vault.close_principal("owner"), 1);
        assert_eq!(vault.open_count(), 0);
        assert!(vault.masked_bytes().is_empty());
    }

    #[test]
    fn the_seed_block_is_fixed_and_sized_by_the_limit() {
        let mut vault = Vault::new([9; 32], TokenLimits { max_open_wallets: 3, ..TokenLimits::default() });
        let region = vault.region();
        assert_ne!(region.0, 0);
        assert_eq!(region.1, 3 * (64 + 32));
        vault
            .open(key("a"), &Principal::local(), &MasterKey::from_bytes([7; 64]), &Token::from_bytes([1; 32]), 0)
            .expect("room");
        assert_eq!(vault.region(), region, "the block does not move");
        assert_eq!(format!("{vault:?}"), "Vault { open_wallets: 1, .. }");
        let unlocked = vault.unlock(&Token::from_bytes([1; 32]), "local", 0).expect("unlocks");
        assert_eq!(format!("{unlocked:?}"), format!("Unlocked {{ key: {:?}, .. }}", key("a")));
        assert_eq!(&*unlocked.active_account, "default");
    }

    #[test]
    fn closing_by_wallet_by_principal_and_all_wipes_every_opening() {
        let mut vault = Vault::new([9; 32], TokenLimits::default());
        let master = MasterKey::from_bytes([7; 64]);
        let (owner, reader) = (Principal::new("owner"), Principal::new("reader"));
        let token = |n: u8| Token::from_bytes([n; 32]);
        vault.open(key("a"), &owner, &master, &token(1), 0).expect("room");
        vault.open(key("a"), &reader, &master, &token(2), 0).expect("room");
        vault.open(key("b"), &owner, &master, &token(3), 0).expect("room");
        assert_eq!(vault.masked_bytes().len(), 3 * 64);
        assert_eq!(vault.close_everywhere(&key("a")), 2);
        assert_eq!(vault.close_everywhere(&key("a")), 0);
        assert!(!vault.is_open(&key("a"), &owner, 1) && vault.is_open(&key("b"), &owner, 1));
        assert_eq!(vault.unlock(&token(2), "reader", 1).map(|u| u.key), Err(UnlockError::Closed));
        vault.open(key("c"), &reader, &master, &token(4), 0).expect("room");
        vault.close_all();
        assert_eq!(vault.open_count(), 0);
        assert!(vault.masked_bytes().is_empty());
        assert_eq!(vault.unlock(&token(4), "reader", 1).map(|u| u.key), Err(UnlockError::Closed));
        assert_eq!(vault.close_principal("owner"), 0);
    }

    #[test]
    fn the_active_account_and_expiry_are_per_opening() {
        let limits = TokenLimits { max_open_wallets: 4, idle_ms: 100, lifetime_ms: 250, ..TokenLimits::default() };
        let mut vault = Vault::new([9; 32], limits);
        let master = MasterKey::from_bytes([7; 64]);
        let (owner, reader) = (Principal::new("owner"), Principal::new("reader"));
        assert_eq!(vault.next_expiry(), None);
        vault.open(key("a"), &owner, &master, &Token::from_bytes([1; 32]), 10).expect("room");
        vault.open(key("a"), &reader, &master, &Token::from_bytes([2; 32]), 20).expect("room");
        vault.set_active_account(&key("a"), &reader, "savings");
        let active = |vault: &mut Vault, n: u8, who: &str| {
            vault.unlock(&Token::from_bytes([n; 32]), who, 90).map(|u| u.active_account.to_string())
        };
        assert_eq!(active(&mut vault, 1, "owner"), Ok("default".into()));
        assert_eq!(active(&mut vault, 2, "reader"), Ok("savings".into()));
        // Both used at 90: idle expiry at 190, lifetimes end at 260 and 270.
        assert_eq!(vault.next_expiry(), Some(190));
        assert!(vault.is_open(&key("a"), &owner, 189) && !vault.is_open(&key("a"), &owner, 190));
    }

    #[test]
    fn unlocking_sweeps_expired_openings_once_a_second() {
        let mut vault = Vault::new(
            [9; 32],
            TokenLimits { max_open_wallets: 4, idle_ms: 500, lifetime_ms: 100_000, ..TokenLimits::default() },
        );
        let master = MasterKey::from_bytes([7; 64]);
        let (a, b) = (Token::from_bytes([1; 32]), Token::from_bytes([2; 32]));
        vault.open(key("a"), &Principal::local(), &master, &a, 0).expect("room");
        vault.open(key("b"), &Principal::local(), &master, &b, 0).expect("room");
        assert!(vault.unlock(&b, "local", 400).is_ok());
        assert!(vault.unlock(&b, "local", 800).is_ok());
        assert_eq!(vault.open_count(), 2, "a idled out at 500, but no sweep within a second of the last");
        assert!(!vault.is_open(&key("a"), &Principal::local(), 800));
        assert!(vault.unlock(&b, "local", 1000).is_ok());
        assert_eq!(vault.open_count(), 1, "the sweep a second later closes it");
        assert_eq!(vault.unlock(&a, "local", 1000).map(|u| u.key), Err(UnlockError::Closed));
    }

    #[test]
    fn the_last_1024_closed_tokens_are_remembered() {
        let mut vault = Vault::new([9; 32], TokenLimits::default());
        let master = MasterKey::from_bytes([7; 64]);
        let token = |n: u32| {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&n.to_le_bytes());
            Token::from_bytes(bytes)
        };
        for n in 0..=1024 {
            vault.open(key("a"), &Principal::local(), &master, &token(n), 0).expect("room");
            assert!(vault.close(&key("a"), &Principal::local()));
        }
        assert_eq!(vault.unlock(&token(0), "local", 0).map(|u| u.key), Err(UnlockError::InvalidToken));
        assert_eq!(vault.unlock(&token(1), "local", 0).map(|u| u.key), Err(UnlockError::Closed));
        assert_eq!(vault.unlock(&token(1024), "local", 0).map(|u| u.key), Err(UnlockError::Closed));
    }

    #[test]
    fn another_principals_closed_token_is_a_wrong_token() {
        let mut vault = Vault::new([9; 32], TokenLimits::default());
        let token = Token::from_bytes([1; 32]);
        vault.open(key("a"), &Principal::new("owner"), &MasterKey::from_bytes([7; 64]), &token, 0).expect("room");
        assert!(vault.close(&key("a"), &Principal::new("owner")));
        assert_eq!(vault.unlock(&token, "owner", 1).map(|u| u.key), Err(UnlockError::Closed));
        assert_eq!(vault.unlock(&token, "reader", 1).map(|u| u.key), Err(UnlockError::InvalidToken));
    }
}
