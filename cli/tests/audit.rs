//! `keyward audit show|verify` as a person uses it: on a closed data directory (read from the
//! store), on one a server holds (read over the API), and on copies tampered with the way someone
//! with the files could: an edited record, a record removed from the middle or the end, two records
//! swapped. Each tampering makes `verify` exit non-zero naming the first bad record.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::{copy_dir, keyward, text};
use keyward_core::audit::{AuditEvent, AuditRecord};
use keyward_store::FjallStore;
use keyward_testkit::Harness;
use serde_json::{Value, json};

/// Records written directly, after the server's own.
const APPENDED: u64 = 12;

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        principal: if n.is_multiple_of(2) { "dashboard".into() } else { "uid-1000".into() },
        method: "sign_message".into(),
        wallet: Some(format!("w{n}")),
        target: None,
        outcome: "ok".into(),
        count: if n == 3 { 40 } else { 1 },
        span: None,
    }
}

/// A data directory whose store holds a log of real calls, [`APPENDED`] appended events and `bulk`
/// more; returns its number of records.
fn make_data_dir(data: &Path, bulk: u64) -> u64 {
    // Opened as `keyward serve` opens it: the log's head kept in `audit.head`.
    let options = keyward_store::StoreOptions { audit_head: Some(data.join("audit.head")), ..Default::default() };
    let store = FjallStore::open_with(&data.join("store"), options).unwrap();
    let mut h = Harness::new(Box::new(store));
    let mut c = h.client(1, true);
    let params = json!({"name": "alice", "mnemonic": null, "mnemonic_length": 16, "password": "pw"});
    assert_eq!(h.ok(&mut c, "create_wallet", params), Value::Null);
    let _ = h.call(&mut c, "open_wallet", json!({"name": "alice", "password": "wrong"}));
    h.ok(&mut c, "open_wallet", json!({"name": "alice", "password": "pw"}));
    h.ok(&mut c, "close_wallet", json!({"name": "alice"}));
    // A client administration call: its record names the client as its target (hashed as v3).
    h.ok(&mut c, "add_client", json!({"name": "u7", "role": "reader", "public_key": null, "uid": 7007}));
    h.server.flush_audit();
    let store = h.server.store();
    for n in 0..APPENDED {
        store.append_audit(&[event(n)]).unwrap();
    }
    let bulk: Vec<AuditEvent> = (0..bulk).map(|n| AuditEvent { principal: "bulk".into(), ..event(n) }).collect();
    store.append_audit(&bulk).unwrap();
    let (anchor, head) = store.audit_bounds().unwrap();
    assert_eq!(anchor.seq, 0);
    assert!(head.seq >= APPENDED + 5, "the calls were audited: head {}", head.seq);
    head.seq
}

fn audit(data: &Path, args: &[&str]) -> Output {
    let mut command = keyward();
    command.env_remove("KEYWARD_DATA_DIR").arg("audit").args(args).arg("--data-dir").arg(data);
    command.stdin(Stdio::null()).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `show`'s header line.
const HEADER: [&str; 7] = ["TIME", "SEQ", "PRINCIPAL", "METHOD", "WALLET", "TARGET", "OUTCOME"];

/// A line of `show`, split into its columns (an outcome of several words is several).
fn columns(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `show`'s output: its header checked, and its records' lines.
fn shown_records(output: &Output) -> Vec<String> {
    assert!(output.status.success(), "{}", text(output));
    let shown = stdout(output);
    let mut lines = shown.lines();
    assert_eq!(lines.next().map(columns), Some(HEADER.to_vec()), "{shown}");
    lines.map(str::to_owned).collect()
}

/// The sequence numbers of `show`'s lines.
fn seqs(lines: &[String]) -> Vec<u64> {
    lines.iter().map(|l| columns(l)[1].parse().unwrap()).collect()
}

/// A fresh copy of `original`, changed by `tamper` through the store's raw access.
fn tampered(original: &Path, name: &str, tamper: impl FnOnce(&FjallStore)) -> PathBuf {
    let copy = original.parent().unwrap().join(name);
    copy_dir(original, &copy);
    let store = FjallStore::open(&copy.join("store")).unwrap();
    tamper(&store);
    copy
}

/// A change made to a copy of the store.
type Tamper = Box<dyn FnOnce(&FjallStore)>;

fn raw_record(store: &FjallStore, seq: u64) -> AuditRecord {
    AuditRecord::from_bytes(&store.raw_audit_get(seq).unwrap().unwrap()).unwrap()
}

#[test]
fn verify_names_the_first_bad_record_of_every_tampering() {
    let temp = tempfile::tempdir().unwrap();
    let original = temp.path().join("original");
    let n = make_data_dir(&original, 0);
    let middle = n / 2;

    let output = audit(&original, &["verify"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(stdout(&output), format!("audit log verified: {n} records (seq 1..{n}), and audit.head matches\n"));

    let cases: Vec<(&str, Tamper, String)> = vec![
        (
            "edited",
            Box::new(move |store| {
                let mut record = raw_record(store, middle);
                record.event.outcome = "forbidden".into();
                store.raw_audit_put(middle, &record.to_bytes()).unwrap();
            }),
            format!("broken at record {middle} (seq {middle}): its contents do not match its hash (edited)"),
        ),
        (
            "removed",
            Box::new(move |store| store.raw_audit_remove(middle).unwrap()),
            format!("broken at record {middle} (seq {}): out of sequence", middle + 1),
        ),
        (
            "swapped",
            Box::new(move |store| {
                let (a, b) = (store.raw_audit_get(3).unwrap().unwrap(), store.raw_audit_get(middle).unwrap().unwrap());
                store.raw_audit_put(3, &b).unwrap();
                store.raw_audit_put(middle, &a).unwrap();
            }),
            format!("broken at record 3 (seq {middle}): out of sequence"),
        ),
        (
            "truncated",
            Box::new(move |store| store.raw_audit_remove(n).unwrap()),
            format!("broken at record {n} (seq {n}): the log ends before its last record"),
        ),
    ];
    for (name, tamper, expected) in cases {
        let copy = tampered(&original, name, tamper);
        let output = audit(&copy, &["verify"]);
        assert!(!output.status.success(), "{name}: {}", text(&output));
        assert!(text(&output).contains(&format!("audit log {expected}")), "{name}: {}", text(&output));
    }

    // A record that no longer parses is named too.
    let copy = tampered(&original, "garbled", |store| store.raw_audit_put(5, b"{\"seq\":").unwrap());
    let output = audit(&copy, &["verify"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("audit record 5 is unreadable"), "{}", text(&output));

    // Reading never changed the original.
    let output = audit(&original, &["verify"]);
    assert_eq!(stdout(&output), format!("audit log verified: {n} records (seq 1..{n}), and audit.head matches\n"));
}

#[test]
fn show_prints_filters_and_writes_json() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let n = make_data_dir(&data, 0);

    let output = audit(&data, &["show"]);
    let shown = stdout(&output);
    let lines = shown_records(&output);
    assert_eq!(lines.len() as u64, n, "{shown}");
    // time, seq, principal, method, wallet, target, outcome (and the count when above 1), one
    // record per line, in columns aligned under the header.
    let has = |cells: &[&str]| lines.iter().any(|l| columns(l)[2..] == *cells);
    assert!(has(&["local", "create_wallet", "alice", "-", "ok"]), "{shown}");
    assert!(has(&["local", "close_wallet", "alice", "-", "ok"]), "{shown}");
    assert!(has(&["uid-1000", "sign_message", "w3", "-", "ok", "x", "40"]), "{shown}");
    assert!(has(&["local", "open_wallet", "alice", "-", "wrong", "password"]), "{shown}");
    // A client administration call: the client is its target, not a wallet.
    assert!(has(&["local", "add_client", "-", "u7", "ok"]), "{shown}");
    let first = &lines[0];
    assert_eq!(&first[4..5], "-");
    assert_eq!(&first[10..11], "T");
    assert_eq!(&first[23..26], "Z  ");
    assert_eq!(columns(first)[1..4], ["1", "local", "create_wallet"], "{first}");
    let header = shown.lines().next().unwrap();
    for name in &HEADER[2..] {
        let at = header.find(name).unwrap();
        assert!(lines.iter().all(|l| l[at - 2..at].chars().all(|c| c == ' ')), "{name} is a column: {shown}");
        assert!(lines.iter().all(|l| l.chars().nth(at).is_some_and(|c| c != ' ')), "{name} is aligned: {shown}");
    }
    // SEQ is right-aligned: every number ends where its header does.
    let seq_end = header.find("SEQ").unwrap() + 3;
    assert!(
        lines.iter().all(|l| l[..seq_end].ends_with(|c: char| c.is_ascii_digit()) && l[seq_end..].starts_with("  ")),
        "{shown}"
    );

    let json = audit(&data, &["show", "--json", "--principal", "dashboard"]);
    assert!(json.status.success(), "{}", text(&json));
    let records: Vec<AuditRecord> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(records.len() as u64, APPENDED / 2);
    assert!(records.iter().all(|r| r.event.principal == "dashboard" && r.hash == r.expected_hash()));

    // `audit export` writes the target as a field of its own.
    let export = audit(&data, &["export", "--json"]);
    assert!(export.status.success(), "{}", text(&export));
    let added: Vec<Value> = stdout(&export)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["event"]["method"] == "add_client")
        .collect();
    assert_eq!(added.len(), 1, "{}", stdout(&export));
    assert_eq!((&added[0]["event"]["wallet"], &added[0]["event"]["target"]), (&Value::Null, &json!("u7")));
    assert!(!stdout(&export).lines().filter(|l| !l.contains("add_client")).any(|l| l.contains("\"target\"")));

    let since_all = audit(&data, &["show", "--since", "2000-01-01T00:00:00Z"]);
    assert_eq!(stdout(&since_all), shown);
    let since_ms = audit(&data, &["show", "--since", "0", "--principal", "nobody", "--json"]);
    assert_eq!(stdout(&since_ms), "[]\n");
    let future = audit(&data, &["show", "--since", "2999-12-31T23:59:59.999+01:00"]);
    assert!(shown_records(&future).is_empty(), "{}", text(&future));
    let bad = audit(&data, &["show", "--since", "yesterday"]);
    assert!(!bad.status.success() && text(&bad).contains("RFC 3339"), "{}", text(&bad));
    // A time ago: the records were written within the last day, none in the future.
    let day = audit(&data, &["show", "--since", "1d"]);
    assert_eq!(stdout(&day), shown);
    let hour = audit(&data, &["show", "--since", "1h", "--principal", "dashboard", "--json"]);
    assert_eq!(serde_json::from_slice::<Vec<Value>>(&hour.stdout).unwrap().len() as u64, APPENDED / 2);
    let bad = audit(&data, &["show", "--since", "1w"]);
    assert!(!bad.status.success() && text(&bad).contains("90s, 15m, 1h, 7d"), "{}", text(&bad));

    let missing = audit(&temp.path().join("nothing-here"), &["verify"]);
    assert!(!missing.status.success() && text(&missing).contains("holds no keyward store"), "{}", text(&missing));
    assert!(!temp.path().join("nothing-here").exists(), "audit made no data directory");
}

#[test]
fn a_running_server_is_read_over_the_api() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    // More than two pages of `audit_log`.
    let n = make_data_dir(&data, 2345);
    let ready = temp.path().join("ready.json");
    let mut command = keyward();
    command.env_remove("KEYWARD_DATA_DIR").stderr(Stdio::null());
    command.args(["serve", "--https", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--data-dir"]).arg(&data);
    command.arg("--ready-file").arg(&ready);
    let (serve, info) = common::serve(command, &ready);
    let url = format!("https://{}/v3/owner", info["https"].as_str().unwrap());

    // The store is locked: without an address, the server is found where it said it listens
    // (DATA_DIR/run/endpoints.json).
    let output = audit(&data, &["verify"]);
    assert!(output.status.success(), "{}", text(&output));
    // Without that file (removed by hand), the default address is tried and the error says why.
    let endpoints = data.join("run/endpoints.json");
    let kept = std::fs::read(&endpoints).unwrap();
    std::fs::remove_file(&endpoints).unwrap();
    let output = audit(&data, &["verify"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(text(&output).contains("its store is locked) but does not answer"), "{}", text(&output));
    std::fs::write(&endpoints, kept).unwrap();

    for transport in [["--url", url.as_str()], ["--quic", info["quic"].as_str().unwrap()]] {
        let output = audit(&data, &["verify", transport[0], transport[1]]);
        assert!(output.status.success(), "{}", text(&output));
        let verdict = stdout(&output);
        assert!(verdict.starts_with("audit log verified: ") && verdict.contains("(seq 1.."), "{verdict}");
        let output = audit(&data, &["show", "--json", transport[0], transport[1]]);
        assert!(output.status.success(), "{}", text(&output));
        let records: Vec<AuditRecord> = serde_json::from_slice(&output.stdout).unwrap();
        assert!(records.len() as u64 >= n, "{} records", records.len());
        assert_eq!(records[3].event.method, "close_wallet");
    }
    drop(serve);
}

#[test]
fn a_log_of_many_pages_verifies_and_a_break_on_a_later_page_is_named() {
    let temp = tempfile::tempdir().unwrap();
    let original = temp.path().join("original");
    let n = make_data_dir(&original, 2 * keyward_core::AUDIT_PAGE_MAX as u64 + 345);
    let output = audit(&original, &["verify"]);
    assert_eq!(
        stdout(&output),
        format!("audit log verified: {n} records (seq 1..{n}), and audit.head matches\n"),
        "{}",
        text(&output)
    );
    let shown = audit(&original, &["show", "--principal", "bulk"]);
    assert_eq!(shown_records(&shown).len() as u64, n - APPENDED - 5);

    // --tail: the last records, read back from the head a page at a time (these span pages).
    let tail = shown_records(&audit(&original, &["show", "--tail", "3"]));
    assert_eq!(seqs(&tail), [n - 2, n - 1, n]);
    let local = shown_records(&audit(&original, &["show", "--tail", "2", "--principal", "local"]));
    assert_eq!(seqs(&local), [4, 5], "the last two of the first page's, found from the head: {local:?}");
    assert_eq!(columns(&local[1])[3], "add_client");
    let dashboards = audit(&original, &["show", "--tail", "4", "--principal", "dashboard", "--json"]);
    let records: Vec<AuditRecord> = serde_json::from_slice(&dashboards.stdout).unwrap();
    let expected: Vec<u64> = (0..APPENDED).filter(|i| i % 2 == 0).map(|i| 6 + i).skip(2).collect();
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), expected);
    let all = shown_records(&audit(&original, &["show", "--tail", "99999"]));
    assert_eq!(seqs(&all), (1..=n).collect::<Vec<_>>(), "more than there are: all of them");
    assert!(shown_records(&audit(&original, &["show", "--tail", "0"])).is_empty());
    let since = shown_records(&audit(&original, &["show", "--tail", "2", "--since", "1d", "--principal", "local"]));
    assert_eq!(seqs(&since), [4, 5]);

    let removed = tampered(&original, "removed", |store| store.raw_audit_remove(1501).unwrap());
    let output = audit(&removed, &["verify"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("broken at record 1501 (seq 1502): out of sequence"), "{}", text(&output));
    let truncated = tampered(&original, "truncated", |store| store.raw_audit_remove(n).unwrap());
    let output = audit(&truncated, &["verify"]);
    assert!(text(&output).contains(&format!("broken at record {n} (seq {n}): the log ends")), "{}", text(&output));
}

/// `show --follow` against a live server: it prints the log, then a record the server writes
/// afterwards (a client added over the API, with its target), until it is killed. Without a
/// server it refuses, saying it needs one.
#[test]
fn follow_prints_new_records_as_a_running_server_writes_them() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let n = make_data_dir(&data, 0);

    let refused = audit(&data, &["show", "--follow"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("--follow needs a running server: none runs on"), "{}", text(&refused));

    let ready = temp.path().join("ready.json");
    let mut command = keyward();
    command.env_remove("KEYWARD_DATA_DIR").stderr(Stdio::null());
    command.args(["serve", "--https", "127.0.0.1:0", "--data-dir"]).arg(&data).arg("--ready-file").arg(&ready);
    let (serve, info) = common::serve(command, &ready);
    let url = format!("https://{}/v3/owner", info["https"].as_str().unwrap());

    let mut follow = keyward();
    follow.env_remove("KEYWARD_DATA_DIR").args(["audit", "show", "--follow", "--tail", "2", "--url", &url]);
    let mut follow =
        common::Serve(follow.arg("--data-dir").arg(&data).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap());
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = follow.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next = || seen.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
    assert_eq!(columns(&next()), HEADER);
    // The last two records, then (the server's own start records may come too) the new one.
    let first: u64 = columns(&next())[1].parse().unwrap();
    assert!(first >= n - 1, "{first}");
    let mut add = keyward();
    add.env_remove("KEYWARD_DATA_DIR").args(["clients", "add", "u8", "--role", "reader", "--uid", "8008"]);
    add.args(["--url", &url, "--data-dir"]).arg(&data);
    assert!(common::run(&mut add, None, None).status.success());
    let added = loop {
        let line = next();
        if columns(&line)[3] == "add_client" && columns(&line).contains(&"u8") {
            break line;
        }
    };
    let cells = columns(&added);
    assert_eq!(cells[4..], ["-", "u8", "ok"], "{added}");
    assert!(follow.0.try_wait().unwrap().is_none(), "it goes on following");
    // Ctrl-C (SIGINT) ends it cleanly.
    let pid = follow.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = follow.0.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "still following after Ctrl-C");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    drop(follow);
    drop(serve);
}
