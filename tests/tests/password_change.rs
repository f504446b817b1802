//! Issue 23, item 8d, against a live `keyward serve` (in process, fjall on disk, HTTPS on
//! loopback): `change_password` ends every opening of the wallet (the owner's and a reader's
//! tokens) by default, and keeps them with `[tokens] close_on_password_change = false`.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::sync::Arc;

use keyward_core::Role;
use keyward_tests::{Session, Target, assert_rpc_error, registered_client, runtime, start_with_config};
use serde_json::{Value, json};

const FAST_KDF: &str = "[kdf]\nm_cost_kib = 64\nt_cost = 1\np_cost = 1\n";

/// The owner's and a reader's tokens of one wallet, then the owner changes its password: whether
/// each token still answers `accounts`.
async fn tokens_after_a_password_change(config: &str) -> (Result<Value, String>, Result<Value, String>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    let running = start_with_config(&data, &format!("{FAST_KDF}{config}")).await;
    let addr = running.https.unwrap();
    let owner_tls = keyward::tls::client_config(&keyward::serve::tls_dir(&data)).unwrap();
    let mut owner = Session::open(&Target::Https { addr, tls: owner_tls }, 1, true).await;
    owner.ok("create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "old"})).await;
    let reader_tls = registered_client(&running, &data, "dashboard", Role::Reader);
    let mut reader = Session::open(&Target::Https { addr, tls: Arc::clone(&reader_tls) }, 2, true).await;
    let owner_token = owner.ok("open_wallet", json!({"name": "w", "password": "old"})).await;
    let reader_token = reader.ok("open_wallet", json!({"name": "w", "password": "old"})).await;
    assert!(reader.ok("accounts", json!({"token": reader_token})).await.is_array());

    // A wrong old password changes nothing, and closes nothing.
    let refused = owner.call("change_password", json!({"name": "w", "old": "wrong", "new": "new"})).await;
    assert_rpc_error(refused, -32099, "Error opening wallet");
    assert!(reader.ok("accounts", json!({"token": reader_token})).await.is_array());

    owner.ok("change_password", json!({"name": "w", "old": "old", "new": "new"})).await;
    let owners = owner.inner_call("accounts", json!({"token": owner_token})).await;
    let readers = reader.inner_call("accounts", json!({"token": reader_token})).await;
    // Either way the new password opens it, and the old one no longer does.
    assert!(reader.ok("open_wallet", json!({"name": "w", "password": "new"})).await.is_string());
    assert_rpc_error(
        reader.call("open_wallet", json!({"name": "w", "password": "old"})).await,
        -32099,
        "Error opening",
    );
    running.stop().await;
    (owners, readers)
}

#[test]
fn a_password_change_closes_every_opening_of_the_wallet_by_default() {
    runtime().block_on(async {
        let (owners, readers) = tokens_after_a_password_change("").await;
        for (whose, answer) in [("owner", owners), ("reader", readers)] {
            let error = answer.expect_err(whose);
            assert!(error.contains("Wallet has not been opened"), "{whose}: {error}");
        }
        let (owners, readers) = tokens_after_a_password_change("[tokens]\nclose_on_password_change = false\n").await;
        assert!(owners.unwrap().is_array() && readers.unwrap().is_array(), "tokens kept when the option is off");
    });
}
