//! The same scenario list as the HTTPS and QUIC suites, over the Unix socket, against `keyward serve`.
#![allow(clippy::unwrap_used)]

use keyward_tests::{TestServer, run_scenarios, runtime};

#[test]
fn scenario_list_over_unix_socket() {
    runtime().block_on(async {
        let server = TestServer::start().await;
        run_scenarios(&server.unix()).await;
        let socket = server.running.unix.clone().unwrap();
        server.stop().await;
        assert!(!socket.exists(), "the socket file is removed on shutdown");
    });
}
