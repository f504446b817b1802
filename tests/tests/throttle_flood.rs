//! A flood of failed `open_wallet` calls on made-up wallet names, against a real `keyward serve`,
//! does not lock the owner out: made-up names get no throttle entry and no store write, so the
//! owner's right password opens the wallet at once afterwards.
#![expect(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "a test fails by panicking, with the value in the message; a test reports what it measured"
)]

use std::time::Instant;

use keyward_core::{ClientError, WalletKey};
use keyward_tests::{Session, TestServer, assert_rpc_error, runtime};
use serde_json::json;

/// Failed calls in the flood, more than twice the throttle's table (4,096 entries by default).
const FLOOD: usize = 10_000;
/// Sessions sending the flood at once, one call per envelope each (a batch would run only its
/// first slow call).
const SENDERS: usize = 4;

#[test]
fn a_flood_of_made_up_names_does_not_lock_the_owner_out() {
    runtime().block_on(async {
        let server = TestServer::start().await;
        let target = server.https();
        let mut owner = Session::open(&target, 1, true).await;
        let create = json!({"name": "owner", "mnemonic": null, "mnemonic_length": 16, "password": "right"});
        owner.ok("create_wallet", create).await;
        drop(owner);

        let names = keyward_testkit::made_up_names(FLOOD, 0xf100d);
        let started = Instant::now();
        let mut senders = Vec::new();
        for (i, chunk) in names.chunks(FLOOD / SENDERS).enumerate() {
            let target = target.clone();
            let chunk = chunk.to_vec();
            senders.push(tokio::spawn(async move {
                let mut s = Session::open(&target, 10 + u8::try_from(i).unwrap(), true).await;
                let mut busy = 0;
                for name in &chunk {
                    loop {
                        match s.call("open_wallet", json!({"name": name, "password": "guess"})).await {
                            Err(ClientError::Rpc { message, .. }) if message.starts_with("Busy") => busy += 1,
                            other => {
                                assert_rpc_error(other, -32099, "Error opening wallet (is password correct?)");
                                break;
                            }
                        }
                    }
                }
                busy
            }));
        }
        let mut busy = 0;
        for sender in senders {
            busy += sender.await.unwrap();
        }
        let flood = started.elapsed();

        // A new connection: an HTTPS connection idle for 10 s (the header timeout) is closed.
        let started = Instant::now();
        let mut owner = Session::open(&target, 2, true).await;
        let token = owner.ok("open_wallet", json!({"name": "owner", "password": "right"})).await;
        let owner_waited = started.elapsed();
        assert_eq!(token.as_str().map(str::len), Some(64));
        eprintln!(
            "{FLOOD} failed open_wallet in {flood:?} ({busy} Busy answers retried); the owner's open: {owner_waited:?}"
        );

        let store = server.running.core.store();
        assert_eq!(store.list_wallets("").unwrap(), vec!["owner".to_owned()]);
        for name in names.iter().step_by(997) {
            let key = WalletKey { dir: String::new(), name: name.clone() };
            assert_eq!(store.load_failures("default", &key).unwrap(), 0, "{name} was recorded");
        }
        server.stop().await;
    });
}
