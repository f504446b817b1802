//! Interoperability over QUIC with an implementation that is not ours: Python's aioquic (with the
//! client certificate) runs `init_secure_api`, `create_wallet`, `open_wallet` and `accounts` against
//! `keyward serve`, computing the ECDH and AES-GCM with Python's `cryptography`.
//! Without the runtime (and no way to provision it) the test skips with one line; see
//! `keyward_tests::interop`.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::path::PathBuf;
use std::process::Command;

use keyward_tests::{TestServer, interop};

#[test]
fn aioquic_client_runs_the_lifecycle() {
    let Some(python) = interop::python_with_aioquic("interop_aioquic") else { return };
    let runtime = keyward_tests::runtime();
    let server = runtime.block_on(TestServer::start());
    let port = server.running.quic.unwrap().port();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/quic_client.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(port.to_string())
        .arg(server.tls_dir())
        .output()
        .expect("the python that imported aioquic runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the aioquic client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(r#""ok": true"#), "{stdout}");
    runtime.block_on(server.stop());
}
