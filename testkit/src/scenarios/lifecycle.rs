//! Wallet lifecycle scenarios: create, open, use and delete a wallet; restore from a mnemonic;
//! grin seed import; password change; argument validation; top-level directories; several
//! named wallets side by side.

use serde_json::{Value, json};

use keyward_core::store::KdfParams;
use keyward_core::store::Store;

use super::{create, open};
use crate::VECTOR_MNEMONIC;
use crate::harness::{Harness, assert_rpc_error};

pub(super) fn whole_lifecycle(store: Box<dyn Store>) {
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

pub(super) fn restore_from_mnemonic(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, false);
    let params = json!({"name": "r", "mnemonic": VECTOR_MNEMONIC, "mnemonic_length": 0, "password": "pw"});
    h.ok(&mut c, "create_wallet", params);
    assert_eq!(h.ok(&mut c, "get_mnemonic", json!({"name": "r", "password": "pw"})), json!(VECTOR_MNEMONIC));
    let token = open(&mut h, &mut c, json!("r"), "pw");
    let public = h.ok(&mut c, "get_public_key", json!({"token": token, "path": "m/0'/1"}));
    let entropy = keyward_core::crypto::entropy_of(VECTOR_MNEMONIC).unwrap();
    let key = keyward_core::crypto::derive(&keyward_core::crypto::master_key(&entropy), &[0x8000_0000, 1]).unwrap();
    assert_eq!(public, json!(hex::encode(keyward_core::crypto::public_key(&key).unwrap().serialize())));
    let params = json!({"name": "r", "mnemonic": VECTOR_MNEMONIC, "mnemonic_length": 0, "password": "pw"});
    assert_rpc_error(h.call(&mut c, "create_wallet", params), -32099, "WalletSeedExists");
    // Like grin, a restore ignores mnemonic_length (V3 clients often send 32 with any mnemonic).
    let params = json!({"name": "s", "mnemonic": VECTOR_MNEMONIC, "mnemonic_length": 16, "password": "pw"});
    assert_eq!(h.ok(&mut c, "create_wallet", params), Value::Null);
    assert_eq!(h.ok(&mut c, "get_mnemonic", json!({"name": "s", "password": "pw"})), json!(VECTOR_MNEMONIC));
    let params = json!({"name": "s", "mnemonic": "abandon abandon zoo", "mnemonic_length": 0, "password": "pw"});
    assert_rpc_error(h.call(&mut c, "create_wallet", params), -32099, "ArgumentError");
}

pub(super) fn arguments_validated(store: Box<dyn Store>) {
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

pub(super) fn top_level_directory(store: Box<dyn Store>) {
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

pub(super) fn several_wallets(store: Box<dyn Store>) {
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

pub(super) fn grin_import(store: Box<dyn Store>) {
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
    let record = keyward_core::store::SeedRecord::from_bytes(&stored.unwrap().unwrap().seed_record).unwrap();
    assert_eq!(record.kdf, KdfParams::INSECURE_FOR_TESTS);
    let params = json!({"name": "grin", "wallet_seed": file, "password": "testpass"});
    assert_rpc_error(h.call(&mut c, "import_grin_wallet", params), -32099, "WalletSeedExists");
}

pub(super) fn change_password(store: Box<dyn Store>) {
    let mut h = Harness::new(store);
    let mut c = h.client(1, true);
    create(&mut h, &mut c, Value::Null, "old");
    let token = open(&mut h, &mut c, Value::Null, "old");
    assert_rpc_error(
        h.call(&mut c, "change_password", json!({"name": null, "old": "bad", "new": "new"})),
        -32099,
        "Error opening wallet",
    );
    // A refused change closed nothing.
    assert!(h.call(&mut c, "accounts", json!({"token": token})).is_ok());
    h.ok(&mut c, "change_password", json!({"name": null, "old": "old", "new": "new"}));
    // `[tokens] close_on_password_change` (default on): the token issued under the old password
    // ends with it; only the new password opens the wallet.
    assert_rpc_error(h.call(&mut c, "accounts", json!({"token": token})), -32099, "Wallet has not been opened");
    assert_rpc_error(h.call(&mut c, "open_wallet", json!({"name": null, "password": "old"})), -32099, "Error opening");
    open(&mut h, &mut c, Value::Null, "new");
}
