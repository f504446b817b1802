//! The server's side of many `accounts` calls on a fjall store, in process, for a profiler:
//! every request is sealed first, then [`serve`] answers them all (named session, as the
//! transports' clients send them), so a profile of `serve` holds the server's work only.
//!
//! ```text
//! cargo build --release -p keyward-store --example profile_accounts
//! valgrind --tool=callgrind --toggle-collect='*profile_accounts*serve*' \
//!     target/release/examples/profile_accounts 2000
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | head -60
//! ```

use keyward_core::SessionLimits;
use keyward_core::store::KdfParams;
use keyward_core::{Client, Incoming, Outgoing, Server, ServerConfig, SessionId};
use keyward_store::FjallStore;
use serde_json::json;

fn main() {
    let calls: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(2000);
    let temp = tempfile::tempdir().expect("a temporary directory");
    let config = ServerConfig {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        sessions: SessionLimits { max_requests: u32::MAX, ..SessionLimits::default() },
        ..ServerConfig::default()
    };
    let server = Server::new(config, Box::new(FjallStore::open(temp.path()).expect("the store")), [1; 32]);
    let mut client = Client::new([2; 32]);
    let init = server.handle(incoming(&client.init_request(), None));
    client.handle_init_answer(&init.body).expect("init");
    let session = init.session;
    let mut call = |method: &str, params| {
        let (body, pending) = client.seal(method, params).expect("seal");
        client.open(pending, &server.handle(incoming(&body, session)).body).expect(method)
    };
    let create = json!({"name": "w", "mnemonic": null, "mnemonic_length": 32, "password": "p"});
    call("create_wallet", create);
    let token = call("open_wallet", json!({"name": "w", "password": "p"}));
    let bodies: Vec<Vec<u8>> =
        (0..calls).map(|_| client.seal("accounts", json!({"token": token})).expect("seal").0).collect();
    let started = std::time::Instant::now();
    let answers = serve(&server, &bodies, session);
    let elapsed = started.elapsed();
    eprintln!(
        "{calls} accounts calls: {:.2} µs per call (server side, one thread)",
        elapsed.as_secs_f64() * 1e6 / calls as f64
    );
    assert!(answers.iter().all(|answer| !answer.body.is_empty() && !answer.unmatched));
    assert_eq!(answers.len(), calls);
}

/// The server's work: one `handle` per sealed body.
#[inline(never)]
fn serve(server: &Server, bodies: &[Vec<u8>], session: Option<SessionId>) -> Vec<Outgoing> {
    bodies.iter().map(|body| server.handle(incoming(body, session))).collect()
}

/// The in-process owner.
static LOCAL: std::sync::LazyLock<keyward_core::Principal> = std::sync::LazyLock::new(keyward_core::Principal::local);

/// One request on `session`, from the in-process owner.
fn incoming(body: &[u8], session: Option<SessionId>) -> Incoming<'_> {
    Incoming { body, session, recent: None, principal: &LOCAL, now_ms: 1 }
}
