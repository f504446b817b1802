//! Interoperability with an implementation that is not ours: a V3 client written with Node's built-in
//! `crypto` and `http` modules drives `init_secure_api`, `create_wallet`, `open_wallet`, `accounts`
//! and `close_wallet` over `--http-insecure`, sending no session header, as grin-wallet clients do.
//! Without the runtime (and no way to provision it) the test skips with one line; see
//! `keyward_tests::interop`.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::path::PathBuf;
use std::process::Command;

use keyward_tests::{TestServer, interop};

#[test]
fn node_v3_client_runs_the_lifecycle() {
    let Some(node) = interop::node("interop_node") else { return };
    let runtime = keyward_tests::runtime();
    let server = runtime.block_on(TestServer::start());
    let port = server.running.http_insecure.unwrap().port();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/v3_client.mjs");
    let output = Command::new(&node)
        .arg(&script)
        .arg(port.to_string())
        .output()
        .expect("node, which ran `node --version`, runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "node client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(r#""ok":true"#), "{stdout}");
    assert!(stdout.contains("0200000000000000000000000000000000"), "{stdout}");
    runtime.block_on(server.stop());
}
