//! The server side of the protocol: one `handle` call per request body.
//!
//! * `mod.rs` (here): the types a host meets ([`Server`], [`Incoming`], [`Outgoing`], [`Step`],
//!   [`SlowCall`]) and the entry points (`handle`, `handle_step`, `finish`, `refuse_busy`);
//! * `envelope`: the envelope layer (plaintext init, finding and opening a session's envelope,
//!   sealing the answer);
//! * `dispatch`: the inner body parsed once, the role check, the method's handler and its audit
//!   record, as the method table (`methods`) says;
//! * `wire`: the outer JSON shapes, read and written;
//! * `host`: what else a host asks of the server (registry, sessions, timers, audit flushes).

use std::collections::HashMap;
use std::fmt;

use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::jsonrpc::{self, EnvelopeError, MethodError};
use crate::methods::{self, AppCall, AppError, AppMethod, RegisterError};
use crate::principal::{Principal, Role};
use crate::session::{SessionId, SessionTable};
use crate::state::State;
use crate::store::Store;
use crate::sync::Mutex;
use dispatch::Run;
use envelope::{MUST_NAME, Opened};
use wire::{Request, echoable_id, plain_error, starts_object};

mod dispatch;
mod envelope;
mod host;
mod wire;

pub use crate::state::{CallContext, Host, IssuedCertificate, PairingTicket, ServerConfig};

/// One request, as the transport hands it in.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The HTTP body or QUIC stream bytes.
    pub body: &'a [u8],
    /// The session the transport knows this request belongs to (`Keyward-Session` header, QUIC
    /// connection); `None` for V3 clients that name none.
    pub session: Option<SessionId>,
    /// For a request that names no session: the session its connection used last, whose key is
    /// tried first (so an unmodified V3 client's cost does not grow with other clients' sessions).
    pub recent: Option<SessionId>,
    /// Who is calling, as the transport authenticated it: a registered client's name (its
    /// certificate or uid), [`Principal::LOCAL_HTTP`] for loopback plain HTTP, or
    /// [`Principal::LOCAL`] for an in-process caller. Its sessions, tokens, role and bounds follow
    /// from it.
    pub principal: &'a Principal,
    /// The host's clock, in milliseconds from any fixed origin.
    pub now_ms: u64,
}

/// The answer to one request.
#[derive(Debug)]
#[must_use = "an answer is sent back (and its session told to the client when it is new)"]
pub struct Outgoing {
    /// The JSON-RPC answer.
    pub body: Vec<u8>,
    /// The session that handled the request, or the one a plaintext `init_secure_api` created.
    pub session: Option<SessionId>,
    /// Whether `session` was created by this request (the transport should tell the client its id).
    pub created_session: bool,
    /// No live session took the request (it named none and matched no key, was too large to try,
    /// or named a session that does not exist). Honest clients see this once, when their session
    /// has ended; a host may delay such an answer (the driver does) so that a stranger's garbage
    /// cannot be sent at full speed.
    pub unmatched: bool,
}

/// The sans-IO owner API server. Share it between threads (`Arc<Server>`): every method takes `&self`.
/// Its locks are held for table look-ups and the microsecond-scale crypto tied to them (the AES-GCM
/// check of an envelope, unmasking a seed), never during a KDF or a store write.
pub struct Server {
    state: State,
    sessions: Mutex<SessionTable>,
    app_methods: HashMap<String, AppMethod>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("config", &self.state.config).finish_non_exhaustive()
    }
}

impl Server {
    /// A server over `store`, with randomness from `rng_seed` (give it 32 bytes from the OS in
    /// production, a constant in tests for byte-identical transcripts).
    pub fn new(config: ServerConfig, store: Box<dyn Store>, rng_seed: [u8; 32]) -> Self {
        let state = State::new(config, store, rng_seed);
        Self { sessions: Mutex::new(SessionTable::new(state.config.sessions)), state, app_methods: HashMap::new() }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.state.config
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.state.store
    }

    /// Registers an embedder's method. Its params are `token` followed by `params`; the handler
    /// runs with the wallet's unmasked master key, which is wiped when it returns. Embedder methods
    /// are always [`Speed::Slow`] (run off the I/O threads) and need `role` (a signing method:
    /// [`Role::Signer`]).
    pub fn register_method<F>(
        &mut self,
        name: &str,
        params: &[&str],
        role: Role,
        handler: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(&AppCall<'_>) -> Result<Value, AppError> + Send + Sync + 'static,
    {
        if methods::find(name).is_some() || self.app_methods.contains_key(name) || name == "encrypted_request_v3" {
            return Err(RegisterError::NameTaken);
        }
        if params.contains(&"token") {
            return Err(RegisterError::TokenListed);
        }
        self.app_methods.insert(name.to_owned(), AppMethod::new(params, role, handler));
        Ok(())
    }

    /// Handles one request body and returns the answer. Never panics on any input. It may run a KDF
    /// (about 0.1 s) or a store write; a transport that wants its I/O threads free uses
    /// [`Server::handle_step`].
    pub fn handle(&self, incoming: Incoming<'_>) -> Outgoing {
        match self.handle_step(incoming) {
            Step::Done(outgoing) => outgoing,
            Step::Slow(call) => self.finish(call),
        }
    }

    /// Finishes a call that [`Server::handle_step`] set aside (a method that runs a KDF or writes to
    /// the store, an embedder's method, or a batch). Call it off the I/O threads. A batch runs at most
    /// its first slow request; each later one is answered −32099 `Busy: …` without running.
    pub fn finish(&self, call: SlowCall) -> Outgoing {
        let mut call = call;
        let role = self.state.role_of(call.opened.principal().name());
        let outgoing = self.answer_opened(&call.id, &mut call.opened, Run::Dispatch, role);
        drop(call);
        // This thread may block: the audit events queued so far go to the store now.
        crate::admin::flush_audit(&self.state);
        crate::secret::scrub_stack();
        outgoing
    }

    /// Answers a call that [`Server::handle_step`] set aside without running it: each request in
    /// it gets −32099 `Busy: …`, sealed under the session's key like any answer. A transport calls
    /// this instead of [`Server::finish`] when its bounded pool of slow calls is full; the client
    /// may send the call again in a new envelope.
    pub fn refuse_busy(&self, call: SlowCall) -> Outgoing {
        // (Nothing is dispatched: the role is not needed.)
        let mut call = call;
        let outgoing = self.answer_opened(&call.id, &mut call.opened, Run::RefuseBusy, None);
        drop(call);
        // The decrypted request (it may hold a password) was parsed here; nothing ran a KDF.
        crate::secret::scrub_stack_shallow();
        outgoing
    }

    /// Handles one request body without running anything slow: most calls are answered at once
    /// (microseconds); a call that may run a KDF, write to the store or run an embedder's code (see
    /// [`Speed`]) is authenticated, decrypted and returned as [`Step::Slow`], to be passed to
    /// [`Server::finish`] on a blocking thread (or to [`Server::refuse_busy`]).
    /// Never panics on any input.
    pub fn handle_step(&self, incoming: Incoming<'_>) -> Step {
        // The caller's role, read once for the whole request (a slow call reads it again when it
        // runs, so a revocation meanwhile applies).
        let Some(role) = self.state.role_of(incoming.principal.name()) else {
            // Unknown or revoked: the transport should not have let it in (or it was revoked a
            // moment ago). Nothing is parsed.
            let (code, message) = MethodError::Revoked.wire();
            return Step::Done(Outgoing {
                body: jsonrpc::error_bytes(&(), code, &message),
                session: None,
                created_session: false,
                unmatched: false,
            });
        };
        // A body that names no session and is too large to be tried against keys is refused before
        // it is even parsed: a stranger's megabyte costs a length check.
        if incoming.session.is_none() && incoming.body.len() > self.max_unnamed_body() {
            return Step::Done(self.refuse_unnamed_body());
        }
        let parsed = if starts_object(incoming.body) { serde_json::from_slice(incoming.body).ok() } else { None };
        let request: Request<'_> = match parsed {
            Some(request) => request,
            None => {
                let error = if serde_json::from_slice::<IgnoredAny>(incoming.body).is_ok() {
                    EnvelopeError::InvalidRequest("not a JSON-RPC request object")
                } else {
                    EnvelopeError::Parse
                };
                return Step::Done(plain_error(RawValue::NULL, &error, incoming.session));
            }
        };
        let id = echoable_id(request.id);
        match request.method.as_deref() {
            Some("init_secure_api") => {
                Step::Done(self.handle_plain_init(id, request.params, incoming.principal, incoming.now_ms))
            }
            Some("encrypted_request_v3") => self.handle_encrypted(id, request.params, incoming, role),
            Some(_) => Step::Done(plain_error(id, &EnvelopeError::EncryptionRequired, incoming.session)),
            None => Step::Done(plain_error(id, &EnvelopeError::InvalidRequest("no method"), incoming.session)),
        }
    }

    /// The largest body a request that names no session may have: above it the request is refused
    /// unread ([`Server::refuse_unnamed_body`]), since its ciphertext would be too large to try
    /// against keys. A transport that knows a body's length before reading it (HTTP's
    /// `Content-Length`) can refuse it without reading it.
    pub fn max_unnamed_body(&self) -> usize {
        self.state.config.sessions.max_unnamed_bytes.saturating_mul(4) / 3 + UNNAMED_ENVELOPE_SLACK
    }

    /// The answer to a request that names no session and is larger than [`Server::max_unnamed_body`].
    pub fn refuse_unnamed_body(&self) -> Outgoing {
        let mut outgoing = plain_error(RawValue::NULL, &EnvelopeError::Format(MUST_NAME.into()), None);
        outgoing.unmatched = true;
        outgoing
    }
}

/// What [`Server::handle_step`] returns.
#[derive(Debug)]
#[must_use = "a step is an answer to send, or a slow call to finish or refuse"]
pub enum Step {
    /// The answer.
    Done(Outgoing),
    /// A call to finish with [`Server::finish`] off the I/O threads.
    Slow(SlowCall),
}

/// An authenticated, decrypted call set aside because it may be slow. Its envelope's nonce is
/// already recorded: finishing it is the only way to answer it.
#[must_use = "a slow call must be finished (or refused busy): its nonce is spent, it has no other answer"]
pub struct SlowCall {
    id: Box<RawValue>,
    opened: Opened,
}

impl fmt::Debug for SlowCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlowCall").field("session", &self.opened.session()).finish_non_exhaustive()
    }
}

/// Bytes an `encrypted_request_v3` envelope adds around the base64 of its ciphertext (id, method,
/// nonce, field names), generously: the body-size check before parsing must not refuse an
/// envelope whose ciphertext is within `max_unnamed_bytes`.
const UNNAMED_ENVELOPE_SLACK: usize = 4096;
