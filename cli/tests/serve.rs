//! `keyward serve` as an operator meets it, against the real binary: a port in use is named once,
//! with the flag that moves it, before anything is made; `[kdf]` values out of range are refused
//! at start; `DATA_DIR/keyward.toml` is read; `run/endpoints.json` says where the server listens
//! while it runs; the log (to a pipe) has no colour, a start-up line with the version, data
//! directory and config file, and at `--log debug` Keyward's debug lines but not the store's; and
//! `keyward status` with and without a running server.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

mod common;

use common::{keyward, ok, refused, run, text};

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `keyward ARGS` with no data directory from the environment and `HOME` in `home`.
fn kw(home: &Path) -> Command {
    let mut command = keyward();
    command.env("HOME", home).env_remove("KEYWARD_DATA_DIR").env_remove("RUST_LOG").env_remove("NO_COLOR");
    command
}

#[test]
fn a_port_in_use_is_named_once_with_its_flag_and_nothing_is_made() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("fresh");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let output = run(
        kw(home.path()).arg("serve").arg("--data-dir").arg(&data).args([
            "--https",
            &addr.to_string(),
            "--quic",
            "off",
            "--pairing",
            "off",
        ]),
        None,
        None,
    );
    let expected = format!(
        "cannot listen on {addr} (HTTPS): the address is in use (another keyward serve?); choose another with \
         --https ADDR or https = \"…\" in keyward.toml"
    );
    refused(&output, &expected);
    assert_eq!(text(&output).matches("in use").count(), 1, "said once: {}", text(&output));
    assert!(!data.exists(), "nothing is made when a port is taken: {}", text(&output));

    // QUIC's UDP port, likewise.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let output = run(
        kw(home.path()).arg("serve").arg("--data-dir").arg(&data).args([
            "--https",
            "127.0.0.1:0",
            "--quic",
            &addr.to_string(),
            "--pairing",
            "off",
        ]),
        None,
        None,
    );
    refused(&output, &format!("cannot listen on {addr} (QUIC, UDP): the address is in use (another keyward serve?)"));
    refused(&output, "choose another with --quic ADDR or quic = \"…\" in keyward.toml");
    assert_eq!(text(&output).matches("in use").count(), 1, "said once: {}", text(&output));
    assert!(!data.exists(), "nothing is made when a port is taken");
}

/// `DATA_DIR/keyward.toml` is read without `--config`; a `[kdf]` value Argon2id would refuse stops
/// the start, naming the key, instead of failing the first `create_wallet`. `--config` overrides it.
#[test]
fn the_data_directorys_config_is_read_and_bad_kdf_values_stop_the_start() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("keyward.toml"), "[kdf]\nm_cost_kib = 16\np_cost = 4\n").unwrap();
    let serve = |config: Option<&Path>| {
        let mut command = kw(home.path());
        command.arg("serve").arg("--data-dir").arg(&data);
        command.args(["--https", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--pairing", "off"]);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command
    };
    let output = run(&mut serve(None), None, None);
    refused(&output, "[kdf] m_cost_kib must be 32 (8 per lane) to 1048576 (1 GiB), not 16");
    assert!(!data.join("store").exists(), "refused before the store is made");

    let other = home.path().join("other.toml");
    std::fs::write(&other, "[kdf]\nt_cost = 0\n").unwrap();
    refused(&run(&mut serve(Some(&other)), None, None), "[kdf] t_cost must be 1 to 64 (passes), not 0");
}

/// Standard error of a child, collected by a thread (a pipe, not a terminal).
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn start(child: &mut std::process::Child) -> Self {
        let mut pipe = child.stderr.take().unwrap();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&bytes);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Self(bytes)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn a_running_server_is_found_logged_and_reported_by_status() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let pairing = format!("127.0.0.1:{}", common::free_port());
    let config = data.join("keyward.toml");
    std::fs::write(
        &config,
        format!(
            "https = \"127.0.0.1:0\"\nquic = \"127.0.0.1:0\"\npairing = \"{pairing}\"\n\
             [kdf]\nm_cost_kib = 64\nt_cost = 1\np_cost = 1\n"
        ),
    )
    .unwrap();
    let status = |json: bool| {
        let mut command = kw(home.path());
        command.arg("status").arg("--data-dir").arg(&data);
        if json {
            command.arg("--json");
        }
        ok(&run(&mut command, None, None))
    };

    // No server yet, and no store: status says so.
    let before = status(false);
    assert!(before.contains("server:         not running"), "{before}");
    assert!(before.contains("store:          none"), "{before}");
    assert!(before.contains(&format!("config file:    {}", config.display())), "{before}");

    let ready = home.path().join("ready.json");
    let mut command = kw(home.path());
    command.arg("serve").arg("--data-dir").arg(&data).args(["--log", "debug", "--ready-file"]).arg(&ready);
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let log = Captured::start(&mut child);
    let serve = common::Serve(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "keyward serve did not start: {}", log.text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let info: Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    let pid = serve.0.id();

    // run/endpoints.json: private, the bound addresses, this pid and version.
    let endpoints_file = data.join("run").join("endpoints.json");
    assert_eq!(mode(&data.join("run")), 0o700);
    assert_eq!(mode(&endpoints_file), 0o600);
    let endpoints = keyward::endpoints::read(&data).unwrap().expect("a live server's endpoints");
    assert_eq!(endpoints.pid, pid);
    assert_eq!(endpoints.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(endpoints.https.map(|a| a.to_string()).as_deref(), info["https"].as_str());
    assert_eq!(endpoints.quic.map(|a| a.to_string()).as_deref(), info["quic"].as_str());
    assert_eq!(endpoints.pairing.map(|a| a.to_string()), Some(pairing.clone()));
    let url = endpoints.https_url().unwrap();

    // A wallet, opened (over QUIC, whose connection the server logs at debug).
    let tls = data.join("tls");
    let call = |args: &[&str], stdin: Option<&str>| {
        let mut command = kw(home.path());
        command.args(["call", "--tls-dir"]).arg(&tls).args(args);
        ok(&run(&mut command, stdin, None))
    };
    call(&["--url", &url, "--password-stdin", "create_wallet", r#"{"name":"w"}"#], Some("pw\n"));
    let quic = endpoints.quic.unwrap().to_string();
    call(&["--quic", &quic, "--password-stdin", "open_wallet", r#"{"name":"w"}"#], Some("pw\n"));

    let shown = status(false);
    for line in [
        format!("server:         running (pid {pid}, version {})", env!("CARGO_PKG_VERSION")),
        format!("https:          {url}"),
        format!("quic:           {quic}"),
        format!("pairing:        no code live ({pairing} opens"),
        "wallets:        1 (w)".to_owned(),
        "open wallets:   1 (w)".to_owned(),
        "clients:        1 (default (owner))".to_owned(),
    ] {
        assert!(shown.contains(&line), "{line:?} in:\n{shown}");
    }
    // A live pairing code opens the pairing listener.
    let mut pair = kw(home.path());
    pair.arg("clients")
        .arg("--data-dir")
        .arg(&data)
        .args(["--url", &url, "pair", "--name", "phone", "--role", "reader"]);
    ok(&run(&mut pair, None, None));
    let shown: Value = serde_json::from_str(&status(true)).unwrap();
    assert_eq!(shown["running"], true, "{shown}");
    assert_eq!(shown["source"], "server", "{shown}");
    assert_eq!(shown["server"]["pid"], pid, "{shown}");
    assert_eq!(shown["pairing_code_live"], true, "{shown}");
    assert_eq!(shown["wallets"], serde_json::json!([{"name": "w", "open": true}]), "{shown}");
    assert_eq!(shown["clients"][0]["name"], "default", "{shown}");
    assert_eq!(shown["config_file"], config.display().to_string(), "{shown}");

    // SIGTERM: a clean stop removes the endpoints file.
    assert!(Command::new("kill").arg(pid.to_string()).status().unwrap().success());
    let mut serve = serve;
    assert!(serve.0.wait().unwrap().success(), "{}", log.text());
    assert!(!endpoints_file.exists(), "a clean stop removes run/endpoints.json");

    // The log: no colour in a pipe; the start-up line; Keyward's debug lines, not the store's.
    let logged = log.text();
    assert!(!logged.contains('\u{1b}'), "an ANSI escape in a log written to a pipe:\n{logged}");
    let start = format!(
        "keyward {} starting: data directory {}, config file {}",
        env!("CARGO_PKG_VERSION"),
        data.display(),
        config.display()
    );
    assert!(logged.contains(&start), "{start:?} in:\n{logged}");
    assert!(logged.lines().any(|l| l.contains(" DEBUG keyward")), "keyward's debug lines at --log debug:\n{logged}");
    let store_debug = logged.lines().filter(|l| l.contains(" DEBUG fjall") || l.contains(" DEBUG lsm_tree")).count();
    assert_eq!(store_debug, 0, "the store's debug lines at --log debug:\n{logged}");

    // Stopped: status says so and reads the store itself (no wallet is open without a server).
    let after = status(false);
    assert!(after.contains("server:         not running"), "{after}");
    assert!(after.contains("store:          read directly"), "{after}");
    assert!(after.contains("wallets:        1 (w)") && after.contains("open wallets:   none"), "{after}");
    assert!(after.contains("clients:        1 (default (owner))"), "{after}");
    let after: Value = serde_json::from_str(&status(true)).unwrap();
    assert_eq!((after["running"].clone(), after["source"].clone()), (Value::Bool(false), "store".into()), "{after}");
}

/// The colour of the log: none with `NO_COLOR`, none in a file or pipe (a terminal is not at hand
/// in a test); and the start-up line says when there is no config file.
#[test]
fn no_config_file_is_said_and_no_color_is_honoured() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // A start that fails at the bind still logs its start-up line first.
    let output = run(
        kw(home.path()).env("NO_COLOR", "1").arg("serve").arg("--data-dir").arg(&data).args([
            "--https",
            &taken.local_addr().unwrap().to_string(),
            "--quic",
            "off",
        ]),
        None,
        None,
    );
    let logged = text(&output);
    assert!(logged.contains(&format!("data directory {}, no config file", data.display())), "{logged}");
    assert!(!logged.contains('\u{1b}'), "{logged}");

    // A --log filter that does not parse is refused, naming where it came from.
    let output =
        run(kw(home.path()).arg("serve").arg("--data-dir").arg(&data).args(["--log", "keyward=loud"]), None, None);
    refused(&output, "the log filter \"keyward=loud\" of --log (or log in the config file) is not valid");
    assert!(!data.exists(), "nothing is made");
}
