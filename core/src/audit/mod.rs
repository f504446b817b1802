//! The audit log's records and their hash chain.
//!
//! The core queues an [`AuditEvent`] for every lifecycle, key-use and administrative call and
//! every refusal; the host's store appends them, each as an [`AuditRecord`] that carries the hash
//! of the one before it, so that an edited, removed or reordered record breaks the chain
//! ([`verify`]). Records hold who, what, which wallet and the outcome: never a secret (no
//! password, mnemonic, token, key or message). A record's time is the store's wall clock when it
//! wrote it; a coalesced record also carries the first and last time of the events it stands for,
//! from the host's clock (the core has none of its own).
//!
//! No client can flush the log: cheap events (refusals, fast calls) are coalesced and budgeted per
//! principal before they are written (the queue's rules are in [`AuditQueue`]'s module).

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// One call or refusal, as the core reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Who: the principal's name.
    pub principal: String,
    /// What: the method (or `handshake` for a refused connection).
    pub method: String,
    /// Which wallet (`dir/name` for a wallet in a directory). Records written before `target`
    /// existed name the client of a client administration call here.
    pub wallet: Option<String>,
    /// The client an administrative call acted on (`add_client`, `pair_client`, `set_client_role`,
    /// `revoke_client`); `None` for every other event, and absent from the JSON then (so records
    /// written before it existed read and hash as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `ok`, or why it was refused or failed (`wrong password`, `throttled`, `forbidden`, ...).
    pub outcome: String,
    /// How many events this record stands for (at least 1): a flood of the same refusal is one
    /// record, not one per request.
    pub count: u32,
    /// For a record that stands for events coalesced over a time window: when the first and the
    /// last of them happened (host clock, Unix milliseconds). `None` for a single event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
}

impl AuditEvent {
    /// One event, standing for itself.
    pub fn new(principal: &str, method: &str, wallet: Option<String>, outcome: &str) -> Self {
        Self {
            principal: principal.to_owned(),
            method: method.to_owned(),
            wallet,
            target: None,
            outcome: outcome.to_owned(),
            count: 1,
            span: None,
        }
    }

    /// The same event, naming `target` as the client it acted on.
    #[must_use]
    pub fn with_target(mut self, target: Option<String>) -> Self {
        self.target = target;
        self
    }
}

/// When the events a coalesced record stands for happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    /// The first (Unix milliseconds, host clock).
    pub first_unix_ms: u64,
    /// The last.
    pub last_unix_ms: u64,
}

/// An event as stored: numbered, timed and chained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// 1 for the first record ever written; one more for each next.
    pub seq: u64,
    /// When the store wrote it (Unix milliseconds).
    pub time_unix_ms: u64,
    /// The event.
    pub event: AuditEvent,
    /// The hash of the record before it (all zeros before the first).
    #[serde(with = "crate::principal::hex_32")]
    pub prev: [u8; 32],
    /// This record's hash: [`AuditRecord::expected_hash`].
    #[serde(with = "crate::principal::hex_32")]
    pub hash: [u8; 32],
}

impl AuditRecord {
    /// The record that follows one whose hash is `prev`.
    pub fn seal(prev: [u8; 32], seq: u64, time_unix_ms: u64, event: AuditEvent) -> Self {
        let mut record = Self { seq, time_unix_ms, event, prev, hash: [0; 32] };
        record.hash = record.expected_hash();
        record
    }

    /// SHA-256 over a fixed encoding of every field but `hash` (length-prefixed strings). A record
    /// without a span or a target is encoded as before spans existed (`v1`), so older logs still
    /// verify; one with a span but no target is `v2`, its two times after the count, as before targets
    /// existed. One with a target is `v3`: the target (`some`, then its text) after the wallet, and
    /// the span after the count as `none`, or `some` and its two times.
    pub fn expected_hash(&self) -> [u8; 32] {
        let event = &self.event;
        let mut hasher = Sha256::new();
        hasher.update(match (&event.target, event.span) {
            (Some(_), _) => b"keyward/audit/v3\0",
            (None, Some(_)) => b"keyward/audit/v2\0",
            (None, None) => b"keyward/audit/v1\0",
        });
        hasher.update(self.seq.to_le_bytes());
        hasher.update(self.time_unix_ms.to_le_bytes());
        let field = |hasher: &mut Sha256, text: &str| {
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        };
        let optional = |hasher: &mut Sha256, text: &Option<String>| match text {
            Some(text) => {
                field(hasher, "some");
                field(hasher, text);
            }
            None => field(hasher, "none"),
        };
        field(&mut hasher, &event.principal);
        field(&mut hasher, &event.method);
        optional(&mut hasher, &event.wallet);
        if event.target.is_some() {
            optional(&mut hasher, &event.target);
        }
        field(&mut hasher, &event.outcome);
        hasher.update(event.count.to_le_bytes());
        match (&event.target, event.span) {
            (Some(_), None) => field(&mut hasher, "none"),
            (Some(_), Some(span)) => {
                field(&mut hasher, "some");
                hasher.update(span.first_unix_ms.to_le_bytes());
                hasher.update(span.last_unix_ms.to_le_bytes());
            }
            (None, Some(span)) => {
                hasher.update(span.first_unix_ms.to_le_bytes());
                hasher.update(span.last_unix_ms.to_le_bytes());
            }
            (None, None) => {}
        }
        hasher.update(self.prev);
        hasher.finalize().into()
    }

    /// The record as the store keeps it (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A record read back from the store; `None` for bytes that are not a record.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Where a log's retained records start: the sequence number and hash of the last record removed
/// by retention (`0` and all zeros when none was).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Anchor {
    /// The last removed record's number.
    pub seq: u64,
    /// Its hash.
    #[serde(with = "crate::principal::hex_32")]
    pub hash: [u8; 32],
}

/// The first record that does not follow from the ones before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// Its position in the log, counting retained records from 1.
    pub position: u64,
    /// The sequence number it carries (or was expected to carry).
    pub seq: u64,
    /// What is wrong.
    pub why: &'static str,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {} (seq {}): {}", self.position, self.seq, self.why)
    }
}

/// Checks that `records`, in stored order, chain from `anchor` and end at `head` (the store's own
/// note of its last record, which catches removing records from the end). Returns how many were
/// checked.
pub fn verify<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    anchor: Anchor,
    head: Anchor,
) -> Result<u64, ChainBreak> {
    let mut expected = anchor;
    let mut position = 0;
    for record in records {
        position += 1;
        let Some(seq) = expected.seq.checked_add(1) else {
            return Err(ChainBreak { position, seq: record.seq, why: "out of sequence (after the last number)" });
        };
        if record.seq != seq {
            return Err(ChainBreak {
                position,
                seq: record.seq,
                why: "out of sequence (a record was removed or moved)",
            });
        }
        if record.prev != expected.hash {
            return Err(ChainBreak { position, seq, why: "does not follow the record before it" });
        }
        if record.hash != record.expected_hash() {
            return Err(ChainBreak { position, seq, why: "its contents do not match its hash (edited)" });
        }
        expected = Anchor { seq, hash: record.hash };
    }
    if expected != head {
        let why = "the log ends before its last record (records were removed from the end)";
        return Err(ChainBreak { position: position + 1, seq: expected.seq.saturating_add(1), why });
    }
    Ok(position)
}

/// [`verify`] a page at a time, so that a reader of a long log (`keyward audit verify`, page by
/// page of `audit_log`) holds one page in memory: the same verdict, the same [`ChainBreak`].
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    anchor: Anchor,
    expected: Anchor,
    checked: u64,
}

impl ChainVerifier {
    /// A check of a log whose retained records start after `anchor`.
    pub fn new(anchor: Anchor) -> Self {
        Self { anchor, expected: anchor, checked: 0 }
    }

    /// The anchor the check started from.
    pub fn anchor(&self) -> Anchor {
        self.anchor
    }

    /// The last record that followed from the ones before it (the anchor before any did).
    pub fn last_good(&self) -> Anchor {
        self.expected
    }

    fn shifted(&self, mut chain_break: ChainBreak) -> ChainBreak {
        chain_break.position += self.checked;
        chain_break
    }

    /// Checks the next records, in stored order. Only a record's own fault fails here: where the
    /// log ends is checked by [`ChainVerifier::finish`].
    pub fn feed(&mut self, records: &[AuditRecord]) -> Result<(), ChainBreak> {
        let Some(last) = records.last() else { return Ok(()) };
        let end = Anchor { seq: last.seq, hash: last.hash };
        let checked = verify(records, self.expected, end).map_err(|b| self.shifted(b))?;
        self.checked += checked;
        self.expected = end;
        Ok(())
    }

    /// Checks that the log ends at `head`; returns how many records were checked.
    pub fn finish(&self, head: Anchor) -> Result<u64, ChainBreak> {
        verify(std::iter::empty(), self.expected, head).map_err(|b| self.shifted(b))?;
        Ok(self.checked)
    }
}

mod queue;

pub(crate) use queue::{AuditQueue, Kind, SHARED};

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> AuditEvent {
        AuditEvent::new("owner", "open_wallet", Some(format!("w{n}")), "ok")
    }

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut prev = [0; 32];
        (1..=n)
            .map(|seq| {
                let record = AuditRecord::seal(prev, seq, 1000 + seq, event(seq as u32));
                prev = record.hash;
                record
            })
            .collect()
    }

    fn head(records: &[AuditRecord]) -> Anchor {
        records.last().map_or(Anchor::default(), |r| Anchor { seq: r.seq, hash: r.hash })
    }

    #[test]
    fn a_chain_verifies_and_every_tampering_names_its_first_bad_record() {
        let records = chain(5);
        let head = head(&records);
        assert_eq!(verify(&records, Anchor::default(), head), Ok(5));
        let mut edited = records.clone();
        edited[2].event.outcome = "wrong password".into();
        assert_eq!(verify(&edited, Anchor::default(), head).map_err(|e| e.position), Err(3));
        let mut removed = records.clone();
        removed.remove(1);
        assert_eq!(verify(&removed, Anchor::default(), head).map_err(|e| e.position), Err(2));
        let mut reordered = records.clone();
        reordered.swap(3, 4);
        assert_eq!(verify(&reordered, Anchor::default(), head).map_err(|e| e.position), Err(4));
        let truncated = &records[..4];
        assert_eq!(verify(truncated, Anchor::default(), head).map_err(|e| e.position), Err(5));
        // Retention: the retained tail verifies from its anchor.
        let anchor = Anchor { seq: records[1].seq, hash: records[1].hash };
        assert_eq!(verify(&records[2..], anchor, head), Ok(3));
        assert!(verify(&records[3..], anchor, head).is_err());
    }

    #[test]
    fn the_verifier_by_pages_agrees_with_verify_on_the_whole() {
        let all = chain(14);
        let anchor = Anchor { seq: all[3].seq, hash: all[3].hash };
        let records = all[4..].to_vec();
        let head = head(&records);
        let by_pages = |records: &[AuditRecord]| {
            let mut verifier = ChainVerifier::new(anchor);
            for page in records.chunks(3) {
                verifier.feed(page)?;
            }
            verifier.finish(head)
        };
        assert_eq!(by_pages(&records), Ok(10));
        let mut edited = records.clone();
        edited[7].event.outcome = "forbidden".into();
        let mut swapped = records.clone();
        swapped.swap(2, 6);
        let mut removed = records.clone();
        removed.remove(4);
        for tampered in [edited, swapped, removed, records[..9].to_vec(), records[1..].to_vec()] {
            let whole = verify(&tampered, anchor, head).expect_err("tampered");
            assert_eq!(by_pages(&tampered), Err(whole));
        }
        // The last good record is where a break was found.
        let mut verifier = ChainVerifier::new(anchor);
        assert_eq!(verifier.feed(&records[..3]), Ok(()));
        assert!(verifier.feed(&records[4..6]).is_err());
        assert_eq!(verifier.last_good(), Anchor { seq: records[2].seq, hash: records[2].hash });
        assert_eq!(verifier.anchor(), anchor);
    }

    #[test]
    fn a_chain_break_says_where_and_why() {
        let text = ChainBreak { position: 3, seq: 7, why: "its hash is wrong" }.to_string();
        assert_eq!(text, "record 3 (seq 7): its hash is wrong");
    }

    #[test]
    fn records_round_trip_through_bytes() {
        let record = &chain(1)[0];
        assert_eq!(AuditRecord::from_bytes(&record.to_bytes()).as_ref(), Some(record));
        assert_eq!(AuditRecord::from_bytes(b"{}"), None);
        let mut spanned = event(1);
        spanned.span = Some(Span { first_unix_ms: 5, last_unix_ms: 9 });
        let record = AuditRecord::seal([0; 32], 1, 10, spanned);
        assert_eq!(AuditRecord::from_bytes(&record.to_bytes()).as_ref(), Some(&record));
        assert!(!String::from_utf8_lossy(&chain(1)[0].to_bytes()).contains("span"), "no span, no key");
    }

    /// A record written before spans existed keeps its hash (the `v1` encoding, pinned here), and a
    /// span is covered by the hash: changing either time breaks it.
    #[test]
    fn the_hash_of_a_record_without_a_span_is_unchanged_and_a_span_is_hashed() {
        let record = AuditRecord::seal([7; 32], 3, 1_700_000_000_000, event(2));
        assert_eq!(hex::encode(record.hash), V1_HASH);
        let mut spanned = record.clone();
        spanned.event.span = Some(Span { first_unix_ms: 1, last_unix_ms: 2 });
        assert_ne!(spanned.expected_hash(), record.hash, "v2 differs from v1");
        let sealed = AuditRecord::seal(spanned.prev, spanned.seq, spanned.time_unix_ms, spanned.event.clone());
        for edit in [|s: &mut Span| s.first_unix_ms = 0, |s: &mut Span| s.last_unix_ms = 3] {
            let mut edited = sealed.clone();
            edit(edited.event.span.as_mut().expect("a span"));
            assert_ne!(edited.expected_hash(), sealed.hash);
        }
    }

    /// A record with a target hashes as `v3` (pinned, with and without a span), which covers the
    /// target and the span; records without one keep their `v1` and `v2` hashes (pinned too), and a
    /// record without a target has no `target` key, so a log written before it existed reads and
    /// verifies unchanged.
    #[test]
    fn a_target_is_hashed_as_v3_and_records_without_one_keep_v1_and_v2() {
        let mut spanned = event(2);
        spanned.span = Some(Span { first_unix_ms: 1, last_unix_ms: 2 });
        let v2 = AuditRecord::seal([7; 32], 3, 1_700_000_000_000, spanned);
        assert_eq!(hex::encode(v2.hash), V2_HASH);
        let admin = AuditEvent::new("owner", "revoke_client", None, "ok").with_target(Some("phone".into()));
        let v3 = AuditRecord::seal([7; 32], 3, 1_700_000_000_000, admin.clone());
        assert_eq!(hex::encode(v3.hash), V3_HASH);
        let mut admin_spanned = admin;
        admin_spanned.span = Some(Span { first_unix_ms: 1, last_unix_ms: 2 });
        let v3_spanned = AuditRecord::seal([7; 32], 3, 1_700_000_000_000, admin_spanned);
        assert_eq!(hex::encode(v3_spanned.hash), V3_SPANNED_HASH);
        // Every part of it is covered: the target, and the span's presence and times.
        for edit in [
            |r: &mut AuditRecord| r.event.target = Some("phone2".into()),
            |r: &mut AuditRecord| r.event.target = None,
            |r: &mut AuditRecord| r.event.span = None,
            |r: &mut AuditRecord| r.event.span = Some(Span { first_unix_ms: 1, last_unix_ms: 3 }),
            |r: &mut AuditRecord| r.event.wallet = Some("phone".into()),
        ] {
            let mut edited = v3_spanned.clone();
            edit(&mut edited);
            assert_ne!(edited.expected_hash(), v3_spanned.hash, "{edited:?}");
        }
        let text = String::from_utf8(v3.to_bytes()).expect("JSON");
        assert!(text.contains(r#""wallet":null,"target":"phone""#), "{text}");
        assert_eq!(AuditRecord::from_bytes(text.as_bytes()).as_ref(), Some(&v3));
        assert!(!String::from_utf8_lossy(&v2.to_bytes()).contains("target"), "no target, no key");
        // A record as stored before targets existed (no key) reads back and verifies.
        let old = format!(
            r#"{{"seq":3,"time_unix_ms":1700000000000,"event":{{"principal":"owner","method":"open_wallet","wallet":"w2","outcome":"ok","count":1}},"prev":"{}","hash":"{V1_HASH}"}}"#,
            hex::encode([7; 32])
        );
        let old = AuditRecord::from_bytes(old.as_bytes()).expect("an old record");
        assert_eq!((old.event.target.as_deref(), old.expected_hash()), (None, old.hash));
    }

    /// `v2` of the same record with the span 1..2, computed independently (outside Rust).
    const V2_HASH: &str = "1f884d9301740272c5e808c8e6cab95d1b61ebed37c9dbd8c3e9c9654a17b69e";

    /// `v3` of `seal([7; 32], 3, 1_700_000_000_000, revoke_client of target phone by owner, ok)`,
    /// computed independently (outside Rust), without a span and with the span 1..2.
    const V3_HASH: &str = "ead88ea818cb93f4609ca997a9263d00d6fa642dff298bc44bccb2db4d5e6b77";
    const V3_SPANNED_HASH: &str = "3defafbe56589386c2cca1cdf32caa8bca8766d1efeaeb206977f87df01e01f0";

    /// [`AuditRecord::expected_hash`] of `seal([7; 32], 3, 1_700_000_000_000, event(2))`, computed
    /// independently (outside Rust) from the `v1` encoding records had before spans existed.
    const V1_HASH: &str = "a0e9cfcf1033b802d0f077443fd494e6744f88a0907be14ad74f876310e922d4";
}
