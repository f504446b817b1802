//! Lifecycle and account limits at their exact edges, the unlock throttle across a restart (the
//! counts a server saved are what the next server over the same store starts from), and the `Debug`
//! texts of the method table and of an embedder's call.

#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::sync::Arc;

use keyward_core::MAX_DIR_DEPTH;
use keyward_core::store::WalletKey;
use keyward_core::{MemoryStore, Store};
use keyward_testkit::{Harness, assert_rpc_error};
use serde_json::json;

#[test]
fn failed_unlocks_are_saved_and_a_restarted_server_still_makes_the_caller_wait() {
    let store = Arc::new(MemoryStore::new());
    let key = WalletKey { dir: String::new(), name: "w".into() };
    let mut h = Harness::new(Box::new(Arc::clone(&store)));
    let mut c = h.client(1, true);
    h.ok(&mut c, "create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "right"}));
    let free = h.server.config().throttle.free_attempts;
    for n in 1..=free + 1 {
        assert_rpc_error(h.call(&mut c, "open_wallet", json!({"name": "w", "password": "x"})), -32099, "Error opening");
        assert_eq!(store.load_failures("local", &key).unwrap(), n, "each failure is saved");
    }
    drop(h);

    // A new server over the same store: the saved count applies to its first attempt.
    let mut h = Harness::new(Box::new(Arc::clone(&store)));
    let mut c = h.client(2, true);
    assert_rpc_error(
        h.call(&mut c, "open_wallet", json!({"name": "w", "password": "right"})),
        -32099,
        "too many failed attempts",
    );
    h.now_ms += 3_600_000;
    let mut c = h.client(3, true);
    assert!(h.call(&mut c, "open_wallet", json!({"name": "w", "password": "right"})).is_ok());
    assert_eq!(store.load_failures("local", &key).unwrap(), 0, "a success resets the saved count");
}

#[test]
fn a_top_level_directory_may_be_exactly_the_deepest_allowed() {
    let mut h = Harness::new(Box::new(MemoryStore::new()));
    let mut c = h.client(1, true);
    let deepest = ["d"; MAX_DIR_DEPTH].join("/");
    h.ok(&mut c, "set_top_level_directory", json!({"dir": deepest}));
    let too_deep = ["d"; MAX_DIR_DEPTH + 1].join("/");
    assert_rpc_error(
        h.call(&mut c, "set_top_level_directory", json!({"dir": too_deep})),
        -32099,
        "the directory must be inside the server's data root",
    );
    assert_rpc_error(
        h.call(&mut c, "set_top_level_directory", json!({"dir": "a/../b"})),
        -32099,
        "the directory must be inside the server's data root",
    );
}

#[test]
fn a_config_may_be_exactly_64_kib() {
    let mut h = Harness::new(Box::new(MemoryStore::new()));
    let mut c = h.client(1, true);
    // The stored config is the four params as one object; pad the wallet config to the limit.
    let stored_len = |pad: usize| {
        let config = json!({"chain_type": "Mainnet", "wallet_config": {"pad": "x".repeat(pad)},
                            "logging_config": null, "tor_config": null});
        serde_json::to_vec(&config).unwrap().len()
    };
    let pad = 64 * 1024 - stored_len(0);
    assert_eq!(stored_len(pad), 64 * 1024);
    let params = |pad: usize| {
        json!({"chain_type": "Mainnet", "wallet_config": {"pad": "x".repeat(pad)}, "logging_config": null,
               "tor_config": null})
    };
    h.ok(&mut c, "create_config", params(pad));
    assert_rpc_error(h.call(&mut c, "create_config", params(pad + 1)), -32099, "config is larger than 64 KiB");
}

#[test]
fn an_account_label_is_1_to_64_printable_characters() {
    let mut h = Harness::new(Box::new(MemoryStore::new()));
    let mut c = h.client(1, true);
    h.ok(&mut c, "create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"}));
    let token = h.ok(&mut c, "open_wallet", json!({"name": "w", "password": "pw"}));
    let longest = "é".repeat(64);
    h.ok(&mut c, "create_account_path", json!({"token": token, "label": longest}));
    for bad in ["é".repeat(65), String::new(), "tab\there".into()] {
        assert_rpc_error(
            h.call(&mut c, "create_account_path", json!({"token": token, "label": bad})),
            -32099,
            "account label must be 1 to 64 printable characters",
        );
    }
}

#[test]
fn debug_texts_name_the_method_and_never_the_seed() {
    let text = format!("{:?}", keyward_core::METHODS[0]);
    assert!(text.starts_with("Method { name: \"init_secure_api\""), "{text}");
    let server = Harness::new(Box::new(MemoryStore::new())).server;
    assert_eq!(server.config().data_root, "/srv/keyward", "the configuration it was given");
    let text = format!("{server:?}");
    assert!(text.starts_with("Server { config: ServerConfig {"), "{text}");
    let mut h = Harness::new(Box::new(MemoryStore::new()));
    h.server
        .register_method("describe", &[], keyward_core::Role::Reader, |call| Ok(json!(format!("{call:?}"))))
        .unwrap();
    let mut c = h.client(1, true);
    h.ok(&mut c, "create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"}));
    let token = h.ok(&mut c, "open_wallet", json!({"name": "w", "password": "pw"}));
    let text = h.ok(&mut c, "describe", json!({"token": token}));
    assert_eq!(text, "AppCall { wallet: WalletKey { dir: \"\", name: \"w\" }, .. }");
}

#[test]
fn an_embedder_cannot_take_a_built_in_or_registered_name() {
    let mut h = Harness::new(Box::new(MemoryStore::new()));
    let method = |_: &keyward_core::AppCall<'_>| Ok(json!(null));
    h.server.register_method("mine", &["x"], keyward_core::Role::Signer, method).unwrap();
    for name in ["mine", "open_wallet", "encrypted_request_v3"] {
        let taken = h.server.register_method(name, &[], keyward_core::Role::Signer, method);
        assert_eq!(taken, Err(keyward_core::RegisterError::NameTaken), "{name}");
    }
    let listed = h.server.register_method("other", &["token"], keyward_core::Role::Signer, method);
    assert_eq!(listed, Err(keyward_core::RegisterError::TokenListed));
}

#[test]
fn the_host_api_reports_deadlines_the_vault_block_and_clients_and_shuts_down() {
    let mut h = Harness::new(Box::new(MemoryStore::new()));
    assert_eq!(h.server.poll_timeout(), None, "nothing to expire");
    let (address, len) = h.server.vault_region();
    let slots = h.server.config().tokens.max_open_wallets;
    assert!(address > 1 && len >= slots * 64, "one block of {slots} masked seeds: ({address:#x}, {len})");
    let mut c = h.client(1, true);
    let session_idle = h.server.config().sessions.idle_ms;
    assert_eq!(h.server.poll_timeout(), Some(h.now_ms + session_idle), "the session's idle deadline");
    h.ok(&mut c, "create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"}));
    h.ok(&mut c, "open_wallet", json!({"name": "w", "password": "pw"}));
    let token_idle = h.server.config().tokens.idle_ms;
    assert_eq!(h.server.poll_timeout(), Some(h.now_ms + session_idle.min(token_idle)));
    assert_eq!(h.server.vault_region(), (address, len), "the block never moves");
    assert_eq!((h.server.session_count(), h.server.open_wallet_count()), (1, 1));
    h.server.shutdown();
    assert_eq!((h.server.session_count(), h.server.open_wallet_count()), (0, 0));
    assert_eq!(h.server.poll_timeout(), None);

    let record = keyward_core::ClientRecord {
        name: "sock".into(),
        role: keyward_core::Role::Reader,
        identity: keyward_core::Identity::Uid { uid: 1000 },
        created_unix_ms: 0,
        revoked_unix_ms: None,
    };
    h.server.add_client(record.clone()).unwrap();
    assert_eq!(h.server.client_for_uid(1000).as_deref(), Some("sock"));
    assert_eq!(h.server.client_for_uid(1001), None);
    assert_eq!(h.server.clients(), [record]);
}

#[test]
fn generated_mnemonics_and_tokens_are_fresh_each_time() {
    let mut h = Harness::new(Box::new(MemoryStore::new()));
    let mut c = h.client(1, true);
    let mut mnemonics = Vec::new();
    let mut tokens = Vec::new();
    for name in ["a", "b"] {
        h.ok(&mut c, "create_wallet", json!({"name": name, "mnemonic": null, "mnemonic_length": 16, "password": "pw"}));
        mnemonics.push(h.ok(&mut c, "get_mnemonic", json!({"name": name, "password": "pw"})));
        tokens.push(h.ok(&mut c, "open_wallet", json!({"name": name, "password": "pw"})));
    }
    tokens.push(h.ok(&mut c, "open_wallet", json!({"name": "a", "password": "pw"})));
    assert_ne!(mnemonics[0], mnemonics[1]);
    assert!(tokens[0] != tokens[1] && tokens[0] != tokens[2] && tokens[1] != tokens[2], "{tokens:?}");
}

#[test]
fn a_restarted_server_over_the_same_store_has_the_same_wallets_accounts_and_clients() {
    let store = Arc::new(MemoryStore::new());
    let mut h = Harness::new(Box::new(Arc::clone(&store)));
    let mut c = h.client(1, true);
    h.ok(&mut c, "create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"}));
    let token = h.ok(&mut c, "open_wallet", json!({"name": "w", "password": "pw"}));
    h.ok(&mut c, "create_account_path", json!({"token": token, "label": "savings"}));
    let record = keyward_core::ClientRecord {
        name: "sock".into(),
        role: keyward_core::Role::Signer,
        identity: keyward_core::Identity::Uid { uid: 1000 },
        created_unix_ms: 0,
        revoked_unix_ms: None,
    };
    h.server.add_client(record).unwrap();
    drop(h);

    let mut h = Harness::new(Box::new(Arc::clone(&store)));
    assert_eq!(h.server.client_for_uid(1000).as_deref(), Some("sock"));
    assert_eq!(h.server.role_of("sock"), Some(keyward_core::Role::Signer));
    let mut c = h.client(2, true);
    let token = h.ok(&mut c, "open_wallet", json!({"name": "w", "password": "pw"}));
    let accounts = h.ok(&mut c, "accounts", json!({"token": token}));
    let labels: Vec<&str> = accounts.as_array().unwrap().iter().map(|a| a["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["default", "savings"]);
}
