//! An unmodified V3 client (no session id, no re-key) keeps one session for a million calls under
//! the default configuration, with exact anti-replay: sampled envelopes from all along the run are
//! refused when sent again. A debug build runs 50,000 calls (the release build, which `.ci/run`
//! uses, runs the whole million); the last line gives the count and the resident memory.

use keyward_core::{Client, Incoming, MemoryStore, Server, ServerConfig, store::KdfParams};
use serde_json::json;

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_v3_client_keeps_one_session_for_a_million_calls() {
    let calls: u32 = if cfg!(debug_assertions) { 50_000 } else { 1_000_000 };
    let config = ServerConfig { kdf: KdfParams::INSECURE_FOR_TESTS, ..ServerConfig::default() };
    let server = Server::new(config, Box::new(MemoryStore::new()), [1; 32]);
    let mut now_ms = 1_000;
    let send = |body: &[u8], now_ms: u64| {
        server.handle(Incoming {
            body,
            session: None,
            recent: None,
            principal: &keyward_core::Principal::local(),
            now_ms,
        })
    };
    let mut client = Client::new([2; 32]);
    let init = send(&client.init_request(), now_ms);
    client.handle_init_answer(&init.body).expect("init");
    let session = init.session;

    let mut sampled = Vec::new();
    let rss_before = resident_kib();
    for n in 0..calls {
        // A poll every few milliseconds: well inside the idle timeout, the run inside the lifetime.
        now_ms += 1;
        let (body, pending) = client.seal("get_top_level_directory", json!({})).expect("seal");
        let answer = send(&body, now_ms);
        assert_eq!(answer.session, session, "call {n} was answered by another session");
        if let Err(error) = client.open(pending, &answer.body) {
            panic!("call {n} of {calls} failed: {error}");
        }
        if n % (calls / 500) == 0 {
            sampled.push(body);
        }
    }
    for body in &sampled {
        let again = send(body, now_ms);
        let text = String::from_utf8_lossy(&again.body);
        assert!(text.contains("-32002") && text.contains("replayed nonce"), "a replay was not refused: {text}");
    }
    let (body, pending) = client.seal("get_top_level_directory", json!({})).expect("seal");
    client.open(pending, &send(&body, now_ms + 1).body).expect("the session still answers after the replays");
    assert_eq!(server.session_count(), 1);
    eprintln!(
        "{calls} calls on one session, 0 errors, {} replays refused; resident memory {} KiB -> {} KiB",
        sampled.len(),
        rss_before,
        resident_kib()
    );
}
