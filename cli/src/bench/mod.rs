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
//!
//! The in-process costs of the core (the server's handling of a call, AES-GCM, JSON, BIP32, ECDSA)
//! are criterion's: `cargo bench -p keyward-core --bench call`. Here, in process, are only what the
//! end-to-end figures need: sealed request bodies for the echo floor, and the bare KDF and one ECDSA
//! signature, the floors of `open_wallet` and `sign_message`.
//!
//! Modules, in the order a run uses them: `plan` (what to measure), `floors` (in-process floors
//! and the echo bodies), `children` (child processes, temporary directories, `/proc`), `link`
//! (connections and secure sessions), `workers` (load generation in interleaved slices),
//! `stats` (latency statistics and per-cell results), `connections` (new-connection cost),
//! `memory` (memory per idle session), `report` (table and JSON), and `echo` (the
//! `keyward bench-echo` server).

mod children;
mod connections;
mod echo;
mod floors;
mod link;
mod memory;
mod plan;
mod report;
mod stats;
mod v3;
mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::call::parse_url;
use crate::{config, serve, tls};
use children::{Background, ChildProcess, TempDir, endpoints_of, rss_kib, serve_command};
use connections::new_connections;
use link::{Endpoint, Session};
use memory::memory;
use plan::{Plan, Progress, Transport};
use report::render;
use stats::{Cell, median};
use workers::measure_level;

pub use echo::echo_server;

/// The derivation path and message of the signing call (the README's walkthrough).
pub const SIGN_PATH: &str = "m/44h/0h/0h/0/0";
/// The message the signing call signs.
pub const SIGN_MESSAGE: &str = "keyward bench: a message of about the length people sign";

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

    // In process first, while nothing else runs: the echo's bodies and the ECDSA floor.
    progress.line("in process: sealed request bodies for the echo floor, and one ECDSA signature (the sign floor)");
    let quick = plan.quick;
    let (bodies, ecdsa_sign_us) =
        tokio::task::spawn_blocking(move || anyhow::Ok((floors::sealed_bodies()?, floors::ecdsa_sign_us(quick)?)))
            .await??;
    let bodies = Arc::new(bodies);
    progress.line(format_args!(
        "in process: ECDSA sign {ecdsa_sign_us:.1} µs (the core's other costs: cargo bench -p keyward-core --bench call)"
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
    let kdf_ms = floors::bare_kdf_ms(plan.kdf_runs).await?;
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
    // A token belongs to the principal that opened the wallet: HTTPS and QUIC present the same
    // client certificate, plain HTTP is `local-http`; each endpoint's own principal opens it too.
    let mut tokens: Vec<(Transport, Arc<str>)> = vec![(setup_endpoint.transport, Arc::from(token.as_str()))];
    let mut openers = Vec::new();
    for endpoint in &under.endpoints {
        if endpoint.transport == Transport::Tcp || endpoint.transport == setup_endpoint.transport {
            continue;
        }
        let mut session = Session::open(endpoint.link().await?).await.context("a session to open the wallet")?;
        // The same principal over another transport (HTTPS and QUIC share the client
        // certificate) already holds a token: reopening would make it stale.
        let mut shared = None;
        for (_, known) in &tokens {
            if session.call("accounts", json!({"token": &**known})).await.is_ok() {
                shared = Some(Arc::clone(known));
                break;
            }
        }
        if let Some(known) = shared {
            tokens.push((endpoint.transport, known));
            continue;
        }
        match session.call("open_wallet", json!({"name": under.wallet, "password": password})).await {
            Ok(Value::String(t)) => tokens.push((endpoint.transport, Arc::from(t.as_str()))),
            Ok(_) | Err(_) => errors += 1,
        }
        openers.push(session);
    }
    let token_for = |transport: Transport| {
        tokens.iter().find(|(t, _)| *t == transport).map_or_else(|| Arc::clone(&tokens[0].1), |(_, t)| Arc::clone(t))
    };

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
            let keyward = keyward.map(|e| (e, token_for(e.transport), under.reinit_after, under.pid));
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
        let result = new_connections(endpoint, &echo, &token_for(endpoint.transport), &bodies, plan.connections).await;
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

    // Close or delete the wallet (each principal closes its own opening).
    for mut opener in openers {
        let _ = opener.call("close_wallet", json!({"name": under.wallet})).await;
        opener.close().await;
    }
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
                let v3_time = plan.measure.max(std::time::Duration::from_millis(500));
                let result =
                    memory(&endpoint, child.pid(), &plan.session_counts, &bodies.init, v3_time, &progress).await;
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
        ecdsa_sign_us,
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
