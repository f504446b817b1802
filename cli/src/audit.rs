//! `keyward audit show|verify`: the audit log, from the running server or from the store.
//!
//! Where the log is read: if `--url`, `--quic` or `--unix` is given, from that server over the API
//! (`audit_log`, page by page, as the `default` client or the socket's user: an owner). Otherwise
//! the store in `<data-dir>/store` is opened; if a server holds it (the store's `LOCK` is locked:
//! the one signal a running server always gives, whatever it listens on) the log is read from it
//! over the API at the default address `https://127.0.0.1:3420/v3/owner` with the data
//! directory's certificates, else straight from the store, reading only. Records hold no secrets.

use std::borrow::Cow;
use std::io::Write;
use std::ops::ControlFlow;

use anyhow::{Context as _, bail};
use keyward_core::Store as _;
use keyward_core::admin::AUDIT_PAGE_MAX;
use keyward_core::audit::{Anchor, AuditRecord, ChainBreak, verify};
use keyward_driver::SecureSession;
use keyward_store::FjallStore;
use serde::Deserialize;

use crate::call::{self, BoxLink, Reached};

/// Where the log is read from: the server named by `--url`/`--quic`/`--unix`, or the data
/// directory's store, or the server that holds it.
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
    /// Check the log's hash chain from its anchor to its head; exits non-zero naming the first
    /// record that was edited, removed, moved or is missing at the end.
    Verify {
        /// Where to read the log.
        #[command(flatten)]
        source: SourceArgs,
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
        AuditCommand::Verify { source } => {
            let mut log = Log::open(source).await?;
            let verdict = verify_log(&mut log).await;
            log.close().await;
            writeln!(out, "{}", verdict?)?;
            Ok(())
        }
    }
}

/// A source of audit log pages.
enum Log {
    Store(Box<FjallStore>),
    Server(Box<SecureSession<BoxLink>>),
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
        Ok(match args.reach().await? {
            Reached::Store(store) => Self::Store(Box::new(store)),
            Reached::Server(session) => Self::Server(Box::new(session)),
        })
    }

    fn is_server(&self) -> bool {
        matches!(self, Self::Server(_))
    }

    /// The log's bounds and up to [`AUDIT_PAGE_MAX`] records after `after`.
    async fn page(&mut self, after: u64) -> anyhow::Result<Page> {
        match self {
            Self::Store(store) => {
                let (anchor, head) = store.audit_bounds().context("cannot read the audit log")?;
                let records = store.read_audit(after, AUDIT_PAGE_MAX).context("cannot read the audit log")?;
                Ok(Page { anchor, head, records })
            }
            Self::Server(session) => {
                let params = serde_json::json!({"after": after, "limit": AUDIT_PAGE_MAX});
                let answer =
                    session.call("audit_log", params).await.map_err(|e| anyhow::anyhow!("audit_log failed: {e}"))?;
                serde_json::from_value(answer).context("the server's audit_log answer is not an audit log page")
            }
        }
    }

    async fn close(self) {
        if let Self::Server(session) = self {
            session.close().await;
        }
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
        if last && log.is_server() {
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

/// Feeds a log to [`verify`] a page at a time, so memory stays bounded.
struct ChainCheck {
    anchor: Anchor,
    expected: Anchor,
    checked: u64,
}

impl ChainCheck {
    fn new(anchor: Anchor) -> Self {
        Self { anchor, expected: anchor, checked: 0 }
    }

    fn shifted(&self, mut chain_break: ChainBreak) -> ChainBreak {
        chain_break.position += self.checked;
        chain_break
    }

    /// Checks the next records. Ending the check at the page's own last record means only a
    /// record's own fault can fail here; the end is checked by [`ChainCheck::finish`].
    fn feed(&mut self, records: &[AuditRecord]) -> Result<(), ChainBreak> {
        let Some(last) = records.last() else { return Ok(()) };
        let end = Anchor { seq: last.seq, hash: last.hash };
        let checked = verify(records, self.expected, end).map_err(|b| self.shifted(b))?;
        self.checked += checked;
        self.expected = end;
        Ok(())
    }

    /// Checks that the log ends at `head`; returns how many records were checked.
    fn finish(&self, head: Anchor) -> Result<u64, ChainBreak> {
        verify(std::iter::empty(), self.expected, head).map_err(|b| self.shifted(b))?;
        Ok(self.checked)
    }
}

/// A broken chain: where, and the last record that was still fine (or the anchor).
type Broken = (ChainBreak, Anchor);

/// Reads and checks the whole log once: how many records verified from which anchor to which
/// head, or where the chain breaks.
async fn check_once(log: &mut Log) -> anyhow::Result<Result<(u64, Anchor, Anchor), Broken>> {
    let mut check = None;
    let mut broken = None;
    let bounds = read_all(log, |anchor, records| {
        let check = check.get_or_insert_with(|| ChainCheck::new(anchor));
        match check.feed(records) {
            Ok(()) => Ok(ControlFlow::Continue(())),
            Err(chain_break) => {
                broken = Some((chain_break, check.expected));
                Ok(ControlFlow::Break(()))
            }
        }
    })
    .await?;
    let Some((anchor, head)) = bounds else {
        // The read stops only where the check found a break.
        return Ok(Err(broken.context("the audit log's read stopped early")?));
    };
    let check = check.unwrap_or_else(|| ChainCheck::new(anchor));
    Ok(match check.finish(head) {
        Ok(count) => Ok((count, check.anchor, head)),
        Err(chain_break) => Err((chain_break, check.expected)),
    })
}

/// `keyward audit verify`: the verdict line, or an error naming the first bad record.
async fn verify_log(log: &mut Log) -> anyhow::Result<String> {
    let mut attempt = 1;
    loop {
        match check_once(log).await? {
            Ok((0, _, _)) => return Ok("audit log verified: 0 records".to_owned()),
            Ok((count, anchor, head)) => {
                return Ok(format!("audit log verified: {count} records (seq {}..{})", anchor.seq + 1, head.seq));
            }
            Err((chain_break, last_good)) => {
                // A running server's retention may remove records while they are read (the anchor
                // then moved past them): read again. Nothing removes records from a closed store.
                if log.is_server() && attempt < 3 && log.page(u64::MAX).await?.anchor.seq > last_good.seq {
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
    parse_rfc3339(text)
        .ok_or_else(|| format!("{text:?} is neither RFC 3339 (e.g. 2026-11-27T10:00:00Z) nor Unix milliseconds"))
}

fn digits(text: &str) -> Option<i64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
}

fn parse_rfc3339(text: &str) -> Option<u64> {
    let (date, time) = match text.find(['T', 't', ' ']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return None;
    }
    let (year, month, day) = (digits(year)?, u32::try_from(digits(month)?).ok()?, u32::try_from(digits(day)?).ok()?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * 86_400_000;
    if let Some(time) = time {
        let zone_at = time.find(['Z', 'z', '+', '-'])?;
        let (clock, zone) = time.split_at(zone_at);
        let (clock, fraction) = match clock.split_once('.') {
            Some((clock, fraction)) => (clock, Some(fraction)),
            None => (clock, None),
        };
        let mut fields = clock.split(':');
        let (hour, minute, second) = (fields.next()?, fields.next()?, fields.next()?);
        if fields.next().is_some() || [hour, minute, second].iter().any(|f| f.len() != 2) {
            return None;
        }
        let (hour, minute, second) = (digits(hour)?, digits(minute)?, digits(second)?);
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        ms += ((hour * 60 + minute) * 60 + second) * 1000;
        if let Some(fraction) = fraction {
            digits(fraction)?;
            // Milliseconds: the first three digits, the rest truncated.
            let padded = format!("{fraction:0<3}");
            ms += digits(&padded[..3])?;
        }
        ms -= match zone {
            "Z" | "z" => 0,
            offset => {
                let (sign, rest) = offset.split_at(1);
                let (hours, minutes) = rest.split_once(':')?;
                if hours.len() != 2 || minutes.len() != 2 {
                    return None;
                }
                let (hours, minutes) = (digits(hours)?, digits(minutes)?);
                if hours > 23 || minutes > 59 {
                    return None;
                }
                let offset = (hours * 60 + minutes) * 60_000;
                if sign == "-" { -offset } else { offset }
            }
        };
    }
    u64::try_from(ms).ok()
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix milliseconds as RFC 3339 in UTC, to the millisecond: `2026-11-27T10:00:00.000Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    // u64 milliseconds are under 2^44 days: every intermediate fits an i64.
    let days = i64::try_from(unix_ms / 86_400_000).unwrap_or(i64::MAX / 2);
    let in_day = unix_ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    let (seconds, ms) = (in_day / 1000, in_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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
        let event = keyward_core::audit::AuditEvent {
            principal: "default".into(),
            method: "open_wallet".into(),
            wallet: None,
            outcome: "ok".into(),
            count: 1,
        };
        AuditRecord::seal(prev, seq, 1000 + seq, event)
    }

    fn chain(from: Anchor, n: u64) -> Vec<AuditRecord> {
        let mut prev = from.hash;
        (from.seq + 1..=from.seq + n)
            .map(|seq| {
                let record = record(seq, prev);
                prev = record.hash;
                record
            })
            .collect()
    }

    #[test]
    fn the_chain_check_by_pages_agrees_with_verify_on_the_whole() {
        let anchor = Anchor { seq: 4, hash: [7; 32] };
        let records = chain(anchor, 10);
        let head = Anchor { seq: 14, hash: records[9].hash };
        let by_pages = |records: &[AuditRecord], head: Anchor| {
            let mut check = ChainCheck::new(anchor);
            for page in records.chunks(3) {
                check.feed(page)?;
            }
            check.finish(head)
        };
        assert_eq!(by_pages(&records, head), Ok(10));
        let mut edited = records.clone();
        edited[7].event.outcome = "forbidden".into();
        let mut swapped = records.clone();
        swapped.swap(2, 6);
        let mut removed = records.clone();
        removed.remove(4);
        for tampered in [edited, swapped, removed, records[..9].to_vec(), records[1..].to_vec()] {
            let whole = verify(&tampered, anchor, head).unwrap_err();
            assert_eq!(by_pages(&tampered, head), Err(whole));
        }
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
