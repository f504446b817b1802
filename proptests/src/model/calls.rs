//! Inner calls: what each method of an accepted envelope does to the model and must answer
//! (roles, wallet lifecycle, passwords and the throttle, the store's armed failure, token methods),
//! for the principal that sent it.

use std::collections::BTreeMap;

use keyward_core::account_path;
use serde_json::{Value, json};

use super::{
    Answer, Call, CreateKind, DATA_ROOT, DIRS, E_ARG, E_EXISTS, E_LABEL_EXISTS, E_MASK, E_NOT_OPEN, E_OPEN, E_PARAMS,
    E_STORE, E_THROTTLED, E_UNKNOWN_LABEL, ErrPat, LABELS, LENGTHS, Model, NAME_PARAMS, OkVal, OpenM, Origin,
    PASSWORDS, PATHS, RAW_BODIES, Resolved, SET_DIRS, THROTTLE, ThrottleM, TokenArg, TokenM, TokenMethod, TokenStatus,
    WALLET_NAMES, WalletM,
};

/// What a principal gets for another principal's token whose opening was closed (by
/// `close_wallet`, `delete_wallet`, `shutdown` or a sweep after expiry): a wrong token's answer
/// (section 7.2), so a stolen token's holder never learns it was real. (The model found the vault
/// answering `Wallet has not been opened` here; the vault now remembers who closed a token.)
pub const ANOTHERS_CLOSED_TOKEN: ErrPat = E_MASK;

/// The wallet name (index into [`WALLET_NAMES`]) a `name` param means; `None` if invalid.
pub fn name_key(name: u8) -> Option<u8> {
    match NAME_PARAMS[usize::from(name) % NAME_PARAMS.len()] {
        None | Some("default") => Some(0),
        Some("w1") => Some(1),
        Some(_) => None,
    }
}

impl Model {
    /// Runs an accepted call of principal `p` in directory `dir`.
    pub(super) fn dispatch(&mut self, call: &Resolved, dir: u8, now: u64, p: u8) -> (Answer, After) {
        let mut after = After::default();
        // The least role of each method is the core's one table (`METHODS`), which
        // core/tests/principals.rs checks against the specification's; what the model adds is that
        // a call below it is refused before anything runs.
        let role = Self::role_of(p).expect("an accepted call's principal is known");
        if let Some(method) = call.method() {
            let needs = keyward_core::find_method(method).expect("a built-in method").role();
            if !role.allows(needs) {
                return (Answer::Forbidden { method, needs }, after);
            }
        }
        let answer = match call {
            Resolved::Token(method, arg) => self.token_call(*method, *arg, now, p),
            Resolved::Plain(call) => match *call {
                Call::Reinit { bad_key: true } => Answer::Err(vec![E_PARAMS]),
                Call::Reinit { bad_key: false } => {
                    after.rekey = true;
                    Answer::Ok(OkVal::ServerKey)
                }
                Call::TopDir => Answer::Ok(OkVal::Exact(json!(top_level_directory(dir)))),
                Call::SetDir(i) => match SET_DIRS[usize::from(i) % SET_DIRS.len()].1 {
                    Some(new_dir) => {
                        after.dir = Some(new_dir);
                        Answer::Ok(OkVal::Null)
                    }
                    None => Answer::Err(vec![E_ARG]),
                },
                Call::CreateConfig { valid: false } => Answer::Err(vec![E_ARG]),
                Call::CreateConfig { valid: true } => {
                    if self.write() {
                        self.configs.insert(dir);
                        Answer::Ok(OkVal::Null)
                    } else {
                        Answer::Err(vec![E_STORE])
                    }
                }
                Call::Create { name, kind, pw } => self.create(dir, name, kind, pw),
                Call::ImportGrin { name, right_pw } => self.import_grin(dir, name, right_pw),
                Call::Open { name, pw } => self.open(dir, name, pw, now, p),
                Call::Close { name } => match name_key(name) {
                    None => Answer::Err(vec![E_ARG]),
                    Some(name) => {
                        self.close_openings((dir, name), Some(p));
                        Answer::Ok(OkVal::Null)
                    }
                },
                Call::Mnemonic { name, pw } => self.with_password(dir, name, pw, now, p, |model, key| {
                    let wallet = &model.wallets[&key];
                    Answer::Ok(OkVal::Mnemonic { incarnation: wallet.incarnation, origin: wallet.origin })
                }),
                Call::ChangePassword { name, old, new } => self.with_password(dir, name, old, now, p, |model, key| {
                    if model.write() {
                        if let Some(wallet) = model.wallets.get_mut(&key) {
                            wallet.password = new % PASSWORDS.len() as u8;
                            wallet.legacy = false;
                        }
                        // `[tokens] close_on_password_change` (default on): every opening closes.
                        if super::tokens().close_on_password_change {
                            model.close_openings(key, None);
                        }
                        Answer::Ok(OkVal::Null)
                    } else {
                        Answer::Err(vec![E_STORE])
                    }
                }),
                Call::Delete { name, pw } => self.with_password(dir, name, pw, now, p, |model, key| {
                    // Every principal's opening closes, even if the store then fails.
                    model.close_openings(key, None);
                    if model.write() {
                        model.wallets.remove(&key);
                        Answer::Ok(OkVal::Null)
                    } else {
                        Answer::Err(vec![E_STORE])
                    }
                }),
                Call::ListWallets => Answer::Ok(OkVal::Exact(self.list_wallets(dir, p))),
                Call::Raw(i) => self.raw_answer(i, dir, p),
                Call::Token { .. } => unreachable!("token calls are resolved"),
            },
        };
        (answer, after)
    }

    /// One store write; `false` if it is the armed failure.
    fn write(&mut self) -> bool {
        match self.armed {
            Some(1) => {
                self.armed = None;
                false
            }
            Some(k) => {
                self.armed = Some(k - 1);
                true
            }
            None => true,
        }
    }

    pub(super) fn new_wallet(&mut self, key: (u8, u8), pw: u8, origin: Origin) {
        let incarnation = self.incarnations;
        self.incarnations += 1;
        let wallet = WalletM {
            password: pw,
            origin,
            incarnation,
            accounts: vec![("default".into(), 0)],
            opens: BTreeMap::new(),
            legacy: false,
        };
        self.wallets.insert(key, wallet);
    }

    fn create(&mut self, dir: u8, name: u8, kind: CreateKind, pw: u8) -> Answer {
        let Some(name) = name_key(name) else {
            return Answer::Err(vec![E_ARG]);
        };
        let origin = match kind {
            CreateKind::BadLength | CreateKind::BadMnemonic => return Answer::Err(vec![E_ARG]),
            CreateKind::Random(i) => Origin::Random(LENGTHS[usize::from(i) % LENGTHS.len()]),
            CreateKind::Restore { .. } => Origin::Restored,
        };
        self.store_new(dir, name, pw % PASSWORDS.len() as u8, origin)
    }

    fn import_grin(&mut self, dir: u8, name: u8, right_pw: bool) -> Answer {
        let Some(name) = name_key(name) else {
            return Answer::Err(vec![E_ARG]);
        };
        if !right_pw {
            return Answer::Err(vec![E_ARG]);
        }
        self.store_new(dir, name, 3, Origin::Grin)
    }

    fn store_new(&mut self, dir: u8, name: u8, pw: u8, origin: Origin) -> Answer {
        if self.wallets.contains_key(&(dir, name)) {
            return Answer::Err(vec![E_EXISTS]);
        }
        if !self.write() {
            return Answer::Err(vec![E_STORE]);
        }
        self.new_wallet((dir, name), pw, origin);
        Answer::Ok(OkVal::Null)
    }

    /// Checks principal `p`'s password as the server does (a missing wallet fails like a wrong
    /// password but is never throttled nor tracked; an existing one goes through `p`'s own throttle
    /// entry first), then runs `then` on success.
    fn with_password(
        &mut self,
        dir: u8,
        name: u8,
        pw: u8,
        now: u64,
        p: u8,
        then: impl FnOnce(&mut Self, (u8, u8)) -> Answer,
    ) -> Answer {
        let Some(name) = name_key(name) else {
            return Answer::Err(vec![E_ARG]);
        };
        let key = (dir, name);
        let pw = pw % PASSWORDS.len() as u8;
        let Some(wallet) = self.wallets.get(&key) else {
            return Answer::Err(vec![E_OPEN]);
        };
        let at = (p, key);
        if self.throttle.get(&at).is_some_and(|t| t.next_allowed > now) {
            return Answer::Err(vec![E_THROTTLED]);
        }
        if wallet.password == pw {
            self.throttle.remove(&at);
            then(self, key)
        } else {
            let entry = self.throttle.entry(at).or_insert(ThrottleM { failures: 0, next_allowed: 0 });
            entry.failures += 1;
            if entry.failures > THROTTLE.free_attempts {
                let doublings = (entry.failures - THROTTLE.free_attempts - 1).min(40);
                entry.next_allowed = now + THROTTLE.base_ms.saturating_mul(1 << doublings).min(THROTTLE.max_ms);
            }
            Answer::Err(vec![E_OPEN])
        }
    }

    fn open(&mut self, dir: u8, name: u8, pw: u8, now: u64, p: u8) -> Answer {
        self.with_password(dir, name, pw, now, p, |model, key| {
            // An upgrade of a legacy record is one write; its failure keeps the old record and does
            // not fail the call.
            if model.wallets[&key].legacy && model.write() {
                model.wallets.get_mut(&key).expect("checked").legacy = false;
            }
            // The principal's earlier opening is replaced (its token goes stale, unless a sweep
            // closed it first); then the vault sweeps, closing every other expired opening.
            // Other principals' openings of this wallet stay, with their tokens.
            for token in &mut model.tokens {
                token.status = match token.status {
                    TokenStatus::Current if token.wallet == key && token.principal == p => TokenStatus::Stale,
                    TokenStatus::ExpiredUnswept if token.wallet == key && token.principal == p => {
                        TokenStatus::StaleOrClosed
                    }
                    TokenStatus::ExpiredUnswept => TokenStatus::Closed,
                    other => other,
                };
            }
            let token = model.tokens.len() as u32;
            model.tokens.push(TokenM { wallet: key, principal: p, status: TokenStatus::Current });
            let wallet = model.wallets.get_mut(&key).expect("checked");
            wallet.opens.insert(p, OpenM { token, opened: now, last_used: now });
            Answer::Ok(OkVal::Token(token))
        })
    }

    /// Closes openings of a wallet in the vault: principal `p`'s (`close_wallet`), or every one
    /// (`None`: delete, shutdown). Their tokens, current or expired, are closed.
    pub(super) fn close_openings(&mut self, key: (u8, u8), p: Option<u8>) {
        let closes = |principal: u8| p.is_none_or(|p| p == principal);
        if let Some(wallet) = self.wallets.get_mut(&key) {
            wallet.opens.retain(|principal, _| !closes(*principal));
        }
        for token in self.tokens.iter_mut().filter(|t| t.wallet == key && closes(t.principal)) {
            if matches!(token.status, TokenStatus::Current | TokenStatus::ExpiredUnswept) {
                token.status = TokenStatus::Closed;
            }
        }
    }

    /// A token method called by principal `p`.
    fn token_call(&mut self, method: TokenMethod, arg: TokenArg, now: u64, p: u8) -> Answer {
        let key = match arg {
            TokenArg::Missing => return Answer::Err(vec![E_PARAMS]),
            // The specification says −32602 for a token that is neither a string nor null; the code
            // answers InvalidKeychainMask. Either refuses the call, which is what matters here.
            TokenArg::Number => return Answer::Err(vec![E_MASK, E_PARAMS]),
            TokenArg::Flipped(_) | TokenArg::Wrong | TokenArg::Null | TokenArg::Malformed => {
                return Answer::Err(vec![E_MASK]);
            }
            TokenArg::Issued { index, .. } => {
                let token = &mut self.tokens[index as usize];
                if token.principal != p {
                    // Another principal's token is refused as a wrong one is, and nothing about it
                    // changes; but see ANOTHERS_CLOSED_TOKEN.
                    return Answer::Err(match token.status {
                        TokenStatus::Current | TokenStatus::Stale => vec![E_MASK],
                        TokenStatus::Closed => vec![ANOTHERS_CLOSED_TOKEN],
                        // Closed if a sweep ran first; else a live entry of another principal.
                        TokenStatus::ExpiredUnswept | TokenStatus::StaleOrClosed => {
                            vec![E_MASK, ANOTHERS_CLOSED_TOKEN]
                        }
                    });
                }
                match token.status {
                    TokenStatus::Current => token.wallet,
                    TokenStatus::Stale => return Answer::Err(vec![E_MASK]),
                    TokenStatus::Closed => return Answer::Err(vec![E_NOT_OPEN]),
                    TokenStatus::ExpiredUnswept => {
                        token.status = TokenStatus::Closed;
                        return Answer::Err(vec![E_NOT_OPEN]);
                    }
                    TokenStatus::StaleOrClosed => return Answer::Err(vec![E_MASK, E_NOT_OPEN]),
                }
            }
        };
        let wallet = self.wallets.get_mut(&key).expect("a current token's wallet is stored");
        wallet.opens.get_mut(&p).expect("a current token's wallet is open for its principal").last_used = now;
        let (incarnation, origin) = (wallet.incarnation, wallet.origin);
        match method {
            TokenMethod::Accounts => {
                let mut accounts = wallet.accounts.clone();
                accounts.sort();
                let list: Vec<Value> =
                    accounts.iter().map(|(label, i)| json!({"label": label, "path": account_path(*i)})).collect();
                Answer::Ok(OkVal::Exact(Value::Array(list)))
            }
            TokenMethod::CreateAccount(i) => {
                let label = LABELS[usize::from(i) % LABELS.len()];
                if label.is_empty() {
                    return Answer::Err(vec![E_ARG]);
                }
                if wallet.accounts.iter().any(|(l, _)| l == label) {
                    return Answer::Err(vec![E_LABEL_EXISTS]);
                }
                let index = wallet.accounts.iter().map(|(_, i)| *i).max().map_or(0, |m| m + 1);
                if !self.write() {
                    return Answer::Err(vec![E_STORE]);
                }
                let wallet = self.wallets.get_mut(&key).expect("still stored");
                wallet.accounts.push((label.to_owned(), index));
                Answer::Ok(OkVal::Exact(json!(account_path(index))))
            }
            TokenMethod::SetActive(i) => {
                let label = LABELS[usize::from(i) % LABELS.len()];
                if wallet.accounts.iter().any(|(l, _)| l == label) {
                    Answer::Ok(OkVal::Null)
                } else {
                    Answer::Err(vec![E_UNKNOWN_LABEL])
                }
            }
            TokenMethod::PublicKey(path) => {
                let path = path % PATHS.len() as u8;
                if path == 2 {
                    return Answer::Err(vec![E_ARG]);
                }
                Answer::Ok(OkVal::PublicKey { incarnation, origin, path })
            }
            TokenMethod::Sign(path) => {
                let path = path % PATHS.len() as u8;
                if path == 2 {
                    return Answer::Err(vec![E_ARG]);
                }
                Answer::Ok(OkVal::Signature { incarnation, origin, path })
            }
        }
    }
}

/// What an inner call asks of the session after it is answered.
#[derive(Debug, Default)]
pub(super) struct After {
    pub(super) rekey: bool,
    pub(super) dir: Option<u8>,
}

/// `get_top_level_directory` for a directory.
pub fn top_level_directory(dir: u8) -> String {
    match DIRS[usize::from(dir)] {
        "" => DATA_ROOT.to_owned(),
        d => format!("{DATA_ROOT}/{d}"),
    }
}

impl Model {
    /// `list_wallets` for principal `p`: "open" is its own opening.
    fn list_wallets(&self, dir: u8, p: u8) -> Value {
        let list = self
            .wallets
            .iter()
            .filter(|((d, _), _)| *d == dir)
            .map(|((_, n), w)| json!({"name": WALLET_NAMES[usize::from(*n)], "open": w.opens.contains_key(&p)}))
            .collect();
        Value::Array(list)
    }

    /// The whole inner answer to `RAW_BODIES[i]` (their methods need no more than `reader`).
    fn raw_answer(&self, i: u8, dir: u8, p: u8) -> Answer {
        let error = |id: Value, code: i64, message: &str| json!({"id": id, "jsonrpc": "2.0", "error": {"code": code, "message": message}});
        match i % RAW_BODIES.len() as u8 {
            0 => Answer::NotJson,
            1 => Answer::Whole(error(Value::Null, -32600, "Invalid Request: not a JSON-RPC request")),
            2 => Answer::Whole(error(json!(7), -32601, "Method not found")),
            3 => Answer::Whole(error(Value::Null, -32600, "Invalid Request: not a JSON-RPC request")),
            4 => Answer::Whole(json!([
                {"id": 1, "jsonrpc": "2.0", "result": {"Ok": self.list_wallets(dir, p)}},
                error(json!(2), -32601, "Method not found"),
            ])),
            _ => Answer::Whole(error(json!(7), -32602, "Invalid params: unexpected param 'x'")),
        }
    }
}
