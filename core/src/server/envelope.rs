//! The envelope layer of the server: `init_secure_api` in plaintext, then each
//! `encrypted_request_v3` found a session (named, or by trying keys), authenticated, decrypted,
//! parsed once, and its answer sealed under the session's key.

use serde_json::Value;
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use super::dispatch::{Inner, Run};
use super::wire::{EnvelopeParams, envelope_answer, plain_error};
use super::{Incoming, Outgoing, Server, SlowCall, Step};
use crate::envelope::{self, Cipher};
use crate::jsonrpc::{self, EnvelopeError};
use crate::principal::{Principal, Role};
use crate::secret::SecretBuffer;
use crate::session::{self, AcceptError, SessionId};
use crate::state::{CallContext, lock};

/// Initial capacity of an inner answer buffer: large enough for every built-in answer, so that it
/// rarely grows. When it does (a batch, a long id), the [`SecretBuffer`] wipes the block it leaves.
const ANSWER_CAPACITY: usize = 4096;

/// Why a large request that names no session is refused.
pub(super) const MUST_NAME: &str =
    "a request this large must name its session (the Keyward-Session header, or its connection's)";

/// An envelope accepted, decrypted and parsed: everything its answer needs. The plaintext is
/// already wiped; the parsed params are wiped when this is dropped.
pub(crate) struct Opened {
    /// The session's key, to seal the answer.
    cipher: std::sync::Arc<Cipher>,
    /// Who calls, on which session, in which directory (the role is read when the call runs).
    context: CallContext,
    /// The inner body.
    inner: Inner,
}

impl Opened {
    pub(super) fn session(&self) -> SessionId {
        self.context.session
    }

    pub(super) fn principal(&self) -> &Principal {
        &self.context.principal
    }
}

impl Server {
    pub(super) fn handle_plain_init(
        &self,
        id: &RawValue,
        params: Option<&RawValue>,
        principal: &Principal,
        now_ms: u64,
    ) -> Outgoing {
        let outgoing = self.plain_init(id, params, principal, now_ms);
        crate::secret::scrub_stack();
        outgoing
    }

    fn plain_init(&self, id: &RawValue, params: Option<&RawValue>, principal: &Principal, now_ms: u64) -> Outgoing {
        let params = params.and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok());
        let (public, cipher) = match self.state.new_session_key(params) {
            Ok(pair) => pair,
            Err(why) => return plain_error(id, &EnvelopeError::InitParams(why), None),
        };
        let session = SessionId::from_bytes(self.state.random());
        if lock(&self.sessions).insert(session, cipher, String::new(), principal.clone(), now_ms).is_err() {
            let max = self.state.config.sessions.max_per_principal;
            let grace_ms = self.state.config.sessions.grace_ms;
            return plain_error(id, &EnvelopeError::SessionsAllNew { max, grace_ms }, None);
        }
        let mut body = Vec::with_capacity(128);
        jsonrpc::write_ok(id, &hex::encode(public.serialize()), &mut body);
        Outgoing { body, session: Some(session), created_session: true, unmatched: false }
    }

    pub(super) fn handle_encrypted(
        &self,
        id: &RawValue,
        params: Option<&RawValue>,
        incoming: Incoming<'_>,
        role: Role,
    ) -> Step {
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
        let opened = match self.open_envelope(incoming, &nonce, ciphertext) {
            Ok(Ok(opened)) => opened,
            Ok(Err(session)) => {
                // Authentic, but the plaintext is no JSON: its nonce is recorded all the same.
                let why = "the decrypted body is not UTF-8 JSON";
                crate::secret::scrub_stack_shallow();
                return Step::Done(plain_error(id, &EnvelopeError::Decryption(why.into()), Some(session)));
            }
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
        if opened.inner.is_slow(role) {
            // The request (it may hold a password) was decrypted on this thread, which goes on to
            // serve other clients: wipe what AES-GCM left on its stack before handing the call on.
            crate::secret::scrub_stack_shallow();
            return Step::Slow(SlowCall { id: id.to_owned(), opened });
        }
        let mut opened = opened;
        let outgoing = self.answer_opened(id, &mut opened, Run::Dispatch, Some(role));
        drop(opened);
        // The decrypted request (a token) and the answer passed through AES-GCM's stack buffers.
        crate::secret::scrub_stack_shallow();
        Step::Done(outgoing)
    }

    /// Finds the envelope's session, authenticates and decrypts it, records its nonce, and parses
    /// the plaintext once (then wipes it). `Ok(Err(session))`: authentic, but no JSON. Keys are tried with
    /// the session table unlocked (it is locked only to pick candidates and to commit), so a
    /// stranger's trials never hold up other clients' calls.
    fn open_envelope(
        &self,
        incoming: Incoming<'_>,
        nonce: &[u8; envelope::NONCE_LEN],
        ciphertext: Vec<u8>,
    ) -> Result<Result<Opened, SessionId>, AcceptError> {
        let hint = incoming.session;
        let now_ms = incoming.now_ms;
        let mut buffer = Zeroizing::new(ciphertext);
        let (id, opened_by) = match incoming.session {
            Some(id) => {
                let cipher = lock(&self.sessions).cipher(&id, incoming.principal.name(), now_ms)?;
                session::open_in_place(&cipher, nonce, &mut buffer)?;
                (id, cipher)
            }
            None => {
                if buffer.len() > self.state.config.sessions.max_unnamed_bytes {
                    return Err(AcceptError::MustName);
                }
                let recent = incoming.recent.and_then(|id| {
                    Some((id, lock(&self.sessions).cipher(&id, incoming.principal.name(), now_ms).ok()?))
                });
                let found = match recent.map(|pair| session::try_keys(&[pair], nonce, &buffer, false)) {
                    Some(Ok(found)) => found,
                    Some(Err(error @ AcceptError::Format(_))) => return Err(error),
                    _ => {
                        let others = lock(&self.sessions).by_recent_use(
                            incoming.recent.as_ref(),
                            incoming.principal.name(),
                            now_ms,
                        );
                        session::try_keys(&others, nonce, &buffer, true)?
                    }
                };
                buffer = found.plaintext;
                (found.id, found.cipher)
            }
        };
        // A re-key between the trial and here refuses the envelope (commit checks the key).
        let (cipher, dir, principal) = match lock(&self.sessions).commit(&id, &opened_by, nonce, now_ms) {
            Err(AcceptError::Decryption) if hint.is_none() => return Err(AcceptError::NoSession),
            other => other?,
        };
        let Some(inner) = Inner::parse(&buffer, &self.app_methods) else { return Ok(Err(id)) };
        drop(buffer);
        let context = CallContext { principal, role: None, session: id, dir, now_ms };
        Ok(Ok(Opened { cipher, context, inner }))
    }

    /// Answers an opened envelope: dispatch (or refuse), seal, and the session updates it asks for.
    pub(super) fn answer_opened(&self, id: &RawValue, opened: &mut Opened, run: Run, role: Option<Role>) -> Outgoing {
        let session = Some(opened.context.session);
        opened.context.role = role;
        // Encrypted in place below: the plaintext answer is overwritten by its ciphertext.
        let mut answer = SecretBuffer::with_capacity(ANSWER_CAPACITY);
        let after = self.answer_inner(&mut opened.inner, &opened.context, run, &mut answer);
        // Room for the tag now, so that sealing does not grow the `Vec` (leaving the plaintext behind).
        answer.reserve(envelope::TAG_LEN);
        let reply_nonce: [u8; envelope::NONCE_LEN] = self.state.random();
        if !opened.cipher.encrypt_in_place(&reply_nonce, answer.as_mut_vec()) {
            return plain_error(id, &EnvelopeError::Encryption, session);
        }
        if after.dir.is_some() || after.rekey.is_some() || after.revoked.is_some() {
            let mut table = lock(&self.sessions);
            if let Some(dir) = after.dir {
                table.set_dir(&opened.context.session, dir);
            }
            if let Some(cipher) = after.rekey {
                table.rekey(opened.context.session, cipher, opened.context.now_ms);
            }
            if let Some(revoked) = after.revoked {
                table.remove_principal(&revoked);
            }
        }
        let body = envelope_answer(id, &reply_nonce, answer.as_mut_vec());
        Outgoing { body, session, created_session: false, unmatched: false }
    }
}

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
