//! Checking the server's answers against the model: the route of a refused request, the inner
//! answer of an accepted one (values, tokens, mnemonics, public keys and signatures of the wallet's
//! seed), and the session table after an init.

use keyward_core::crypto;
use keyward_core::{Outgoing, SessionId};
use serde_json::{Value, json};

use crate::model::{Answer, Evicted, MESSAGE, Model, OkVal, Origin, PATHS, PRINCIPALS, Route};

use super::{Observed, Sut, bump, error_of, is_lower_hex, known_entropy, matches};

impl Sut {
    /// After a plaintext init: a new session made room exactly as the model says. The server drops
    /// every expired session before it evicts, so its table is the model's, per principal.
    pub(super) fn check_session_table(&self, model: &Model, principal: u8, bad_key: bool, evicted: Option<Evicted>) {
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
    pub(super) fn check_revoked(&self, answer: &Value, out: &Outgoing) {
        assert_eq!(error_of(answer), (-32099, "Forbidden: this client is revoked".to_owned()), "{answer}");
        assert_eq!(answer["id"], Value::Null, "an unknown principal's answer echoes nothing: {answer}");
        assert!(!out.created_session && out.session.is_none(), "an unknown principal's request reached a session");
    }

    /// Checks an inner answer; returns the new token's number if it is an `open_wallet` answer.
    pub(super) fn check_answer(
        &mut self,
        inner: &Value,
        expected: &Answer,
        id: Option<u64>,
        model: &Model,
    ) -> Option<u32> {
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
                assert!(is_lower_hex(text, 66) && crypto::parse_public_key(text).is_ok(), "server key {value}");
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
                let key = crypto::parse_public_key(public).expect("a valid public key");
                let bytes = hex::decode(signature).expect("hex signature");
                assert!(crypto::verify(&key, MESSAGE.as_bytes(), &bytes), "the signature does not verify");
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
            observed.mnemonic = Some(crypto::mnemonic_of(&entropy).to_string());
            observed.master = Some(crypto::master_key(&entropy));
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
                let entropy = crypto::entropy_of(&words).expect("a valid mnemonic");
                observed.master = Some(crypto::master_key(&entropy));
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
            let path_indexes = crypto::parse_path(PATHS[usize::from(path)]).expect("valid path");
            let child = crypto::derive(master, &path_indexes).expect("derivable");
            let expected = hex::encode(crypto::public_key(&child).expect("valid key").serialize());
            assert_eq!(expected, text, "public key of the wallet's seed");
        }
        observed.public_keys.insert(path, text.to_owned());
    }

    pub(super) fn check_refused(
        &self,
        answer: &Value,
        out: &Outgoing,
        route: Route,
        hint: Option<SessionId>,
        outer: Option<u64>,
    ) {
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
}
