//! Transitions: [`Model::apply`] runs one [`Op`]: the clock, expiry, sessions, routing of
//! envelopes, replays and garbage; accepted inner calls go to `calls.rs`.

use super::{
    CLIENTS, Call, EnvStep, Form, Garbage, Hint, KEPT_ENVELOPES, Model, Op, Origin, PASSWORDS, RAW_BODIES, Resolved,
    Route, SESSIONS, SessionM, Source, Step, Tamper, TokenArg, TokenSel, TokenStatus, tokens,
};

impl Model {
    /// Applies one op; `steps` then says what the server must do.
    pub fn apply(mut self, op: &Op) -> Self {
        self.steps.clear();
        match op {
            Op::Init { c, bad_key } => self.init(client(*c), *bad_key),
            Op::Call { c, call, form } => self.send(client(*c), *call, *form, None, None),
            Op::Tamper { c, call, how, then_original } => {
                self.send(client(*c), *call, Form::Named, Some(*how), None);
                if *then_original {
                    self.send(client(*c), *call, Form::Named, None, None);
                }
            }
            Op::CrossSend { from, to, call } => {
                let (from, mut to) = (client(*from), client(*to));
                if to == from {
                    to = (from + 1) % CLIENTS as u8;
                }
                let hint = self.clients[usize::from(to)].session.map_or(Hint::Bogus, Hint::Session);
                self.send(from, *call, Form::Named, None, Some(hint));
            }
            Op::Replay { c, back, hint } => self.replay(client(*c), *back, *hint),
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
                    self.close_wallet(key);
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
        for wallet in self.wallets.values_mut() {
            if let Some(open) = &wallet.open
                && (now.saturating_sub(open.last_used) >= limits.idle_ms
                    || now.saturating_sub(open.opened) >= limits.lifetime_ms)
            {
                self.tokens[open.token as usize].status = TokenStatus::ExpiredUnswept;
                wallet.open = None;
            }
        }
    }

    fn init(&mut self, c: u8, bad_key: bool) {
        let now = self.tick();
        let (session, key) = (self.session_count, self.key_count);
        if !bad_key {
            if self.sessions.len() >= SESSIONS.max_sessions
                && let Some(oldest) = self.sessions.iter().min_by_key(|(_, s)| (s.used, s.last_used)).map(|(id, _)| *id)
            {
                self.sessions.remove(&oldest);
            }
            self.sessions.insert(
                session,
                SessionM { owner: c, key, created: now, last_used: now, requests: 0, used: false, dir: 0 },
            );
            self.session_count += 1;
            self.key_count += 1;
            let client = &mut self.clients[usize::from(c)];
            client.key = Some(key);
            client.session = Some(session);
        }
        self.steps.push(Step::Init { now, c, bad_key, session, key });
    }

    /// Where an envelope sealed with `key` and sent with `hint` goes.
    fn route(&self, hint: Hint, key: u32) -> Route {
        match hint {
            Hint::Session(s) => match self.sessions.get(&s) {
                None => Route::NoSession,
                Some(session) if session.key != key => Route::Decryption,
                Some(_) => Route::Accepted(s),
            },
            Hint::Bogus => Route::NoSession,
            Hint::None if self.sessions.is_empty() => Route::NoSession,
            // Nothing matches a request that names no session: -32001, so V3 clients init again.
            Hint::None => self
                .sessions
                .iter()
                .find(|(_, s)| s.key == key)
                .map_or(Route::NoSession, |(id, _)| Route::Accepted(*id)),
        }
    }

    fn tamper_route(&self, hint: Hint, key: u32, how: Tamper) -> Route {
        let found = self.route(hint, key);
        match how {
            Tamper::ShortNonce | Tamper::BadBase64 => Route::Format,
            Tamper::TruncateBody(_) => Route::Parse,
            // Unnamed: with no live session nothing is tried; else a body shorter than a tag is
            // malformed, and anything else matches no key (-32001).
            _ if hint == Hint::None && self.sessions.is_empty() => Route::NoSession,
            _ if hint != Hint::None && found == Route::NoSession => Route::NoSession,
            Tamper::TruncateCipher { short: true, .. } => Route::Format,
            _ if hint == Hint::None => Route::NoSession,
            _ => Route::Decryption,
        }
    }

    fn send(&mut self, c: u8, call: Call, form: Form, tamper: Option<Tamper>, cross: Option<Hint>) {
        let now = self.tick();
        let state = &self.clients[usize::from(c)];
        let Some(key) = state.key else {
            return;
        };
        let hint = match cross {
            Some(hint) => hint,
            None if Self::names_session(c) => state.session.map_or(Hint::Bogus, Hint::Session),
            None => Hint::None,
        };
        // A request that names no session is tried only under keys that decrypt its first byte to
        // something a JSON request can start with; the odd bodies that cannot match no session.
        let json = !matches!(call, Call::Raw(i) if usize::from(i) % RAW_BODIES.len() < 2);
        let resolved = self.resolve(call);
        let route = match tamper {
            Some(how) => self.tamper_route(hint, key, how),
            None if hint == Hint::None && !json => match self.route(hint, key) {
                Route::Accepted(_) => Route::NoSession,
                other => other,
            },
            None => self.route(hint, key),
        };
        let mut step = EnvStep {
            now,
            c,
            source: Source::Fresh { call: resolved.clone(), form, tamper },
            hint,
            key,
            route,
            answer: None,
            rekey_to: None,
        };
        if let Route::Accepted(s) = route {
            let dir = self.accept(c, s, key, json, now);
            let (answer, after) = self.dispatch(&resolved, dir, now);
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

    fn replay(&mut self, c: u8, back: u8, hint: bool) {
        let now = self.tick();
        let kept = &self.clients[usize::from(c)].envelopes;
        if kept.is_empty() {
            return;
        }
        let index = kept.len() - 1 - usize::from(back) % kept.len();
        let (session, key, json) = kept[index];
        let hint = if hint { Hint::Session(session) } else { Hint::None };
        let route = match self.route(hint, key) {
            Route::Accepted(_) if hint == Hint::None && !json => Route::NoSession,
            Route::Accepted(_) => Route::Replay,
            other => other,
        };
        self.steps.push(Step::Envelope(EnvStep {
            now,
            c,
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
            Garbage::RandomEnvelope { len } => {
                let route = if self.sessions.is_empty() {
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
