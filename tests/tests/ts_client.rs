//! The TypeScript package's own suite (`clients/ts/`, `node --test`): `npm ci && npm run build &&
//! npm test` against the `keyward` binary of this source tree, so that `cargo test --workspace` covers
//! the package. Its tests start their own live servers (and a launched one), pair with real codes and
//! spawn the native-messaging host. Skips with one line without node or npm; fails instead under
//! `KEYWARD_REQUIRE_INTEROP=1`.

use std::io::Write as _;

use keyward_tests::browser::keyward_binary;
use keyward_tests::ts;

const TEST: &str = "ts_client";

#[test]
fn the_typescript_package_passes_its_suite_against_a_live_server() {
    let Some((dir, npm)) = ts::built_package(TEST) else { return };
    let binary = keyward_binary();
    let output = ts::npm_run(&npm, &dir, &["test"], &[("KEYWARD_BIN", binary.as_os_str())])
        .unwrap_or_else(|failure| panic!("{failure}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    // node's runner closes with its counts: show them, and check that tests ran and none failed.
    let counts = ["tests", "pass", "fail", "cancelled", "skipped", "todo", "duration_ms"];
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|line| {
            counts.iter().any(|name| line.strip_prefix("# ").is_some_and(|rest| rest.starts_with(&format!("{name} "))))
        })
        .collect();
    // Straight to stderr: the harness captures eprintln!, and the counts belong in the run's log.
    let _ = writeln!(std::io::stderr(), "clients/ts (node --test): {}", summary.join(", "));
    let count = |name: &str| {
        summary
            .iter()
            .find_map(|line| line.strip_prefix(&format!("# {name} ")))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no '# {name}' line in node's output:\n{stdout}"))
    };
    assert!(count("pass") >= 20, "the suite ran too few tests:\n{stdout}");
    assert_eq!(count("fail"), 0, "{stdout}");
    assert_eq!(count("cancelled"), 0, "{stdout}");
    assert_eq!(count("skipped"), 0, "a skipped test in the package's suite:\n{stdout}");
}
