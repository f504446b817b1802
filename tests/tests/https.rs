//! The owner server over HTTPS with mutual TLS (and plain HTTP on loopback), over real sockets.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::sync::Arc;
use std::time::Duration;

use keyward::{certs, tls};
use keyward_http::{HttpClient, HttpTarget};
use keyward_tests::{Session, TestServer, run_scenarios, runtime};
use serde_json::{Value, json};

#[test]
fn scenario_list_over_https_and_plain_http() {
    runtime().block_on(async {
        for plain in [false, true] {
            // A fresh server for each transport: the scenarios use fixed wallet names.
            let server = TestServer::start().await;
            let target = if plain { server.plain() } else { server.https() };
            run_scenarios(&target).await;
            server.stop().await;
        }
    });
}

/// A client whose TLS config is wrong must not get any answer: connect may succeed under TLS 1.3, but
/// the first request fails.
async fn refused(server: &TestServer, config: Arc<rustls::ClientConfig>) {
    let addr = server.running.https.unwrap();
    let outcome = async {
        let mut http = HttpClient::connect(addr, "127.0.0.1", HttpTarget::Tls(config)).await?;
        let init = br#"{"jsonrpc":"2.0","method":"init_secure_api","params":{"ecdh_pubkey":"02"},"id":1}"#;
        http.post(init.to_vec(), None).await
    };
    let result = tokio::time::timeout(Duration::from_secs(10), outcome).await.unwrap();
    assert!(result.is_err(), "a refused client got an answer: {result:?}");
}

#[test]
fn clients_without_a_valid_certificate_are_refused() {
    runtime().block_on(async {
        let server = TestServer::start().await;
        let dir = server.tls_dir();
        let ca = dir.join(certs::CA_CERT);
        // No client certificate.
        refused(&server, tls::client_config_from(&ca, None).unwrap()).await;
        // A certificate from another CA (made by `keyward certs init` elsewhere).
        let other = tempfile::tempdir().unwrap();
        certs::init(other.path(), false, false).unwrap();
        let foreign = tls::client_config_from(
            &ca,
            Some((&other.path().join(certs::CLIENT_CERT), &other.path().join(certs::CLIENT_KEY))),
        )
        .unwrap();
        refused(&server, foreign).await;
        // The server's own certificate (serverAuth only) used as a client certificate.
        let server_as_client =
            tls::client_config_from(&ca, Some((&dir.join(certs::SERVER_CERT), &dir.join(certs::SERVER_KEY)))).unwrap();
        refused(&server, server_as_client).await;
        // The right certificate works on the same server.
        let mut session = Session::open(&server.https(), 9, true).await;
        assert!(session.ok("get_top_level_directory", json!({})).await.is_string());
        server.stop().await;
    });
}

#[test]
fn plain_http_is_refused_on_non_loopback_addresses() {
    runtime().block_on(async {
        let flags = keyward::config::ServeFlags {
            data_dir: Some(tempfile::tempdir().unwrap().path().to_path_buf()),
            http_insecure: Some("0.0.0.0:0".into()),
            ..Default::default()
        };
        let error = keyward::config::resolve(keyward::config::FileConfig::default(), flags).unwrap_err();
        assert!(error.to_string().contains("loopback"), "{error}");
        let core = Arc::new(keyward_core::Server::new(
            keyward_testkit::test_config(),
            Box::new(keyward_core::MemoryStore::new()),
            [1; 32],
        ));
        let driver = keyward_driver::Driver::new(core, keyward_driver::system_clock(), Default::default());
        for addr in ["0.0.0.0:0", "[::]:0"] {
            let limits = keyward_http::HttpLimits::default();
            let bound = keyward_http::HttpServer::bind_insecure(addr.parse().unwrap(), driver.clone(), limits).await;
            assert!(matches!(bound, Err(keyward_http::HttpError::NotLoopback(_))), "{addr}");
        }
    });
}

async fn raw(server: &TestServer, path: &str, body: Vec<u8>, host: Option<&str>) -> keyward_http::HttpAnswer {
    let target = HttpTarget::Tls(tls::client_config(&server.tls_dir()).unwrap());
    let mut http = HttpClient::connect(server.running.https.unwrap(), "127.0.0.1", target).await.unwrap();
    http.post_to(path, body, None, host).await.unwrap()
}

fn error_code(body: &[u8]) -> i64 {
    let value: Value = serde_json::from_slice(body).unwrap();
    value["error"]["code"].as_i64().unwrap()
}

#[test]
fn http_rules_size_host_json_path() {
    runtime().block_on(async {
        let server = TestServer::start().await;
        let big = vec![b' '; 1024 * 1024 + 1];
        let answer = raw(&server, "/v3/owner", big, None).await;
        assert_eq!(answer.status, 413);
        assert_eq!(error_code(&answer.body), -32600);
        for host in ["evil.example", "127.0.0.1.evil.example:3420", "10.1.2.3"] {
            let answer = raw(&server, "/v3/owner", b"{}".to_vec(), Some(host)).await;
            assert_eq!(answer.status, 403, "{host}");
        }
        let answer = raw(&server, "/v3/owner", b"{\"jsonrpc\":".to_vec(), None).await;
        assert_eq!(answer.status, 200);
        assert_eq!(error_code(&answer.body), -32700);
        let answer = raw(&server, "/v2/owner", b"{}".to_vec(), None).await;
        assert_eq!(answer.status, 404);
        // The answer to init names the session; no CORS header is ever sent.
        let init = br#"{"jsonrpc":"2.0","method":"init_secure_api","params":{"ecdh_pubkey":"03b3c18c9a38783d105e238953b1638b021ba7456d87a5c085b3bdb75777b4c490"},"id":1}"#;
        let answer = raw(&server, "/v3/owner", init.to_vec(), Some("localhost:3420")).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.session.as_deref().map(str::len), Some(32));
        server.stop().await;
    });
}

#[test]
fn wallets_accounts_and_config_survive_a_restart() {
    runtime().block_on(async {
        let server = TestServer::start().await;
        let target = server.https();
        let mut s = Session::open(&target, 1, true).await;
        s.ok(
            "create_config",
            json!({"chain_type": "Testnet", "wallet_config": null, "logging_config": null, "tor_config": null}),
        )
        .await;
        s.ok("create_wallet", json!({"name": "keep", "mnemonic": null, "mnemonic_length": 16, "password": "p"})).await;
        let token = s.ok("open_wallet", json!({"name": "keep", "password": "p"})).await;
        s.ok("create_account_path", json!({"token": token, "label": "second"})).await;
        let words = s.ok("get_mnemonic", json!({"name": "keep", "password": "p"})).await;
        let dir = server.stop().await;
        let running = keyward_tests::start_in(dir.path()).await;
        let target = keyward_tests::https_target(&running, &dir.path().join("kw"));
        let mut s = Session::open(&target, 2, true).await;
        // The old token died with the old process; the wallet, its accounts and its mnemonic did not.
        keyward_tests::assert_rpc_error(
            s.call("accounts", json!({"token": token})).await,
            -32099,
            "InvalidKeychainMask",
        );
        assert_eq!(s.ok("get_mnemonic", json!({"name": "keep", "password": "p"})).await, words);
        let token = s.ok("open_wallet", json!({"name": "keep", "password": "p"})).await;
        let accounts = s.ok("accounts", json!({"token": token})).await;
        assert_eq!(accounts.as_array().unwrap().len(), 2);
        let stored = running.core.store().load_config("").unwrap().unwrap();
        assert!(String::from_utf8(stored).unwrap().contains("Testnet"));
        running.stop().await;
    });
}

#[test]
fn one_clients_open_wallet_does_not_stall_another_clients_calls() {
    // One I/O worker thread: if a KDF ran on it, every other call would wait behind it.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("kw");
        // The default Argon2id parameters (64 MiB, t=3, p=4): seconds in a debug build.
        let running = keyward_tests::start_with_config(&data, "").await;
        let target = keyward_tests::https_target(&running, &data);
        let mut a = Session::open(&target, 1, true).await;
        let mut b = Session::open(&target, 2, true).await;
        a.ok("create_wallet", json!({"name": "slow", "mnemonic": null, "mnemonic_length": 16, "password": "p"})).await;
        let opening = tokio::spawn(async move { a.ok("open_wallet", json!({"name": "slow", "password": "p"})).await });
        // B calls for as long as A's open_wallet (Argon2id) runs. Had the KDF blocked the only I/O
        // thread, B's first call would wait for it and B would complete at most one call meanwhile.
        let mut during = 0;
        while !opening.is_finished() {
            assert!(b.ok("get_top_level_directory", json!({})).await.is_string());
            during += 1;
        }
        assert!(during >= 10, "only {during} of B's calls completed while A's open_wallet ran");
        let token = opening.await.unwrap();
        assert_eq!(token.as_str().map(str::len), Some(64));
        running.stop().await;
    });
}

#[test]
fn brute_force_is_slowed_and_the_backoff_survives_a_restart() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = "[kdf]\nm_cost_kib = 64\nt_cost = 1\np_cost = 1\n[throttle]\nfree_attempts = 3\nbase_ms = 1500\nmax_ms = 60000\n";
        let data = dir.path().join("kw");
        let running = keyward_tests::start_with_config(&data, config).await;
        let target = keyward_tests::https_target(&running, &data);
        let mut s = Session::open(&target, 1, true).await;
        s.ok("create_wallet", json!({"name": "vault", "mnemonic": null, "mnemonic_length": 16, "password": "right"})).await;
        // A burst of 30 guesses: only free_attempts + 1 passwords are ever tried; the rest are refused
        // before any KDF runs, until the documented wait (1.5 s, doubling per failure) is over.
        let (mut tried, mut refused) = (0, 0);
        for i in 0..30 {
            match s.call("open_wallet", json!({"name": "vault", "password": format!("guess-{i}")})).await {
                Err(keyward_core::ClientError::Rpc { message, .. }) if message.contains("Error opening wallet") => tried += 1,
                Err(keyward_core::ClientError::Rpc { message, .. }) if message.contains("too many failed attempts") => {
                    refused += 1
                }
                other => panic!("unexpected answer to a wrong password: {other:?}"),
            }
        }
        assert_eq!((tried, refused), (4, 26));
        // Even the right password waits its turn.
        keyward_tests::assert_rpc_error(
            s.call("open_wallet", json!({"name": "vault", "password": "right"})).await,
            -32099,
            "too many failed attempts",
        );
        // A restart does not reset the count: the wait starts again from the restart.
        running.stop().await;
        let running = keyward_tests::start_with_config(&data, config).await;
        let target = keyward_tests::https_target(&running, &data);
        let mut s = Session::open(&target, 2, true).await;
        keyward_tests::assert_rpc_error(
            s.call("open_wallet", json!({"name": "vault", "password": "right"})).await,
            -32099,
            "too many failed attempts",
        );
        // After the wait, the right password works and clears the count.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let token = s.ok("open_wallet", json!({"name": "vault", "password": "right"})).await;
        assert_eq!(token.as_str().map(str::len), Some(64));
        assert_eq!(running.core.store().load_failures("default", &keyward_core::WalletKey { dir: String::new(), name: "vault".into() }).unwrap(), 0);
        running.stop().await;
    });
}
