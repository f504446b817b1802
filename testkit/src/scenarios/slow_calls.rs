//! Slow-call scenarios: KDF calls are set aside for a blocking thread while others are answered
//! at once, a busy refusal runs nothing, and a batch runs at most one slow call and echoes ids
//! like the envelope.

use serde_json::{Value, json};

use keyward_core::Incoming;
use keyward_core::store::Store;

use super::{create, open};
use crate::harness::{Harness, TestClient, assert_rpc_error, plain_error};

pub(super) fn slow_calls_set_aside(store: Box<dyn Store>) {
    use keyward_core::Step;
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, Value::Null, "pw");
    let (body, pending) = c.client.seal("open_wallet", json!({"name": null, "password": "pw"})).unwrap();
    let step = h.server.handle_step(Incoming {
        body: &body,
        session: c.session,
        recent: None,
        principal: &keyward_core::Principal::local(),
        now_ms: h.now_ms,
    });
    let Step::Slow(call) = step else { panic!("open_wallet must be set aside for a blocking thread") };
    // A replay of the set-aside envelope is refused: its nonce is already recorded.
    let replay = h.server.handle_step(Incoming {
        body: &body,
        session: c.session,
        recent: None,
        principal: &keyward_core::Principal::local(),
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
        principal: &keyward_core::Principal::local(),
        now_ms: h.now_ms,
    });
    let Step::Done(answer) = step else { panic!("accounts must be answered at once") };
    assert_eq!(c.client.open(pending, &answer.body).unwrap().as_array().map(Vec::len), Some(1));
}

pub(super) fn busy_refusal_runs_nothing(store: Box<dyn Store>) {
    use keyward_core::Step;
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, Value::Null, "pw");
    let busy = "Busy: too many slow calls at once, try again shortly";
    let (body, pending) = c.client.seal("open_wallet", json!({"name": null, "password": "pw"})).unwrap();
    let step = h.server.handle_step(Incoming {
        body: &body,
        session: c.session,
        recent: None,
        principal: &keyward_core::Principal::local(),
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
        principal: &keyward_core::Principal::local(),
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

pub(super) fn batch_rules(store: Box<dyn Store>) {
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
    let nonce = keyward_core::crypto::parse_nonce(ok["nonce"].as_str().unwrap()).unwrap();
    let cipher = keyward_core::crypto::Cipher::new(c.client.session_key().unwrap());
    let plaintext = cipher.open(&nonce, ok["body_enc"].as_str().unwrap()).unwrap();
    String::from_utf8(plaintext.to_vec()).unwrap()
}
