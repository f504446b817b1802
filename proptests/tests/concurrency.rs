//! Concurrency exploration of the real core with shuttle: two or three threads, each a client of
//! its own principal with its own session, issue lifecycle and token calls on one shared wallet
//! (open, change_password, delete, close, accounts, sign_message), re-init their sessions (each
//! principal may hold one, so the old one is evicted), while another may run the expiry timer,
//! under many schedules (random and PCT). Each run's history must equal some sequential
//! order of the same calls that keeps each thread's order and the real-time order (a call that
//! ended before another began comes first) under the reference semantics below
//! (linearizability); after the run, the vault holds exactly the openings that order leaves, and
//! every session is still there.
//!
//! The core's locks are shuttle's only when it is built with `--cfg keyward_shuttle`
//! (`core/src/sync.rs`). Built without it (a plain `cargo test`), this target runs itself again
//! with that flag, in release, in its own target directory (`<target>/shuttle`), and passes its
//! output on. The last line is `explored N schedules`.
//!
//! Knobs: `KEYWARD_SHUTTLE_SCHEDULES` (default 24,000: half random, half PCT with depth 3, spread
//! over the workloads).
//!
//! The reference semantics (spec/protocol.md): `open_wallet` with the current password gives the
//! thread's principal a new token (its earlier one goes stale), a wrong password or a deleted
//! wallet fails; `change_password` and `delete_wallet` succeed only with the current password;
//! `delete_wallet` closes every principal's opening; `close_wallet` closes the caller's;
//! `accounts` and `sign_message` succeed only with the caller's current token of a wallet that
//! exists; the expiry tick (token idle time passed) closes every opening.
#![expect(
    clippy::print_stdout,
    clippy::unwrap_used,
    reason = "the command line prints its answers; a test fails by panicking, with the value in the message"
)]

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("concurrency_exploration: test");
        return;
    }
    // A name filter that does not match this target's one test: nothing to run.
    if args.iter().any(|a| !a.starts_with('-') && !"concurrency_exploration".contains(a.as_str())) {
        return;
    }
    #[cfg(keyward_shuttle)]
    explore::run();
    #[cfg(not(keyward_shuttle))]
    std::process::exit(again_with_shuttle());
}

/// Runs this target again with `--cfg keyward_shuttle`, in release, in `<target>/shuttle`.
#[cfg(not(keyward_shuttle))]
fn again_with_shuttle() -> i32 {
    use std::process::Command;
    let exe = std::env::current_exe().unwrap();
    let deps = exe.ancestors().find(|dir| dir.file_name().is_some_and(|name| name == "deps")).unwrap();
    let target = deps.parent().and_then(std::path::Path::parent).unwrap().join("shuttle");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    // What cargo set for this test would make the inner build differ from a plain one.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("CARGO_")
            && !["CARGO_HOME", "CARGO_TERM_COLOR", "CARGO_INCREMENTAL"].contains(&name.as_str())
        {
            command.env_remove(&name);
        }
    }
    let flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    command.env("RUSTFLAGS", format!("{flags} --cfg keyward_shuttle").trim()).env("CARGO_TARGET_DIR", &target).args([
        "test",
        "--release",
        "-p",
        "keyward-proptests",
        "--test",
        "concurrency",
    ]);
    eprintln!("concurrency: building with --cfg keyward_shuttle (release) in {}", target.display());
    match command.status() {
        Ok(status) => status.code().unwrap_or(1),
        Err(error) => {
            eprintln!("concurrency: cannot run cargo: {error}");
            1
        }
    }
}

#[cfg(keyward_shuttle)]
mod explore {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use keyward_core::SessionLimits;
    use keyward_core::TokenLimits;
    use keyward_core::store::KdfParams;
    use keyward_core::{Client, ClientRecord, Identity, Incoming, MemoryStore, Role, Server, ServerConfig, SessionId};
    use serde_json::{Value, json};
    use shuttle::sync::{Arc, Mutex};

    /// When every call is made (ms).
    const NOW: u64 = 1_000;
    /// How long an opening may be idle.
    const TOKEN_IDLE: u64 = 10_000;
    /// When the expiry tick runs: past every opening's idle time, within every session's.
    const TICK: u64 = NOW + TOKEN_IDLE + 1;
    /// The passwords: the wallet starts with `PW[0]`.
    const PW: [&str; 3] = ["pw0", "pw1", "pw2"];

    /// One call of a thread.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Op {
        Open(usize),
        Close,
        Change(usize, usize),
        Delete(usize),
        /// `accounts` with the thread's newest token.
        Accounts,
        /// `sign_message` with the thread's newest token.
        Sign,
        /// The expiry timer: `handle_timeout` past the token idle time.
        Tick,
        /// A new `init_secure_api`: the thread's principal may hold one session, so its old one is
        /// evicted; its openings and tokens stay (they are the principal's).
        Reinit,
    }

    use Op::{Accounts, Change, Close, Delete, Open, Reinit, Sign, Tick};

    /// The workloads: each thread's calls, in order. The races the issue names: open against
    /// change_password, delete against a token call, expiry against open; and the rest.
    const WORKLOADS: &[&[&[Op]]] = &[
        &[&[Open(0), Accounts], &[Change(0, 1), Open(0)]],
        &[&[Open(0), Sign], &[Delete(0)]],
        &[&[Open(0), Accounts], &[Open(0), Delete(0)]],
        &[&[Change(0, 1)], &[Change(0, 2)]],
        &[&[Delete(0)], &[Delete(0), Open(0)]],
        &[&[Open(0), Accounts], &[Tick]],
        &[&[Open(0), Sign], &[Open(1), Open(0)], &[Tick]],
        &[&[Open(0), Accounts], &[Change(0, 1)], &[Delete(1)]],
        &[&[Open(0), Close, Accounts], &[Open(0), Accounts]],
        &[&[Change(0, 1), Open(1)], &[Open(0), Sign]],
        &[&[Open(0), Accounts], &[Delete(0)], &[Open(0)]],
        &[&[Open(0), Sign], &[Open(0), Tick]],
        &[&[Open(0), Reinit, Accounts], &[Reinit, Delete(0)]],
        &[&[Reinit, Open(0), Reinit, Sign], &[Change(0, 1), Reinit, Open(1)]],
    ];

    /// What a call answered: a token (for `open_wallet`), another success, or an error.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        Token(String),
        Ok,
        Err(String),
    }

    /// One call as it ran: the thread, its index there, what it answered, and when it began and
    /// ended on a clock every call moves under a lock (so shuttle orders them).
    #[derive(Debug, Clone)]
    struct Event {
        thread: usize,
        index: usize,
        op: Op,
        seen: Seen,
        began: u64,
        ended: u64,
    }

    /// The reference model of one wallet seen by one principal per thread.
    #[derive(Debug, Clone)]
    struct Model {
        exists: bool,
        password: usize,
        /// Per thread: the index (in that thread) of the `Open` whose token is current.
        open: Vec<Option<usize>>,
        /// Per thread: the index of its newest successful `Open` so far (whose token it uses).
        newest: Vec<Option<usize>>,
    }

    impl Model {
        fn new(threads: usize) -> Self {
            Self { exists: true, password: 0, open: vec![None; threads], newest: vec![None; threads] }
        }

        /// Applies `op` of `thread` (its `index`-th call): whether it succeeds.
        fn apply(&mut self, thread: usize, index: usize, op: Op) -> bool {
            match op {
                Open(pw) => {
                    let ok = self.exists && pw == self.password;
                    if ok {
                        self.open[thread] = Some(index);
                        self.newest[thread] = Some(index);
                    }
                    ok
                }
                Close => {
                    self.open[thread] = None;
                    true
                }
                Change(old, new) => {
                    let ok = self.exists && old == self.password;
                    if ok {
                        self.password = new;
                        // `[tokens] close_on_password_change` (default on): every opening closes.
                        self.open.iter_mut().for_each(|o| *o = None);
                    }
                    ok
                }
                Delete(pw) => {
                    let ok = self.exists && pw == self.password;
                    if ok {
                        self.exists = false;
                        self.open.iter_mut().for_each(|o| *o = None);
                    }
                    ok
                }
                Accounts | Sign => {
                    self.exists && self.newest[thread].is_some() && self.open[thread] == self.newest[thread]
                }
                Tick => {
                    self.open.iter_mut().for_each(|o| *o = None);
                    true
                }
                Reinit => true,
            }
        }

        fn openings(&self) -> usize {
            if self.exists { self.open.iter().flatten().count() } else { 0 }
        }
    }

    /// Whether some order of the events, keeping each thread's order and the real-time order,
    /// gives every answer the model gives (and leaves `open_count` openings in the vault).
    fn linearizable(events: &[Event], threads: usize, open_count: usize) -> bool {
        let per_thread: Vec<Vec<&Event>> = (0..threads)
            .map(|t| {
                let mut list: Vec<&Event> = events.iter().filter(|e| e.thread == t).collect();
                list.sort_by_key(|e| e.index);
                list
            })
            .collect();
        search(&per_thread, &mut vec![0; threads], &Model::new(threads), open_count)
    }

    fn search(per_thread: &[Vec<&Event>], next: &mut Vec<usize>, model: &Model, open_count: usize) -> bool {
        if next.iter().zip(per_thread).all(|(n, list)| *n == list.len()) {
            return model.openings() == open_count;
        }
        for t in 0..per_thread.len() {
            let Some(event) = per_thread[t].get(next[t]) else { continue };
            // Real time: no call still waiting may have ended before this one began.
            let blocked = per_thread
                .iter()
                .zip(next.iter())
                .any(|(list, &n)| list.get(n..).is_some_and(|rest| rest.iter().any(|other| other.ended < event.began)));
            if blocked {
                continue;
            }
            let mut after = model.clone();
            let ok = after.apply(t, event.index, event.op);
            if ok != !matches!(event.seen, Seen::Err(_)) {
                continue;
            }
            next[t] += 1;
            let found = search(per_thread, next, &after, open_count);
            next[t] -= 1;
            if found {
                return true;
            }
        }
        false
    }

    /// A client of its own principal with a live session.
    struct Caller {
        client: Client,
        session: Option<SessionId>,
        principal: keyward_core::Principal,
    }

    fn call(server: &Server, caller: &mut Caller, method: &str, params: Value) -> Seen {
        let (body, pending) = caller.client.seal(method, params).unwrap();
        let incoming =
            Incoming { body: &body, session: caller.session, recent: None, principal: &caller.principal, now_ms: NOW };
        let answer = server.handle(incoming);
        match caller.client.open(pending, &answer.body) {
            Ok(Value::String(token)) if method == "open_wallet" => Seen::Token(token),
            Ok(_) => Seen::Ok,
            Err(error) => Seen::Err(error.to_string()),
        }
    }

    fn config() -> ServerConfig {
        ServerConfig {
            kdf: KdfParams::INSECURE_FOR_TESTS,
            tokens: TokenLimits { idle_ms: TOKEN_IDLE, ..TokenLimits::default() },
            // No grace period: a principal's re-init always replaces its one session, as the
            // linearizability model expects (the grace period is `session::tests`').
            sessions: SessionLimits { max_per_principal: 1, grace_ms: 0, ..SessionLimits::default() },
            ..ServerConfig::default()
        }
    }

    static SCHEDULES: AtomicUsize = AtomicUsize::new(0);
    static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    static CHECKED_CALLS: AtomicUsize = AtomicUsize::new(0);

    /// One schedule of one workload (picked by the schedule's number).
    fn scenario() {
        let number = SCHEDULES.fetch_add(1, Ordering::Relaxed);
        let workload = WORKLOADS[number % WORKLOADS.len()];
        let threads = workload.len();
        let server = Arc::new(Server::new(config(), Box::new(MemoryStore::new()), [number as u8; 32]));
        let mut callers: Vec<Caller> = (0..threads)
            .map(|t| {
                let name = if t == 0 { "local".to_owned() } else { format!("p{t}") };
                let principal = keyward_core::Principal::new(&name);
                if t > 0 {
                    let record = ClientRecord {
                        name,
                        role: Role::Owner,
                        identity: Identity::Uid { uid: 1000 + t as u32 },
                        created_unix_ms: 1,
                        revoked_unix_ms: None,
                    };
                    server.add_client(record).unwrap();
                }
                let mut client = Client::new([t as u8 + 1; 32]);
                let body = client.init_request();
                let incoming =
                    Incoming { body: &body, session: None, recent: None, principal: &principal, now_ms: NOW };
                let answer = server.handle(incoming);
                client.handle_init_answer(&answer.body).unwrap();
                Caller { client, session: answer.session, principal }
            })
            .collect();
        let create = json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": PW[0]});
        assert_eq!(call(&server, &mut callers[0], "create_wallet", create), Seen::Ok);

        let clock = Arc::new(Mutex::new(0u64));
        let events = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = callers
            .into_iter()
            .enumerate()
            .map(|(thread, mut caller)| {
                let (server, clock, events) = (Arc::clone(&server), Arc::clone(&clock), Arc::clone(&events));
                let ops = workload[thread];
                shuttle::thread::spawn(move || {
                    let mut token = Value::String("0".repeat(64));
                    for (index, &op) in ops.iter().enumerate() {
                        let began = tick(&clock);
                        let seen = match op {
                            Open(pw) => {
                                call(&server, &mut caller, "open_wallet", json!({"name": "w", "password": PW[pw]}))
                            }
                            Close => call(&server, &mut caller, "close_wallet", json!({"name": "w"})),
                            Change(old, new) => call(
                                &server,
                                &mut caller,
                                "change_password",
                                json!({"name": "w", "old": PW[old], "new": PW[new]}),
                            ),
                            Delete(pw) => {
                                call(&server, &mut caller, "delete_wallet", json!({"name": "w", "password": PW[pw]}))
                            }
                            Accounts => call(&server, &mut caller, "accounts", json!({"token": token})),
                            Sign => call(
                                &server,
                                &mut caller,
                                "sign_message",
                                json!({"token": token, "path": "m/0/1", "message": "hi"}),
                            ),
                            Tick => {
                                server.handle_timeout(TICK);
                                Seen::Ok
                            }
                            Reinit => {
                                let body = caller.client.init_request();
                                let incoming = Incoming {
                                    body: &body,
                                    session: None,
                                    recent: None,
                                    principal: &caller.principal,
                                    now_ms: NOW,
                                };
                                let answer = server.handle(incoming);
                                match caller.client.handle_init_answer(&answer.body) {
                                    Ok(()) => {
                                        caller.session = answer.session;
                                        Seen::Ok
                                    }
                                    Err(error) => Seen::Err(error.to_string()),
                                }
                            }
                        };
                        if let Seen::Token(issued) = &seen {
                            token = Value::String(issued.clone());
                        }
                        let ended = tick(&clock);
                        events.lock().unwrap().push(Event { thread, index, op, seen, began, ended });
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let events = events.lock().unwrap().clone();
        let open_count = server.open_wallet_count();
        assert!(
            linearizable(&events, threads, open_count),
            "schedule {number} (workload {}, {:.2} s in): no sequential order of the calls gives these answers \
             (vault: {open_count} open):\n{events:#?}",
            number % WORKLOADS.len(),
            STARTED.get().map_or(0.0, |t| t.elapsed().as_secs_f64())
        );
        assert_eq!(server.session_count(), threads, "one session per principal: none lost, every evicted one gone");
        CHECKED_CALLS.fetch_add(events.len(), Ordering::Relaxed);
    }

    fn tick(clock: &Mutex<u64>) -> u64 {
        let mut now = clock.lock().unwrap();
        *now += 1;
        *now
    }

    pub(super) fn run() {
        let total: usize =
            std::env::var("KEYWARD_SHUTTLE_SCHEDULES").ok().and_then(|v| v.parse().ok()).unwrap_or(24_000);
        let started = *STARTED.get_or_init(std::time::Instant::now);
        // The core's calls (KDF, key derivation, JSON) need more than shuttle's default stack.
        let mut config = shuttle::Config::new();
        config.stack_size = 4 << 20;
        shuttle::Runner::new(shuttle::scheduler::RandomScheduler::new_from_seed(1, total / 2), config.clone())
            .run(scenario);
        let random = SCHEDULES.load(Ordering::Relaxed);
        shuttle::Runner::new(shuttle::scheduler::PctScheduler::new_from_seed(2, 3, total - total / 2), config)
            .run(scenario);
        let schedules = SCHEDULES.load(Ordering::Relaxed);
        println!(
            "{} workloads; {random} random and {} PCT schedules; {} calls checked for linearizability in {:.1} s",
            WORKLOADS.len(),
            schedules - random,
            CHECKED_CALLS.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
        println!("explored {schedules} schedules");
    }
}
