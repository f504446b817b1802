//! `keyward serve` settings: defaults, a TOML file (`--config`), and flags, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use keyward_core::ServerConfig;
use keyward_core::SessionLimits;
use keyward_core::ThrottleConfig;
use keyward_core::TokenLimits;
use keyward_core::store::KdfParams;
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
    /// `[sessions]`: the core's session limits, and the driver's `per_connection`.
    pub sessions: Option<SessionsSection>,
    /// `[tokens]`: token lifetimes and the open-wallet bound.
    pub tokens: Option<TokenLimits>,
    /// Argon2id parameters for new records.
    pub kdf: Option<KdfConfig>,
    /// `[throttle]`: unlock throttling.
    pub throttle: Option<ThrottleConfig>,
    /// `[quic_limits]`.
    pub quic_limits: Option<QuicLimits>,
    /// `[slow_calls]`: the driver's slow-call pool.
    pub slow_calls: Option<DriverConfig>,
    /// `[connections]`: connections per client and the owner's reserve in every listener.
    pub connections: Option<keyward_driver::ConnectionLimits>,
    /// `[audit]`: the audit log's retention.
    pub audit: Option<keyward_store::AuditRetention>,
}

/// `[sessions]`: [`SessionLimits`]' keys, and `per_connection` (sessions one HTTP connection may
/// make and keep, the driver's). Unknown keys are refused, as in every table.
#[derive(Debug, Default)]
pub struct SessionsSection {
    /// The core's limits.
    pub limits: SessionLimits,
    /// `per_connection`.
    pub per_connection: Option<usize>,
}

impl<'de> Deserialize<'de> for SessionsSection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(deserializer)?;
        let per_connection = match table.remove("per_connection") {
            None => None,
            Some(value) => {
                Some(value.try_into::<usize>().map_err(|e| D::Error::custom(format!("per_connection: {e}")))?)
            }
        };
        let limits = toml::Value::Table(table).try_into::<SessionLimits>().map_err(D::Error::custom)?;
        Ok(Self { limits, per_connection })
    }
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

/// The store's options for `data_dir` (its store in `store/`): the audit log's head kept in
/// `audit.head` beside it; the default retention.
pub fn store_options(data_dir: &Path) -> keyward_store::StoreOptions {
    keyward_store::StoreOptions { audit_head: Some(data_dir.join("audit.head")), ..Default::default() }
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

/// The config file `keyward serve` reads from its data directory when `--config` names none.
pub const CONFIG_FILE: &str = "keyward.toml";

/// The config file `keyward serve` uses: `explicit` (`--config FILE`), else `DATA_DIR/keyward.toml`
/// when it exists, else none. `data_dir` is the one named by `--data-dir` or `KEYWARD_DATA_DIR` (a
/// file's own `data_dir` cannot say where to find that file), or the default.
pub fn config_file(explicit: Option<&Path>, data_dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    let in_data_dir = data_dir.map_or_else(default_data_dir, Path::to_owned).join(CONFIG_FILE);
    in_data_dir.is_file().then_some(in_data_dir)
}

/// The filter of the server's log: `RUST_LOG` if set (as given), else `--log` or the file's `log`,
/// else `info`; the store's internals (`fjall`, `lsm_tree`) at `warn` unless the filter names them,
/// so `--log debug` shows Keyward's debug lines without the store's.
pub fn log_filter(rust_log: Option<&str>, configured: Option<&str>) -> String {
    if let Some(filter) = rust_log.filter(|f| !f.trim().is_empty()) {
        return filter.to_owned();
    }
    let level = configured.map(str::trim).filter(|f| !f.is_empty()).unwrap_or("info");
    let mut filter = level.to_owned();
    for quiet in ["fjall", "lsm_tree"] {
        if !level.contains(quiet) {
            filter.push_str(&format!(",{quiet}=warn"));
        }
    }
    filter
}

/// Argon2id's own limits and the core's ([`KdfParams::MAX_M_COST_KIB`], [`KdfParams::MAX_T_P`]):
/// parameters outside them would fail at the first `create_wallet`; refused at start instead.
fn check_kdf(kdf: &KdfParams) -> anyhow::Result<()> {
    let max_t_p = KdfParams::MAX_T_P;
    anyhow::ensure!(
        (1..=max_t_p).contains(&kdf.t_cost),
        "[kdf] t_cost must be 1 to {max_t_p} (passes), not {}",
        kdf.t_cost
    );
    anyhow::ensure!(
        (1..=max_t_p).contains(&kdf.p_cost),
        "[kdf] p_cost must be 1 to {max_t_p} (lanes), not {}",
        kdf.p_cost
    );
    let min_m = 8 * kdf.p_cost;
    let max_m = KdfParams::MAX_M_COST_KIB;
    anyhow::ensure!(
        (min_m..=max_m).contains(&kdf.m_cost_kib),
        "[kdf] m_cost_kib must be {min_m} (8 per lane) to {max_m} (1 GiB), not {}",
        kdf.m_cost_kib
    );
    Ok(())
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
    core.sessions = sessions.limits;
    core.tokens = file.tokens.unwrap_or_default();
    let kdf = file.kdf.unwrap_or_default();
    core.kdf = KdfParams {
        m_cost_kib: kdf.m_cost_kib.unwrap_or(KdfParams::DEFAULT.m_cost_kib),
        t_cost: kdf.t_cost.unwrap_or(KdfParams::DEFAULT.t_cost),
        p_cost: kdf.p_cost.unwrap_or(KdfParams::DEFAULT.p_cost),
    };
    check_kdf(&core.kdf)?;
    core.throttle = file.throttle.unwrap_or_default();
    let mut http = HttpLimits::default();
    if let Some(hosts) = file.allowed_hosts {
        http.allowed_hosts = hosts;
    }
    if let Some(max) = file.max_body_bytes {
        http.max_body_bytes = max;
    }
    http.header_timeout = Duration::from_secs(10);
    let quic_limits = file.quic_limits.unwrap_or_default();
    quic_limits.validate().map_err(|e| anyhow::anyhow!("[quic_limits]: {e}"))?;
    let unix = flags.unix.or(file.unix).filter(|p| !p.trim().is_empty() && !p.trim().eq_ignore_ascii_case("off"));
    let unix_allowed_uids = file.unix_allowed_uids.unwrap_or_default();
    if let Some(role) = &file.local_http_role {
        core.local_http_role = keyward_core::Role::parse(role)
            .with_context(|| format!("local_http_role must be reader, signer or owner, not {role:?}"))?;
    }
    let mut driver = file.slow_calls.unwrap_or_default();
    driver.max_sessions_per_connection = sessions.per_connection.unwrap_or(driver.max_sessions_per_connection);
    driver.connections = file.connections.unwrap_or_default();
    anyhow::ensure!(driver.connections.per_principal > 0, "[connections] per_principal must be at least 1");
    anyhow::ensure!(driver.slow_threads > 0, "[slow_calls] threads must be at least 1");
    let unix = unix.map(PathBuf::from);
    let mut store = store_options(&data_dir);
    if let Some(retention) = file.audit {
        anyhow::ensure!(retention.max_records > 0, "[audit] max_records must be at least 1");
        store.audit_retention = retention;
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

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// The README's example file, between its ```toml fence and the next fence.
    fn readme_example() -> String {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\ndata_dir").expect("the README's config example") + "```toml\n".len();
        let end = start + readme[start..].find("```").expect("its closing fence");
        readme[start..end].to_owned()
    }

    fn resolved(text: &str) -> ServeOptions {
        resolve(toml::from_str(text).unwrap(), ServeFlags::default()).unwrap()
    }

    /// The README documents the defaults: reading its example changes nothing (but the thread count,
    /// which defaults to the machine's cores).
    #[test]
    fn the_readmes_example_is_the_defaults() {
        let example = resolved(&readme_example());
        let defaults = resolved("");
        assert_eq!(example.core.sessions, defaults.core.sessions);
        assert_eq!(example.core.sessions, SessionLimits::default());
        assert_eq!(example.core.tokens, TokenLimits::default());
        assert_eq!(example.core.throttle, ThrottleConfig::default());
        assert_eq!(example.core.kdf, KdfParams::DEFAULT);
        assert_eq!(example.quic_limits, QuicLimits::default());
        assert_eq!(example.store.audit_retention, keyward_store::AuditRetention::default());
        assert_eq!(example.driver.max_sessions_per_connection, DriverConfig::default().max_sessions_per_connection);
        assert_eq!(example.driver.slow_queue, DriverConfig::default().slow_queue);
        assert_eq!(example.driver.slow_per_principal, DriverConfig::default().slow_per_principal);
        assert_eq!(example.driver.slow_threads, 2);
        assert_eq!(example.driver.connections, keyward_driver::ConnectionLimits::default());
    }

    /// Each table's keys land in the limits structs, in the file's units (seconds, days).
    #[test]
    fn every_key_reaches_its_limit() {
        let options = resolved(
            "[sessions]\nmax = 7\nidle_secs = 2\nlifetime_secs = 3\nmax_requests = 4\nmax_nonces = 5\n\
             max_unnamed_bytes = 6\nper_connection = 9\nper_principal = 10\ngrace_secs = 24\n\
             [tokens]\nidle_secs = 11\nlifetime_secs = 12\nmax_open_wallets = 13\nclose_on_password_change = false\n\
             [throttle]\nfree_attempts = 14\nbase_ms = 15\nmax_ms = 16\n\
             [quic_limits]\nmax_connections = 17\nmax_streams_per_connection = 18\nmax_message_bytes = 19\nidle_secs = 20\n\
             [audit]\nmax_records = 21\nmax_age_days = 2\n\
             [slow_calls]\nthreads = 3\nqueue = 22\nper_principal = 23\n\
             [connections]\nper_principal = 24\nowner_reserve = 25\n",
        );
        let expected = SessionLimits {
            max_sessions: 7,
            idle_ms: 2000,
            lifetime_ms: 3000,
            max_requests: 4,
            max_nonces: 5,
            max_per_principal: 10,
            max_unnamed_bytes: 6,
            grace_ms: 24_000,
        };
        assert_eq!(options.core.sessions, expected);
        assert_eq!(
            options.core.tokens,
            TokenLimits { max_open_wallets: 13, idle_ms: 11_000, lifetime_ms: 12_000, close_on_password_change: false }
        );
        let throttle = ThrottleConfig { free_attempts: 14, base_ms: 15, max_ms: 16, ..ThrottleConfig::default() };
        assert_eq!(options.core.throttle, throttle);
        let quic = QuicLimits {
            max_connections: 17,
            max_streams_per_connection: 18,
            max_message_size: 19,
            idle_timeout: Duration::from_secs(20),
            ..QuicLimits::default()
        };
        assert_eq!(options.quic_limits, quic);
        let retention = keyward_store::AuditRetention { max_records: 21, max_age_ms: 2 * 86_400_000 };
        assert_eq!(options.store.audit_retention, retention);
        let driver = &options.driver;
        assert_eq!((driver.slow_threads, driver.slow_queue, driver.slow_per_principal), (3, 22, 23));
        assert_eq!(driver.max_sessions_per_connection, 9);
        let connections = keyward_driver::ConnectionLimits { per_principal: 24, owner_reserve: 25 };
        assert_eq!(driver.connections, connections);
    }

    /// A misspelt key is an error that names it, in every table; so is a bad value.
    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        for (text, named) in [
            ("[sessions]\nidle_sec = 5\n", "idle_sec"),
            ("[sessions]\nper_connection = -1\n", "per_connection"),
            ("[tokens]\nmax_open = 5\n", "max_open"),
            ("[throttle]\nmax_entries = 5\n", "max_entries"),
            ("[quic_limits]\nread_timeout = 5\n", "read_timeout"),
            ("[audit]\nmax_age_ms = 5\n", "max_age_ms"),
            ("[slow_calls]\nslow_threads = 5\n", "slow_threads"),
            ("[connections]\nmax = 5\n", "max"),
        ] {
            let error = toml::from_str::<FileConfig>(text).unwrap_err().to_string();
            assert!(error.contains(named), "{text}: {error}");
        }
        let zero = resolve(toml::from_str("[slow_calls]\nthreads = 0\n").unwrap(), ServeFlags::default());
        assert!(zero.unwrap_err().to_string().contains("threads must be at least 1"));
    }

    /// `[kdf]` values Argon2id (or the core) would refuse at the first `create_wallet` are refused
    /// here, naming the key; the limits themselves pass.
    #[test]
    fn kdf_values_out_of_range_are_refused_naming_the_key() {
        for (text, named) in [
            ("[kdf]\nt_cost = 0\n", "[kdf] t_cost must be 1 to 64"),
            ("[kdf]\nt_cost = 65\n", "[kdf] t_cost must be 1 to 64"),
            ("[kdf]\np_cost = 0\n", "[kdf] p_cost must be 1 to 64"),
            ("[kdf]\nm_cost_kib = 7\np_cost = 1\n", "[kdf] m_cost_kib must be 8 (8 per lane)"),
            ("[kdf]\nm_cost_kib = 31\np_cost = 4\n", "[kdf] m_cost_kib must be 32 (8 per lane)"),
            ("[kdf]\nm_cost_kib = 1048577\n", "to 1048576 (1 GiB), not 1048577"),
        ] {
            let error = resolve(toml::from_str(text).unwrap(), ServeFlags::default()).unwrap_err().to_string();
            assert!(error.contains(named), "{text}: {error}");
        }
        let edges = resolved("[kdf]\nm_cost_kib = 512\nt_cost = 64\np_cost = 64\n");
        assert_eq!(edges.core.kdf, KdfParams { m_cost_kib: 512, t_cost: 64, p_cost: 64 });
        resolved("[kdf]\nm_cost_kib = 1048576\nt_cost = 1\np_cost = 1\n");
    }

    /// `--log LEVEL` keeps the store's internals at `warn` unless it names them; `RUST_LOG` is taken
    /// as it is.
    #[test]
    fn the_log_filter_quiets_the_store_unless_named() {
        assert_eq!(log_filter(None, None), "info,fjall=warn,lsm_tree=warn");
        assert_eq!(log_filter(None, Some("debug")), "debug,fjall=warn,lsm_tree=warn");
        assert_eq!(log_filter(None, Some("debug,fjall=trace")), "debug,fjall=trace,lsm_tree=warn");
        assert_eq!(log_filter(Some("trace"), Some("debug")), "trace");
        assert_eq!(log_filter(Some(""), Some("warn")), "warn,fjall=warn,lsm_tree=warn");
    }

    /// `DATA_DIR/keyward.toml` is the config file when `--config` names none.
    #[test]
    fn the_data_directorys_keyward_toml_is_read_unless_config_names_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(config_file(None, Some(dir.path())), None);
        std::fs::write(dir.path().join(CONFIG_FILE), "log = \"debug\"\n").unwrap();
        assert_eq!(config_file(None, Some(dir.path())), Some(dir.path().join(CONFIG_FILE)));
        let other = dir.path().join("other.toml");
        assert_eq!(config_file(Some(&other), Some(dir.path())), Some(other));
    }
}
