//! `keyward audit show|verify`: the audit log, read with `audit_log` (page by page, as an owner)
//! from the running server or, when none runs, from the command's own server in process.
//!
//! Where the log is read: if `--url`, `--quic` or `--unix` is given, from that server (as the
//! `default` client or the socket's user). Otherwise the store in `<data-dir>/store` is opened; if a
//! server holds it (the store's `LOCK` is locked: the one signal a running server always gives,
//! whatever it listens on) the log is read from it at the default address
//! `https://127.0.0.1:3420/v3/owner` with the data directory's certificates, else from an in-process
//! server over the store ([`crate::in_process`]), which reads it and writes nothing (`audit_log` is
//! not itself audited). Either way the same calls, and the chain is checked here with the core's
//! [`ChainVerifier`]. Records hold no secrets.

use std::borrow::Cow;
use std::io::Write;
use std::ops::ControlFlow;

use anyhow::{Context as _, bail};
use keyward_core::AUDIT_PAGE_MAX;
use keyward_core::audit::{Anchor, AuditRecord, ChainBreak, ChainVerifier};
use keyward_driver::SecureSession;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::call::{self, BoxLink};
use crate::in_process;

/// Where the log is read from: the server named by `--url`/`--quic`/`--unix`, or the server that
/// holds the data directory's store, or an in-process server over it.
pub type SourceArgs = call::ServerArgs;

/// `keyward audit …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// Print the audit log: time (UTC), seq, principal, method, wallet, outcome, and `x N` for a
    /// record that stands for N identical events.
    Show {
        /// Where to read the log.
        #[command(flatten)]
        source: SourceArgs,
        /// Only the records of this principal (client name, `local-http`, `local`).
        #[arg(long)]
        principal: Option<String>,
        /// Only records written at or after this time: RFC 3339 (2026-11-27T10:00:00Z) or Unix
        /// milliseconds.
        #[arg(long, value_parser = parse_since)]
        since: Option<u64>,
        /// Print the records as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Check the log's hash chain from its anchor to its head, and its head against the copy kept
    /// in DATA_DIR/audit.head; exits non-zero naming the first record that was edited, removed,
    /// moved or is missing at the end, the range a cut or a rollback of the store removed, or a
    /// gap the server found and recorded when it started.
    Verify {
        /// Where to read the log.
        #[command(flatten)]
        source: SourceArgs,
        /// A gap record (by its seq) already looked into: reported, but not a failure. Repeatable.
        #[arg(long = "accept-gap", value_name = "SEQ")]
        accept_gap: Vec<u64>,
    },
    /// Print the log's head (sequence number and hash), for a monitor to keep: a later head that
    /// does not descend from it shows a rollback.
    Head {
        /// Where to read the log.
        #[command(flatten)]
        source: SourceArgs,
        /// Print it as JSON: {"seq": N, "hash": "..."}.
        #[arg(long)]
        json: bool,
    },
    /// Write the records after a sequence number as JSON lines (one record per line, oldest first),
    /// for shipping to an external store; each line verifies with the one before it.
    Export {
        /// Where to read the log.
        #[command(flatten)]
        source: SourceArgs,
        /// Only the records after this sequence number (0: all retained).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// JSON lines (the only format; accepted for scripts that say so).
        #[arg(long)]
        json: bool,
    },
}

/// Runs `command`, writing its output to `out`.
pub async fn run(command: &AuditCommand, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    match command {
        AuditCommand::Show { source, principal, since, json } => {
            let mut log = Log::open(source).await?;
            let filter = Filter { principal: principal.clone(), since: *since };
            let shown = show(&mut log, &filter, *json, out).await;
            log.close().await;
            shown
        }
        AuditCommand::Verify { source, accept_gap } => {
            let mut log = Log::open(source).await?;
            let verdict = verify_log(&mut log, kept_head_path(source).as_deref(), accept_gap).await;
            log.close().await;
            writeln!(out, "{}", verdict?)?;
            Ok(())
        }
        AuditCommand::Head { source, json } => {
            let mut log = Log::open(source).await?;
            let page = log.page(u64::MAX).await;
            log.close().await;
            let head = page?.head;
            if *json {
                writeln!(out, "{}", serde_json::to_string(&head)?)?;
            } else {
                writeln!(out, "seq {} hash {}", head.seq, hex::encode(head.hash))?;
            }
            Ok(())
        }
        AuditCommand::Export { source, after, json: _ } => {
            let mut log = Log::open(source).await?;
            let exported = export(&mut log, *after, out).await;
            log.close().await;
            exported
        }
    }
}

/// Where the data directory's server keeps its log's head, when the log read is that server's:
/// no other server is named, or the data directory is given explicitly.
fn kept_head_path(source: &SourceArgs) -> Option<std::path::PathBuf> {
    (!source.names_a_server() || source.data_dir.is_some()).then(|| source.data_dir().join("audit.head"))
}

async fn export(log: &mut Log, after: u64, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(out);
    let mut after = after;
    loop {
        let page = log.page(after).await?;
        for record in page.records.iter().filter(|r| r.seq <= page.head.seq) {
            writeln!(out, "{}", serde_json::to_string(record)?)?;
        }
        match page.records.last() {
            Some(last) if last.seq < page.head.seq && last.seq > after => after = last.seq,
            _ => break,
        }
    }
    out.flush()?;
    Ok(())
}

/// The log, read over an owner session.
struct Log {
    session: SecureSession<BoxLink>,
}

/// One `audit_log` answer.
#[derive(Debug, Deserialize)]
struct Page {
    anchor: Anchor,
    head: Anchor,
    records: Vec<AuditRecord>,
}

impl Log {
    async fn open(args: &SourceArgs) -> anyhow::Result<Self> {
        let call::Reached { session, .. } = args.reach(&in_process::Options::default()).await?;
        Ok(Self { session })
    }

    /// The log's bounds and up to [`AUDIT_PAGE_MAX`] records after `after`.
    async fn page(&mut self, after: u64) -> anyhow::Result<Page> {
        let params = serde_json::json!({"after": after, "limit": AUDIT_PAGE_MAX});
        let answer =
            self.session.call("audit_log", params).await.map_err(|e| anyhow::anyhow!("audit_log failed: {e}"))?;
        serde_json::from_value(answer).context("the server's audit_log answer is not an audit log page")
    }

    async fn close(self) {
        self.session.close().await;
    }
}

/// Reads the whole log, page by page, handing `each` the first page's anchor and each page's
/// records. Returns the first page's anchor and the last page's head, or `None` if `each` stopped.
async fn read_all(
    log: &mut Log,
    mut each: impl FnMut(Anchor, &[AuditRecord]) -> anyhow::Result<ControlFlow<()>>,
) -> anyhow::Result<Option<(Anchor, Anchor)>> {
    let mut page = log.page(0).await?;
    let anchor = page.anchor;
    let mut after = 0;
    loop {
        // The end: nothing more, or a short page that reaches the head. (A short page that does
        // not is followed by another read: a server may answer fewer than asked.)
        let last = match page.records.last() {
            None => true,
            Some(record) => page.records.len() < AUDIT_PAGE_MAX && record.seq >= page.head.seq,
        };
        if last {
            // A running server may have written records after it read its head for this answer.
            while page.records.last().is_some_and(|r| r.seq > page.head.seq) {
                page.records.pop();
            }
        }
        if each(anchor, &page.records)?.is_break() {
            return Ok(None);
        }
        if last {
            return Ok(Some((anchor, page.head)));
        }
        let next = page.records.last().map_or(after, |r| r.seq);
        // Pages follow sequence numbers; a log whose numbers go backwards is damaged.
        anyhow::ensure!(next > after, "the audit log is out of order after seq {after} (run keyward audit verify)");
        after = next;
        page = log.page(after).await?;
    }
}

/// Which records `show` prints.
#[derive(Debug, Clone, Default)]
struct Filter {
    principal: Option<String>,
    since: Option<u64>,
}

impl Filter {
    fn matches(&self, record: &AuditRecord) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == record.event.principal)
            && self.since.is_none_or(|since| record.time_unix_ms >= since)
    }
}

async fn show(log: &mut Log, filter: &Filter, json: bool, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(out);
    let mut shown = 0u64;
    if json {
        out.write_all(b"[")?;
    }
    read_all(log, |_, records| {
        for record in records.iter().filter(|r| filter.matches(r)) {
            if json {
                let separator = if shown == 0 { "\n" } else { ",\n" };
                write!(out, "{separator}{}", serde_json::to_string(record)?)?;
            } else {
                writeln!(out, "{}", line(record))?;
            }
            shown += 1;
        }
        Ok(ControlFlow::Continue(()))
    })
    .await?;
    if json {
        out.write_all(if shown == 0 { b"]\n" } else { b"\n]\n" })?;
    }
    out.flush()?;
    Ok(())
}

/// One record as `show` prints it.
fn line(record: &AuditRecord) -> String {
    let event = &record.event;
    let wallet = event.wallet.as_deref().map_or(Cow::Borrowed("-"), printable);
    let mut line = format!(
        "{}  {:>6}  {}  {}  {}  {}",
        rfc3339(record.time_unix_ms),
        record.seq,
        printable(&event.principal),
        printable(&event.method),
        wallet,
        printable(&event.outcome)
    );
    if event.count > 1 {
        line.push_str(&format!("  x {}", event.count));
    }
    if let Some(span) = event.span {
        line.push_str(&format!("  ({} .. {})", rfc3339(span.first_unix_ms), rfc3339(span.last_unix_ms)));
    }
    line
}

/// `text` with control characters escaped, so a record cannot drive the terminal.
fn printable(text: &str) -> Cow<'_, str> {
    // Control characters, and the invisible and direction-changing ones that could make a line
    // read differently from what it holds.
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
    };
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().map(|c| if hidden(c) { c.escape_unicode().to_string() } else { c.to_string() }).collect())
}

/// A broken chain: where, and the last record that was still fine (or the anchor).
type Broken = (ChainBreak, Anchor);

/// Reads and checks the whole log once: how many records verified from which anchor to which
/// head, or where the chain breaks.
async fn check_once(log: &mut Log, watch: &mut Watch) -> anyhow::Result<Result<(u64, Anchor, Anchor), Broken>> {
    let mut check = None;
    let mut broken = None;
    let bounds = read_all(log, |anchor, records| {
        watch.see(records);
        let check = check.get_or_insert_with(|| ChainVerifier::new(anchor));
        match check.feed(records) {
            Ok(()) => Ok(ControlFlow::Continue(())),
            Err(chain_break) => {
                broken = Some((chain_break, check.last_good()));
                Ok(ControlFlow::Break(()))
            }
        }
    })
    .await?;
    let Some((anchor, head)) = bounds else {
        // The read stops only where the check found a break.
        return Ok(Err(broken.context("the audit log's read stopped early")?));
    };
    let check = check.unwrap_or_else(|| ChainVerifier::new(anchor));
    Ok(match check.finish(head) {
        Ok(count) => Ok((count, check.anchor(), head)),
        Err(chain_break) => Err((chain_break, check.last_good())),
    })
}

/// What `verify` looks for besides the chain: the hash of the record the kept head names, and the
/// records of gaps the server found.
#[derive(Debug, Default)]
struct Watch {
    kept: Option<Anchor>,
    kept_hash: Option<[u8; 32]>,
    gaps: Vec<(u64, String)>,
}

impl Watch {
    fn see(&mut self, records: &[AuditRecord]) {
        for record in records {
            if self.kept.is_some_and(|kept| kept.seq == record.seq) {
                self.kept_hash = Some(record.hash);
            }
            let event = &record.event;
            // A log without its kept head (the file removed, or the first start of a version that
            // keeps it) cannot show a cut made before: looked into once, like a gap.
            let gap = [keyward_store::head::GAP, keyward_store::head::REPLACED, keyward_store::head::NOT_KEPT]
                .iter()
                .any(|prefix| event.outcome.starts_with(prefix));
            if event.principal == "keyward" && event.method == "audit" && gap {
                self.gaps.push((record.seq, event.outcome.clone()));
            }
        }
    }

    /// What is wrong with a log that chains from `anchor` to `head`, given the kept head.
    fn findings(&self, anchor: Anchor, head: Anchor, accepted: &[u64]) -> Vec<String> {
        let mut findings = Vec::new();
        if let Some(kept) = self.kept {
            let found = if kept.seq == anchor.seq { Some(anchor.hash) } else { self.kept_hash };
            if kept.seq > head.seq {
                findings.push(format!(
                    "records {}..={} are missing: the log ends at seq {} but audit.head says seq {} (the store \
                     was cut or rolled back)",
                    head.seq + 1,
                    kept.seq,
                    head.seq,
                    kept.seq
                ));
            } else if kept.seq >= anchor.seq && found != Some(kept.hash) {
                findings.push(format!(
                    "record {} is not the one audit.head names (the store was replaced by another)",
                    kept.seq
                ));
            }
        }
        for (seq, outcome) in self.gaps.iter().filter(|(seq, _)| !accepted.contains(seq)) {
            findings.push(format!("record {seq} says: {outcome} (once looked into: --accept-gap {seq})"));
        }
        findings
    }
}

/// `keyward audit verify`: the verdict line, or an error naming the first bad record, or what the
/// kept head and the recorded gaps show.
async fn verify_log(log: &mut Log, kept_head: Option<&std::path::Path>, accepted: &[u64]) -> anyhow::Result<String> {
    let kept = match kept_head {
        None => None,
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => Some(serde_json::from_slice::<Anchor>(&bytes).map_err(|_| {
                anyhow::anyhow!("{} is not an audit log head: it was damaged or replaced", path.display())
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        },
    };
    let mut attempt = 1;
    loop {
        let mut watch = Watch { kept, ..Watch::default() };
        match check_once(log, &mut watch).await? {
            Ok((count, anchor, head)) => {
                let findings = watch.findings(anchor, head, accepted);
                if !findings.is_empty() {
                    bail!("audit log incomplete: {}", findings.join("; "));
                }
                let mut verdict = match count {
                    0 => "audit log verified: 0 records".to_owned(),
                    _ => format!("audit log verified: {count} records (seq {}..{})", anchor.seq + 1, head.seq),
                };
                if kept.is_some() {
                    verdict.push_str(", and audit.head matches");
                }
                for (seq, _) in watch.gaps.iter().filter(|(seq, _)| accepted.contains(seq)) {
                    verdict.push_str(&format!("; gap record {seq} accepted"));
                }
                return Ok(verdict);
            }
            Err((chain_break, last_good)) => {
                // A running server's retention may remove records while they are read (the anchor
                // then moved past them): read again. (An in-process server's anchor stays put: its
                // store is closed to everyone else.)
                if attempt < 3 && log.page(u64::MAX).await?.anchor.seq > last_good.seq {
                    attempt += 1;
                    continue;
                }
                bail!("audit log broken at {chain_break}");
            }
        }
    }
}

/// Parses `--since`: RFC 3339 (`2026-11-27T10:00:00Z`, `2026-11-27T12:00:00.5+02:00`), a date
/// (`2026-11-27`, midnight UTC), or Unix milliseconds.
pub fn parse_since(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("{text} is too large for Unix milliseconds"));
    }
    let time = OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        let date = time::Date::parse(text, format_description!("[year repr:full]-[month]-[day]")).ok()?;
        Some(date.midnight().assume_utc())
    });
    // Milliseconds: any finer digits are truncated.
    time.and_then(|time| u64::try_from(time.unix_timestamp_nanos().div_euclid(1_000_000)).ok())
        .ok_or_else(|| format!("{text:?} is neither RFC 3339 (e.g. 2026-11-27T10:00:00Z) nor Unix milliseconds"))
}

/// Unix milliseconds as RFC 3339 in UTC, to the millisecond: `2026-11-27T10:00:00.000Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    utc(unix_ms, format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"))
}

/// Unix milliseconds in UTC as `format` says; past the year 9999 (no honest clock says so), the
/// milliseconds themselves.
pub(crate) fn utc(unix_ms: u64, format: &[BorrowedFormatItem<'_>]) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|time| time.format(format).ok())
        .unwrap_or_else(|| format!("{unix_ms} ms after 1970"))
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn times_format_and_parse_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        // Every formatted time parses back, across leap years and month ends.
        for ms in (0..4_200_000_000_000u64).step_by(86_399_999_937) {
            assert_eq!(parse_since(&rfc3339(ms)), Ok(ms), "{}", rfc3339(ms));
        }
        assert_eq!(parse_since("2026-11-27T10:00:00Z"), Ok(1_795_773_600_000));
        assert_eq!(parse_since("2026-11-27t12:30:00.5+02:30"), Ok(1_795_773_600_500));
        assert_eq!(parse_since("2026-11-27 09:00:00.0009-01:00"), Ok(1_795_773_600_000));
        assert_eq!(parse_since("2026-11-27"), Ok(1_795_737_600_000));
        assert_eq!(parse_since("1795773600000"), Ok(1_795_773_600_000));
        for bad in [
            "",
            "yesterday",
            "2026-11-27T10:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T10:00Z",
            "2026-11-27T10:00:00.Z",
            "2026-11-27T10:00:00+0100",
            "1969-12-31T23:59:59Z",
            "99999999999999999999999",
            "+12",
        ] {
            assert!(parse_since(bad).is_err(), "{bad:?}");
        }
    }

    fn record(seq: u64, prev: [u8; 32]) -> AuditRecord {
        let event = keyward_core::audit::AuditEvent::new("default", "open_wallet", None, "ok");
        AuditRecord::seal(prev, seq, 1000 + seq, event)
    }

    #[test]
    fn lines_escape_control_characters() {
        let mut record = record(1, [0; 32]);
        record.event.wallet = Some("w\u{1b}[2J".into());
        record.event.count = 3;
        let line = line(&record);
        assert!(
            line.starts_with("1970-01-01T00:00:01.001Z       1  default  open_wallet  w\\u{1b}[2J  ok  x 3"),
            "{line}"
        );
        assert!(!line.chars().any(char::is_control));
    }
}
