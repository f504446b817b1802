//! The server side of the protocol: one `handle` call per request body. This is the envelope layer
//! (sessions, decryption, sealing, the slow/fast split) on top of the method table (`methods`) and the
//! state every call shares (`state`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use crate::envelope;
use crate::jsonrpc::{self, EnvelopeError, MethodError};
use crate::methods::{self, APP_METHOD_SPEED, AfterAnswer, AppCall, AppError, AppMethod, Method, RegisterError, Speed};
use crate::principal::{Principal, Role};
use crate::secret::{SecretBuffer, WipedJson, wipe_json};
use crate::session::{self, AcceptError, Accepted, SessionId, SessionTable};
use crate::state::{State, lock};
use crate::store::Store;
use crate::sync::Mutex;

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
    pub principal: &'a str,
    /// The host's clock, in milliseconds from any fixed origin.
    pub now_ms: u64,
}

/// The answer to one request.
#[derive(Debug)]
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

/// Initial capacity of an inner answer buffer: large enough for every built-in answer, so that it
/// rarely grows. When it does (a batch, a long id), the [`SecretBuffer`] wipes the block it leaves.
const ANSWER_CAPACITY: usize = 4096;

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
        let role = self.state.role_of(call.accepted.principal.name());
        let outgoing = self.answer_accepted(&call.id, &call.accepted, call.now_ms, Run::Dispatch, role);
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
        let outgoing = self.answer_accepted(&call.id, &call.accepted, call.now_ms, Run::RefuseBusy, None);
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
        let Some(role) = self.state.role_of(incoming.principal) else {
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

    /// Writes the queued audit events to the store. It may block (an fsync): call it off the I/O
    /// threads, e.g. every second and whenever [`Server::audit_pending`] grows large.
    /// [`Server::finish`] does it after each slow call.
    pub fn flush_audit(&self) {
        crate::admin::flush_audit(&self.state);
    }

    /// How many audit events wait to be written.
    pub fn audit_pending(&self) -> usize {
        lock(&self.state.audit).len()
    }

    /// Records a refusal the host made before any request reached the core (a revoked or unknown
    /// client's handshake): who (a client name, or the peer as the host describes it), what and why.
    pub fn audit_refusal(&self, principal: &str, what: &str, outcome: &str) {
        self.state.audit(principal, what, None, outcome);
    }

    /// Gives the core the host's wall clock and certificate issuer (see [`Host`]). Call it before
    /// sharing the server.
    pub fn set_host(&mut self, host: std::sync::Arc<dyn Host>) {
        self.state.host = Some(host);
    }

    /// How many clients were revoked since the server started: a host that keeps connections
    /// per client closes a revoked client's when this changes.
    pub fn revocations(&self) -> u64 {
        self.state.revocations.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The role `principal` has now: `None` for an unknown or revoked client.
    pub fn role_of(&self, principal: &str) -> Option<Role> {
        self.state.role_of(principal)
    }

    /// The active client that presented this certificate key (SHA-256 of its SPKI).
    pub fn client_for_cert(&self, spki_sha256: &[u8; 32]) -> Option<String> {
        let identity = crate::principal::Identity::Cert { spki_sha256: *spki_sha256 };
        crate::state::read(&self.state.clients).active(&identity).map(|r| r.name.clone())
    }

    /// The active client registered for this uid (Unix socket).
    pub fn client_for_uid(&self, uid: u32) -> Option<String> {
        let identity = crate::principal::Identity::Uid { uid };
        crate::state::read(&self.state.clients).active(&identity).map(|r| r.name.clone())
    }

    /// Every registered client, revoked ones too, by name.
    pub fn clients(&self) -> Vec<crate::principal::ClientRecord> {
        crate::state::read(&self.state.clients).records().cloned().collect()
    }

    /// Registers a client (at first start, the host registers `default`). Writes the store.
    pub fn add_client(&self, record: crate::principal::ClientRecord) -> Result<(), String> {
        crate::admin::register(&self.state, record).map_err(|e| e.wire().1)
    }

    /// Registers a client for this run only: it is never written to the store (nor is a later
    /// change of its role, or its revocation), so the next start does not know it. `keyward serve
    /// --launcher` registers its own client, whose certificate exists only in memory, this way.
    pub fn add_transient_client(&self, record: crate::principal::ClientRecord) -> Result<(), String> {
        crate::admin::register_as(&self.state, record, crate::admin::Lifetime::ThisRun).map_err(|e| e.wire().1)
    }

    /// Gives an active client a new identity (the host's `default` client follows `keyward certs
    /// rotate` this way). Writes the store. Not reachable over the API.
    pub fn set_client_identity(&self, name: &str, identity: crate::principal::Identity) -> Result<(), String> {
        crate::admin::set_identity(&self.state, name, identity).map_err(|e| e.wire().1)
    }

    /// Live sessions of `principal`.
    pub fn session_count_of(&self, principal: &str) -> usize {
        lock(&self.sessions).count_of(principal)
    }

    /// Drops a session (its QUIC connection closed). Open wallets stay open until closed or expired.
    pub fn drop_session(&self, id: &SessionId) -> bool {
        lock(&self.sessions).remove(id)
    }

    /// Expires idle sessions and tokens. Call it at `poll_timeout()`, or whenever convenient.
    pub fn handle_timeout(&self, now_ms: u64) {
        lock(&self.sessions).expire(now_ms);
        lock(&self.state.vault).expire(now_ms);
    }

    /// When `handle_timeout` next has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        let sessions = lock(&self.sessions).next_expiry();
        let tokens = lock(&self.state.vault).next_expiry();
        match (sessions, tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Closes every wallet and forgets every session (shutdown).
    pub fn shutdown(&self) {
        lock(&self.state.vault).close_all();
        *lock(&self.sessions) = SessionTable::new(self.state.config.sessions);
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// The block of memory that holds the vault's masked seeds (address, length), for the host to
    /// lock in memory. It stays where it is for the server's life.
    pub fn vault_region(&self) -> (usize, usize) {
        lock(&self.state.vault).region()
    }

    /// Number of open wallets, i.e. masked seeds held in the vault.
    pub fn open_wallet_count(&self) -> usize {
        lock(&self.state.vault).open_count()
    }

    /// Every masked seed byte the vault holds (empty once every wallet is closed); panics if a free
    /// slot still holds bytes. For the residency tests: masked bytes tell nothing without the token.
    pub fn vault_masked_bytes(&self) -> Vec<u8> {
        lock(&self.state.vault).masked_bytes()
    }

    fn handle_plain_init(&self, id: &RawValue, params: Option<&RawValue>, principal: &str, now_ms: u64) -> Outgoing {
        let outgoing = self.plain_init(id, params, principal, now_ms);
        crate::secret::scrub_stack();
        outgoing
    }

    fn plain_init(&self, id: &RawValue, params: Option<&RawValue>, principal: &str, now_ms: u64) -> Outgoing {
        let params = params.and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok());
        let (public, cipher) = match self.state.new_session_key(params) {
            Ok(pair) => pair,
            Err(why) => return plain_error(id, &EnvelopeError::InitParams(why), None),
        };
        let session = SessionId::from_bytes(self.state.random());
        lock(&self.sessions).insert(session, cipher, String::new(), Principal::new(principal), now_ms);
        let mut body = Vec::with_capacity(128);
        jsonrpc::write_ok(id, &hex::encode(public.serialize()), &mut body);
        Outgoing { body, session: Some(session), created_session: true, unmatched: false }
    }

    fn handle_encrypted(&self, id: &RawValue, params: Option<&RawValue>, incoming: Incoming<'_>, role: Role) -> Step {
        let hint = incoming.session;
        let Some(params) = params.and_then(EnvelopeParams::parse) else {
            let why = "params must be {\"nonce\": hex, \"body_enc\": base64} or [nonce, body_enc]";
            return Step::Done(plain_error(id, &EnvelopeError::Format(why.into()), hint));
        };
        let nonce = match envelope::parse_nonce(&params.nonce) {
            Ok(nonce) => nonce,
            Err(e) => return Step::Done(plain_error(id, &EnvelopeError::Format(e.to_string()), hint)),
        };
        let ciphertext = match envelope::decode_body(&params.body_enc) {
            Ok(bytes) => bytes,
            Err(e) => return Step::Done(plain_error(id, &EnvelopeError::Format(e.to_string()), hint)),
        };
        let accepted = self.accept_envelope(incoming, &nonce, ciphertext);
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Named or not, a request no live session takes is a stranger's (or, once, a
                // client's whose session ended): the host may slow it down.
                let unmatched = matches!(error, AcceptError::NoSession | AcceptError::MustName);
                let mut outgoing = plain_error(id, &accept_error(error, hint.is_some()), hint);
                outgoing.unmatched = unmatched;
                return Step::Done(outgoing);
            }
        };
        // (The accepted session is the caller's own: its principal is `incoming.principal`.)
        if is_slow(&accepted.plaintext, &self.app_methods, role) {
            // The request (it may hold a password) was decrypted on this thread, which goes on to
            // serve other clients: wipe what AES-GCM left on its stack before handing the call on.
            crate::secret::scrub_stack_shallow();
            return Step::Slow(SlowCall { id: id.to_owned(), accepted, now_ms: incoming.now_ms });
        }
        let outgoing = self.answer_accepted(id, &accepted, incoming.now_ms, Run::Dispatch, Some(role));
        drop(accepted);
        // The decrypted request (a token) and the answer passed through AES-GCM's stack buffers.
        crate::secret::scrub_stack_shallow();
        Step::Done(outgoing)
    }

    /// Finds the envelope's session, authenticates and decrypts it, and records its nonce. Keys are
    /// tried with the session table unlocked (it is locked only to pick candidates and to commit),
    /// so a stranger's trials never hold up other clients' calls.
    fn accept_envelope(
        &self,
        incoming: Incoming<'_>,
        nonce: &[u8; envelope::NONCE_LEN],
        ciphertext: Vec<u8>,
    ) -> Result<Accepted, AcceptError> {
        let now_ms = incoming.now_ms;
        let mut buffer = Zeroizing::new(ciphertext);
        let (id, opened_by) = match incoming.session {
            Some(id) => {
                let cipher = lock(&self.sessions).cipher(&id, incoming.principal, now_ms)?;
                session::open_in_place(&cipher, nonce, &mut buffer)?;
                (id, cipher)
            }
            None => {
                if buffer.len() > self.state.config.sessions.max_unnamed_bytes {
                    return Err(AcceptError::MustName);
                }
                let recent = incoming
                    .recent
                    .and_then(|id| Some((id, lock(&self.sessions).cipher(&id, incoming.principal, now_ms).ok()?)));
                let found = match recent.map(|pair| session::try_keys(&[pair], nonce, &buffer, false)) {
                    Some(Ok(found)) => found,
                    Some(Err(error @ AcceptError::Format(_))) => return Err(error),
                    _ => {
                        let others =
                            lock(&self.sessions).by_recent_use(incoming.recent.as_ref(), incoming.principal, now_ms);
                        session::try_keys(&others, nonce, &buffer, true)?
                    }
                };
                buffer = found.plaintext;
                (found.id, found.cipher)
            }
        };
        // A re-key between the trial and here refuses the envelope (commit checks the key).
        let (cipher, dir, principal) = match lock(&self.sessions).commit(&id, &opened_by, nonce, now_ms) {
            Err(AcceptError::Decryption) if incoming.session.is_none() => return Err(AcceptError::NoSession),
            other => other?,
        };
        Ok(Accepted { id, cipher, plaintext: buffer, dir, principal })
    }

    /// Answers an accepted, decrypted request: dispatch (or refuse), seal, and the session updates
    /// it asks for.
    fn answer_accepted(
        &self,
        id: &RawValue,
        accepted: &Accepted,
        now_ms: u64,
        run: Run,
        role: Option<Role>,
    ) -> Outgoing {
        let session = Some(accepted.id);
        let context = CallContext {
            principal: accepted.principal.clone(),
            role,
            session: accepted.id,
            dir: accepted.dir.clone(),
            now_ms,
        };
        // Encrypted in place below: the plaintext answer is overwritten by its ciphertext.
        let mut answer = SecretBuffer::with_capacity(ANSWER_CAPACITY);
        let Some(after) = self.answer_inner(&accepted.plaintext, &context, run, &mut answer) else {
            let why = "the decrypted body is not UTF-8 JSON";
            return plain_error(id, &EnvelopeError::Decryption(why.into()), session);
        };
        // Room for the tag now, so that sealing does not grow the `Vec` (leaving the plaintext behind).
        answer.reserve(envelope::TAG_LEN);
        let reply_nonce: [u8; envelope::NONCE_LEN] = self.state.random();
        let body_enc = accepted.cipher.seal_in_place(&reply_nonce, answer.as_mut_vec());
        if body_enc.is_empty() {
            return plain_error(id, &EnvelopeError::Encryption, session);
        }
        if let Some(dir) = after.dir {
            lock(&self.sessions).set_dir(&accepted.id, dir);
        }
        if let Some(cipher) = after.rekey {
            lock(&self.sessions).rekey(accepted.id, cipher, now_ms);
        }
        if let Some(revoked) = after.revoked {
            lock(&self.sessions).remove_principal(&revoked);
        }
        let nonce = hex::encode(reply_nonce);
        let mut body = Vec::with_capacity(body_enc.len() + 96);
        jsonrpc::write_ok(id, &EnvelopeAnswer { nonce: &nonce, body_enc: &body_enc }, &mut body);
        Outgoing { body, session, created_session: false, unmatched: false }
    }

    /// Answers a decrypted inner body: one request (the fast path, parsed in place) or anything else
    /// JSON (a batch, a non-request). `None` if the plaintext is not JSON at all.
    fn answer_inner(
        &self,
        plaintext: &[u8],
        context: &CallContext,
        run: Run,
        out: &mut SecretBuffer,
    ) -> Option<AfterAnswer> {
        let mut after = AfterAnswer::default();
        let fast =
            if starts_object(plaintext) { serde_json::from_slice::<InnerRequest<'_>>(plaintext).ok() } else { None };
        if let Some(mut request) = fast {
            let id = echoable_id(request.id);
            let call = Call { method: request.method.as_deref(), params: request.params.as_mut(), context, run };
            self.answer_call(id, call, &mut after, out);
            if let Some(params) = request.params.as_mut() {
                wipe_json(params);
            }
            return Some(after);
        }
        let mut inner = WipedJson(serde_json::from_slice::<Value>(plaintext).ok()?);
        match &mut inner.0 {
            Value::Array(requests) if !requests.is_empty() => {
                // The same elements unparsed, for their ids as the client wrote them (a parsed
                // number would be written back differently: `1e2` as `100.0`).
                let raw: Vec<&RawValue> = serde_json::from_slice(plaintext).unwrap_or_default();
                let mut slow_ran = false;
                out.push(b'[');
                for (i, request) in requests.iter_mut().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    if !request.is_object() {
                        let (code, message) = MethodError::InvalidRequest("not a JSON-RPC request".into()).wire();
                        jsonrpc::write_error(&Value::Null, code, &message, out);
                        continue;
                    }
                    let id = raw.get(i).map_or(RawValue::NULL, |element| batch_id(element));
                    let method = request.get("method").and_then(Value::as_str).map(str::to_owned);
                    // One slow call per batch at most: one envelope cannot queue KDFs by the thousand.
                    let slow = method.as_deref().and_then(|m| speed(m, &self.app_methods)) == Some(Speed::Slow);
                    let run = match run {
                        Run::Dispatch if slow && slow_ran => Run::RefuseBusy,
                        run => run,
                    };
                    slow_ran |= slow;
                    let params = request.get_mut("params");
                    let call = Call { method: method.as_deref(), params, context, run };
                    self.answer_call(id, call, &mut after, out);
                }
                out.push(b']');
            }
            _ => {
                let (code, message) = MethodError::InvalidRequest("not a JSON-RPC request".into()).wire();
                jsonrpc::write_error(&Value::Null, code, &message, out);
            }
        }
        Some(after)
    }

    fn answer_call<I: Serialize + ?Sized>(
        &self,
        id: &I,
        call: Call<'_>,
        after: &mut AfterAnswer,
        out: &mut SecretBuffer,
    ) {
        let Some(method) = call.method else {
            let (code, message) = MethodError::InvalidRequest("no method".into()).wire();
            return jsonrpc::write_error(id, code, &message, out);
        };
        let result = match call.run {
            Run::Dispatch => self.dispatch(method, call.params, call.context, after),
            Run::RefuseBusy => Err(MethodError::Busy),
        };
        match result {
            Ok(mut value) => {
                jsonrpc::write_ok(id, &value, out);
                wipe_json(&mut value);
            }
            Err(error) => {
                let (code, message) = error.wire();
                jsonrpc::write_error(id, code, &message, out);
            }
        }
    }

    /// Runs a built-in method from the table, or else an embedder's method.
    fn dispatch(
        &self,
        method: &str,
        params: Option<&mut Value>,
        context: &CallContext,
        after: &mut AfterAnswer,
    ) -> Result<Value, MethodError> {
        let (needs, builtin, app) = match (methods::find(method), self.app_methods.get(method)) {
            (Some(builtin), _) => (builtin.role(), Some(builtin), None),
            (None, Some(app)) => (app.role, None, Some(app)),
            (None, None) => return Err(MethodError::MethodNotFound),
        };
        let audited = app.is_some() || methods::AUDITED.contains(&method);
        // The wallet (or client) a call names, read before the handler takes (and wipes) the params.
        let named =
            params.as_deref().and_then(|p| name_param(p, builtin.is_some_and(|b| b.params().first() == Some(&"name"))));
        let result = match context.role {
            None => Err(MethodError::Revoked),
            Some(role) if !role.allows(needs) => Err(MethodError::Forbidden { method: method.to_owned(), needs }),
            Some(_) => match (builtin, app) {
                (Some(builtin), _) => builtin.call(&self.state, params, context, after),
                (None, Some(app)) => app.call(&self.state, params, context, after),
                (None, None) => Err(MethodError::MethodNotFound),
            },
        };
        let refused = result.as_ref().err().is_some_and(MethodError::is_refusal);
        // A refusal that needed no work (forbidden, revoked) names no wallet: the name is the
        // client's own text, and a run of such refusals is then one record with a count.
        let cheap_refusal = matches!(result, Err(MethodError::Forbidden { .. } | MethodError::Revoked));
        let named = if cheap_refusal { None } else { named };
        // (Read and reset: `after` is shared by the requests of a batch.)
        let nothing_to_audit = std::mem::take(&mut after.nothing_to_audit);
        let token_wallet = after.wallet.take();
        if (audited && !nothing_to_audit) || refused {
            let outcome = result.as_ref().map_or_else(MethodError::audit_outcome, |_| "ok");
            let client_call = ["add_client", "pair_client", "set_client_role", "revoke_client"].contains(&method);
            let wallet = token_wallet.or_else(|| match named {
                Some(name) if !client_call && !context.dir.is_empty() => Some(format!("{}/{name}", context.dir)),
                other => other,
            });
            self.state.audit(context.principal.name(), method, wallet, outcome);
        }
        result
    }
}

/// Whether the inner requests of an envelope are run or refused (a batch refuses each slow request
/// after its first).
#[derive(Debug, Clone, Copy)]
enum Run {
    Dispatch,
    RefuseBusy,
}

/// One inner request as `answer_call` needs it.
struct Call<'a> {
    method: Option<&'a str>,
    params: Option<&'a mut Value>,
    context: &'a CallContext,
    run: Run,
}

/// What [`Server::handle_step`] returns.
#[derive(Debug)]
pub enum Step {
    /// The answer.
    Done(Outgoing),
    /// A call to finish with [`Server::finish`] off the I/O threads.
    Slow(SlowCall),
}

/// An authenticated, decrypted call set aside because it may be slow. Its envelope's nonce is
/// already recorded: finishing it is the only way to answer it.
pub struct SlowCall {
    id: Box<RawValue>,
    accepted: Accepted,
    now_ms: u64,
}

impl fmt::Debug for SlowCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlowCall").field("session", &self.accepted.id).finish_non_exhaustive()
    }
}

/// Whether an inner body may be slow: a [`Speed::Slow`] method of the table, an embedder's method,
/// or a batch.
/// A single request the caller's `role` may not make is not slow: it is refused at once, without
/// taking a place in the host's pool.
fn is_slow(plaintext: &[u8], app_methods: &HashMap<String, AppMethod>, role: Role) -> bool {
    #[derive(Deserialize)]
    struct MethodOnly<'a> {
        #[serde(borrow, default)]
        method: Option<Cow<'a, str>>,
    }
    if !starts_object(plaintext) {
        return plaintext.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    }
    match serde_json::from_slice::<MethodOnly<'_>>(plaintext) {
        Ok(MethodOnly { method: Some(method) }) => {
            let needs = methods::find(&method).map(Method::role).or_else(|| app_methods.get(&*method).map(|a| a.role));
            let allowed = needs.is_some_and(|needs| role.allows(needs));
            allowed && speed(&method, app_methods) == Some(Speed::Slow)
        }
        _ => false,
    }
}

/// A method's speed: from the table, or [`APP_METHOD_SPEED`] for an embedder's; `None` if unknown.
fn speed(method: &str, app_methods: &HashMap<String, AppMethod>) -> Option<Speed> {
    match methods::find(method) {
        Some(builtin) => Some(builtin.speed()),
        None => app_methods.contains_key(method).then_some(APP_METHOD_SPEED),
    }
}

/// Why a large request that names no session is refused.
const MUST_NAME: &str = "a request this large must name its session (the Keyward-Session header, or its connection's)";

/// Bytes an `encrypted_request_v3` envelope adds around the base64 of its ciphertext (id, method,
/// nonce, field names), generously: the body-size check before parsing must not refuse an
/// envelope whose ciphertext is within `max_unnamed_bytes`.
const UNNAMED_ENVELOPE_SLACK: usize = 4096;

fn accept_error(error: AcceptError, named: bool) -> EnvelopeError {
    match error {
        AcceptError::NoSession => EnvelopeError::EncryptionRequired,
        AcceptError::Format(e) => EnvelopeError::Format(e.to_string()),
        AcceptError::Decryption if named => {
            EnvelopeError::Decryption("authentication failed under this session's key".into())
        }
        AcceptError::Decryption => EnvelopeError::EncryptionRequired,
        AcceptError::Replay => EnvelopeError::Replay,
        AcceptError::MustName => EnvelopeError::Format(MUST_NAME.into()),
    }
}

/// The request id to echo: a string, a number or `null` as the client wrote it; anything else (an
/// object, an array, a number no JSON library can hold, like `2e2121`) is answered with `null`, so
/// every client can parse the answer.
fn echoable_id(id: Option<&RawValue>) -> &RawValue {
    let Some(raw) = id else { return RawValue::NULL };
    let echoable = match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(_) | Value::Null) => true,
        Ok(Value::Number(n)) => n.as_f64().is_some_and(f64::is_finite),
        _ => false,
    };
    if echoable { raw } else { RawValue::NULL }
}

/// The id of a batch's request, by [`echoable_id`]'s rules; `null` if the request is no object.
fn batch_id(request: &RawValue) -> &RawValue {
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
    }
    if !starts_object(request.get().as_bytes()) {
        return RawValue::NULL;
    }
    serde_json::from_str::<IdOnly<'_>>(request.get()).map_or(RawValue::NULL, |request| echoable_id(request.id))
}

/// Whether a JSON text is an object (serde would also read a struct from an array).
fn starts_object(text: &[u8]) -> bool {
    text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// An outer request, parsed in place.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

/// An inner request, parsed in place from the decrypted body.
#[derive(Deserialize)]
struct InnerRequest<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(default)]
    params: Option<Value>,
}

/// `encrypted_request_v3` params: named (no other names) or positional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeParams<'a> {
    #[serde(borrow)]
    nonce: Cow<'a, str>,
    #[serde(borrow)]
    body_enc: Cow<'a, str>,
}

impl<'a> EnvelopeParams<'a> {
    fn parse(raw: &'a RawValue) -> Option<Self> {
        if let Ok(params) = serde_json::from_str::<EnvelopeParams<'a>>(raw.get()) {
            return Some(params);
        }
        let (nonce, body_enc) = serde_json::from_str::<(Cow<'a, str>, Cow<'a, str>)>(raw.get()).ok()?;
        Some(Self { nonce, body_enc })
    }
}

#[derive(Serialize)]
struct EnvelopeAnswer<'a> {
    nonce: &'a str,
    body_enc: &'a str,
}

fn plain_error<I: Serialize + ?Sized>(id: &I, error: &EnvelopeError, session: Option<SessionId>) -> Outgoing {
    let (code, message) = error.wire();
    Outgoing { body: jsonrpc::error_bytes(id, code, &message), session, created_session: false, unmatched: false }
}

/// The `name` param of a call whose first param is `name` (positional or by name), as the audit
/// log records it: at most 128 characters.
fn name_param(params: &Value, first_is_name: bool) -> Option<String> {
    if !first_is_name {
        return None;
    }
    let name = match params {
        Value::Object(map) => map.get("name"),
        Value::Array(items) => items.first(),
        _ => None,
    }?;
    name.as_str().map(|name| name.chars().take(128).collect())
}
