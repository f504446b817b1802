//! The driver end to end: the example transport carries a whole lifecycle with a `SecureSession`;
//! no store write ever runs on an I/O thread; the slow-call pool is bounded and answers `Busy`
//! beyond it; a connection's session goes with it; the expiry timer runs by itself.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/tcp.rs"]
mod example;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyward_core::{AppError, MemoryStore, Server, ServerConfig};
use keyward_driver::frame::{self, FrameLimits};
use keyward_driver::{
    CertChain, ConnectionLimits, Driver, DriverConfig, Exchange, Link, LinkFuture, Peer, Refusal, Refused,
    SecureSession, SessionBinding, on_slow_pool,
};
use keyward_testkit::WatchedStore;
use serde_json::{Value, json};
use tokio::net::TcpStream;

const LIMITS: FrameLimits =
    FrameLimits { max_bytes: 1 << 20, idle: Duration::from_secs(10), io: Duration::from_secs(10) };

/// The client half of the example transport.
struct FrameLink(TcpStream);

impl Link for FrameLink {
    fn exchange(&mut self, body: Vec<u8>, _session: Option<keyward_core::SessionId>) -> LinkFuture<'_> {
        Box::pin(
            async move { Ok(Exchange { body: frame::exchange(&mut self.0, &body, LIMITS).await?, session: None }) },
        )
    }
}

async fn serve_example(driver: Driver) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(example::serve(driver, listener, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

async fn session(addr: std::net::SocketAddr, seed: u8) -> SecureSession<FrameLink> {
    let link = FrameLink(TcpStream::connect(addr).await.unwrap());
    SecureSession::open_with(link, [seed; 32], Default::default()).await.unwrap()
}

/// Every store-writing method, through the example transport, with a store that notes writes made
/// off the slow-call threads: none may be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_write_runs_on_an_io_thread() {
    let on_io_thread = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let noted = Arc::clone(&on_io_thread);
    let store = WatchedStore::new(move |write| {
        if !on_slow_pool() {
            noted.lock().unwrap().push(write);
        }
    });
    let core = Arc::new(Server::new(keyward_testkit::test_config(), Box::new(store), [3; 32]));
    let driver = Driver::new(Arc::clone(&core), keyward_driver::system_clock(), DriverConfig::default());
    let (addr, _stop) = serve_example(driver).await;
    let mut s = session(addr, 1).await;
    let config = json!({"chain_type": "Mainnet", "wallet_config": null, "logging_config": null, "tor_config": null});
    s.call("create_config", config).await.unwrap();
    s.call("create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "p"}))
        .await
        .unwrap();
    assert!(s.call("open_wallet", json!({"name": "w", "password": "wrong"})).await.is_err());
    let token = s.call("open_wallet", json!({"name": "w", "password": "p"})).await.unwrap();
    s.call("create_account_path", json!({"token": token, "label": "spend"})).await.unwrap();
    s.call("set_active_account", json!({"token": token, "label": "spend"})).await.unwrap();
    s.call("change_password", json!({"name": "w", "old": "p", "new": "q"})).await.unwrap();
    s.call("delete_wallet", json!({"name": "w", "password": "q"})).await.unwrap();
    let writes = on_io_thread.lock().unwrap().clone();
    assert!(writes.is_empty(), "store writes ran on an I/O thread: {writes:?}");

    // The watch can fail: the same write made in place on a runtime thread is noted.
    let mut c = keyward_core::Client::new([9; 32]);
    let answer = core.handle(keyward_core::Incoming {
        body: &c.init_request(),
        session: None,
        recent: None,
        principal: &keyward_core::Principal::local(),
        now_ms: 1,
    });
    c.handle_init_answer(&answer.body).unwrap();
    let (body, _) = c
        .seal("create_wallet", json!({"name": "x", "mnemonic": null, "mnemonic_length": 16, "password": "p"}))
        .unwrap();
    let created = core.handle(keyward_core::Incoming {
        body: &body,
        session: answer.session,
        recent: None,
        principal: &keyward_core::Principal::local(),
        now_ms: 2,
    });
    assert!(!created.body.is_empty());
    // (`handle` finishes the slow call in place, and with it writes the queued audit events.)
    assert_eq!(on_io_thread.lock().unwrap().as_slice(), ["create_wallet", "append_audit"]);
}

/// One slow thread, no queue: while an embedder's slow method holds the thread, another slow call
/// is answered `Busy` at once and does not run; fast calls are answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_calls_beyond_the_pool_are_busy() {
    let (entered, wait_entered) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Mutex::new(released);
    let entered = Mutex::new(entered);
    let mut core = Server::new(keyward_testkit::test_config(), Box::new(MemoryStore::new()), [4; 32]);
    core.register_method("hold", &[], keyward_core::Role::Signer, move |_| {
        let _ = entered.lock().unwrap().send(());
        let _ = released.lock().unwrap().recv_timeout(Duration::from_secs(20));
        Ok::<Value, AppError>(Value::Null)
    })
    .unwrap();
    let config = DriverConfig { slow_threads: 1, slow_queue: 0, ..DriverConfig::default() };
    let driver = Driver::new(Arc::new(core), keyward_driver::system_clock(), config);
    let (addr, _stop) = serve_example(driver.clone()).await;
    let mut a = session(addr, 1).await;
    a.call("create_wallet", json!({"name": null, "mnemonic": null, "mnemonic_length": 16, "password": "p"}))
        .await
        .unwrap();
    let token = a.call("open_wallet", json!({"name": null, "password": "p"})).await.unwrap();
    let held = tokio::spawn(async move { a.call("hold", json!({"token": token})).await });
    tokio::task::spawn_blocking(move || wait_entered.recv_timeout(Duration::from_secs(20))).await.unwrap().unwrap();
    assert_eq!(driver.slow_calls_in_flight(), 1);

    let mut b = session(addr, 2).await;
    let busy = b.call("create_wallet", json!({"name": "b", "mnemonic": null, "mnemonic_length": 16, "password": "p"}));
    let busy = busy.await.unwrap_err();
    assert_eq!(busy.code(), Some(-32099), "{busy}");
    assert!(busy.to_string().contains("Busy"), "{busy}");
    assert!(b.call("list_wallets", json!({})).await.unwrap().as_array().unwrap().len() == 1, "b was not created");

    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    assert_eq!(driver.slow_calls_in_flight(), 0);
    b.call("create_wallet", json!({"name": "b", "mnemonic": null, "mnemonic_length": 16, "password": "p"}))
        .await
        .unwrap();
}

/// A session bound to a connection goes when the connection goes; the timer expires idle sessions
/// without any traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_go_with_their_connection_and_expire_by_themselves() {
    let mut config: ServerConfig = keyward_testkit::test_config();
    config.sessions.idle_ms = 300;
    let core = Arc::new(Server::new(config, Box::new(MemoryStore::new()), [5; 32]));
    let driver = Driver::new(Arc::clone(&core), keyward_driver::system_clock(), DriverConfig::default());
    let conn = driver.connection(Peer::Local, SessionBinding::Bound).unwrap();
    let mut client = keyward_core::Client::new([6; 32]);
    let answer = conn.answer(&client.init_request()).await;
    assert_eq!(conn.session(), answer.new_session);
    assert_eq!(core.session_count(), 1);
    drop(conn);
    assert_eq!(core.session_count(), 0);

    let (addr, _stop) = serve_example(driver).await;
    let _idle = session(addr, 7).await;
    assert_eq!(core.session_count(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while core.session_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the idle session was not expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The driver is the one admission point: a uid or certificate no active client has gets no
/// connection (the refusal is audited once, with the core's text); the built-in principals are
/// admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_no_client_has_is_refused_at_the_driver_and_audited() {
    let core = Arc::new(Server::new(keyward_testkit::test_config(), Box::new(MemoryStore::new()), [5; 32]));
    let driver = Driver::new(Arc::clone(&core), keyward_driver::system_clock(), DriverConfig::default());
    let stranger = Peer::Unix { uid: 4242, gid: 4242, pid: Some(7) };
    let refused = driver.connection(stranger.clone(), SessionBinding::Bound).unwrap_err();
    assert_eq!(refused, Refused { peer: stranger, reason: Refusal::Unknown });
    assert_eq!(refused.message(), "Forbidden: this client is revoked");
    assert!(refused.to_string().contains("uid 4242"), "{refused}");
    // (The driver's timer may write queued events at any moment: count what is written.)
    let audited = || {
        core.flush_audit();
        core.store().read_audit(0, 100).unwrap().len()
    };
    assert_eq!(audited(), 1, "the refusal is audited once");
    let unknown_cert = Peer::Net {
        addr: "127.0.0.1:1".parse().unwrap(),
        client_key: Some([9; 32]),
        client_chain: CertChain::default(),
    };
    assert!(driver.connection(unknown_cert, SessionBinding::Named).is_err());
    assert_eq!(audited(), 2);

    let local = driver.connection(Peer::Local, SessionBinding::Bound).unwrap();
    assert_eq!(local.principal().name(), keyward_core::Principal::LOCAL);
    let plain =
        Peer::Net { addr: "127.0.0.1:2".parse().unwrap(), client_key: None, client_chain: CertChain::default() };
    let plain = driver.connection(plain, SessionBinding::Named).unwrap();
    assert_eq!(plain.principal().name(), keyward_core::Principal::LOCAL_HTTP);
    assert_eq!(audited(), 2, "admitted peers are not audited");
}

/// The key a transport reports for a client certificate is the SHA-256 of exactly the certificate's
/// SubjectPublicKeyInfo: the same bytes the key pair gives as its public key DER.
#[test]
fn the_client_key_is_the_certificates_spki() {
    use keyward_testkit::pki::{Ca, Usage};
    use rcgen::PublicKeyData as _;
    let ca = Ca::new("Keyward test CA");
    for name in ["one", "two"] {
        let leaf = ca.leaf(name, &[], Usage::Client, false);
        let pair = rcgen::KeyPair::from_pem(leaf.key_pem()).unwrap();
        assert_eq!(keyward_driver::spki(&leaf.chain[0]), Some(pair.subject_public_key_info().as_slice()));
        let digest: [u8; 32] =
            sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), pair.subject_public_key_info()))
                .into();
        assert_eq!(keyward_driver::spki_sha256(&leaf.chain[0]), Some(digest));
    }
    // Not a certificate, or cut short: none, and no panic.
    let cert = ca.leaf("three", &[], Usage::Client, false).chain[0].to_vec();
    for len in 0..cert.len() {
        assert!(keyward_driver::spki(&cert[..len]).is_none(), "a certificate cut at {len} bytes");
    }
    assert_eq!(keyward_driver::spki_sha256(b"\x30\x03\x02\x01\x00"), None);
}

/// A link that loses the answer of one exchange: the server got and handled the message, the
/// client sees a transport error.
struct LosingLink {
    inner: FrameLink,
    exchanges: usize,
    lose: usize,
}

impl Link for LosingLink {
    fn exchange(&mut self, body: Vec<u8>, session: Option<keyward_core::SessionId>) -> LinkFuture<'_> {
        Box::pin(async move {
            self.exchanges += 1;
            let answer = self.inner.exchange(body, session).await?;
            if self.exchanges == self.lose {
                return Err(keyward_driver::LinkError::new(
                    keyward_driver::LinkErrorKind::Closed,
                    "the answer was lost",
                ));
            }
            Ok(answer)
        })
    }
}

/// A re-key the server made but whose answer never came back leaves the two sides on different
/// keys: the session starts over with a new init instead of sending every later call under a key
/// the server dropped (each would be refused as undecryptable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekey_whose_answer_is_lost_is_followed_by_a_new_session() {
    let core = Arc::new(Server::new(keyward_testkit::test_config(), Box::new(MemoryStore::new()), [3; 32]));
    let driver = Driver::new(Arc::clone(&core), keyward_driver::system_clock(), DriverConfig::default());
    let (addr, _stop) = serve_example(driver).await;
    // Exchanges: 1 init, 2 and 3 calls, 4 the re-key (its answer lost), then the next call.
    let link = LosingLink { inner: FrameLink(TcpStream::connect(addr).await.unwrap()), exchanges: 0, lose: 4 };
    let options = keyward_driver::SessionOptions { rekey_after: 2, ..Default::default() };
    let mut s = SecureSession::open_with(link, [5; 32], options).await.unwrap();
    s.call("list_wallets", json!({})).await.unwrap();
    s.call("list_wallets", json!({})).await.unwrap();
    let lost = s.call("list_wallets", json!({})).await.unwrap_err();
    assert!(lost.to_string().contains("the answer was lost"), "{lost}");
    for n in 0..5 {
        s.call("list_wallets", json!({})).await.unwrap_or_else(|e| panic!("call {n} after the lost re-key: {e}"));
    }
    assert_eq!(s.link().exchanges, 4 + 1 + 5 + 2, "one new init, five calls and two more re-keys");
}

/// A revocation closes the revoked client's live connections at once (the call that revoked it
/// tells them), and only theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_closes_the_revoked_clients_connections() {
    let core = Arc::new(Server::new(keyward_testkit::test_config(), Box::new(MemoryStore::new()), [5; 32]));
    let driver = Driver::new(Arc::clone(&core), keyward_driver::system_clock(), DriverConfig::default());
    let phone = keyward_core::ClientRecord {
        name: "phone".into(),
        role: keyward_core::Role::Reader,
        identity: keyward_core::Identity::Uid { uid: 5 },
        created_unix_ms: 1,
        revoked_unix_ms: None,
    };
    core.add_client(phone).unwrap();
    let phones = driver.connection(Peer::Unix { uid: 5, gid: 5, pid: None }, SessionBinding::Bound).unwrap();
    let owners = driver.connection(Peer::Local, SessionBinding::Bound).unwrap();
    let mut owner = keyward_core::Client::new([6; 32]);
    let init = owners.answer(&owner.init_request()).await;
    owner.handle_init_answer(&init.body).unwrap();
    let (body, pending) = owner.seal("revoke_client", json!({"name": "phone"})).unwrap();
    owner.open(pending, &owners.answer(&body).await.body).unwrap();
    tokio::time::timeout(Duration::from_millis(500), phones.revoked())
        .await
        .expect("the revoked client's connection is told to close");
    let still = tokio::time::timeout(Duration::from_millis(100), owners.revoked()).await;
    assert!(still.is_err(), "the owner's connection stays");
}

/// One principal holds at most `per_principal` connections (the next is refused and audited, and
/// admitted again once one closes); another principal is not affected. `close_unverified` closes
/// exactly the connections whose chain the check refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_holds_at_most_its_connections_and_unverified_chains_are_closed() {
    let core = Arc::new(Server::new(keyward_testkit::test_config(), Box::new(MemoryStore::new()), [5; 32]));
    let config = DriverConfig {
        connections: ConnectionLimits { per_principal: 2, owner_reserve: 0 },
        ..DriverConfig::default()
    };
    let driver = Driver::new(Arc::clone(&core), keyward_driver::system_clock(), config);
    let first = driver.connection(Peer::Local, SessionBinding::Bound).unwrap();
    let _second = driver.connection(Peer::Local, SessionBinding::Bound).unwrap();
    let refused = driver.connection(Peer::Local, SessionBinding::Bound).unwrap_err();
    assert_eq!(refused.reason, Refusal::PrincipalFull);
    assert_eq!(refused.message(), "too many connections of this client");
    assert_eq!(core.audit_pending(), 1, "the refusal is audited");
    let plain = |n: u8| Peer::Net {
        addr: format!("127.0.0.1:{n}").parse().unwrap(),
        client_key: None,
        client_chain: CertChain::new([vec![n]]),
    };
    let kept = driver.connection(plain(1), SessionBinding::Named).unwrap();
    let ended = driver.connection(plain(2), SessionBinding::Named).unwrap();
    // Loopback plain-HTTP peers are all `local-http`, any local process: no per-principal bound
    // (32 of them would lock the rest out), only their listener's slots.
    let more: Vec<_> = (10..14).map(|n| driver.connection(plain(n), SessionBinding::Named).unwrap()).collect();
    drop(more);
    drop(first);
    let _again = driver.connection(Peer::Local, SessionBinding::Bound).unwrap();

    let closed = driver.close_unverified(&|chain| chain.split().is_some_and(|(end, _)| end == &vec![1]));
    assert_eq!(closed, 1, "only the chain the check refuses");
    tokio::time::timeout(Duration::from_secs(5), ended.revoked()).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(50), kept.revoked()).await.is_err(), "the other stays");
}

/// A listener fed by the test: each connection's handshake reports progress and finishes when the
/// test says, and tells the test when it starts, progresses, or is dropped unfinished.
struct Scripted {
    incoming: tokio::sync::mpsc::UnboundedReceiver<Scripted1>,
    events: tokio::sync::mpsc::UnboundedSender<String>,
}

/// One scripted connection: its name, and the signals that make its handshake progress and finish.
struct Scripted1 {
    name: &'static str,
    progress: tokio::sync::oneshot::Receiver<()>,
    finish: tokio::sync::oneshot::Receiver<()>,
}

/// Tells the test that a handshake was dropped before it finished.
struct Dropped(&'static str, Option<tokio::sync::mpsc::UnboundedSender<String>>);

impl Drop for Dropped {
    fn drop(&mut self) {
        if let Some(events) = self.1.take() {
            let _ = events.send(format!("{} dropped", self.0));
        }
    }
}

impl keyward_driver::Listener for Scripted {
    type Conn = Scripted1;
    type Ready = &'static str;

    async fn accept(&mut self) -> Option<std::io::Result<Scripted1>> {
        self.incoming.recv().await.map(Ok)
    }

    fn handshake(
        &self,
        conn: Scripted1,
        progress: keyward_driver::Progress,
    ) -> impl Future<Output = Option<&'static str>> + Send + 'static {
        let events = self.events.clone();
        async move {
            let mut dropped = Dropped(conn.name, Some(events.clone()));
            let _ = events.send(format!("{} started", conn.name));
            if conn.progress.await.is_ok() {
                progress.made();
                let _ = events.send(format!("{} progressed", conn.name));
            }
            conn.finish.await.ok()?;
            dropped.1 = None;
            Some(conn.name)
        }
    }
}

/// Past `max_handshakes`, the accept loop drops the handshake that has made no progress for the
/// longest, not the oldest: the first connection, which progressed after the second arrived,
/// survives the third's arrival and is served; the second, stalled since it arrived, is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_handshakes_the_one_stalled_longest_is_dropped_not_the_oldest() {
    let (feed, incoming) = tokio::sync::mpsc::unbounded_channel();
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let (served_tx, mut served) = tokio::sync::mpsc::unbounded_channel();
    let limits = keyward_driver::ServeLimits {
        max_connections: 8,
        owner_reserve: 0,
        max_handshakes: 2,
        handshake_timeout: Duration::from_secs(30),
        grace: Duration::from_secs(1),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = Scripted { incoming, events: events_tx };
    let loop_task = tokio::spawn(keyward_driver::serve(listener, limits, async { stopped.await.unwrap_or(()) }, {
        move |name, _seat| {
            let served = served_tx.clone();
            async move {
                let _ = served.send(name);
            }
        }
    }));
    let mut next = async || tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap();
    let mut signals = Vec::new();
    for name in ["first", "second", "third"] {
        let (progress, progress_rx) = tokio::sync::oneshot::channel();
        let (finish, finish_rx) = tokio::sync::oneshot::channel();
        feed.send(Scripted1 { name, progress: progress_rx, finish: finish_rx }).unwrap();
        if name == "third" {
            // The loop makes room before it starts the third (the drop is told when its task ends).
            let mut seen = [next().await, next().await];
            seen.sort();
            assert_eq!(seen, ["second dropped", "third started"], "the stalled handshake makes room, not the oldest");
            break;
        }
        assert_eq!(next().await, format!("{name} started"));
        if name == "second" {
            // The first makes progress after the second arrived: it is moving, the second is not.
            let (first_progress, _): &mut (Option<tokio::sync::oneshot::Sender<()>>, _) = &mut signals[0];
            first_progress.take().unwrap().send(()).unwrap();
            assert_eq!(next().await, "first progressed");
        }
        signals.push((Some(progress), Some(finish)));
    }
    signals[0].1.take().unwrap().send(()).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), served.recv()).await.unwrap();
    assert_eq!(first, Some("first"));
    stop.send(()).unwrap();
    loop_task.await.unwrap();
}
