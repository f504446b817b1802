//! The method table's speeds hold: every method it marks fast is answered by `handle_step` at once
//! and writes nothing to the store, and every method it marks slow is set aside. A handler that
//! starts writing to the store while its row still says fast fails here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use keyward_core::Pending;
use keyward_core::store::KdfParams;
use keyward_core::{Client, Incoming, Server, ServerConfig, SessionId, Speed, Step};
use keyward_testkit::WatchedStore;
use serde_json::{Value, json};

/// A host that pairs (with a fixed ticket), so that `pair_client` runs to its answer.
struct PairingHost;

impl keyward_core::Host for PairingHost {
    fn unix_time_ms(&self) -> u64 {
        1
    }

    fn start_pairing(
        &self,
        _: &str,
        _: keyward_core::Role,
        _: Option<u64>,
    ) -> Result<keyward_core::PairingTicket, String> {
        Ok(keyward_core::PairingTicket {
            code: "7KQ2M-XR4TD".to_owned().into(),
            expires_unix_ms: 300_001,
            pair_url: "tcp://127.0.0.1:3422".into(),
        })
    }
}

struct Rig {
    server: Server,
    client: Client,
    session: Option<SessionId>,
    writes: Arc<AtomicUsize>,
    now_ms: u64,
}

impl Rig {
    fn new() -> Self {
        let writes = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&writes);
        let store = WatchedStore::new(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let config = ServerConfig { kdf: KdfParams::INSECURE_FOR_TESTS, ..ServerConfig::default() };
        let mut server = Server::new(config, Box::new(store), [3; 32]);
        server.set_host(Arc::new(PairingHost));
        let mut client = Client::new([4; 32]);
        let answer = server.handle(Incoming {
            body: &client.init_request(),
            session: None,
            recent: None,
            principal: &keyward_core::Principal::local(),
            now_ms: 1,
        });
        client.handle_init_answer(&answer.body).expect("init answer");
        Self { server, client, session: answer.session, writes, now_ms: 1 }
    }

    /// Sends a sealed call of `method` through `handle_step`, checks that it took the path its speed
    /// says and that a fast call wrote nothing, and returns its `Ok` value.
    fn send(&mut self, method: &str, (body, pending): (Vec<u8>, Pending)) -> Value {
        let speed = keyward_core::find_method(method).map(keyward_core::Method::speed);
        self.now_ms += 1;
        let before = self.writes.load(Ordering::SeqCst);
        let incoming = Incoming {
            body: &body,
            session: self.session,
            recent: None,
            principal: &keyward_core::Principal::local(),
            now_ms: self.now_ms,
        };
        let answer = match self.server.handle_step(incoming) {
            Step::Done(answer) => {
                assert_eq!(speed, Some(Speed::Fast), "{method} was answered at once");
                let written = self.writes.load(Ordering::SeqCst) - before;
                assert_eq!(written, 0, "{method} is marked fast but wrote to the store {written} times");
                answer
            }
            Step::Slow(call) => {
                assert_eq!(speed, Some(Speed::Slow), "{method} was set aside");
                self.server.finish(call)
            }
        };
        self.client.open(pending, &answer.body).unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }
}

/// grin-wallet's `wallet.seed` for the password `testpass` (`spec/vectors/grin-v3.json`).
fn grin_seed() -> Value {
    json!({
        "encrypted_seed": "994653864318ff63a974f023fe07ab70fa3841d03658c65e04eb6fe807d33ed66e1cfe6724bc127ec66d720e5db4c378",
        "salt": "57ad5a138863f0a0",
        "nonce": "aefde28ebc85e2b69ed41fa5",
    })
}

#[test]
fn fast_methods_write_nothing_and_slow_ones_are_set_aside() {
    let mut rig = Rig::new();
    let config = json!({"chain_type": "Mainnet", "wallet_config": null, "logging_config": null, "tor_config": null});
    let create = json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"});
    // Params that name `token`, `public_key` or `signature` get them from earlier answers.
    let calls = [
        ("init_secure_api", Value::Null),
        ("get_top_level_directory", json!({})),
        ("set_top_level_directory", json!({"dir": "sub"})),
        ("create_config", config),
        ("create_wallet", create),
        ("open_wallet", json!({"name": "w", "password": "pw"})),
        ("close_wallet", json!({"name": "w"})),
        ("get_mnemonic", json!({"name": "w", "password": "pw"})),
        ("change_password", json!({"name": "w", "old": "pw", "new": "pw2"})),
        ("delete_wallet", json!({"name": "w", "password": "pw2"})),
        ("import_grin_wallet", json!({"name": "grin", "wallet_seed": grin_seed(), "password": "testpass"})),
        ("list_wallets", json!({})),
        ("accounts", json!({"token": null})),
        ("create_account_path", json!({"token": null, "label": "savings"})),
        ("set_active_account", json!({"token": null, "label": "savings"})),
        ("get_public_key", json!({"token": null, "path": "m/0/1"})),
        ("sign_message", json!({"token": null, "path": "m/0/1", "message": "hi"})),
        ("verify_message", json!({"public_key": null, "message": "hi", "signature": null})),
        ("add_client", json!({"name": "r1", "role": "reader", "public_key": null, "uid": 1000})),
        ("pair_client", json!({"name": "phone", "role": "reader", "ttl_secs": null})),
        ("list_clients", json!({})),
        ("set_client_role", json!({"name": "r1", "role": "signer"})),
        ("revoke_client", json!({"name": "r1"})),
        ("audit_log", json!({"after": null, "limit": null})),
    ];
    let listed: Vec<&str> = calls.iter().map(|(method, _)| *method).collect();
    let table: Vec<&str> = keyward_core::METHODS.iter().map(keyward_core::Method::name).collect();
    assert_eq!(listed, table, "call every method of the table, in its order");
    let mut token = Value::Null;
    let mut signed = Value::Null;
    for (method, mut params) in calls {
        if method == "accounts" {
            // The token methods run on the imported wallet, still open from here on.
            let open = json!({"name": "grin", "password": "testpass"});
            let sealed = rig.client.seal("open_wallet", open).expect("seal");
            token = rig.send("open_wallet", sealed);
        }
        if params.get("token") == Some(&Value::Null) {
            params["token"] = token.clone();
        }
        if method == "verify_message" {
            params["public_key"] = signed["public_key"].clone();
            params["signature"] = signed["signature"].clone();
        }
        let sealed =
            if method == "init_secure_api" { rig.client.seal_reinit() } else { rig.client.seal(method, params) };
        let value = rig.send(method, sealed.expect("seal"));
        match method {
            "sign_message" => signed = value,
            "verify_message" => assert_eq!(value, json!(true)),
            _ => {}
        }
    }
}
