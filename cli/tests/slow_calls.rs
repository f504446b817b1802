//! Attack 3: KDF work is bounded. 64 connections each call `open_wallet` at once on a live
//! `keyward serve` (a child process, the default Argon2id: 64 MiB a call): at most the slow-call
//! pool's threads run a KDF at a time, so the server's peak resident memory stays within
//! `threads × m_cost + 64 MiB`. (A batch of many `open_wallet` runs one of them: the scenario
//! `a_batch_runs_one_slow_call_and_echoes_ids_like_the_envelope`.)
#![expect(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "a test fails by panicking, with the value in the message; a test reports what it measured"
)]

mod common;

use std::process::Stdio;
use std::sync::Arc;

use keyward_driver::{SecureSession, SessionOptions};
use keyward_http::{HttpClient, HttpTarget};
use serde_json::json;

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn concurrent_kdfs_are_bounded_by_the_pool() {
    let home = tempfile::tempdir().unwrap();
    let ready = home.path().join("ready.json");
    // KEYWARD_BEFORE_BIN runs the same attack against another build (to measure a before figure).
    let binary = std::env::var_os("KEYWARD_BEFORE_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_keyward").into(), std::path::PathBuf::from);
    let mut command = std::process::Command::new(binary);
    command.env("HOME", home.path()).env_remove("KEYWARD_DATA_DIR").env("RUST_LOG", "warn").stderr(Stdio::inherit());
    // 65 connections of one client: above the default [connections] per_principal (32), which is
    // not what this test is about.
    let config = home.path().join("keyward.toml");
    std::fs::write(&config, "[connections]\nper_principal = 128\n").unwrap();
    command.args(["serve", "--https", "127.0.0.1:0", "--quic", "off", "--config"]).arg(&config);
    command.arg("--ready-file").arg(&ready);
    let (serve, info) = common::serve(command, &ready);
    let addr: std::net::SocketAddr = info["https"].as_str().unwrap().parse().unwrap();
    let tls = keyward::tls::client_config(&home.path().join(".keyward/tls")).unwrap();
    let pid = serve.0.id();
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get) as u64;

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let refused = runtime.block_on(async {
        let connect = |seed: u8| {
            let tls = Arc::clone(&tls);
            async move {
                let link = HttpClient::connect(addr, "127.0.0.1", HttpTarget::Tls(tls)).await.unwrap();
                let options = SessionOptions { rekey_after: 0, reinit_when_gone: false, ..SessionOptions::default() };
                SecureSession::open_with(link, [seed; 32], options).await.unwrap()
            }
        };
        let mut first = connect(200).await;
        first
            .call("create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "p"}))
            .await
            .unwrap();
        let mut calls = tokio::task::JoinSet::new();
        for seed in 0..64u8 {
            let session = connect(seed);
            calls.spawn(async move {
                let mut session = session.await;
                // Unknown names: each still runs the full KDF (a missing wallet must cost the same).
                session.call("open_wallet", json!({"name": format!("nobody{seed}"), "password": "x"})).await
            });
        }
        let mut refused = 0;
        for result in calls.join_all().await {
            let error = result.unwrap_err();
            if error.code() == Some(-32099) && error.to_string().contains("Busy") {
                refused += 1;
            } else {
                assert!(error.to_string().contains("Error opening wallet"), "{error}");
            }
        }
        refused
    });
    let peak = status_kib(pid, "VmHWM:");
    let bound = (threads * 64 + 64) * 1024;
    eprintln!(
        "64 concurrent open_wallet: peak RSS {} MiB (bound {} MiB with {threads} slow-call threads), {refused} answered Busy",
        peak / 1024,
        bound / 1024
    );
    assert!(peak <= bound, "peak RSS {peak} KiB is above {bound} KiB");
}
