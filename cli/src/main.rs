//! `keyward`: the owner server and its command-line client.

// A command-line program: its results go to standard output.
#![expect(clippy::print_stdout, reason = "the command line prints its answers")]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use keyward::bench::BenchOptions;
use keyward::call::CallOptions;
use keyward::config::{self, ServeFlags};
use keyward::failure::{Failure, Reported};
use keyward::{certs, serve};

/// Examples under `keyward call --help`.
const CALL_EXAMPLES: &str = "Examples:
  keyward call --list
  keyward call help create_wallet
  keyward call create_wallet '{\"name\":\"demo\"}' --words 24
  export KEYWARD_TOKEN=$(keyward call --raw open_wallet '{\"name\":\"demo\"}')
  keyward call accounts
  printf 'pw\\n' | keyward call --password-stdin open_wallet '{\"name\":\"demo\"}'";

#[derive(Parser)]
#[command(
    name = "keyward",
    version,
    about = "A secure owner API for wallet back ends (Owner API V3 over mTLS)",
    after_help = keyward::failure::EXIT_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the owner server (HTTPS with client certificates; data and certificates made on first start).
    Serve {
        /// Data directory: the wallet store and tls/ (default ~/.keyward).
        #[arg(long, env = "KEYWARD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// A TOML config file; flags override it (default DATA_DIR/keyward.toml, if there is one).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log level or filter, e.g. debug or info,keyward=debug (default info; also `log = "…"` in
        /// the config file; RUST_LOG wins over both). The store's internals (fjall, lsm_tree) stay at
        /// warn unless the filter names them.
        #[arg(long, value_name = "LEVEL")]
        log: Option<String>,
        /// HTTPS address, or "off" (default 127.0.0.1:3420).
        #[arg(long)]
        https: Option<String>,
        /// Also serve plain HTTP on this loopback address, for V3 clients that cannot do TLS.
        #[arg(long)]
        http_insecure: Option<String>,
        /// QUIC address, or "off" (default 127.0.0.1:3420, UDP).
        #[arg(long)]
        quic: Option<String>,
        /// Also serve on a Unix socket at this path (made 0600 in a 0700 directory; a peer's uid must
        /// be a registered client's: the server's own and `unix_allowed_uids` are registered at start).
        #[arg(long)]
        unix: Option<String>,
        /// Where front ends pair with a one-time code, or "off" (default 127.0.0.1:3422; loopback
        /// only; the listener is open only while a code from `keyward clients pair` is live).
        #[arg(long)]
        pairing: Option<String>,
        /// Once listening, write the bound addresses here as JSON (for scripts and `keyward bench`).
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Run as a front end's own back end: certificates made in memory for this run only (none
        /// written to disk), HTTPS and QUIC on 127.0.0.1 port 0, one JSON line on standard output
        /// with the URL and the client's credentials, and exit when standard input closes or the
        /// parent process dies. See clients/ts/README.md for the contract.
        #[arg(long, conflicts_with_all = ["https", "pairing"])]
        launcher: bool,
    },
    /// Measure the server end to end next to an echo floor (about 2 minutes; --quick about 20 s).
    ///
    /// Starts its own server on a temporary data directory (unless --url/--quic name a running one)
    /// and an echo server on the same transports, prints a table of the figures and their ratios to the
    /// echo floor, and exits non-zero if any call failed. BENCHMARKS.md describes the method.
    Bench {
        /// A short run (concurrency 1 and 4, fewer samples): a smoke test, not for figures.
        #[arg(long)]
        quick: bool,
        /// Also write every figure to this file as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Seconds measured per cell (default 2, or 0.5 with --quick).
        #[arg(long)]
        seconds: Option<f64>,
        /// Concurrency levels, e.g. 1,16 (default 1,4,16,64, or 1,4 with --quick).
        #[arg(long, value_delimiter = ',')]
        concurrency: Option<Vec<usize>>,
        /// Transports to measure, e.g. https,quic (default: https, quic and http).
        #[arg(long, value_delimiter = ',')]
        transports: Option<Vec<String>>,
        /// What to measure of the calls: accounts, sign_message, echo (default all; for profiling).
        #[arg(long, value_delimiter = ',')]
        calls: Option<Vec<String>>,
        /// Measure a running server at this URL (https://… or http://…; repeat for both).
        #[arg(long)]
        url: Vec<String>,
        /// Measure a running server over QUIC at this address.
        #[arg(long)]
        quic: Option<std::net::SocketAddr>,
        /// Certificate directory of a running server (default: DATA_DIR/tls).
        #[arg(long)]
        tls_dir: Option<PathBuf>,
        /// Process id of a running server, to read its memory and CPU time.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// The echo floor `keyward bench` measures against (started by it).
    #[command(hide = true)]
    BenchEcho {
        /// Certificate directory (server.crt, server.key, ca.crt).
        #[arg(long)]
        tls_dir: PathBuf,
        /// Once listening, write the bound addresses here as JSON.
        #[arg(long)]
        ready_file: PathBuf,
    },
    /// Manage the private CA and the five certificate files.
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
    /// Register, list, re-role and revoke the clients that may call the server.
    ///
    /// With a server running on the data directory (or named with --url, --quic or --unix), these are
    /// owner calls to it; with none running, the same calls to a server in this process over the data
    /// directory's store (audited as principal `local`).
    Clients {
        #[command(subcommand)]
        action: keyward::clients::Action,
        #[command(flatten)]
        target: keyward::clients::Target,
    },
    /// Pair this front end with a server using the one-time code the owner got from `keyward
    /// clients pair`: writes a bundle (ca.crt, client.crt, client.key, keyward.toml) to DIR.
    Pair {
        /// The code, e.g. 7KQ2M-XR4TD (case, spaces and dashes do not matter). Better left out:
        /// it is then asked for (or read from standard input with --code-stdin), because other
        /// local users can read a command line while the code is live.
        code: Option<String>,
        /// Read the code from standard input (one line) instead of a prompt.
        #[arg(long, conflicts_with = "code")]
        code_stdin: bool,
        /// Where to pair, as `keyward clients pair` printed it.
        #[arg(long, default_value = "tcp://127.0.0.1:3422")]
        url: String,
        /// The client name the owner chose (checked; optional).
        #[arg(long)]
        name: Option<String>,
        /// The directory to write the bundle to (made 0700; must not hold a bundle).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// The native-messaging host a browser extension talks to (started by the browser), and its
    /// installation: `keyward native-host install|uninstall`.
    #[command(name = "native-host", args_conflicts_with_subcommands = true)]
    NativeHost {
        #[command(subcommand)]
        action: Option<keyward::native_host::Action>,
        /// The host's bundle (as `install` made it).
        #[arg(long, value_name = "DIR")]
        bundle: Option<PathBuf>,
        /// What the browser passes: the calling extension's origin (Chrome, Chromium), or the app
        /// manifest's path and the extension's id (Firefox).
        #[arg(allow_hyphen_values = true)]
        browser_args: Vec<String>,
    },
    /// Call a method over the secure protocol and print its result.
    ///
    /// `keyward call --list` lists the methods, `keyward call help METHOD` describes one. The server
    /// is found from the data directory (the addresses a running `keyward serve` wrote there) unless
    /// --url, --quic or --unix names one. Params left out are filled in: passwords are asked for
    /// (never taken from the command line), the token comes from --token or KEYWARD_TOKEN.
    #[command(after_help = CALL_EXAMPLES)]
    Call {
        /// Data directory of the server: its certificates (tls/) and where a running server is found.
        #[arg(long, env = "KEYWARD_DATA_DIR", value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Server URL (default: the bundle's keyward.toml url, else the running server's, else
        /// https://127.0.0.1:3420/v3/owner).
        #[arg(long)]
        url: Option<String>,
        /// Call over QUIC at this address (e.g. 127.0.0.1:3420) instead of HTTPS.
        #[arg(long)]
        quic: Option<std::net::SocketAddr>,
        /// Call over the Unix socket at this path instead of HTTPS (as the client of your uid).
        #[arg(long, conflicts_with = "quic")]
        unix: Option<PathBuf>,
        /// Certificate directory: a client's bundle (ca.crt, client.crt, client.key, as `keyward
        /// clients add --out` writes it) or a server's tls/ (default: DATA_DIR/tls).
        #[arg(long, value_name = "DIR")]
        tls_dir: Option<PathBuf>,
        /// The token open_wallet printed, for the methods that take one.
        #[arg(long, env = "KEYWARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Read passwords from standard input, one line each, instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// Accept an empty password where one is being set (create_wallet, change_password,
        /// import_grin_wallet).
        #[arg(long)]
        allow_empty_password: bool,
        /// The recovery phrase's length for create_wallet: 12, 15, 18, 21 or 24 words (sets
        /// mnemonic_length, which counts bytes of entropy: 16 to 32).
        #[arg(long, value_name = "N")]
        words: Option<u8>,
        /// create_wallet: restore from a recovery phrase, asked for (echo off) or read as a line of
        /// standard input with --password-stdin (before the password); never taken from PARAMS.
        #[arg(long, conflicts_with = "words")]
        restore: bool,
        /// Print a string result without JSON quotes.
        #[arg(long)]
        raw: bool,
        /// Print the result as one line of JSON, and a failure as {"code":…,"message":…} on
        /// standard output (code: the server's JSON-RPC code, else the exit status).
        #[arg(long, conflicts_with = "raw")]
        json: bool,
        /// Keep trying for up to SECS while nothing answers yet (for scripts that start the server).
        #[arg(long, value_name = "SECS")]
        wait: Option<f64>,
        /// List every method: name, the least role, params.
        #[arg(long, conflicts_with_all = ["method", "params"])]
        list: bool,
        /// Send a method that is not in the table (one the server's embedder added), params as given.
        #[arg(long)]
        unlisted: bool,
        /// The method, e.g. open_wallet (`help METHOD` describes one).
        #[arg(required_unless_present = "list")]
        method: Option<String>,
        /// Params as a JSON object; missing ones are filled in (passwords are asked for).
        params: Option<String>,
    },
    /// Print a shell completion script: `keyward completions bash > ~/.local/share/bash-completion/completions/keyward`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (keyward.1 and one per command) to DIR, or keyward.1 to standard output.
    Man {
        /// The directory to write the pages to (e.g. ~/.local/share/man/man1).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Whether a server runs on the data directory, where it listens, and its wallets and clients
    /// (from the server over the owner API, or from the store when none runs).
    Status {
        /// Data directory (default ~/.keyward).
        #[arg(long, env = "KEYWARD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Print one JSON object instead of `key: value` lines.
        #[arg(long)]
        json: bool,
    },
    /// Show or verify the audit log (from the running server over the API, or from the store
    /// when no server holds the data directory).
    Audit {
        #[command(subcommand)]
        command: keyward::audit::AuditCommand,
    },
}

#[derive(Subcommand)]
enum CertsAction {
    /// Make a new CA and the five files in DIR.
    Init {
        /// Where to write ca.crt, server.crt, server.key, client.crt, client.key.
        #[arg(long)]
        dir: PathBuf,
        /// Discard the CA's key: the server then cannot issue client certificates (ca.key, 0600, is
        /// kept by default).
        #[arg(long)]
        no_ca_key: bool,
        /// Kept for older scripts: the CA's key is kept by default.
        #[arg(long, hide = true, conflicts_with = "no_ca_key")]
        keep_ca_key: bool,
    },
    /// Replace the set in DIR with a new one (new CA, new keys), atomically; a running server takes
    /// it for new connections within 2 s.
    Rotate {
        /// The certificate directory.
        #[arg(long)]
        dir: PathBuf,
        /// Discard the new CA's key (see `certs init --no-ca-key`).
        #[arg(long)]
        no_ca_key: bool,
        /// Kept for older scripts: the CA's key is kept by default.
        #[arg(long, hide = true, conflicts_with = "no_ca_key")]
        keep_ca_key: bool,
    },
    /// Print subjects, fingerprints, expiry and usages.
    Show {
        /// The certificate directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Logs to standard error at `filter` (see [`config::log_filter`]; a filter that does not parse
/// keeps what parses of it).
fn init_logging(filter: Option<&str>) {
    let filter = config::log_filter(std::env::var("RUST_LOG").ok().as_deref(), filter);
    install_logging(tracing_subscriber::EnvFilter::new(filter));
}

/// `keyward serve`'s logging: as [`init_logging`], but a filter that does not parse is an error.
fn init_serve_logging(given: Option<&str>) -> anyhow::Result<()> {
    let rust_log = std::env::var("RUST_LOG").ok().filter(|f| !f.trim().is_empty());
    let filter = config::log_filter(rust_log.as_deref(), given);
    let parsed = tracing_subscriber::EnvFilter::try_new(&filter).map_err(|error| {
        let (what, named) = match &rust_log {
            Some(rust_log) => ("RUST_LOG", rust_log.as_str()),
            None => ("--log (or log in the config file)", given.unwrap_or_default()),
        };
        anyhow::anyhow!(
            "the log filter {named:?} of {what} is not valid ({error}): give a level (error, warn, info, debug, \
             trace) or a filter such as info,keyward=debug"
        )
    })?;
    install_logging(parsed);
    Ok(())
}

/// Colour only on a terminal, and not with `NO_COLOR` set (https://no-color.org).
fn install_logging(filter: tracing_subscriber::EnvFilter) {
    use std::io::IsTerminal as _;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colour).with_writer(std::io::stderr).try_init();
}

/// The first line of a server's log: its version, data directory and config file.
fn log_start(data_dir: &std::path::Path, config_file: Option<&std::path::Path>) {
    let config = config_file.map_or_else(|| "no config file".to_owned(), |p| format!("config file {}", p.display()));
    tracing::info!("keyward {} starting: data directory {}, {config}", env!("CARGO_PKG_VERSION"), data_dir.display());
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            data_dir,
            config: file,
            log,
            https,
            http_insecure,
            quic,
            unix,
            pairing,
            ready_file,
            launcher,
        } => {
            let config_file = config::config_file(file.as_deref(), data_dir.as_deref());
            let file = match &config_file {
                Some(path) => config::read_file(path)?,
                None => config::FileConfig::default(),
            };
            init_serve_logging(log.as_deref().or(file.log.as_deref()))?;
            if launcher {
                let flags = ServeFlags { data_dir, https, http_insecure, quic, unix, pairing };
                return launch(file, flags, ready_file, config_file.as_deref()).await;
            }
            let options = config::resolve(file, ServeFlags { data_dir, https, http_insecure, quic, unix, pairing })?;
            log_start(&options.data_dir, config_file.as_deref());
            let mut signals = serve::Signals::install();
            let pairing = options.pairing;
            let running = serve::start(options).await?;
            // Where `keyward call`, `clients`, `audit` and `status` find this server.
            let endpoints = keyward::endpoints::Endpoints::of(&running, pairing);
            if let Err(error) = keyward::endpoints::write(&running.data_dir, &endpoints) {
                tracing::warn!("the commands will not find this server on the data directory: {error:#}");
            }
            if let Some(path) = ready_file {
                running.write_ready_file(&path)?;
            }
            signals.recv().await;
            tracing::info!("shutting down");
            keyward::endpoints::remove(&running.data_dir);
            running.stop().await;
            Ok(())
        }
        Command::Bench { quick, json, seconds, concurrency, transports, calls, url, quic, tls_dir, pid } => {
            init_logging(Some("warn"));
            let options =
                BenchOptions { quick, json, seconds, concurrency, transports, calls, urls: url, quic, tls_dir, pid };
            let report = keyward::bench::run(options).await?;
            print!("{}", report.table);
            anyhow::ensure!(report.errors == 0, "{} errors during the run (see the table)", report.errors);
            Ok(())
        }
        Command::BenchEcho { tls_dir, ready_file } => {
            init_logging(Some("warn"));
            keyward::bench::echo_server(&tls_dir, &ready_file).await
        }
        Command::Certs { action } => {
            match action {
                CertsAction::Init { dir, no_ca_key, .. } => {
                    let set = certs::init(&dir, !no_ca_key, false)?;
                    eprintln!(
                        "wrote ca.crt, server.crt, server.key, client.crt, client.key to {} (the current set in {})",
                        set.display(),
                        dir.display()
                    );
                }
                CertsAction::Rotate { dir, no_ca_key, .. } => {
                    let set = certs::rotate(&dir, !no_ca_key)?;
                    eprintln!(
                        "replaced the certificate set in {} with {}; a running keyward serve uses it for new \
                         connections within 2 s",
                        dir.display(),
                        set.display()
                    );
                }
                CertsAction::Show { dir } => print!("{}", certs::show(&dir)?),
            }
            Ok(())
        }
        Command::Clients { action, target } => {
            init_logging(Some("warn"));
            print!("{}", keyward::clients::run(&target, action).await?);
            Ok(())
        }
        Command::Call {
            data_dir,
            url,
            quic,
            unix,
            tls_dir,
            token,
            password_stdin,
            allow_empty_password,
            words,
            restore,
            raw,
            json,
            wait,
            list,
            unlisted,
            method,
            params,
        } => {
            init_logging(Some("warn"));
            if list {
                print!("{}", keyward::discover::list());
                return Ok(());
            }
            let method = method.unwrap_or_default();
            if method == "help" && !unlisted {
                match params {
                    Some(name) => print!("{}", keyward::discover::help(&name)?),
                    None => print!("{}", keyward::discover::list()),
                }
                return Ok(());
            }
            if unix.is_some() && tls_dir.is_some() {
                return Err(Failure::usage(
                    "over the Unix socket you are the client of your uid; --tls-dir is not used there (leave it out, \
                     or call over HTTPS or QUIC to act as the bundle's client)",
                )
                .into());
            }
            let data_dir = data_dir.unwrap_or_else(config::default_data_dir);
            // A bundle (--tls-dir) is a client's: its own keyward.toml names its server; the data
            // directory's certificates are the owner's, and its running server says where it is.
            let (expected, find_in, url) = match &tls_dir {
                Some(dir) => {
                    let url = match url {
                        Some(url) => Some(url),
                        None => keyward::call::bundle_url(dir)?,
                    };
                    (keyward::call::Expected { data_dir: None, tls_dir: Some(dir.clone()) }, None, url)
                }
                None => {
                    let expected = keyward::call::Expected { data_dir: Some(data_dir.clone()), tls_dir: None };
                    (expected, Some(data_dir.clone()), url)
                }
            };
            let tls_dir = tls_dir.unwrap_or_else(|| serve::tls_dir(&data_dir));
            let wait = match wait {
                Some(secs) if !(0.0..=86_400.0).contains(&secs) => {
                    return Err(Failure::usage("--wait takes 0 to 86400 seconds").into());
                }
                wait => wait.map(std::time::Duration::from_secs_f64),
            };
            let fill = keyward::params::FillOptions {
                password_stdin,
                allow_empty_password,
                words,
                token: token.map(zeroize::Zeroizing::new),
                unlisted,
                restore,
            };
            let options = CallOptions { url, find_in, tls_dir, quic, unix, expected, fill, wait };
            if std::env::args().any(|arg| arg == "--token" || arg.starts_with("--token=")) {
                eprintln!(
                    "keyward: warning: other local users can read a token given on the command line; set \
                     KEYWARD_TOKEN instead"
                );
            }
            let keyward::call::Called { mut value, next } =
                match keyward::call::run(&options, &method, params.as_deref()).await {
                    Ok(called) => called,
                    Err(error) if json => {
                        println!("{}", Failure::json_of(&error));
                        return Err(Reported(Failure::exit_of(&error)).into());
                    }
                    Err(error) => return Err(error),
                };
            match (&value, raw, json) {
                (serde_json::Value::String(text), true, _) => println!("{text}"),
                (_, _, true) => println!("{value}"),
                _ => println!("{}", serde_json::to_string_pretty(&value)?),
            }
            keyward_core::crypto::wipe_answer(&mut value);
            if let Some(next) = next {
                eprintln!("{next}");
            }
            Ok(())
        }
        Command::Pair { code, code_stdin, url, name, out } => {
            init_logging(Some("warn"));
            let code = match code {
                Some(code) => {
                    eprintln!(
                        "keyward: warning: other local users can read a code given on the command line; leave it out \
                         to type it at a prompt"
                    );
                    zeroize::Zeroizing::new(code)
                }
                None => keyward::pairing::read_code(code_stdin)?,
            };
            print!("{}", keyward::pairing::pair(&code, &url, name.as_deref(), &out).await?);
            Ok(())
        }
        Command::NativeHost { action: Some(action), .. } => {
            init_logging(Some("warn"));
            print!("{}", keyward::native_host::manage(action).await?);
            Ok(())
        }
        Command::NativeHost { action: None, bundle, browser_args } => {
            // Standard output carries the browser's frames only: logs go to standard error.
            init_logging(Some("warn"));
            keyward::native_host::run(bundle, &browser_args).await
        }
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics when its writer fails (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "keyward", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)?;
            Ok(())
        }
        Command::Man { out: None } => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Man { out: Some(dir) } => {
            let written = keyward::manual::write_pages(Cli::command(), &dir)?;
            eprintln!(
                "wrote {} man pages to {}: `man -M {} keyward` reads them",
                written,
                dir.display(),
                dir.display()
            );
            Ok(())
        }
        Command::Status { data_dir, json } => {
            init_logging(Some("warn"));
            let (report, failed) = keyward::status::run(data_dir, json).await?;
            print!("{report}");
            if failed {
                // The report names what failed (its `error`).
                return Err(Reported(keyward::failure::Exit::Connect).into());
            }
            Ok(())
        }
        Command::Audit { command } => {
            init_logging(Some("warn"));
            keyward::audit::run(&command, &mut std::io::stdout()).await
        }
    }
}

/// `keyward serve --launcher` (see `keyward::launcher`).
async fn launch(
    file: config::FileConfig,
    mut flags: ServeFlags,
    ready_file: Option<PathBuf>,
    config_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    // First: if the parent is already gone, the first check below sees it.
    let parent = keyward::launcher::die_with_parent();
    const EPHEMERAL: &str = "127.0.0.1:0";
    flags.https = Some(EPHEMERAL.into());
    flags.quic = match flags.quic.take() {
        None => Some(EPHEMERAL.into()),
        Some(off) if config::parse_addr(&off)?.is_none() => Some(off),
        Some(other) => {
            anyhow::bail!("with --launcher, QUIC listens on {EPHEMERAL}; --quic takes only `off` (not {other})")
        }
    };
    flags.pairing = Some("off".into());
    // Plain HTTP's principal (`local-http`) would let every local process act as the owner of a
    // server whose whole point is that only its parent holds a credential.
    let plain = flags.http_insecure.as_deref().or(file.http_insecure.as_deref());
    if let Some(addr) = plain
        && config::parse_addr(addr)?.is_some()
    {
        anyhow::bail!(
            "with --launcher, plain HTTP is not served (any local process could call as `local-http`): drop \
             --http-insecure / http_insecure ({addr})"
        );
    }
    let options = config::resolve(file, flags)?;
    log_start(&options.data_dir, config_file);
    let signals = serve::Signals::install();
    let set = std::sync::Arc::new(certs::generate()?);
    let running = serve::start_with(options, serve::Certificates::Launcher(std::sync::Arc::clone(&set))).await?;
    if let Some(path) = ready_file {
        running.write_ready_file(&path)?;
    }
    keyward::launcher::announce(&running, &set)?;
    drop(set);
    let why = keyward::launcher::stop_requested(parent, signals).await;
    tracing::info!(?why, "shutting down");
    if !keyward::launcher::stop(running).await {
        tracing::warn!(
            "calls still running {:?} after the stop: exiting without them (wallets closed, vault wiped)",
            keyward::launcher::STOP_GRACE
        );
        // Dropping the runtime would wait for them (a KDF on the blocking pool runs to its end).
        std::process::exit(0);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keyward: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(Reported(exit)) = error.downcast_ref::<Reported>() {
                return ExitCode::from(exit.status());
            }
            eprintln!("keyward: {error:#}");
            ExitCode::from(Failure::exit_of(&error).status())
        }
    }
}
