//! Principals: every method × every role against the table in `spec/protocol.md`; sessions and
//! tokens bound to the principal that made them; per-principal bounds; revocation; the audit log.

#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use keyward_core::SessionLimits;
use keyward_core::audit::verify;
use keyward_core::{Client, ClientRecord, Host as _, Identity, Incoming, Role, Server, SessionId, Step};
use keyward_testkit::{WatchedStore, test_config};
use serde_json::{Value, json};

/// A server over a watched memory store; writes other than the audit log's are counted.
fn server(limits: Option<SessionLimits>) -> (Server, Arc<AtomicUsize>) {
    let writes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&writes);
    let store = WatchedStore::new(move |what| {
        if what != "append_audit" {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut config = test_config();
    if let Some(limits) = limits {
        config.sessions = limits;
    }
    let mut server = Server::new(config, Box::new(store), [3; 32]);
    server.register_method("sign_blob", &["blob"], Role::Signer, |_| Ok(json!("signed"))).unwrap();
    for (uid, role) in [(1, Role::Reader), (2, Role::Signer), (3, Role::Owner)] {
        let record = ClientRecord {
            name: role.as_str().into(),
            role,
            identity: Identity::Uid { uid },
            created_unix_ms: 0,
            revoked_unix_ms: None,
        };
        server.add_client(record).unwrap();
    }
    (server, writes)
}

/// A principal's client, with its own session.
struct Caller {
    principal: &'static str,
    client: Client,
    session: Option<SessionId>,
}

fn handle(server: &Server, body: &[u8], session: Option<SessionId>, principal: &str) -> Vec<u8> {
    let incoming =
        Incoming { body, session, recent: None, principal: &keyward_core::Principal::new(principal), now_ms: 10 };
    match server.handle_step(incoming) {
        Step::Done(out) => out.body,
        Step::Slow(call) => server.finish(call).body,
    }
}

impl Caller {
    fn new(server: &Server, principal: &'static str, seed: u8) -> Self {
        let mut client = Client::new([seed; 32]);
        let out = server.handle(Incoming {
            body: &client.init_request(),
            session: None,
            recent: None,
            principal: &keyward_core::Principal::new(principal),
            now_ms: 1,
        });
        client.handle_init_answer(&out.body).unwrap();
        Self { principal, client, session: out.session }
    }

    /// The call's `Ok` value, or the error's `(code, message)`.
    fn call(&mut self, server: &Server, method: &str, params: Value) -> Result<Value, (i64, String)> {
        let (body, pending) = self.client.seal(method, params).unwrap();
        let answer = handle(server, &body, self.session, self.principal);
        self.client.open(pending, &answer).map_err(|e| match e {
            keyward_core::ClientError::Rpc { code, message } => (code, message),
            other => (0, other.to_string()),
        })
    }
}

/// The `| method | params | role | speed |` table of `spec/protocol.md`.
fn protocol_roles() -> Vec<(String, Role)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/protocol.md")).unwrap();
    let start = text.find("| method | params | role | speed |").unwrap();
    text[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<String> = line.split('|').map(|c| c.trim().replace('`', "")).collect();
            (cells[1].clone(), Role::parse(&cells[3]).unwrap())
        })
        .collect()
}

/// Params that reach each method's own checks (a wallet `w` exists; `token` is filled in).
fn params_for(method: &str, token: &Value) -> Value {
    match method {
        "init_secure_api" => json!({"ecdh_pubkey": "02".to_owned() + &"11".repeat(32)}),
        "set_top_level_directory" => json!({"dir": "sub"}),
        "create_config" => {
            json!({"chain_type": "Mainnet", "wallet_config": null, "logging_config": null, "tor_config": null})
        }
        "create_wallet" => json!({"name": "new", "mnemonic": null, "mnemonic_length": 16, "password": "pw"}),
        "open_wallet" | "get_mnemonic" | "delete_wallet" => json!({"name": "w", "password": "pw"}),
        "close_wallet" => json!({"name": "w"}),
        "change_password" => json!({"name": "w", "old": "pw", "new": "pw"}),
        "import_grin_wallet" => json!({"name": "g", "wallet_seed": "not a seed", "password": "x"}),
        "accounts" => json!({"token": token}),
        "create_account_path" | "set_active_account" => json!({"token": token, "label": "default"}),
        "get_public_key" => json!({"token": token, "path": "m/0/1"}),
        "sign_message" => json!({"token": token, "path": "m/0/1", "message": "hi"}),
        "verify_message" => {
            json!({"public_key": "02".to_owned() + &"11".repeat(32), "message": "m", "signature": "00"})
        }
        "add_client" => json!({"name": "made", "role": "reader", "public_key": null, "uid": 77}),
        "set_client_role" => json!({"name": "reader", "role": "reader"}),
        "revoke_client" => json!({"name": "nobody-here"}),
        "audit_log" => json!({"after": null, "limit": 5}),
        _ => json!({}),
    }
}

#[test]
fn every_method_and_every_role_follow_the_protocol_table() {
    let table = protocol_roles();
    assert!(table.len() >= 23, "the table lists every method");
    for role in Role::ALL {
        let (server, writes) = server(None);
        let mut owner = Caller::new(&server, "owner", 9);
        owner
            .call(
                &server,
                "create_wallet",
                json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"}),
            )
            .unwrap();
        let mut caller = Caller::new(&server, role.as_str(), 7);
        let token = caller.call(&server, "open_wallet", json!({"name": "w", "password": "pw"})).unwrap();
        let mut rows = table.clone();
        // The embedder's signing method follows its registered role.
        rows.push(("sign_blob".into(), Role::Signer));
        for (method, needs) in rows {
            let params =
                if method == "sign_blob" { json!({"token": token, "blob": "b"}) } else { params_for(&method, &token) };
            let before = writes.load(Ordering::SeqCst);
            let answer = caller.call(&server, &method, params);
            let forbidden = (-32099, format!("Forbidden: {method} needs the {needs} role"));
            if role.allows(needs) {
                assert_ne!(answer.as_ref().err(), Some(&forbidden), "{role} may call {method}");
            } else {
                assert_eq!(answer.err(), Some(forbidden), "{role} may not call {method}");
                assert_eq!(writes.load(Ordering::SeqCst), before, "a refused {method} changed the store");
            }
        }
        server.shutdown();
        // Every refusal is counted in the audit log, with its principal (coalesced: the first
        // written at once, the rest in one record).
        let records = server.store().read_audit(0, 10_000).unwrap();
        let refused: u32 = records.iter().filter(|r| r.event.outcome == "forbidden").map(|r| r.event.count).sum();
        let expected =
            table.iter().filter(|(_, needs)| !role.allows(*needs)).count() + usize::from(role == Role::Reader);
        assert_eq!(refused as usize, expected, "{role}: every refusal counted");
        assert!(records.iter().filter(|r| r.event.outcome == "forbidden").count() <= 2, "{role}: coalesced");
        assert!(records.iter().filter(|r| r.event.outcome == "forbidden").all(|r| r.event.principal == role.as_str()));
    }
}

#[test]
fn a_session_belongs_to_its_principal() {
    let (server, _) = server(None);
    let mut owner = Caller::new(&server, "owner", 1);
    let reader = Caller::new(&server, "reader", 2);
    // The owner's envelope, sent by the reader under the owner's session id: a wrong key's answer.
    let (body, _) = owner.client.seal("list_wallets", json!({})).unwrap();
    let stolen = String::from_utf8(handle(&server, &body, owner.session, "reader")).unwrap();
    let (wrong_key, _) = Caller::new(&server, "owner", 3).client.seal("list_wallets", json!({})).unwrap();
    let wrong = String::from_utf8(handle(&server, &wrong_key, owner.session, "owner")).unwrap();
    assert!(stolen.contains("-32002") && stolen.contains("Decryption"), "{stolen}");
    let code_of = |text: &str| serde_json::from_str::<Value>(text).unwrap()["error"].clone();
    assert_eq!(code_of(&stolen), code_of(&wrong), "another principal's session answers as a wrong key");
    // Naming none, the owner's envelope is not matched among the reader's sessions.
    let unnamed = String::from_utf8(handle(&server, &body, None, "reader")).unwrap();
    assert!(unnamed.contains("-32001"), "{unnamed}");
    // The owner's own call still works (nothing was recorded against it).
    assert!(owner.call(&server, "list_wallets", json!({})).is_ok());
    assert_eq!(server.session_count_of("reader"), 1);
    drop(reader);
}

#[test]
fn a_token_belongs_to_the_principal_that_opened_the_wallet() {
    let (server, _) = server(None);
    let mut owner = Caller::new(&server, "owner", 1);
    let mut reader = Caller::new(&server, "reader", 2);
    owner
        .call(&server, "create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"}))
        .unwrap();
    let owners = owner.call(&server, "open_wallet", json!({"name": "w", "password": "pw"})).unwrap();
    let stolen = reader.call(&server, "accounts", json!({"token": owners}));
    let wrong = reader.call(&server, "accounts", json!({"token": "11".repeat(32)}));
    assert_eq!(stolen, wrong, "another principal's token is refused as a wrong token");
    // Within a principal, a token works from any of its sessions.
    let mut owner_again = Caller::new(&server, "owner", 3);
    assert!(owner_again.call(&server, "accounts", json!({"token": owners})).is_ok());
    // Each principal's opening is its own; the seed leaves memory when no one holds it.
    let readers = reader.call(&server, "open_wallet", json!({"name": "w", "password": "pw"})).unwrap();
    assert_eq!(server.open_wallet_count(), 2);
    reader.call(&server, "close_wallet", json!({"name": "w"})).unwrap();
    assert_eq!(server.open_wallet_count(), 1);
    assert!(
        owner.call(&server, "accounts", json!({"token": owners})).is_ok(),
        "the reader's close leaves the owner's opening"
    );
    assert!(reader.call(&server, "accounts", json!({"token": readers})).is_err());
    owner.call(&server, "close_wallet", json!({"name": "w"})).unwrap();
    assert_eq!(server.open_wallet_count(), 0);
    assert!(server.vault_masked_bytes().is_empty());
}

#[test]
fn a_readers_init_flood_evicts_only_its_own_sessions() {
    let limits = SessionLimits { max_sessions: 64, max_per_principal: 16, ..SessionLimits::default() };
    let (server, _) = server(Some(limits));
    let mut owner = Caller::new(&server, "owner", 1);
    let mut signer = Caller::new(&server, "signer", 2);
    for n in 0..2_000u32 {
        let mut client = Client::new([(n % 250) as u8 + 3; 32]);
        handle(&server, &client.init_request(), None, "reader");
    }
    assert_eq!(server.session_count_of("reader"), 16);
    assert!(owner.call(&server, "list_wallets", json!({})).is_ok(), "the owner's session outlived the flood");
    assert!(signer.call(&server, "list_wallets", json!({})).is_ok());
}

#[test]
fn a_readers_wrong_passwords_do_not_make_the_owner_wait() {
    let (server, _) = server(None);
    let mut owner = Caller::new(&server, "owner", 1);
    let mut reader = Caller::new(&server, "reader", 2);
    owner
        .call(&server, "create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"}))
        .unwrap();
    let mut throttled = false;
    for _ in 0..10 {
        let answer = reader.call(&server, "open_wallet", json!({"name": "w", "password": "guess"}));
        throttled |= answer.is_err_and(|(_, message)| message.contains("too many failed attempts"));
    }
    assert!(throttled, "the reader is throttled");
    assert!(owner.call(&server, "open_wallet", json!({"name": "w", "password": "pw"})).is_ok());
}

#[test]
fn revocation_ends_sessions_openings_and_requests_at_once() {
    let (server, _) = server(None);
    let mut owner = Caller::new(&server, "owner", 1);
    let mut reader = Caller::new(&server, "reader", 2);
    owner
        .call(&server, "create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"}))
        .unwrap();
    reader.call(&server, "open_wallet", json!({"name": "w", "password": "pw"})).unwrap();
    assert_eq!(server.open_wallet_count(), 1);
    assert_eq!(
        owner.call(&server, "revoke_client", json!({"name": "owner"})).unwrap_err().1,
        "ArgumentError: a client cannot revoke itself"
    );
    owner.call(&server, "revoke_client", json!({"name": "reader"})).unwrap();
    assert_eq!(server.session_count_of("reader"), 0);
    assert_eq!(server.open_wallet_count(), 0);
    assert_eq!(server.role_of("reader"), None);
    assert_eq!(server.client_for_uid(1), None);
    let refused = String::from_utf8(handle(&server, &reader.client.init_request(), None, "reader")).unwrap();
    assert!(refused.contains("Forbidden: this client is revoked"), "{refused}");
    // A role change applies to the next request.
    let mut signer = Caller::new(&server, "signer", 3);
    owner.call(&server, "set_client_role", json!({"name": "signer", "role": "reader"})).unwrap();
    let token = Value::String("11".repeat(32));
    let answer = signer.call(&server, "sign_message", json!({"token": token, "path": "m/0", "message": "m"}));
    assert_eq!(answer.unwrap_err().1, "Forbidden: sign_message needs the signer role");
    let clients = owner.call(&server, "list_clients", json!({})).unwrap();
    let reader_record = clients["Ok"]
        .as_array()
        .or(clients.as_array())
        .unwrap()
        .iter()
        .find(|c| c["name"] == "reader")
        .cloned()
        .unwrap();
    assert!(reader_record["revoked_unix_ms"].is_u64());
}

#[test]
fn the_audit_log_names_who_did_what_and_holds_no_secret() {
    let (server, _) = server(None);
    let mut owner = Caller::new(&server, "owner", 1);
    let mut reader = Caller::new(&server, "reader", 2);
    let mnemonic = "fat twenty mean degree forget shell check candy immense awful flame next during february bulb bike sun wink theory day kiwi embrace peace lunch";
    owner
        .call(
            &server,
            "create_wallet",
            json!({"name": "w", "mnemonic": mnemonic, "mnemonic_length": 0, "password": "hunter2-secret"}),
        )
        .unwrap();
    let token = owner.call(&server, "open_wallet", json!({"name": "w", "password": "hunter2-secret"})).unwrap();
    owner.call(&server, "sign_message", json!({"token": token, "path": "m/0/1", "message": "pay bob"})).unwrap();
    assert!(reader.call(&server, "open_wallet", json!({"name": "w", "password": "wrong-guess"})).is_err());
    assert!(reader.call(&server, "get_mnemonic", json!({"name": "w", "password": "hunter2-secret"})).is_err());
    let page = owner.call(&server, "audit_log", json!({"after": 0, "limit": 100})).unwrap();
    let records: Vec<keyward_core::audit::AuditRecord> = serde_json::from_value(page["records"].clone()).unwrap();
    let seen: Vec<(&str, &str, Option<&str>, &str)> = records
        .iter()
        .map(|r| {
            (r.event.principal.as_str(), r.event.method.as_str(), r.event.wallet.as_deref(), r.event.outcome.as_str())
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("owner", "create_wallet", Some("w"), "ok"),
            ("owner", "open_wallet", Some("w"), "ok"),
            ("owner", "sign_message", Some("w"), "ok"),
            ("reader", "open_wallet", Some("w"), "wrong password"),
            ("reader", "get_mnemonic", None, "forbidden"),
        ]
    );
    let anchor = serde_json::from_value(page["anchor"].clone()).unwrap();
    let head = serde_json::from_value(page["head"].clone()).unwrap();
    assert_eq!(verify(&records, anchor, head), Ok(5));
    let text = page.to_string();
    for secret in ["hunter2-secret", "wrong-guess", "fat twenty", "pay bob", token.as_str().unwrap()] {
        assert!(!text.contains(secret), "the audit log holds {secret:?}");
    }
}

#[test]
fn a_reader_cannot_fill_the_audit_log_with_made_up_names() {
    let (server, _) = server(None);
    let mut reader = Caller::new(&server, "reader", 2);
    // A batch of closes of wallets it does not hold open: nothing happened, nothing is recorded.
    let batch: Vec<Value> = (0..1000)
        .map(|n| json!({"jsonrpc": "2.0", "id": n, "method": "close_wallet", "params": {"name": format!("x{n}")}}))
        .collect();
    let body = serde_json::to_vec(&Value::Array(batch)).unwrap();
    let (sealed, pending) = reader.client.seal_raw(&body, 0, None).unwrap();
    let answer = handle(&server, &sealed, reader.session, "reader");
    let answers = reader.client.open_raw(pending, &answer).unwrap();
    assert_eq!(answers.as_array().map(Vec::len), Some(1000), "{answers}");
    server.flush_audit();
    assert!(server.store().read_audit(0, 10_000).unwrap().is_empty());
    // Forbidden calls on made-up names: one record with a count (the names are not kept).
    for n in 0..50 {
        let answer = reader.call(&server, "get_mnemonic", json!({"name": format!("y{n}"), "password": "p"}));
        assert_eq!(answer.unwrap_err().1, "Forbidden: get_mnemonic needs the owner role");
    }
    assert_eq!(server.audit_pending(), 2, "the first refusal, and a window counting the rest");
    server.flush_audit();
    assert_eq!(server.audit_pending(), 1, "the window is open (this server has no clock)");
    // At shutdown every window is written.
    server.shutdown();
    assert_eq!(server.audit_pending(), 0);
    let records = server.store().read_audit(0, 10_000).unwrap();
    let seen: Vec<_> =
        records.iter().map(|r| (r.event.method.as_str(), r.event.wallet.as_deref(), r.event.count)).collect();
    assert_eq!(seen, [("get_mnemonic", None, 1), ("get_mnemonic", None, 49)], "two records: {records:?}");
}

#[test]
fn a_readers_repeated_unlocks_are_coalesced_and_the_owners_calls_are_each_kept() {
    let (server, _) = server(None);
    let mut owner = Caller::new(&server, "owner", 3);
    let mut reader = Caller::new(&server, "reader", 1);
    owner
        .call(&server, "create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"}))
        .unwrap();
    // A reader with the password can run the KDF all day: its openings are coalesced and budgeted.
    for _ in 0..30 {
        reader.call(&server, "open_wallet", json!({"name": "w", "password": "pw"})).unwrap();
    }
    for _ in 0..2 {
        owner.call(&server, "get_mnemonic", json!({"name": "w", "password": "pw"})).unwrap();
    }
    server.shutdown();
    let records = server.store().read_audit(0, 100).unwrap();
    let of = |who: &str, method: &str| -> Vec<(u32, bool)> {
        let records = records.iter().filter(|r| r.event.principal == who && r.event.method == method);
        records.map(|r| (r.event.count, r.event.span.is_some())).collect()
    };
    assert_eq!(of("reader", "open_wallet"), [(1, false), (29, true)], "{records:?}");
    assert_eq!(of("owner", "create_wallet"), [(1, false)]);
    assert_eq!(of("owner", "get_mnemonic"), [(1, false), (1, false)], "the owner's calls are kept as they are");
}

/// A host that issues certificates and pairs, as `keyward serve` does, with fixed answers: the SPKI
/// digest is the public key's first byte repeated, so a test can tell keys apart.
struct IssuingHost;

impl keyward_core::Host for IssuingHost {
    fn unix_time_ms(&self) -> u64 {
        5
    }

    fn issue_certificate(&self, name: &str, public_key_pem: &str) -> Result<keyward_core::IssuedCertificate, String> {
        let first = *public_key_pem.as_bytes().first().ok_or("an empty key")?;
        Ok(keyward_core::IssuedCertificate {
            certificate_pem: format!("CERT for {name}"),
            ca_certificate_pem: "CA".into(),
            spki_sha256: [first; 32],
        })
    }

    fn start_pairing(&self, name: &str, _: Role, ttl_secs: Option<u64>) -> Result<keyward_core::PairingTicket, String> {
        Ok(keyward_core::PairingTicket {
            code: format!("CODE-{name}").into(),
            expires_unix_ms: 5 + ttl_secs.unwrap_or(300) * 1000,
            pair_url: "tcp://127.0.0.1:3422".into(),
        })
    }
}

fn issuing_server() -> Server {
    let (mut server, _) = server(None);
    server.set_host(Arc::new(IssuingHost));
    server
}

#[test]
fn add_client_issues_a_certificate_for_a_public_key_and_registers_it() {
    let server = issuing_server();
    let mut owner = Caller::new(&server, "owner", 1);
    let answer =
        owner.call(&server, "add_client", json!({"name": "phone", "role": "signer", "public_key": "K", "uid": null}));
    let answer = answer.unwrap();
    assert_eq!(answer["certificate"], "CERT for phone");
    assert_eq!(answer["ca_certificate"], "CA");
    assert_eq!(answer["spki_sha256"], hex::encode([b'K'; 32]));
    assert_eq!(answer["role"], "signer");
    assert_eq!(server.client_for_cert(&[b'K'; 32]).as_deref(), Some("phone"));
    assert_eq!(server.role_of("phone"), Some(Role::Signer));
    let record = server.clients().into_iter().find(|r| r.name == "phone").unwrap();
    assert_eq!(record.created_unix_ms, 5, "stamped with the host's clock");
    // The same key again, under another name: refused, nothing registered.
    let again =
        owner.call(&server, "add_client", json!({"name": "tablet", "role": "reader", "public_key": "K", "uid": null}));
    assert_eq!(again.unwrap_err().1, "ArgumentError: client 'phone' has this identity already");
    assert_eq!(server.role_of("tablet"), None);
    // Neither or both of key and uid: invalid params.
    for (key, uid) in [(json!(null), json!(null)), (json!("K"), json!(9))] {
        let answer =
            owner.call(&server, "add_client", json!({"name": "x", "role": "reader", "public_key": key, "uid": uid}));
        assert_eq!(answer.unwrap_err().0, -32602);
    }
}

#[test]
fn no_client_takes_a_reserved_or_invalid_name() {
    let server = issuing_server();
    let mut owner = Caller::new(&server, "owner", 1);
    for name in ["local-http", ".hidden", "a b"] {
        let answer =
            owner.call(&server, "add_client", json!({"name": name, "role": "reader", "public_key": null, "uid": 50}));
        assert!(answer.is_err(), "{name} was accepted");
        let record = ClientRecord {
            name: name.into(),
            role: Role::Reader,
            identity: Identity::Uid { uid: 51 },
            created_unix_ms: 0,
            revoked_unix_ms: None,
        };
        assert_eq!(server.add_client(record), Err(format!("ArgumentError: '{name}' cannot name a client")));
        let answer = owner.call(&server, "pair_client", json!({"name": name, "role": "reader", "ttl_secs": null}));
        assert!(answer.is_err(), "pairing {name} was accepted");
    }
    assert_eq!(server.clients().len(), 3, "{:?}", server.clients());
}

#[test]
fn pair_client_answers_the_hosts_code_for_a_new_name_only() {
    let server = issuing_server();
    let mut owner = Caller::new(&server, "owner", 1);
    let answer = owner.call(&server, "pair_client", json!({"name": "laptop", "role": "reader", "ttl_secs": 60}));
    assert_eq!(
        answer.unwrap(),
        json!({"name": "laptop", "role": "reader", "code": "CODE-laptop", "expires_unix_ms": 60_005,
               "pair_url": "tcp://127.0.0.1:3422"})
    );
    let ticket = IssuingHost.start_pairing("laptop", Role::Reader, None).unwrap();
    let text = format!("{ticket:?}");
    assert_eq!(text, r#"PairingTicket { expires_unix_ms: 300005, pair_url: "tcp://127.0.0.1:3422", .. }"#);
    let answer = owner.call(&server, "pair_client", json!({"name": "laptop", "role": "owner", "ttl_secs": null}));
    assert_eq!(answer.unwrap()["expires_unix_ms"], 300_005);
    // A name a client has (active or not) is never reused.
    let answer = owner.call(&server, "pair_client", json!({"name": "signer", "role": "reader", "ttl_secs": null}));
    assert_eq!(answer.unwrap_err().1, "ArgumentError: a client called 'signer' exists (names are never reused)");
    let answer = owner.call(&server, "pair_client", json!({"name": "laptop", "role": "reader", "ttl_secs": "soon"}));
    assert_eq!(answer.unwrap_err().1, "ArgumentError: 'ttl_secs' must be a number of seconds");
}

#[test]
fn a_clients_new_identity_replaces_its_old_one_and_closes_old_connections() {
    let server = issuing_server();
    let mut owner = Caller::new(&server, "owner", 1);
    owner
        .call(&server, "add_client", json!({"name": "phone", "role": "reader", "public_key": "A", "uid": null}))
        .unwrap();
    owner
        .call(&server, "add_client", json!({"name": "pad", "role": "reader", "public_key": "B", "uid": null}))
        .unwrap();
    let revocations = server.revocations();
    // Its own identity again is allowed (a rotation that kept the key).
    server.set_client_identity("phone", Identity::Cert { spki_sha256: [b'A'; 32] }).unwrap();
    // Another client's identity is not.
    assert_eq!(
        server.set_client_identity("phone", Identity::Cert { spki_sha256: [b'B'; 32] }),
        Err("ArgumentError: client 'pad' has this identity already".into())
    );
    assert_eq!(server.client_for_cert(&[b'B'; 32]).as_deref(), Some("pad"));
    server.set_client_identity("phone", Identity::Cert { spki_sha256: [b'C'; 32] }).unwrap();
    assert_eq!(server.client_for_cert(&[b'C'; 32]).as_deref(), Some("phone"));
    assert_eq!(server.client_for_cert(&[b'A'; 32]), None);
    assert!(server.revocations() >= revocations + 2, "connections of the old key are closed");
    assert!(server.set_client_identity("nobody", Identity::Uid { uid: 99 }).is_err());
}

#[test]
fn a_refusal_the_host_made_is_audited_as_given() {
    let (server, _) = server(None);
    for _ in 0..3 {
        server.audit_refusal("cert 0a1b", "handshake", "revoked client");
    }
    server.flush_audit();
    let records = server.store().read_audit(0, 10).unwrap();
    let seen = |records: &[keyward_core::audit::AuditRecord]| -> Vec<_> {
        records
            .iter()
            .map(|r| (r.event.principal.clone(), r.event.method.clone(), r.event.outcome.clone(), r.event.count))
            .collect()
    };
    let first = ("cert 0a1b".to_owned(), "handshake".to_owned(), "revoked client".to_owned(), 1);
    assert_eq!(seen(&records), std::slice::from_ref(&first), "the first at once");
    server.shutdown();
    let records = server.store().read_audit(0, 10).unwrap();
    assert_eq!(seen(&records), [first, ("cert 0a1b".into(), "handshake".into(), "revoked client".into(), 2)]);
}

#[test]
fn audited_wallets_carry_their_directory_and_client_names_never_do() {
    let (server, _) = server(None);
    let mut owner = Caller::new(&server, "owner", 1);
    owner.call(&server, "set_top_level_directory", json!({"dir": "sub"})).unwrap();
    let create = json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"});
    // A slow call is set aside as a SlowCall, whose Debug names only its session.
    let (body, pending) = owner.client.seal("create_wallet", create).unwrap();
    let incoming = Incoming {
        body: &body,
        session: owner.session,
        recent: None,
        principal: &keyward_core::Principal::new("owner"),
        now_ms: 10,
    };
    let Step::Slow(call) = server.handle_step(incoming) else { panic!("create_wallet is slow") };
    assert!(format!("{call:?}").starts_with("SlowCall { session: "), "{call:?}");
    owner.client.open(pending, &server.finish(call).body).unwrap();
    owner
        .call(&server, "add_client", json!({"name": "made", "role": "reader", "public_key": null, "uid": 77}))
        .unwrap();
    // Positional params name the wallet too.
    assert!(owner.call(&server, "open_wallet", json!(["w", "wrong"])).is_err());
    server.flush_audit();
    let records = server.store().read_audit(0, 100).unwrap();
    let seen: Vec<_> = records
        .iter()
        .filter(|r| r.event.method != "set_top_level_directory")
        .map(|r| (r.event.method.as_str(), r.event.wallet.as_deref(), r.event.target.as_deref()))
        .collect();
    // A client's name is the record's target, never a wallet (nor put in the directory).
    let expected = [
        ("create_wallet", Some("sub/w"), None),
        ("add_client", None, Some("made")),
        ("open_wallet", Some("sub/w"), None),
    ];
    assert_eq!(seen, expected);
    // Every client administration call names its target so; the chain (v3 records among v1) verifies.
    owner.call(&server, "set_client_role", json!({"name": "made", "role": "signer"})).unwrap();
    owner.call(&server, "revoke_client", json!({"name": "made"})).unwrap();
    server.flush_audit();
    let records = server.store().read_audit(0, 100).unwrap();
    let admin: Vec<_> = records
        .iter()
        .filter(|r| r.event.method.contains("_client"))
        .map(|r| (r.event.method.as_str(), r.event.wallet.as_deref(), r.event.target.as_deref()))
        .collect();
    assert_eq!(
        admin,
        [
            ("add_client", None, Some("made")),
            ("set_client_role", None, Some("made")),
            ("revoke_client", None, Some("made"))
        ]
    );
    let head = records.last().map(|r| keyward_core::audit::Anchor { seq: r.seq, hash: r.hash }).unwrap();
    assert_eq!(verify(&records, keyward_core::audit::Anchor::default(), head), Ok(records.len() as u64));
}

mod launcher;
