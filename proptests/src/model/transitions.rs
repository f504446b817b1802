//! Transitions: [`Model::apply`] runs one [`Op`]: the clock, expiry, sessions and their eviction,
//! routing of envelopes (by session and principal), replays and garbage; accepted inner calls go to
//! `calls.rs`.

use std::collections::BTreeMap;

use super::{
    CLIENTS, Call, EnvStep, Evicted, Form, Garbage, Hint, KEPT_ENVELOPES, LOCAL, Model, Op, Origin, PASSWORDS,
    PRINCIPALS, RAW_BODIES, Resolved, Route, SESSIONS, SessionM, Source, Step, Tamper, TokenArg, TokenSel, TokenStatus,
    tokens,
};

/// Who sends an envelope and under which session id.
#[derive(Debug, Clone, Copy)]
struct Sender {
    /// The client whose key seals it.
    sealer: u8,
    /// The principal that sends it.
    principal: u8,
    /// The session id it names.
    hint: Hint,
}

impl Model {
    /// Applies one op; `steps` then says what the server must do.
    pub fn apply(mut self, op: &Op) -> Self {
        self.steps.clear();
        match op {
            Op::Init { c, bad_key } => self.init(client(*c), *bad_key),
            Op::Call { c, call, form } => {
                let sender = self.own_sender(client(*c));
                self.send(sender, *call, *form, None);
            }
            Op::Tamper { c, call, how, then_original } => {
                let sender = self.own_sender(client(*c));
                self.send(sender, *call, Form::Named, Some(*how));
                if *then_original {
                    self.send(sender, *call, Form::Named, None);
                }
            }
            Op::CrossSend { from, to, call } => {
                let (from, to) = other_client(*from, *to);
                let hint = self.session_hint(to);
                self.send(Sender { sealer: from, principal: self.principal_of(from), hint }, *call, Form::Named, None);
            }
            Op::Become { c, p } => self.clients[usize::from(client(*c))].principal = p % PRINCIPALS.len() as u8,
            Op::Steal { from, by, call, hint } => {
                let (from, by) = other_client(*from, *by);
                let hint = if *hint { self.session_hint(from) } else { Hint::None };
                self.send(Sender { sealer: from, principal: self.principal_of(by), hint }, *call, Form::Named, None);
            }
            Op::Replay { c, back, hint } => {
                let c = client(*c);
                self.replay(c, self.principal_of(c), *back, *hint);
            }
            Op::StealReplay { from, by, back, hint } => {
                let (from, by) = other_client(*from, *by);
                self.replay(from, self.principal_of(by), *back, *hint);
            }
            Op::Garbage(garbage) => self.garbage(garbage.clone()),
            Op::Advance(ms) => {
                self.now += ms;
                self.expire();
            }
            Op::Timeout => {
                let now = self.tick();
                for token in &mut self.tokens {
                    if token.status == TokenStatus::ExpiredUnswept {
                        token.status = TokenStatus::Closed;
                    }
                }
                self.steps.push(Step::Timeout { now });
            }
            Op::DropSession { c } => {
                self.tick();
                let session = self.clients[usize::from(client(*c))].session;
                let live = session.is_some_and(|s| self.sessions.remove(&s).is_some());
                self.steps.push(Step::Drop { session, live });
            }
            Op::Shutdown => {
                self.tick();
                self.sessions.clear();
                let keys: Vec<_> = self.wallets.keys().copied().collect();
                for key in keys {
                    self.close_openings(key, None);
                }
                self.steps.push(Step::Shutdown);
            }
            Op::ArmFailure(k) => {
                let k = u32::from(*k % 3) + 1;
                self.armed = Some(k);
                self.steps.push(Step::Arm(k));
            }
            Op::PlantLegacy { dir, name, pw } => {
                self.tick();
                let key = (dir % 2, name % 2);
                let pw = pw % PASSWORDS.len() as u8;
                if !self.wallets.contains_key(&key) {
                    self.new_wallet(key, pw, Origin::Legacy);
                    if let Some(wallet) = self.wallets.get_mut(&key) {
                        wallet.legacy = true;
                    }
                    self.steps.push(Step::Plant { dir: key.0, name: key.1, pw });
                }
            }
        }
        self
    }

    /// Advances the clock by one millisecond (every request gets its own instant, so no two
    /// sessions are ever equally idle) and applies expiry.
    fn tick(&mut self) -> u64 {
        self.now += 1;
        self.expire();
        self.now
    }

    /// Sessions and wallets past their idle time or lifetime are gone for every observable purpose
    /// (the server may still hold them until a sweep; the driver bounds that separately).
    fn expire(&mut self) {
        let (now, limits) = (self.now, tokens());
        self.sessions.retain(|_, s| {
            now.saturating_sub(s.last_used) < SESSIONS.idle_ms && now.saturating_sub(s.created) < SESSIONS.lifetime_ms
        });
        let tokens = &mut self.tokens;
        for wallet in self.wallets.values_mut() {
            wallet.opens.retain(|_, open| {
                let expired = now.saturating_sub(open.last_used) >= limits.idle_ms
                    || now.saturating_sub(open.opened) >= limits.lifetime_ms;
                if expired {
                    tokens[open.token as usize].status = TokenStatus::ExpiredUnswept;
                }
                !expired
            });
        }
    }

    /// Client `c` sending as itself: its principal, and its session id if it names one.
    fn own_sender(&self, c: u8) -> Sender {
        let hint = if Self::names_session(c) { self.session_hint(c) } else { Hint::None };
        Sender { sealer: c, principal: self.principal_of(c), hint }
    }

    /// The id of client `c`'s latest session (maybe gone), or one no session has.
    fn session_hint(&self, c: u8) -> Hint {
        self.clients[usize::from(c)].session.map_or(Hint::Bogus, Hint::Session)
    }

    fn init(&mut self, c: u8, bad_key: bool) {
        let now = self.tick();
        let (session, key) = (self.session_count, self.key_count);
        let principal = self.principal_of(c);
        let mut evicted = None;
        if !bad_key && Self::role_of(principal).is_some() {
            evicted = self.make_room(principal);
            self.sessions.insert(
                session,
                SessionM { owner: c, principal, key, created: now, last_used: now, requests: 0, used: false, dir: 0 },
            );
            self.session_count += 1;
            self.key_count += 1;
            let client = &mut self.clients[usize::from(c)];
            client.key = Some(key);
            client.session = Some(session);
        }
        self.steps.push(Step::Init { now, c, principal, bad_key, session, key, evicted });
    }

    /// Makes room for a new session of principal `p`, as the server does: at its
    /// `max_per_principal` one of its own goes; else, in a full table, one of the principal holding
    /// the most (ties: the smallest name). Returns the session evicted.
    fn make_room(&mut self, p: u8) -> Option<Evicted> {
        let own_cap = self.sessions_of(p).count() >= SESSIONS.max_per_principal;
        let holder = if own_cap {
            p
        } else if self.sessions.len() >= SESSIONS.max_sessions {
            self.largest_holder()?
        } else {
            return None;
        };
        let session = self.eviction_victim(holder)?;
        let used = self.sessions.remove(&session).expect("a live victim").used;
        Some(Evicted { session, principal: holder, own_cap, used })
    }

    /// The principal holding the most sessions; ties go to the smallest name.
    fn largest_holder(&self) -> Option<u8> {
        let mut counts = BTreeMap::<u8, usize>::new();
        for session in self.sessions.values() {
            *counts.entry(session.principal).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by(|(a, m), (b, n)| m.cmp(n).then_with(|| Self::name_of(*b).cmp(Self::name_of(*a))))
            .map(|(p, _)| p)
    }

    /// The session principal `p` gives up: the least recently used (a never-used one was last
    /// used when it was made; the model's server has no grace period).
    fn eviction_victim(&self, p: u8) -> Option<u32> {
        let rank = |s: &SessionM| s.last_used;
        let (id, victim) = self.sessions_of(p).min_by_key(|(_, s)| rank(s))?;
        // Every request has its own instant, so no two sessions rank alike: the server breaks such
        // a tie by random session id, which the model could not follow.
        assert_eq!(self.sessions_of(p).filter(|(_, s)| rank(s) == rank(victim)).count(), 1, "eviction tie");
        Some(*id)
    }

    /// Where an envelope sealed with `key`, sent by principal `p` with `hint`, goes.
    fn route(&self, hint: Hint, key: u32, p: u8) -> Route {
        if Self::role_of(p).is_none() {
            return Route::Revoked;
        }
        match hint {
            Hint::Session(s) => match self.sessions.get(&s) {
                None => Route::NoSession,
                // Another principal's session answers as a wrong key does.
                Some(session) if session.principal != p || session.key != key => Route::Decryption,
                Some(_) => Route::Accepted(s),
            },
            Hint::Bogus => Route::NoSession,
            // A request that names no session is tried against the caller's own sessions only;
            // nothing matching is -32001, so V3 clients init again.
            Hint::None => {
                self.sessions_of(p).find(|(_, s)| s.key == key).map_or(Route::NoSession, |(id, _)| Route::Accepted(*id))
            }
        }
    }

    fn tamper_route(&self, hint: Hint, key: u32, p: u8, how: Tamper) -> Route {
        let found = self.route(hint, key, p);
        let foreign = matches!(hint, Hint::Session(s) if self.sessions.get(&s).is_some_and(|s| s.principal != p));
        match how {
            _ if found == Route::Revoked => Route::Revoked,
            Tamper::ShortNonce | Tamper::BadBase64 => Route::Format,
            Tamper::TruncateBody(_) => Route::Parse,
            // Unnamed: with no live session of the caller nothing is tried; else a body shorter
            // than a tag is malformed, and anything else matches no key (-32001).
            _ if hint == Hint::None && self.sessions_of(p).next().is_none() => Route::NoSession,
            _ if hint != Hint::None && found == Route::NoSession => Route::NoSession,
            // Another principal's session is refused before its key is tried.
            _ if foreign => Route::Decryption,
            Tamper::TruncateCipher { short: true, .. } => Route::Format,
            _ if hint == Hint::None => Route::NoSession,
            _ => Route::Decryption,
        }
    }

    fn send(&mut self, sender: Sender, call: Call, form: Form, tamper: Option<Tamper>) {
        let now = self.tick();
        let Sender { sealer: c, principal, hint } = sender;
        let Some(key) = self.clients[usize::from(c)].key else {
            return;
        };
        // A request that names no session is tried only under keys that decrypt its first byte to
        // something a JSON request can start with; the odd bodies that cannot match no session.
        let json = !matches!(call, Call::Raw(i) if usize::from(i) % RAW_BODIES.len() < 2);
        let resolved = self.resolve(call);
        let route = match tamper {
            Some(how) => self.tamper_route(hint, key, principal, how),
            None if hint == Hint::None && !json => match self.route(hint, key, principal) {
                Route::Accepted(_) => Route::NoSession,
                other => other,
            },
            None => self.route(hint, key, principal),
        };
        let mut step = EnvStep {
            now,
            c,
            principal,
            source: Source::Fresh { call: resolved.clone(), form, tamper },
            hint,
            key,
            route,
            answer: None,
            rekey_to: None,
        };
        if let Route::Accepted(s) = route {
            let dir = self.accept(c, s, key, json, now);
            let (answer, after) = self.dispatch(&resolved, dir, now, principal);
            if let Some(new_dir) = after.dir
                && let Some(session) = self.sessions.get_mut(&s)
            {
                session.dir = new_dir;
            }
            if after.rekey {
                let new_key = self.key_count;
                self.key_count += 1;
                if let Some(session) = self.sessions.get_mut(&s) {
                    session.key = new_key;
                    session.requests = 0;
                    session.last_used = now;
                }
                self.clients[usize::from(c)].key = Some(new_key);
                step.rekey_to = Some(new_key);
            }
            step.answer = Some(answer);
        }
        self.steps.push(Step::Envelope(step));
    }

    /// An envelope accepted by session `s`: counted, remembered for replays; the session is dropped
    /// at the request cap. Returns the session's directory.
    fn accept(&mut self, c: u8, s: u32, key: u32, json: bool, now: u64) -> u8 {
        let session = self.sessions.get_mut(&s).expect("routed to a live session");
        session.requests += 1;
        session.used = true;
        session.last_used = now;
        let dir = session.dir;
        if session.requests >= SESSIONS.max_requests {
            self.sessions.remove(&s);
        }
        let kept = &mut self.clients[usize::from(c)].envelopes;
        if kept.len() >= KEPT_ENVELOPES {
            kept.remove(0);
        }
        kept.push((s, key, json));
        dir
    }

    /// Resends one of client `c`'s accepted envelopes, as principal `p`.
    fn replay(&mut self, c: u8, p: u8, back: u8, hint: bool) {
        let now = self.tick();
        let kept = &self.clients[usize::from(c)].envelopes;
        if kept.is_empty() {
            return;
        }
        let index = kept.len() - 1 - usize::from(back) % kept.len();
        let (session, key, json) = kept[index];
        let hint = if hint { Hint::Session(session) } else { Hint::None };
        let route = match self.route(hint, key, p) {
            Route::Accepted(_) if hint == Hint::None && !json => Route::NoSession,
            Route::Accepted(_) => Route::Replay,
            other => other,
        };
        self.steps.push(Step::Envelope(EnvStep {
            now,
            c,
            principal: p,
            source: Source::Replay(index),
            hint,
            key,
            route,
            answer: None,
            rekey_to: None,
        }));
    }

    fn garbage(&mut self, garbage: Garbage) {
        let now = self.tick();
        let (code, route) = match &garbage {
            Garbage::Bytes(_) => (None, None),
            Garbage::NotJson => (Some(-32700), None),
            Garbage::Array | Garbage::NoMethod => (Some(-32600), None),
            Garbage::PlainCall => (Some(-32001), None),
            // Garbage comes from `local`: only its sessions are tried.
            Garbage::RandomEnvelope { len } => {
                let route = if self.sessions_of(LOCAL).next().is_none() {
                    Route::NoSession
                } else if *len < 16 {
                    Route::Format
                } else {
                    Route::NoSession
                };
                (None, Some(route))
            }
        };
        self.steps.push(Step::Garbage { now, garbage, code, route });
    }

    fn resolve(&self, call: Call) -> Resolved {
        let Call::Token { method, token } = call else {
            return Resolved::Plain(call);
        };
        let issued = |back: u8| {
            let n = self.tokens.len() as u32;
            (n > 0).then(|| n - 1 - u32::from(back) % n)
        };
        let arg = match token {
            TokenSel::Issued(back) => {
                issued(back).map_or(TokenArg::Wrong, |index| TokenArg::Issued { index, upper: false })
            }
            TokenSel::Upper(back) => {
                issued(back).map_or(TokenArg::Wrong, |index| TokenArg::Issued { index, upper: true })
            }
            TokenSel::Flipped(back) => issued(back).map_or(TokenArg::Wrong, TokenArg::Flipped),
            TokenSel::Wrong => TokenArg::Wrong,
            TokenSel::Null => TokenArg::Null,
            TokenSel::Missing => TokenArg::Missing,
            TokenSel::Malformed => TokenArg::Malformed,
            TokenSel::Number => TokenArg::Number,
        };
        Resolved::Token(method, arg)
    }
}

fn client(c: u8) -> u8 {
    c % CLIENTS as u8
}

/// Two different clients: `b` moves on to the next client if it is `a`.
fn other_client(a: u8, b: u8) -> (u8, u8) {
    let (a, b) = (client(a), client(b));
    if a == b { (a, (a + 1) % CLIENTS as u8) } else { (a, b) }
}
