//! `keyward clients` against a real `keyward serve`: a reader added over HTTPS, QUIC and the Unix
//! socket may look but not take the mnemonic; a role change applies to the next call; a revocation
//! refuses the next handshake and closes the connection the client holds open, without a restart;
//! names are never reused; with no server running the commands work on the store.
//!
//! The Unix socket's principals are uids. Running a client under another uid needs root, so the
//! Unix part of the main test (which runs everywhere) registers a uid client over the socket, and
//! shows the role check, the held connection closed and the revocation on the server's own `uid-N`
//! client: the same registry rules, with the test's own uid standing in for the reader. With root,
//! a second test runs a reader as `nobody`; without root it prints one `SKIPPED` line (and fails
//! when `CI` is set, like `tests/unix.rs`).
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

mod common;

use common::{Serve, keyward, ok, refused, run, text};

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use keyward_driver::{Link, SecureSession, SessionError};
use serde_json::{Value, json};

/// How long a revocation may take to close a connection the client holds open.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A `keyward serve` on `data` (free ports, HTTPS and QUIC, and a Unix socket if given), its log in
/// `log`.
struct Server {
    serve: Serve,
    url: String,
    quic: String,
    log: PathBuf,
}

impl Server {
    fn start(data: &Path, unix: Option<&Path>, log: &Path) -> Self {
        let ready = data.with_extension("ready.json");
        let mut command = keyward();
        command.env("RUST_LOG", "info").env_remove("KEYWARD_DATA_DIR").arg("serve").arg("--data-dir").arg(data);
        command.args(["--https", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--ready-file"]).arg(&ready);
        if let Some(socket) = unix {
            command.arg("--unix").arg(socket);
        }
        command.stderr(std::fs::File::create(log).unwrap());
        let (serve, info) = common::serve(command, &ready);
        let url = format!("https://{}/v3/owner", info["https"].as_str().unwrap());
        let quic = info["quic"].as_str().unwrap().to_owned();
        Self { serve, url, quic, log: log.to_path_buf() }
    }

    /// Stops the server the way an operator does (SIGTERM) and waits for it to exit.
    fn stop(mut self) {
        let pid = self.serve.0.id().to_string();
        assert!(std::process::Command::new("kill").arg(&pid).status().unwrap().success());
        let status = self.serve.0.wait().unwrap();
        assert!(status.success(), "keyward serve exited with {status}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// `keyward ARGS` with the data directory `data`, `stdin`, and `KEYWARD_TOKEN` if given.
fn kw(data: &Path, args: &[&str], stdin: Option<&str>, token: Option<&str>) -> Output {
    let mut command = keyward();
    command.env("KEYWARD_DATA_DIR", data).env_remove("KEYWARD_TOKEN").args(args);
    run(&mut command, stdin, token)
}

/// `keyward clients list --json` over the given server arguments, by name.
fn clients(data: &Path, server: &[&str]) -> std::collections::BTreeMap<String, Value> {
    let listed = ok(&kw(data, &[&["clients", "list", "--json"], server].concat(), None, None));
    let records: Vec<Value> = serde_json::from_str(&listed).unwrap();
    records.into_iter().map(|r| (r["name"].as_str().unwrap().to_owned(), r)).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// Calls over `session` until the link fails (the server closed the connection), for up to
/// [`CLOSE_WITHIN`]; panics if it stays open.
async fn closed_within<L: Link>(session: &mut SecureSession<L>, what: &str) {
    let started = Instant::now();
    let closed = tokio::time::timeout(CLOSE_WITHIN, async {
        loop {
            match session.call("list_wallets", json!({})).await {
                Err(SessionError::Link(error)) => return error.to_string(),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    let error = closed.unwrap_or_else(|_| panic!("{what}: the revoked client's connection is still open after 1 s"));
    eprintln!("{what}: the held connection closed after {:?} ({error})", started.elapsed());
}

/// A reader added over one TLS transport (`server`: `--url URL` or `--quic ADDR`), used with its
/// bundle, promoted, revoked.
fn reader_over_tls(home: &Path, data: &Path, server: &Server, transport: &str) {
    let name = format!("r-{transport}");
    let bundle = home.join(format!("bundle-{transport}"));
    let args: Vec<&str> = match transport {
        "https" => vec!["--url", &server.url],
        _ => vec!["--quic", &server.quic],
    };
    let bundle_text = bundle.to_str().unwrap();
    let added = ok(&kw(
        data,
        &[&["clients", "add", &name, "--role", "reader", "--out", bundle_text], &args[..]].concat(),
        None,
        None,
    ));
    assert!(added.contains(&format!("added client '{name}' (reader)")), "{added}");
    assert_eq!(mode(&bundle), 0o700);
    assert_eq!(mode(&bundle.join("client.key")), 0o600);
    for file in ["ca.crt", "client.crt"] {
        assert!(bundle.join(file).is_file(), "{file}");
    }
    // keyward.toml names the client and where this command reached the server, so that the bundle
    // alone finds it (`keyward call --tls-dir`, the TypeScript package's `connect({ bundle })`).
    let config: toml::Value = toml::from_str(&std::fs::read_to_string(bundle.join("keyward.toml")).unwrap()).unwrap();
    assert_eq!(config["name"].as_str(), Some(name.as_str()), "{config}");
    assert_eq!(config["role"].as_str(), Some("reader"), "{config}");
    match transport {
        "https" => assert_eq!(config["url"].as_str(), Some(server.url.as_str()), "{config}"),
        _ => assert_eq!(config["quic"].as_str(), Some(server.quic.as_str()), "{config}"),
    }

    // The reader opens the wallet with the password and looks; the mnemonic is the owner's.
    let call = |extra: &[&str], stdin: Option<&str>, token: Option<&str>| {
        kw(data, &[&["call", "--tls-dir", bundle_text], &args[..], extra].concat(), stdin, token)
    };
    let token = ok(&call(&["--password-stdin", "--raw", "open_wallet", r#"{"name":"w"}"#], Some("pw\n"), None));
    let token = token.trim();
    ok(&call(&["accounts"], None, Some(token)));
    refused(
        &call(&["--password-stdin", "get_mnemonic", r#"{"name":"w"}"#], Some("pw\n"), None),
        "Forbidden: get_mnemonic needs the owner role",
    );
    let label = format!(r#"{{"label":"{transport}"}}"#);
    let add_account = ["create_account_path", label.as_str()];
    refused(&call(&add_account, None, Some(token)), "Forbidden: create_account_path needs the signer role");

    // A new role applies to the next call.
    let promoted = ok(&kw(data, &[&["clients", "role", &name, "signer"], &args[..]].concat(), None, None));
    assert_eq!(promoted, format!("client '{name}' is now signer\n"));
    ok(&call(&add_account, None, Some(token)));

    // The client holds a connection open (its own code, its bundle's files) when it is revoked.
    let runtime = runtime();
    let mut held: SecureSession<keyward::call::BoxLink> = runtime.block_on(async {
        let address = match transport {
            "https" => keyward::call::Address::url(&server.url, &bundle).await.unwrap(),
            _ => keyward::call::Address::quic(server.quic.parse().unwrap(), &bundle).unwrap(),
        };
        let link = keyward::call::connect(&address).await.unwrap();
        let mut session = SecureSession::open(link).await.unwrap();
        session.call("list_wallets", json!({})).await.unwrap();
        session
    });
    let revoked = ok(&kw(data, &[&["clients", "revoke", &name], &args[..]].concat(), None, None));
    assert!(revoked.starts_with(&format!("revoked client '{name}'")), "{revoked}");
    runtime.block_on(closed_within(&mut held, transport));

    // Its very next call fails at the handshake (no restart; the server answers it nothing).
    let after = call(&["list_wallets"], None, None);
    assert!(!after.status.success(), "{}", text(&after));
    assert!(!text(&after).contains("Forbidden"), "refused at the handshake, not by the core: {}", text(&after));
    // The server's TLS alert (certificate_revoked) names the reason, over HTTPS and QUIC alike.
    assert!(text(&after).contains("this client was revoked"), "{}", text(&after));
    if transport == "https" {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.log().contains("TLS handshake refused") {
            assert!(Instant::now() < deadline, "no refused handshake in the log: {}", server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Names are never reused, and nothing is written for a refused name.
    let again = home.join(format!("again-{transport}"));
    refused(
        &kw(
            data,
            &[&["clients", "add", &name, "--role", "reader", "--out", again.to_str().unwrap()], &args[..]].concat(),
            None,
            None,
        ),
        "names are never reused",
    );
    assert!(!again.exists());
}

#[test]
fn readers_over_https_quic_and_unix_are_checked_promoted_and_revoked() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let data = h.join("data");
    let socket = h.join("run").join("keyward.sock");
    let server = Server::start(&data, Some(&socket), &h.join("serve.log"));
    let url = ["--url", server.url.as_str()];
    ok(&kw(
        &data,
        &[&["call", "--password-stdin"], &url[..], &["create_wallet", r#"{"name":"w"}"#]].concat(),
        Some("pw\n"),
        None,
    ));

    reader_over_tls(h, &data, &server, "https");
    reader_over_tls(h, &data, &server, "quic");

    // The Unix socket: the server's own uid is client `uid-N` (owner). As owner over the socket, it
    // registers another uid (nothing is written for a uid client).
    let own = std::fs::metadata("/proc/self").unwrap().uid();
    let own_client = format!("uid-{own}");
    let unix = ["--unix", socket.to_str().unwrap()];
    let added = ok(&kw(
        &data,
        &[&["clients", "add", "u-reader", "--role", "reader", "--uid", "4242"], &unix[..]].concat(),
        None,
        None,
    ));
    assert!(added.contains("for uid 4242"), "{added}");
    assert_eq!(clients(&data, &unix)["u-reader"]["identity"], json!({"uid": 4242}));

    // Made a reader (by the `default` owner over HTTPS), the socket's user may look, not take the
    // mnemonic.
    ok(&kw(&data, &[&["clients", "role", &own_client, "reader"], &url[..]].concat(), None, None));
    let call = |extra: &[&str], stdin: Option<&str>, token: Option<&str>| {
        kw(&data, &[&["call"], &unix[..], extra].concat(), stdin, token)
    };
    let token = ok(&call(&["--password-stdin", "--raw", "open_wallet", r#"{"name":"w"}"#], Some("pw\n"), None));
    ok(&call(&["accounts"], None, Some(token.trim())));
    refused(
        &call(&["--password-stdin", "get_mnemonic", r#"{"name":"w"}"#], Some("pw\n"), None),
        "Forbidden: get_mnemonic needs the owner role",
    );
    // A reader cannot administer clients either.
    refused(
        &kw(&data, &[&["clients", "list"], &unix[..]].concat(), None, None),
        "Forbidden: list_clients needs the owner role",
    );

    // Revoked while it holds a connection: the connection closes, the next one is refused.
    let runtime = runtime();
    let mut held = runtime.block_on(async {
        let link = keyward::call::connect(&keyward::call::Address::Unix(socket.clone())).await.unwrap();
        let mut session = SecureSession::open(link).await.unwrap();
        session.call("list_wallets", json!({})).await.unwrap();
        session
    });
    ok(&kw(&data, &[&["clients", "revoke", &own_client], &url[..]].concat(), None, None));
    runtime.block_on(closed_within(&mut held, "unix"));
    let after = call(&["list_wallets"], None, None);
    assert!(!after.status.success(), "{}", text(&after));

    // The registry as `clients list` shows it.
    let records = clients(&data, &url);
    assert_eq!(records["default"]["role"], "owner");
    assert_eq!(records["default"]["revoked_unix_ms"], Value::Null);
    for name in ["r-https", "r-quic", own_client.as_str()] {
        assert!(records[name]["revoked_unix_ms"].is_u64(), "{name} is revoked: {}", records[name]);
    }
    assert_eq!(records["r-https"]["role"], "signer");
    assert_eq!(records["u-reader"]["revoked_unix_ms"], Value::Null);
    let table = ok(&kw(&data, &[&["clients", "list"], &url[..]].concat(), None, None));
    let line = |name: &str| table.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap().to_owned();
    assert!(line("default").contains("owner") && line("default").ends_with(" -"), "{table}");
    assert!(line("default").contains("cert sha256:"), "{table}");
    assert!(line("r-https").ends_with('Z'), "revoked shows when: {table}");
    assert!(line("u-reader").contains("uid 4242"), "{table}");

    // The audit log names who did what in this scenario, over the API of the running server.
    let shown = ok(&kw(&data, &[&["audit", "show", "--json"], &url[..]].concat(), None, None));
    let records: Vec<Value> = serde_json::from_str(&shown).unwrap();
    let seen = |principal: &str, method: &str, outcome: &str| {
        records.iter().any(|r| {
            r["event"]["principal"] == principal && r["event"]["method"] == method && r["event"]["outcome"] == outcome
        })
    };
    assert!(seen("default", "create_wallet", "ok"), "{shown}");
    for reader in ["r-https", "r-quic"] {
        assert!(seen(reader, "open_wallet", "ok"), "{reader}: {shown}");
        assert!(seen(reader, "get_mnemonic", "forbidden"), "{reader}: {shown}");
        assert!(seen(reader, "create_account_path", "ok"), "{reader} as signer: {shown}");
        assert!(seen("default", "revoke_client", "ok"), "{shown}");
    }
    assert!(seen(&own_client, "get_mnemonic", "forbidden"), "{shown}");
    // The revoked clients' refused handshakes (TLS: by the verifier's live check).
    assert!(seen("r-https", "handshake", "revoked client"), "{shown}");
    assert!(seen("r-quic", "handshake", "revoked client"), "{shown}");
    assert!(!shown.contains("\"pw\""), "no password in the log");
    let verified = ok(&kw(&data, &[&["audit", "verify"], &url[..]].concat(), None, None));
    assert!(verified.starts_with("audit log verified:"), "{verified}");
    drop(server);
}

#[test]
fn with_no_server_running_the_commands_work_on_the_store() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let data = h.join("data");

    // No store yet: nothing is made.
    refused(&kw(&data, &["clients", "list"], None, None), "holds no keyward store");
    assert!(!data.exists());

    // A first start makes the store and the certificate set (with the CA key), then the server stops.
    Server::start(&data, None, &h.join("first.log")).stop();
    let set = data.join("tls").join("current");
    assert_eq!(mode(&set.join("ca.key")), 0o600, "the CA key is kept by default");

    let listed = ok(&kw(&data, &["clients", "list"], None, None));
    assert!(listed.lines().any(|l| l.starts_with("default ") && l.contains(" owner ")), "{listed}");
    let bundle = h.join("off1");
    let added =
        ok(&kw(&data, &["clients", "add", "off1", "--role", "signer", "--out", bundle.to_str().unwrap()], None, None));
    assert!(added.contains("offline"), "{added}");
    assert_eq!(mode(&bundle), 0o700);
    assert_eq!(mode(&bundle.join("client.key")), 0o600);
    ok(&kw(&data, &["clients", "add", "u1", "--role", "reader", "--uid", "4242"], None, None));
    refused(
        &kw(&data, &["clients", "add", "u2", "--role", "reader", "--uid", "4242"], None, None),
        "has this identity already",
    );
    ok(&kw(&data, &["clients", "revoke", "u1"], None, None));
    refused(
        &kw(&data, &["clients", "add", "u1", "--role", "reader", "--uid", "4243"], None, None),
        "names are never reused",
    );
    refused(&kw(&data, &["clients", "role", "u1", "owner"], None, None), "no active client called 'u1'");
    ok(&kw(&data, &["clients", "role", "off1", "reader"], None, None));
    let records = clients(&data, &[]);
    assert_eq!(records.keys().collect::<Vec<_>>(), ["default", "off1", "u1"]);
    assert_eq!(records["off1"]["role"], "reader");
    assert!(records["u1"]["revoked_unix_ms"].is_u64());

    // The server starts on the changed registry: the certificate signed offline is accepted, its
    // role holds, and the commands now go to the server.
    let server = Server::start(&data, None, &h.join("second.log"));
    let url = ["--url", server.url.as_str()];
    let with_bundle = [&["call", "--tls-dir", bundle.to_str().unwrap()][..], &url[..]].concat();
    ok(&kw(&data, &[&with_bundle[..], &["list_wallets"]].concat(), None, None));
    refused(
        &kw(&data, &[&with_bundle[..], &["set_top_level_directory", r#"{"dir":"x"}"#]].concat(), None, None),
        "needs the owner role",
    );
    assert_eq!(clients(&data, &url), records, "the server lists what was written offline");
    // Without --url the commands find the running server where it said it listens.
    let found = ok(&kw(&data, &["clients", "list"], None, None));
    assert!(found.contains("off1") && found.contains("default"), "{found}");
    refused(
        &kw(
            &data,
            &[
                &["clients", "add", "x", "--role", "reader", "--ca-key", "k", "--out", h.join("x").to_str().unwrap()],
                &url[..],
            ]
            .concat(),
            None,
            None,
        ),
        "--ca-key is for a stopped server",
    );

    // A set whose CA key is kept elsewhere: the server cannot issue, offline signing takes --ca-key.
    let offline_key = h.join("offline-ca.key");
    std::fs::rename(set.join("ca.key"), &offline_key).unwrap();
    let b2 = h.join("b2");
    refused(
        &kw(
            &data,
            &[&["clients", "add", "api", "--role", "reader", "--out", b2.to_str().unwrap()], &url[..]].concat(),
            None,
            None,
        ),
        "this server cannot issue certificates",
    );
    assert!(!b2.exists(), "a refused add leaves nothing behind");
    server.stop();
    refused(
        &kw(&data, &["clients", "add", "api", "--role", "reader", "--out", b2.to_str().unwrap()], None, None),
        "keeps no CA key",
    );
    ok(&kw(
        &data,
        &[
            "clients",
            "add",
            "api",
            "--role",
            "reader",
            "--out",
            b2.to_str().unwrap(),
            "--ca-key",
            offline_key.to_str().unwrap(),
        ],
        None,
        None,
    ));
    let server = Server::start(&data, None, &h.join("third.log"));
    ok(&kw(&data, &["call", "--tls-dir", b2.to_str().unwrap(), "--url", &server.url, "list_wallets"], None, None));
    drop(server);

    // `certs init` keeps the CA key unless --no-ca-key.
    let kept = h.join("kept");
    ok(&keyward().args(["certs", "init", "--dir"]).arg(&kept).output().unwrap());
    assert_eq!(mode(&kept.join("current").join("ca.key")), 0o600);
    let without = h.join("without");
    ok(&keyward().args(["certs", "init", "--no-ca-key", "--dir"]).arg(&without).output().unwrap());
    assert!(!without.join("current").join("ca.key").exists());
}

#[test]
fn with_no_server_running_the_cores_rules_apply_and_changes_are_audited_as_local() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let data = h.join("data");
    // A stopped server's data directory: a store and a certificate set (with its CA key).
    drop(keyward_store::FjallStore::open(&data.join("store")).unwrap());
    ok(&keyward().args(["certs", "init", "--dir"]).arg(data.join("tls")).output().unwrap());

    let bundle = h.join("c1");
    let added =
        ok(&kw(&data, &["clients", "add", "c1", "--role", "reader", "--out", bundle.to_str().unwrap()], None, None));
    assert!(added.starts_with("added client 'c1' (reader), certificate key sha256:"), "{added}");
    assert!(added.contains(" (offline, to the stopped server's store)\n"), "{added}");
    assert_eq!(mode(&bundle.join("client.key")), 0o600);
    ok(&kw(&data, &["clients", "add", "u1", "--role", "reader", "--uid", "4242"], None, None));

    // A name taken is refused by the core, with its text, as by a running server; nothing is left.
    let taken = "add_client failed: ArgumentError: a client called 'c1' exists (names are never reused)";
    refused(&kw(&data, &["clients", "add", "c1", "--role", "reader", "--uid", "4243"], None, None), taken);
    let again = h.join("again");
    refused(
        &kw(&data, &["clients", "add", "c1", "--role", "reader", "--out", again.to_str().unwrap()], None, None),
        taken,
    );
    assert!(!again.exists(), "a refused add leaves nothing behind");
    ok(&kw(&data, &["clients", "revoke", "u1"], None, None));

    // The log verifies, and names the in-process owner, `local`, for every change.
    let verified = ok(&kw(&data, &["audit", "verify"], None, None));
    assert_eq!(verified, "audit log verified: 5 records (seq 1..5), and audit.head matches\n");
    let shown = ok(&kw(&data, &["audit", "show", "--json"], None, None));
    let records: Vec<Value> = serde_json::from_str(&shown).unwrap();
    let events: Vec<(&str, &str, &str, &str, &str)> = records
        .iter()
        .map(|r| {
            let e = &r["event"];
            let text = |field: &str| e[field].as_str().unwrap_or("-");
            (text("principal"), text("method"), text("wallet"), text("target"), text("outcome"))
        })
        .collect();
    // The client each call acted on is its target (no wallet).
    assert_eq!(
        events,
        [
            ("local", "add_client", "-", "c1", "ok"),
            ("local", "add_client", "-", "u1", "ok"),
            ("local", "add_client", "-", "c1", "invalid argument"),
            ("local", "add_client", "-", "c1", "invalid argument"),
            ("local", "revoke_client", "-", "u1", "ok"),
        ],
        "{shown}"
    );
    // Reading the log wrote nothing to it.
    assert_eq!(ok(&kw(&data, &["audit", "verify"], None, None)), verified);
}

/// The uid of `nobody` on Debian and most Linux systems.
const NOBODY: u32 = 65534;

#[test]
fn a_reader_uid_over_the_unix_socket_runs_as_another_user() {
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        let message =
            "SKIPPED a_reader_uid_over_the_unix_socket_runs_as_another_user: needs root to run a client as nobody";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("{message}");
        return;
    }
    use std::os::unix::process::CommandExt;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::set_permissions(h, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = h.join("keyward");
    std::fs::copy(env!("CARGO_BIN_EXE_keyward"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = h.join("data");
    let socket = h.join("run").join("keyward.sock");
    let server = Server::start(&data, Some(&socket), &h.join("serve.log"));
    let url = ["--url", server.url.as_str()];
    ok(&kw(
        &data,
        &[&["call", "--password-stdin"], &url[..], &["create_wallet", r#"{"name":"w"}"#]].concat(),
        Some("pw\n"),
        None,
    ));
    ok(&kw(
        &data,
        &[&["clients", "add", "nobody", "--role", "reader", "--uid", "65534"], &url[..]].concat(),
        None,
        None,
    ));
    // Let nobody reach the socket: from here only the registry stands between it and the server.
    std::fs::set_permissions(socket.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    let as_nobody = |args: &[&str], stdin: Option<&str>, token: Option<&str>| {
        let mut command = std::process::Command::new(&binary);
        command.uid(NOBODY).gid(NOBODY).env("HOME", h).env_remove("KEYWARD_DATA_DIR").env_remove("KEYWARD_TOKEN");
        command.arg("call").arg("--unix").arg(&socket).args(args);
        run(&mut command, stdin, token)
    };
    let token = ok(&as_nobody(&["--password-stdin", "--raw", "open_wallet", r#"{"name":"w"}"#], Some("pw\n"), None));
    ok(&as_nobody(&["accounts"], None, Some(token.trim())));
    refused(
        &as_nobody(&["--password-stdin", "get_mnemonic", r#"{"name":"w"}"#], Some("pw\n"), None),
        "Forbidden: get_mnemonic needs the owner role",
    );
    ok(&kw(&data, &[&["clients", "revoke", "nobody"], &url[..]].concat(), None, None));
    let after = as_nobody(&["list_wallets"], None, None);
    assert!(!after.status.success(), "{}", text(&after));
    drop(server);
}
