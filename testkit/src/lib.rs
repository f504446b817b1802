//! # keyward-testkit
//!
//! Keyward's test kit, a crate of its own (`publish = false`) so that no Cargo feature of a
//! production crate changes a type for tests:
//!
//! * a harness that drives a [`Server`] with [`Client`]s on a virtual clock, and the lifecycle
//!   scenario list that every [`Store`] must pass (this file);
//! * [`pki`]: a throwaway certificate authority and rustls configurations for transport tests;
//! * [`WatchedStore`]: a memory store that reports every write (where and when writes happen).
//!
//! Each scenario takes a fresh, empty store and panics on failure. `keyward-core` runs them on the
//! [`MemoryStore`](keyward_core::MemoryStore); `keyward-store` runs the same list on fjall.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use serde_json::{Value, json};

pub mod pki;
mod watched_store;

pub use watched_store::{OnWrite, WatchedStore};

use keyward_core::client::{Client, ClientError};
use keyward_core::methods::AppError;
use keyward_core::seed_record::KdfParams;
use keyward_core::server::{Incoming, Outgoing, Server, ServerConfig};
use keyward_core::session::SessionId;
use keyward_core::store::Store;

/// The mnemonic of the shared vectors (24 words).
pub const VECTOR_MNEMONIC: &str = "fat twenty mean degree forget shell check candy immense awful flame next during february bulb bike sun wink theory day kiwi embrace peace lunch";

/// A server on a virtual clock.
#[derive(Debug)]
pub struct Harness {
    /// The server under test.
    pub server: Server,
    /// The virtual clock, in milliseconds.
    pub now_ms: u64,
}

/// A client and the session id it sends (`None`: a plain V3 client matched by key).
#[derive(Debug)]
pub struct TestClient {
    /// The sans-IO client.
    pub client: Client,
    /// The session id sent with each request, if this client names its session.
    pub session: Option<SessionId>,
    /// Whether to name the session at all.
    pub names_session: bool,
}

/// The configuration the scenarios use: small KDF parameters, otherwise the defaults.
pub fn test_config() -> ServerConfig {
    ServerConfig { data_root: "/srv/keyward".into(), kdf: KdfParams::INSECURE_FOR_TESTS, ..ServerConfig::default() }
}

impl Harness {
    /// A server with [`test_config`] over `store`, randomness from a fixed seed.
    pub fn new(store: Box<dyn Store>) -> Self {
        Self::with_config(store, test_config())
    }

    /// A server with a given configuration.
    pub fn with_config(store: Box<dyn Store>, config: ServerConfig) -> Self {
        Self { server: Server::new(config, store, [0x5e; 32]), now_ms: 1_000 }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, session: Option<SessionId>, body: &[u8]) -> Outgoing {
        self.now_ms += 1;
        self.server.handle(Incoming { body, session, recent: None, principal: "local", now_ms: self.now_ms })
    }

    /// A client that has done `init_secure_api`.
    pub fn client(&mut self, seed: u8, names_session: bool) -> TestClient {
        let mut client = Client::new([seed; 32]);
        let answer = self.send(None, &client.init_request());
        assert!(answer.created_session);
        client.handle_init_answer(&answer.body).unwrap();
        TestClient { client, session: answer.session, names_session }
    }

    /// Sends a body as `client` would (with its session id if it names it).
    pub fn send_as(&mut self, client: &TestClient, body: &[u8]) -> Outgoing {
        let session = if client.names_session { client.session } else { None };
        self.send(session, body)
    }

    /// One encrypted call; the `Ok` value or the error.
    pub fn call(&mut self, client: &mut TestClient, method: &str, params: Value) -> Result<Value, ClientError> {
        let (body, pending) = client.client.seal(method, params)?;
        let answer = self.send_as(client, &body);
        client.client.open(pending, &answer.body)
    }

    /// One encrypted call that must succeed.
    pub fn ok(&mut self, client: &mut TestClient, method: &str, params: Value) -> Value {
        match self.call(client, method, params) {
            Ok(value) => value,
            Err(e) => panic!("{method} failed: {e}"),
        }
    }
}

/// Asserts an error's code and that its message contains `text`.
pub fn assert_rpc_error(result: Result<Value, ClientError>, code: i64, text: &str) {
    match result {
        Err(ClientError::Rpc { code: c, message }) => {
            assert_eq!(c, code, "message: {message}");
            assert!(message.contains(text), "{message:?} does not contain {text:?}");
        }
        other => panic!("expected error {code} {text:?}, got {other:?}"),
    }
}

/// The plaintext error of a raw answer.
pub fn plain_error(body: &[u8]) -> (i64, String) {
    let value: Value = serde_json::from_slice(body).unwrap();
    let error = value.get("error").unwrap_or_else(|| panic!("not an error: {value}"));
    (error["code"].as_i64().unwrap(), error["message"].as_str().unwrap().to_owned())
}

fn create(h: &mut Harness, c: &mut TestClient, name: Value, password: &str) {
    let params = json!({"name": name, "mnemonic": null, "mnemonic_length": 16, "password": password});
    assert_eq!(h.ok(c, "create_wallet", params), Value::Null);
}

fn open(h: &mut Harness, c: &mut TestClient, name: Value, password: &str) -> Value {
    h.ok(c, "open_wallet", json!({"name": name, "password": password}))
}

/// A scenario: a name and a function of a fresh store.
pub type Scenario = (&'static str, fn(Box<dyn Store>));

/// Every lifecycle scenario.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        ("whole_lifecycle", whole_lifecycle),
        ("restore_from_mnemonic_gives_the_same_keys", restore_from_mnemonic),
        ("two_clients_interleave_in_separate_sessions", two_clients_interleave),
        ("replayed_envelope_is_refused_and_changes_nothing", replay_refused),
        ("tampered_or_truncated_body_is_refused_and_changes_nothing", tampered_refused),
        ("x_only_and_bad_keys_are_refused", bad_keys_refused),
        ("wrong_stale_missing_and_closed_tokens", token_checks),
        ("vault_holds_no_seed_after_close_or_expiry", vault_empty_after_close),
        ("wrong_password_and_unknown_wallet_are_indistinguishable", wrong_password_like_unknown_wallet),
        ("arguments_are_validated", arguments_validated),
        ("top_level_directory_stays_inside_the_data_root", top_level_directory),
        ("several_named_wallets_keep_apart", several_wallets),
        ("encrypted_reinit_answers_under_the_old_key", encrypted_reinit),
        ("envelope_and_call_errors_have_v3_codes", error_codes),
        ("sessions_expire_when_idle", session_expiry),
        ("failed_unlocks_back_off", unlock_throttle),
        ("embedder_methods_get_the_seed_only_with_a_token", embedder_method),
        ("grin_wallet_seed_imports", grin_import),
        ("change_password_keeps_exactly_one_password", change_password),
        ("kdf_calls_are_set_aside_and_others_answered_at_once", slow_calls_set_aside),
        ("tokens_expire_after_their_lifetime_however_busy", token_lifetime),
        ("sessions_expire_after_their_lifetime_however_busy", session_lifetime),
        ("open_wallets_are_limited_by_the_vault", vault_capacity),
        ("busy_refusal_runs_nothing", busy_refusal_runs_nothing),
        ("failed_opens_on_made_up_names_lock_nobody_out", made_up_names_lock_nobody_out),
        ("a_batch_runs_one_slow_call_and_echoes_ids_like_the_envelope", batch_rules),
    ]
}

fn whole_lifecycle(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    assert_eq!(h.ok(&mut c, "get_top_level_directory", json!({})), json!("/srv/keyward"));
    let config = json!({"chain_type": "Mainnet", "wallet_config": null, "logging_config": null, "tor_config": null});
    assert_eq!(h.ok(&mut c, "create_config", config), Value::Null);
    create(&mut h, &mut c, Value::Null, "pw");
    let token = open(&mut h, &mut c, Value::Null, "pw");
    assert_eq!(token.as_str().unwrap().len(), 64);
    assert_eq!(
        h.ok(&mut c, "accounts", json!({"token": token})),
        json!([{"label": "default", "path": "0200000000000000000000000000000000"}])
    );
    assert_eq!(
        h.ok(&mut c, "create_account_path", json!({"token": token, "label": "savings"})),
        json!("0200000001000000000000000000000000")
    );
    assert_rpc_error(
        h.call(&mut c, "create_account_path", json!({"token": token, "label": "savings"})),
        -32099,
        "AccountLabelAlreadyExists",
    );
    assert_eq!(h.ok(&mut c, "set_active_account", json!({"token": token, "label": "savings"})), Value::Null);
    assert_rpc_error(
        h.call(&mut c, "set_active_account", json!({"token": token, "label": "nope"})),
        -32099,
        "UnknownAccountLabel",
    );
    let accounts = h.ok(&mut c, "accounts", json!({"token": token}));
    assert_eq!(accounts.as_array().unwrap().len(), 2);
    let public = h.ok(&mut c, "get_public_key", json!({"token": token, "path": "m/44'/0'/0'/0/0"}));
    let signed = h.ok(&mut c, "sign_message", json!({"token": token, "path": "m/44'/0'/0'/0/0", "message": "hi"}));
    assert_eq!(signed["public_key"], public);
    let verify = json!({"public_key": public, "message": "hi", "signature": signed["signature"]});
    assert_eq!(h.ok(&mut c, "verify_message", verify), json!(true));
    let verify = json!({"public_key": public, "message": "ho", "signature": signed["signature"]});
    assert_eq!(h.ok(&mut c, "verify_message", verify), json!(false));
    let words = h.ok(&mut c, "get_mnemonic", json!({"name": null, "password": "pw"}));
    assert_eq!(words.as_str().unwrap().split(' ').count(), 12);
    assert_eq!(h.ok(&mut c, "list_wallets", json!({})), json!([{"name": "default", "open": true}]));
    assert_eq!(h.ok(&mut c, "close_wallet", json!({"name": null})), Value::Null);
    assert_rpc_error(h.call(&mut c, "accounts", json!({"token": token})), -32099, "Wallet has not been opened");
    assert_rpc_error(
        h.call(&mut c, "delete_wallet", json!({"name": null, "password": "wrong"})),
        -32099,
        "Error opening wallet",
    );
    assert_eq!(h.ok(&mut c, "delete_wallet", json!({"name": null, "password": "pw"})), Value::Null);
    assert_rpc_error(
        h.call(&mut c, "open_wallet", json!({"name": null, "password": "pw"})),
        -32099,
        "Error opening wallet",
    );
    assert_eq!(h.ok(&mut c, "list_wallets", json!({})), json!([]));
}

fn restore_from_mnemonic(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, false);
    let params = json!({"name": "r", "mnemonic": VECTOR_MNEMONIC, "mnemonic_length": 0, "password": "pw"});
    h.ok(&mut c, "create_wallet", params);
    assert_eq!(h.ok(&mut c, "get_mnemonic", json!({"name": "r", "password": "pw"})), json!(VECTOR_MNEMONIC));
    let token = open(&mut h, &mut c, json!("r"), "pw");
    let public = h.ok(&mut c, "get_public_key", json!({"token": token, "path": "m/0'/1"}));
    let entropy = keyward_core::keys::entropy_of(VECTOR_MNEMONIC).unwrap();
    let key = keyward_core::keys::derive(&keyward_core::keys::master_key(&entropy), &[0x8000_0000, 1]).unwrap();
    assert_eq!(public, json!(hex::encode(keyward_core::keys::public_key(&key).unwrap().serialize())));
    let params = json!({"name": "r", "mnemonic": VECTOR_MNEMONIC, "mnemonic_length": 0, "password": "pw"});
    assert_rpc_error(h.call(&mut c, "create_wallet", params), -32099, "WalletSeedExists");
    // Like grin, a restore ignores mnemonic_length (V3 clients often send 32 with any mnemonic).
    let params = json!({"name": "s", "mnemonic": VECTOR_MNEMONIC, "mnemonic_length": 16, "password": "pw"});
    assert_eq!(h.ok(&mut c, "create_wallet", params), Value::Null);
    assert_eq!(h.ok(&mut c, "get_mnemonic", json!({"name": "s", "password": "pw"})), json!(VECTOR_MNEMONIC));
    let params = json!({"name": "s", "mnemonic": "abandon abandon zoo", "mnemonic_length": 0, "password": "pw"});
    assert_rpc_error(h.call(&mut c, "create_wallet", params), -32099, "ArgumentError");
}

fn two_clients_interleave(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut a = h.client(1, true);
    let mut b = h.client(2, false);
    assert_ne!(a.session, b.session);
    create(&mut h, &mut a, json!("a"), "pa");
    create(&mut h, &mut b, json!("b"), "pb");
    let ta = open(&mut h, &mut a, json!("a"), "pa");
    let tb = open(&mut h, &mut b, json!("b"), "pb");
    for _ in 0..3 {
        assert_eq!(h.ok(&mut a, "accounts", json!({"token": ta})).as_array().unwrap().len(), 1);
        assert_eq!(h.ok(&mut b, "accounts", json!({"token": tb})).as_array().unwrap().len(), 1);
    }
    // A's envelope sent under B's session id does not decrypt, and nothing changes.
    let (body, pending) = a.client.seal("accounts", json!({"token": ta})).unwrap();
    let answer = h.send(b.session, &body);
    assert_eq!(plain_error(&answer.body).0, -32002);
    drop(pending);
    // An answer for A cannot be opened by B.
    let (body, pending_a) = a.client.seal("accounts", json!({"token": ta})).unwrap();
    let answer = h.send_as(&a, &body);
    let (_, pending_b) = b.client.seal("accounts", json!({"token": tb})).unwrap();
    assert_eq!(b.client.open(pending_b, &answer.body).err(), Some(ClientError::IdMismatch));
    assert!(a.client.open(pending_a, &answer.body).is_ok());
    assert_eq!(h.server.session_count(), 2);
}

fn replay_refused(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    for names_session in [true, false] {
        let mut c = h.client(if names_session { 1 } else { 2 }, names_session);
        let name = if names_session { "named" } else { "unnamed" };
        create(&mut h, &mut c, json!(name), "pw");
        let token = open(&mut h, &mut c, json!(name), "pw");
        let (body, pending) = c.client.seal("create_account_path", json!({"token": token, "label": "x"})).unwrap();
        let first = h.send_as(&c, &body);
        assert_eq!(c.client.open(pending, &first.body).unwrap(), json!("0200000001000000000000000000000000"));
        let again = h.send_as(&c, &body);
        let (code, message) = plain_error(&again.body);
        assert_eq!(code, -32002);
        assert!(message.contains("replay"), "{message}");
        assert_eq!(h.ok(&mut c, "accounts", json!({"token": token})).as_array().unwrap().len(), 2);
    }
}

fn tampered_refused(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, Value::Null, "pw");
    let token = open(&mut h, &mut c, Value::Null, "pw");
    let (body, _pending) = c.client.seal("create_account_path", json!({"token": token, "label": "x"})).unwrap();
    let mut request: Value = serde_json::from_slice(&body).unwrap();
    let body_enc = request["params"]["body_enc"].as_str().unwrap().to_owned();
    let mut raw = keyward_core::envelope::decode_body(&body_enc).unwrap();
    raw[3] ^= 0x40;
    let tampered = base64_encode(&raw);
    let truncated = base64_encode(&raw[..10]);
    // Under its session's name: a decryption error. Unnamed: no session's key takes it (-32001).
    for (bad, session, code) in
        [(tampered.clone(), c.session, -32002), (tampered, None, -32001), (truncated, c.session, -32002)]
    {
        request["params"]["body_enc"] = json!(bad);
        let answer = h.send(session, &serde_json::to_vec(&request).unwrap());
        assert_eq!(plain_error(&answer.body).0, code);
    }
    // The untampered original still goes through once: the refused copies recorded nothing.
    let answer = h.send_as(&c, &body);
    assert_eq!(c.client.open(_pending, &answer.body).unwrap(), json!("0200000001000000000000000000000000"));
    assert_eq!(h.ok(&mut c, "accounts", json!({"token": token})).as_array().unwrap().len(), 2);
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn bad_keys_refused(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let secret = secp256k1::SecretKey::from_secret_bytes([3; 32]).unwrap();
    let public = secp256k1::PublicKey::from_secret_key(&secret).serialize();
    let x_only = hex::encode(&public[1..]);
    for key in [x_only.as_str(), "zz", ""] {
        let body = json!({"jsonrpc": "2.0", "method": "init_secure_api", "params": {"ecdh_pubkey": key}, "id": 1});
        let answer = h.send(None, &serde_json::to_vec(&body).unwrap());
        assert_eq!(plain_error(&answer.body).0, -32602, "{key}");
        assert!(!answer.created_session);
    }
    assert_eq!(h.server.session_count(), 0);
    // Positional and uncompressed keys are accepted.
    let uncompressed = hex::encode(secp256k1::PublicKey::from_secret_key(&secret).serialize_uncompressed());
    let body = json!({"jsonrpc": "2.0", "method": "init_secure_api", "params": [uncompressed], "id": 7});
    let answer = h.send(None, &serde_json::to_vec(&body).unwrap());
    let value: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(value["id"], json!(7));
    assert_eq!(value["result"]["Ok"].as_str().unwrap().len(), 66);
}

fn token_checks(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, Value::Null, "pw");
    let stale = open(&mut h, &mut c, Value::Null, "pw");
    let token = open(&mut h, &mut c, Value::Null, "pw");
    assert_ne!(stale, token);
    let wrong = json!("11".repeat(32));
    for bad in [stale, wrong, Value::Null, json!("abc")] {
        assert_rpc_error(h.call(&mut c, "accounts", json!({"token": bad})), -32099, "InvalidKeychainMask");
    }
    assert_rpc_error(h.call(&mut c, "accounts", json!({})), -32602, "token");
    assert!(h.call(&mut c, "accounts", json!({"token": token})).is_ok());
    h.ok(&mut c, "close_wallet", json!({"name": null}));
    assert_rpc_error(h.call(&mut c, "accounts", json!({"token": token})), -32099, "Wallet has not been opened");
}

fn vault_empty_after_close(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, Value::Null, "pw");
    assert_eq!(h.server.open_wallet_count(), 0);
    let token = open(&mut h, &mut c, Value::Null, "pw");
    assert_eq!(h.server.open_wallet_count(), 1);
    assert_eq!(h.server.vault_masked_bytes().len(), 64);
    h.ok(&mut c, "close_wallet", json!({"name": null}));
    assert_eq!(h.server.open_wallet_count(), 0);
    assert!(h.server.vault_masked_bytes().is_empty());
    assert_rpc_error(h.call(&mut c, "accounts", json!({"token": token})), -32099, "Wallet has not been opened");
    // Token idle expiry closes the wallet too.
    let token = open(&mut h, &mut c, Value::Null, "pw");
    h.now_ms += h.server.config().tokens.idle_ms;
    h.server.handle_timeout(h.now_ms);
    assert_eq!(h.server.open_wallet_count(), 0);
    assert!(h.server.vault_masked_bytes().is_empty());
    let mut c = h.client(2, true);
    assert_rpc_error(h.call(&mut c, "accounts", json!({"token": token})), -32099, "Wallet has not been opened");
}

fn wrong_password_like_unknown_wallet(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, json!("real"), "pw");
    let mut answers = Vec::new();
    for (name, password) in [("real", "wrong"), ("ghost", "pw")] {
        for method in ["open_wallet", "get_mnemonic", "delete_wallet"] {
            let (body, pending) = c.client.seal(method, json!({"name": name, "password": password})).unwrap();
            let answer = h.send_as(&c, &body);
            let mut inner = c.client.open_raw(pending, &answer.body).unwrap();
            inner["id"] = Value::Null;
            answers.push((method, inner));
        }
    }
    for i in 0..3 {
        assert_eq!(answers[i].1, answers[i + 3].1, "{}", answers[i].0);
        assert_eq!(answers[i].1["error"]["message"], json!("Lifecycle: Error opening wallet (is password correct?)"));
    }
}

fn arguments_validated(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    for length in [0, 10, 15, 33, 64] {
        let params = json!({"name": null, "mnemonic": null, "mnemonic_length": length, "password": "pw"});
        assert_rpc_error(h.call(&mut c, "create_wallet", params), -32099, "mnemonic_length");
    }
    for name in ["../x", "a/b", ".hidden", "", "x".repeat(65).as_str(), "white space", "nul\u{0}"] {
        let params = json!({"name": name, "mnemonic": null, "mnemonic_length": 16, "password": "pw"});
        assert_rpc_error(h.call(&mut c, "create_wallet", params), -32099, "ArgumentError");
    }
    for length in [16, 20, 24, 28, 32] {
        let name = format!("w{length}");
        let params = json!({"name": name, "mnemonic": null, "mnemonic_length": length, "password": "pw"});
        h.ok(&mut c, "create_wallet", params);
        let words = h.ok(&mut c, "get_mnemonic", json!({"name": name, "password": "pw"}));
        assert_eq!(words.as_str().unwrap().split(' ').count(), length * 3 / 4);
    }
    let params = json!({"chain_type": "Moonnet", "wallet_config": null, "logging_config": null, "tor_config": null});
    assert_rpc_error(h.call(&mut c, "create_config", params), -32099, "chain_type");
    let token = open(&mut h, &mut c, json!("w16"), "pw");
    assert_rpc_error(h.call(&mut c, "get_public_key", json!({"token": token, "path": "m/x"})), -32099, "ArgumentError");
    assert_rpc_error(h.call(&mut c, "create_account_path", json!({"token": token, "label": ""})), -32099, "label");
}

fn top_level_directory(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, Value::Null, "root-pw");
    for outside in ["/etc", "/srv/keyward/../etc", "..", "a/../../b", "/srv/keywardx", "C:\\x", "a/.git"] {
        assert_rpc_error(
            h.call(&mut c, "set_top_level_directory", json!({"dir": outside})),
            -32099,
            "inside the server's data root",
        );
    }
    assert_eq!(h.ok(&mut c, "get_top_level_directory", json!({})), json!("/srv/keyward"));
    h.ok(&mut c, "set_top_level_directory", json!({"dir": "/srv/keyward/team/alice"}));
    assert_eq!(h.ok(&mut c, "get_top_level_directory", json!({})), json!("/srv/keyward/team/alice"));
    // Another directory holds other wallets.
    assert_rpc_error(
        h.call(&mut c, "open_wallet", json!({"name": null, "password": "root-pw"})),
        -32099,
        "Error opening wallet",
    );
    create(&mut h, &mut c, Value::Null, "alice-pw");
    open(&mut h, &mut c, Value::Null, "alice-pw");
    // Each session has its own directory.
    let mut other = h.client(2, true);
    assert_eq!(h.ok(&mut other, "get_top_level_directory", json!({})), json!("/srv/keyward"));
    open(&mut h, &mut other, Value::Null, "root-pw");
    h.ok(&mut c, "set_top_level_directory", json!({"dir": "."}));
    assert_eq!(h.ok(&mut c, "get_top_level_directory", json!({})), json!("/srv/keyward"));
}

fn several_wallets(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, json!("one"), "p1");
    create(&mut h, &mut c, json!("two"), "p2");
    let t1 = open(&mut h, &mut c, json!("one"), "p1");
    let t2 = open(&mut h, &mut c, json!("two"), "p2");
    let k1 = h.ok(&mut c, "get_public_key", json!({"token": t1, "path": "m/0"}));
    let k2 = h.ok(&mut c, "get_public_key", json!({"token": t2, "path": "m/0"}));
    assert_ne!(k1, k2);
    assert_rpc_error(h.call(&mut c, "open_wallet", json!({"name": "two", "password": "p1"})), -32099, "Error opening");
    h.ok(&mut c, "close_wallet", json!({"name": "one"}));
    assert_eq!(h.ok(&mut c, "get_public_key", json!({"token": t2, "path": "m/0"})), k2);
    assert_eq!(h.server.open_wallet_count(), 1);
    assert_eq!(
        h.ok(&mut c, "list_wallets", json!({})),
        json!([{"name": "one", "open": false}, {"name": "two", "open": true}])
    );
}

fn encrypted_reinit(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    for names_session in [true, false] {
        let mut c = h.client(if names_session { 3 } else { 4 }, names_session);
        let (body, pending) = c.client.seal_reinit().unwrap();
        let answer = h.send_as(&c, &body);
        assert_eq!(answer.session, c.session);
        let inner = c.client.open_raw(pending, &answer.body).unwrap();
        assert_eq!(inner["result"]["Ok"].as_str().unwrap().len(), 66);
        // The old key no longer works; the new one does, in the same session.
        assert_eq!(h.ok(&mut c, "get_top_level_directory", json!({})), json!("/srv/keyward"));
    }
    assert_eq!(h.server.session_count(), 2);
}

fn error_codes(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let accounts = br#"{"jsonrpc":"2.0","method":"accounts","params":{"token":null},"id":5}"#;
    let (code, message) = plain_error(&h.send(None, accounts).body);
    assert_eq!((code, message.as_str()), (-32001, "Encryption must be enabled. Please call 'init_secure_api` first"));
    let envelope = br#"{"jsonrpc":"2.0","method":"encrypted_request_v3","params":{"nonce":"000102030405060708090a0b","body_enc":"AAAAAAAAAAAAAAAAAAAAAA=="},"id":5}"#;
    assert_eq!(plain_error(&h.send(None, envelope).body).0, -32001);
    assert_eq!(plain_error(&h.send(None, b"{not json").body).0, -32700);
    // Ids a client could not parse back (found by fuzzing: 2e2121 overflows every f64) become null.
    for (id, echoed) in [("2e2121", "null"), ("[1]", "null"), ("{\"a\":1}", "null"), ("\"x\"", "\"x\""), ("-7", "-7")] {
        let body = format!(r#"{{"id":{id},"jsonrpc":"2.0","method":"accounts"}}"#);
        let answer = h.send(None, body.as_bytes()).body;
        assert!(answer.starts_with(format!(r#"{{"id":{echoed},"#).as_bytes()), "{}", String::from_utf8_lossy(&answer));
        assert!(serde_json::from_slice::<Value>(&answer).is_ok());
    }
    assert_eq!(plain_error(&h.send(None, b"[1,2]").body).0, -32600);
    let mut c = h.client(1, true);
    assert_rpc_error(h.call(&mut c, "no_such_method", json!({})), -32601, "Method not found");
    assert_rpc_error(h.call(&mut c, "open_wallet", json!({"name": null})), -32602, "password");
    assert_rpc_error(h.call(&mut c, "open_wallet", json!({"name": null, "password": "x", "y": 1})), -32602, "y");
    assert_rpc_error(h.call(&mut c, "open_wallet", json!([null])), -32602, "positional");
    assert_rpc_error(h.call(&mut c, "open_wallet", json!({"name": 5, "password": "x"})), -32602, "name");
    for (nonce, body_enc) in [("0001", "AAAA"), ("000102030405060708090a0b", "***"), ("zz".repeat(12).as_str(), "AA==")]
    {
        let body = json!({"jsonrpc":"2.0","method":"encrypted_request_v3","params":{"nonce":nonce,"body_enc":body_enc},"id":1});
        let (code, message) = plain_error(&h.send_as(&c, &serde_json::to_vec(&body).unwrap()).body);
        assert_eq!(code, -32002);
        assert!(message.starts_with("Encrypted request format error"), "{message}");
    }
    // Inner body that is JSON but no request; a batch.
    let (body, pending) = c.client.seal_raw(b"42", 99, None).unwrap();
    let inner = c.client.open_raw(pending, &h.send_as(&c, &body).body).unwrap();
    assert_eq!(inner["error"]["code"], json!(-32600));
    let batch = br#"[{"jsonrpc":"2.0","method":"get_top_level_directory","params":{},"id":1},{"jsonrpc":"2.0","method":"nope","id":2}]"#;
    let (body, pending) = c.client.seal_raw(batch, 0, None).unwrap();
    let inner = c.client.open_raw(pending, &h.send_as(&c, &body).body).unwrap();
    assert_eq!(inner[0]["result"]["Ok"], json!("/srv/keyward"));
    assert_eq!(inner[1]["error"]["code"], json!(-32601));
    // An empty batch is one Invalid Request, as JSON-RPC 2.0 says (not an empty array).
    let (body, pending) = c.client.seal_raw(b"[]", 0, None).unwrap();
    let inner = c.client.open_raw(pending, &h.send_as(&c, &body).body).unwrap();
    assert_eq!(inner["error"]["code"], json!(-32600), "{inner}");
    let (body, pending) = c.client.seal_raw(b"\xff\xfe not utf8", 0, None).unwrap();
    let answer = h.send_as(&c, &body);
    drop(pending);
    assert_eq!(plain_error(&answer.body).0, -32002);
}

fn session_expiry(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    h.ok(&mut c, "get_top_level_directory", json!({}));
    h.now_ms += h.server.config().sessions.idle_ms;
    assert_rpc_error(h.call(&mut c, "get_top_level_directory", json!({})), -32001, "init_secure_api");
    assert_eq!(h.server.session_count(), 0);
}

fn unlock_throttle(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, Value::Null, "right");
    let config = h.server.config().throttle;
    for _ in 0..config.free_attempts {
        assert_rpc_error(
            h.call(&mut c, "open_wallet", json!({"name": null, "password": "x"})),
            -32099,
            "Error opening",
        );
    }
    assert_rpc_error(h.call(&mut c, "open_wallet", json!({"name": null, "password": "x"})), -32099, "Error opening");
    // Now even the right password must wait.
    assert_rpc_error(
        h.call(&mut c, "open_wallet", json!({"name": null, "password": "right"})),
        -32099,
        "too many failed attempts",
    );
    h.now_ms += config.base_ms;
    assert!(h.call(&mut c, "open_wallet", json!({"name": null, "password": "right"})).is_ok());
}

fn embedder_method(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    h.server
        .register_method("seed_fingerprint", &["salt"], keyward_core::Role::Signer, |call| {
            let salt =
                call.params[0].as_str().ok_or(AppError { variant: "ArgumentError".into(), detail: "salt".into() })?;
            let mut data = call.master.expose().to_vec();
            data.extend_from_slice(salt.as_bytes());
            use sha2::Digest as _;
            Ok(json!(hex::encode(&sha2::Sha256::digest(&data)[..4])))
        })
        .unwrap();
    assert!(h.server.register_method("open_wallet", &[], keyward_core::Role::Signer, |_| Ok(Value::Null)).is_err());
    let mut c = h.client(1, true);
    create(&mut h, &mut c, Value::Null, "pw");
    assert_rpc_error(
        h.call(&mut c, "seed_fingerprint", json!({"token": null, "salt": "s"})),
        -32099,
        "InvalidKeychainMask",
    );
    let token = open(&mut h, &mut c, Value::Null, "pw");
    let first = h.ok(&mut c, "seed_fingerprint", json!({"token": token, "salt": "s"}));
    assert_eq!(first.as_str().unwrap().len(), 8);
    assert_eq!(h.ok(&mut c, "seed_fingerprint", json!([token, "s"])), first);
    assert_rpc_error(h.call(&mut c, "seed_fingerprint", json!({"token": token, "salt": 1})), -32099, "ArgumentError");
}

fn grin_import(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    let file = json!({
        "encrypted_seed": "994653864318ff63a974f023fe07ab70fa3841d03658c65e04eb6fe807d33ed66e1cfe6724bc127ec66d720e5db4c378",
        "salt": "57ad5a138863f0a0",
        "nonce": "aefde28ebc85e2b69ed41fa5",
    });
    let mnemonic = "pizza pipe about immense crawl issue pull head butter bamboo fan spare organ dismiss hurdle elite young isolate essay thumb vast domain hover hope";
    let params = json!({"name": "grin", "wallet_seed": file, "password": "wrong"});
    assert_rpc_error(h.call(&mut c, "import_grin_wallet", params), -32099, "does not decrypt");
    let params = json!({"name": "grin", "wallet_seed": file.to_string(), "password": "testpass"});
    assert_eq!(h.ok(&mut c, "import_grin_wallet", params), Value::Null);
    assert_eq!(h.ok(&mut c, "get_mnemonic", json!({"name": "grin", "password": "testpass"})), json!(mnemonic));
    let stored = h.server.store().load_wallet(&keyward_core::WalletKey { dir: String::new(), name: "grin".into() });
    let record = keyward_core::seed_record::SeedRecord::from_bytes(&stored.unwrap().unwrap().seed_record).unwrap();
    assert_eq!(record.kdf, KdfParams::INSECURE_FOR_TESTS);
    let params = json!({"name": "grin", "wallet_seed": file, "password": "testpass"});
    assert_rpc_error(h.call(&mut c, "import_grin_wallet", params), -32099, "WalletSeedExists");
}

fn change_password(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, Value::Null, "old");
    let token = open(&mut h, &mut c, Value::Null, "old");
    assert_rpc_error(
        h.call(&mut c, "change_password", json!({"name": null, "old": "bad", "new": "new"})),
        -32099,
        "Error opening wallet",
    );
    h.ok(&mut c, "change_password", json!({"name": null, "old": "old", "new": "new"}));
    // The open wallet's token keeps working; only the new password opens it.
    assert!(h.call(&mut c, "accounts", json!({"token": token})).is_ok());
    assert_rpc_error(h.call(&mut c, "open_wallet", json!({"name": null, "password": "old"})), -32099, "Error opening");
    open(&mut h, &mut c, Value::Null, "new");
}

fn slow_calls_set_aside(store: Box<dyn Store>) {
    use keyward_core::server::Step;
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, Value::Null, "pw");
    let (body, pending) = c.client.seal("open_wallet", json!({"name": null, "password": "pw"})).unwrap();
    let step = h.server.handle_step(Incoming {
        body: &body,
        session: c.session,
        recent: None,
        principal: "local",
        now_ms: h.now_ms,
    });
    let Step::Slow(call) = step else { panic!("open_wallet must be set aside for a blocking thread") };
    // A replay of the set-aside envelope is refused: its nonce is already recorded.
    let replay = h.server.handle_step(Incoming {
        body: &body,
        session: c.session,
        recent: None,
        principal: "local",
        now_ms: h.now_ms,
    });
    let Step::Done(replay) = replay else { panic!("a replay is answered at once") };
    assert_eq!(plain_error(&replay.body).0, -32002);
    let token = c.client.open(pending, &h.server.finish(call).body).unwrap();
    let (body, pending) = c.client.seal("accounts", json!({"token": token})).unwrap();
    let step = h.server.handle_step(Incoming {
        body: &body,
        session: c.session,
        recent: None,
        principal: "local",
        now_ms: h.now_ms,
    });
    let Step::Done(answer) = step else { panic!("accounts must be answered at once") };
    assert_eq!(c.client.open(pending, &answer.body).unwrap().as_array().map(Vec::len), Some(1));
}

fn token_lifetime(store: Box<dyn Store>) {
    let mut config = test_config();
    config.tokens.idle_ms = 10_000;
    config.tokens.lifetime_ms = 1_000;
    let mut h = Harness::with_config(store, config);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, Value::Null, "pw");
    let token = open(&mut h, &mut c, Value::Null, "pw");
    for _ in 0..2 {
        h.now_ms += 400;
        assert!(h.call(&mut c, "accounts", json!({"token": token})).is_ok());
    }
    h.now_ms += 400;
    assert_rpc_error(h.call(&mut c, "accounts", json!({"token": token})), -32099, "Wallet has not been opened");
    assert_eq!(h.server.open_wallet_count(), 0);
}

fn session_lifetime(store: Box<dyn Store>) {
    let mut config = test_config();
    config.sessions.idle_ms = 10_000;
    config.sessions.lifetime_ms = 1_000;
    let mut h = Harness::with_config(store, config);
    let mut c = h.client(1, true);
    for _ in 0..2 {
        h.now_ms += 400;
        assert!(h.call(&mut c, "get_top_level_directory", json!({})).is_ok());
    }
    h.now_ms += 400;
    assert_rpc_error(h.call(&mut c, "get_top_level_directory", json!({})), -32001, "init_secure_api");
    assert_eq!(h.server.session_count(), 0);
}

fn vault_capacity(store: Box<dyn Store>) {
    let mut config = test_config();
    config.tokens.max_open_wallets = 2;
    let mut h = Harness::with_config(store, config);
    let mut c = h.client(1, true);
    for name in ["v1", "v2", "v3"] {
        create(&mut h, &mut c, json!(name), "pw");
    }
    open(&mut h, &mut c, json!("v1"), "pw");
    let t2 = open(&mut h, &mut c, json!("v2"), "pw");
    assert_rpc_error(
        h.call(&mut c, "open_wallet", json!({"name": "v3", "password": "pw"})),
        -32099,
        "too many open wallets",
    );
    // Re-opening an open wallet reuses its place; closing one makes room.
    open(&mut h, &mut c, json!("v2"), "pw");
    assert_rpc_error(h.call(&mut c, "accounts", json!({"token": t2})), -32099, "InvalidKeychainMask");
    h.ok(&mut c, "close_wallet", json!({"name": "v1"}));
    open(&mut h, &mut c, json!("v3"), "pw");
    assert_eq!(h.server.open_wallet_count(), 2);
    assert_eq!(h.server.vault_masked_bytes().len(), 128);
}

fn busy_refusal_runs_nothing(store: Box<dyn Store>) {
    use keyward_core::server::Step;
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, Value::Null, "pw");
    let busy = "Busy: too many slow calls at once, try again shortly";
    let (body, pending) = c.client.seal("open_wallet", json!({"name": null, "password": "pw"})).unwrap();
    let step = h.server.handle_step(Incoming {
        body: &body,
        session: c.session,
        recent: None,
        principal: "local",
        now_ms: h.now_ms,
    });
    let Step::Slow(call) = step else { panic!("open_wallet must be set aside for a blocking thread") };
    let refused = h.server.refuse_busy(call);
    assert_eq!(refused.session, c.session);
    assert_rpc_error(c.client.open(pending, &refused.body), -32099, busy);
    assert_eq!(h.server.open_wallet_count(), 0);
    // A batch: each request is refused under its own id; create_account_path adds no account.
    let token = open(&mut h, &mut c, Value::Null, "pw");
    let batch = json!([
        {"jsonrpc": "2.0", "id": "a", "method": "create_account_path", "params": {"token": token, "label": "x"}},
        {"jsonrpc": "2.0", "id": 7, "method": "close_wallet", "params": {"name": null}},
    ]);
    let (body, pending) = c.client.seal_raw(&serde_json::to_vec(&batch).unwrap(), 0, None).unwrap();
    let step = h.server.handle_step(Incoming {
        body: &body,
        session: c.session,
        recent: None,
        principal: "local",
        now_ms: h.now_ms,
    });
    let Step::Slow(call) = step else { panic!("a batch must be set aside for a blocking thread") };
    let inner = c.client.open_raw(pending, &h.server.refuse_busy(call).body).unwrap();
    let error = json!({"code": -32099, "message": busy});
    assert_eq!(
        inner,
        json!([{"id": "a", "jsonrpc": "2.0", "error": error}, {"id": 7, "jsonrpc": "2.0", "error": error}])
    );
    assert_eq!(h.server.open_wallet_count(), 1);
    assert_eq!(h.ok(&mut c, "accounts", json!({"token": token})).as_array().map(Vec::len), Some(1));
    // The refused envelope stays spent; the same call in a new envelope runs.
    let replay = h.send_as(&c, &body);
    assert_eq!(plain_error(&replay.body).0, -32002);
    h.ok(&mut c, "create_account_path", json!({"token": token, "label": "x"}));
}

/// `count` made-up, valid wallet names drawn from `seed` (xorshift64: no repeats within its period).
pub fn made_up_names(count: usize, seed: u64) -> Vec<String> {
    let mut state = seed | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("ghost-{state:016x}")
        })
        .collect()
}

fn made_up_names_lock_nobody_out(store: Box<dyn Store>) {
    use keyward_core::WalletKey;
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, json!("owner"), "right");
    assert_rpc_error(h.call(&mut c, "open_wallet", json!({"name": "owner", "password": "x"})), -32099, "Error opening");
    let wallets = h.server.store().list_wallets("").unwrap();
    // 5,000 failures, more than the throttle's table holds (4,096). One call per envelope: a batch
    // would run only its first slow call.
    let names = made_up_names(5_000, 0x5eed);
    for name in &names {
        assert_rpc_error(
            h.call(&mut c, "open_wallet", json!({"name": name, "password": "x"})),
            -32099,
            "Error opening",
        );
    }
    // At once (a millisecond later on the virtual clock), the owner's password opens the wallet.
    open(&mut h, &mut c, json!("owner"), "right");
    assert_eq!(h.server.store().list_wallets("").unwrap(), wallets);
    for name in names.iter().step_by(499) {
        let key = WalletKey { dir: String::new(), name: name.clone() };
        assert_eq!(h.server.store().load_failures("local", &key).unwrap(), 0, "{name} was recorded");
        assert!(h.server.store().load_wallet(&key).unwrap().is_none());
    }
}

fn batch_rules(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, json!("b"), "pw");
    let busy = json!({"code": -32099, "message": "Busy: too many slow calls at once, try again shortly"});
    // Ten open_wallet in one envelope: the first runs, the nine others are refused without a KDF.
    let batch: Vec<Value> = (0..10)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "open_wallet", "params": {"name": "b", "password": "pw"}}))
        .collect();
    let (body, pending) = c.client.seal_raw(&serde_json::to_vec(&batch).unwrap(), 0, None).unwrap();
    let inner = c.client.open_raw(pending, &h.send_as(&c, &body).body).unwrap();
    let inner = inner.as_array().unwrap();
    assert_eq!(inner.len(), 10);
    let token = inner[0]["result"]["Ok"].clone();
    assert_eq!(token.as_str().map(str::len), Some(64), "{}", inner[0]);
    for (i, answer) in inner.iter().enumerate().skip(1) {
        assert_eq!(answer, &json!({"id": i, "jsonrpc": "2.0", "error": busy}));
    }
    assert_eq!(h.server.open_wallet_count(), 1);
    assert_eq!(h.ok(&mut c, "accounts", json!({"token": token})).as_array().map(Vec::len), Some(1));
    // Fast calls run wherever they stand; a slow call that fails still uses the batch's one run.
    // Ids follow the envelope's rules: strings, numbers (as written) and null are echoed, anything
    // else is answered with null.
    let batch = format!(
        "[{},{},{},{},{}]",
        r#"{"jsonrpc":"2.0","id":{"a":1},"method":"get_top_level_directory"}"#,
        r#"{"jsonrpc":"2.0","id":"first","method":"get_mnemonic","params":{"name":"b","password":"wrong"}}"#,
        r#"{"jsonrpc":"2.0","id":1e2,"method":"list_wallets"}"#,
        r#"{"jsonrpc":"2.0","id":[1],"method":"change_password","params":{"name":"b","old":"pw","new":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":-7.50,"method":"accounts","params":{"token":TOKEN}}"#
            .replace("TOKEN", &token.to_string()),
    );
    let (body, pending) = c.client.seal_raw(batch.as_bytes(), 0, None).unwrap();
    let answer = h.send_as(&c, &body).body;
    let text = inner_text(&c, &answer);
    let inner = c.client.open_raw(pending, &answer).unwrap();
    assert!(text.starts_with(r#"[{"id":null,"jsonrpc":"2.0","result":{"Ok":"/srv/keyward"}}"#), "{text}");
    assert_eq!(inner[1]["id"], json!("first"));
    assert_eq!(inner[1]["error"]["message"], json!("Lifecycle: Error opening wallet (is password correct?)"));
    assert!(text.contains(r#"{"id":1e2,"jsonrpc":"2.0","result":{"Ok":[{"name":"b","open":true}]}}"#), "{text}");
    assert_eq!(inner[3], json!({"id": null, "jsonrpc": "2.0", "error": busy}));
    assert!(text.contains(r#"{"id":-7.50,"jsonrpc":"2.0","result":{"Ok":[{"#), "{text}");
    // The refused change_password changed nothing.
    open(&mut h, &mut c, json!("b"), "pw");
}

/// The decrypted inner answer of `body` as the server wrote it (the client's `open_raw` parses it).
fn inner_text(c: &TestClient, body: &[u8]) -> String {
    let outer: Value = serde_json::from_slice(body).unwrap();
    let ok = &outer["result"]["Ok"];
    let nonce = keyward_core::envelope::parse_nonce(ok["nonce"].as_str().unwrap()).unwrap();
    let cipher = keyward_core::envelope::Cipher::new(c.client.session_key().unwrap());
    let plaintext = cipher.open(&nonce, ok["body_enc"].as_str().unwrap()).unwrap();
    String::from_utf8(plaintext.to_vec()).unwrap()
}
