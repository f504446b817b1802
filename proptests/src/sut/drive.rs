//! Driving the system under test: the model's steps turned into requests (plaintext inits, sealed
//! envelopes, possibly tampered or replayed, garbage bodies, timeouts, planted legacy wallets) and
//! sent to the server, each answer then handed to the checks in `check.rs`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keyward_core::Store;
use keyward_core::crypto::{self, NONCE_LEN};
use keyward_core::crypto::{Entropy, Password};
use keyward_core::store::SeedRecord;
use keyward_core::store::{Account, StoredWallet};
use keyward_testkit::VECTOR_MNEMONIC;
use serde_json::{Value, json};

use crate::model::{
    self, Answer, CreateKind, EnvStep, Form, GARBAGE_PLAIN_CALL, Garbage, KEPT_ENVELOPES, LABELS, LEGACY_ENTROPY,
    LEGACY_KDF, LOCAL, MESSAGE, Model, PATHS, RAW_BODIES, Resolved, Route, SET_DIRS, Source, Step, Tamper, TokenArg,
    TokenMethod,
};
use crate::peer::{self, Sealed};

use super::{Sut, bump, error_of, name_param, parse, password, wallet_key};

impl Sut {
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
                            n % crypto::TAG_LEN
                        } else {
                            crypto::TAG_LEN + n % (bytes.len() - crypto::TAG_LEN)
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
}
