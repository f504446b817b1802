//! Token and vault scenarios: wrong, stale, missing and closed tokens; the vault emptied on close
//! and expiry; token lifetimes; the vault's capacity; embedder methods that get the seed only with
//! a token.

use serde_json::{Value, json};

use keyward_core::AppError;
use keyward_core::store::Store;

use super::{create, open};
use crate::harness::{Harness, assert_rpc_error, test_config};

pub(super) fn token_checks(store: Box<dyn Store>) {
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

pub(super) fn vault_empty_after_close(store: Box<dyn Store>) {
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

pub(super) fn token_lifetime(store: Box<dyn Store>) {
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

pub(super) fn vault_capacity(store: Box<dyn Store>) {
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

pub(super) fn embedder_method(store: Box<dyn Store>) {
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
