//! Logs carry no secrets: the end-to-end scenario list and a lifecycle with distinctive secrets run
//! over HTTPS, plain HTTP and QUIC with every log at TRACE level (server, transports, TLS, QUIC),
//! and no password, mnemonic, token or session key appears in what was logged.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyward_testkit::VECTOR_MNEMONIC;
use keyward_tests::{Session, TestServer, scenarios};
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const PASSWORD: &str = "log-test-password-9d2c41a7";
const NEW_PASSWORD: &str = "log-test-new-password-5e8b03f6";

#[test]
fn trace_logs_of_the_whole_suite_hold_no_secret() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let runtime = keyward_tests::runtime();
    let mut secrets: Vec<String> =
        vec![PASSWORD.into(), NEW_PASSWORD.into(), VECTOR_MNEMONIC.into(), VECTOR_MNEMONIC[..24].into()];
    runtime.block_on(async {
        for transport in ["https", "http", "quic"] {
            let server = TestServer::start().await;
            let target = match transport {
                "https" => server.https(),
                "http" => server.plain(),
                _ => server.quic(),
            };
            for (name, scenario) in scenarios() {
                tokio::time::timeout(Duration::from_secs(60), scenario(target.clone()))
                    .await
                    .unwrap_or_else(|_| panic!("{name} over {transport} timed out"));
            }
            let mut s = Session::open(&target, 7, true).await;
            let create =
                json!({"name": "logged", "mnemonic": VECTOR_MNEMONIC, "mnemonic_length": 0, "password": PASSWORD});
            s.ok("create_wallet", create).await;
            let token = s.ok("open_wallet", json!({"name": "logged", "password": PASSWORD})).await;
            s.ok("accounts", json!({"token": token})).await;
            s.ok("sign_message", json!({"token": token, "path": "m/0", "message": "log"})).await;
            s.ok("get_mnemonic", json!({"name": "logged", "password": PASSWORD})).await;
            s.ok("change_password", json!({"name": "logged", "old": PASSWORD, "new": NEW_PASSWORD})).await;
            let _ = s.call("open_wallet", json!({"name": "logged", "password": PASSWORD})).await;
            s.ok("close_wallet", json!({"name": "logged"})).await;
            secrets.push(token.as_str().unwrap().to_owned());
            let key = *s.client().session_key().unwrap().expose();
            secrets.push(hex::encode(key));
            secrets.push(format!("{key:?}"));
            server.stop().await;
        }
    });
    let logged = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    // The capture saw the servers, the transports and the TLS stacks at TRACE level.
    // And the audit log's head, for a monitor to keep, at every start and stop.
    let expected = [
        "keyward listening on https://",
        "keyward listening on quic://",
        "TRACE",
        "audit log head at start",
        "audit log head at stop",
    ];
    for expected in expected {
        assert!(logged.contains(expected), "the log capture missed {expected:?}");
    }
    assert!(logged.lines().count() > 1000, "only {} log lines were captured", logged.lines().count());
    for secret in &secrets {
        assert!(!logged.contains(secret.as_str()), "a secret appears in the logs ({} characters)", secret.len());
    }
}
