//! The harness: a [`Server`] on a virtual clock driven by sans-IO [`Client`]s, the configuration
//! the scenarios use, and the assertions on answers that scenarios and other crates' tests share.

use serde_json::Value;

use keyward_core::SessionId;
use keyward_core::store::KdfParams;
use keyward_core::store::Store;
use keyward_core::{Client, ClientError};
use keyward_core::{Incoming, Outgoing, Server, ServerConfig};

/// A server on a virtual clock.
#[derive(Debug)]
pub struct Harness {
    /// The server under test.
    pub server: Server,
    /// The virtual clock, in milliseconds.
    pub now_ms: u64,
}

/// A client and the session id it sends (`None`: a plain V3 client matched by key).
#[derive(Debug)]
pub struct TestClient {
    /// The sans-IO client.
    pub client: Client,
    /// The session id sent with each request, if this client names its session.
    pub session: Option<SessionId>,
    /// Whether to name the session at all.
    pub names_session: bool,
}

/// The configuration the scenarios use: small KDF parameters, otherwise the defaults.
pub fn test_config() -> ServerConfig {
    ServerConfig { data_root: "/srv/keyward".into(), kdf: KdfParams::INSECURE_FOR_TESTS, ..ServerConfig::default() }
}

impl Harness {
    /// A server with [`test_config`] over `store`, randomness from a fixed seed.
    pub fn new(store: Box<dyn Store>) -> Self {
        Self::with_config(store, test_config())
    }

    /// A server with a given configuration.
    pub fn with_config(store: Box<dyn Store>, config: ServerConfig) -> Self {
        Self { server: Server::new(config, store, [0x5e; 32]), now_ms: 1_000 }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, session: Option<SessionId>, body: &[u8]) -> Outgoing {
        self.now_ms += 1;
        self.server.handle(Incoming {
            body,
            session,
            recent: None,
            principal: &keyward_core::Principal::local(),
            now_ms: self.now_ms,
        })
    }

    /// A client that has done `init_secure_api`.
    pub fn client(&mut self, seed: u8, names_session: bool) -> TestClient {
        let mut client = Client::new([seed; 32]);
        let answer = self.send(None, &client.init_request());
        assert!(answer.created_session);
        client.handle_init_answer(&answer.body).unwrap();
        TestClient { client, session: answer.session, names_session }
    }

    /// Sends a body as `client` would (with its session id if it names it).
    pub fn send_as(&mut self, client: &TestClient, body: &[u8]) -> Outgoing {
        let session = if client.names_session { client.session } else { None };
        self.send(session, body)
    }

    /// One encrypted call; the `Ok` value or the error.
    pub fn call(&mut self, client: &mut TestClient, method: &str, params: Value) -> Result<Value, ClientError> {
        let (body, pending) = client.client.seal(method, params)?;
        let answer = self.send_as(client, &body);
        client.client.open(pending, &answer.body)
    }

    /// One encrypted call that must succeed.
    pub fn ok(&mut self, client: &mut TestClient, method: &str, params: Value) -> Value {
        match self.call(client, method, params) {
            Ok(value) => value,
            Err(e) => panic!("{method} failed: {e}"),
        }
    }
}

/// Asserts an error's code and that its message contains `text`.
pub fn assert_rpc_error(result: Result<Value, ClientError>, code: i64, text: &str) {
    match result {
        Err(ClientError::Rpc { code: c, message }) => {
            assert_eq!(c, code, "message: {message}");
            assert!(message.contains(text), "{message:?} does not contain {text:?}");
        }
        other => panic!("expected error {code} {text:?}, got {other:?}"),
    }
}

/// The plaintext error of a raw answer.
pub fn plain_error(body: &[u8]) -> (i64, String) {
    let value: Value = serde_json::from_slice(body).unwrap();
    let error = value.get("error").unwrap_or_else(|| panic!("not an error: {value}"));
    (error["code"].as_i64().unwrap(), error["message"].as_str().unwrap().to_owned())
}
