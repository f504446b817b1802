//! Test support: a throwaway PKI, a served core, and a core client over QUIC.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::{Client, MemoryStore, Server};
use keyward_quic::{QuicClient, QuicLimits, QuicServer};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
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

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

/// A certificate authority.
pub struct Ca {
    pub cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        Self { cert: cert.der().clone(), issuer: Issuer::new(params, key) }
    }

    /// A leaf certificate; `expired` puts its validity in the past.
    pub fn leaf(&self, name: &str, sans: &[&str], usage: Usage, expired: bool) -> Identity {
        let key = KeyPair::generate().expect("leaf key");
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("leaf certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Identity { chain: vec![cert.der().clone()], key }
    }

    pub fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).expect("CA root");
        Arc::new(roots)
    }
}

/// The server's rustls configuration: TLS 1.3, client certificates required and checked against `ca`.
pub fn server_tls(ca: &Ca, identity: &Identity) -> Arc<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(ca.roots(), provider()).build().expect("verifier");
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key())
        .expect("server certificate");
    Arc::new(config)
}

/// A client configuration trusting `ca` for the server, presenting `identity` (or nothing).
pub fn client_config(ca: &Ca, identity: Option<&Identity>) -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(ca.roots());
    match identity {
        Some(identity) => builder.with_client_auth_cert(identity.chain.clone(), identity.key()).expect("client cert"),
        None => builder.with_no_client_auth(),
    }
}

/// A core with the fast test KDF.
pub fn core() -> Arc<Server> {
    Arc::new(Server::new(keyward_core::testing::test_config(), Box::new(MemoryStore::new()), [0x42; 32]))
}

pub fn clock() -> Arc<dyn Fn() -> u64 + Send + Sync> {
    let start = Instant::now();
    Arc::new(move || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1_000))
}

/// A running server on loopback with its own CA.
pub struct Fixture {
    pub addr: SocketAddr,
    pub core: Arc<Server>,
    pub ca: Ca,
    pub server_identity: Identity,
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
        let server = QuicServer::bind(addr, tls, Arc::clone(&core), clock(), limits).expect("bind");
        let addr = server.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self { addr, core, ca, server_identity, stop: Some(stop), task: Some(task) }
    }

    /// A client configuration with a fresh, valid client certificate.
    pub fn client_tls(&self) -> Arc<ClientConfig> {
        let identity = self.ca.leaf("wallet back end", &[], Usage::Client, false);
        Arc::new(client_config(&self.ca, Some(&identity)))
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

    /// A connected core client that has done `init_secure_api`.
    pub async fn caller(&self, seed: u8) -> Caller {
        let mut caller = Caller { quic: self.connect().await, keys: Client::new([seed; 32]) };
        caller.init().await;
        caller
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

/// A `keyward_core::Client` talking over a `QuicClient`.
pub struct Caller {
    pub quic: QuicClient,
    pub keys: Client,
}

impl Caller {
    pub async fn init(&mut self) {
        let request = self.keys.init_request();
        let answer = within(10, self.quic.call(&request)).await.expect("init_secure_api over QUIC");
        self.keys.handle_init_answer(&answer).expect("init answer");
    }

    /// One encrypted call; transport and RPC errors as text.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let (body, pending) = self.keys.seal(method, params).map_err(|e| e.to_string())?;
        let answer = within(10, self.quic.call(&body)).await.map_err(|e| e.to_string())?;
        self.keys.open(pending, &answer).map_err(|e| e.to_string())
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
