//! The same scenario list as the HTTPS suite, over QUIC with mutual TLS, against `keyward serve`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use keyward_tests::{TestServer, scenarios};

#[test]
fn scenario_list_over_quic() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let server = TestServer::start().await;
        let target = server.quic();
        for (name, scenario) in scenarios() {
            eprintln!("scenario {name} over quic");
            tokio::time::timeout(Duration::from_secs(60), scenario(target.clone()))
                .await
                .unwrap_or_else(|_| panic!("{name} over quic timed out"));
        }
        server.stop().await;
    });
}
