//! The same scenario list as the HTTPS and QUIC suites, over the Unix socket, against `keyward serve`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use keyward_tests::{TestServer, scenarios};

#[test]
fn scenario_list_over_unix_socket() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let server = TestServer::start().await;
        let target = server.unix();
        for (name, scenario) in scenarios() {
            eprintln!("scenario {name} over unix");
            tokio::time::timeout(Duration::from_secs(60), scenario(target.clone()))
                .await
                .unwrap_or_else(|_| panic!("{name} over unix timed out"));
        }
        let socket = target_path(&target);
        server.stop().await;
        assert!(!socket.exists(), "the socket file is removed on shutdown");
    });
}

fn target_path(target: &keyward_tests::Target) -> std::path::PathBuf {
    match target {
        keyward_tests::Target::Unix { path } => path.clone(),
        _ => unreachable!("a Unix target"),
    }
}
