//! Session scenarios: clients interleave in separate sessions, an encrypted re-init keeps the
//! session, and sessions expire when idle or at the end of their lifetime.

use serde_json::json;

use keyward_core::ClientError;
use keyward_core::store::Store;

use super::{create, open};
use crate::harness::{Harness, assert_rpc_error, plain_error, test_config};

pub(super) fn two_clients_interleave(store: Box<dyn Store>) {
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

pub(super) fn encrypted_reinit(store: Box<dyn Store>) {
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

pub(super) fn session_expiry(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    h.ok(&mut c, "get_top_level_directory", json!({}));
    h.now_ms += h.server.config().sessions.idle_ms;
    assert_rpc_error(h.call(&mut c, "get_top_level_directory", json!({})), -32001, "init_secure_api");
    assert_eq!(h.server.session_count(), 0);
}

pub(super) fn session_lifetime(store: Box<dyn Store>) {
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
