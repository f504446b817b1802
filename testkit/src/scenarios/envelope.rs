//! Envelope scenarios: replayed, tampered or truncated envelopes and bad ECDH keys are refused
//! without changing anything, and envelope and call errors carry the V3 codes.

use serde_json::{Value, json};

use keyward_core::store::Store;

use super::{create, open};
use crate::harness::{Harness, assert_rpc_error, plain_error};

pub(super) fn replay_refused(store: Box<dyn Store>) {
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

pub(super) fn tampered_refused(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, Value::Null, "pw");
    let token = open(&mut h, &mut c, Value::Null, "pw");
    let (body, _pending) = c.client.seal("create_account_path", json!({"token": token, "label": "x"})).unwrap();
    let mut request: Value = serde_json::from_slice(&body).unwrap();
    let body_enc = request["params"]["body_enc"].as_str().unwrap().to_owned();
    let mut raw = keyward_core::crypto::decode_body(&body_enc).unwrap();
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

pub(super) fn bad_keys_refused(store: Box<dyn Store>) {
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

pub(super) fn error_codes(store: Box<dyn Store>) {
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
