//! Issue 23, item 8b, against a live `keyward serve` (in process, fjall on disk, HTTPS on
//! loopback): one client making 60 KiB configs in 300 new directories gets 64 of them; past the
//! bound `create_config` and `create_wallet` in a new directory are refused and change nothing,
//! while a directory that holds something already, and the data root, still take writes.
#![expect(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "a test fails by panicking, with the value in the message; a test reports what it measured"
)]

use std::time::Instant;

use keyward_tests::{Session, Target, assert_rpc_error, runtime, start_with_config};
use serde_json::{Value, json};

const FAST_KDF: &str = "[kdf]\nm_cost_kib = 64\nt_cost = 1\np_cost = 1\n";
const REFUSED: &str = "ArgumentError: the store holds wallets or configs in 64 directories, the most it keeps";

fn config(size: usize) -> Value {
    json!({"chain_type": "Mainnet", "wallet_config": {"padding": "x".repeat(size)}, "logging_config": null,
        "tor_config": null})
}

#[test]
fn configs_and_directories_are_bounded_per_store() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("kw");
        let running = start_with_config(&data, FAST_KDF).await;
        let tls = keyward::tls::client_config(&keyward::serve::tls_dir(&data)).unwrap();
        let mut owner = Session::open(&Target::Https { addr: running.https.unwrap(), tls }, 1, true).await;
        let started = Instant::now();
        let (mut made, mut refused) = (0, 0);
        for n in 0..300 {
            owner.ok("set_top_level_directory", json!({"dir": format!("d{n}")})).await;
            match owner.call("create_config", config(60 * 1024)).await {
                Ok(_) => made += 1,
                answer => {
                    assert_rpc_error(answer, -32099, REFUSED);
                    refused += 1;
                }
            }
        }
        eprintln!(
            "300 create_config of 60 KiB in new directories: {made} made, {refused} refused in {:?}",
            started.elapsed()
        );
        assert_eq!((made, refused), (64, 236));
        let store = running.core.store();
        assert_eq!(store.directories().unwrap().len(), 64);

        // Past the bound: a wallet in a new directory is refused too, and nothing was stored.
        let create = json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"});
        owner.ok("set_top_level_directory", json!({"dir": "d299"})).await;
        assert_rpc_error(owner.call("create_wallet", create.clone()).await, -32099, REFUSED);
        assert_eq!(store.load_config("d299").unwrap(), None);
        assert!(store.list_wallets("d299").unwrap().is_empty());
        // A directory that holds something, and the root, still take configs and wallets.
        owner.ok("set_top_level_directory", json!({"dir": "d7"})).await;
        owner.ok("create_config", config(10)).await;
        owner.ok("create_wallet", create.clone()).await;
        owner.ok("set_top_level_directory", json!({"dir": ""})).await;
        owner.ok("create_config", config(10)).await;
        owner.ok("create_wallet", create).await;
        assert_eq!(store.directories().unwrap().len(), 64);
        running.stop().await;
    });
}
