//! The processes a run starts and reads: a temporary directory, the child processes (server under
//! test, echo floor, memory server) and their configuration, and CPU time and RSS from `/proc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::link::Endpoint;
use super::plan::Transport;
use crate::certs;

/// Linux reports process CPU time in clock ticks of 1/100 s (USER_HZ).
const TICKS_PER_SECOND: u64 = 100;

/// A temporary directory, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new() -> anyhow::Result<Self> {
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
pub(super) struct ChildProcess {
    pub(super) name: &'static str,
    pub(super) child: Child,
    pub(super) ready: Value,
}

impl ChildProcess {
    pub(super) async fn spawn(
        name: &'static str,
        mut command: Command,
        ready_file: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
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

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn addr(&self, key: &str) -> Option<SocketAddr> {
        self.ready.get(key).and_then(Value::as_str).and_then(|a| a.parse().ok())
    }

    /// Whether it is still running (a crash shows up as errors, and here).
    pub(super) fn alive(&mut self) -> bool {
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
pub(super) struct Background {
    pub(super) start: Instant,
    pub(super) machine: Option<Duration>,
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

    pub(super) fn begin(pids: &[Option<u32>]) -> Self {
        Self { start: Instant::now(), machine: machine_busy(), ours: Self::ours(pids) }
    }

    /// Cores' worth of CPU the rest of the machine used since `begin`.
    pub(super) fn cores(&self, pids: &[Option<u32>]) -> Option<f64> {
        let machine = machine_busy()?.checked_sub(self.machine?)?;
        let ours = Self::ours(pids)?.checked_sub(self.ours?)?;
        Some(machine.saturating_sub(ours).as_secs_f64() / self.start.elapsed().as_secs_f64())
    }
}

/// Resident set size of a process, in KiB (`VmRSS` of `/proc/PID/status`).
pub(super) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of a process (`/proc/PID/stat`, in ticks of 10 ms).
pub(super) fn cpu_time(pid: Option<u32>) -> Option<Duration> {
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

/// Config of the server under test: room for the memory test's sessions and every call of a run.
const BENCH_CONFIG: &str = r#"# keyward bench: the server under test
log = "warn"

[sessions]
max = 20000
idle_secs = 3600
max_requests = 4000000000
per_connection = 100000
per_principal = 100000

[connections]
per_principal = 1024
"#;

pub(super) fn serve_command(exe: &Path, dir: &Path, name: &str) -> anyhow::Result<(Command, PathBuf)> {
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

pub(super) fn endpoints_of(child: &ChildProcess, tls: &Arc<rustls::ClientConfig>) -> Vec<Endpoint> {
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
