//! Attacks on a live `keyward serve` (in process, real sockets on loopback, bounded in count and
//! time), each answered by a bound: trial decryption does not amplify a stranger's bytes, a V3
//! client keeps its session past the old request cap and is told -32001 when it ends, silent
//! connections and unfinished QUIC handshakes hold no connection slot, and one connection's flood
//! of inits cannot evict another client's session.
//!
//! Latencies are printed, never asserted (this machine is shared); `keyward bench` measures.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::tls;
use keyward_core::Client;
use keyward_driver::{SecureSession, SessionOptions};
use keyward_http::{HttpClient, HttpTarget};
use keyward_tests::{Session, Target, runtime, start_with_config};
use serde_json::{Value, json};

const FAST_KDF: &str = "[kdf]\nm_cost_kib = 64\nt_cost = 1\np_cost = 1\n";

fn client_tls(data_dir: &Path) -> Arc<rustls::ClientConfig> {
    tls::client_config(&keyward::serve::tls_dir(data_dir)).unwrap()
}

async fn https(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> HttpClient {
    HttpClient::connect(addr, "127.0.0.1", HttpTarget::Tls(Arc::clone(tls))).await.unwrap()
}

/// An `encrypted_request_v3` envelope around `len` random bytes that no key authenticates.
fn garbage_envelope(len: usize, seed: u64) -> Vec<u8> {
    use base64::Engine as _;
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let body = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let nonce = hex::encode(&bytes[..12]);
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "method": "encrypted_request_v3",
        "params": {"nonce": nonce, "body_enc": body}}))
    .unwrap()
}

fn error_of(body: &[u8]) -> (i64, String) {
    let value: Value = serde_json::from_slice(body).unwrap();
    (value["error"]["code"].as_i64().unwrap_or(0), value["error"]["message"].as_str().unwrap_or("").to_owned())
}

/// p50 of calls of a cheap method made for `seconds` (at least 50 calls), in microseconds.
async fn p50_us(session: &mut Session, seconds: f64) -> f64 {
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < 50 || started.elapsed().as_secs_f64() < seconds {
        let start = Instant::now();
        session.ok("get_top_level_directory", json!({})).await;
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Attack 1: with 1,024 live sessions, strangers send envelopes that name no session: a small one
/// is tried against every key (one block each, then AES-GCM only where the block looks like JSON)
/// without the table lock and answered -32001; a large one is refused without any trial.
#[test]
fn trial_decryption_does_not_amplify_a_strangers_bytes() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("kw");
        let running =
            start_with_config(&data, &format!("{FAST_KDF}[sessions]\nper_connection = 2000\nper_principal = 2000\n"))
                .await;
        let (addr, tls) = (running.https.unwrap(), client_tls(&data));
        let target = Target::Https { addr, tls: Arc::clone(&tls) };
        let mut idle = https(addr, &tls).await;
        for i in 0..1021u32 {
            let mut seed = [7u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            assert_eq!(idle.post(Client::new(seed).init_request(), None).await.unwrap().status, 200);
        }
        let mut victim = Session::open(&target, 1, true).await;
        let mut v3 = Session::open(&target, 2, false).await;
        assert_eq!(running.core.session_count(), 1023);
        let unloaded = p50_us(&mut victim, 1.0).await;

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut attackers = Vec::new();
        for worker in 0..3u64 {
            let (tls, stop) = (Arc::clone(&tls), Arc::clone(&stop));
            let bodies = [garbage_envelope(60 * 1024, worker + 1), garbage_envelope(700 * 1024, worker + 7)];
            // KEYWARD_ATTACK_MIX=large (the original attack: 700 KiB only) or small (60 KiB only)
            // measures one kind alone; by default a quarter are large.
            let mix = std::env::var("KEYWARD_ATTACK_MIX").unwrap_or_default();
            attackers.push(tokio::spawn(async move {
                let mut http = https(addr, &tls).await;
                let (mut small, mut large) = (0u32, 0u32);
                // Bounded in count and time: until the victim has measured, at most 5,000 envelopes
                // or 20 s. A refused large body closes the connection: connect again.
                let started = Instant::now();
                for n in 1..=5_000u64 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) || started.elapsed() > Duration::from_secs(20) {
                        break;
                    }
                    let big = match mix.as_str() {
                        "large" => true,
                        "small" => false,
                        _ => n % 4 == 0,
                    };
                    let answer = match http.post(bodies[usize::from(big)].clone(), None).await {
                        Ok(answer) => answer,
                        Err(_) => {
                            http = https(addr, &tls).await;
                            continue;
                        }
                    };
                    let (code, message) = error_of(&answer.body);
                    if big {
                        assert_eq!(code, -32002, "{message}");
                        assert!(message.contains("must name its session"), "{message}");
                        large += 1;
                    } else {
                        assert_eq!(code, -32001, "{message}");
                        small += 1;
                    }
                }
                (small, large)
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let loaded = p50_us(&mut victim, 2.0).await;
        // An unmodified V3 client (no header) among 1,024 sessions is still found and answered.
        for _ in 0..20 {
            assert!(v3.ok("get_top_level_directory", json!({})).await.is_string());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut refused = (0, 0);
        for attacker in attackers {
            let (small, large) = attacker.await.unwrap();
            refused = (refused.0 + small, refused.1 + large);
        }
        eprintln!(
            "attack 1: victim p50 {unloaded:.0} us unloaded, {loaded:.0} us under 3 connections of garbage \
             ({:.2}x); {} 60 KiB envelopes answered -32001, {} 700 KiB refused untried",
            loaded / unloaded,
            refused.0,
            refused.1
        );
        assert!(refused.0 + refused.1 > 0);
        running.stop().await;
    });
}

/// Attack 2: an unmodified V3 client (no header, no re-key) passes the old cap of 8,192 requests
/// on one session; when its session does end, it is told -32001 and its next init works.
#[test]
fn a_v3_client_keeps_its_session_and_is_told_minus_32001_when_it_ends() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let server = keyward_tests::TestServer::start().await;
        let plain = server.plain();
        let options = SessionOptions { names_session: false, rekey_after: 0, reinit_when_gone: false };
        let mut v3 = SecureSession::open_with(plain.link().await, [3; 32], options).await.unwrap();
        let id = v3.session_id().unwrap();
        for n in 0..10_000u32 {
            if let Err(error) = v3.call("get_top_level_directory", json!({})).await {
                panic!("call {n} failed: {error}");
            }
        }
        assert!(server.running.core.drop_session(&id), "the session lived through 10,000 calls");
        let gone = v3.call("get_top_level_directory", json!({})).await.unwrap_err();
        assert_eq!(gone.code(), Some(-32001), "{gone}");
        v3.init().await.unwrap();
        assert!(v3.call("get_top_level_directory", json!({})).await.is_ok());
        // A client built to re-init does so by itself.
        let options = SessionOptions { reinit_when_gone: true, ..options };
        let mut again = SecureSession::open_with(plain.link().await, [4; 32], options).await.unwrap();
        server.running.core.drop_session(&again.session_id().unwrap());
        assert!(again.call("get_top_level_directory", json!({})).await.is_ok());
        // So does one whose session ends just when it is due to re-key.
        let options = SessionOptions { rekey_after: 2, ..options };
        let mut due = SecureSession::open_with(plain.link().await, [5; 32], options).await.unwrap();
        for _ in 0..2 {
            due.call("get_top_level_directory", json!({})).await.unwrap();
        }
        server.running.core.drop_session(&due.session_id().unwrap());
        assert!(due.call("get_top_level_directory", json!({})).await.is_ok());
        drop(dir);
        server.stop().await;
    });
}

/// A whole QUIC Initial (a ClientHello) sent from a socket that then stays silent: a handshake
/// that never completes. Keep the socket for as long as the stall should last.
async fn stalled_quic_initial(server: SocketAddr, tls: &rustls::ClientConfig) -> tokio::net::UdpSocket {
    let trap = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![keyward_quic::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let connecting = endpoint.connect_with(config, trap.local_addr().unwrap(), "localhost").unwrap();
    let mut datagram = vec![0u8; 65_536];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), trap.recv_from(&mut datagram)).await.unwrap().unwrap();
    drop(connecting);
    endpoint.close(quinn::VarInt::from_u32(0), b"");
    let stall = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stall.send_to(&datagram[..len], server).await.unwrap();
    stall
}

/// Attack 5: 300 TCP connections that never start TLS and 300 QUIC Initials that are never
/// followed up hold no connection slot: an honest client connects and completes a call over each
/// transport within a second.
#[test]
fn silent_connections_and_unfinished_handshakes_hold_no_slot() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("kw");
        let running = start_with_config(&data, FAST_KDF).await;
        let (https_addr, quic_addr, tls) = (running.https.unwrap(), running.quic.unwrap(), client_tls(&data));
        let mut silent = Vec::new();
        for _ in 0..300 {
            silent.push(tokio::net::TcpStream::connect(https_addr).await.unwrap());
        }
        let mut stalled = Vec::new();
        for _ in 0..300 {
            stalled.push(stalled_quic_initial(quic_addr, &tls).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for target in [
            Target::Https { addr: https_addr, tls: Arc::clone(&tls) },
            Target::Quic { addr: quic_addr, tls: Arc::clone(&tls) },
        ] {
            let start = Instant::now();
            let call = async {
                let mut s = Session::open(&target, 9, true).await;
                s.ok("list_wallets", json!({})).await
            };
            let answered = tokio::time::timeout(Duration::from_secs(1), call).await;
            eprintln!(
                "attack 5: {} connect + init + call in {:?} beside 300 silent TCP and 300 stalled QUIC",
                target.name(),
                start.elapsed()
            );
            assert_eq!(answered.unwrap_or_else(|_| panic!("{} not answered within 1 s", target.name())), json!([]));
        }
        drop((silent, stalled));
        running.stop().await;
    });
}

/// Attack 6: 1,100 plaintext inits over one connection no longer evict another client's session:
/// the connection keeps only its own newest few.
#[test]
fn one_connections_init_flood_evicts_only_its_own_sessions() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("kw");
        let running = start_with_config(&data, FAST_KDF).await;
        let (addr, tls) = (running.https.unwrap(), client_tls(&data));
        let mut victim = Session::open(&Target::Https { addr, tls: Arc::clone(&tls) }, 1, true).await;
        let mut flood = https(addr, &tls).await;
        for i in 0..1100u32 {
            let mut seed = [5u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            assert_eq!(flood.post(Client::new(seed).init_request(), None).await.unwrap().status, 200);
        }
        assert!(running.core.session_count() <= 1 + 8, "{} sessions", running.core.session_count());
        assert!(victim.ok("get_top_level_directory", json!({})).await.is_string(), "the victim's session survived");
        running.stop().await;
    });
}

/// A reader's client certificate, issued by the running server's CA and registered: a bundle
/// directory (ca.crt, client.crt, client.key) as `keyward clients add` writes it.
fn reader_bundle(running: &keyward::serve::Running, data: &Path, name: &str) -> Arc<rustls::ClientConfig> {
    use keyward::certs;
    let tls_dir = keyward::serve::tls_dir(data);
    let ca = keyward::ca::Ca::load(&certs::set_dir(&tls_dir).unwrap()).unwrap().expect("the set keeps its CA key");
    let pair = rcgen::KeyPair::generate().unwrap();
    let issued = ca.issue(name, &keyward::ca::ClientPublicKey::from_pem(&pair.public_key_pem()).unwrap()).unwrap();
    let record = keyward_core::ClientRecord {
        name: name.into(),
        role: keyward_core::Role::Reader,
        identity: keyward_core::Identity::Cert { spki_sha256: issued.spki_sha256 },
        created_unix_ms: 0,
        revoked_unix_ms: None,
    };
    running.core.add_client(record).unwrap();
    let bundle = data.join(format!("bundle-{name}"));
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("client.crt"), issued.certificate_pem).unwrap();
    std::fs::write(bundle.join("client.key"), pair.serialize_pem()).unwrap();
    let ca_file = tls_dir.join(certs::CA_CERT);
    tls::client_config_from(&ca_file, Some((&bundle.join("client.crt"), &bundle.join("client.key")))).unwrap()
}

/// A reader that floods inits over many connections keeps at most its own `per_principal`
/// sessions and evicts none of the owner's, even when its flood is larger than the whole table;
/// and its flood of wrong passwords does not make the owner's unlock wait.
#[test]
fn a_readers_floods_leave_the_owners_session_and_unlock_alone() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("kw");
        let config = format!("{FAST_KDF}[sessions]\nmax = 300\nper_principal = 64\n");
        let running = start_with_config(&data, &config).await;
        let addr = running.https.unwrap();
        let owner_tls = client_tls(&data);
        let mut owner = Session::open(&Target::Https { addr, tls: Arc::clone(&owner_tls) }, 1, true).await;
        owner
            .ok("create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"}))
            .await;
        let reader_tls = reader_bundle(&running, &data, "dashboard");
        let reader_target = Target::Https { addr, tls: Arc::clone(&reader_tls) };
        // Each flood session is used once, so "never-used first" does not protect the owner: only
        // the per-principal bound does.
        for i in 0..400u16 {
            let seed = u8::try_from(10 + i % 200).unwrap();
            let mut flood = Session::open(&reader_target, seed, true).await;
            flood.ok("list_wallets", json!({})).await;
        }
        assert!(running.core.session_count_of("dashboard") <= 64, "{}", running.core.session_count_of("dashboard"));
        assert!(
            owner.ok("get_top_level_directory", json!({})).await.is_string(),
            "the owner's session survived 400 used sessions of a reader"
        );
        // Wrong passwords from the reader: it is throttled, the owner is not.
        let mut reader = Session::open(&Target::Https { addr, tls: reader_tls }, 2, true).await;
        let mut throttled = false;
        for _ in 0..8 {
            let answer = reader.call("open_wallet", json!({"name": "w", "password": "guess"})).await;
            throttled |= answer.is_err_and(|e| e.to_string().contains("too many failed attempts"));
        }
        assert!(throttled, "the reader is throttled");
        assert!(owner.ok("open_wallet", json!({"name": "w", "password": "pw"})).await.is_string());
        running.stop().await;
    });
}
