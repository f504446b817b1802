//! `keyward bench`: measures Keyward end to end, next to the floors each figure is held against, in
//! one run.
//!
//! * The server under test is `keyward serve` in a child process (a temporary data directory, every
//!   listener on an ephemeral loopback port, `--ready-file`), so its RSS and CPU time are its own.
//!   With `--url`/`--quic` a running server is measured instead (its memory and CPU only with `--pid`).
//! * The floor is `keyward bench-echo`, a child process of the same shape: the same HTTPS, plain HTTP
//!   and QUIC listeners (same TLS, limits and request handling) whose handler answers the request's
//!   own bytes, plus a raw TCP echo (4-byte length prefix).
//! * Each worker has its own connection and its own secure session and calls `accounts` (one cell) or
//!   `sign_message` (another); each echo worker sends bodies of the same sizes (real sealed requests),
//!   both in turn. For every transport and concurrency the three cells run in interleaved slices
//!   (a slice of each per round, the order rotating), so every ratio comes from one run on one
//!   machine, load generator included, and a change in the machine's load hits all three alike.
//! * Errors are counted per cell, shown in the table, and make the command fail.
//!
//! Progress goes to standard error, the table to standard output, all figures to `--json FILE`.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use keyward_core::envelope::Cipher;
use keyward_core::secret::{Password, SharedKey};
use keyward_core::seed_record::KdfParams;
use keyward_core::session::SessionLimits;
use keyward_core::{Client, Incoming, MemoryStore, Server, ServerConfig, keys};
use keyward_http::{HttpClient, HttpLimits, HttpServer, HttpTarget};
use keyward_quic::{QuicClient, QuicLimits, QuicServer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::call::{Link, parse_url};
use crate::{certs, config, serve, tls};

/// The derivation path and message of the signing call (the README's walkthrough).
pub const SIGN_PATH: &str = "m/44h/0h/0h/0/0";
/// The message the signing call signs.
pub const SIGN_MESSAGE: &str = "keyward bench: a message of about the length people sign";
/// The two encrypted calls each worker alternates.
const KINDS: [&str; 2] = ["accounts", "sign_message"];
/// A call that takes longer than this counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Linux reports process CPU time in clock ticks of 1/100 s (USER_HZ).
const TICKS_PER_SECOND: u64 = 100;

/// What `keyward bench` was asked for.
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    /// A short run (about 20 s): concurrency 1 and 4, fewer samples and sessions. For smoke tests.
    pub quick: bool,
    /// Write every figure here as JSON.
    pub json: Option<PathBuf>,
    /// Seconds measured per cell (after a warm-up); default 2, 0.5 with `quick`.
    pub seconds: Option<f64>,
    /// Concurrency levels; default 1, 4, 16, 64 (1, 4 with `quick`).
    pub concurrency: Option<Vec<usize>>,
    /// Transports to measure (https, quic, http); default all the server offers.
    pub transports: Option<Vec<String>>,
    /// What to measure of the calls (accounts, sign_message, echo); default all three. For profiling.
    pub calls: Option<Vec<String>>,
    /// Measure a running server at these URLs (`https://…`, `http://…`) instead of starting one.
    pub urls: Vec<String>,
    /// Measure a running server over QUIC at this address.
    pub quic: Option<SocketAddr>,
    /// Certificate directory for a running server (default DATA_DIR/tls).
    pub tls_dir: Option<PathBuf>,
    /// The running server's process id, to read its memory and CPU time.
    pub pid: Option<u32>,
}

/// What a run produced.
#[derive(Debug)]
pub struct Report {
    /// The table, for standard output.
    pub table: String,
    /// Every figure.
    pub json: Value,
    /// Errors over the whole run; non-zero makes `keyward bench` fail.
    pub errors: u64,
}

/// How much of everything a run does.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    warmup: Duration,
    measure: Duration,
    rounds: usize,
    calls: Vec<What>,
    concurrency: Vec<usize>,
    opens: usize,
    kdf_runs: usize,
    connections: usize,
    session_counts: Vec<usize>,
}

impl Plan {
    fn new(options: &BenchOptions) -> Self {
        let quick = options.quick;
        let seconds = options.seconds.unwrap_or(if quick { 0.5 } else { 2.0 }).clamp(0.05, 3600.0);
        Self {
            quick,
            warmup: Duration::from_secs_f64(if quick { 0.2_f64 } else { 0.4 }.min(seconds)),
            measure: Duration::from_secs_f64(seconds),
            rounds: if quick { 2 } else { 4 },
            calls: [What::Accounts, What::Sign, What::Echo]
                .into_iter()
                .filter(|w| options.calls.as_ref().is_none_or(|c| c.iter().any(|n| n.eq_ignore_ascii_case(w.name()))))
                .collect(),
            concurrency: options
                .concurrency
                .clone()
                .unwrap_or_else(|| if quick { vec![1, 4] } else { vec![1, 4, 16, 64] }),
            opens: if quick { 2 } else { 5 },
            kdf_runs: if quick { 2 } else { 5 },
            connections: if quick { 10 } else { 40 },
            session_counts: if quick { vec![500, 2000] } else { vec![1000, 10_000] },
        }
    }
}

/// A transport (or the raw TCP floor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Https,
    Quic,
    Http,
    Tcp,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Quic => "quic",
            Self::Http => "http",
            Self::Tcp => "tcp",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Https => "HTTPS+mTLS",
            Self::Quic => "QUIC+mTLS",
            Self::Http => "plain HTTP",
            Self::Tcp => "plain TCP",
        }
    }
}

/// Progress lines on standard error, with the time since the start.
struct Progress {
    start: Instant,
}

impl Progress {
    fn line(&self, text: impl std::fmt::Display) {
        eprintln!("keyward bench [{:6.1}s] {text}", self.start.elapsed().as_secs_f64());
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        let path = std::env::temp_dir().join(format!("keyward-bench-{}", hex::encode(random)));
        certs::private_dir(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process (server under test or echo floor), killed on drop.
struct ChildProcess {
    name: &'static str,
    child: Child,
    ready: Value,
}

impl ChildProcess {
    async fn spawn(name: &'static str, mut command: Command, ready_file: &Path, log: &Path) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        command.env("RUST_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::null()).stderr(log_file);
        let mut child = command.spawn().with_context(|| format!("cannot start the {name}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(ready_file)
                && let Ok(ready) = serde_json::from_str::<Value>(&text)
            {
                return Ok(Self { name, child, ready });
            }
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                bail!("the {name} exited ({status}) before it was ready:\n{}", tail(&log, 20));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the {name} was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn addr(&self, key: &str) -> Option<SocketAddr> {
        self.ready.get(key).and_then(Value::as_str).and_then(|a| a.parse().ok())
    }

    /// Whether it is still running (a crash shows up as errors, and here).
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        tracing::debug!(name = self.name, "child stopped");
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Busy CPU time of the whole machine (every core; `/proc/stat`: all but idle and iowait).
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line.split_whitespace().filter_map(|t| t.parse().ok()).collect();
    let busy: u64 = ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
    Some(Duration::from_millis(busy * 1000 / TICKS_PER_SECOND))
}

/// CPU used by processes other than the bench and its children over a phase, in cores on average.
struct Background {
    start: Instant,
    machine: Option<Duration>,
    ours: Option<Duration>,
}

impl Background {
    fn ours(pids: &[Option<u32>]) -> Option<Duration> {
        let mut total = cpu_time(None)?;
        for pid in pids.iter().flatten() {
            total += cpu_time(Some(*pid))?;
        }
        Some(total)
    }

    fn begin(pids: &[Option<u32>]) -> Self {
        Self { start: Instant::now(), machine: machine_busy(), ours: Self::ours(pids) }
    }

    /// Cores' worth of CPU the rest of the machine used since `begin`.
    fn cores(&self, pids: &[Option<u32>]) -> Option<f64> {
        let machine = machine_busy()?.checked_sub(self.machine?)?;
        let ours = Self::ours(pids)?.checked_sub(self.ours?)?;
        Some(machine.saturating_sub(ours).as_secs_f64() / self.start.elapsed().as_secs_f64())
    }
}

/// Resident set size of a process, in KiB (`VmRSS` of `/proc/PID/status`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of a process (`/proc/PID/stat`, in ticks of 10 ms).
fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / TICKS_PER_SECOND))
}

/// Latency statistics in microseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Stats {
    fn of(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1] as f64 / 1000.0
        };
        Self { n: samples.len(), p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1.0) }
    }

    fn json(&self) -> Value {
        json!({"n": self.n, "p50_us": round(self.p50), "p90_us": round(self.p90), "p99_us": round(self.p99), "max_us": round(self.max)})
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn round(value: f64) -> f64 {
    if value.is_finite() { (value * 100.0).round() / 100.0 } else { value }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// One worker's secure session over its own link.
struct Session {
    link: Link,
    client: Client,
    requests: u64,
}

impl Session {
    async fn open(link: Link) -> anyhow::Result<Self> {
        let mut session = Self { link, client: Client::new([0; 32]), requests: 0 };
        session.init().await?;
        Ok(session)
    }

    async fn init(&mut self) -> anyhow::Result<()> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        self.client = Client::new(seed);
        let answer = self.link.send(self.client.init_request()).await.context("init_secure_api failed")?;
        self.client.handle_init_answer(&answer).context("init_secure_api was refused")?;
        self.requests = 0;
        Ok(())
    }

    async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let (body, pending) = self.client.seal(method, params)?;
        let answer = self.link.send(body).await?;
        self.requests += 1;
        self.client.open(pending, &answer).map_err(|e| anyhow::anyhow!("{method}: {e}"))
    }

    async fn close(self) {
        if let Link::Quic(quic) = self.link {
            quic.close().await;
        }
    }
}

/// Where a transport is and how to reach it.
#[derive(Clone)]
struct Endpoint {
    transport: Transport,
    addr: SocketAddr,
    /// Checked against the server certificate and sent as Host.
    name: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Endpoint {
    async fn link(&self) -> anyhow::Result<Link> {
        Ok(match self.transport {
            Transport::Https => {
                let target = HttpTarget::Tls(Arc::clone(&self.tls));
                Link::Http(HttpClient::connect(self.addr, &self.name, target).await?, None)
            }
            Transport::Http => Link::Http(HttpClient::connect(self.addr, &self.name, HttpTarget::Plain).await?, None),
            Transport::Quic => Link::Quic(
                QuicClient::connect(self.addr, &self.name, Arc::clone(&self.tls))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            Transport::Tcp => bail!("the owner API is not served over raw TCP"),
        })
    }

    async fn echo(&self) -> anyhow::Result<EchoConn> {
        Ok(match self.transport {
            Transport::Https => {
                let target = HttpTarget::Tls(Arc::clone(&self.tls));
                EchoConn::Http(HttpClient::connect(self.addr, &self.name, target).await?)
            }
            Transport::Http => EchoConn::Http(HttpClient::connect(self.addr, &self.name, HttpTarget::Plain).await?),
            Transport::Quic => EchoConn::Quic(
                QuicClient::connect(self.addr, &self.name, Arc::clone(&self.tls))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            Transport::Tcp => {
                let stream = tokio::net::TcpStream::connect(self.addr).await?;
                stream.set_nodelay(true)?;
                EchoConn::Tcp(stream)
            }
        })
    }
}

/// A connection to the echo floor.
enum EchoConn {
    Http(HttpClient),
    Quic(QuicClient),
    Tcp(tokio::net::TcpStream),
}

/// The `Keyward-Session` header the echo workers send, so their HTTP requests are as long as the owner
/// API's.
const ECHO_SESSION: &str = "00000000000000000000000000000000";

impl EchoConn {
    async fn exchange(&mut self, body: &[u8]) -> anyhow::Result<()> {
        let answer = match self {
            Self::Http(http) => {
                let answer = http.post(body.to_vec(), Some(ECHO_SESSION)).await?;
                anyhow::ensure!(answer.status == 200, "HTTP {}", answer.status);
                answer.body
            }
            Self::Quic(quic) => quic.call(body).await.map_err(|e| anyhow::anyhow!("{e}"))?,
            Self::Tcp(stream) => {
                let mut frame = Vec::with_capacity(body.len() + 4);
                frame.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
                frame.extend_from_slice(body);
                stream.write_all(&frame).await?;
                let mut len = [0u8; 4];
                stream.read_exact(&mut len).await?;
                let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
                stream.read_exact(&mut answer).await?;
                answer
            }
        };
        anyhow::ensure!(answer == body, "the echo answer differs from the request");
        Ok(())
    }

    async fn close(self) {
        if let Self::Quic(quic) = self {
            quic.close().await;
        }
    }
}

/// One load-generating worker: a connection that makes calls of kind 0 (accounts) or 1 (sign).
trait Worker: Send + 'static {
    /// Work done before a call's timing starts (a session re-init on a running server).
    fn prepare(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// One timed call.
    fn call(&mut self, kind: usize) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Closes the connection.
    fn finish(self) -> impl Future<Output = ()> + Send;
}

/// Calls on the server under test.
struct KeywardWorker {
    session: Session,
    token: Arc<str>,
    /// Re-init the session after this many requests (a running server's `max_requests`).
    reinit_after: u64,
}

fn call_params(kind: usize, token: &str) -> Value {
    match kind {
        0 => json!({"token": token}),
        _ => json!({"token": token, "path": SIGN_PATH, "message": SIGN_MESSAGE}),
    }
}

fn answer_ok(kind: usize, value: &Value) -> bool {
    match kind {
        0 => value.as_array().is_some_and(|accounts| !accounts.is_empty()),
        _ => value.get("signature").and_then(Value::as_str).is_some_and(|s| s.len() == 128),
    }
}

impl Worker for KeywardWorker {
    async fn prepare(&mut self) -> anyhow::Result<()> {
        if self.session.requests >= self.reinit_after {
            self.session.init().await?;
        }
        Ok(())
    }

    async fn call(&mut self, kind: usize) -> anyhow::Result<()> {
        let value = self.session.call(KINDS[kind], call_params(kind, &self.token)).await?;
        anyhow::ensure!(answer_ok(kind, &value), "{}: unexpected answer", KINDS[kind]);
        Ok(())
    }

    async fn finish(self) {
        self.session.close().await;
    }
}

/// Calls on the echo floor.
struct EchoWorker {
    conn: EchoConn,
    bodies: Arc<Bodies>,
}

impl Worker for EchoWorker {
    async fn prepare(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn call(&mut self, kind: usize) -> anyhow::Result<()> {
        self.conn.exchange(&self.bodies.calls[kind]).await
    }

    async fn finish(self) {
        self.conn.close().await;
    }
}

/// Request bodies the echo floor sends: real sealed requests of the two calls, and a plaintext init.
#[derive(Debug, Clone)]
struct Bodies {
    calls: [Vec<u8>; 2],
    answers: [usize; 2],
    init: Vec<u8>,
}

/// What a cell measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    /// Keyward, `accounts` only.
    Accounts,
    /// Keyward, `sign_message` only.
    Sign,
    /// The echo floor, bodies of both calls' sizes alternately.
    Echo,
}

impl What {
    fn name(self) -> &'static str {
        match self {
            Self::Accounts => "accounts",
            Self::Sign => "sign_message",
            Self::Echo => "echo",
        }
    }

    /// The kinds of call the workers make, in turn.
    fn pattern(self) -> &'static [usize] {
        match self {
            Self::Accounts => &[0],
            Self::Sign => &[1],
            Self::Echo => &[0, 1],
        }
    }
}

/// The result of one cell: one target, one transport, one concurrency.
#[derive(Debug, Clone)]
struct Cell {
    transport: Transport,
    what: What,
    concurrency: usize,
    seconds: f64,
    calls: usize,
    errors: u64,
    error_examples: Vec<String>,
    all: Stats,
    kinds: [Stats; 2],
    server_cpu_us: Option<f64>,
    client_cpu_us: Option<f64>,
}

impl Cell {
    fn calls_per_s(&self) -> f64 {
        self.calls as f64 / self.seconds
    }

    fn json(&self) -> Value {
        json!({
            "transport": self.transport.name(),
            "target": self.what.name(),
            "concurrency": self.concurrency,
            "seconds": round(self.seconds),
            "calls": self.calls,
            "calls_per_s": round(self.calls_per_s()),
            "errors": self.errors,
            "error_examples": self.error_examples,
            "latency": self.all.json(),
            "latency_accounts_size": self.kinds[0].json(),
            "latency_sign_message_size": self.kinds[1].json(),
            "server_cpu_us_per_call": self.server_cpu_us.map(round),
            "load_generator_cpu_us_per_call": self.client_cpu_us.map(round),
        })
    }
}

#[derive(Default)]
struct Samples {
    latencies: [Vec<u64>; 2],
    errors: u64,
    examples: Vec<String>,
}

impl Samples {
    fn error(&mut self, error: &anyhow::Error) {
        self.errors += 1;
        if self.examples.len() < 3 {
            self.examples.push(format!("{error:#}"));
        }
    }
}

/// Connects `concurrency` workers in parallel; failures are counted as errors.
async fn connect_workers<W, F, Fut>(concurrency: usize, connect: F) -> (Vec<W>, Samples)
where
    W: Worker,
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<W>> + Send + 'static,
{
    let mut set = JoinSet::new();
    for _ in 0..concurrency {
        set.spawn(connect());
    }
    let mut workers = Vec::with_capacity(concurrency);
    let mut samples = Samples::default();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(worker)) => workers.push(worker),
            Ok(Err(error)) => samples.error(&error.context("connect")),
            Err(error) => samples.error(&anyhow::anyhow!("connect task failed: {error}")),
        }
    }
    (workers, samples)
}

/// What the measured part of slices added up to, for one `What`.
#[derive(Default)]
struct Tally {
    samples: Samples,
    seconds: f64,
    server_cpu: Option<Duration>,
    client_cpu: Option<Duration>,
}

impl Tally {
    fn into_cell(mut self, transport: Transport, what: What, concurrency: usize) -> Cell {
        let calls = self.samples.latencies[0].len() + self.samples.latencies[1].len();
        let mut all: Vec<u64> = self.samples.latencies.iter().flatten().copied().collect();
        let per_call = |cpu: Option<Duration>| cpu.filter(|_| calls > 0).map(|d| d.as_secs_f64() * 1e6 / calls as f64);
        self.samples.examples.truncate(3);
        Cell {
            transport,
            what,
            concurrency,
            seconds: self.seconds,
            calls,
            errors: self.samples.errors,
            error_examples: self.samples.examples,
            all: Stats::of(&mut all),
            kinds: [Stats::of(&mut self.samples.latencies[0]), Stats::of(&mut self.samples.latencies[1])],
            server_cpu_us: per_call(self.server_cpu),
            client_cpu_us: per_call(self.client_cpu),
        }
    }
}

fn add_cpu(total: &mut Option<Duration>, before: Option<Duration>, after: Option<Duration>, first: bool) {
    *total = match (first, *total, before, after) {
        (true, _, Some(a), Some(b)) => Some(b.saturating_sub(a)),
        (false, Some(t), Some(a), Some(b)) => Some(t + b.saturating_sub(a)),
        _ => None,
    };
}

/// Runs every worker for `ramp` (not recorded), then for `measure`: the latencies of calls started in
/// the measured window, and the CPU time the server and the load generator spent in it. Gives the
/// workers back for the next slice.
async fn run_slice<W: Worker>(
    workers: Vec<W>,
    what: What,
    (ramp, measure): (Duration, Duration),
    server_pid: Option<u32>,
    tally: Option<&mut Tally>,
) -> (Vec<W>, Samples) {
    let pattern = what.pattern();
    let start = tokio::time::Instant::now();
    let t0 = start + ramp;
    let t1 = t0 + measure;
    let mut set = JoinSet::new();
    for (index, mut worker) in workers.into_iter().enumerate() {
        set.spawn(async move {
            let mut mine = Samples::default();
            let mut turn = index;
            loop {
                let kind = pattern[turn % pattern.len()];
                turn += 1;
                if let Err(error) = worker.prepare().await {
                    mine.error(&error);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let began = tokio::time::Instant::now();
                if began >= t1 {
                    break;
                }
                let result = match tokio::time::timeout(CALL_TIMEOUT, worker.call(kind)).await {
                    Ok(result) => result,
                    Err(_) => Err(anyhow::anyhow!("no answer within {CALL_TIMEOUT:?}")),
                };
                let took = began.elapsed();
                match result {
                    Ok(()) if began >= t0 => mine.latencies[kind].push(took.as_nanos() as u64),
                    Ok(()) => {}
                    Err(error) => {
                        mine.error(&error);
                        // A broken connection fails fast; do not spin on it.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (worker, mine)
        });
    }
    tokio::time::sleep_until(t0).await;
    let server0 = server_pid.and_then(|pid| cpu_time(Some(pid)));
    let client0 = cpu_time(None);
    let window0 = tokio::time::Instant::now();
    tokio::time::sleep_until(t1).await;
    let server1 = server_pid.and_then(|pid| cpu_time(Some(pid)));
    let client1 = cpu_time(None);
    let seconds = window0.elapsed().as_secs_f64();
    let mut samples = Samples::default();
    let mut workers = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((worker, mine)) => {
                for kind in 0..2 {
                    samples.latencies[kind].extend_from_slice(&mine.latencies[kind]);
                }
                samples.errors += mine.errors;
                samples.examples.extend(mine.examples);
                workers.push(worker);
            }
            Err(error) => samples.error(&anyhow::anyhow!("worker task failed: {error}")),
        }
    }
    if let Some(tally) = tally {
        let first = tally.seconds == 0.0;
        add_cpu(&mut tally.server_cpu, server0, server1, first);
        add_cpu(&mut tally.client_cpu, client0, client1, first);
        tally.seconds += seconds;
        for kind in 0..2 {
            tally.samples.latencies[kind].append(&mut samples.latencies[kind]);
        }
        tally.samples.errors += samples.errors;
        tally.samples.examples.append(&mut samples.examples);
        samples = Samples::default();
    }
    (workers, samples)
}

/// Closes workers; QUIC closes wait for the peer, so they finish in the background.
async fn close_workers<W: Worker>(workers: Vec<W>) {
    let mut closing = JoinSet::new();
    for worker in workers {
        closing.spawn(worker.finish());
    }
    let _ =
        tokio::time::timeout(Duration::from_millis(300), async { while closing.join_next().await.is_some() {} }).await;
    closing.detach_all();
}

/// One transport at one concurrency: Keyward's two calls and the echo floor, interleaved in rounds
/// (a slice of each per round, in a rotating order), so that a change in the machine's load during
/// the run affects all three alike. Returns the cells of the targets present.
async fn measure_level(
    keyward: Option<(&Endpoint, Arc<str>, u64, Option<u32>)>,
    echo: Option<(&Endpoint, Arc<Bodies>, u32)>,
    concurrency: usize,
    plan: &Plan,
    progress: &Progress,
) -> Vec<Cell> {
    let transport =
        keyward.as_ref().map(|k| k.0.transport).or(echo.as_ref().map(|e| e.0.transport)).unwrap_or(Transport::Tcp);
    let mut keyward_workers = None;
    let mut tallies: Vec<(What, Tally)> = Vec::new();
    if let Some((endpoint, token, reinit_after, _)) = &keyward {
        let (workers, samples) = connect_workers(concurrency, || {
            let endpoint = (*endpoint).clone();
            let token = Arc::clone(token);
            let reinit_after = *reinit_after;
            async move {
                let session = Session::open(endpoint.link().await?).await?;
                Ok(KeywardWorker { session, token, reinit_after })
            }
        })
        .await;
        keyward_workers = Some(workers);
        tallies.push((What::Accounts, Tally { samples, ..Tally::default() }));
        tallies.push((What::Sign, Tally::default()));
        tallies.retain(|(what, _)| plan.calls.contains(what));
    }
    let mut echo_workers = None;
    if let Some((endpoint, bodies, _)) = echo.as_ref().filter(|_| plan.calls.contains(&What::Echo)) {
        let (workers, samples) = connect_workers(concurrency, || {
            let endpoint = (*endpoint).clone();
            let bodies = Arc::clone(bodies);
            async move { Ok(EchoWorker { conn: endpoint.echo().await?, bodies }) }
        })
        .await;
        echo_workers = Some(workers);
        tallies.push((What::Echo, Tally { samples, ..Tally::default() }));
    }
    let rounds = plan.rounds.max(1);
    let slice = (Duration::from_millis(20), plan.measure / rounds as u32);
    let warmup = (plan.warmup / tallies.len().max(1) as u32, Duration::ZERO);
    for round in 0..=rounds {
        let count = tallies.len();
        for step in 0..count {
            let index = (round + step) % count;
            let (what, tally) = &mut tallies[index];
            let what = *what;
            // Round 0 warms every connection up; its calls are not recorded (their errors are).
            let (timing, record) = if round == 0 { (warmup, false) } else { (slice, true) };
            let tally_ref = if record { Some(&mut *tally) } else { None };
            let warm_errors = if what == What::Echo {
                let Some(workers) = echo_workers.take() else { continue };
                let pid = echo.as_ref().map(|e| e.2);
                let (workers, samples) = run_slice(workers, what, timing, pid, tally_ref).await;
                echo_workers = Some(workers);
                samples
            } else {
                let Some(workers) = keyward_workers.take() else { continue };
                let pid = keyward.as_ref().and_then(|k| k.3);
                let (workers, samples) = run_slice(workers, what, timing, pid, tally_ref).await;
                keyward_workers = Some(workers);
                samples
            };
            tally.samples.errors += warm_errors.errors;
            tally.samples.examples.extend(warm_errors.examples);
        }
    }
    if let Some(workers) = keyward_workers {
        close_workers(workers).await;
    }
    if let Some(workers) = echo_workers {
        close_workers(workers).await;
    }
    let cells: Vec<Cell> =
        tallies.into_iter().map(|(what, tally)| tally.into_cell(transport, what, concurrency)).collect();
    for cell in &cells {
        report_cell(progress, cell);
    }
    cells
}

/// New-connection cost: handshake, then init + first call (echo: the same two exchanges).
#[derive(Debug, Clone)]
struct NewConnection {
    transport: Transport,
    keyward_handshake: Vec<f64>,
    keyward_total: Vec<f64>,
    echo_handshake: Vec<f64>,
    echo_total: Vec<f64>,
    errors: u64,
    examples: Vec<String>,
}

async fn new_connections(
    keyward: &Endpoint,
    echo: &Endpoint,
    token: &str,
    bodies: &Bodies,
    count: usize,
) -> NewConnection {
    let mut result = NewConnection {
        transport: keyward.transport,
        keyward_handshake: Vec::new(),
        keyward_total: Vec::new(),
        echo_handshake: Vec::new(),
        echo_total: Vec::new(),
        errors: 0,
        examples: Vec::new(),
    };
    let mut closing = JoinSet::new();
    let error = |result: &mut NewConnection, e: anyhow::Error| {
        result.errors += 1;
        if result.examples.len() < 3 {
            result.examples.push(format!("{e:#}"));
        }
    };
    for _ in 0..count {
        // Owner API: handshake, init_secure_api, accounts.
        let t0 = Instant::now();
        let attempt = async {
            let link = keyward.link().await?;
            let t1 = Instant::now();
            let mut session = Session::open(link).await?;
            let value = session.call("accounts", call_params(0, token)).await?;
            anyhow::ensure!(answer_ok(0, &value), "accounts: unexpected answer");
            Ok::<_, anyhow::Error>((t1, Instant::now(), session))
        };
        match attempt.await {
            Ok((t1, t2, session)) => {
                result.keyward_handshake.push((t1 - t0).as_secs_f64() * 1e6);
                result.keyward_total.push((t2 - t0).as_secs_f64() * 1e6);
                closing.spawn(session.close());
            }
            Err(e) => error(&mut result, e),
        }
        // Echo: handshake, an init-sized exchange, an accounts-sized exchange.
        let t0 = Instant::now();
        let attempt = async {
            let mut conn = echo.echo().await?;
            let t1 = Instant::now();
            conn.exchange(&bodies.init).await?;
            conn.exchange(&bodies.calls[0]).await?;
            Ok::<_, anyhow::Error>((t1, Instant::now(), conn))
        };
        match attempt.await {
            Ok((t1, t2, conn)) => {
                result.echo_handshake.push((t1 - t0).as_secs_f64() * 1e6);
                result.echo_total.push((t2 - t0).as_secs_f64() * 1e6);
                closing.spawn(conn.close());
            }
            Err(e) => error(&mut result, e),
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), async { while closing.join_next().await.is_some() {} }).await;
    closing.detach_all();
    result
}

/// Server memory: idle RSS and growth per idle session.
#[derive(Debug, Clone)]
struct Memory {
    idle_kib: u64,
    base_kib: u64,
    points: Vec<(usize, u64, f64)>,
    errors: u64,
}

/// Makes sessions with plaintext `init_secure_api` over one plain HTTP connection (the same request
/// each time: the client's key is not kept, the server makes a new key and session for every one).
async fn memory(endpoint: &Endpoint, pid: u32, counts: &[usize], init: &[u8], progress: &Progress) -> Memory {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_kib = rss_kib(pid).unwrap_or(0);
    let mut result = Memory { idle_kib, base_kib: idle_kib, points: Vec::new(), errors: 0 };
    let mut http = match HttpClient::connect(endpoint.addr, &endpoint.name, HttpTarget::Plain).await {
        Ok(http) => http,
        Err(_) => {
            result.errors += 1;
            return result;
        }
    };
    let mut made = 0usize;
    // One session first, so the connection's own buffers are in the baseline.
    make_session(&mut http, init, &mut result).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    result.base_kib = rss_kib(pid).unwrap_or(0);
    for &count in counts {
        while made < count {
            make_session(&mut http, init, &mut result).await;
            made += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss = rss_kib(pid).unwrap_or(0);
        let per_session = rss.saturating_sub(result.base_kib) as f64 * 1024.0 / count as f64;
        progress.line(format_args!("memory: {count} idle sessions: RSS {rss} KiB, {per_session:.0} B per session"));
        result.points.push((count, rss, per_session));
    }
    result
}

async fn make_session(http: &mut HttpClient, init: &[u8], result: &mut Memory) {
    match http.post(init.to_vec(), None).await {
        Ok(answer) if answer.status == 200 && answer.session.is_some() => {}
        _ => result.errors += 1,
    }
}

/// In-process costs: the server's whole handling of each call, and its cryptographic parts.
#[derive(Debug, Clone, Default)]
struct InProcess {
    handle_init_us: f64,
    handle_accounts_us: f64,
    handle_sign_us: f64,
    client_round_trip_accounts_us: f64,
    aes_gcm_accounts_us: f64,
    aes_gcm_sign_us: f64,
    json_accounts_us: f64,
    derive_sign_us: f64,
    ecdsa_sign_us: f64,
}

/// Median time per item of `f` over batches.
fn per_item<T>(items: Vec<T>, batches: usize, mut f: impl FnMut(T)) -> f64 {
    let per_batch = (items.len() / batches).max(1);
    let mut times = Vec::new();
    let mut items = items.into_iter();
    loop {
        let batch: Vec<T> = items.by_ref().take(per_batch).collect();
        if batch.is_empty() {
            break;
        }
        let n = batch.len();
        let start = Instant::now();
        for item in batch {
            f(item);
        }
        times.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    median(&times)
}

/// Median time of `f`, in µs, over 11 batches sized to about `budget` in all.
fn time_us(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut probe = 0u32;
    while start.elapsed() < budget / 50 || probe < 1 {
        f();
        probe += 1;
    }
    let each = start.elapsed().as_secs_f64() / f64::from(probe);
    let per_batch = ((budget.as_secs_f64() / 11.0 / each) as usize).max(1);
    let times: Vec<f64> = (0..11)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            start.elapsed().as_secs_f64() * 1e6 / per_batch as f64
        })
        .collect();
    median(&times)
}

/// Sets up an in-process server with one open wallet; returns the echo bodies and the in-process costs.
fn in_process(quick: bool) -> anyhow::Result<(Bodies, InProcess)> {
    let config = ServerConfig {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        sessions: SessionLimits { max_requests: u32::MAX, max_sessions: 100_000, ..SessionLimits::default() },
        ..ServerConfig::default()
    };
    let server = Server::new(config, Box::new(MemoryStore::new()), [1; 32]);
    let handle = |body: &[u8]| server.handle(Incoming { body, session: None, now_ms: 1 });
    let mut client = Client::new([2; 32]);
    let init = client.init_request();
    let answer = handle(&init);
    client.handle_init_answer(&answer.body)?;
    let session = answer.session;
    let handle_named = |body: &[u8]| server.handle(Incoming { body, session, now_ms: 1 });
    let call = |client: &mut Client, method: &str, params: Value| -> anyhow::Result<Value> {
        let (body, pending) = client.seal(method, params)?;
        Ok(client.open(pending, &handle_named(&body).body)?)
    };
    let create = json!({"name": "bench", "mnemonic": null, "mnemonic_length": 16, "password": "bench"});
    call(&mut client, "create_wallet", create)?;
    let token = call(&mut client, "open_wallet", json!({"name": "bench", "password": "bench"}))?;
    let token = token.as_str().context("open_wallet gave no token")?.to_owned();

    let mut calls: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut answers = [0usize; 2];
    for kind in 0..2 {
        let (body, pending) = client.seal(KINDS[kind], call_params(kind, &token))?;
        let answer = handle_named(&body).body;
        let value = client.open(pending, &answer)?;
        anyhow::ensure!(answer_ok(kind, &value), "in process: {} gave an unexpected answer", KINDS[kind]);
        answers[kind] = answer.len();
        calls[kind] = body;
    }
    let bodies = Bodies { calls, answers, init: init.clone() };

    let n = if quick { 600 } else { 3000 };
    let budget = Duration::from_millis(if quick { 40 } else { 200 });
    let mut costs = InProcess::default();
    let inits: Vec<Vec<u8>> = (0..n / 4).map(|i| Client::new([i as u8; 32]).init_request()).collect();
    costs.handle_init_us = per_item(inits, 11, |body| {
        let out = handle(&body);
        if let Some(id) = out.session {
            server.drop_session(&id);
        }
    });
    for (kind, method) in KINDS.iter().enumerate() {
        let sealed: Vec<_> = (0..n / (1 + 3 * kind))
            .map(|_| client.seal(method, call_params(kind, &token)).map(|(body, _)| body))
            .collect::<Result<_, _>>()?;
        let us = per_item(sealed, 11, |body| {
            std::hint::black_box(handle_named(&body));
        });
        if kind == 0 { costs.handle_accounts_us = us } else { costs.handle_sign_us = us }
    }
    let mut round_trip = 0.0;
    let mut failures = 0u32;
    let params = call_params(0, &token);
    let time = time_us(budget, || match client.seal("accounts", params.clone()) {
        Ok((body, pending)) => {
            if client.open(pending, &handle_named(&body).body).is_err() {
                failures += 1;
            }
        }
        Err(_) => failures += 1,
    });
    anyhow::ensure!(failures == 0, "in process: {failures} accounts calls failed");
    round_trip += time;
    costs.client_round_trip_accounts_us = round_trip;

    // The cryptographic parts, at the sizes of the calls above.
    let cipher = Cipher::new(&SharedKey::from_bytes([7; 32]));
    let inner = |kind: usize| {
        serde_json::to_vec(
            &json!({"jsonrpc": "2.0", "method": KINDS[kind], "id": 12345, "params": call_params(kind, &token)}),
        )
    };
    let inner_answers = [
        json!({"id": 12345, "jsonrpc": "2.0", "result": {"Ok": [{"label": "default", "path": keyward_core::methods::account_path(0)}]}}),
        json!({"id": 12345, "jsonrpc": "2.0", "result": {"Ok": {"public_key": "02".repeat(33), "signature": "ab".repeat(64)}}}),
    ];
    for (kind, inner_answer) in inner_answers.iter().enumerate() {
        let request = inner(kind)?;
        let answer = serde_json::to_vec(inner_answer)?;
        let mut failures = 0u32;
        let us = time_us(budget, || {
            let nonce = [3; 12];
            let sealed = cipher.seal(&nonce, std::hint::black_box(&request));
            failures += u32::from(cipher.open(&nonce, &sealed).is_err());
            let sealed = cipher.seal(&nonce, std::hint::black_box(&answer));
            failures += u32::from(cipher.open(&nonce, &sealed).is_err());
        });
        anyhow::ensure!(failures == 0, "in process: AES-GCM round trip failed");
        if kind == 0 { costs.aes_gcm_accounts_us = us } else { costs.aes_gcm_sign_us = us }
    }
    let request = inner(0)?;
    costs.json_accounts_us = time_us(budget, || {
        let parsed: Result<Value, _> = serde_json::from_slice(std::hint::black_box(&request));
        let written = serde_json::to_vec(std::hint::black_box(&inner_answers[0]));
        std::hint::black_box((parsed.ok(), written.ok()));
    });
    let master = keys::master_from_seed(&[5; 64]);
    let path = keys::parse_path(SIGN_PATH).map_err(|e| anyhow::anyhow!("{e}"))?;
    costs.derive_sign_us = time_us(budget, || {
        let signed = keys::derive(&master, &path)
            .and_then(|key| Ok((keys::sign(&key, SIGN_MESSAGE.as_bytes())?, keys::public_key(&key)?)));
        std::hint::black_box(signed.ok());
    });
    let key = keys::derive(&master, &path).map_err(|e| anyhow::anyhow!("{e}"))?;
    costs.ecdsa_sign_us = time_us(budget, || {
        std::hint::black_box(keys::sign(&key, std::hint::black_box(SIGN_MESSAGE.as_bytes())).ok());
    });
    Ok((bodies, costs))
}

/// The server under test: a child we started, or a running one.
struct UnderTest {
    child: Option<ChildProcess>,
    pid: Option<u32>,
    endpoints: Vec<Endpoint>,
    /// Re-init sessions after this many requests (a running server's `max_requests` is unknown).
    reinit_after: u64,
    wallet: String,
    owned: bool,
}

/// Config of the server under test: room for the memory test's sessions and every call of a run.
const BENCH_CONFIG: &str = r#"# keyward bench: the server under test
log = "warn"

[sessions]
max = 20000
idle_secs = 3600
max_requests = 4000000000
"#;

fn serve_command(exe: &Path, dir: &Path, name: &str) -> anyhow::Result<(Command, PathBuf)> {
    let config = dir.join("bench.toml");
    std::fs::write(&config, BENCH_CONFIG)?;
    let ready = dir.join(format!("{name}.ready.json"));
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join(name))
        .arg("--config")
        .arg(&config)
        .args(["--https", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--http-insecure", "127.0.0.1:0"])
        .arg("--ready-file")
        .arg(&ready);
    Ok((command, ready))
}

fn endpoints_of(child: &ChildProcess, tls: &Arc<rustls::ClientConfig>) -> Vec<Endpoint> {
    [
        (Transport::Https, "https"),
        (Transport::Quic, "quic"),
        (Transport::Http, "http_insecure"),
        (Transport::Tcp, "tcp"),
    ]
    .into_iter()
    .filter_map(|(transport, key)| {
        let addr = child.addr(key)?;
        Some(Endpoint { transport, addr, name: addr.ip().to_string(), tls: Arc::clone(tls) })
    })
    .collect()
}

fn fmt_us(value: f64) -> String {
    if !value.is_finite() {
        "-".to_owned()
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn fmt_ratio(value: f64) -> String {
    if value.is_finite() { format!("{value:.2}x") } else { "-".to_owned() }
}

/// A text table: the first `left` columns left-aligned, the rest right-aligned.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>], left: usize) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |out: &mut String, cells: &[String]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count());
            if i > 0 {
                text.push_str("  ");
            }
            if i < left {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            } else {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    line(out, &header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(out, &rule);
    for row in rows {
        line(out, row);
    }
}

/// A target of the issue, checked against this run's figures.
struct Target {
    name: String,
    value: String,
    limit: String,
    met: Option<bool>,
}

/// Runs the whole benchmark.
pub async fn run(options: BenchOptions) -> anyhow::Result<Report> {
    let progress = Progress { start: Instant::now() };
    let plan = Plan::new(&options);
    let exe = std::env::current_exe().context("cannot find the keyward executable")?;
    let temp = TempDir::new()?;
    let mut errors = 0u64;
    progress.line(format_args!(
        "{} run: {:.1} s per cell after {:.1} s warm-up, concurrency {:?}; temporary directory {}",
        if plan.quick { "quick" } else { "full" },
        plan.measure.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        plan.concurrency,
        temp.0.display()
    ));

    // In-process costs first, while nothing else runs.
    progress.line("in process: the server's handling of each call and its cryptographic parts");
    let quick = plan.quick;
    let (bodies, costs) = tokio::task::spawn_blocking(move || in_process(quick)).await??;
    let bodies = Arc::new(bodies);
    progress.line(format_args!(
        "in process: accounts {:.1} µs, sign_message {:.1} µs, init {:.1} µs (server handle)",
        costs.handle_accounts_us, costs.handle_sign_us, costs.handle_init_us
    ));

    // The server under test.
    let running = !options.urls.is_empty() || options.quic.is_some();
    let mut under = if running {
        let tls_dir = options.tls_dir.clone().unwrap_or_else(|| serve::tls_dir(&config::default_data_dir()));
        let client_tls = tls::client_config(&tls_dir)?;
        let mut endpoints = Vec::new();
        for url in &options.urls {
            let parsed = parse_url(url)?;
            let addr = tokio::net::lookup_host((parsed.host.as_str(), parsed.port))
                .await?
                .next()
                .with_context(|| format!("{url}: no address"))?;
            let transport = if parsed.tls { Transport::Https } else { Transport::Http };
            endpoints.push(Endpoint { transport, addr, name: parsed.host.clone(), tls: Arc::clone(&client_tls) });
        }
        if let Some(addr) = options.quic {
            endpoints.push(Endpoint {
                transport: Transport::Quic,
                addr,
                name: addr.ip().to_string(),
                tls: Arc::clone(&client_tls),
            });
        }
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        UnderTest {
            child: None,
            pid: options.pid,
            endpoints,
            reinit_after: 8000,
            wallet: format!("keyward-bench-{}", hex::encode(random)),
            owned: false,
        }
    } else {
        progress.line("starting the server under test (keyward serve) and the echo floor (keyward bench-echo)");
        let (command, ready) = serve_command(&exe, &temp.0, "kw")?;
        let child = ChildProcess::spawn("server under test", command, &ready, &temp.0.join("kw.log")).await?;
        let client_tls = tls::client_config(&serve::tls_dir(&temp.0.join("kw")))?;
        let endpoints = endpoints_of(&child, &client_tls);
        UnderTest {
            pid: Some(child.pid()),
            child: Some(child),
            endpoints,
            reinit_after: u64::MAX,
            wallet: "bench".to_owned(),
            owned: true,
        }
    };
    if let Some(only) = &options.transports {
        under.endpoints.retain(|e| only.iter().any(|t| t.eq_ignore_ascii_case(e.transport.name())));
    }
    let Some(setup_endpoint) = under.endpoints.first().cloned() else {
        bail!("no transport to measure");
    };
    let idle_rss_main = under.pid.and_then(rss_kib);

    // The echo floor.
    let echo_tls_dir = match &under.child {
        Some(_) => serve::tls_dir(&temp.0.join("kw")),
        None => options.tls_dir.clone().unwrap_or_else(|| serve::tls_dir(&config::default_data_dir())),
    };
    let echo_ready = temp.0.join("echo.ready.json");
    let mut command = Command::new(&exe);
    command.arg("bench-echo").arg("--tls-dir").arg(&echo_tls_dir).arg("--ready-file").arg(&echo_ready);
    let mut echo_child = ChildProcess::spawn("echo floor", command, &echo_ready, &temp.0.join("echo.log")).await?;
    let echo_endpoints = endpoints_of(&echo_child, &tls::client_config(&echo_tls_dir)?);
    let echo_of = |transport: Transport| echo_endpoints.iter().find(|e| e.transport == transport).cloned();

    // Bare KDF, while both servers idle.
    let mut kdf_ms = Vec::new();
    for _ in 0..plan.kdf_runs {
        let took = tokio::task::spawn_blocking(|| {
            let start = Instant::now();
            let key = KdfParams::DEFAULT.derive(&Password::from("keyward bench"), &[7u8; 32]);
            (start.elapsed(), key.is_ok())
        })
        .await?;
        anyhow::ensure!(took.1, "the bare KDF failed");
        kdf_ms.push(took.0.as_secs_f64() * 1e3);
    }
    progress.line(format_args!("bare KDF (Argon2id m=64 MiB t=3 p=4, in process): median {:.1} ms", median(&kdf_ms)));

    // The wallet: create, then open it a few times (the default KDF) and keep the last token.
    let mut password = [0u8; 16];
    getrandom::fill(&mut password).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let password = hex::encode(password);
    let mut setup = Session::open(setup_endpoint.link().await?).await.context("setup session")?;
    let create = json!({"name": under.wallet, "mnemonic": null, "mnemonic_length": 16, "password": password});
    setup.call("create_wallet", create).await.context("create_wallet")?;
    let mut open_ms = Vec::new();
    let mut token = String::new();
    for _ in 0..plan.opens {
        let start = Instant::now();
        let value = setup.call("open_wallet", json!({"name": under.wallet, "password": password})).await;
        match value {
            Ok(Value::String(t)) => {
                open_ms.push(start.elapsed().as_secs_f64() * 1e3);
                token = t;
            }
            Ok(_) | Err(_) => errors += 1,
        }
    }
    anyhow::ensure!(!token.is_empty(), "open_wallet never succeeded");
    progress.line(format_args!(
        "open_wallet over {}: median {:.1} ms (bare KDF {:.1} ms)",
        setup_endpoint.transport.label(),
        median(&open_ms),
        median(&kdf_ms)
    ));
    let token: Arc<str> = Arc::from(token.as_str());

    // Calls: keyward and its echo floor back to back, for every transport and concurrency.
    let mut cells: Vec<Cell> = Vec::new();
    let our_pids = [under.pid.filter(|_| under.owned), Some(echo_child.pid())];
    let background = Background::begin(&our_pids);
    let mut floors = vec![];
    for endpoint in &under.endpoints {
        if endpoint.transport == Transport::Tcp {
            continue;
        }
        floors.push(endpoint.transport);
    }
    if floors.contains(&Transport::Http) {
        floors.push(Transport::Tcp);
    }
    for &transport in &floors {
        let keyward = under.endpoints.iter().find(|e| e.transport == transport);
        let echo = echo_of(transport);
        for &concurrency in &plan.concurrency {
            let keyward = keyward.map(|e| (e, Arc::clone(&token), under.reinit_after, under.pid));
            let echo = echo.as_ref().map(|e| (e, Arc::clone(&bodies), echo_child.pid()));
            cells.extend(measure_level(keyward, echo, concurrency, &plan, &progress).await);
        }
    }
    errors += cells.iter().map(|c| c.errors).sum::<u64>();
    let background = background.cores(&our_pids);
    if let Some(cores) = background {
        progress.line(format_args!("other processes used {cores:.2} cores on average during the calls"));
    }

    // New connections.
    let mut connections = Vec::new();
    for endpoint in &under.endpoints {
        let Some(echo) = echo_of(endpoint.transport) else { continue };
        if endpoint.transport == Transport::Tcp {
            continue;
        }
        let result = new_connections(endpoint, &echo, &token, &bodies, plan.connections).await;
        progress.line(format_args!(
            "new connection, {}: handshake + init + first call {:.0} µs (echo: handshake + 2 exchanges {:.0} µs), {} errors",
            endpoint.transport.label(),
            median(&result.keyward_total),
            median(&result.echo_total),
            result.errors
        ));
        errors += result.errors;
        connections.push(result);
    }
    let after_rss_main = under.pid.and_then(rss_kib);

    // Close or delete the wallet.
    if under.owned {
        let _ = setup.call("close_wallet", json!({"name": under.wallet})).await;
    } else {
        let _ = setup.call("close_wallet", json!({"name": under.wallet})).await;
        if let Err(error) = setup.call("delete_wallet", json!({"name": under.wallet, "password": password})).await {
            progress.line(format_args!("could not delete the bench wallet {}: {error:#}", under.wallet));
        }
    }
    setup.close().await;
    let main_alive = under.child.as_mut().is_none_or(ChildProcess::alive);
    if !main_alive {
        errors += 1;
        progress.line("the server under test exited during the run");
    }
    if !echo_child.alive() {
        errors += 1;
        progress.line("the echo floor exited during the run");
    }
    drop(under.child.take());

    // Memory: a fresh server, so the load above does not blur it.
    let memory_result = if under.owned {
        progress.line("memory: a fresh server; idle RSS, then idle sessions over one plain HTTP connection");
        let (command, ready) = serve_command(&exe, &temp.0, "mem")?;
        let child = ChildProcess::spawn("memory server", command, &ready, &temp.0.join("mem.log")).await?;
        let tls = tls::client_config(&serve::tls_dir(&temp.0.join("mem")))?;
        let endpoint = endpoints_of(&child, &tls).into_iter().find(|e| e.transport == Transport::Http);
        match endpoint {
            Some(endpoint) => {
                let result = memory(&endpoint, child.pid(), &plan.session_counts, &bodies.init, &progress).await;
                errors += result.errors;
                Some(result)
            }
            None => None,
        }
    } else {
        None
    };
    drop(echo_child);

    let (table, json, targets_json) = render(
        &plan,
        &cells,
        &connections,
        memory_result.as_ref(),
        &costs,
        &bodies,
        (&open_ms, &kdf_ms),
        (idle_rss_main, after_rss_main),
        errors,
        running,
        background,
    );
    let mut json = json;
    json["targets"] = targets_json;
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        progress.line(format_args!("wrote {}", path.display()));
    }
    progress.line(format_args!("done, {errors} errors"));
    Ok(Report { table, json, errors })
}

fn report_cell(progress: &Progress, cell: &Cell) {
    progress.line(format_args!(
        "{:<10} c={:<3} {:<12} {:>7.0} calls/s  p50 {:>6} µs  p99 {:>6} µs  errors {}",
        cell.transport.label(),
        cell.concurrency,
        cell.what.name(),
        cell.calls_per_s(),
        fmt_us(cell.all.p50),
        fmt_us(cell.all.p99),
        cell.errors
    ));
    for example in &cell.error_examples {
        progress.line(format_args!("  error: {example}"));
    }
}

#[allow(clippy::too_many_arguments)]
fn render(
    plan: &Plan,
    cells: &[Cell],
    connections: &[NewConnection],
    memory: Option<&Memory>,
    costs: &InProcess,
    bodies: &Bodies,
    (open_ms, kdf_ms): (&[f64], &[f64]),
    (idle_rss_main, after_rss_main): (Option<u64>, Option<u64>),
    errors: u64,
    running: bool,
    background: Option<f64>,
) -> (String, Value, Value) {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let _ = writeln!(
        out,
        "keyward bench ({} run): {} cores shared by the server, the echo floor and the load generator; {:.1} s per cell,\n\
         measured in {} slices interleaved with the other cells of the same transport and concurrency.",
        if plan.quick { "quick" } else { "full" },
        cores,
        plan.measure.as_secs_f64(),
        plan.rounds.max(1)
    );
    let _ = writeln!(
        out,
        "Each worker: its own connection and secure session; a cell calls accounts or sign_message (requests {} and {} B, answers {} and {} B)\nor, for the echo floor, sends bodies of those two request sizes in turn.",
        bodies.calls[0].len(),
        bodies.calls[1].len(),
        bodies.answers[0],
        bodies.answers[1]
    );
    let _ = writeln!(out, "Echo floor: same listener, TLS, limits and request handling; answers the request's bytes.");
    let _ = writeln!(
        out,
        "Other processes on the machine used {} cores on average while the calls ran.\n",
        background.map_or("?".to_owned(), |c| format!("{c:.2}"))
    );

    let find = |transport: Transport, what: What, concurrency: usize| {
        cells.iter().find(|c| c.transport == transport && c.what == what && c.concurrency == concurrency)
    };
    let mut rows = Vec::new();
    for cell in cells {
        rows.push(vec![
            cell.transport.label().to_owned(),
            cell.concurrency.to_string(),
            cell.what.name().to_owned(),
            format!("{:.0}", cell.calls_per_s()),
            fmt_us(cell.all.p50),
            fmt_us(cell.all.p90),
            fmt_us(cell.all.p99),
            fmt_us(cell.all.max),
            cell.server_cpu_us.map_or("-".to_owned(), fmt_us),
            cell.client_cpu_us.map_or("-".to_owned(), fmt_us),
            cell.errors.to_string(),
        ]);
    }
    let _ = writeln!(out, "Calls (latency in µs; CPU in µs per call: the server's, and the load generator's)");
    table(
        &mut out,
        &["transport", "conc", "what", "calls/s", "p50", "p90", "p99", "max", "server CPU", "loadgen CPU", "errors"],
        &rows,
        3,
    );

    let mut ratio_rows = Vec::new();
    let mut ratio_json = Vec::new();
    for transport in [Transport::Https, Transport::Quic, Transport::Http] {
        for &concurrency in &plan.concurrency {
            let Some(echo) = find(transport, What::Echo, concurrency) else { continue };
            let (accounts, sign) =
                (find(transport, What::Accounts, concurrency), find(transport, What::Sign, concurrency));
            if accounts.is_none() && sign.is_none() {
                continue;
            }
            let tcp = if transport == Transport::Http { find(Transport::Tcp, What::Echo, concurrency) } else { None };
            let p50 =
                |cell: Option<&Cell>, kind: usize| cell.map_or(f64::NAN, |c| ratio(c.all.p50, echo.kinds[kind].p50));
            let rate = |cell: Option<&Cell>| cell.map_or(f64::NAN, |c| ratio(c.calls_per_s(), echo.calls_per_s()));
            let cpu = |cell: Option<&Cell>| match (cell.and_then(|c| c.server_cpu_us), echo.server_cpu_us) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => f64::NAN,
            };
            // The sign floor: the echo plus the one ECDSA signature the call cannot do without.
            let sign_floor = echo.kinds[1].p50 + costs.ecdsa_sign_us;
            let sign_vs_floor = sign.map_or(f64::NAN, |c| ratio(c.all.p50, sign_floor));
            let vs_tcp = |cell: Option<&Cell>| match (cell, tcp) {
                (Some(c), Some(t)) => ratio(c.all.p50, t.kinds[0].p50),
                _ => f64::NAN,
            };
            ratio_rows.push(vec![
                transport.label().to_owned(),
                concurrency.to_string(),
                fmt_ratio(p50(accounts, 0)),
                fmt_ratio(p50(sign, 1)),
                fmt_ratio(sign_vs_floor),
                fmt_ratio(rate(accounts)),
                fmt_ratio(rate(sign)),
                fmt_ratio(cpu(accounts)),
                fmt_ratio(vs_tcp(accounts)),
            ]);
            ratio_json.push(json!({
                "transport": transport.name(),
                "concurrency": concurrency,
                "p50_accounts": round(p50(accounts, 0)),
                "p50_sign_message": round(p50(sign, 1)),
                "p50_sign_message_vs_echo_plus_ecdsa": round(sign_vs_floor),
                "calls_per_s_accounts": round(rate(accounts)),
                "calls_per_s_sign_message": round(rate(sign)),
                "server_cpu_per_call_accounts": round(cpu(accounts)),
                "server_cpu_per_call_sign_message": round(cpu(sign)),
                "p50_accounts_vs_raw_tcp": tcp.map(|_| round(vs_tcp(accounts))),
            }));
        }
    }
    let _ = writeln!(
        out,
        "\nRatios to the echo floor on the same transport (same run; p50 against echo bodies of the call's size)"
    );
    table(
        &mut out,
        &[
            "transport",
            "conc",
            "p50 acc",
            "p50 sign",
            "sign vs echo+ECDSA",
            "calls/s acc",
            "calls/s sign",
            "srv CPU acc",
            "acc p50 vs TCP",
        ],
        &ratio_rows,
        2,
    );

    let _ = writeln!(out, "\nopen_wallet (default Argon2id m=64 MiB t=3 p=4)");
    table(
        &mut out,
        &["what", "median ms", "samples"],
        &[
            vec!["open_wallet, end to end".into(), format!("{:.1}", median(open_ms)), open_ms.len().to_string()],
            vec!["bare KDF, in process".into(), format!("{:.1}", median(kdf_ms)), kdf_ms.len().to_string()],
            vec!["ratio".into(), fmt_ratio(ratio(median(open_ms), median(kdf_ms))), String::new()],
        ],
        1,
    );

    let mut connection_rows = Vec::new();
    let mut connection_json = Vec::new();
    for c in connections {
        let (kh, kt, eh, et) =
            (median(&c.keyward_handshake), median(&c.keyward_total), median(&c.echo_handshake), median(&c.echo_total));
        connection_rows.push(vec![
            c.transport.label().to_owned(),
            fmt_us(kh),
            fmt_us(kt),
            fmt_us(eh),
            fmt_us(et),
            fmt_ratio(ratio(kt, et)),
            c.errors.to_string(),
        ]);
        connection_json.push(json!({
            "transport": c.transport.name(),
            "samples": c.keyward_total.len(),
            "keyward_handshake_us": round(kh),
            "keyward_handshake_init_first_call_us": round(kt),
            "echo_handshake_us": round(eh),
            "echo_handshake_two_exchanges_us": round(et),
            "ratio": round(ratio(kt, et)),
            "errors": c.errors,
            "error_examples": c.examples,
        }));
    }
    let _ = writeln!(
        out,
        "\nNew connection (medians, µs): handshake, then init_secure_api + accounts (echo: two exchanges of those sizes)"
    );
    table(
        &mut out,
        &["transport", "handshake", "+ init + call", "echo handshake", "echo + 2 exchanges", "ratio", "errors"],
        &connection_rows,
        1,
    );

    let _ = writeln!(out, "\nServer memory");
    let mut memory_rows = Vec::new();
    if let Some(m) = memory {
        memory_rows.push(vec!["RSS idle (fresh server)".to_owned(), format!("{} KiB", m.idle_kib)]);
        memory_rows.push(vec!["RSS with one connection and session".to_owned(), format!("{} KiB", m.base_kib)]);
        for (count, rss, per) in &m.points {
            memory_rows.push(vec![format!("RSS with {count} idle sessions"), format!("{rss} KiB")]);
            memory_rows.push(vec![format!("growth per idle session at {count}"), format!("{per:.0} B")]);
        }
        if m.errors > 0 {
            memory_rows.push(vec!["errors".to_owned(), m.errors.to_string()]);
        }
    } else {
        memory_rows
            .push(vec!["idle sessions".to_owned(), "not measured (only on a server the bench starts)".to_owned()]);
    }
    if let Some(rss) = idle_rss_main {
        memory_rows.push(vec!["RSS of the server under test before the calls".to_owned(), format!("{rss} KiB")]);
    }
    if let Some(rss) = after_rss_main {
        memory_rows.push(vec!["RSS of the server under test after the calls".to_owned(), format!("{rss} KiB")]);
    }
    table(&mut out, &["what", "value"], &memory_rows, 1);

    let _ = writeln!(out, "\nIn process (medians, µs): the server's whole handling of a call, and its parts");
    let in_rows = vec![
        vec!["server handle: accounts (MemoryStore)".to_owned(), fmt_us(costs.handle_accounts_us)],
        vec!["server handle: sign_message".to_owned(), fmt_us(costs.handle_sign_us)],
        vec!["server handle: plaintext init_secure_api (keygen + ECDH)".to_owned(), fmt_us(costs.handle_init_us)],
        vec![
            "client seal + server handle + client open: accounts".to_owned(),
            fmt_us(costs.client_round_trip_accounts_us),
        ],
        vec!["AES-256-GCM seal+open, accounts request + answer".to_owned(), fmt_us(costs.aes_gcm_accounts_us)],
        vec!["AES-256-GCM seal+open, sign_message request + answer".to_owned(), fmt_us(costs.aes_gcm_sign_us)],
        vec!["serde_json parse request + serialize answer (accounts)".to_owned(), fmt_us(costs.json_accounts_us)],
        vec![format!("BIP32 derive {SIGN_PATH} + ECDSA sign + public key"), fmt_us(costs.derive_sign_us)],
        vec!["ECDSA sign alone (secp256k1, the sign floor)".to_owned(), fmt_us(costs.ecdsa_sign_us)],
    ];
    table(&mut out, &["what", "µs"], &in_rows, 1);

    // Targets.
    let mut targets = Vec::new();
    for transport in [Transport::Https, Transport::Quic, Transport::Http] {
        let Some(echo) = find(transport, What::Echo, 1) else { continue };
        for (kind, what) in [What::Accounts, What::Sign].into_iter().enumerate() {
            let Some(cell) = find(transport, what, 1) else { continue };
            let r = ratio(cell.all.p50, echo.kinds[kind].p50);
            targets.push(Target {
                name: format!("{}: c=1 p50 {} / echo", transport.label(), what.name()),
                value: fmt_ratio(r),
                limit: "<= 1.25x".into(),
                met: Some(r <= 1.25),
            });
        }
    }
    for transport in [Transport::Https, Transport::Quic, Transport::Http] {
        for what in [What::Accounts, What::Sign] {
            let name = format!("{}: c=16 calls/s {} / echo", transport.label(), what.name());
            match (find(transport, what, 16), find(transport, What::Echo, 16)) {
                (Some(cell), Some(echo)) => {
                    let r = ratio(cell.calls_per_s(), echo.calls_per_s());
                    targets.push(Target { name, value: fmt_ratio(r), limit: ">= 0.6x".into(), met: Some(r >= 0.6) });
                }
                _ if cells.iter().any(|c| c.transport == transport && c.what == what) => {
                    targets.push(Target { name, value: "not measured".into(), limit: ">= 0.6x".into(), met: None })
                }
                _ => {}
            }
        }
    }
    if let Some(m) = memory {
        for (count, _, per) in &m.points {
            targets.push(Target {
                name: format!("idle session memory at {count}"),
                value: format!("{per:.0} B"),
                limit: "<= 8192 B".into(),
                met: Some(*per <= 8192.0),
            });
        }
    }
    targets.push(Target {
        name: "errors, every concurrency and phase".into(),
        value: errors.to_string(),
        limit: "0".into(),
        met: Some(errors == 0),
    });
    let _ = writeln!(out, "\nTargets (ratios from this run)");
    let target_rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            let met = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "-",
            };
            vec![t.name.clone(), t.value.clone(), t.limit.clone(), met.to_owned()]
        })
        .collect();
    table(&mut out, &["target", "value", "limit", ""], &target_rows, 1);
    let _ = writeln!(out, "\nerrors: {errors}");

    let targets_json: Vec<Value> =
        targets.iter().map(|t| json!({"target": t.name, "value": t.value, "limit": t.limit, "met": t.met})).collect();
    let json = json!({
        "keyward_version": env!("CARGO_PKG_VERSION"),
        "quick": plan.quick,
        "running_server": running,
        "cores": cores,
        "other_processes_cores_during_calls": background.map(round),
        "seconds_per_cell": plan.measure.as_secs_f64(),
        "warmup_seconds": plan.warmup.as_secs_f64(),
        "concurrency": plan.concurrency,
        "sizes": {
            "accounts_request": bodies.calls[0].len(),
            "accounts_answer": bodies.answers[0],
            "sign_message_request": bodies.calls[1].len(),
            "sign_message_answer": bodies.answers[1],
            "init_request": bodies.init.len(),
        },
        "calls": cells.iter().map(Cell::json).collect::<Vec<_>>(),
        "ratios": ratio_json,
        "open_wallet": {
            "samples_ms": open_ms.iter().copied().map(round).collect::<Vec<_>>(),
            "median_ms": round(median(open_ms)),
            "bare_kdf_samples_ms": kdf_ms.iter().copied().map(round).collect::<Vec<_>>(),
            "bare_kdf_median_ms": round(median(kdf_ms)),
            "ratio": round(ratio(median(open_ms), median(kdf_ms))),
        },
        "new_connection": connection_json,
        "memory": memory.map(|m| json!({
            "idle_rss_kib": m.idle_kib,
            "base_rss_kib": m.base_kib,
            "points": m.points.iter().map(|(n, rss, per)| json!({"sessions": n, "rss_kib": rss, "bytes_per_session": round(*per)})).collect::<Vec<_>>(),
            "errors": m.errors,
        })),
        "server_under_test_rss_kib": {"before_calls": idle_rss_main, "after_calls": after_rss_main},
        "in_process_us": {
            "server_handle_accounts": round(costs.handle_accounts_us),
            "server_handle_sign_message": round(costs.handle_sign_us),
            "server_handle_init": round(costs.handle_init_us),
            "client_seal_server_handle_client_open_accounts": round(costs.client_round_trip_accounts_us),
            "aes_gcm_seal_open_accounts": round(costs.aes_gcm_accounts_us),
            "aes_gcm_seal_open_sign_message": round(costs.aes_gcm_sign_us),
            "json_parse_serialize_accounts": round(costs.json_accounts_us),
            "derive_sign_public_key": round(costs.derive_sign_us),
            "ecdsa_sign": round(costs.ecdsa_sign_us),
        },
        "errors": errors,
    });
    (out, json, Value::Array(targets_json))
}

/// `keyward bench-echo`: the echo floor. HTTPS, plain HTTP and QUIC echo listeners (the transports'
/// own code, the same TLS configuration and default limits as `keyward serve`) and a raw TCP echo
/// (4-byte big-endian length, then the bytes), each on an ephemeral loopback port. Writes
/// `{"pid","https","http_insecure","quic","tcp"}` to `ready_file` and serves until SIGTERM or SIGINT.
pub async fn echo_server(tls_dir: &Path, ready_file: &Path) -> anyhow::Result<()> {
    let local: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let server_tls = tls::server_config(tls_dir)?;
    let https = HttpServer::bind_https_echo(local, Arc::clone(&server_tls), HttpLimits::default()).await?;
    let http = HttpServer::bind_insecure_echo(local, HttpLimits::default()).await?;
    let quic = QuicServer::bind_echo(local, server_tls, QuicLimits::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tcp = tokio::net::TcpListener::bind(local).await?;
    let ready = json!({
        "pid": std::process::id(),
        "https": https.local_addr()?.to_string(),
        "http_insecure": http.local_addr()?.to_string(),
        "quic": quic.local_addr().map_err(|e| anyhow::anyhow!("{e}"))?.to_string(),
        "tcp": tcp.local_addr()?.to_string(),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let mut tasks = JoinSet::new();
    tasks.spawn(https.run(until_stopped(stopped.clone())));
    tasks.spawn(http.run(until_stopped(stopped.clone())));
    tasks.spawn(quic.run(until_stopped(stopped.clone())));
    let tcp_stop = until_stopped(stopped.clone());
    tasks.spawn(async move {
        let mut stop = std::pin::pin!(tcp_stop);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = &mut stop => break,
                accepted = tcp.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    connections.spawn(tcp_echo(stream));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
    });
    certs::write_file(ready_file, ready.to_string().as_bytes(), 0o600)?;
    serve::signal().await;
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Echoes length-prefixed frames (at most 1 MiB each) until the peer closes.
async fn tcp_echo(mut stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > 1024 * 1024 {
            return;
        }
        buffer.clear();
        buffer.extend_from_slice(&len);
        buffer.resize(4 + n, 0);
        if stream.read_exact(&mut buffer[4..]).await.is_err() || stream.write_all(&buffer).await.is_err() {
            return;
        }
    }
}
