//! The same scenario list as the HTTPS suite, over QUIC with mutual TLS, against `keyward serve`.

use keyward_tests::{TestServer, run_scenarios, runtime};

#[test]
fn scenario_list_over_quic() {
    runtime().block_on(async {
        let server = TestServer::start().await;
        run_scenarios(&server.quic()).await;
        server.stop().await;
    });
}
