//! Issue 23, item 8e: a live `keyward serve` warns at start, naming the directory and the
//! `chmod 700` fix, for each of the data directory, `tls/` and `store/` that others can open.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use common::{keyward, serve};

/// Starts `keyward serve` on `data`, waits until it is ready, stops it: its log.
fn start_log(root: &Path, data: &Path) -> String {
    let ready = root.join("ready.json");
    let log = root.join("serve.log");
    let mut command = keyward();
    command.env_remove("KEYWARD_DATA_DIR").env("RUST_LOG", "info").stderr(std::fs::File::create(&log).unwrap());
    command.arg("serve").arg("--data-dir").arg(data);
    command.args(["--https", "127.0.0.1:0", "--quic", "off", "--pairing", "off", "--ready-file"]).arg(&ready);
    command.stdin(Stdio::null());
    let (running, _) = serve(command, &ready);
    drop(running);
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn serve_warns_about_directories_other_users_can_read() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("kw");
    // The first start makes the three directories private: no warning.
    let first = start_log(root.path(), &data);
    assert!(!first.contains("open to other users"), "{first}");
    let dirs = [data.clone(), data.join("tls"), data.join("store")];
    for dir in &dirs {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let second = start_log(root.path(), &data);
    for dir in &dirs {
        let expected = format!("{} is open to other users (mode 0755)", dir.display());
        assert!(second.contains(&expected), "expected {expected:?} in {second}");
        let fix = format!("run: chmod 700 {}", dir.display());
        assert!(second.contains(&fix), "expected {fix:?} in {second}");
    }
    // The server made the data directory private again; `tls/` and `store/` are the operator's.
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
}
