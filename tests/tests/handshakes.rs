//! Handshake floods against a live `keyward serve` (in process, real rustls and quinn on loopback):
//! flooders at full speed open handshakes that never finish while an honest client makes calls,
//! each on a new connection; at least 99 % of the honest calls must succeed (issue 23, item 4).
//! Successes are counted; no time is asserted (this machine is shared).
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use keyward_tests::{Target, TestServer, runtime};

/// Honest calls made under each flood.
const HONEST_CALLS: usize = 200;
/// Flooding threads (TCP) or tasks (QUIC).
const FLOODERS: usize = 4;
/// Unfinished connections each flooder keeps open (the oldest are closed past it).
const KEPT: usize = 256;

/// The bytes a rustls client sends first: one complete ClientHello.
fn client_hello(tls: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut client = rustls::ClientConnection::new(Arc::clone(tls), name).unwrap();
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello).unwrap();
    }
    hello
}

/// Threads that open TCP connections at full speed and send each one ClientHello (odd threads:
/// only its first half) and never anything more. Returns how many they opened once `stop` is set.
fn tcp_flood(addr: SocketAddr, hello: Vec<u8>, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<usize>> {
    (0..FLOODERS)
        .map(|thread| {
            let (stop, hello) = (Arc::clone(stop), hello.clone());
            std::thread::spawn(move || {
                let bytes = if thread % 2 == 0 { &hello[..] } else { &hello[..hello.len() / 2] };
                let mut kept = VecDeque::new();
                let mut opened = 0;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { continue };
                    let _ = stream.set_nodelay(true);
                    let _ = stream.write_all(bytes);
                    opened += 1;
                    kept.push_back(stream);
                    if kept.len() > KEPT {
                        kept.pop_front();
                    }
                }
                opened
            })
        })
        .collect()
}

/// Whether a QUIC v1 datagram is a Retry (long header, type 3).
fn is_retry(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|first| first & 0x80 != 0 && (first >> 4) & 0x03 == 3)
}

/// QUIC connections that pass address validation (their Retry is let through) and send their
/// ClientHello, but never see the server's answer (a relay drops it), so their handshakes never
/// finish. Tasks on the current runtime open them at full speed until `stop` is set; returns how
/// many were opened.
async fn quic_flood(server: SocketAddr, tls: &Arc<rustls::ClientConfig>, stop: &Arc<AtomicBool>) -> Arc<AtomicUsize> {
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(server).await.unwrap();
    let client_addr = Arc::new(std::sync::Mutex::new(None));
    let (from, to, seen) = (Arc::clone(&front), Arc::clone(&back), Arc::clone(&client_addr));
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        while let Ok((len, peer)) = from.recv_from(&mut buffer).await {
            *seen.lock().unwrap() = Some(peer);
            let _ = to.send(&buffer[..len]).await;
        }
    });
    let (from, to, seen) = (Arc::clone(&back), Arc::clone(&front), Arc::clone(&client_addr));
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        while let Ok(len) = from.recv(&mut buffer).await {
            let peer = *seen.lock().unwrap();
            if let (true, Some(peer)) = (is_retry(&buffer[..len]), peer) {
                let _ = to.send_to(&buffer[..len], peer).await;
            }
        }
    });
    let mut tls = (**tls).clone();
    tls.alpn_protocols = vec![keyward_quic::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let target = front.local_addr().unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    for _ in 0..FLOODERS {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(config.clone());
        let (stop, opened) = (Arc::clone(stop), Arc::clone(&opened));
        tokio::spawn(async move {
            let mut kept = VecDeque::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(connecting) = endpoint.connect(target, "127.0.0.1") {
                    opened.fetch_add(1, Ordering::Relaxed);
                    kept.push_back(connecting);
                    if kept.len() > KEPT {
                        kept.pop_front();
                    }
                }
                tokio::task::yield_now().await;
            }
        });
    }
    opened
}

/// `HONEST_CALLS` calls, each on a new connection; how many were answered.
async fn honest_calls(target: &Target) -> usize {
    let mut answered = 0;
    for _ in 0..HONEST_CALLS {
        match target.try_call().await {
            Ok(_) => answered += 1,
            Err(error) => eprintln!("{}: an honest call failed: {error}", target.name()),
        }
    }
    answered
}

#[test]
fn a_client_hello_flood_leaves_honest_https_calls_served() {
    runtime().block_on(async {
        let server = TestServer::start().await;
        let target = server.https();
        let Target::Https { addr, tls } = &target else { unreachable!() };
        let stop = Arc::new(AtomicBool::new(false));
        let flooders = tcp_flood(*addr, client_hello(tls), &stop);
        let answered = honest_calls(&target).await;
        stop.store(true, Ordering::Relaxed);
        let opened: usize = flooders.into_iter().map(|f| f.join().unwrap()).sum();
        eprintln!("HTTPS: {answered} of {HONEST_CALLS} honest calls answered beside {opened} flooding connections");
        assert!(answered * 100 >= HONEST_CALLS * 99, "HTTPS: {answered} of {HONEST_CALLS} honest calls answered");
        server.stop().await;
    });
}

#[test]
fn a_stalled_quic_handshake_flood_leaves_honest_quic_calls_served() {
    runtime().block_on(async {
        let server = TestServer::start().await;
        let target = server.quic();
        let Target::Quic { addr, tls } = &target else { unreachable!() };
        let stop = Arc::new(AtomicBool::new(false));
        let opened = quic_flood(*addr, tls, &stop).await;
        let answered = honest_calls(&target).await;
        stop.store(true, Ordering::Relaxed);
        let opened = opened.load(Ordering::Relaxed);
        eprintln!("QUIC: {answered} of {HONEST_CALLS} honest calls answered beside {opened} flooding connections");
        assert!(answered * 100 >= HONEST_CALLS * 99, "QUIC: {answered} of {HONEST_CALLS} honest calls answered");
        server.stop().await;
    });
}
