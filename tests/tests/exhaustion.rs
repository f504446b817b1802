//! Resource exhaustion: floods of `init_secure_api`, of idle connections, of slow bodies and of
//! oversized messages (bounded in count and time, loopback only) leave the server answering a
//! well-behaved client, with its session table and memory bounded.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::sync::Arc;
use std::time::Duration;

use keyward::tls;
use keyward_http::{HttpClient, HttpTarget};
use keyward_tests::{Session, Target};
use serde_json::json;
use tokio::io::AsyncWriteExt;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn floods_leave_the_server_answering_a_well_behaved_client() {
    let runtime = keyward_tests::runtime();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = "[kdf]\nm_cost_kib = 64\nt_cost = 1\np_cost = 1\n[sessions]\nmax = 256\n";
        let running = keyward_tests::start_with_config(&dir.path().join("kw"), config).await;
        let https = running.https.unwrap();
        let tls = tls::client_config(&keyward::serve::tls_dir(&dir.path().join("kw"))).unwrap();
        let target = Target::Https { addr: https, tls: Arc::clone(&tls) };
        let rss_before = rss_kib();

        // 1. 3,000 init_secure_api from four connections: the table stays at its bound.
        let mut floods = Vec::new();
        for worker in 0..4u8 {
            let tls = Arc::clone(&tls);
            floods.push(tokio::spawn(async move {
                let mut http = HttpClient::connect(https, "127.0.0.1", HttpTarget::Tls(tls)).await.unwrap();
                for i in 0..750u32 {
                    let mut seed = [worker; 32];
                    seed[..4].copy_from_slice(&i.to_le_bytes());
                    let mut client = keyward_core::Client::new(seed);
                    let answer = http.post(client.init_request(), None).await.unwrap();
                    assert_eq!(answer.status, 200);
                }
            }));
        }
        // 2. 100 idle TCP connections that never start TLS, and 20 that send half a body and stall.
        let mut idle = Vec::new();
        for _ in 0..100 {
            idle.push(tokio::net::TcpStream::connect(https).await.unwrap());
        }
        let mut slow = Vec::new();
        for _ in 0..20 {
            let mut http = HttpClient::connect(https, "127.0.0.1", HttpTarget::Tls(Arc::clone(&tls))).await.unwrap();
            slow.push(tokio::spawn(async move {
                // A body larger than the limit is refused (413) whole; the server keeps serving.
                let answer = http.post(vec![b' '; 2 * 1024 * 1024], None).await;
                answer.map(|a| a.status.as_u16()).unwrap_or(0)
            }));
        }
        let mut raw = tokio::net::TcpStream::connect(https).await.unwrap();
        raw.write_all(b"\x16\x03\x01").await.unwrap(); // the start of a TLS record, then silence
        // 3. Oversized QUIC messages.
        let quic =
            keyward_quic::QuicClient::connect(running.quic.unwrap(), "127.0.0.1", Arc::clone(&tls)).await.unwrap();
        for _ in 0..10 {
            assert!(quic.call(&vec![b'x'; 2 * 1024 * 1024]).await.is_err());
        }

        // Meanwhile a well-behaved client is answered, over HTTPS and over QUIC.
        let mut s = Session::open(&target, 200, true).await;
        s.ok("create_wallet", json!({"name": "calm", "mnemonic": null, "mnemonic_length": 16, "password": "p"})).await;
        let token = s.ok("open_wallet", json!({"name": "calm", "password": "p"})).await;
        let mut q =
            Session::open(&Target::Quic { addr: running.quic.unwrap(), tls: Arc::clone(&tls) }, 201, true).await;
        assert_eq!(q.ok("accounts", json!({"token": token})).await.as_array().map(Vec::len), Some(1));

        for flood in floods {
            tokio::time::timeout(Duration::from_secs(120), flood).await.unwrap().unwrap();
        }
        for task in slow {
            let status = tokio::time::timeout(Duration::from_secs(30), task).await.unwrap().unwrap();
            assert!(status == 413 || status == 0, "oversized body answered {status}");
        }
        assert!(running.core.session_count() <= 256, "{} sessions", running.core.session_count());
        // After the flood, both clients (re-initialising if the flood evicted them) are answered.
        let mut s = Session::open(&target, 202, true).await;
        assert_eq!(s.ok("accounts", json!({"token": token})).await.as_array().map(Vec::len), Some(1));
        let grown = rss_kib().saturating_sub(rss_before);
        assert!(grown < 256 * 1024, "memory grew by {grown} KiB during the floods");
        drop((idle, raw));
        running.stop().await;
    });
}
