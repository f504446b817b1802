//! The audit log's head, kept outside the store as well: `audit.head` beside the store directory
//! (the path is [`crate::StoreOptions::audit_head`]).
//!
//! The store's own note of its head lives in the store, so cutting the store's journal or putting
//! back an older copy of the whole store removes records without breaking the chain. A second
//! copy of the head, in a file the store's files do not include, catches both: after every append
//! the head (sequence number and hash) is written there, atomically and fsynced (mode 0600). When
//! the store is opened, the file is compared with the log:
//!
//! * the log ends before the file's head: records were cut or rolled back;
//! * the log's record at the file's sequence number has another hash: the log was replaced.
//!
//! Either way the store appends a record that says so and names the missing range (principal
//! `keyward`, method `audit`, an outcome starting with [`GAP`] or [`REPLACED`]), logs it at ERROR,
//! and goes on: the wallets stay usable, and `keyward audit verify` fails while that record is in
//! the log. What this does not catch: someone who can rewrite `audit.head` as well (and the server's
//! log, where the head's hash is printed at start, stop and every [`LOG_EVERY`] records); an
//! external monitor that keeps the head (`keyward audit head`) catches that too.

use std::fs;
use std::io;
use std::path::Path;

use keyward_core::audit::Anchor;

use crate::files;

/// The outcome of the record that says the log was cut or rolled back.
pub const GAP: &str = "log gap: ";
/// The outcome of the record that says the log was replaced.
pub const REPLACED: &str = "log replaced: ";
/// The start of the outcome of the record that says the log had no kept head (once, when a
/// version that keeps it first opens an older store, or after the file was removed).
pub const NOT_KEPT: &str = "head not kept: ";
/// The head's hash is logged at INFO each time the log passes a multiple of this many records.
pub const LOG_EVERY: u64 = 1000;

/// Whether a log whose head moved from `before` to `after` passed a multiple of [`LOG_EVERY`].
pub(crate) fn passes_log_mark(before: u64, after: u64) -> bool {
    after / LOG_EVERY > before / LOG_EVERY
}

/// The outcome of the record that says the log's head up to `seq` was not kept.
pub(crate) fn not_kept(seq: u64) -> String {
    format!(
        "{NOT_KEPT}the log had {seq} records and no audit.head (an older version, or the file was removed); kept from now on"
    )
}

/// A hash in hex.
pub(crate) fn hex(hash: &[u8]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file's content: the head as JSON, one line.
fn encode(head: &Anchor) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(head).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Reads the head kept in `path`: `Ok(None)` when there is no file (a store that never kept one).
pub(crate) fn read(path: &Path) -> io::Result<Option<Anchor>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "audit.head is not an audit log head")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `head` to `path` atomically and durably (0600).
pub(crate) fn write(path: &Path, head: &Anchor) -> io::Result<()> {
    let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "audit.head needs a directory"));
    };
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    files::write_atomic(dir, Path::new(&temp), path, &encode(head))
}

/// The first 8 bytes of a hash in hex.
pub(crate) fn short(hash: &[u8; 32]) -> String {
    hex(&hash[..8])
}

/// What the kept head says of the log, whose bounds are `anchor`..`head` and whose record hashes
/// `hash_at` finds (`None` for a record that is not there).
pub(crate) fn compare(
    kept: Anchor,
    anchor: Anchor,
    head: Anchor,
    hash_at: impl FnOnce(u64) -> Option<[u8; 32]>,
) -> Option<String> {
    if kept.seq > head.seq {
        return Some(format!(
            "{GAP}records {}..={} are missing: the log ends at seq {} but audit.head says seq {} (hash {}); it \
             was cut or rolled back",
            head.seq + 1,
            kept.seq,
            head.seq,
            kept.seq,
            short(&kept.hash)
        ));
    }
    let found = match kept.seq {
        0 => Some([0; 32]),
        // Removed by retention since: nothing to compare.
        seq if seq < anchor.seq => return None,
        seq if seq == anchor.seq => Some(anchor.hash),
        // A record missing inside the log's bounds breaks its chain: verifying it names that.
        seq => Some(hash_at(seq)?),
    };
    (found != Some(kept.hash)).then(|| {
        format!(
            "{REPLACED}record {} is not the one audit.head names (hash {}); the log was replaced by another",
            kept.seq,
            short(&kept.hash)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64, byte: u8) -> Anchor {
        Anchor { seq, hash: [byte; 32] }
    }

    #[test]
    fn the_kept_head_names_a_cut_a_replacement_or_nothing() {
        let (anchor, head) = (at(3, 3), at(10, 10));
        let same = |seq| Some([seq as u8; 32]);
        assert_eq!(compare(at(10, 10), anchor, head, same), None, "the same head");
        assert_eq!(compare(at(7, 7), anchor, head, same), None, "an older head of the same log");
        // The anchor's and the removed records' hashes are not read from the log.
        let other = |_| Some([0x55; 32]);
        assert_eq!(compare(at(3, 3), anchor, head, other), None, "the anchor");
        assert_eq!(compare(at(1, 9), anchor, head, other), None, "removed by retention");
        assert_eq!(compare(at(2, 9), anchor, head, other), None, "removed by retention");
        assert_eq!(compare(Anchor::default(), Anchor::default(), head, |_| None), None, "an empty log");
        let cut = compare(at(14, 14), anchor, head, same).expect("a cut");
        assert!(cut.starts_with(GAP) && cut.contains("records 11..=14 are missing"), "{cut}");
        assert!(cut.contains(&"0e".repeat(8)), "{cut}");
        let replaced = compare(at(7, 1), anchor, head, same).expect("replaced");
        assert!(replaced.starts_with(REPLACED) && replaced.contains("record 7 "), "{replaced}");
        assert!(compare(at(3, 1), anchor, head, same).is_some(), "another anchor");
        assert_eq!(compare(at(8, 8), anchor, head, |_| None), None, "missing: the chain check names it");
    }

    #[test]
    fn the_file_round_trips_and_is_private_and_damage_is_an_error() {
        use std::os::unix::fs::PermissionsExt as _;
        let temp = tempfile::tempdir().expect("temp dir");
        let path = temp.path().join("audit.head");
        assert_eq!(read(&path).expect("no file"), None);
        write(&path, &at(5, 0xab)).expect("written");
        assert_eq!(read(&path).expect("read"), Some(at(5, 0xab)));
        assert_eq!(fs::metadata(&path).expect("metadata").permissions().mode() & 0o777, 0o600);
        fs::write(&path, b"{\"seq\": 1}").expect("damaged");
        assert_eq!(read(&path).expect_err("damaged").kind(), io::ErrorKind::InvalidData);
        // Any other read failure is an error too, not "no file".
        assert!(read(temp.path()).is_err(), "a directory");
        assert_eq!(
            write(Path::new("audit.head"), &at(1, 1)).expect_err("no directory").kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn the_head_is_logged_each_thousand_records_and_hashes_print_in_hex() {
        assert!(passes_log_mark(999, 1000) && passes_log_mark(0, 2500) && passes_log_mark(1999, 2001));
        assert!(!passes_log_mark(1000, 1999) && !passes_log_mark(0, 999) && !passes_log_mark(5, 5));
        assert_eq!(hex(&[0x0a, 0xff, 0x10]), "0aff10");
        assert_eq!(short(&[0xab; 32]), "ab".repeat(8));
        assert!(not_kept(7).starts_with(NOT_KEPT) && not_kept(7).contains("had 7 records"));
    }
}
