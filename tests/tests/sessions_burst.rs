//! Issue 23, item 7, against a live `keyward serve` (in process, fjall on disk, HTTPS on
//! loopback): a client with 200 idle sessions that opens 128 more at once keeps every new one
//! until its first call (none answered −32001), and however fast it opens sessions it never holds
//! more than `[sessions] per_principal`.
#![expect(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "a test fails by panicking, with the value in the message; a test reports what it measured"
)]

use std::net::SocketAddr;
use std::sync::Arc;

use keyward_core::{Client, ClientError};
use keyward_http::{HttpClient, HttpTarget};
use keyward_tests::{runtime, start_with_config};
use serde_json::json;

/// Fast Argon2id, and no per-connection bound in the way: this test is about the per-principal one.
const CONFIG: &str = "[kdf]\nm_cost_kib = 64\nt_cost = 1\np_cost = 1\n[sessions]\nper_connection = 100000\n";
/// Connections the burst is spread over (one principal's; each carries 8 sessions).
const CONNECTIONS: usize = 16;
const PER_CONNECTION: usize = 8;

async fn https(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> HttpClient {
    HttpClient::connect(addr, "127.0.0.1", HttpTarget::Tls(Arc::clone(tls))).await.unwrap()
}

fn seed(group: u8, n: usize) -> [u8; 32] {
    let mut seed = [group; 32];
    seed[..8].copy_from_slice(&(n as u64).to_le_bytes());
    seed
}

/// A plaintext init on `http`: the client and its session id, or the refusal's (code, message).
async fn init(http: &mut HttpClient, seed: [u8; 32]) -> Result<(Client, String), (i64, String)> {
    let mut client = Client::new(seed);
    let answer = http.post(client.init_request(), None).await.unwrap();
    match client.handle_init_answer(&answer.body) {
        Ok(()) => Ok((client, answer.session.unwrap())),
        Err(ClientError::Rpc { code, message }) => Err((code, message)),
        Err(other) => panic!("init: {other}"),
    }
}

/// One call on a named session: `Ok`, or the error's code.
async fn call(http: &mut HttpClient, client: &mut Client, session: &str) -> Result<(), i64> {
    let (body, pending) = client.seal("get_top_level_directory", json!({})).unwrap();
    let answer = http.post(body, Some(session)).await.unwrap();
    match client.open(pending, &answer.body) {
        Ok(_) => Ok(()),
        Err(ClientError::Rpc { code, .. }) => Err(code),
        Err(other) => panic!("call: {other}"),
    }
}

#[test]
fn a_burst_of_new_sessions_loses_none_before_its_first_call() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("kw");
        let running = start_with_config(&data, CONFIG).await;
        let addr = running.https.unwrap();
        let tls = keyward::tls::client_config(&keyward::serve::tls_dir(&data)).unwrap();

        // 200 sessions, each used once, then idle.
        let mut idle = https(addr, &tls).await;
        for n in 0..200 {
            let (mut client, session) = init(&mut idle, seed(1, n)).await.unwrap();
            call(&mut idle, &mut client, &session).await.unwrap();
        }
        assert_eq!(running.core.session_count_of("default"), 200);

        // 128 new sessions at once (16 connections, 8 inits each), then 5 calls on each.
        let mut workers = tokio::task::JoinSet::new();
        for c in 0..CONNECTIONS {
            let tls = Arc::clone(&tls);
            workers.spawn(async move {
                let mut http = https(addr, &tls).await;
                let mut sessions = Vec::new();
                for n in 0..PER_CONNECTION {
                    sessions.push(init(&mut http, seed(2, c * PER_CONNECTION + n)).await.unwrap());
                }
                let mut gone = 0;
                for _ in 0..5 {
                    for (client, session) in &mut sessions {
                        match call(&mut http, client, session).await {
                            Ok(()) => {}
                            Err(-32001) => gone += 1,
                            Err(code) => panic!("unexpected error {code}"),
                        }
                    }
                }
                gone
            });
        }
        let gone: usize = workers.join_all().await.into_iter().sum();
        let held = running.core.session_count_of("default");
        eprintln!(
            "200 idle sessions, then 128 new ones making 640 calls: {gone} answered -32001; {held} sessions held"
        );
        assert_eq!(gone, 0, "new sessions were evicted before or between their calls");
        assert!(held <= 256, "{held} sessions");

        // Inits as fast as one connection sends them: never more than 256 held; an init past it
        // with every session new is refused Busy (how many depends on this machine's speed).
        let mut flood = https(addr, &tls).await;
        let mut refused = 0;
        for n in 0..400 {
            match init(&mut flood, seed(3, n)).await {
                Ok(_) => {}
                Err((code, message)) => {
                    assert_eq!(code, -32099, "{message}");
                    assert!(message.starts_with("Busy: this client's 256 sessions"), "{message}");
                    refused += 1;
                }
            }
            assert!(running.core.session_count_of("default") <= 256);
        }
        eprintln!("400 inits at full speed: {refused} refused Busy");
        running.stop().await;
    });
}
