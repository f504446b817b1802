//! The audit events waiting for the host to write them, and the rules that keep any one client
//! from flushing the log.
//!
//! An event is of one of two [`Kind`]s:
//!
//! * **Notable**: an owner's call that did real work (a KDF or a store write) and succeeded. It is
//!   queued as it is; a run of identical ones back to back is one record with a count. (The owner
//!   can remove the whole log anyway; its lifecycle and administrative calls stay one record each.)
//! * **Cheap**: a refusal (of a call, a handshake, a connection, a pairing), a fast call's success
//!   (`sign_message`, `close_wallet`, ...), and any success of a principal below owner (a reader's
//!   `open_wallet` runs a KDF, but one with the password can repeat it all day): what a client can
//!   repeat many times a second. These are
//!   1. **coalesced** per (principal, class, outcome) over [`COALESCE_MS`], whatever else comes in
//!      between. The class of a refusal is "refused" (any method; the record lists the methods
//!      seen), of a success its method and wallet. The first event of a window is written at once
//!      (the owner sees a refusal within a second); the window's later events become one record
//!      when it ends, with their count, methods and first and last time ([`super::Span`]);
//!   2. **budgeted** per principal: each record a cheap event adds takes a token from the
//!      principal's bucket, which holds [`BUDGET`] tokens and gains one every [`REFILL_MS`]. With
//!      none left, the principal's events are counted instead, successes and refusals apart, in at
//!      most two "over the audit budget" records per over window: the first window is
//!      [`OVER_WINDOW_MS`], and the next twice as long while the principal stays over (up to
//!      [`MAX_OVER_WINDOW_MS`]), back to the first after a window with nothing over. Peers that are
//!      no active client (an unknown certificate, a pairing attempt under any name) share one
//!      bucket, [`SHARED`];
//!   3. **bounded**: at most [`MAX_WINDOWS`] windows and [`MAX_BUDGETS`] buckets (and the shared
//!      one) are held; past them an event is counted in an over record (its principal's, or the
//!      shared one).
//!
//! Worst case: one principal flooding cheap events for 90 days adds at most `BUDGET` + 90 × 96
//! records from its bucket and 2 × (≈ 9 + 90 × 4) over records: about 9,400, under 1 % of the
//! default retention of 1,000,000 records, so no client below owner can push another's records out
//! before they are `max_age` old unless about a hundred flood at once for the whole 90 days. In its
//! first minute it adds at most `BUDGET` + 2. Memory: `MAX_WINDOWS` windows of a few hundred bytes
//! (about 2 MiB at most) and `AUDIT_QUEUE_MAX` queued events.
//!
//! Times are the host's clock ([`crate::Host::unix_time_ms`]). A window the clock went back past
//! ends at once, so a step of the wall clock never holds records back. Without a clock (0),
//! windows never end: coalesced events are written when the server shuts down
//! ([`AuditQueue::close_all`]).

use std::collections::BTreeMap;

use super::{AuditEvent, Span};

/// Most events the core holds before the host writes them; past it, events are counted and the
/// count is written as one record ("N events dropped").
pub(crate) const AUDIT_QUEUE_MAX: usize = 65_536;
/// How long cheap events of one (principal, class, outcome) are coalesced after the first.
pub(crate) const COALESCE_MS: u64 = 60_000;
/// Tokens a principal's bucket holds: records its cheap events may add in a burst.
pub(crate) const BUDGET: u32 = 20;
/// The bucket gains a token this often (96 a day).
pub(crate) const REFILL_MS: u64 = 15 * 60 * 1000;
/// The first over window: how long events past the budget are counted before their record.
pub(crate) const OVER_WINDOW_MS: u64 = 60_000;
/// The longest over window (it doubles while a principal stays over).
pub(crate) const MAX_OVER_WINDOW_MS: u64 = 6 * 60 * 60 * 1000;
/// Most coalescing windows open at once.
pub(crate) const MAX_WINDOWS: usize = 4096;
/// Most principals with a budget at once (the rest share [`SHARED`]'s).
pub(crate) const MAX_BUDGETS: usize = 4096;
/// Most method names a coalesced record lists (then `...`).
const MAX_METHODS: usize = 8;
/// The budget of every peer that is no active client (no client may be called this: names are at
/// least one character long).
pub(crate) const SHARED: &str = "";

/// How an event is queued: see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An owner's successful call that did real work: queued as is.
    Notable,
    /// Anything else: coalesced and budgeted.
    Cheap,
}

/// What coalesced events have in common.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct WindowKey {
    principal: String,
    /// The method, wallet and target of a success; empty (and `None`) for any refusal.
    class: String,
    wallet: Option<String>,
    target: Option<String>,
    outcome: String,
}

impl WindowKey {
    fn of(event: &AuditEvent) -> Self {
        let refused = event.outcome != "ok";
        Self {
            principal: event.principal.clone(),
            class: if refused { String::new() } else { event.method.clone() },
            wallet: if refused { None } else { event.wallet.clone() },
            target: if refused { None } else { event.target.clone() },
            outcome: event.outcome.clone(),
        }
    }
}

/// Events counted into one record.
#[derive(Debug)]
struct Tally {
    principal: String,
    methods: Vec<String>,
    more_methods: bool,
    /// `Some(w)` while every event named the wallet `w` (or none); `None` once two differed.
    wallet: Option<Option<String>>,
    /// The same for the target.
    target: Option<Option<String>>,
    outcome: String,
    count: u32,
    first: u64,
    last: u64,
}

impl Tally {
    fn new(principal: &str, outcome: &str, now: u64) -> Self {
        Self {
            principal: principal.to_owned(),
            methods: Vec::new(),
            more_methods: false,
            wallet: None,
            target: None,
            outcome: outcome.to_owned(),
            count: 0,
            first: now,
            last: now,
        }
    }

    /// Counts `count` events of `method` on `subject` (a wallet and a target), the first at
    /// `first` and the last at `last`.
    fn add(&mut self, method: &str, subject: (&Option<String>, &Option<String>), count: u32, first: u64, last: u64) {
        let (wallet, target) = subject;
        if self.count == 0 {
            self.wallet = Some(wallet.clone());
            self.target = Some(target.clone());
            (self.first, self.last) = (first, last);
        } else {
            // Two wallets (or targets): the record names none.
            if self.wallet.as_ref() != Some(wallet) {
                self.wallet = None;
            }
            if self.target.as_ref() != Some(target) {
                self.target = None;
            }
        }
        self.count = self.count.saturating_add(count);
        self.first = self.first.min(first);
        self.last = self.last.max(last);
        for name in method.split(',') {
            if name == "..." {
                self.more_methods = true;
            } else if !self.methods.iter().any(|m| m == name) {
                if self.methods.len() < MAX_METHODS {
                    self.methods.push(name.to_owned());
                } else {
                    self.more_methods = true;
                }
            }
        }
    }

    fn add_event(&mut self, event: &AuditEvent, now: u64) {
        let (first, last) = event.span.map_or((now, now), |s| (s.first_unix_ms, s.last_unix_ms));
        self.add(&event.method, (&event.wallet, &event.target), event.count.max(1), first, last);
    }

    fn into_event(self) -> AuditEvent {
        let mut method = self.methods.join(",");
        if self.more_methods {
            method.push_str(",...");
        }
        AuditEvent {
            principal: self.principal,
            method,
            wallet: self.wallet.flatten(),
            target: self.target.flatten(),
            outcome: self.outcome,
            count: self.count,
            span: Some(Span { first_unix_ms: self.first, last_unix_ms: self.last }),
        }
    }
}

/// A coalescing window: its first event was queued; the later ones are counted here.
#[derive(Debug)]
struct Window {
    opened: u64,
    /// The budget it is charged to.
    bucket: String,
    later: Option<Tally>,
}

/// A principal's bucket of tokens, and what did not fit.
#[derive(Debug)]
struct Budget {
    tokens: u32,
    /// When the bucket last gained a token (or was full).
    refilled: u64,
    /// Events past the budget: refusals, then successes.
    over: [Option<Tally>; 2],
    over_start: u64,
    over_len: u64,
}

impl Budget {
    fn new(now: u64) -> Self {
        Self { tokens: BUDGET, refilled: now, over: [None, None], over_start: now, over_len: OVER_WINDOW_MS }
    }

    /// Takes a token if there is one (after the refill due at `now`).
    fn take(&mut self, now: u64) -> bool {
        if now < self.refilled {
            // The clock went back: count from now.
            self.refilled = now;
        }
        let gained = (now - self.refilled) / REFILL_MS;
        if gained > 0 {
            let tokens = u64::from(self.tokens).saturating_add(gained).min(u64::from(BUDGET));
            self.tokens = u32::try_from(tokens).unwrap_or(BUDGET);
            self.refilled = if self.tokens == BUDGET { now } else { self.refilled + gained * REFILL_MS };
        }
        let has = self.tokens > 0;
        self.tokens -= u32::from(has);
        has
    }

    /// Counts events past the budget, opening the over window if none is open.
    fn over(&mut self, bucket: &str, ok: bool, now: u64) -> &mut Tally {
        if self.over.iter().all(Option::is_none) {
            self.over_start = now;
        }
        self.over[usize::from(ok)].get_or_insert_with(|| {
            let principal = if bucket == SHARED { "keyward" } else { bucket };
            let outcome = match (bucket == SHARED, ok) {
                (false, false) => "refused, over the audit budget",
                (false, true) => "ok, over the audit budget",
                (true, false) => "refused, over the audit budget of peers that are no client",
                (true, true) => "ok, over the audit budget of peers that are no client",
            };
            Tally::new(principal, outcome, now)
        })
    }

    /// Whether the over window has ended at `now` (or the clock went back past its start).
    fn over_ended(&self, now: u64) -> bool {
        now < self.over_start || now >= self.over_start.saturating_add(self.over_len)
    }

    /// Whether the bucket holds nothing a fresh one would not.
    fn idle(&self, now: u64) -> bool {
        self.over.iter().all(Option::is_none)
            && self.over_len == OVER_WINDOW_MS
            && (self.tokens == BUDGET
                || now.saturating_sub(self.refilled) / REFILL_MS >= u64::from(BUDGET - self.tokens))
    }
}

/// Events waiting to be written: see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct AuditQueue {
    pending: Vec<AuditEvent>,
    dropped: u64,
    windows: BTreeMap<WindowKey, Window>,
    budgets: BTreeMap<String, Budget>,
}

impl AuditQueue {
    /// Queues an event of `kind` at `now`; a cheap one is charged to `bucket`'s budget (the
    /// principal's name, or [`SHARED`] for a peer that is no active client).
    pub fn push(&mut self, event: AuditEvent, kind: Kind, bucket: &str, now: u64) {
        match kind {
            Kind::Notable => self.queue(event),
            Kind::Cheap => self.cheap(event, bucket, now),
        }
    }

    fn queue(&mut self, event: AuditEvent) {
        if let Some(last) = self.pending.last_mut()
            && last.span.is_none()
            && event.span.is_none()
            && last.principal == event.principal
            && last.method == event.method
            && last.wallet == event.wallet
            && last.target == event.target
            && last.outcome == event.outcome
        {
            last.count = last.count.saturating_add(event.count);
            return;
        }
        if self.pending.len() >= AUDIT_QUEUE_MAX {
            self.dropped += 1;
            return;
        }
        self.pending.push(event);
    }

    fn cheap(&mut self, event: AuditEvent, bucket: &str, now: u64) {
        let bucket =
            if self.budgets.contains_key(bucket) || self.budgets.len() < MAX_BUDGETS { bucket } else { SHARED };
        self.roll(bucket, now, false);
        let key = WindowKey::of(&event);
        if let Some(window) = self.windows.get_mut(&key) {
            if !window_ended(window.opened, now) {
                let later = window.later.get_or_insert_with(|| Tally::new(&event.principal, &event.outcome, now));
                later.add_event(&event, now);
                return;
            }
            if let Some(window) = self.windows.remove(&key) {
                self.close(window, now);
            }
        }
        let ok = event.outcome == "ok";
        let budget = self.budgets.entry(bucket.to_owned()).or_insert_with(|| Budget::new(now));
        if self.windows.len() < MAX_WINDOWS && budget.take(now) {
            self.windows.insert(key, Window { opened: now, bucket: bucket.to_owned(), later: None });
            self.queue(event);
        } else {
            budget.over(bucket, ok, now).add_event(&event, now);
        }
    }

    /// Writes a window's later events as one record, for a token of its bucket (or counts them in
    /// the bucket's over record when it has none).
    fn close(&mut self, window: Window, now: u64) {
        let Some(later) = window.later else { return };
        let bucket = window.bucket;
        let budget = self.budgets.entry(bucket.clone()).or_insert_with(|| Budget::new(now));
        if budget.take(now) {
            self.queue(later.into_event());
        } else {
            let (first, last, count, ok) = (later.first, later.last, later.count, later.outcome == "ok");
            let event = later.into_event();
            budget.over(&bucket, ok, now).add(&event.method, (&event.wallet, &event.target), count, first, last);
        }
    }

    /// Ends `bucket`'s over window if it is over (or `always`): its over records are queued, and
    /// the next window is twice as long if this one counted anything, the first length if not. A
    /// bucket that holds nothing a fresh one would not is forgotten.
    fn roll(&mut self, bucket: &str, now: u64, always: bool) {
        let Some(budget) = self.budgets.get_mut(bucket) else { return };
        if always || budget.over_ended(now) {
            let over = std::mem::take(&mut budget.over);
            let counted = over.iter().any(Option::is_some);
            budget.over_len =
                if counted { budget.over_len.saturating_mul(2).min(MAX_OVER_WINDOW_MS) } else { OVER_WINDOW_MS };
            budget.over_start = now;
            for tally in over.into_iter().flatten() {
                self.queue(tally.into_event());
            }
        }
        if self.budgets.get(bucket).is_some_and(|b| b.idle(now)) {
            self.budgets.remove(bucket);
        }
    }

    /// Counts events that could not be kept (a failed write).
    pub fn lost(&mut self, events: usize) {
        self.dropped += events as u64;
    }

    /// The events to write at `now`, oldest first: the queued ones, the windows and budget windows
    /// that have ended, and a note of any dropped.
    pub fn take(&mut self, now: u64) -> Vec<AuditEvent> {
        self.end_windows(now, false);
        self.drain()
    }

    /// Every event held, whether or not its window has ended (at shutdown).
    pub fn close_all(&mut self, now: u64) -> Vec<AuditEvent> {
        self.end_windows(now, true);
        self.budgets.clear();
        self.drain()
    }

    fn end_windows(&mut self, now: u64, all: bool) {
        let ended: Vec<WindowKey> = self
            .windows
            .iter()
            .filter(|(_, w)| all || window_ended(w.opened, now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in ended {
            if let Some(window) = self.windows.remove(&key) {
                self.close(window, now);
            }
        }
        let buckets: Vec<String> = self.budgets.keys().cloned().collect();
        for bucket in buckets {
            self.roll(&bucket, now, all);
        }
    }

    fn drain(&mut self) -> Vec<AuditEvent> {
        let mut events = std::mem::take(&mut self.pending);
        if self.dropped > 0 {
            events.push(AuditEvent::new(
                "keyward",
                "audit",
                None,
                &format!("{} events dropped: the log could not keep up", self.dropped),
            ));
            self.dropped = 0;
        }
        events
    }

    /// Events waiting, counting each window or budget that holds events as one.
    pub fn len(&self) -> usize {
        self.pending.len()
            + usize::from(self.dropped > 0)
            + self.windows.values().filter(|w| w.later.is_some()).count()
            + self.budgets.values().map(|b| b.over.iter().flatten().count()).sum::<usize>()
    }

    /// Whether none wait.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a coalescing window opened at `opened` has ended at `now` (or the clock went back past
/// its start).
fn window_ended(opened: u64, now: u64) -> bool {
    now < opened || now >= opened.saturating_add(COALESCE_MS)
}

#[cfg(test)]
mod tests;
