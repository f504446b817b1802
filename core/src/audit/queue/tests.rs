use super::*;

fn event(principal: &str, method: &str, wallet: Option<&str>, outcome: &str) -> AuditEvent {
    AuditEvent::new(principal, method, wallet.map(str::to_owned), outcome)
}

fn refused(method: &str) -> AuditEvent {
    event("reader", method, None, "forbidden")
}

/// Events each record stands for, summed.
fn total(records: &[AuditEvent]) -> u64 {
    records.iter().map(|r| u64::from(r.count)).sum()
}

#[test]
fn a_full_queue_counts_what_it_drops_and_says_so_once() {
    let mut queue = AuditQueue::default();
    let notable = |n: u32| event("owner", "open_wallet", Some(&format!("w{n}")), "ok");
    queue.push(notable(0), Kind::Notable, "owner", 0);
    queue.push(notable(0), Kind::Notable, "owner", 0);
    assert_eq!((queue.len(), queue.pending[0].count), (1, 2), "a run of the same event is one with a count");
    for n in 1..AUDIT_QUEUE_MAX as u32 + 2 {
        queue.push(notable(n), Kind::Notable, "owner", 0);
    }
    assert_eq!(queue.len(), AUDIT_QUEUE_MAX + 1, "full, plus the note of what was dropped");
    assert!(!queue.is_empty());
    let events = queue.take(0);
    assert_eq!(events.len(), AUDIT_QUEUE_MAX + 1);
    let note = events.last().expect("the note");
    assert_eq!((note.principal.as_str(), note.method.as_str()), ("keyward", "audit"));
    assert_eq!(note.outcome, "2 events dropped: the log could not keep up");
    assert!(queue.is_empty());
    assert!(queue.take(0).is_empty(), "the note is written once");
    queue.lost(3);
    queue.lost(4);
    assert_eq!(queue.len(), 1);
    assert_eq!(queue.take(0)[0].outcome, "7 events dropped: the log could not keep up");
}

/// The attack this queue exists for: a reader alternating refused methods, one call a millisecond
/// for a minute. Before coalescing per class, each call was a record (refusals merged only back to
/// back): 60,000 records.
#[test]
fn a_reader_alternating_refusals_for_a_minute_adds_few_records_and_every_call_is_counted() {
    let mut queue = AuditQueue::default();
    let methods = ["get_mnemonic", "delete_wallet", "change_password", "revoke_client"];
    let mut records = Vec::new();
    let start = 1_000_000;
    for i in 0..60_000u64 {
        let now = start + i;
        queue.push(refused(methods[(i % 4) as usize]), Kind::Cheap, "reader", now);
        if i % 1000 == 0 {
            records.extend(queue.take(now));
        }
    }
    records.extend(queue.take(start + 60_000));
    assert!(records.len() <= 100, "{} records", records.len());
    assert!(records.len() <= (BUDGET + 2) as usize, "{} records", records.len());
    records.extend(queue.close_all(start + 60_001));
    assert_eq!(total(&records), 60_000, "every refused call is counted in some record");
    // The first refusal was written at once, as itself.
    assert_eq!((records[0].method.as_str(), records[0].count, records[0].span), ("get_mnemonic", 1, None));
    let coalesced = records.iter().find(|r| r.count > 1).expect("a coalesced record");
    assert_eq!(coalesced.method, "delete_wallet,change_password,revoke_client,get_mnemonic");
    let span = coalesced.span.expect("a span");
    assert!(
        span.first_unix_ms >= start && span.last_unix_ms < start + 60_000 && span.first_unix_ms < span.last_unix_ms
    );
}

#[test]
fn the_first_event_of_a_window_is_written_at_once_and_the_rest_when_it_ends() {
    let mut queue = AuditQueue::default();
    queue.push(refused("get_mnemonic"), Kind::Cheap, "reader", 10);
    assert_eq!(queue.take(10), vec![refused("get_mnemonic")]);
    for t in 11..20 {
        queue.push(refused("delete_wallet"), Kind::Cheap, "reader", t);
    }
    assert_eq!(queue.len(), 1);
    assert!(queue.take(10 + COALESCE_MS - 1).is_empty(), "the window is still open");
    let records = queue.take(10 + COALESCE_MS);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!((record.method.as_str(), record.outcome.as_str(), record.count), ("delete_wallet", "forbidden", 9));
    assert_eq!(record.span, Some(Span { first_unix_ms: 11, last_unix_ms: 19 }));
    assert!(queue.is_empty());
    // The next one opens a new window: written at once again.
    queue.push(refused("delete_wallet"), Kind::Cheap, "reader", 20 + COALESCE_MS);
    assert_eq!(queue.take(20 + COALESCE_MS).len(), 1);
}

#[test]
fn classes_keep_principals_outcomes_and_successes_apart() {
    let mut queue = AuditQueue::default();
    let cheap = |q: &mut AuditQueue, e: AuditEvent| {
        let bucket = e.principal.clone();
        q.push(e, Kind::Cheap, &bucket, 5);
    };
    cheap(&mut queue, event("reader", "get_mnemonic", None, "forbidden"));
    cheap(&mut queue, event("signer", "get_mnemonic", None, "forbidden"));
    cheap(&mut queue, event("reader", "open_wallet", Some("w"), "throttled"));
    cheap(&mut queue, event("signer", "sign_message", Some("w"), "ok"));
    cheap(&mut queue, event("signer", "sign_message", Some("v"), "ok"));
    assert_eq!(queue.take(5).len(), 5, "five classes, each written at once");
    // Later events of a class name a wallet only when all of them named the same.
    cheap(&mut queue, event("reader", "open_wallet", Some("w"), "throttled"));
    cheap(&mut queue, event("reader", "create_wallet", Some("x"), "throttled"));
    cheap(&mut queue, event("signer", "sign_message", Some("w"), "ok"));
    cheap(&mut queue, event("signer", "sign_message", Some("w"), "ok"));
    let records = queue.take(5 + COALESCE_MS);
    let find = |outcome: &str| records.iter().find(|r| r.outcome == outcome).expect(outcome);
    assert_eq!(find("throttled").wallet, None);
    assert_eq!(find("throttled").method, "open_wallet,create_wallet");
    assert_eq!((find("ok").wallet.as_deref(), find("ok").count), (Some("w"), 2));
}

/// A success's target (the client an administrative call acted on) is part of its class, like a
/// wallet, and a coalesced record names it only when all its events named the same.
#[test]
fn targets_are_kept_apart_like_wallets() {
    let mut queue = AuditQueue::default();
    let admin = |target: &str| event("owner", "set_client_role", None, "ok").with_target(Some(target.into()));
    let cheap = |q: &mut AuditQueue, e: AuditEvent| q.push(e, Kind::Cheap, "owner", 5);
    cheap(&mut queue, admin("a"));
    cheap(&mut queue, admin("b"));
    let first = queue.take(5);
    let targets: Vec<_> = first.iter().map(|r| (r.target.as_deref(), r.wallet.as_deref())).collect();
    assert_eq!(targets, [(Some("a"), None), (Some("b"), None)], "two classes, each written at once");
    cheap(&mut queue, admin("a"));
    cheap(&mut queue, admin("a"));
    let later = queue.take(5 + COALESCE_MS);
    let a = later.iter().find(|r| r.count == 2).expect("a's later events");
    assert_eq!(a.target.as_deref(), Some("a"));
    // Back to back as notable events: merged only when the target is the same.
    queue.push(admin("a"), Kind::Notable, "owner", 9);
    queue.push(admin("b"), Kind::Notable, "owner", 9);
    queue.push(admin("b"), Kind::Notable, "owner", 9);
    let notable: Vec<_> = queue.take(9).iter().map(|r| (r.target.clone(), r.count)).collect();
    assert!(notable.ends_with(&[(Some("a".into()), 1), (Some("b".into()), 2)]), "{notable:?}");
    // A tally of events on two targets names neither.
    let mut tally = Tally::new("owner", "ok", 0);
    tally.add("revoke_client", (&None, &Some("a".into())), 1, 0, 0);
    tally.add("revoke_client", (&None, &Some("b".into())), 1, 0, 0);
    assert_eq!(tally.into_event().target, None, "two targets: the record names none");
}

#[test]
fn a_coalesced_record_lists_at_most_eight_methods() {
    let mut queue = AuditQueue::default();
    for n in 0..12 {
        queue.push(refused(&format!("m{n}")), Kind::Cheap, "reader", 1);
    }
    let records = queue.close_all(2);
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].method, "m1,m2,m3,m4,m5,m6,m7,m8,...");
    assert_eq!(records[1].count, 11);
}

/// The flood that stays just within a per-minute budget: ten classes of refusal, each every 30 s,
/// for 30 days. Each class is worth two records a minute (its first event and its window's
/// count): 28,800 a day if nothing but a minute's budget held it.
#[test]
fn a_steady_flood_for_a_month_adds_no_more_than_the_bucket_refills() {
    let mut queue = AuditQueue::default();
    let mut records = Vec::new();
    let mut events = 0u64;
    let days = 30;
    let day = 24 * 60 * 60 * 1000;
    let mut now = 0;
    while now < days * day {
        for n in 0..10 {
            queue.push(event("reader", "get_mnemonic", None, &format!("outcome {n}")), Kind::Cheap, "reader", now);
            events += 1;
        }
        records.extend(queue.take(now));
        now += 30_000;
    }
    records.extend(queue.close_all(now));
    assert_eq!(total(&records), events, "every event is counted");
    // The bucket: its 20, then one a refill; the over records: two a window, windows of 1, 2, ...
    // up to 6 hours.
    let bound = BUDGET as u64 + days * day / REFILL_MS + 2 * (10 + days * day / MAX_OVER_WINDOW_MS);
    eprintln!("{} records in {days} days (bound {bound}) for {events} events", records.len());
    assert!(records.len() as u64 <= bound, "{} records in {days} days (bound {bound})", records.len());
    let over = records.iter().filter(|r| r.outcome == "refused, over the audit budget").count();
    assert!(over > 100, "{over} over records");
    assert!(records.iter().all(|r| !r.outcome.starts_with("ok")), "no success was made up");
}

#[test]
fn the_over_window_doubles_while_a_principal_stays_over_and_is_a_minute_again_after() {
    let mut queue = AuditQueue::default();
    let spend = |q: &mut AuditQueue, now: u64| {
        for n in 0..(BUDGET + 5) {
            q.push(event("reader", "x", None, &format!("o{n}")), Kind::Cheap, "reader", now);
        }
    };
    spend(&mut queue, 0);
    assert_eq!(queue.budgets["reader"].over_len, OVER_WINDOW_MS);
    let over = queue.take(OVER_WINDOW_MS);
    assert!(over.iter().any(|r| r.outcome == "refused, over the audit budget" && r.count == 5), "{over:?}");
    assert_eq!(queue.budgets["reader"].over_len, 2 * OVER_WINDOW_MS, "it was over: doubled");
    spend(&mut queue, OVER_WINDOW_MS + 1);
    assert!(queue.take(2 * OVER_WINDOW_MS).iter().all(|r| !r.outcome.contains("over")), "the window is open");
    let _ = queue.take(3 * OVER_WINDOW_MS + 1);
    assert_eq!(queue.budgets["reader"].over_len, 4 * OVER_WINDOW_MS);
    // A window with nothing over: back to a minute; then, once the bucket has refilled, forgotten.
    let _ = queue.take(8 * OVER_WINDOW_MS);
    assert_eq!(queue.budgets["reader"].over_len, OVER_WINDOW_MS);
    let _ = queue.take(8 * OVER_WINDOW_MS + u64::from(BUDGET) * REFILL_MS);
    assert!(queue.budgets.is_empty(), "a full bucket is forgotten");
}

/// Past its budget, a client's successes are counted apart from its refusals and written when the
/// first over window ends, not mixed into a refusal record.
#[test]
fn past_the_budget_successes_are_counted_apart_and_written_within_a_minute() {
    let mut queue = AuditQueue::default();
    for n in 0..BUDGET {
        queue.push(event("reader", "get_mnemonic", None, &format!("refusal {n}")), Kind::Cheap, "reader", 0);
    }
    queue.push(event("reader", "open_wallet", Some("w"), "ok"), Kind::Cheap, "reader", 5);
    queue.push(event("reader", "delete_wallet", None, "forbidden"), Kind::Cheap, "reader", 6);
    assert_eq!(queue.take(6).len(), BUDGET as usize);
    let records = queue.take(5 + OVER_WINDOW_MS);
    let ok = records.iter().find(|r| r.outcome == "ok, over the audit budget").expect("the success");
    assert_eq!((ok.method.as_str(), ok.wallet.as_deref(), ok.count), ("open_wallet", Some("w"), 1));
    let refused = records.iter().find(|r| r.outcome == "refused, over the audit budget").expect("the refusal");
    assert_eq!((refused.method.as_str(), refused.count), ("delete_wallet", 1));
}

#[test]
fn a_clock_that_goes_back_ends_the_windows_it_passes() {
    let mut queue = AuditQueue::default();
    queue.push(refused("get_mnemonic"), Kind::Cheap, "reader", 10_000_000);
    queue.push(refused("delete_wallet"), Kind::Cheap, "reader", 10_000_001);
    assert_eq!(queue.take(10_000_001).len(), 1);
    // The wall clock was set back an hour: the window's count is written now, not in an hour.
    let records = queue.take(10_000_000 - 3_600_000);
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].method.as_str(), records[0].count), ("delete_wallet", 1));
    queue.push(refused("get_mnemonic"), Kind::Cheap, "reader", 10);
    assert_eq!(queue.take(10).len(), 1, "a new window, its first written at once");
}

#[test]
fn peers_that_are_no_client_share_one_budget() {
    let mut queue = AuditQueue::default();
    for n in 0..1000 {
        queue.push(
            event(&format!("cert sha256:{n:016x}"), "handshake", None, "unknown client"),
            Kind::Cheap,
            SHARED,
            7,
        );
    }
    let records = queue.close_all(8);
    assert_eq!(records.len(), BUDGET as usize + 1);
    let note = records.last().expect("the over-budget record");
    assert_eq!(
        (note.principal.as_str(), note.outcome.as_str()),
        ("keyward", "refused, over the audit budget of peers that are no client")
    );
    assert_eq!((note.method.as_str(), note.count), ("handshake", 1000 - BUDGET));
}

#[test]
fn windows_and_budgets_are_bounded() {
    let mut queue = AuditQueue::default();
    for n in 0..(MAX_BUDGETS + 10) {
        let name = format!("p{n}");
        queue.push(event(&name, "get_mnemonic", None, "forbidden"), Kind::Cheap, &name, 0);
    }
    assert!(queue.budgets.len() <= MAX_BUDGETS + 1, "and the shared one");
    assert!(queue.windows.len() <= MAX_WINDOWS);
    for n in 0..(MAX_WINDOWS + 10) {
        queue.push(event("owner", "sign_message", Some(&format!("w{n}")), "ok"), Kind::Cheap, "owner", 0);
    }
    assert!(queue.windows.len() <= MAX_WINDOWS);
    let records = queue.close_all(0);
    assert_eq!(total(&records), (MAX_BUDGETS + 10 + MAX_WINDOWS + 10) as u64);
}

#[test]
fn notable_events_are_never_coalesced_or_budgeted() {
    let mut queue = AuditQueue::default();
    for n in 0..(2 * BUDGET) {
        queue.push(event("owner", "get_mnemonic", Some(&format!("w{n}")), "ok"), Kind::Notable, "owner", 0);
    }
    assert_eq!(queue.take(0).len(), 2 * BUDGET as usize);
}
