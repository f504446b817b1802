//! The TLS side of `keyward serve` over real sockets: client certificates must list the clientAuth
//! usage explicitly (HTTPS and QUIC), and `keyward certs rotate` reaches a running server.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::{certs, tls};
use keyward_testkit::pki::{Ca, Identity, Usage};
use keyward_tests::{Session, Target, TestServer, runtime};
use serde_json::json;
use tokio::io::AsyncReadExt;

/// Writes `identity`'s certificate and key next to each other in `dir`; returns their paths.
fn write_identity(dir: &Path, name: &str, identity: &Identity) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    certs::write_file(&cert, identity.cert_pem().as_bytes(), 0o644).unwrap();
    certs::write_file(&key, identity.key_pem().as_bytes(), 0o600).unwrap();
    (cert, key)
}

/// Over TCP + TLS 1.3, the server's answer to a client certificate it refuses: the alert the client
/// reads after its handshake (TLS 1.3 clients finish theirs before the server has checked them). The
/// client sends nothing more, so the server closes with nothing unread and the alert arrives intact.
async fn https_refusal(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> String {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls =
            tokio_rustls::TlsConnector::from(config).connect(name, stream).await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        match tls.read_to_end(&mut answer).await {
            Ok(_) => Err(format!("the server closed without an alert: {}", String::from_utf8_lossy(&answer))),
            Err(error) => Ok(error.to_string()),
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(refusal)) | Ok(Err(refusal)) => refusal,
        Err(_) => "no refusal within 5 s (the handshake was accepted)".to_owned(),
    }
}

#[test]
fn client_certificates_without_the_client_auth_usage_are_refused_over_https_and_quic() {
    runtime().block_on(async {
        // A set in the flat layout of older versions, from a CA whose key the test holds.
        let root = tempfile::tempdir().unwrap();
        let tls_dir = keyward::serve::tls_dir(&root.path().join("kw"));
        certs::private_dir(&tls_dir).unwrap();
        let ca = Ca::new("Keyward test CA");
        certs::write_file(&tls_dir.join(certs::CA_CERT), ca.cert_pem().as_bytes(), 0o644).unwrap();
        let server_identity = ca.leaf("keyward server", &["localhost", "127.0.0.1"], Usage::Server, false);
        write_identity(&tls_dir, "server", &server_identity);
        write_identity(&tls_dir, "client", &ca.leaf("keyward client", &[], Usage::Client, false));
        let running = keyward_tests::start_in(root.path()).await;
        let (https, quic) = (running.https.unwrap(), running.quic.unwrap());
        let ca_file = tls_dir.join(certs::CA_CERT);

        // Signed by the server's own CA, valid, but without any extended key usage extension.
        let (cert, key) = write_identity(root.path(), "no-eku", &ca.leaf("no usage", &[], Usage::NoEku, false));
        let no_eku = tls::client_config_from(&ca_file, Some((&cert, &key))).unwrap();
        let refusal = https_refusal(https, Arc::clone(&no_eku)).await;
        assert!(refusal.contains("UnsupportedCertificate"), "HTTPS: expected alert 43, got {refusal}");
        let refusal = Target::Quic { addr: quic, tls: Arc::clone(&no_eku) }.try_call().await.unwrap_err();
        assert!(refusal.contains("handshake failed: error 43"), "QUIC: expected alert 43, got {refusal}");
        let refusal = Target::Https { addr: https, tls: no_eku }.try_call().await;
        assert!(refusal.is_err(), "HTTPS: a certificate without EKU got an answer: {refusal:?}");

        // The same CA's certificate with clientAuth works over both.
        // (registered as a client: an unregistered certificate of the right CA is refused too)
        let front_end = ca.leaf("front end", &[], Usage::Client, false);
        let spki_sha256 = keyward_driver::spki_sha256(&front_end.chain[0]).unwrap();
        let record = keyward_core::ClientRecord {
            name: "front-end".into(),
            role: keyward_core::Role::Owner,
            identity: keyward_core::Identity::Cert { spki_sha256 },
            created_unix_ms: 0,
            revoked_unix_ms: None,
        };
        running.core.add_client(record).unwrap();
        let (cert, key) = write_identity(root.path(), "with-eku", &front_end);
        let good = tls::client_config_from(&ca_file, Some((&cert, &key))).unwrap();
        for target in [Target::Https { addr: https, tls: Arc::clone(&good) }, Target::Quic { addr: quic, tls: good }] {
            let answer = target.try_call().await;
            assert!(answer.as_ref().is_ok_and(|v| v.is_string()), "{}: {answer:?}", target.name());
        }
        running.stop().await;
    });
}

/// Copies the client side of the set in use (ca.crt, client.crt, client.key) to `to`.
fn copy_client_side(tls_dir: &Path, to: &Path) {
    let set = certs::set_dir(tls_dir).unwrap();
    for file in [certs::CA_CERT, certs::CLIENT_CERT, certs::CLIENT_KEY] {
        std::fs::copy(set.join(file), to.join(file)).unwrap();
    }
}

fn client_of(ca_dir: &Path, cert_dir: &Path) -> Arc<rustls::ClientConfig> {
    let cert = (cert_dir.join(certs::CLIENT_CERT), cert_dir.join(certs::CLIENT_KEY));
    tls::client_config_from(&ca_dir.join(certs::CA_CERT), Some((&cert.0, &cert.1))).unwrap()
}

#[test]
fn a_rotation_reaches_the_running_server_and_closes_the_old_keys_connections() {
    runtime().block_on(async {
        let server = TestServer::start().await;
        let tls_dir = server.tls_dir();
        let (https, quic) = (server.running.https.unwrap(), server.running.quic.unwrap());
        let old = tempfile::tempdir().unwrap();
        copy_client_side(&tls_dir, old.path());
        // The old set's clients keep their configs (and whatever tickets they were given).
        let (old_https, old_quic) = (server.https(), server.quic());
        let mut kept_https = Session::open(&old_https, 1, true).await;
        let mut kept_quic = Session::open(&old_quic, 2, true).await;
        assert!(kept_https.ok("get_top_level_directory", json!({})).await.is_string());
        assert!(kept_quic.ok("get_top_level_directory", json!({})).await.is_string());
        for target in [&old_https, &old_quic] {
            assert!(target.try_call().await.is_ok(), "{} with the old set before the rotation", target.name());
        }

        let rotated = Instant::now();
        let set = certs::rotate(&tls_dir, false).unwrap();
        assert_eq!(certs::set_dir(&tls_dir).unwrap(), set);
        let (new_https, new_quic) = (server.https(), server.quic());
        // Within 2 s: new clients with the new set are answered and new clients with the old set are not.
        loop {
            let mut outcomes = Vec::new();
            for target in [&new_https, &new_quic] {
                outcomes.push(target.try_call().await.is_ok());
            }
            for target in [&old_https, &old_quic] {
                outcomes.push(target.try_call().await.is_err());
            }
            if outcomes.iter().all(|ok| *ok) {
                break;
            }
            assert!(
                rotated.elapsed() < Duration::from_secs(2),
                "2 s after the rotation, [new https, new quic answered; old https, old quic refused] = {outcomes:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let new = tempfile::tempdir().unwrap();
        copy_client_side(&tls_dir, new.path());
        // The server's verifier changed: the old client certificate, offered to the new server
        // certificate (trusted), is refused; and the server's certificate changed: a client that
        // trusts only the old CA refuses the server even with the new client certificate.
        for (what, config) in [
            ("old client certificate", client_of(new.path(), old.path())),
            ("old CA", client_of(old.path(), new.path())),
        ] {
            for target in
                [Target::Https { addr: https, tls: Arc::clone(&config) }, Target::Quic { addr: quic, tls: config }]
            {
                let refused = target.try_call().await;
                assert!(refused.is_err(), "{what} over {}: {refused:?}", target.name());
            }
        }
        // Connections opened before the rotation with the old client key are closed: `default`
        // moved to the new key, and a connection is its key's principal, like a revoked client's.
        assert!(kept_https.inner_call("get_top_level_directory", json!({})).await.is_err(), "old HTTPS connection");
        assert!(kept_quic.inner_call("get_top_level_directory", json!({})).await.is_err(), "old QUIC connection");
        server.stop().await;
    });
}

/// A certificate the running server's CA issued to `name`, registered as no client: the TLS
/// configuration that presents it.
fn unregistered_client(data_dir: &Path, name: &str) -> Arc<rustls::ClientConfig> {
    let tls_dir = keyward::serve::tls_dir(data_dir);
    let ca = keyward::ca::Ca::load(&certs::set_dir(&tls_dir).unwrap()).unwrap().expect("the set keeps its CA key");
    let pair = rcgen::KeyPair::generate().unwrap();
    let issued = ca.issue(name, &keyward::ca::ClientPublicKey::from_pem(&pair.public_key_pem()).unwrap()).unwrap();
    let dir = data_dir.join(format!("unregistered-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("client.crt"), issued.certificate_pem).unwrap();
    std::fs::write(dir.join("client.key"), pair.serialize_pem()).unwrap();
    client_of(&tls_dir, &dir)
}

/// What a client with `target`'s certificate meets: the link error of its connection or of its
/// `init_secure_api` (with TLS 1.3 the server's refusal arrives after the client's handshake).
async fn link_refusal(target: &Target) -> keyward_driver::LinkError {
    use keyward_driver::{SecureSession, SessionError};
    let attempt = async {
        let link: Box<dyn keyward_driver::Link> = match target {
            Target::Https { addr, tls } => {
                let target = keyward_http::HttpTarget::Tls(Arc::clone(tls));
                match keyward_http::HttpClient::connect(*addr, "127.0.0.1", target).await {
                    Ok(client) => Box::new(client),
                    Err(keyward_http::ClientError::Refused(refusal)) => return refusal,
                    Err(other) => panic!("https: {other}"),
                }
            }
            Target::Quic { addr, tls } => {
                match keyward_quic::QuicClient::connect(*addr, "127.0.0.1", Arc::clone(tls)).await {
                    Ok(client) => Box::new(client),
                    Err(error) => return error.link_error(),
                }
            }
            _ => unreachable!("TLS transports only"),
        };
        match SecureSession::open(link).await {
            Err(SessionError::Link(error)) => error,
            other => panic!("{}: expected a link error, got {:?}", target.name(), other.map(|_| ())),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), attempt).await.expect("a refusal within 10 s")
}

/// The server says why it refuses a client certificate of its CA: a revoked client's handshake
/// ends with the TLS alert `certificate_revoked`, an unknown key's with `access_denied`; the HTTPS
/// and QUIC clients report them as `LinkErrorKind::Revoked` and `LinkErrorKind::Unknown`, and the
/// refused handshakes are still audited.
#[test]
fn refused_clients_learn_whether_they_were_revoked_or_are_unknown() {
    use keyward_driver::{LinkError, LinkErrorKind};
    runtime().block_on(async {
        let server = TestServer::start().await;
        let data_dir = server.data_dir();
        let (https, quic) = (server.running.https.unwrap(), server.running.quic.unwrap());
        let phone = keyward_tests::registered_client(&server.running, &data_dir, "phone", keyward_core::Role::Reader);
        let stranger = unregistered_client(&data_dir, "stranger");
        let targets = |tls: &Arc<rustls::ClientConfig>| {
            [Target::Https { addr: https, tls: Arc::clone(tls) }, Target::Quic { addr: quic, tls: Arc::clone(tls) }]
        };
        for target in targets(&phone) {
            assert!(target.try_call().await.is_ok(), "{}: the registered client is answered", target.name());
        }
        for target in targets(&stranger) {
            let refusal = link_refusal(&target).await;
            assert_eq!(refusal.kind(), LinkErrorKind::Unknown, "{}: {refusal}", target.name());
            assert_eq!(refusal.to_string(), LinkError::UNKNOWN_CLIENT);
            assert_eq!(refusal.to_string(), "the server does not know this client's certificate");
        }
        let mut owner = Session::open(&server.https(), 1, true).await;
        owner.ok("revoke_client", json!({"name": "phone"})).await;
        for target in targets(&phone) {
            let refusal = link_refusal(&target).await;
            assert_eq!(refusal.kind(), LinkErrorKind::Revoked, "{}: {refusal}", target.name());
            assert_eq!(refusal.to_string(), "this client was revoked");
        }
        // The refusals are in the audit log: the revoked client by name, the stranger by key.
        // (Queued audit events reach the store within a second or so.)
        let started = Instant::now();
        loop {
            let log = owner.ok("audit_log", json!({"after": 0, "limit": 1000})).await.to_string();
            if log.contains("revoked client") && log.contains("unknown client") {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the refused handshakes are not audited: {log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.stop().await;
    });
}
