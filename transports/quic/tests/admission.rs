//! Admission over QUIC: a client certificate is required whatever the server's TLS configuration
//! says, and an embedder's `RegistryVerifier` refuses an unregistered certificate at the handshake.

mod support;

use std::sync::Arc;

use keyward_core::Client;
use keyward_quic::{QuicClient, QuicError, QuicLimits, codes};
use quinn::ConnectionError;
use support::{Ca, Fixture, Usage, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_config_without_client_auth_still_requires_a_certificate() {
    let ca = Ca::new("Keyward test CA");
    let identity = ca.leaf("keyward server", &["localhost", "127.0.0.1"], Usage::Server, false);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(ca.roots(), support::provider())
        .allow_unauthenticated()
        .build()
        .expect("verifier");
    let tls = rustls::ServerConfig::builder_with_provider(support::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .expect("server certificate");
    let fx = Fixture::start_with(ca, identity, Arc::new(tls), QuicLimits::default()).await;
    let outcome = within(10, async {
        let client = QuicClient::connect(fx.addr, "localhost", Arc::new(support::client_config(&fx.ca, None))).await?;
        client.call(&Client::new([9; 32]).init_request()).await
    })
    .await;
    match outcome {
        Err(QuicError::Connection(ConnectionError::ApplicationClosed(close))) => {
            assert_eq!(close.error_code.into_inner(), codes::CLIENT_CERT_REQUIRED);
        }
        other => panic!("expected a close with CLIENT_CERT_REQUIRED, got {other:?}"),
    }
    assert_eq!(fx.core.session_count(), 0);
    fx.stop().await;
}

/// An embedder that wraps its chain verifier in `RegistryVerifier` gets the registry check at the
/// handshake: a CA-signed certificate no active client has fails it (audited once), a registered
/// one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_verifier_refuses_an_unregistered_certificate_at_the_handshake() {
    let ca = Ca::new("Keyward test CA");
    let identity = ca.leaf("keyward server", &["localhost", "127.0.0.1"], Usage::Server, false);
    let core = support::core();
    let driver = support::driver(Arc::clone(&core));
    let chain = rustls::server::WebPkiClientVerifier::builder_with_provider(ca.roots(), support::provider())
        .build()
        .expect("verifier");
    let tls = rustls::ServerConfig::builder_with_provider(support::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_client_cert_verifier(keyward_quic::RegistryVerifier::new(chain, &driver))
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .expect("server certificate");
    let server = keyward_quic::QuicServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        Arc::new(tls),
        driver,
        QuicLimits::default(),
    )
    .expect("bind");
    let addr = server.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let stranger = ca.leaf("stranger", &[], Usage::Client, false);
    let refused = within(10, async {
        let client =
            QuicClient::connect(addr, "localhost", Arc::new(support::client_config(&ca, Some(&stranger)))).await?;
        client.call(&Client::new([9; 32]).init_request()).await
    })
    .await;
    // Refused by the TLS layer (a crypto alert), not closed after the handshake by the driver.
    match refused {
        Err(QuicError::Connection(ConnectionError::ConnectionClosed(close))) => {
            assert_eq!(close.reason.as_ref(), b"invalid peer certificate: ApplicationVerificationFailure");
        }
        other => panic!("expected a refused handshake, got {other:?}"),
    }
    assert_eq!(core.session_count(), 0);
    assert!(core.audit_pending() >= 1, "the refused handshake is audited");

    let member = ca.leaf("member", &[], Usage::Client, false);
    support::register(&core, &member, keyward_core::Role::Owner);
    let client =
        within(10, QuicClient::connect(addr, "localhost", Arc::new(support::client_config(&ca, Some(&member)))))
            .await
            .expect("a registered client connects");
    within(10, client.call(&Client::new([8; 32]).init_request())).await.expect("and is answered");
    assert_eq!(core.session_count(), 1);
    let _ = stop.send(());
    let _ = task.await;
}
