//! Unlock scenarios: a wrong password looks like an unknown wallet, failed unlocks back off, and
//! failed opens on made-up names lock nobody out.

use serde_json::{Value, json};

use keyward_core::store::Store;

use super::{create, open};
use crate::harness::{Harness, assert_rpc_error};

pub(super) fn wrong_password_like_unknown_wallet(store: Box<dyn Store>) {
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

pub(super) fn unlock_throttle(store: Box<dyn Store>) {
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

pub(super) fn made_up_names_lock_nobody_out(store: Box<dyn Store>) {
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
