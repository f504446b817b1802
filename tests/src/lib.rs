//! Shared pieces of the end-to-end suites: a real `keyward serve` started in process on loopback
//! ports (fjall in a temporary directory, certificates made by `keyward certs`), links over each
//! transport, and the scenario list that every transport runs.
#![expect(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    missing_docs,
    missing_debug_implementations,
    reason = "a test fails by panicking, with the value in the message"
)]

pub mod browser;
pub mod interop;
pub mod ts;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use keyward::config::{self, ServeFlags};
use keyward::serve::{self, Running};
use keyward_core::store::KdfParams;
use keyward_core::{Client, ClientError};
use keyward_driver::{Link, SecureSession, SessionError, SessionOptions};
use keyward_http::{HttpClient, HttpTarget};
use keyward_quic::QuicClient;
use keyward_unix::UnixClient;
use serde_json::{Value, json};

/// A server in a temporary data directory.
pub struct TestServer {
    pub running: Running,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// HTTPS and plain HTTP on ephemeral loopback ports, fast KDF parameters.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let running = start_in(dir.path()).await;
        Self { running, dir }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("kw")
    }

    pub fn tls_dir(&self) -> PathBuf {
        serve::tls_dir(&self.data_dir())
    }

    pub fn https(&self) -> Target {
        let tls = keyward::tls::client_config(&self.tls_dir()).unwrap();
        Target::Https { addr: self.running.https.unwrap(), tls }
    }

    pub fn plain(&self) -> Target {
        Target::Plain { addr: self.running.http_insecure.unwrap() }
    }

    pub fn quic(&self) -> Target {
        let tls = keyward::tls::client_config(&self.tls_dir()).unwrap();
        Target::Quic { addr: self.running.quic.unwrap(), tls }
    }

    pub fn unix(&self) -> Target {
        Target::Unix { path: self.running.unix.clone().unwrap() }
    }

    pub async fn stop(self) -> tempfile::TempDir {
        self.running.stop().await;
        self.dir
    }
}

/// Starts a server with its data directory under `root` (a restart reuses the same root).
pub async fn start_in(root: &Path) -> Running {
    let flags = ServeFlags {
        data_dir: Some(root.join("kw")),
        https: Some("127.0.0.1:0".into()),
        http_insecure: Some("127.0.0.1:0".into()),
        quic: Some("127.0.0.1:0".into()),
        unix: Some(root.join("kw").join("keyward.sock").display().to_string()),
        pairing: Some("127.0.0.1:0".into()),
    };
    let mut options = config::resolve(config::FileConfig::default(), flags).unwrap();
    options.core.kdf = KdfParams::INSECURE_FOR_TESTS;
    serve::start(options).await.unwrap()
}

/// Starts a server with its data directory at `data_dir`, HTTPS and QUIC on ephemeral loopback
/// ports, and the settings of a config file's text (`""`: the defaults, default Argon2id included).
pub async fn start_with_config(data_dir: &Path, config: &str) -> Running {
    let flags = ServeFlags {
        data_dir: Some(data_dir.to_path_buf()),
        https: Some("127.0.0.1:0".into()),
        quic: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let file: config::FileConfig = toml::from_str(config).unwrap();
    serve::start(config::resolve(file, flags).unwrap()).await.unwrap()
}

/// The HTTPS target of a running server whose data directory is `data_dir`.
pub fn https_target(running: &Running, data_dir: &Path) -> Target {
    let tls = keyward::tls::client_config(&serve::tls_dir(data_dir)).unwrap();
    Target::Https { addr: running.https.unwrap(), tls }
}

/// A client certificate issued by the running server's CA and registered with `role` under
/// `name` (as `keyward clients add` does): the TLS configuration that presents it.
pub fn registered_client(
    running: &Running,
    data_dir: &Path,
    name: &str,
    role: keyward_core::Role,
) -> Arc<rustls::ClientConfig> {
    use keyward::certs;
    let tls_dir = serve::tls_dir(data_dir);
    let ca = keyward::ca::Ca::load(&certs::set_dir(&tls_dir).unwrap()).unwrap().expect("the set keeps its CA key");
    let pair = rcgen::KeyPair::generate().unwrap();
    let issued = ca.issue(name, &keyward::ca::ClientPublicKey::from_pem(&pair.public_key_pem()).unwrap()).unwrap();
    let record = keyward_core::ClientRecord {
        name: name.into(),
        role,
        identity: keyward_core::Identity::Cert { spki_sha256: issued.spki_sha256 },
        created_unix_ms: 0,
        revoked_unix_ms: None,
    };
    running.core.add_client(record).unwrap();
    let bundle = data_dir.join(format!("bundle-{name}"));
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("client.crt"), issued.certificate_pem).unwrap();
    std::fs::write(bundle.join("client.key"), pair.serialize_pem()).unwrap();
    let ca_file = tls_dir.join(certs::CA_CERT);
    keyward::tls::client_config_from(&ca_file, Some((&bundle.join("client.crt"), &bundle.join("client.key")))).unwrap()
}

/// How to reach a server.
#[derive(Clone)]
pub enum Target {
    Https { addr: SocketAddr, tls: Arc<rustls::ClientConfig> },
    Plain { addr: SocketAddr },
    Quic { addr: SocketAddr, tls: Arc<rustls::ClientConfig> },
    Unix { path: PathBuf },
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Https { .. } => "https",
            Self::Plain { .. } => "http",
            Self::Quic { .. } => "quic",
            Self::Unix { .. } => "unix",
        }
    }

    /// A new connection.
    pub async fn link(&self) -> Box<dyn Link> {
        self.try_link().await.unwrap_or_else(|error| panic!("cannot connect over {}: {error}", self.name()))
    }

    /// A new connection, or why there is none.
    pub async fn try_link(&self) -> Result<Box<dyn Link>, String> {
        Ok(match self {
            Self::Https { addr, tls } => Box::new(
                HttpClient::connect(*addr, "127.0.0.1", HttpTarget::Tls(Arc::clone(tls)))
                    .await
                    .map_err(|e| error_chain(&e))?,
            ),
            Self::Plain { addr } => {
                Box::new(HttpClient::connect(*addr, "127.0.0.1", HttpTarget::Plain).await.map_err(|e| error_chain(&e))?)
            }
            Self::Quic { addr, tls } => {
                Box::new(QuicClient::connect(*addr, "127.0.0.1", Arc::clone(tls)).await.map_err(|e| format!("{e:?}"))?)
            }
            Self::Unix { path } => Box::new(UnixClient::connect(path).await.map_err(|e| error_chain(&e))?),
        })
    }

    /// A new connection, `init_secure_api` and one call (`get_top_level_directory`), within 10 s:
    /// whether a client with this target's certificates gets an answer.
    pub async fn try_call(&self) -> Result<Value, String> {
        let attempt = async {
            let link = self.try_link().await?;
            let mut session = SecureSession::open(link).await.map_err(|e| format!("init_secure_api: {e:?}"))?;
            session.call("get_top_level_directory", json!({})).await.map_err(|e| format!("call: {e:?}"))
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), attempt)
            .await
            .unwrap_or_else(|_| Err("no answer within 10 s".to_owned()))
    }
}

/// An error and its sources, on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A secure session over a new connection (the driver's `SecureSession`), with test conveniences.
pub struct Session {
    pub inner: SecureSession<Box<dyn Link>>,
}

impl Session {
    /// `names_session`: send the session id (HTTP header); `false` behaves as an unmodified V3
    /// client. The session never re-keys or re-inits by itself here: the scenarios test the server.
    pub async fn open(target: &Target, seed: u8, names_session: bool) -> Self {
        let options = SessionOptions { names_session, rekey_after: 0, reinit_when_gone: false };
        Self { inner: SecureSession::open_with(target.link().await, [seed; 32], options).await.unwrap() }
    }

    /// The sans-IO client, to seal and open by hand.
    pub fn client(&mut self) -> &mut Client {
        self.inner.client()
    }

    /// Sends raw bytes as this session does.
    pub async fn send(&mut self, body: Vec<u8>) -> Vec<u8> {
        self.inner.send(body).await.unwrap()
    }

    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        match self.inner.call(method, params).await {
            Ok(value) => Ok(value),
            Err(SessionError::Rpc { code, message }) => Err(ClientError::Rpc { code, message }),
            Err(SessionError::Protocol(error)) => Err(error),
            Err(other) => panic!("{method}: {other}"),
        }
    }

    /// A call whose failure, a closed connection included, is an `Err` (not a panic).
    pub async fn inner_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.inner.call(method, params).await.map_err(|e| e.to_string())
    }

    pub async fn ok(&mut self, method: &str, params: Value) -> Value {
        match self.call(method, params).await {
            Ok(value) => value,
            Err(error) => panic!("{method}: {error}"),
        }
    }
}

pub fn assert_rpc_error(result: Result<Value, ClientError>, code: i64, text: &str) {
    keyward_testkit::assert_rpc_error(result, code, text);
}

/// Runs the whole scenario list against `target`, each scenario within 60 s.
pub async fn run_scenarios(target: &Target) {
    for (name, scenario) in scenarios() {
        eprintln!("scenario {name} over {}", target.name());
        tokio::time::timeout(std::time::Duration::from_secs(60), scenario(target.clone()))
            .await
            .unwrap_or_else(|_| panic!("{name} over {} timed out", target.name()));
    }
}

/// A multi-threaded runtime like the server's, on two threads.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub type ScenarioFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
pub type Scenario = (&'static str, fn(Target) -> ScenarioFuture);

/// The scenario list every transport runs.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        ("whole_lifecycle", |t| Box::pin(whole_lifecycle(t))),
        ("two_clients_interleave_with_their_own_sessions", |t| Box::pin(two_clients(t))),
        ("v3_client_without_session_header", |t| Box::pin(no_session_header(t))),
        ("replayed_envelope_is_refused", |t| Box::pin(replay(t))),
        ("wrong_password_and_unknown_wallet_look_alike", |t| Box::pin(wrong_password(t))),
    ]
}

async fn whole_lifecycle(target: Target) {
    let mut s = Session::open(&target, 1, true).await;
    let config = json!({"chain_type": "Mainnet", "wallet_config": null, "logging_config": null, "tor_config": null});
    assert_eq!(s.ok("create_config", config).await, Value::Null);
    let create = json!({"name": "life", "mnemonic": null, "mnemonic_length": 32, "password": "pw"});
    assert_eq!(s.ok("create_wallet", create).await, Value::Null);
    let token = s.ok("open_wallet", json!({"name": "life", "password": "pw"})).await;
    assert_eq!(
        s.ok("accounts", json!({"token": token})).await,
        json!([{"label": "default", "path": "0200000000000000000000000000000000"}])
    );
    assert_eq!(
        s.ok("create_account_path", json!({"token": token, "label": "spend"})).await,
        json!("0200000001000000000000000000000000")
    );
    s.ok("set_active_account", json!({"token": token, "label": "spend"})).await;
    let signed = s.ok("sign_message", json!({"token": token, "path": "m/44'/0'/0'/0/0", "message": "m"})).await;
    let verify = json!({"public_key": signed["public_key"], "message": "m", "signature": signed["signature"]});
    assert_eq!(s.ok("verify_message", verify).await, json!(true));
    let words = s.ok("get_mnemonic", json!({"name": "life", "password": "pw"})).await;
    assert_eq!(words.as_str().unwrap().split(' ').count(), 24);
    s.ok("change_password", json!({"name": "life", "old": "pw", "new": "pw2"})).await;
    s.ok("close_wallet", json!({"name": "life"})).await;
    assert_rpc_error(s.call("accounts", json!({"token": token})).await, -32099, "Wallet has not been opened");
    s.ok("delete_wallet", json!({"name": "life", "password": "pw2"})).await;
    assert_rpc_error(s.call("open_wallet", json!({"name": "life", "password": "pw2"})).await, -32099, "Error opening");
}

async fn two_clients(target: Target) {
    let mut a = Session::open(&target, 2, true).await;
    let mut b = Session::open(&target, 3, true).await;
    a.ok("create_wallet", json!({"name": "ta", "mnemonic": null, "mnemonic_length": 16, "password": "a"})).await;
    b.ok("create_wallet", json!({"name": "tb", "mnemonic": null, "mnemonic_length": 16, "password": "b"})).await;
    let ta = a.ok("open_wallet", json!({"name": "ta", "password": "a"})).await;
    let tb = b.ok("open_wallet", json!({"name": "tb", "password": "b"})).await;
    for i in 0..5 {
        let path = format!("m/{i}");
        let ka = a.ok("get_public_key", json!({"token": ta, "path": path})).await;
        let kb = b.ok("get_public_key", json!({"token": tb, "path": path})).await;
        assert_ne!(ka, kb);
    }
    // B's token works only for B's wallet, whoever sends it; A's session cannot read B's answers.
    let (body, pending) = a.client().seal("accounts", json!({"token": ta})).unwrap();
    let answer = a.send(body).await;
    let (_, other) = b.client().seal("accounts", json!({"token": tb})).unwrap();
    assert!(b.client().open(other, &answer).is_err());
    assert!(a.client().open(pending, &answer).is_ok());
}

async fn no_session_header(target: Target) {
    let mut s = Session::open(&target, 4, false).await;
    assert!(s.ok("get_top_level_directory", json!({})).await.is_string());
    s.ok("create_wallet", json!({"name": "v3", "mnemonic": null, "mnemonic_length": 16, "password": "p"})).await;
    let token = s.ok("open_wallet", json!({"name": "v3", "password": "p"})).await;
    assert_eq!(s.ok("accounts", json!({"token": token})).await.as_array().unwrap().len(), 1);
}

async fn replay(target: Target) {
    let mut s = Session::open(&target, 5, true).await;
    let (body, pending) = s.client().seal("get_top_level_directory", json!({})).unwrap();
    let first = s.send(body.clone()).await;
    assert!(s.client().open(pending, &first).is_ok());
    let again = s.send(body).await;
    let (code, message) = keyward_testkit::plain_error(&again);
    assert_eq!(code, -32002);
    assert!(message.contains("replay"), "{message}");
}

async fn wrong_password(target: Target) {
    let mut s = Session::open(&target, 6, true).await;
    s.ok("create_wallet", json!({"name": "wp", "mnemonic": null, "mnemonic_length": 16, "password": "right"})).await;
    let wrong = s.call("open_wallet", json!({"name": "wp", "password": "wrong"})).await;
    let missing = s.call("open_wallet", json!({"name": "nobody", "password": "right"})).await;
    assert_eq!(format!("{wrong:?}"), format!("{missing:?}"));
    assert_rpc_error(wrong, -32099, "Error opening wallet (is password correct?)");
}
