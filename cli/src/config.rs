//! `keyward serve` settings: defaults, a TOML file (`--config`), and flags, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use keyward_core::ServerConfig;
use keyward_core::seed_record::KdfParams;
use keyward_core::session::SessionLimits;
use keyward_core::throttle::ThrottleConfig;
use keyward_core::vault::TokenLimits;
use keyward_driver::DriverConfig;
use keyward_http::HttpLimits;
use keyward_quic::QuicLimits;
use serde::Deserialize;

/// The default HTTPS (and QUIC) address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3420";
/// Where front ends pair by default (open only while a pairing code is live).
pub const DEFAULT_PAIRING_ADDR: &str = "127.0.0.1:3422";

/// The config file, as written by people. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory (fjall store and `tls/`).
    pub data_dir: Option<PathBuf>,
    /// HTTPS address, or "off".
    pub https: Option<String>,
    /// Plain HTTP address (loopback only), or "off".
    pub http_insecure: Option<String>,
    /// QUIC address, or "off".
    pub quic: Option<String>,
    /// Unix socket path, or "off" (the default).
    pub unix: Option<String>,
    /// Where front ends pair with a one-time code (a loopback address, open only while a code is
    /// live), or "off" (default 127.0.0.1:3422).
    pub pairing: Option<String>,
    /// Uids served over the Unix socket besides the server's own.
    pub unix_allowed_uids: Option<Vec<u32>>,
    /// The role of `local-http`, the principal of loopback plain HTTP (`--http-insecure`):
    /// "reader", "signer" or "owner" (default, so V3 clients that cannot do TLS keep working).
    pub local_http_role: Option<String>,
    /// Host names accepted in the Host header besides loopback ones.
    pub allowed_hosts: Option<Vec<String>>,
    /// Largest request body in bytes.
    pub max_body_bytes: Option<usize>,
    /// Log filter (RUST_LOG syntax).
    pub log: Option<String>,
    /// Session limits.
    pub sessions: Option<SessionsConfig>,
    /// Token lifetimes.
    pub tokens: Option<TokensConfig>,
    /// Argon2id parameters for new records.
    pub kdf: Option<KdfConfig>,
    /// Unlock throttling.
    pub throttle: Option<ThrottleFileConfig>,
    /// QUIC limits.
    pub quic_limits: Option<QuicFileConfig>,
    /// The slow-call pool.
    pub slow_calls: Option<SlowCallsConfig>,
    /// The audit log's retention.
    pub audit: Option<AuditConfig>,
}

/// `[audit]`: how much of the audit log the store keeps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Most records kept (default 1,000,000); the oldest go first.
    pub max_records: Option<u64>,
    /// Days a record is kept (default 90).
    pub max_age_days: Option<u64>,
}

/// `[slow_calls]`: the pool that runs KDFs and store writes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowCallsConfig {
    /// Threads (default: the number of cores).
    pub threads: Option<usize>,
    /// Calls that may wait for a thread before more are answered Busy (default 64).
    pub queue: Option<usize>,
    /// Calls one client may have admitted, running or waiting (default 16).
    pub per_principal: Option<usize>,
}

/// `[quic_limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicFileConfig {
    /// Most connections at once.
    pub max_connections: Option<usize>,
    /// Most concurrent streams per connection.
    pub max_streams_per_connection: Option<u32>,
    /// Largest request in bytes.
    pub max_message_bytes: Option<usize>,
    /// Idle time before a connection closes, seconds.
    pub idle_secs: Option<u64>,
}

/// `[sessions]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// Most live sessions.
    pub max: Option<usize>,
    /// Idle time before a session is dropped, seconds.
    pub idle_secs: Option<u64>,
    /// Absolute lifetime of a session, seconds.
    pub lifetime_secs: Option<u64>,
    /// Most requests per session (the anti-replay memory bound).
    pub max_requests: Option<u32>,
    /// Most nonces all sessions remember together.
    pub max_nonces: Option<usize>,
    /// Largest request that may leave its session unnamed (looked up by trying keys).
    pub max_unnamed_bytes: Option<usize>,
    /// Sessions one HTTP connection may make and keep.
    pub per_connection: Option<usize>,
    /// Sessions one principal (client) may hold; its next one ends its own oldest.
    pub per_principal: Option<usize>,
}

/// `[tokens]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// Idle time before a token expires and its wallet closes, seconds.
    pub idle_secs: Option<u64>,
    /// Absolute lifetime of a token, seconds.
    pub lifetime_secs: Option<u64>,
    /// Most wallets open at once.
    pub max_open_wallets: Option<usize>,
}

/// `[kdf]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfConfig {
    /// Memory, KiB.
    pub m_cost_kib: Option<u32>,
    /// Passes.
    pub t_cost: Option<u32>,
    /// Lanes.
    pub p_cost: Option<u32>,
}

/// `[throttle]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleFileConfig {
    /// Failures before any wait.
    pub free_attempts: Option<u32>,
    /// First wait, milliseconds.
    pub base_ms: Option<u64>,
    /// Longest wait, milliseconds.
    pub max_ms: Option<u64>,
}

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// HTTPS address.
    pub https: Option<SocketAddr>,
    /// Plain HTTP address (loopback only).
    pub http_insecure: Option<SocketAddr>,
    /// QUIC address.
    pub quic: Option<SocketAddr>,
    /// The core's configuration.
    pub core: ServerConfig,
    /// HTTP limits.
    pub http: HttpLimits,
    /// QUIC limits.
    pub quic_limits: QuicLimits,
    /// Unix socket path.
    pub unix: Option<PathBuf>,
    /// Uids served over the Unix socket besides the server's own.
    pub unix_allowed_uids: Vec<u32>,
    /// The pairing address (loopback), if pairing is on.
    pub pairing: Option<SocketAddr>,
    /// The driver (slow-call pool).
    pub driver: DriverConfig,
    /// The store's options (the audit log's retention).
    pub store: keyward_store::StoreOptions,
}

/// The default data directory: `$KEYWARD_DATA_DIR`, else `~/.keyward`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KEYWARD_DATA_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".keyward")
}

/// Parses an address option: "off" (or "") disables it.
pub fn parse_addr(text: &str) -> anyhow::Result<Option<SocketAddr>> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).with_context(|| format!("'{text}' is not an address like 127.0.0.1:3420"))
}

/// Reads a config file.
pub fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid keyward config", path.display()))
}

/// Flags of `keyward serve` that override the file.
#[derive(Debug, Default, Clone)]
pub struct ServeFlags {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--https`.
    pub https: Option<String>,
    /// `--http-insecure`.
    pub http_insecure: Option<String>,
    /// `--quic`.
    pub quic: Option<String>,
    /// `--unix`.
    pub unix: Option<String>,
    /// `--pairing`.
    pub pairing: Option<String>,
}

/// Defaults, then the file, then the flags.
pub fn resolve(file: FileConfig, flags: ServeFlags) -> anyhow::Result<ServeOptions> {
    let data_dir = flags.data_dir.or(file.data_dir).unwrap_or_else(default_data_dir);
    let https = parse_addr(flags.https.as_deref().or(file.https.as_deref()).unwrap_or(DEFAULT_ADDR))?;
    let http_insecure = parse_addr(flags.http_insecure.as_deref().or(file.http_insecure.as_deref()).unwrap_or("off"))?;
    let quic = parse_addr(flags.quic.as_deref().or(file.quic.as_deref()).unwrap_or(DEFAULT_ADDR))?;
    if let Some(addr) = http_insecure {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "--http-insecure serves plain HTTP and only on a loopback address (127.0.0.0/8 or [::1]); {addr} is not one"
        );
    }
    let pairing = parse_addr(flags.pairing.as_deref().or(file.pairing.as_deref()).unwrap_or(DEFAULT_PAIRING_ADDR))?;
    if let Some(addr) = pairing {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "pairing listens only on a loopback address (127.0.0.0/8 or [::1]); {addr} is not one"
        );
    }
    let mut core = ServerConfig { data_root: data_dir.display().to_string(), ..ServerConfig::default() };
    let sessions = file.sessions.unwrap_or_default();
    let defaults = SessionLimits::default();
    core.sessions = SessionLimits {
        max_sessions: sessions.max.unwrap_or(defaults.max_sessions),
        idle_ms: sessions.idle_secs.map_or(defaults.idle_ms, |s| s.saturating_mul(1000)),
        lifetime_ms: sessions.lifetime_secs.map_or(defaults.lifetime_ms, |s| s.saturating_mul(1000)),
        max_requests: sessions.max_requests.unwrap_or(defaults.max_requests),
        max_nonces: sessions.max_nonces.unwrap_or(defaults.max_nonces),
        max_per_principal: sessions.per_principal.unwrap_or(defaults.max_per_principal),
        max_unnamed_bytes: sessions.max_unnamed_bytes.unwrap_or(defaults.max_unnamed_bytes),
    };
    let sessions_per_connection = sessions.per_connection;
    let tokens = file.tokens.unwrap_or_default();
    let defaults = TokenLimits::default();
    core.tokens = TokenLimits {
        max_open_wallets: tokens.max_open_wallets.unwrap_or(defaults.max_open_wallets),
        idle_ms: tokens.idle_secs.map_or(defaults.idle_ms, |s| s.saturating_mul(1000)),
        lifetime_ms: tokens.lifetime_secs.map_or(defaults.lifetime_ms, |s| s.saturating_mul(1000)),
    };
    let kdf = file.kdf.unwrap_or_default();
    core.kdf = KdfParams {
        m_cost_kib: kdf.m_cost_kib.unwrap_or(KdfParams::DEFAULT.m_cost_kib),
        t_cost: kdf.t_cost.unwrap_or(KdfParams::DEFAULT.t_cost),
        p_cost: kdf.p_cost.unwrap_or(KdfParams::DEFAULT.p_cost),
    };
    let throttle = file.throttle.unwrap_or_default();
    let defaults = ThrottleConfig::default();
    core.throttle = ThrottleConfig {
        free_attempts: throttle.free_attempts.unwrap_or(defaults.free_attempts),
        base_ms: throttle.base_ms.unwrap_or(defaults.base_ms),
        max_ms: throttle.max_ms.unwrap_or(defaults.max_ms),
        ..defaults
    };
    let mut http = HttpLimits::default();
    if let Some(hosts) = file.allowed_hosts {
        http.allowed_hosts = hosts;
    }
    if let Some(max) = file.max_body_bytes {
        http.max_body_bytes = max;
    }
    http.header_timeout = Duration::from_secs(10);
    let mut quic_limits = QuicLimits::default();
    if let Some(limits) = file.quic_limits {
        quic_limits.max_connections = limits.max_connections.unwrap_or(quic_limits.max_connections);
        quic_limits.max_streams_per_connection =
            limits.max_streams_per_connection.unwrap_or(quic_limits.max_streams_per_connection);
        quic_limits.max_message_size = limits.max_message_bytes.unwrap_or(quic_limits.max_message_size);
        quic_limits.idle_timeout = limits.idle_secs.map_or(quic_limits.idle_timeout, Duration::from_secs);
    }
    quic_limits.validate().map_err(|e| anyhow::anyhow!("[quic_limits]: {e}"))?;
    let unix = flags.unix.or(file.unix).filter(|p| !p.trim().is_empty() && !p.trim().eq_ignore_ascii_case("off"));
    let unix_allowed_uids = file.unix_allowed_uids.unwrap_or_default();
    if let Some(role) = &file.local_http_role {
        core.local_http_role = keyward_core::Role::parse(role)
            .with_context(|| format!("local_http_role must be reader, signer or owner, not {role:?}"))?;
    }
    let mut driver = DriverConfig::default();
    driver.max_sessions_per_connection = sessions_per_connection.unwrap_or(driver.max_sessions_per_connection);
    if let Some(slow) = file.slow_calls {
        driver.slow_threads = slow.threads.unwrap_or(driver.slow_threads);
        driver.slow_queue = slow.queue.unwrap_or(driver.slow_queue);
        driver.slow_per_principal = slow.per_principal.unwrap_or(driver.slow_per_principal);
    }
    anyhow::ensure!(driver.slow_threads > 0, "[slow_calls] threads must be at least 1");
    let unix = unix.map(PathBuf::from);
    let mut store = keyward_store::StoreOptions::default();
    if let Some(audit) = file.audit {
        let retention = &mut store.audit_retention;
        retention.max_records = audit.max_records.unwrap_or(retention.max_records);
        retention.max_age_ms = audit.max_age_days.map_or(retention.max_age_ms, |d| d.saturating_mul(86_400_000));
        anyhow::ensure!(retention.max_records > 0, "[audit] max_records must be at least 1");
    }
    Ok(ServeOptions {
        data_dir,
        https,
        http_insecure,
        quic,
        core,
        http,
        quic_limits,
        unix,
        unix_allowed_uids,
        pairing,
        driver,
        store,
    })
}
