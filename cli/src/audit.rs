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
    /// Print the audit log, one record per line under a header: time (UTC), seq, principal,
    /// method, wallet, target (the client an administrative call acted on), outcome, and `x N` for
    /// a record that stands for N identical events (with the span they happened in).
    Show {
        /// Where to read the log.
        #[command(flatten)]
        source: SourceArgs,
        /// Only the records of this principal (client name, `local-http`, `local`).
        #[arg(long)]
        principal: Option<String>,
        /// Only records written at or after this time: RFC 3339 (2026-11-27T10:00:00Z), Unix
        /// milliseconds, or this long ago: a number and s, m, h or d (90s, 15m, 1h, 7d).
        #[arg(long, value_parser = parse_since)]
        since: Option<u64>,
        /// Only the last N records (of those the other options select).
        #[arg(long, value_name = "N")]
        tail: Option<u64>,
        /// Keep printing new records as the running server writes them (it is asked every second),
        /// until interrupted (Ctrl-C). Needs a running server.
        #[arg(long, conflicts_with = "json")]
        follow: bool,
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
        AuditCommand::Show { source, principal, since, tail, follow, json } => {
            let (mut log, in_process) = Log::reach(source).await?;
            if *follow && in_process {
                log.close().await;
                bail!(
                    "--follow needs a running server: none runs on {} (start `keyward serve`, or name one with \
                     --url, --quic or --unix)",
                    source.data_dir().display()
                );
            }
            let filter = Filter { principal: principal.clone(), since: *since };
            let how = Show { tail: *tail, follow: *follow, json: *json };
            let shown = show(&mut log, &filter, how, out).await;
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
        Ok(Self::reach(args).await?.0)
    }

    /// The log, and whether it is read from an in-process server (no server runs).
    async fn reach(args: &SourceArgs) -> anyhow::Result<(Self, bool)> {
        let call::Reached { session, in_process } = args.reach(&in_process::Options::default()).await?;
        Ok((Self { session }, in_process))
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

/// How `show` prints.
#[derive(Debug, Clone, Copy)]
struct Show {
    tail: Option<u64>,
    follow: bool,
    json: bool,
}

/// How often `show --follow` asks the server for new records.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Records `show` reads before it sets the columns' widths (it keeps them in memory until then);
/// a longer cell after them widens its column from there on.
const WIDTH_ROWS: usize = 10_000;

async fn show(log: &mut Log, filter: &Filter, how: Show, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(out);
    let mut table = Table::default();
    if how.json {
        out.write_all(b"[")?;
    }
    let print = |out: &mut std::io::BufWriter<_>, records: &[AuditRecord], table: &mut Table| {
        for record in records.iter().filter(|r| filter.matches(r)) {
            if how.json {
                let separator = if table.shown == 0 { "\n" } else { ",\n" };
                write!(out, "{separator}{}", serde_json::to_string(record)?)?;
            } else {
                table.push(Row::of(record), out)?;
            }
            table.shown += 1;
        }
        anyhow::Ok(())
    };
    // The last record read: --follow goes on after it.
    let last = match how.tail {
        Some(n) => {
            let (records, head) = tail(log, filter, n).await?;
            print(&mut out, &records, &mut table)?;
            head.seq
        }
        None => read_all(log, |_, records| {
            print(&mut out, records, &mut table)?;
            Ok(ControlFlow::Continue(()))
        })
        .await?
        .map_or(0, |(_, head)| head.seq),
    };
    if how.json {
        out.write_all(if table.shown == 0 { b"]\n" } else { b"\n]\n" })?;
    } else {
        table.end(&mut out)?;
    }
    out.flush()?;
    if how.follow {
        follow(log, last, |records| {
            print(&mut out, records, &mut table)?;
            table.end(&mut out)?;
            out.flush()?;
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// The last `n` records `filter` selects, oldest first, and the log's head when they were read:
/// read backwards a page at a time from the head, so a long log is not read whole.
async fn tail(log: &mut Log, filter: &Filter, n: u64) -> anyhow::Result<(Vec<AuditRecord>, Anchor)> {
    let bounds = log.page(u64::MAX).await?;
    let head = bounds.head;
    let mut kept: std::collections::VecDeque<AuditRecord> = std::collections::VecDeque::new();
    let mut end = head.seq;
    let mut floor = bounds.anchor.seq;
    let want = usize::try_from(n).unwrap_or(usize::MAX);
    while kept.len() < want && end > floor {
        let after = end.saturating_sub(AUDIT_PAGE_MAX as u64).max(floor);
        let (records, anchor) = range(log, after, end).await?;
        // Retention may have removed records meanwhile: none is left at or below its anchor.
        floor = floor.max(anchor.seq);
        // Records are in time order but for a clock set back: past --since, older pages are too.
        let older = filter.since.is_some_and(|since| records.first().is_some_and(|r| r.time_unix_ms < since));
        for record in records.into_iter().rev().filter(|r| filter.matches(r)) {
            if kept.len() == want {
                break;
            }
            kept.push_front(record);
        }
        if older {
            break;
        }
        end = after;
    }
    Ok((kept.into(), head))
}

/// The records after `after` up to `end` (page by page: a server may answer fewer than asked),
/// and the log's anchor.
async fn range(log: &mut Log, after: u64, end: u64) -> anyhow::Result<(Vec<AuditRecord>, Anchor)> {
    let mut records = Vec::new();
    let mut from = after;
    loop {
        let page = log.page(from).await?;
        let next = page.records.last().map_or(from, |r| r.seq);
        records.extend(page.records.into_iter().filter(|r| r.seq > from && r.seq <= end));
        if next >= end || next <= from {
            return Ok((records, page.anchor));
        }
        from = next;
    }
}

/// `show --follow`: every [`FOLLOW_EVERY`], hands `each` the records written after `last`, until
/// interrupted (Ctrl-C: a clean end).
async fn follow(
    log: &mut Log,
    mut last: u64,
    mut each: impl FnMut(&[AuditRecord]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let page = log.page(last).await?;
        let records: Vec<AuditRecord> = page.records.into_iter().filter(|r| r.seq > last).collect();
        let full = records.len() >= AUDIT_PAGE_MAX;
        if let Some(record) = records.last() {
            last = record.seq;
        }
        each(&records)?;
        if full {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
            _ = &mut interrupted => return Ok(()),
        }
    }
}

/// One record's cells as `show` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    /// Time, seq, principal, method, wallet, target, outcome.
    cells: [String; 7],
    /// `x N` and the span, for a record that stands for N events (unaligned, at the end).
    extra: String,
}

/// The header's cells.
const HEADER: [&str; 7] = ["TIME", "SEQ", "PRINCIPAL", "METHOD", "WALLET", "TARGET", "OUTCOME"];

impl Row {
    fn of(record: &AuditRecord) -> Self {
        let event = &record.event;
        let optional = |text: &Option<String>| text.as_deref().map_or_else(|| "-".to_owned(), |t| printable(t).into());
        let mut extra = String::new();
        if event.count > 1 {
            extra.push_str(&format!("x {}", event.count));
        }
        if let Some(span) = event.span {
            let span = format!("({} .. {})", rfc3339(span.first_unix_ms), rfc3339(span.last_unix_ms));
            extra.push_str(&if extra.is_empty() { span } else { format!("  {span}") });
        }
        Self {
            cells: [
                rfc3339(record.time_unix_ms),
                record.seq.to_string(),
                printable(&event.principal).into(),
                printable(&event.method).into(),
                optional(&event.wallet),
                optional(&event.target),
                printable(&event.outcome).into(),
            ],
            extra,
        }
    }

    /// The row as one line, its cells padded to `widths` (SEQ right-aligned, the last cell not
    /// padded) and two spaces apart.
    fn line(cells: &[impl AsRef<str>], extra: &str, widths: &[usize; 7]) -> String {
        let mut line = String::new();
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            let cell = cell.as_ref();
            let pad = " ".repeat(widths[i].saturating_sub(cell.chars().count()));
            match i {
                0 => {}
                _ => line.push_str("  "),
            }
            match i {
                1 => line.push_str(&format!("{pad}{cell}")),
                _ if i == last => line.push_str(cell),
                _ => line.push_str(&format!("{cell}{pad}")),
            }
        }
        if !extra.is_empty() {
            line.push_str("  ");
            line.push_str(extra);
        }
        line
    }
}

/// `show`'s aligned columns: rows are held until [`WIDTH_ROWS`] of them (or the end) set the
/// widths and the header is printed; later rows are printed as they come.
#[derive(Debug, Default)]
struct Table {
    widths: Option<[usize; 7]>,
    held: Vec<Row>,
    /// Records shown so far.
    shown: u64,
}

impl Table {
    fn push(&mut self, row: Row, out: &mut impl Write) -> std::io::Result<()> {
        match &mut self.widths {
            Some(widths) => {
                widen(widths, &row);
                writeln!(out, "{}", Row::line(&row.cells, &row.extra, widths))
            }
            None => {
                self.held.push(row);
                if self.held.len() >= WIDTH_ROWS { self.end(out) } else { Ok(()) }
            }
        }
    }

    /// Prints the header (once, even with no rows) and the rows held.
    fn end(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.widths.is_some() {
            return Ok(());
        }
        let mut widths = HEADER.map(str::len);
        for row in &self.held {
            widen(&mut widths, row);
        }
        writeln!(out, "{}", Row::line(&HEADER, "", &widths))?;
        for row in self.held.drain(..) {
            writeln!(out, "{}", Row::line(&row.cells, &row.extra, &widths))?;
        }
        self.widths = Some(widths);
        Ok(())
    }
}

fn widen(widths: &mut [usize; 7], row: &Row) {
    for (width, cell) in widths.iter_mut().zip(&row.cells) {
        *width = (*width).max(cell.chars().count());
    }
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
/// (`2026-11-27`, midnight UTC), Unix milliseconds, or a time this long before now (`90s`, `15m`,
/// `1h`, `7d`).
pub fn parse_since(text: &str) -> Result<u64, String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    parse_since_at(text, u64::try_from(now.as_millis()).unwrap_or(u64::MAX))
}

/// [`parse_since`], with the time now (Unix milliseconds) given.
fn parse_since_at(text: &str, now_unix_ms: u64) -> Result<u64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("{text} is too large for Unix milliseconds"));
    }
    if let Some(ago) = relative_ms(text) {
        let ago = ago.ok_or_else(|| format!("{text:?} is longer ago than 1970"))?;
        return now_unix_ms.checked_sub(ago).ok_or_else(|| format!("{text:?} is longer ago than 1970"));
    }
    let time = OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        let date = time::Date::parse(text, format_description!("[year repr:full]-[month]-[day]")).ok()?;
        Some(date.midnight().assume_utc())
    });
    // Milliseconds: any finer digits are truncated.
    time.and_then(|time| u64::try_from(time.unix_timestamp_nanos().div_euclid(1_000_000)).ok()).ok_or_else(|| {
        format!(
            "{text:?} is neither RFC 3339 (e.g. 2026-11-27T10:00:00Z), Unix milliseconds, nor a time ago (a number and \
             s, m, h or d: 90s, 15m, 1h, 7d)"
        )
    })
}

/// `N` and a unit (`s`, `m`, `h`, `d`) as milliseconds: `None` for text of another shape,
/// `Some(None)` for one too long.
fn relative_ms(text: &str) -> Option<Option<u64>> {
    let unit_ms = match text.chars().last()? {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    let number = &text[..text.len() - 1];
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(number.parse::<u64>().ok().and_then(|n| n.checked_mul(unit_ms)))
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
    #![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

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
    fn relative_times_count_back_from_now() {
        let now = 1_795_773_600_000;
        assert_eq!(parse_since_at("90s", now), Ok(now - 90_000));
        assert_eq!(parse_since_at("15m", now), Ok(now - 900_000));
        assert_eq!(parse_since_at("1h", now), Ok(now - 3_600_000));
        assert_eq!(parse_since_at(" 7d ", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_since_at("0s", now), Ok(now));
        // Absolute times are as before.
        assert_eq!(parse_since_at("2026-11-27T10:00:00Z", 0), Ok(1_795_773_600_000));
        assert_eq!(parse_since_at("1795773600000", 0), Ok(1_795_773_600_000));
        for bad in ["h", "1w", "1.5h", "-1h", "1 h", "1hh", "99999999999999999999d"] {
            assert!(parse_since_at(bad, now).is_err(), "{bad:?}");
        }
        assert!(parse_since_at("30000d", now).unwrap_err().contains("longer ago than 1970"));
        assert!(parse_since("yesterday").unwrap_err().contains("15m, 1h"));
    }

    #[test]
    fn lines_escape_control_characters() {
        let mut record = record(1, [0; 32]);
        record.event.wallet = Some("w\u{1b}[2J".into());
        record.event.count = 3;
        let row = Row::of(&record);
        let line = Row::line(&row.cells, &row.extra, &[0; 7]);
        assert_eq!(line, "1970-01-01T00:00:01.001Z  1  default  open_wallet  w\\u{1b}[2J  -  ok  x 3", "{line}");
        assert!(!line.chars().any(char::is_control));
    }

    /// A header, then one line per record with its cells in aligned columns (as wide as the widest
    /// cell shown, SEQ on the right); the last column and the count are not padded.
    #[test]
    fn rows_are_aligned_under_a_header() {
        let mut short = record(9, [0; 32]);
        short.event.target = Some("phone".into());
        short.event.method = "revoke_client".into();
        let mut long = record(10, [0; 32]);
        long.event.principal = "ext-chromium-abc".into();
        long.event.wallet = Some("savings".into());
        long.event.count = 2;
        let mut table = Table::default();
        let mut out = Vec::new();
        table.push(Row::of(&short), &mut out).unwrap();
        table.push(Row::of(&long), &mut out).unwrap();
        assert!(out.is_empty(), "held until the widths are known");
        table.end(&mut out).unwrap();
        table.end(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "TIME                      SEQ  PRINCIPAL         METHOD         WALLET   TARGET  OUTCOME",
                "1970-01-01T00:00:01.009Z    9  default           revoke_client  -        phone   ok",
                "1970-01-01T00:00:01.010Z   10  ext-chromium-abc  open_wallet    savings  -       ok  x 2",
            ]
        );
        // With no rows, the header alone.
        let mut out = Vec::new();
        Table::default().end(&mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().starts_with("TIME  SEQ  PRINCIPAL  METHOD  WALLET  TARGET  OUTCOME\n"));
    }
}
