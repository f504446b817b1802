//! `keyward serve --launcher`: a back end started by its own front end (a desktop app's launcher).
//!
//! * A CA, a server certificate and one client certificate are made **in memory for this run**;
//!   nothing of them is written to disk (no `tls/` file is made, read or changed). The client is
//!   registered as owner `launcher` for this run only (never in the store's registry).
//! * HTTPS (and QUIC unless `--quic off`) listen on 127.0.0.1 with port 0.
//! * Once ready, exactly one JSON line goes to standard output, and nothing else ever does (logs go
//!   to standard error): `{"keyward":VERSION,"pid":N,"url":"https://127.0.0.1:PORT/v3/owner",
//!   "quic":"127.0.0.1:PORT"|null,"ca":PEM,"cert":PEM,"key":PEM}`. `key` is the client's private key:
//!   the parent reads it from the pipe and keeps it in memory.
//! * The server stops as on SIGTERM (wallets closed, vault wiped) when its standard input reaches end
//!   of file or its parent process dies (`PR_SET_PDEATHSIG` on Linux, and a check of the parent pid
//!   every [`PARENT_CHECK`] everywhere), within [`STOP_GRACE`] whatever is in flight.
//! * Plain HTTP is refused: its principal `local-http` would let every local process act as owner.
#![expect(unsafe_code, reason = "the libc calls this module exists for")]

use std::io::Write as _;
use std::time::Duration;

use crate::certs::CertSet;
use crate::serve::Running;

/// How often the launched server checks that its parent is alive (besides `PR_SET_PDEATHSIG`).
pub const PARENT_CHECK: Duration = Duration::from_millis(200);

/// Asks the kernel to send SIGTERM to this process when its parent dies; returns the parent's pid
/// as it is now. A parent that died between this process's start and this call is not seen here
/// (its pid is already the reaper's); then the end of standard input, which closes with the parent,
/// stops the server.
pub fn die_with_parent() -> u32 {
    let parent = std::os::unix::process::parent_id();
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
        let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) };
        if set != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot set PR_SET_PDEATHSIG; watching the parent pid only");
        }
    }
    parent
}

/// The line the parent reads, with its fields in this order.
#[derive(serde::Serialize)]
struct ReadyLine<'a> {
    keyward: &'static str,
    pid: u32,
    url: Option<String>,
    quic: Option<String>,
    ca: &'a str,
    cert: &'a str,
    key: &'a str,
}

/// The line the parent reads: the server's version, pid, addresses and the credentials of its client.
pub fn ready_line(running: &Running, set: &CertSet) -> zeroize::Zeroizing<String> {
    let line = ReadyLine {
        keyward: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        url: running.https.map(|addr| format!("https://{addr}/v3/owner")),
        quic: running.quic.map(|addr| addr.to_string()),
        ca: &set.ca_cert,
        cert: &set.client_cert,
        key: &set.client_key,
    };
    // Written once into a buffer big enough for it, so no copy of the key is left by a reallocation.
    let mut text = zeroize::Zeroizing::new(Vec::with_capacity(16 * 1024));
    // Strings and numbers always serialize.
    let _ = serde_json::to_writer(&mut *text, &line);
    // serde_json writes UTF-8; the buffer moves into the String, nothing is copied.
    zeroize::Zeroizing::new(String::from_utf8(std::mem::take(&mut *text)).unwrap_or_default())
}

/// Writes the ready line to standard output and flushes it.
pub fn announce(running: &Running, set: &CertSet) -> anyhow::Result<()> {
    let line = ready_line(running, set);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes())?;
    stdout.write_all(b"\n")?;
    stdout.flush()?;
    Ok(())
}

/// Why a launched server stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM or SIGINT (also what `PR_SET_PDEATHSIG` sends).
    Signal,
    /// Standard input reached end of file (the parent closed it, or died).
    StdinClosed,
    /// The parent process is gone.
    ParentDied,
}

/// Waits until the server should stop: a signal, end of file on standard input, or a new parent.
///
/// Standard input is read on a thread of its own, not tokio's blocking pool: a read that never
/// returns (a parent that keeps the pipe open) must not keep the process from exiting.
pub async fn stop_requested(parent: u32, mut signals: crate::serve::Signals) -> Stop {
    let (closed, stdin) = tokio::sync::oneshot::channel::<()>();
    let reader = std::thread::Builder::new().name("launcher-stdin".into()).spawn(move || {
        let mut buffer = [0u8; 256];
        let mut input = std::io::stdin().lock();
        // Whatever the parent writes is ignored; only the end of the stream (or an error) counts.
        while matches!(std::io::Read::read(&mut input, &mut buffer), Ok(n) if n > 0) {}
        let _ = closed.send(());
    });
    if let Err(error) = reader {
        tracing::warn!(%error, "cannot watch standard input; stopping on a signal or the parent's death only");
    }
    let orphaned = async {
        let mut tick = tokio::time::interval(PARENT_CHECK);
        loop {
            tick.tick().await;
            if std::os::unix::process::parent_id() != parent {
                return;
            }
        }
    };
    tokio::select! {
        () = signals.recv() => Stop::Signal,
        Ok(()) = stdin => Stop::StdinClosed,
        () = orphaned => Stop::ParentDied,
    }
}

/// How long a launched server lets calls in flight finish once told to stop; then it exits without
/// them (the vault is wiped first either way).
pub const STOP_GRACE: Duration = Duration::from_millis(600);

/// Stops a launched server within [`STOP_GRACE`]: wallets closed and the vault wiped at once, then
/// the listeners and the store closed as `keyward serve` does, for as long as the grace allows.
/// Returns whether everything finished in time; if not, the caller exits the process at once (the
/// store is crash-safe: a write cut short loses no wallet).
pub async fn stop(running: Running) -> bool {
    running.core.shutdown();
    tokio::time::timeout(STOP_GRACE, running.stop()).await.is_ok()
}
