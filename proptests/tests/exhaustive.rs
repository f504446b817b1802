//! Bounded exhaustive enumeration of `keyward-core` against the reference model: every sequence
//! of up to `d` actions over a small alphabet (two clients; init, re-key, replay, open with the
//! right and a wrong password, close, a token call, get_mnemonic, delete, create; clock jumps past
//! each limit followed by `handle_timeout`), each run on a fresh server and checked after every op
//! as the model test checks, repeated model states pruned by digest. What exactly is enumerated,
//! and why the pruning loses nothing the model can tell apart: `keyward_proptests::exhaustive`.
//!
//! Prints a line per depth and, last, `enumerated N sequences, M distinct states, depth d`; fails
//! (naming the sequence, its ops and the failed check) on the first disagreement.
//!
//! Knobs (environment):
//! * `KEYWARD_EXHAUSTIVE_DEPTH`: the depth `d`. Default [`RELEASE_DEPTH`] in an optimized build
//!   (`cargo test --release -p keyward-proptests --test exhaustive`: 187,956 sequences, 38,521
//!   states, about 2 minutes on two cores, 3 when they are shared), [`DEBUG_DEPTH`] in a build
//!   without optimizations (plain `cargo test --workspace`: 4,708 sequences, 20 to 30 seconds).
//!   Each depth costs five to seven times the one before: 6 is 1,001,548 sequences, 184,382
//!   states, about 10 minutes.
//! * `KEYWARD_EXHAUSTIVE_WALLETS`: `1` (default: the default wallet) or `2` (also `w1`).
//! * `KEYWARD_EXHAUSTIVE_REPLAYS`: how many of each client's newest accepted envelopes a replay
//!   may pick (default 2).
//! * `KEYWARD_EXHAUSTIVE_CLIENT1`: the principals client 1 starts as, comma-separated, one
//!   enumeration each (default `owner,local`: a second owner, and a second client of client 0's
//!   principal; `reader` and `signer` are the other choices).
//! * `KEYWARD_EXHAUSTIVE_THREADS`: worker threads (default: the available parallelism). The
//!   counts do not depend on it.
//!
//! The target has no libtest harness (so that the count is the last line); it honours `--list`,
//! `--ignored`, `--exact`, `--skip` and a name filter as libtest does.
#![expect(clippy::print_stdout, reason = "the command line prints its answers")]

use keyward_proptests::exhaustive::{Config, alphabet, enumerate};
use keyward_proptests::model::PRINCIPALS;

/// The test's name, for `--list` and filters.
const NAME: &str = "exhaustive_enumeration";
/// The default depth of an optimized build: the one that fits in about five minutes.
const RELEASE_DEPTH: usize = 5;
/// The default depth of a build without optimizations (about ten times slower per sequence).
const DEBUG_DEPTH: usize = 3;

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(parsed) => Some(parsed),
        Err(_) => panic!("{name}={value} is not a valid value"),
    }
}

/// Whether libtest's arguments select this test (`None`: only list it).
fn selected() -> Option<bool> {
    let (mut filters, mut skips, mut list, mut exact, mut ignored) = (Vec::new(), Vec::new(), false, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => list = true,
            "--exact" => exact = true,
            "--ignored" => ignored = true,
            "--skip" => skips.extend(args.next()),
            "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" | "--shuffle-seed" => {
                args.next();
            }
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter.to_owned()),
        }
    }
    let matches = |f: &String| if exact { f == NAME } else { NAME.contains(f.as_str()) };
    let chosen = !ignored && (filters.is_empty() || filters.iter().any(matches)) && !skips.iter().any(matches);
    if list {
        if chosen {
            println!("{NAME}: test");
        }
        return None;
    }
    Some(chosen)
}

fn main() {
    match selected() {
        None => return,
        Some(false) => {
            println!("running 0 tests ({NAME} filtered out)");
            return;
        }
        Some(true) => {}
    }
    let optimized = !cfg!(debug_assertions);
    let default_depth = if optimized { RELEASE_DEPTH } else { DEBUG_DEPTH };
    let client1 = match std::env::var("KEYWARD_EXHAUSTIVE_CLIENT1") {
        Err(_) => Config::default().client1,
        Ok(list) => list
            .split(',')
            .map(|name| match PRINCIPALS.iter().position(|(p, role)| *p == name.trim() && role.is_some()) {
                Some(p) => p as u8,
                None => panic!("KEYWARD_EXHAUSTIVE_CLIENT1: {name} is not a known principal"),
            })
            .collect(),
    };
    let config = Config {
        depth: env("KEYWARD_EXHAUSTIVE_DEPTH").unwrap_or(default_depth),
        client1,
        wallets: env("KEYWARD_EXHAUSTIVE_WALLETS").unwrap_or(1),
        replays: env("KEYWARD_EXHAUSTIVE_REPLAYS").unwrap_or(2),
        threads: env("KEYWARD_EXHAUSTIVE_THREADS")
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get)),
    };
    assert!((1..=2).contains(&config.wallets), "KEYWARD_EXHAUSTIVE_WALLETS is 1 or 2");
    let depth_note = match (std::env::var_os("KEYWARD_EXHAUSTIVE_DEPTH"), optimized) {
        (Some(_), _) => "set by KEYWARD_EXHAUSTIVE_DEPTH".to_owned(),
        (None, true) => "the default of an optimized build; KEYWARD_EXHAUSTIVE_DEPTH sets another".to_owned(),
        (None, false) => format!(
            "the smaller default of a build without optimizations; an optimized build (--release) runs \
             {RELEASE_DEPTH}; KEYWARD_EXHAUSTIVE_DEPTH sets another"
        ),
    };
    let names: Vec<&str> = config.client1.iter().map(|p| PRINCIPALS[usize::from(*p)].0).collect();
    println!("{NAME}: depth {} ({depth_note})", config.depth);
    println!(
        "  client 1 as {}; {} wallet(s); replays of the newest {} envelopes; {} actions; {} thread(s)",
        names.join(", "),
        config.wallets,
        config.replays,
        alphabet(&config).len(),
        config.threads
    );
    let mut total = 0;
    let report = enumerate(&config, |level| {
        total += level.sequences;
        println!(
            "  depth {}: {} sequences, {} new states, {:.1} s (total {total} sequences)",
            level.depth,
            level.sequences,
            level.new_states,
            level.elapsed.as_secs_f64()
        );
    })
    .unwrap_or_else(|mismatch| panic!("{mismatch}"));
    assert!(report.sequences > 0 && report.states > 0, "nothing was enumerated");
    println!("enumerated {} sequences, {} distinct states, depth {}", report.sequences, report.states, report.depth);
}
