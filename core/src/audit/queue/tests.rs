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

#[test]
fn a_flood_for_days_is_merged_harder_and_a_quiet_principal_gets_minutes_again() {
    let mut queue = AuditQueue::default();
    let mut records = Vec::new();
    let mut events = 0u64;
    // Three days: every ten seconds, 50 refusals of 30 kinds (each outcome a class of its own).
    let day = 24 * 60 * 60 * 1000;
    let mut now = 0;
    while now < 3 * day {
        for n in 0..50u64 {
            let outcome = format!("outcome {}", (now / 10_000 + n) % 30);
            queue.push(event("reader", "get_mnemonic", None, &outcome), Kind::Cheap, "reader", now);
            events += 1;
        }
        records.extend(queue.take(now));
        now += 10_000;
    }
    records.extend(queue.close_all(now));
    assert_eq!(total(&records), events, "every event is counted");
    // Windows of 1, 2, 4, ... 1024 minutes, then days: at most 13 windows in 3 days.
    assert!(records.len() <= 13 * (BUDGET as usize + 1) + 1, "{} records in 3 days", records.len());
    let over: Vec<&AuditEvent> = records.iter().filter(|r| r.outcome == "over the audit budget").collect();
    assert!(over.len() >= 11, "one over-budget record per window");
    let longest = over.iter().filter_map(|r| r.span).map(|s| s.last_unix_ms - s.first_unix_ms).max();
    assert!(longest > Some(day / 2), "the last windows are long");
    assert!(queue.budgets.is_empty() && queue.windows.is_empty(), "nothing is held after close_all");

    // After a window within budget, a principal is back to one-minute windows.
    let mut queue = AuditQueue::default();
    for n in 0..(BUDGET + 5) {
        queue.push(event("reader", "x", None, &format!("o{n}")), Kind::Cheap, "reader", 0);
    }
    assert_eq!(queue.budgets["reader"].len, BUDGET_WINDOW_MS);
    let _ = queue.take(BUDGET_WINDOW_MS);
    assert_eq!(queue.budgets["reader"].len, 2 * BUDGET_WINDOW_MS, "overspent: doubled");
    queue.push(refused("x"), Kind::Cheap, "reader", BUDGET_WINDOW_MS + 1);
    let _ = queue.take(3 * BUDGET_WINDOW_MS + COALESCE_MS);
    assert!(queue.budgets.is_empty(), "within budget: forgotten, so the next window is a minute");
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
        ("keyward", "over the audit budget of peers that are no client")
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
