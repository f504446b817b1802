//! The client side, once: a [`Link`] sends bytes and returns bytes over some transport; a
//! [`SecureSession`] runs the V3 secure session over any link.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use keyward_core::crypto::WipedJson;
use keyward_core::{Client, ClientError, SessionId};
use serde_json::Value;

/// One exchange's answer.
#[derive(Debug)]
pub struct Exchange {
    /// The answer's bytes.
    pub body: Vec<u8>,
    /// The session id the server announced with it (HTTP's `Keyward-Session` answer header).
    pub session: Option<SessionId>,
}

/// What went wrong on a link, as far as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkErrorKind {
    /// The message could not be sent (no connection, a refused handshake): it did not run.
    Unreachable,
    /// The connection ended before the answer came: the message may have run.
    Closed,
    /// The server's transport answered outside the protocol (an HTTP status other than 200, a QUIC
    /// stream error, a malformed session header): the message did not run as a call.
    Refused,
    /// No answer in time: the message may have run.
    TimedOut,
    /// The server refused this client's certificate because the client was revoked (its TLS alert
    /// `certificate_revoked`): the message did not run. Message: [`LinkError::REVOKED`].
    Revoked,
    /// The server refused this client's certificate as one no client of it has (its TLS alert
    /// `access_denied`, or `unknown_ca` for a certificate of another CA): the message did not run.
    /// Message: [`LinkError::UNKNOWN_CLIENT`].
    Unknown,
}

/// A transport failure. Carries no message bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LinkError {
    kind: LinkErrorKind,
    message: String,
}

impl LinkError {
    /// A failure of `kind`, described by `message` (which must hold no message bytes).
    pub fn new(kind: LinkErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// What went wrong.
    pub fn kind(&self) -> LinkErrorKind {
        self.kind
    }

    /// The message of a [`LinkErrorKind::Revoked`] error.
    pub const REVOKED: &str = "this client was revoked";
    /// The message of a [`LinkErrorKind::Unknown`] error.
    pub const UNKNOWN_CLIENT: &str = "the server does not know this client's certificate";

    /// The server refused this client's certificate: the client was revoked.
    pub fn revoked() -> Self {
        Self::new(LinkErrorKind::Revoked, Self::REVOKED)
    }

    /// The server refused this client's certificate as unknown to it.
    pub fn unknown_client() -> Self {
        Self::new(LinkErrorKind::Unknown, Self::UNKNOWN_CLIENT)
    }
}

/// What [`Link::exchange`] returns.
pub type LinkFuture<'a> = Pin<Box<dyn Future<Output = Result<Exchange, LinkError>> + Send + 'a>>;

/// "Send these bytes, get those bytes": one connection to a Keyward server over any transport.
/// HTTP sends `session` in its `Keyward-Session` header; transports whose connection owns the
/// session (QUIC, Unix) ignore it.
pub trait Link: Send {
    /// Sends one message and returns the answer.
    fn exchange(&mut self, body: Vec<u8>, session: Option<SessionId>) -> LinkFuture<'_>;

    /// Closes the connection politely (QUIC tells the server at once, so the session bound to the
    /// connection goes now rather than at the idle timeout). By default: nothing; dropping closes.
    fn close(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

impl<L: Link + ?Sized> Link for Box<L> {
    fn exchange(&mut self, body: Vec<u8>, session: Option<SessionId>) -> LinkFuture<'_> {
        (**self).exchange(body, session)
    }

    fn close(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        (**self).close()
    }
}

/// How a [`SecureSession`] behaves.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    /// Name the session in each request (HTTP header) instead of letting the server match by key,
    /// as an unmodified V3 client does. Default true.
    pub names_session: bool,
    /// Re-key (an encrypted `init_secure_api`) after this many calls on one key, well before the
    /// server's per-key request cap (`[sessions] max_requests`, 1,048,576 by default; a re-key starts
    /// a new count) ends the session. Default 4,096; 0 never.
    pub rekey_after: u32,
    /// When the server says the session is gone (−32001: expired, evicted, restarted), run
    /// `init_secure_api` again and resend the call once. Default true. Safe: a −32001 answer means
    /// the call was not run.
    pub reinit_when_gone: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self { names_session: true, rekey_after: 4096, reinit_when_gone: true }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The transport failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The server answered with an error (`code`, `message`): an envelope error or the call's own.
    #[error("{message} (code {code})")]
    Rpc {
        /// The JSON-RPC code.
        code: i64,
        /// The message.
        message: String,
    },
    /// The answer could not be used (not JSON, not authentic, a stale nonce, a wrong id).
    #[error("{0}")]
    Protocol(ClientError),
    /// No OS randomness for the client's keys.
    #[error("no OS randomness: {0}")]
    Random(String),
}

impl From<ClientError> for SessionError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Rpc { code, message } => Self::Rpc { code, message },
            other => Self::Protocol(other),
        }
    }
}

impl SessionError {
    /// The JSON-RPC code, for an error the server answered.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The envelope code that says "no session: call init_secure_api".
const SESSION_GONE: i64 = -32001;

/// A V3 secure session over a link: `init_secure_api`, then encrypted calls, with the session
/// header where the link has one, a re-key before the server's cap, and a new init when the server
/// forgot the session.
pub struct SecureSession<L: Link> {
    link: L,
    client: Client,
    id: Option<SessionId>,
    options: SessionOptions,
    calls_on_key: u32,
    /// A re-key went out and its answer did not come back: the server may be on the new key while
    /// this client is on the old one, so the next call starts a new session instead.
    key_unknown: bool,
}

impl<L: Link> fmt::Debug for SecureSession<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureSession").field("id", &self.id).field("options", &self.options).finish_non_exhaustive()
    }
}

impl<L: Link> SecureSession<L> {
    /// Runs `init_secure_api` over `link`, with keys from OS randomness and default options.
    pub async fn open(link: L) -> Result<Self, SessionError> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *seed).map_err(|e| SessionError::Random(e.to_string()))?;
        Self::open_with(link, *seed, SessionOptions::default()).await
    }

    /// Runs `init_secure_api` with keys from `seed` (a constant gives reproducible tests).
    pub async fn open_with(link: L, seed: [u8; 32], options: SessionOptions) -> Result<Self, SessionError> {
        let mut session =
            Self { link, client: Client::new(seed), id: None, options, calls_on_key: 0, key_unknown: false };
        session.init().await?;
        Ok(session)
    }

    /// A plaintext `init_secure_api`: a new session (and on HTTP a new session id).
    pub async fn init(&mut self) -> Result<(), SessionError> {
        let answer = self.link.exchange(self.client.init_request(), None).await?;
        self.client.handle_init_answer(&answer.body)?;
        self.id = answer.session;
        self.calls_on_key = 0;
        self.key_unknown = false;
        Ok(())
    }

    /// An encrypted `init_secure_api`: a new key for the same session.
    pub async fn rekey(&mut self) -> Result<(), SessionError> {
        let (body, pending) = self.client.seal_reinit()?;
        // Until an answer is read, whether the server switched keys is unknown.
        self.key_unknown = true;
        let answer = self.send(body).await?;
        let opened = self.client.open(pending, &answer);
        // An error the server answered under the old key (a refusal) leaves both sides on it; an
        // answer that cannot be read leaves the server's key unknown.
        self.key_unknown = matches!(
            opened,
            Err(ClientError::Malformed(_)
                | ClientError::Decryption
                | ClientError::StaleNonce
                | ClientError::IdMismatch)
        );
        opened?;
        self.calls_on_key = 0;
        Ok(())
    }

    /// One encrypted call: its `Ok` value, or the error.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, SessionError> {
        if self.key_unknown {
            // A re-key whose answer was lost: start over with a new session rather than send calls
            // under a key the server may have dropped (it would refuse every one of them).
            self.init().await?;
        }
        if self.options.rekey_after > 0 && self.calls_on_key >= self.options.rekey_after {
            match self.rekey().await {
                // The session ended before its re-key: a new one serves as well.
                Err(SessionError::Rpc { code: SESSION_GONE, .. }) if self.options.reinit_when_gone => {
                    self.init().await?;
                }
                other => other?,
            }
        }
        // Kept (and wiped when dropped) only to resend the call once after a new init.
        let retry = self.options.reinit_when_gone.then(|| WipedJson(params.clone()));
        match self.call_once(method, params).await {
            Err(SessionError::Rpc { code: SESSION_GONE, .. }) if retry.is_some() => {
                self.init().await?;
                let mut retry = retry;
                let params = retry.as_mut().map_or(Value::Null, |p| p.0.take());
                self.call_once(method, params).await
            }
            other => other,
        }
    }

    async fn call_once(&mut self, method: &str, params: Value) -> Result<Value, SessionError> {
        let (body, pending) = self.client.seal(method, params)?;
        let answer = self.send(body).await?;
        self.calls_on_key += 1;
        Ok(self.client.open(pending, &answer)?)
    }

    /// Sends raw bytes as this session would (naming it where the link can): for tests of the
    /// envelope (replays, tampering) and for batches sealed by hand with [`SecureSession::client`].
    pub async fn send(&mut self, body: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        let id = if self.options.names_session { self.id } else { None };
        Ok(self.link.exchange(body, id).await?.body)
    }

    /// The sans-IO client (to seal or open by hand).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The link.
    pub fn link(&mut self) -> &mut L {
        &mut self.link
    }

    /// The session id the server announced (HTTP), if any.
    pub fn session_id(&self) -> Option<SessionId> {
        self.id
    }

    /// Gives the link and the sans-IO client back (to drive them by hand, e.g. from many tasks).
    pub fn into_parts(self) -> (L, Client) {
        (self.link, self.client)
    }

    /// Closes the link (see [`Link::close`]).
    pub async fn close(mut self) {
        self.link.close().await;
    }
}
