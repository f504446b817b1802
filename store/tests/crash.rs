//! Crash safety across processes. A child process (this test binary, re-run with an environment
//! variable) loops `change_password`, `create_wallet`, `create_account_path` and `delete_wallet` on
//! a fjall store through the core server; the parent kills it with SIGKILL at random moments, then
//! reopens the data directory and checks that
//!
//! * it opens (the dead child's lock is gone, fjall recovers its journal);
//! * the main wallet opens with exactly one of the two passwords of the change that may have been
//!   in flight, and never with one older than the last change the child saw succeed;
//! * every wallet visible is whole (its record opens, its accounts are there), every wallet the
//!   child saw deleted is gone, every one it saw created (and not deleted) is there;
//! * no record file is left that no wallet names.
//!
//! `KEYWARD_CRASH_KILLS` sets the number of kills (default 20), `KEYWARD_CRASH_SEED` the random
//! seed (default: from the clock; printed either way).
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{create, key, open, temp_data_dir};
use keyward_core::Server;
use keyward_core::crypto::Password;
use keyward_core::store::SeedRecord;
use keyward_core::store::{Account, Store};
use keyward_store::FjallStore;
use keyward_testkit::{Harness, test_config};
use serde_json::json;

/// What the child does: `crash` (the loop) or `open` (try to open once and report).
const CHILD_MODE: &str = "KEYWARD_STORE_TEST_CHILD";
const CHILD_DIR: &str = "KEYWARD_STORE_TEST_DIR";
const CHILD_PASSWORD: &str = "KEYWARD_STORE_TEST_PASSWORD";
const CHILD_RUN: &str = "KEYWARD_STORE_TEST_RUN";
const MAIN: &str = "main";
const TEMP_PASSWORD: &str = "t";

fn password(n: u64) -> String {
    format!("pw-{n}")
}

fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@{line}").unwrap();
    out.flush().unwrap();
}

/// The child's entry point: does nothing unless started by a test below.
#[test]
#[ignore = "a child process of the tests in this file; does nothing on its own"]
fn child_process() {
    let Some(mode) = std::env::var_os(CHILD_MODE) else { return };
    let dir = std::path::PathBuf::from(std::env::var_os(CHILD_DIR).unwrap());
    match mode.to_str().unwrap() {
        "open" => match FjallStore::open(&dir) {
            Ok(_) => report("opened"),
            Err(e) => report(&format!("refused {e}")),
        },
        "crash" => crash_loop(&dir),
        other => panic!("unknown child mode {other}"),
    }
}

fn crash_loop(dir: &Path) {
    let mut n: u64 = std::env::var(CHILD_PASSWORD).unwrap().parse().unwrap();
    let run: u64 = std::env::var(CHILD_RUN).unwrap().parse().unwrap();
    let store = FjallStore::open(dir).unwrap();
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&run.to_le_bytes());
    let mut h = Harness { server: Server::new(test_config(), Box::new(store), seed), now_ms: 1_000 };
    let mut c = h.client(1, true);
    report("ready");
    for i in 0.. {
        h.ok(&mut c, "change_password", json!({"name": MAIN, "old": password(n), "new": password(n + 1)}));
        n += 1;
        report(&format!("pw {n}"));
        let name = format!("t{run}x{i}");
        create(&mut h, &mut c, &name, TEMP_PASSWORD);
        report(&format!("created {name}"));
        let token = open(&mut h, &mut c, &name, TEMP_PASSWORD);
        h.ok(&mut c, "create_account_path", json!({"token": token, "label": "extra"}));
        report(&format!("account {name}"));
        h.ok(&mut c, "delete_wallet", json!({"name": name, "password": TEMP_PASSWORD}));
        report(&format!("deleted {name}"));
    }
}

fn child(mode: &str, dir: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child_process", "--ignored", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_MODE, mode)
        .env(CHILD_DIR, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The protocol lines (`@...`) a child wrote.
fn reported(output: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(output).lines().filter_map(|l| l.strip_prefix('@')).map(str::to_owned).collect()
}

#[test]
fn a_second_process_is_refused() {
    let (_temp, data) = temp_data_dir();
    let store = FjallStore::open(&data).unwrap();
    store.save_config("", b"kept").unwrap();
    let output = child("open", &data).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        reported(&output.stdout),
        ["refused data directory is in use by another keyward process (its LOCK file is locked)"]
    );
    assert_eq!(store.load_config("").unwrap().as_deref(), Some(&b"kept"[..]));
    drop(store);
    let output = child("open", &data).output().unwrap();
    assert_eq!(reported(&output.stdout), ["opened"]);
}

/// xorshift64*: enough randomness for kill moments, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Checks the data directory after a kill; returns the main wallet's password number.
fn verify(data: &Path, before: u64, lines: &[String]) -> Result<u64, String> {
    let last_seen = lines.iter().filter_map(|l| l.strip_prefix("pw ")).map(|n| n.parse::<u64>().unwrap()).max();
    let floor = last_seen.unwrap_or(before);
    let store = FjallStore::open(data).map_err(|e| format!("reopen failed: {e}"))?;
    let main = store.load_wallet(&key("", MAIN)).map_err(|e| format!("load: {e}"))?.ok_or("main wallet missing")?;
    let record = SeedRecord::from_bytes(&main.seed_record).map_err(|e| format!("main record: {e}"))?;
    // Any password from two before the floor to two after: exactly one may open, and it must be
    // the floor (the last change seen to succeed) or the one after it (a change in flight).
    let opening: Vec<u64> = (floor.saturating_sub(2)..=floor + 2)
        .filter(|&k| record.open(&Password::from(password(k).as_str())).is_ok())
        .collect();
    if opening.len() != 1 || !(opening[0] == floor || opening[0] == floor + 1) {
        return Err(format!("main wallet opens with {opening:?}, expected exactly one of [{floor}, {}]", floor + 1));
    }
    if main.accounts != [Account { label: "default".into(), index: 0 }] {
        return Err(format!("main wallet accounts: {:?}", main.accounts));
    }
    let seen = |prefix: &str| -> BTreeSet<String> {
        lines.iter().filter_map(|l| l.strip_prefix(prefix)).map(str::to_owned).collect()
    };
    let (created, with_account, deleted) = (seen("created "), seen("account "), seen("deleted "));
    let names = store.list_wallets("").map_err(|e| format!("list: {e}"))?;
    let record_files = std::fs::read_dir(data.join("seeds")).unwrap().count();
    if record_files != names.len() {
        return Err(format!("{record_files} record files for {} wallets", names.len()));
    }
    for name in &names {
        if name == MAIN {
            continue;
        }
        let wallet = store.load_wallet(&key("", name)).map_err(|e| format!("load {name}: {e}"))?.ok_or("vanished")?;
        let record = SeedRecord::from_bytes(&wallet.seed_record).map_err(|e| format!("{name} record: {e}"))?;
        record.open(&Password::from(TEMP_PASSWORD)).map_err(|e| format!("{name} does not open: {e}"))?;
        let labels: Vec<_> = wallet.accounts.iter().map(|a| a.label.as_str()).collect();
        let expected: &[&[&str]] =
            if with_account.contains(name) { &[&["default", "extra"]] } else { &[&["default"], &["default", "extra"]] };
        if !expected.contains(&labels.as_slice()) {
            return Err(format!("{name} has accounts {labels:?}"));
        }
        if deleted.contains(name) {
            return Err(format!("{name} was deleted but is visible"));
        }
        // Tidy up the wallet the kill left, so the store stays small.
        store.delete_wallet(&key("", name)).map_err(|e| format!("delete {name}: {e}"))?;
    }
    // A wallet seen created must be there, unless its delete may have been in flight (the child
    // deletes a wallet right after reporting its account).
    for name in created.difference(&deleted) {
        if !names.contains(name) && !with_account.contains(name) {
            return Err(format!("{name} was created but is missing"));
        }
    }
    Ok(opening[0])
}

/// The password number near `near` that opens the main wallet, if the store opens at all.
fn current_password(data: &Path, near: u64) -> Option<u64> {
    let store = FjallStore::open(data).ok()?;
    let main = store.load_wallet(&key("", MAIN)).ok()??;
    let record = SeedRecord::from_bytes(&main.seed_record).ok()?;
    (near.saturating_sub(3)..=near + 3).find(|&k| record.open(&Password::from(password(k).as_str())).is_ok())
}

#[test]
fn sigkill_at_random_moments_leaves_old_or_new_password() {
    let kills: u64 = std::env::var("KEYWARD_CRASH_KILLS").ok().map_or(20, |v| v.parse().unwrap());
    let seed: u64 = std::env::var("KEYWARD_CRASH_SEED").ok().map_or_else(
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1,
        |v| v.parse().unwrap(),
    );
    eprintln!("crash test: {kills} kills, KEYWARD_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let (_temp, data) = temp_data_dir();
    {
        let mut h = common::harness(&data, 1);
        let mut c = h.client(1, true);
        create(&mut h, &mut c, MAIN, &password(0));
    }
    let mut n = 0;
    let mut failures = Vec::new();
    let (mut before_ready, mut exited, mut changes) = (0, 0, 0);
    let (mut ready_times, mut change_times) = (Vec::new(), Vec::new());
    for run in 0..kills {
        let mut command = child("crash", &data);
        command.env(CHILD_PASSWORD, n.to_string()).env(CHILD_RUN, run.to_string());
        let started = Instant::now();
        let mut process = command.spawn().unwrap();
        let stdout = process.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(line) = line.strip_prefix('@') {
                    let _ = send.send((started.elapsed(), line.to_owned()));
                }
            }
        });
        let mut seen = Vec::new();
        // A quarter of the kills land in the child's first milliseconds (process start, fjall's
        // journal recovery, the removal of leftovers); the rest while its loop runs.
        if rng.below(4) == 0 {
            std::thread::sleep(Duration::from_micros(rng.below(8_000)));
        } else {
            let deadline = Instant::now() + Duration::from_secs(20);
            while let Ok((at, line)) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                let ready = line == "ready";
                seen.push(line);
                if ready {
                    ready_times.push(at);
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(rng.below(80_000)));
        }
        if let Some(status) = process.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut process.stderr.take().unwrap(), &mut stderr).unwrap();
            failures.push(format!("run {run}: child exited by itself ({status}): {stderr}"));
            exited += 1;
        }
        let _ = process.kill(); // SIGKILL

        process.wait().unwrap();
        reader.join().unwrap();
        for (at, line) in lines.try_iter() {
            if line == "ready" {
                ready_times.push(at);
            }
            if line.starts_with("pw ") {
                change_times.push(at);
            }
            seen.push(line);
        }
        if !seen.iter().any(|l| l == "ready") {
            before_ready += 1;
        }
        changes += seen.iter().filter(|l| l.starts_with("pw ")).count();
        match verify(&data, n, &seen) {
            Ok(now) => n = now,
            Err(e) => {
                failures.push(format!("run {run}: {e}"));
                // Carry on from whatever password opens, so the count of failures means something.
                match current_password(&data, n) {
                    Some(now) => n = now,
                    None => break,
                }
            }
        }
    }
    eprintln!(
        "crash test: {kills} kills ({before_ready} before the child was ready), {changes} password changes seen, \
         {exited} early exits, {} failures",
        failures.len()
    );
    ready_times.sort();
    change_times.sort();
    eprintln!(
        "crash test: median time from spawn to ready {:?}, median time of a reported change {:?}",
        ready_times.get(ready_times.len() / 2),
        change_times.get(change_times.len() / 2)
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
