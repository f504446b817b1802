//! How wallet keys, directories and accounts become fjall keys.
//!
//! A field is its byte length as a big-endian `u16` followed by its bytes. The encoding is
//! injective for any strings (not only validated names) and prefix-free, so the wallets of one
//! directory and the accounts of one wallet are exactly the keys that start with their prefix.

use keyward_core::store::{StoreError, WalletKey};

/// Longest fjall key this store writes (fjall's limit is 65536 bytes).
const MAX_KEY_LEN: usize = 60 * 1024;

fn push_field(out: &mut Vec<u8>, field: &str) -> Result<(), StoreError> {
    let len = u16::try_from(field.len()).map_err(|_| too_long())?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field.as_bytes());
    if out.len() > MAX_KEY_LEN {
        return Err(too_long());
    }
    Ok(())
}

fn too_long() -> StoreError {
    StoreError::Failed("wallet directory or name is too long for the store".into())
}

/// The prefix shared by every wallet key of `dir`: `len(dir) ‖ dir`.
pub(crate) fn dir_prefix(dir: &str) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(2 + dir.len());
    push_field(&mut out, dir)?;
    Ok(out)
}

/// A wallet's key in the `wallets` keyspace: `len(dir) ‖ dir ‖ len(name) ‖ name`.
pub(crate) fn wallet_key(key: &WalletKey) -> Result<Vec<u8>, StoreError> {
    let mut out = dir_prefix(&key.dir)?;
    push_field(&mut out, &key.name)?;
    Ok(out)
}

/// A principal's failure count on a wallet in the `throttle` keyspace: the wallet's key, then
/// `len(principal) ‖ principal`.
pub(crate) fn failures_key(principal: &str, key: &WalletKey) -> Result<Vec<u8>, StoreError> {
    let mut out = wallet_key(key)?;
    push_field(&mut out, principal)?;
    Ok(out)
}

/// An audit record's key in the `audit` keyspace: its sequence number, big-endian, so that the
/// records list in the order they were written.
pub(crate) fn audit_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The sequence number in an `audit` key; `None` for a key this store does not write.
pub(crate) fn audit_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// The wallet name in a `wallets` key that starts with `prefix` (from [`dir_prefix`]).
pub(crate) fn name_of(prefix: &[u8], key: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(prefix)?;
    let (len, name) = rest.split_first_chunk::<2>()?;
    if usize::from(u16::from_be_bytes(*len)) != name.len() {
        return None;
    }
    String::from_utf8(name.to_vec()).ok()
}

/// The directory a `wallets` or `config` key begins with (its first field).
pub(crate) fn dir_of(key: &[u8]) -> Option<String> {
    let (len, rest) = key.split_first_chunk::<2>()?;
    let dir = rest.get(..usize::from(u16::from_be_bytes(*len)))?;
    String::from_utf8(dir.to_vec()).ok()
}

/// An account's key in the `accounts` keyspace: the wallet's key, then the account's position in
/// the wallet (big-endian `u32`), so accounts list in the order they were added.
pub(crate) fn account_key(wallet: &[u8], position: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(wallet.len() + 4);
    out.extend_from_slice(wallet);
    out.extend_from_slice(&position.to_be_bytes());
    out
}

/// The position encoded in an account key of `wallet`.
pub(crate) fn position_of(wallet: &[u8], key: &[u8]) -> Option<u32> {
    let rest = key.strip_prefix(wallet)?;
    Some(u32::from_be_bytes(rest.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dir: &str, name: &str) -> WalletKey {
        WalletKey { dir: dir.into(), name: name.into() }
    }

    #[test]
    fn encoding_is_injective_and_prefix_free() {
        let keys = [key("", "ab"), key("a", "b"), key("ab", ""), key("a/b", "c"), key("a", "b/c"), key("", "a\0b")];
        let encoded: Vec<_> = keys.iter().map(|k| wallet_key(k).expect("short")).collect();
        for (i, a) in encoded.iter().enumerate() {
            for (j, b) in encoded.iter().enumerate() {
                if i != j {
                    assert_ne!(a, b);
                    assert!(!b.starts_with(a), "{:?} is a prefix of {:?}", keys[i], keys[j]);
                }
            }
        }
        let prefix = dir_prefix("a").expect("short");
        assert_eq!(name_of(&prefix, &encoded[1]).as_deref(), Some("b"));
        assert_eq!(name_of(&prefix, &encoded[2]), None);
        let account = account_key(&encoded[0], 7);
        assert_eq!(position_of(&encoded[0], &account), Some(7));
        assert_eq!(position_of(&encoded[1], &account), None);
    }

    #[test]
    fn keys_may_be_up_to_60_kib_and_failure_counts_are_per_principal_and_wallet() {
        let long = "d".repeat(30 * 1024);
        assert!(wallet_key(&key(&long, &long[..29 * 1024])).is_ok(), "59 KiB and a little");
        assert_eq!(wallet_key(&key(&long, &long)), Err(too_long()));
        let a = failures_key("alice", &key("", "w")).expect("short");
        assert_ne!(a, failures_key("bob", &key("", "w")).expect("short"));
        assert_ne!(a, failures_key("alice", &key("", "v")).expect("short"));
        assert!(a.starts_with(&wallet_key(&key("", "w")).expect("short")), "under its wallet's key");
    }

    #[test]
    fn audit_keys_sort_by_sequence_number() {
        let keys: Vec<_> = [0, 1, 255, 256, 70_000, u64::MAX].map(audit_key).into_iter().collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(audit_seq(&audit_key(70_000)), Some(70_000));
        assert_eq!(audit_seq(b"1234567"), None);
        assert_eq!(audit_seq(b"123456789"), None);
    }

    #[test]
    fn overlong_keys_are_refused() {
        assert!(wallet_key(&key(&"a".repeat(70_000), "b")).is_err());
        assert!(wallet_key(&key(&"a".repeat(40_000), &"b".repeat(40_000))).is_err());
    }
}
