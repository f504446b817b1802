//! The audit log on fjall: records in the `audit` keyspace, its bounds in `audit_meta`, and
//! retention.
//!
//! * `audit`: key = the record's sequence number (8 bytes, big-endian), value =
//!   [`AuditRecord::to_bytes`]. Retained records are exactly the keys `anchor.seq + 1 ..= head.seq`.
//! * `audit_meta`: one entry, `bounds` = the retention anchor then the head, each as its sequence
//!   number (8 bytes, big-endian) and hash (32 bytes). The head is the store's own note of its last
//!   record, so that removing records from the end of the log is detected.
//!
//! An append writes its records, the removals retention asks for and the new bounds in one batch.
//! Retention removes only records that verify (numbered, chained and hashed as they should be): a
//! damaged or edited record stays, with everything after it, as evidence, and retention resumes
//! only once it is dealt with.

use std::time::{SystemTime, UNIX_EPOCH};

use keyward_core::audit::{Anchor, AuditEvent, AuditRecord};
use keyward_core::store::StoreError;

use crate::{FjallStore, OpenError, db_failed, head, keys};

/// The key of the bounds entry in the `audit_meta` keyspace.
const BOUNDS_KEY: &[u8] = b"bounds";
/// Length of an encoded anchor: sequence number and hash.
const ANCHOR_LEN: usize = 8 + 32;
/// Most records one append removes for retention, so that an append's work stays bounded (a
/// lowered limit catches up over the following appends).
pub const MAX_REMOVED_PER_APPEND: usize = 1024;

/// How much of the audit log a [`FjallStore`] keeps: after each append, the oldest records go
/// while there are more than `max_records` or they are older than `max_age_ms` (at most
/// [`MAX_REMOVED_PER_APPEND`] per append). The log then verifies from its anchor, the last record
/// removed.
///
/// It reads itself from a config file's `[audit]` table (every key optional, unknown keys refused):
/// `max_records`, `max_age_days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditRetention {
    /// Most records kept. Default 1,000,000.
    pub max_records: u64,
    /// Age in milliseconds past which a record is removed. Default 90 days.
    #[serde(rename = "max_age_days", deserialize_with = "ms_from_days")]
    pub max_age_ms: u64,
}

/// Days in the file, milliseconds in the struct (saturating).
fn ms_from_days<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(<u64 as serde::Deserialize>::deserialize(deserializer)?.saturating_mul(86_400_000))
}

impl Default for AuditRetention {
    fn default() -> Self {
        Self { max_records: 1_000_000, max_age_ms: 90 * 24 * 60 * 60 * 1000 }
    }
}

/// The wall clock in Unix milliseconds (0 before 1970, saturating far in the future).
fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn push_anchor(out: &mut Vec<u8>, anchor: &Anchor) {
    out.extend_from_slice(&anchor.seq.to_be_bytes());
    out.extend_from_slice(&anchor.hash);
}

/// The bounds entry: anchor then head.
pub(crate) fn encode_bounds(anchor: &Anchor, head: &Anchor) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * ANCHOR_LEN);
    push_anchor(&mut out, anchor);
    push_anchor(&mut out, head);
    out
}

fn decode_anchor(bytes: &[u8; ANCHOR_LEN]) -> Anchor {
    let (mut seq, mut hash) = ([0u8; 8], [0u8; 32]);
    seq.copy_from_slice(&bytes[..8]);
    hash.copy_from_slice(&bytes[8..]);
    Anchor { seq: u64::from_be_bytes(seq), hash }
}

/// The anchor and head in a bounds entry; `None` for bytes this store does not write.
pub(crate) fn decode_bounds(bytes: &[u8]) -> Option<(Anchor, Anchor)> {
    let (anchor, head) = bytes.split_first_chunk::<ANCHOR_LEN>()?;
    let head: &[u8; ANCHOR_LEN] = head.try_into().ok()?;
    let (anchor, head) = (decode_anchor(anchor), decode_anchor(head));
    (anchor.seq <= head.seq).then_some((anchor, head))
}

/// Whether `record` is the one that follows `anchor`, unaltered.
fn follows(anchor: &Anchor, record: &AuditRecord) -> bool {
    Some(record.seq) == anchor.seq.checked_add(1) && record.prev == anchor.hash && record.hash == record.expected_hash()
}

/// What retention decides about the oldest records.
struct Retention {
    rules: AuditRetention,
    /// The head after the append.
    head_seq: u64,
    /// Records written before this are too old.
    cutoff_ms: u64,
    /// The anchor so far (moves with each record removed).
    anchor: Anchor,
    /// Removals left in this append.
    budget: usize,
}

impl Retention {
    /// Whether `record`, the oldest retained, goes now; if so the anchor moves to it. A record that
    /// does not follow the anchor stays (and so does everything after it).
    fn remove(&mut self, record: &AuditRecord) -> bool {
        let over = self.head_seq - self.anchor.seq > self.rules.max_records;
        let old = record.time_unix_ms < self.cutoff_ms;
        if self.budget == 0 || !(over || old) || !follows(&self.anchor, record) {
            return false;
        }
        self.anchor = Anchor { seq: record.seq, hash: record.hash };
        self.budget -= 1;
        true
    }
}

impl FjallStore {
    /// The log's bounds as stored (both default before the first record). Call under the lock.
    fn audit_bounds_locked(&self) -> Result<(Anchor, Anchor), StoreError> {
        match self.audit_meta.get(BOUNDS_KEY).map_err(db_failed("read the audit log's bounds"))? {
            None => Ok((Anchor::default(), Anchor::default())),
            Some(bytes) => {
                decode_bounds(&bytes).ok_or_else(|| StoreError::Failed("the audit log's bounds are damaged".into()))
            }
        }
    }

    pub(crate) fn audit_bounds_now(&self) -> Result<(Anchor, Anchor), StoreError> {
        let _state = self.read();
        self.audit_bounds_locked()
    }

    pub(crate) fn audit_append(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let _state = self.write();
        let (anchor, stored_head) = self.audit_bounds_locked()?;
        let now = now_unix_ms();
        let mut head = stored_head;
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            let seq = head.seq.checked_add(1).ok_or_else(|| StoreError::Failed("the audit log is full".into()))?;
            let record = AuditRecord::seal(head.hash, seq, now, event.clone());
            head = Anchor { seq, hash: record.hash };
            records.push(record);
        }

        let mut batch = self.db.batch();
        let mut retention = Retention {
            rules: self.retention,
            head_seq: head.seq,
            cutoff_ms: now.saturating_sub(self.retention.max_age_ms),
            anchor,
            // At least as many as this append adds, so the log never outgrows its bound.
            budget: MAX_REMOVED_PER_APPEND.max(records.len()),
        };
        // The oldest stored records first; the range starts past every removed key (no tombstones
        // to skip).
        if anchor.seq < stored_head.seq {
            let range = keys::audit_key(anchor.seq + 1)..=keys::audit_key(stored_head.seq);
            for guard in self.audit.range(range) {
                let (key, value) = guard.into_inner().map_err(db_failed("read the audit log"))?;
                let record = AuditRecord::from_bytes(&value).filter(|r| keys::audit_seq(&key) == Some(r.seq));
                if !record.is_some_and(|record| retention.remove(&record)) {
                    break;
                }
                batch.remove(&self.audit, key);
            }
        }
        // Then, with a tiny limit, some of this append's own records: they are never written.
        let mut first_kept = 0;
        if retention.anchor.seq == stored_head.seq {
            first_kept = records.iter().take_while(|record| retention.remove(record)).count();
        }
        for record in &records[first_kept..] {
            batch.insert(&self.audit, keys::audit_key(record.seq), record.to_bytes());
        }
        batch.insert(&self.audit_meta, BOUNDS_KEY, encode_bounds(&retention.anchor, &head));
        self.commit(batch)?;
        self.keep_head(&stored_head, &head);
        Ok(())
    }

    /// After an append from `before` to `after`: the head goes to the kept file, and to the log
    /// at INFO each time it passes a multiple of [`head::LOG_EVERY`]. A failed write of the file is
    /// logged (the records are committed; the next append writes it again).
    fn keep_head(&self, before: &Anchor, after: &Anchor) {
        if head::passes_log_mark(before.seq, after.seq) {
            tracing::info!(seq = after.seq, hash = %head::hex(&after.hash), "audit log head");
        }
        if let Some(path) = &self.audit_head
            && let Err(error) = head::write(path, after)
        {
            tracing::error!(%error, "cannot write audit.head");
        }
    }

    /// Compares the kept head with the log (at open): a cut, a rollback or a replacement is
    /// recorded in the log itself and logged at ERROR, and so is a log that had records but no kept
    /// head (an older version, or the file removed); then the file is brought up to date.
    pub(crate) fn check_audit_head(&self) -> Result<(), OpenError> {
        let Some(path) = self.audit_head.clone() else { return Ok(()) };
        let failed = |e: StoreError| OpenError::Database(e.to_string());
        let (anchor, stored_head) = self.audit_bounds_now().map_err(failed)?;
        let kept = head::read(&path).map_err(crate::io_open("read audit.head"))?;
        let finding = match kept {
            Some(kept) => head::compare(kept, anchor, stored_head, |seq| {
                let bytes = self.audit.get(keys::audit_key(seq)).ok()??;
                AuditRecord::from_bytes(&bytes).filter(|r| r.seq == seq).map(|r| r.hash)
            }),
            None if stored_head.seq > 0 => Some(head::not_kept(stored_head.seq)),
            None => None,
        };
        match finding {
            Some(outcome) => {
                tracing::error!(finding = %outcome, "the audit log and the head kept in audit.head disagree");
                // The append writes the file.
                self.audit_append(&[AuditEvent::new("keyward", "audit", None, &outcome)]).map_err(failed)
            }
            None => head::write(&path, &stored_head).map_err(crate::io_open("write audit.head")),
        }
    }

    pub(crate) fn audit_read(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let Some(start) = after.checked_add(1) else { return Ok(Vec::new()) };
        let mut out = Vec::with_capacity(limit.min(1024));
        if limit == 0 {
            return Ok(out);
        }
        let _state = self.read();
        for guard in self.audit.range(keys::audit_key(start)..) {
            let (key, value) = guard.into_inner().map_err(db_failed("read the audit log"))?;
            let seq = keys::audit_seq(&key).ok_or_else(|| StoreError::Failed("an audit log key is damaged".into()))?;
            let record = AuditRecord::from_bytes(&value)
                .ok_or_else(|| StoreError::Failed(format!("audit record {seq} is unreadable")))?;
            out.push(record);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The stored bytes of audit record `seq`, bypassing everything the log guarantees. For tests
    /// and forensic tools only.
    #[doc(hidden)]
    pub fn raw_audit_get(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let _state = self.read();
        Ok(self.audit.get(keys::audit_key(seq)).map_err(db_failed("read the audit log"))?.map(|v| v.to_vec()))
    }

    /// Overwrites the stored bytes of audit record `seq`, bypassing the chain and the bounds: what
    /// an attacker with the data directory could do. For tamper tests only.
    #[doc(hidden)]
    pub fn raw_audit_put(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let _state = self.write();
        let mut batch = self.db.batch();
        batch.insert(&self.audit, keys::audit_key(seq), bytes.to_vec());
        self.commit(batch)
    }

    /// Removes audit record `seq`, bypassing the chain and the bounds. For tamper tests only.
    #[doc(hidden)]
    pub fn raw_audit_remove(&self, seq: u64) -> Result<(), StoreError> {
        let _state = self.write();
        let mut batch = self.db.batch();
        batch.remove(&self.audit, keys::audit_key(seq));
        self.commit(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config file's `[audit]` keys: days become milliseconds, a missing key keeps its default,
    /// an unknown one is refused.
    #[test]
    fn retention_reads_the_files_keys_and_units() {
        let read = |text: &str| serde_json::from_str::<AuditRetention>(text);
        let retention = read(r#"{"max_records": 5, "max_age_days": 2}"#).expect("both keys");
        assert_eq!(retention, AuditRetention { max_records: 5, max_age_ms: 2 * 86_400_000 });
        assert_eq!(read("{}").expect("no key"), AuditRetention::default());
        let huge = read(r#"{"max_age_days": 18446744073709551615}"#).expect("saturates");
        assert_eq!(huge.max_age_ms, u64::MAX);
        assert!(read(r#"{"max_age_ms": 5}"#).is_err());
    }

    #[test]
    fn bounds_round_trip_and_bad_bytes_are_refused() {
        let anchor = Anchor { seq: 7, hash: [1; 32] };
        let head = Anchor { seq: 9, hash: [2; 32] };
        assert_eq!(decode_bounds(&encode_bounds(&anchor, &head)), Some((anchor, head)));
        assert_eq!(decode_bounds(&encode_bounds(&Anchor::default(), &Anchor::default())), Some(Default::default()));
        let bytes = encode_bounds(&anchor, &head);
        assert_eq!(decode_bounds(&bytes[..79]), None);
        assert_eq!(decode_bounds(&[bytes.as_slice(), b"x"].concat()), None);
        assert_eq!(decode_bounds(&encode_bounds(&head, &anchor)), None, "an anchor past the head");
    }

    fn event() -> AuditEvent {
        AuditEvent::new("owner", "open_wallet", None, "ok")
    }

    #[test]
    fn retention_removes_only_what_its_rules_ask_and_stops_at_a_bad_record() {
        let first = AuditRecord::seal([0; 32], 1, 100, event());
        let second = AuditRecord::seal(first.hash, 2, 200, event());
        let rules = AuditRetention { max_records: 10, max_age_ms: 1000 };
        let mut retention = Retention { rules, head_seq: 2, cutoff_ms: 150, anchor: Anchor::default(), budget: 5 };
        assert!(retention.remove(&first), "older than the cutoff");
        assert!(!retention.remove(&second), "young, and under the count");
        assert_eq!(retention.anchor, Anchor { seq: 1, hash: first.hash });

        let mut edited = first.clone();
        edited.event.outcome = "forbidden".into();
        let rules = AuditRetention { max_records: 0, max_age_ms: u64::MAX };
        let mut retention = Retention { rules, head_seq: 2, cutoff_ms: 0, anchor: Anchor::default(), budget: 5 };
        assert!(!retention.remove(&edited), "an edited record is evidence");
        assert!(!retention.remove(&second), "out of order");
        assert!(retention.remove(&first) && retention.remove(&second), "over the count");
        let mut retention = Retention { rules, head_seq: 2, cutoff_ms: 0, anchor: Anchor::default(), budget: 1 };
        assert!(retention.remove(&first) && !retention.remove(&second), "the budget is spent");
    }
}
