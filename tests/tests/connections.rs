//! Connection bounds and certificate rotation against a live `keyward serve` (in process, real
//! rustls and quinn on loopback, certificates issued by the server's own CA): one reader cannot
//! hold the connections the owner needs (issue 23, item 3), and a rotation ends every connection
//! whose client certificate the new CA does not verify, whoever's it is (item 5).
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::{ca, certs, tls};
use keyward_core::{ClientRecord, Identity, Role};
use keyward_driver::{Link, SecureSession};
use keyward_tests::{Session, Target, TestServer, runtime};
use serde_json::json;

/// Issues a certificate for `name` from the CA of the set in use in `tls_dir`, registers it with
/// `role`, and returns a client config presenting it (files written under `dir`).
fn register(server: &TestServer, dir: &Path, name: &str, role: Role) -> Arc<rustls::ClientConfig> {
    let set = certs::set_dir(&server.tls_dir()).unwrap();
    let authority = ca::Ca::load(&set).unwrap().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let issued = authority.issue(name, &ca::ClientPublicKey::from_pem(&key.public_key_pem()).unwrap()).unwrap();
    let record = ClientRecord {
        name: name.into(),
        role,
        identity: Identity::Cert { spki_sha256: issued.spki_sha256 },
        created_unix_ms: 0,
        revoked_unix_ms: None,
    };
    server.running.core.add_client(record).unwrap();
    let (cert, key_file) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    certs::write_file(&cert, issued.certificate_pem.as_bytes(), 0o644).unwrap();
    certs::write_file(&key_file, key.serialize_pem().as_bytes(), 0o600).unwrap();
    tls::client_config_from(&set.join(certs::CA_CERT), Some((&cert, &key_file))).unwrap()
}

/// Opens up to `attempts` connections to `target`, each with a session (so the server has admitted
/// it); returns the ones it kept open.
async fn hold(target: &Target, attempts: usize) -> Vec<SecureSession<Box<dyn Link>>> {
    let mut held = Vec::new();
    for _ in 0..attempts {
        let opened = async {
            let link = target.try_link().await.ok()?;
            SecureSession::open(link).await.ok()
        };
        if let Ok(Some(session)) = tokio::time::timeout(Duration::from_secs(5), opened).await {
            held.push(session);
        }
    }
    held
}

fn target_like(template: &Target, tls: &Arc<rustls::ClientConfig>) -> Target {
    match template {
        Target::Https { addr, .. } => Target::Https { addr: *addr, tls: Arc::clone(tls) },
        Target::Quic { addr, .. } => Target::Quic { addr: *addr, tls: Arc::clone(tls) },
        other => other.clone(),
    }
}

/// A reader opens as many keep-alive connections as it can (more than a listener's 256 slots),
/// over HTTPS and QUIC: it keeps at most `[connections] per_principal` (32) on each, still served,
/// and the owner's new call is answered at once.
#[test]
fn one_reader_holding_all_it_can_leaves_the_owner_served_over_https_and_quic() {
    runtime().block_on(async {
        let server = TestServer::start().await;
        let files = tempfile::tempdir().unwrap();
        let reader = register(&server, files.path(), "dashboard", Role::Reader);
        for owner in [server.https(), server.quic()] {
            let target = target_like(&owner, &reader);
            let mut held = hold(&target, 300).await;
            let answer = owner.try_call().await;
            eprintln!("{}: the reader holds {} of 300 tried; the owner's call: {answer:?}", owner.name(), held.len());
            assert!(answer.is_ok(), "{}: the owner's new call was refused: {answer:?}", owner.name());
            assert!(held.len() <= 32, "{}: a reader kept {} connections", owner.name(), held.len());
            assert!(!held.is_empty(), "{}: the reader got no connection at all", owner.name());
            // The reader's connections are still served.
            for session in held.iter_mut().take(4) {
                assert!(session.call("get_top_level_directory", json!({})).await.is_ok(), "{}", owner.name());
            }
        }
        server.stop().await;
    });
}

/// Calls on `session` until one fails (the server ended its connection), at most `limit` long;
/// returns how long that took.
async fn until_ended(session: &mut Session, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if session.inner_call("get_top_level_directory", json!({})).await.is_err() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Two registered clients (`default` and `phone`, a reader added as `keyward clients add` does)
/// are connected over HTTPS and QUIC with certificates of the CA in use; after `keyward certs
/// rotate`, all four connections end within 2 s and a new connection with `phone`'s old-CA
/// certificate is refused.
#[test]
fn a_rotation_ends_every_connection_the_new_ca_does_not_verify() {
    runtime().block_on(async {
        let server = TestServer::start().await;
        let files = tempfile::tempdir().unwrap();
        let phone = register(&server, files.path(), "phone", Role::Reader);
        let (https, quic) = (server.https(), server.quic());
        let targets = [https.clone(), quic.clone(), target_like(&https, &phone), target_like(&quic, &phone)];
        let mut sessions = Vec::new();
        for (seed, target) in (1u8..).zip(&targets) {
            let mut session = Session::open(target, seed, true).await;
            assert!(session.ok("get_top_level_directory", json!({})).await.is_string());
            sessions.push(session);
        }
        let rotated = Instant::now();
        certs::rotate(&server.tls_dir(), true).unwrap();
        let names = ["default https", "default quic", "phone https", "phone quic"];
        for (name, session) in names.iter().zip(&mut sessions) {
            let ended = until_ended(session, Duration::from_secs(2).saturating_sub(rotated.elapsed())).await;
            assert!(ended.is_some(), "{name}: still served 2 s after the rotation");
            eprintln!("{name}: ended {:?} after the rotation", rotated.elapsed());
        }
        for target in [target_like(&https, &phone), target_like(&quic, &phone)] {
            let refused = target.try_call().await;
            assert!(refused.is_err(), "phone's old-CA certificate over {}: {refused:?}", target.name());
        }
        server.stop().await;
    });
}
