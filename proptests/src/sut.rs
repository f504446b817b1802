//! The system under test: a real [`Server`] over a [`FailingStore`], driven by the requests the
//! model's [`Step`]s describe, with every answer and, after every op, the invariants checked.
//!
//! The server knows the model's principals: `local` is built in, the others with a role are
//! registered at start (`Server::add_client`, one uid each); every request goes in as the principal
//! the model says sends it.
//!
//! Checks after each request: the route (which session, or which plaintext error), the inner answer,
//! that an answer authenticates under its own session's key and under no other live key, that reply
//! nonces never repeat, that a refused request or a `Forbidden` call changed nothing (store, vault,
//! armed failure), that the vault gained a masked seed only on a successful `open_wallet`, and after
//! a new session that the table holds exactly the model's sessions, per principal (the server
//! sweeps expired sessions before it evicts one).
//!
//! Invariants after each op: the vault holds masked seeds only of wallets whose token is current (or
//! expired but not yet swept), exactly those of current tokens after `handle_timeout`, nothing after
//! `shutdown`, and never a known master key in the clear; the store holds what the model says
//! (wallets, accounts, KDF parameters, configs); after a failed write every wallet still opens with
//! its model password; the live session count, in all and per principal, is at least the model's,
//! and equal after a timeout.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keyward_core::envelope::{self, Cipher, NONCE_LEN};
use keyward_core::keys;
use keyward_core::secret::{Entropy, MasterKey, Password};
use keyward_core::seed_record::{KdfParams, SeedRecord};
use keyward_core::store::{Account, StoredWallet};
use keyward_core::{Incoming, MemoryStore, Outgoing, Server, SessionId, Store, WalletKey};
use keyward_testkit::VECTOR_MNEMONIC;
use serde_json::{Value, json};

use crate::failing_store::{FailPlan, FailingStore};
use crate::model::{
    self, Answer, CreateKind, DIRS, EnvStep, ErrPat, Evicted, Form, GARBAGE_PLAIN_CALL, Garbage, Hint, KEPT_ENVELOPES,
    LABELS, LEGACY_ENTROPY, LEGACY_KDF, LOCAL, MESSAGE, Model, NAME_PARAMS, OkVal, Origin, PASSWORDS, PATHS,
    PRINCIPALS, RAW_BODIES, Resolved, Route, SET_DIRS, Source, Step, Tamper, TokenArg, TokenMethod, TokenStatus,
    WALLET_NAMES,
};
use crate::peer::{self, KeyPair, PeerRng, Sealed};

/// Counts of what runs exercised (routes, answers), for `KEYWARD_STATS=1` reports.
static STATS: std::sync::Mutex<BTreeMap<String, u64>> = std::sync::Mutex::new(BTreeMap::new());

fn bump(what: impl FnOnce() -> String) {
    if std::env::var_os("KEYWARD_STATS").is_some() {
        *STATS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(what()).or_default() += 1;
    }
}

/// The counts gathered so far (only with `KEYWARD_STATS` set).
pub fn stats() -> BTreeMap<String, u64> {
    STATS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// What the tests learned about one wallet incarnation.
#[derive(Debug, Default)]
struct Observed {
    mnemonic: Option<String>,
    master: Option<MasterKey>,
    public_keys: BTreeMap<u8, String>,
}

/// Everything compared before and after a request that must change nothing.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    wallets: Vec<Option<StoredWallet>>,
    configs: Vec<Option<Vec<u8>>>,
    vault: Vec<u8>,
    open: usize,
    armed: Option<u32>,
    writes: u64,
}

/// The real server and the client-side state that mirrors the model.
#[derive(Debug)]
pub struct Sut {
    /// The server under test.
    pub server: Server,
    /// Its store's failure switch.
    pub plan: Arc<FailPlan>,
    /// Its store, seen directly.
    pub store: Arc<MemoryStore>,
    rng: PeerRng,
    next_id: u64,
    ciphers: BTreeMap<u32, Cipher>,
    rekey_pair: Option<KeyPair>,
    session_ids: BTreeMap<u32, SessionId>,
    tokens: Vec<String>,
    kept: Vec<Vec<Vec<u8>>>,
    observed: BTreeMap<u32, Observed>,
    reply_nonces: HashSet<[u8; NONCE_LEN]>,
    chunk_owner: HashMap<Vec<u8>, u32>,
    failures_checked: u64,
}

fn wallet_key(dir: u8, name: u8) -> WalletKey {
    WalletKey { dir: DIRS[usize::from(dir)].to_owned(), name: WALLET_NAMES[usize::from(name)].to_owned() }
}

fn name_param(name: u8) -> Value {
    NAME_PARAMS[usize::from(name) % NAME_PARAMS.len()].map_or(Value::Null, Value::from)
}

fn password(pw: u8) -> &'static str {
    PASSWORDS[usize::from(pw) % PASSWORDS.len()]
}

fn parse(body: &[u8]) -> Value {
    match crate::answer::parse_answer(body) {
        Some(value) => value,
        None => panic!("the server's answer is not JSON: {}", String::from_utf8_lossy(body)),
    }
}

fn error_of(answer: &Value) -> (i64, String) {
    let error = answer.get("error").unwrap_or_else(|| panic!("expected an error answer, got {answer}"));
    let code = error["code"].as_i64().unwrap_or_else(|| panic!("error without a code: {answer}"));
    (code, error["message"].as_str().unwrap_or_default().to_owned())
}

fn matches(pattern: &ErrPat, code: i64, message: &str) -> bool {
    pattern.code == code && message.contains(pattern.contains)
}

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The entropy of a wallet whose origin says what it is.
fn known_entropy(origin: Origin) -> Option<Entropy> {
    match origin {
        Origin::Restored => keys::entropy_of(VECTOR_MNEMONIC),
        Origin::Grin => keys::entropy_of(model::GRIN_MNEMONIC),
        Origin::Legacy => Entropy::from_bytes(LEGACY_ENTROPY.to_vec()),
        Origin::Random(_) => None,
    }
}

impl Default for Sut {
    fn default() -> Self {
        Self::new()
    }
}

impl Sut {
    /// A fresh server with the model's configuration, its registered clients and fixed randomness.
    pub fn new() -> Self {
        let store = Arc::new(MemoryStore::new());
        let plan = Arc::new(FailPlan::default());
        let failing = FailingStore::new(Arc::clone(&store), Arc::clone(&plan));
        let server = Server::new(model::config(), Box::new(failing), [0x5e; 32]);
        for record in model::registered_clients() {
            let name = record.name.clone();
            server.add_client(record).unwrap_or_else(|e| panic!("registering {name}: {e}"));
        }
        for (name, role) in PRINCIPALS {
            assert_eq!(server.role_of(name), role, "the role of {name}");
        }
        Self {
            server,
            plan,
            store,
            rng: PeerRng::new([0x42; 32]),
            next_id: 1,
            ciphers: BTreeMap::new(),
            rekey_pair: None,
            session_ids: BTreeMap::new(),
            tokens: Vec::new(),
            kept: vec![Vec::new(); model::CLIENTS],
            observed: BTreeMap::new(),
            reply_nonces: HashSet::new(),
            chunk_owner: HashMap::new(),
            failures_checked: 0,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn hint(&self, hint: Hint) -> Option<SessionId> {
        match hint {
            Hint::None => None,
            Hint::Session(s) => Some(self.session_ids[&s]),
            Hint::Bogus => Some(model::bogus_session()),
        }
    }

    fn handle(&self, body: &[u8], session: Option<SessionId>, principal: u8, now_ms: u64) -> Outgoing {
        let principal = Model::name_of(principal);
        self.server.handle(Incoming { body, session, recent: None, principal, now_ms })
    }

    fn snapshot(&self) -> Snapshot {
        let mut wallets = Vec::new();
        for dir in 0..2 {
            for name in 0..2 {
                wallets.push(self.store.load_wallet(&wallet_key(dir, name)).expect("memory store reads"));
            }
        }
        let configs = DIRS.iter().map(|d| self.store.load_config(d).expect("memory store reads")).collect();
        Snapshot {
            wallets,
            configs,
            vault: self.server.vault_masked_bytes(),
            open: self.server.open_wallet_count(),
            armed: self.plan.armed(),
            writes: self.plan.writes(),
        }
    }

    /// Runs the model's steps for the op it just applied, then checks the invariants.
    pub fn apply(&mut self, model: &Model) {
        for step in &model.steps {
            match step {
                Step::Init { now, c: _, principal, bad_key, session, key, evicted } => {
                    self.init(*now, *principal, *bad_key, *session, *key);
                    self.check_session_table(model, *principal, *bad_key, *evicted);
                }
                Step::Envelope(step) => self.envelope(step, model),
                Step::Garbage { now, garbage, code, route } => self.garbage(*now, garbage, *code, *route),
                Step::Timeout { now } => self.server.handle_timeout(*now),
                Step::Drop { session, live } => {
                    if let Some(session) = session {
                        let dropped = self.server.drop_session(&self.session_ids[session]);
                        assert!(dropped || !live, "drop_session did not find a live session");
                    }
                }
                Step::Shutdown => self.server.shutdown(),
                Step::Arm(k) => self.plan.arm(*k),
                Step::Plant { dir, name, pw } => self.plant(*dir, *name, *pw),
            }
        }
        self.check(model);
    }

    fn init(&mut self, now: u64, principal: u8, bad_key: bool, session: u32, key: u32) {
        let pair = self.rng.key_pair();
        let id = self.id();
        let public = if bad_key { &pair.public_hex[2..] } else { &pair.public_hex[..] };
        let known = Model::role_of(principal).is_some();
        let before = (bad_key || !known).then(|| self.snapshot());
        let out = self.handle(&peer::init_body(id, public), None, principal, now);
        let answer = parse(&out.body);
        if !known {
            let before = before.expect("taken");
            self.check_revoked(&answer, &out);
            assert_eq!(before, self.snapshot(), "an unknown principal's init changed state");
            return;
        }
        assert_eq!(answer["id"], json!(id), "init answer id: {answer}");
        if let Some(before) = before {
            assert_eq!(error_of(&answer).0, -32602, "x-only key: {answer}");
            assert!(!out.created_session && out.session.is_none(), "a refused init made a session");
            assert_eq!(before, self.snapshot(), "a refused init changed state");
            return;
        }
        assert!(out.created_session, "init did not create a session: {answer}");
        let server_key = answer["result"]["Ok"].as_str().unwrap_or_else(|| panic!("init answer: {answer}"));
        let cipher = pair.cipher_with(server_key).unwrap_or_else(|| panic!("bad server key {server_key}"));
        let id = out.session.expect("a created session has an id");
        assert!(!self.session_ids.values().any(|known| *known == id), "session id reused");
        self.session_ids.insert(session, id);
        self.ciphers.insert(key, cipher);
    }

    /// After a plaintext init: a new session made room exactly as the model says. The server drops
    /// every expired session before it evicts, so its table is the model's, per principal.
    fn check_session_table(&self, model: &Model, principal: u8, bad_key: bool, evicted: Option<Evicted>) {
        if bad_key || Model::role_of(principal).is_none() {
            return;
        }
        bump(|| match evicted {
            None => "init: no eviction".to_owned(),
            Some(e) => {
                let whose = if e.principal == principal { "own" } else { "another's" };
                let rule = if e.own_cap { "per-principal cap" } else { "full table" };
                format!("init: {rule} evicts {whose} {} session", if e.used { "used" } else { "never-used" })
            }
        });
        assert_eq!(self.server.session_count(), model.sessions.len(), "live sessions after an init");
        for (p, (name, _)) in (0u8..).zip(PRINCIPALS) {
            assert_eq!(
                self.server.session_count_of(name),
                model.sessions_of(p).count(),
                "sessions of {name} after an init"
            );
        }
    }

    /// The answer to any request of an unknown principal: refused before anything is parsed.
    fn check_revoked(&self, answer: &Value, out: &Outgoing) {
        assert_eq!(error_of(answer), (-32099, "Forbidden: this client is revoked".to_owned()), "{answer}");
        assert_eq!(answer["id"], Value::Null, "an unknown principal's answer echoes nothing: {answer}");
        assert!(!out.created_session && out.session.is_none(), "an unknown principal's request reached a session");
    }

    fn token_value(&self, arg: TokenArg) -> Option<Value> {
        Some(match arg {
            TokenArg::Issued { index, upper: false } => json!(self.tokens[index as usize]),
            TokenArg::Issued { index, upper: true } => json!(self.tokens[index as usize].to_uppercase()),
            TokenArg::Flipped(index) => {
                let mut token = self.tokens[index as usize].clone().into_bytes();
                token[0] = if token[0] == b'0' { b'1' } else { b'0' };
                json!(String::from_utf8(token).expect("hex is ASCII"))
            }
            TokenArg::Wrong => json!("11".repeat(32)),
            TokenArg::Null => Value::Null,
            TokenArg::Malformed => json!("abc"),
            TokenArg::Number => json!(5),
            TokenArg::Missing => return None,
        })
    }

    /// The inner plaintext of a call and its inner id (`None` for raw bodies).
    fn plaintext(&mut self, call: &Resolved) -> (Vec<u8>, Option<u64>) {
        let params = match call {
            Resolved::Token(method, arg) => {
                let mut params = serde_json::Map::new();
                if let Some(token) = self.token_value(*arg) {
                    params.insert("token".into(), token);
                }
                match *method {
                    TokenMethod::Accounts => {}
                    TokenMethod::CreateAccount(i) | TokenMethod::SetActive(i) => {
                        params.insert("label".into(), json!(LABELS[usize::from(i) % LABELS.len()]));
                    }
                    TokenMethod::PublicKey(p) => {
                        params.insert("path".into(), json!(PATHS[usize::from(p) % PATHS.len()]));
                    }
                    TokenMethod::Sign(p) => {
                        params.insert("path".into(), json!(PATHS[usize::from(p) % PATHS.len()]));
                        params.insert("message".into(), json!(MESSAGE));
                    }
                }
                Value::Object(params)
            }
            Resolved::Plain(call) => match *call {
                model::Call::Raw(i) => return (RAW_BODIES[usize::from(i) % RAW_BODIES.len()].to_vec(), None),
                model::Call::Reinit { bad_key } => {
                    let pair = self.rng.key_pair();
                    let public = if bad_key { pair.public_hex[2..].to_owned() } else { pair.public_hex.clone() };
                    self.rekey_pair = Some(pair);
                    json!({"ecdh_pubkey": public})
                }
                model::Call::TopDir | model::Call::ListWallets => json!({}),
                model::Call::SetDir(i) => json!({"dir": SET_DIRS[usize::from(i) % SET_DIRS.len()].0}),
                model::Call::CreateConfig { valid } => {
                    let chain = if valid { "Mainnet" } else { "Moonnet" };
                    json!({"chain_type": chain, "wallet_config": null, "logging_config": null, "tor_config": null})
                }
                model::Call::Create { name, kind, pw } => {
                    let (mnemonic, length) = match kind {
                        CreateKind::Random(i) => (Value::Null, model::LENGTHS[usize::from(i) % model::LENGTHS.len()]),
                        CreateKind::Restore { zero_len } => (json!(VECTOR_MNEMONIC), if zero_len { 0 } else { 32 }),
                        CreateKind::BadLength => (Value::Null, 15),
                        CreateKind::BadMnemonic => (json!("abandon abandon abandon"), 0),
                    };
                    json!({"name": name_param(name), "mnemonic": mnemonic, "mnemonic_length": length, "password": password(pw)})
                }
                model::Call::ImportGrin { name, right_pw } => {
                    let (seed, salt, nonce) = model::GRIN_SEED;
                    let file = json!({"encrypted_seed": seed, "salt": salt, "nonce": nonce});
                    let pw = if right_pw { "testpass" } else { "pw0" };
                    json!({"name": name_param(name), "wallet_seed": file, "password": pw})
                }
                model::Call::Open { name, pw }
                | model::Call::Mnemonic { name, pw }
                | model::Call::Delete { name, pw } => {
                    json!({"name": name_param(name), "password": password(pw)})
                }
                model::Call::Close { name } => json!({"name": name_param(name)}),
                model::Call::ChangePassword { name, old, new } => {
                    json!({"name": name_param(name), "old": password(old), "new": password(new)})
                }
                model::Call::Token { .. } => unreachable!("token calls are resolved"),
            },
        };
        let method = call.method().expect("only odd bodies name no method");
        let id = self.id();
        (peer::inner_body(id, method, &params), Some(id))
    }

    fn build(&mut self, sealed: &Sealed, form: Form, tamper: Option<Tamper>) -> (Vec<u8>, u64) {
        let outer = self.id();
        let hex_nonce = hex::encode(sealed.nonce);
        let body = match (form, tamper) {
            (Form::Named, None) => sealed.body(outer, &hex_nonce, false),
            (Form::Positional, None) => sealed.body(outer, &hex_nonce, true),
            (Form::UpperNonce, None) => sealed.body(outer, &hex_nonce.to_uppercase(), false),
            (_, Some(how)) => {
                let mut damaged = sealed.clone();
                let mut nonce = hex_nonce;
                let mut cut = None;
                let mut bytes = BASE64.decode(&sealed.body_enc).expect("own base64");
                match how {
                    Tamper::FlipCipher(n) => {
                        let n = usize::from(n);
                        let at = n % bytes.len();
                        bytes[at] ^= 1 << (n / bytes.len() % 8);
                        damaged.body_enc = BASE64.encode(&bytes);
                    }
                    Tamper::TruncateCipher { short, n } => {
                        let n = usize::from(n);
                        let keep = if short {
                            n % envelope::TAG_LEN
                        } else {
                            envelope::TAG_LEN + n % (bytes.len() - envelope::TAG_LEN)
                        };
                        bytes.truncate(keep);
                        damaged.body_enc = BASE64.encode(&bytes);
                    }
                    Tamper::FlipNonce(at) => {
                        let mut text = nonce.into_bytes();
                        let at = usize::from(at) % (2 * NONCE_LEN);
                        let digit =
                            u8::from_str_radix(std::str::from_utf8(&text[at..=at]).expect("hex"), 16).expect("hex");
                        text[at] = b"0123456789abcdef"[usize::from(digit ^ 1)];
                        nonce = String::from_utf8(text).expect("hex");
                    }
                    Tamper::ShortNonce => nonce.truncate(2 * NONCE_LEN - 2),
                    Tamper::BadBase64 => damaged.body_enc.insert(0, '*'),
                    Tamper::TruncateBody(n) => cut = Some(usize::from(n)),
                }
                let mut body = damaged.body(outer, &nonce, false);
                if let Some(n) = cut {
                    body.truncate(n % body.len());
                }
                body
            }
        };
        (body, outer)
    }

    fn envelope(&mut self, e: &EnvStep, model: &Model) {
        let c = usize::from(e.c);
        let (body, outer, inner_id, request_nonce) = match &e.source {
            Source::Replay(index) => (self.kept[c][*index].clone(), None, None, None),
            Source::Fresh { call, form, tamper } => {
                let (plaintext, inner_id) = self.plaintext(call);
                let cipher = self.ciphers[&e.key].clone();
                let sealed = self.rng.seal(&cipher, &plaintext);
                let (body, outer) = self.build(&sealed, *form, *tamper);
                (body, Some(outer), inner_id, Some(sealed.nonce))
            }
        };
        let hint = self.hint(e.hint);
        let accepted = matches!(e.route, Route::Accepted(_));
        bump(|| {
            let kind = match &e.source {
                Source::Replay(_) => "replay".to_owned(),
                Source::Fresh { tamper: Some(t), .. } => {
                    format!("tamper {t:?}").split(['(', ' ', '{']).take(2).collect::<Vec<_>>().join(" ")
                }
                Source::Fresh { call, .. } => {
                    format!("{call:?}").split(['(', ' ', '{']).take(2).collect::<Vec<_>>().join(" ")
                }
            };
            let answer = match &e.answer {
                Some(Answer::Ok(ok)) => format!("Ok {}", format!("{ok:?}").split(['(', ' ', '{']).next().unwrap_or("")),
                Some(Answer::Err(p)) => format!("Err {}", p[0].contains),
                Some(Answer::Forbidden { .. }) => "Forbidden".to_owned(),
                Some(other) => format!("{other:?}").chars().take(12).collect(),
                None => String::new(),
            };
            // Who sends it: the sealer's current principal, or another (a stolen envelope, or a
            // client that became another principal: then its old envelopes may be its old
            // principal's, and a replay of one is still a replay); and whose token it carries.
            let sender = if model.principal_of(e.c) == e.principal { "" } else { " [sent as another]" };
            let token = match &e.source {
                Source::Fresh { call: Resolved::Token(_, TokenArg::Issued { index, .. }), .. }
                    if model.tokens[*index as usize].principal != e.principal =>
                {
                    " [another's token]"
                }
                _ => "",
            };
            // A password check while another principal is throttled on the same wallet.
            let throttle = match (&e.source, e.route) {
                (Source::Fresh { call: Resolved::Plain(call), .. }, Route::Accepted(s)) => {
                    let name = match *call {
                        model::Call::Open { name, .. }
                        | model::Call::Mnemonic { name, .. }
                        | model::Call::Delete { name, .. }
                        | model::Call::ChangePassword { name, .. } => model::name_key(name),
                        _ => None,
                    };
                    let wallet = name.zip(model.sessions.get(&s)).map(|(name, session)| (session.dir, name));
                    let others = |((p, key), t): (&(u8, (u8, u8)), &model::ThrottleM)| {
                        Some(*key) == wallet && *p != e.principal && t.next_allowed > e.now
                    };
                    if model.throttle.iter().any(others) { " [another principal throttled here]" } else { "" }
                }
                _ => "",
            };
            let route = format!("{:?}", e.route);
            format!("{kind:<28} {:<12} {answer}{sender}{token}{throttle}", route.split('(').next().unwrap_or(""))
        });
        let forbidden = matches!(e.answer, Some(Answer::Forbidden { .. }));
        let before = (!accepted || forbidden).then(|| self.snapshot());
        let out = self.handle(&body, hint, e.principal, e.now);
        let answer = parse(&out.body);
        assert!(!out.created_session, "an envelope created a session");
        if !accepted && let Some(before) = before {
            self.check_refused(&answer, &out, e.route, hint, outer);
            assert_eq!(before, self.snapshot(), "a refused envelope ({:?}) changed state", e.route);
            self.track_vault(None);
            return;
        }
        let Route::Accepted(session) = e.route else { unreachable!("accepted") };
        assert_eq!(out.session, Some(self.session_ids[&session]), "answered by another session: {answer}");
        if let Some(outer) = outer {
            assert_eq!(answer["id"], json!(outer), "outer id: {answer}");
        }
        let kept = &mut self.kept[c];
        if kept.len() >= KEPT_ENVELOPES {
            kept.remove(0);
        }
        kept.push(body);
        let expected = e.answer.as_ref().expect("an accepted envelope has an answer");
        if *expected == Answer::NotJson {
            let (code, message) = error_of(&answer);
            assert!(code == -32002 && message.contains("not UTF-8 JSON"), "non-JSON plaintext: {answer}");
            self.track_vault(None);
            return;
        }
        let (nonce, ciphertext) =
            peer::envelope_of(&answer).unwrap_or_else(|| panic!("expected an encrypted answer, got {answer}"));
        assert!(self.reply_nonces.insert(nonce), "the server reused a reply nonce");
        assert_ne!(Some(nonce), request_nonce, "the reply nonce equals the request's");
        let plaintext = self.ciphers[&e.key]
            .open_bytes(&nonce, &ciphertext)
            .unwrap_or_else(|_| panic!("the answer does not authenticate under the sender's key"));
        for key in model.live_keys() {
            if key != e.key
                && let Some(other) = self.ciphers.get(&key)
            {
                assert!(other.open_bytes(&nonce, &ciphertext).is_err(), "another session's key opens the answer");
            }
        }
        let inner: Value = serde_json::from_slice(&plaintext).expect("the inner answer is JSON");
        let token = self.check_answer(&inner, expected, inner_id, model);
        if let Some(before) = before {
            assert_eq!(before, self.snapshot(), "a forbidden call changed state: {inner}");
        }
        if let Some(new_key) = e.rekey_to {
            let server_key = inner["result"]["Ok"].as_str().expect("re-key answer");
            let pair = self.rekey_pair.take().expect("a re-key call drew a key pair");
            self.ciphers.insert(new_key, pair.cipher_with(server_key).expect("server key"));
        }
        self.track_vault(token);
    }

    fn check_refused(&self, answer: &Value, out: &Outgoing, route: Route, hint: Option<SessionId>, outer: Option<u64>) {
        if route == Route::Revoked {
            return self.check_revoked(answer, out);
        }
        let (code, message) = error_of(answer);
        let ok = match route {
            Route::NoSession => code == -32001,
            Route::Decryption => code == -32002 && message.starts_with("Decryption error"),
            Route::Replay => code == -32002 && message.contains("replayed nonce"),
            Route::Format => {
                code == -32002 && message.starts_with("Encrypted request format error") && !message.contains("replay")
            }
            Route::Parse => code == -32700,
            Route::Accepted(_) | Route::Revoked => unreachable!("refused here"),
        };
        assert!(ok, "expected {route:?}, got {answer}");
        assert_eq!(out.session, hint, "a refused envelope's answer names another session");
        if route == Route::Parse {
            assert_eq!(answer["id"], Value::Null);
        } else if let Some(outer) = outer {
            assert_eq!(answer["id"], json!(outer), "outer id: {answer}");
        }
    }

    /// Checks an inner answer; returns the new token's number if it is an `open_wallet` answer.
    fn check_answer(&mut self, inner: &Value, expected: &Answer, id: Option<u64>, model: &Model) -> Option<u32> {
        if let Answer::Whole(whole) = expected {
            assert_eq!(inner, whole, "inner answer");
            return None;
        }
        assert_eq!(inner["id"], json!(id), "inner id: {inner}");
        let value = match expected {
            Answer::Err(patterns) => {
                let (code, message) = error_of(inner);
                assert!(
                    patterns.iter().any(|p| matches(p, code, &message)),
                    "expected one of {patterns:?}, got {inner}"
                );
                return None;
            }
            Answer::Forbidden { method, needs } => {
                let message = format!("Forbidden: {method} needs the {needs} role");
                assert_eq!(error_of(inner), (-32099, message), "{inner}");
                return None;
            }
            Answer::Ok(ok) => match inner.get("result").and_then(|r| r.get("Ok")) {
                Some(value) => (ok, value),
                None => panic!("expected {ok:?}, got {inner}"),
            },
            Answer::Whole(_) | Answer::NotJson => unreachable!("handled"),
        };
        match value {
            (OkVal::Null, value) => assert_eq!(*value, Value::Null),
            (OkVal::Exact(exact), value) => assert_eq!(value, exact),
            (OkVal::ServerKey, value) => {
                let text = value.as_str().unwrap_or_default();
                assert!(is_lower_hex(text, 66) && envelope::parse_public_key(text).is_ok(), "server key {value}");
            }
            (OkVal::Token(t), value) => {
                let text = value.as_str().unwrap_or_default();
                assert!(is_lower_hex(text, 64), "token {value}");
                assert_eq!(self.tokens.len() as u32, *t, "token numbering");
                assert!(!self.tokens.iter().any(|known| known == text), "a token was issued twice");
                self.tokens.push(text.to_owned());
                return Some(*t);
            }
            (OkVal::Mnemonic { incarnation, origin }, value) => {
                let words = value.as_str().unwrap_or_else(|| panic!("mnemonic {value}")).to_owned();
                self.check_mnemonic(*incarnation, *origin, words);
            }
            (OkVal::PublicKey { incarnation, origin, path }, value) => {
                let text = value.as_str().unwrap_or_default();
                assert!(is_lower_hex(text, 66), "public key {value}");
                self.check_public_key(*incarnation, *origin, *path, text);
            }
            (OkVal::Signature { incarnation, origin, path }, value) => {
                let public = value["public_key"].as_str().unwrap_or_else(|| panic!("signature answer {value}"));
                let signature = value["signature"].as_str().unwrap_or_default();
                let key = envelope::parse_public_key(public).expect("a valid public key");
                let bytes = hex::decode(signature).expect("hex signature");
                assert!(keys::verify(&key, MESSAGE.as_bytes(), &bytes), "the signature does not verify");
                self.check_public_key(*incarnation, *origin, *path, public);
            }
        }
        let _ = model;
        None
    }

    fn observed(&mut self, incarnation: u32, origin: Origin) -> &mut Observed {
        let observed = self.observed.entry(incarnation).or_default();
        if observed.master.is_none()
            && let Some(entropy) = known_entropy(origin)
        {
            observed.mnemonic = Some(keys::mnemonic_of(&entropy).to_string());
            observed.master = Some(keys::master_key(&entropy));
        }
        observed
    }

    fn check_mnemonic(&mut self, incarnation: u32, origin: Origin, words: String) {
        if let Origin::Random(length) = origin {
            assert_eq!(words.split(' ').count() as u32, length * 3 / 4, "mnemonic length");
        }
        let observed = self.observed(incarnation, origin);
        match &observed.mnemonic {
            Some(known) => assert_eq!(*known, words, "the mnemonic changed"),
            None => {
                let entropy = keys::entropy_of(&words).expect("a valid mnemonic");
                observed.master = Some(keys::master_key(&entropy));
                observed.mnemonic = Some(words);
            }
        }
    }

    fn check_public_key(&mut self, incarnation: u32, origin: Origin, path: u8, text: &str) {
        let observed = self.observed(incarnation, origin);
        if let Some(known) = observed.public_keys.get(&path) {
            assert_eq!(known, text, "the public key at {} changed", PATHS[usize::from(path)]);
            return;
        }
        if let Some(master) = &observed.master {
            let path_indexes = keys::parse_path(PATHS[usize::from(path)]).expect("valid path");
            let child = keys::derive(master, &path_indexes).expect("derivable");
            let expected = hex::encode(keys::public_key(&child).expect("valid key").serialize());
            assert_eq!(expected, text, "public key of the wallet's seed");
        }
        observed.public_keys.insert(path, text.to_owned());
    }

    fn garbage(&mut self, now: u64, garbage: &Garbage, code: Option<i64>, route: Option<Route>) {
        let body = match garbage {
            Garbage::Bytes(bytes) => bytes.clone(),
            Garbage::NotJson => b"{not json".to_vec(),
            Garbage::Array => b"[1,2]".to_vec(),
            Garbage::NoMethod => br#"{"jsonrpc":"2.0","id":1}"#.to_vec(),
            Garbage::PlainCall => GARBAGE_PLAIN_CALL.to_vec(),
            Garbage::RandomEnvelope { len } => {
                let mut ciphertext = Vec::new();
                while ciphertext.len() < usize::from(*len) {
                    ciphertext.extend_from_slice(&self.rng.nonce());
                }
                ciphertext.truncate(usize::from(*len));
                let sealed = Sealed { nonce: self.rng.nonce(), body_enc: BASE64.encode(&ciphertext) };
                sealed.body(1, &hex::encode(sealed.nonce), false)
            }
        };
        let before = self.snapshot();
        let out = self.handle(&body, None, LOCAL, now);
        let answer = parse(&out.body);
        assert!(!out.created_session && out.session.is_none(), "garbage made a session: {answer}");
        let (got, _) = error_of(&answer);
        if let Some(code) = code {
            assert_eq!(got, code, "garbage answer: {answer}");
        }
        if let Some(route) = route {
            self.check_refused(&answer, &out, route, None, Some(1));
        }
        assert!([-32700, -32600, -32602, -32001, -32002].contains(&got), "garbage answer: {answer}");
        assert_eq!(before, self.snapshot(), "garbage changed state");
    }

    fn plant(&mut self, dir: u8, name: u8, pw: u8) {
        let entropy = Entropy::from_bytes(LEGACY_ENTROPY.to_vec()).expect("16 bytes");
        let record = SeedRecord::seal(&entropy, &Password::from(password(pw)), LEGACY_KDF, [7; 16], [8; 12])
            .expect("legacy parameters are valid");
        let wallet = StoredWallet {
            seed_record: record.to_bytes(),
            accounts: vec![Account { label: "default".into(), index: 0 }],
        };
        self.store.create_wallet(&wallet_key(dir, name), &wallet).expect("the model saw no wallet here");
    }

    /// The vault's masked seeds, 64 bytes each.
    fn vault_chunks(&self) -> Vec<Vec<u8>> {
        let bytes = self.server.vault_masked_bytes();
        assert_eq!(bytes.len() % 64, 0, "masked seeds are 64 bytes");
        let chunks: Vec<Vec<u8>> = bytes.chunks(64).map(<[u8]>::to_vec).collect();
        assert_eq!(chunks.len(), self.server.open_wallet_count(), "open count and vault disagree");
        chunks
    }

    /// After each request: the vault gains a masked seed only when `open_wallet` issued `token`.
    fn track_vault(&mut self, token: Option<u32>) {
        let fresh: Vec<Vec<u8>> =
            self.vault_chunks().into_iter().filter(|c| !self.chunk_owner.contains_key(c)).collect();
        match token {
            Some(token) => {
                assert_eq!(fresh.len(), 1, "open_wallet must add exactly one masked seed");
                self.chunk_owner.insert(fresh[0].clone(), token);
            }
            None => assert!(fresh.is_empty(), "the vault gained a masked seed without open_wallet"),
        }
    }

    /// The invariants, after every op.
    pub fn check(&mut self, model: &Model) {
        self.track_vault(None);
        let chunks = self.vault_chunks();
        let owners: BTreeSet<u32> = chunks.iter().map(|c| self.chunk_owner[c]).collect();
        assert_eq!(owners.len(), chunks.len(), "two masked seeds for one token");
        let current = model.current_tokens();
        let holdable = model.tokens_with(|s| matches!(s, TokenStatus::Current | TokenStatus::ExpiredUnswept));
        assert!(current.is_subset(&owners), "an open wallet's seed is missing from the vault");
        assert!(
            owners.is_subset(&holdable),
            "the vault holds the seed of a closed, stale or deleted wallet: owners {owners:?}, allowed {holdable:?}"
        );
        let swept = model.steps.iter().any(|s| matches!(s, Step::Timeout { .. } | Step::Shutdown));
        if swept {
            assert_eq!(owners, current, "after handle_timeout/shutdown the vault holds exactly the open wallets");
            assert_eq!(self.server.session_count(), model.sessions.len(), "live sessions after a sweep");
        }
        for (p, (name, _)) in (0u8..).zip(PRINCIPALS) {
            let (live, modelled) = (self.server.session_count_of(name), model.sessions_of(p).count());
            assert!(live >= modelled, "a live session of {name} is missing");
            assert!(!swept || live == modelled, "live sessions of {name} after a sweep");
        }
        for observed in self.observed.values() {
            if let Some(master) = &observed.master {
                let (secret, chain) = master.expose().split_at(32);
                for chunk in &chunks {
                    assert!(!chunk.windows(32).any(|w| w == secret || w == chain), "an unmasked seed is in the vault");
                }
            }
        }
        assert!(self.server.session_count() >= model.sessions.len(), "a live session is missing");
        assert_eq!(self.plan.armed(), model.armed, "armed store failure");
        self.check_store(model);
    }

    fn check_store(&mut self, model: &Model) {
        let failures = self.plan.failures();
        let failed_since = failures > self.failures_checked;
        self.failures_checked = failures;
        for dir in 0..2u8 {
            let config = self.store.load_config(DIRS[usize::from(dir)]).expect("reads");
            assert_eq!(config.is_some(), model.configs.contains(&dir), "config of dir {dir}");
            for name in 0..2u8 {
                let stored = self.store.load_wallet(&wallet_key(dir, name)).expect("reads");
                let expected = model.wallets.get(&(dir, name));
                let (Some(stored), Some(wallet)) = (&stored, expected) else {
                    assert_eq!(stored.is_some(), expected.is_some(), "wallet ({dir}, {name}) stored");
                    continue;
                };
                let mut accounts: Vec<(String, u32)> =
                    stored.accounts.iter().map(|a| (a.label.clone(), a.index)).collect();
                accounts.sort();
                let mut want = wallet.accounts.clone();
                want.sort();
                assert_eq!(accounts, want, "accounts of ({dir}, {name})");
                let record = SeedRecord::from_bytes(&stored.seed_record).expect("a stored record parses");
                let kdf = if wallet.legacy { LEGACY_KDF } else { KdfParams::INSECURE_FOR_TESTS };
                assert_eq!(record.kdf, kdf, "KDF parameters of ({dir}, {name})");
                if failed_since {
                    // A failed write must leave every wallet openable with the password it had.
                    assert!(
                        record.open(&Password::from(password(wallet.password))).is_ok(),
                        "after a failed store write, wallet ({dir}, {name}) does not open with its password"
                    );
                }
            }
        }
    }
}

/// Runs a sequence of ops through the model and the real server, checking after every step.
/// Panics on the first disagreement.
pub fn run(ops: &[crate::model::Op]) {
    let mut model = Model::new();
    let mut sut = Sut::new();
    sut.check(&model);
    for op in ops {
        model = model.apply(op);
        sut.apply(&model);
    }
}
