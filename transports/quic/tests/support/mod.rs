//! Test support: a throwaway PKI, a served core, and a core client over QUIC.
// Shared by two test binaries, each using part of it.
#![allow(dead_code, unused_imports)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::{Client, MemoryStore, Server};
use keyward_driver::{Driver, DriverConfig, SecureSession, SessionOptions};
use keyward_quic::{QuicClient, QuicLimits, QuicServer};
pub use keyward_testkit::pki::{Ca, Identity, Usage, client_config, provider, server_tls};
use rustls::{ClientConfig, ServerConfig};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Runs `future`, failing the test if it takes longer than `secs` seconds.
pub async fn within<T>(secs: u64, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {secs} s"),
    }
}

/// Polls `condition` every 20 ms for up to 5 s.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A core with the fast test KDF.
pub fn core() -> Arc<Server> {
    Arc::new(Server::new(keyward_testkit::test_config(), Box::new(MemoryStore::new()), [0x42; 32]))
}

pub fn clock() -> keyward_driver::Clock {
    let start = Instant::now();
    Arc::new(move || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1_000))
}

/// A driver over a fresh test core.
pub fn driver(core: Arc<Server>) -> Driver {
    Driver::new(core, clock(), DriverConfig::default())
}

/// Registers `identity`'s certificate as a client of `core` (a fresh name), with `role`.
pub fn register(core: &Server, identity: &Identity, role: keyward_core::Role) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!("client-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let spki_sha256 = keyward_driver::spki_sha256(&identity.chain[0]).expect("a certificate");
    let record = keyward_core::ClientRecord {
        name: name.clone(),
        role,
        identity: keyward_core::Identity::Cert { spki_sha256 },
        created_unix_ms: 0,
        revoked_unix_ms: None,
    };
    core.add_client(record).expect("registered");
    name
}

/// A running server on loopback with its own CA.
pub struct Fixture {
    pub addr: SocketAddr,
    pub core: Arc<Server>,
    pub ca: Ca,
    pub server_identity: Identity,
    /// The front end's certificate (registered as an owner): every [`Fixture::connect`] uses it,
    /// so all callers are one principal, as one front end's connections are.
    pub front_end: Identity,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Fixture {
    pub async fn start(limits: QuicLimits) -> Self {
        let ca = Ca::new("Keyward test CA");
        let server_identity = ca.leaf("keyward server", &["localhost", "127.0.0.1"], Usage::Server, false);
        let tls = server_tls(&ca, &server_identity);
        Self::start_with(ca, server_identity, tls, limits).await
    }

    pub async fn start_with(ca: Ca, server_identity: Identity, tls: Arc<ServerConfig>, limits: QuicLimits) -> Self {
        let core = core();
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let server = QuicServer::bind(addr, tls, driver(Arc::clone(&core)), limits).expect("bind");
        let addr = server.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let front_end = ca.leaf("wallet back end", &[], Usage::Client, false);
        register(&core, &front_end, keyward_core::Role::Owner);
        Self { addr, core, ca, server_identity, front_end, stop: Some(stop), task: Some(task) }
    }

    /// A client configuration with the front end's certificate.
    pub fn client_tls(&self) -> Arc<ClientConfig> {
        Arc::new(client_config(&self.ca, Some(&self.front_end)))
    }

    pub async fn connect(&self) -> QuicClient {
        within(10, QuicClient::connect(self.addr, "localhost", self.client_tls())).await.expect("connect")
    }

    /// Connects as soon as the server has a free connection slot: tries every 100 ms (2 s per try)
    /// and panics if none frees within `secs`.
    pub async fn connect_once_a_slot_frees(&self, secs: u64) -> QuicClient {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_secs(2),
                QuicClient::connect(self.addr, "localhost", self.client_tls()),
            );
            match attempt.await {
                Ok(Ok(quic)) => return quic,
                other => assert!(tokio::time::Instant::now() < deadline, "no slot freed within {secs} s: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A connected core client of a client of its own (a fresh certificate registered as an owner).
    pub async fn caller_of_its_own(&self, seed: u8) -> Caller {
        let identity = self.ca.leaf("another front end", &[], Usage::Client, false);
        register(&self.core, &identity, keyward_core::Role::Owner);
        let tls = Arc::new(client_config(&self.ca, Some(&identity)));
        let quic = within(10, QuicClient::connect(self.addr, "localhost", tls)).await.expect("connect");
        Caller::new(quic, seed).await
    }

    /// A connected core client that has done `init_secure_api`.
    pub async fn caller(&self, seed: u8) -> Caller {
        Caller::new(self.connect().await, seed).await
    }

    /// Asks the server to shut down, without waiting.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts the server down and waits for `run` to return.
    pub async fn stop(mut self) {
        self.begin_stop();
        if let Some(task) = self.task.take() {
            within(15, task).await.expect("server task");
        }
    }
}

/// The driver's secure session over a `QuicClient`, with test conveniences.
pub struct Caller {
    pub session: SecureSession<QuicClient>,
}

impl Caller {
    /// Runs `init_secure_api` on `quic`; the session never re-keys or re-inits by itself.
    pub async fn new(quic: QuicClient, seed: u8) -> Self {
        let options = SessionOptions { names_session: false, rekey_after: 0, reinit_when_gone: false };
        let session = within(10, SecureSession::open_with(quic, [seed; 32], options)).await;
        Self { session: session.expect("init_secure_api over QUIC") }
    }

    /// The connection.
    pub fn quic(&mut self) -> &mut QuicClient {
        self.session.link()
    }

    /// The sans-IO client.
    pub fn keys(&mut self) -> &mut Client {
        self.session.client()
    }

    /// A new plaintext `init_secure_api` on the same connection.
    pub async fn init(&mut self) {
        within(10, self.session.init()).await.expect("init_secure_api over QUIC");
    }

    /// One encrypted call; transport and RPC errors as text.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        within(10, self.session.call(method, params)).await.map_err(|e| e.to_string())
    }

    pub async fn ok(&mut self, method: &str, params: Value) -> Value {
        match self.call(method, params).await {
            Ok(value) => value,
            Err(e) => panic!("{method} failed: {e}"),
        }
    }
}

/// A raw exchange on a bare quinn connection.
pub async fn raw_call(connection: &quinn::Connection, request: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(request).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    recv.read_to_end(1 << 20).await.map_err(|e| e.to_string())
}

/// A bare quinn client endpoint on loopback.
pub fn raw_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint")
}

pub fn raw_client_config(tls: ClientConfig) -> quinn::ClientConfig {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC client config");
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// Starts a handshake with `server` that never completes: the first datagram a real client would send
/// (a whole Initial with its ClientHello), sent from a socket that then never answers. Keep the
/// returned socket alive for as long as the stall should last.
pub async fn stalled_handshake(server: SocketAddr, tls: ClientConfig) -> tokio::net::UdpSocket {
    let trap = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("trap socket");
    let endpoint = raw_endpoint();
    let connecting = endpoint
        .connect_with(raw_client_config(tls), trap.local_addr().expect("trap addr"), "localhost")
        .expect("connect");
    let mut datagram = vec![0u8; 65_536];
    let (len, _) = within(5, trap.recv_from(&mut datagram)).await.expect("the client's first datagram");
    drop(connecting);
    endpoint.close(quinn::VarInt::from_u32(0), b"");
    let stall = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("stall socket");
    stall.send_to(&datagram[..len], server).await.expect("send the Initial");
    stall
}
