//! The same scenario list as the HTTPS and QUIC suites, over the Unix socket, against `keyward serve`.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

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
