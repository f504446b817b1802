//! `keyward call` off the walkthrough: each failure a user meets says what to do and exits with its
//! status (0 ok, 1 method, 2 usage, 3 cannot connect, 4 refused), against a real server on loopback.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

mod common;

use common::{Serve, keyward, run, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A server on `data_dir` (HTTPS, QUIC and plain HTTP on free ports, no pairing) and its addresses.
fn serve(data_dir: &Path) -> (Serve, serde_json::Value) {
    let ready = data_dir.with_extension("ready.json");
    let mut command = keyward();
    command.env_remove("KEYWARD_DATA_DIR").stderr(Stdio::null()).arg("serve").arg("--data-dir").arg(data_dir);
    command.args(["--https", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--http-insecure", "127.0.0.1:0"]);
    command.args(["--pairing", "off", "--ready-file"]).arg(&ready);
    common::serve(command, &ready)
}

fn call(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = keyward();
    command.env_remove("KEYWARD_DATA_DIR").env_remove("KEYWARD_TOKEN").arg("call").arg("--data-dir").arg(data_dir);
    run(command.args(args), stdin, None)
}

/// A failure with exit status `status` whose standard error says `expected`.
fn fails(output: &Output, status: i32, expected: &str) {
    assert_eq!(output.status.code(), Some(status), "exit status of: {}", text(output));
    assert!(text(output).contains(expected), "expected {expected:?} in: {}", text(output));
}

fn https(info: &serde_json::Value) -> String {
    format!("https://{}/v3/owner", info["https"].as_str().unwrap())
}

#[test]
fn discovery_lists_describes_and_suggests() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("never");
    let list = call(&dir, &["--list"], None);
    assert!(list.status.success(), "{}", text(&list));
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.starts_with("METHOD"), "a header row: {listed}");
    assert_eq!(listed.lines().filter(|l| l.starts_with("sign_message ")).count(), 1, "{listed}");
    let help = call(&dir, &["help", "open_wallet"], None);
    assert!(help.status.success(), "{}", text(&help));
    for part in ["role:   reader", "speed:  slow", "password", "example:\n  keyward call open_wallet"] {
        assert!(text(&help).contains(part), "{part} in {}", text(&help));
    }
    // A typo, an unknown param and a wrong type are refused before anything else (this data
    // directory has no server and never had one).
    fails(&call(&dir, &["acounts"], None), 2, "did you mean `accounts`?");
    fails(&call(&dir, &["help", "sing_message"], None), 2, "did you mean `sign_message`?");
    fails(&call(&dir, &["open_wallet", r#"{"nam":"x"}"#], None), 2, "takes no param 'nam'");
    fails(&call(&dir, &["add_client", r#"{"name":"x","role":"admin"}"#], None), 2, "one of reader|signer|owner");
    // --help declares the environment variables.
    let usage = keyward().args(["call", "--help"]).output().unwrap();
    for part in ["KEYWARD_TOKEN", "KEYWARD_DATA_DIR", "--data-dir"] {
        assert!(text(&usage).contains(part), "{part} in call --help");
    }
    let top = keyward().arg("--help").output().unwrap();
    assert!(text(&top).contains("Exit status: 0 ok, 1"), "{}", text(&top));
}

#[test]
fn a_server_never_started_or_down_is_named_with_the_fix() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fresh");
    fails(
        &call(&dir, &["list_wallets"], None),
        3,
        "no server was started on it. Start one with `keyward serve --data-dir",
    );
    // Checked before the password prompt: this would otherwise wait for a password.
    fails(&call(&dir, &["open_wallet"], None), 3, "no server was started on it");

    // Certificates, but nothing listening.
    let (server, _) = serve(&dir);
    drop(server);
    let url = format!("https://127.0.0.1:{}/v3/owner", common::free_port());
    let down = call(&dir, &["--url", &url, "list_wallets"], None);
    fails(
        &down,
        3,
        &format!(
            "nothing answers at {url}: is `keyward serve` running? (`keyward serve --data-dir {}`)",
            dir.display()
        ),
    );
    // --json: the failure on standard output, its code the exit status.
    let json = call(&dir, &["--url", &url, "--json", "list_wallets"], None);
    assert_eq!(json.status.code(), Some(3));
    let answer: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(answer["code"], 3);
    assert!(answer["message"].as_str().unwrap().starts_with("nothing answers at"), "{answer}");
}

#[test]
fn a_quic_port_that_never_answers_gives_up_after_5_seconds() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("d");
    drop(serve(&dir).0);
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    fails(
        &call(&dir, &["--quic", &addr, "list_wallets"], None),
        3,
        &format!("nothing answers at quic://{addr} within 5 s"),
    );
}

#[test]
fn wrong_scheme_other_server_no_terminal_and_the_socket_with_a_bundle() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("a");
    let (_server, info) = serve(&dir);
    let tls_port = info["https"].as_str().unwrap();
    let plain_port = info["http_insecure"].as_str().unwrap();
    let plain_on_tls = format!("http://{tls_port}/v3/owner");
    fails(
        &call(&dir, &["--url", &plain_on_tls, "list_wallets"], None),
        3,
        "if it is keyward's HTTPS port, use https://",
    );
    let tls_on_plain = format!("https://{plain_port}/v3/owner");
    fails(&call(&dir, &["--url", &tls_on_plain, "list_wallets"], None), 3, "does not speak TLS");
    // Another data directory's server: its certificate does not chain to this one's CA.
    let other = home.path().join("b");
    drop(serve(&other).0);
    let url = https(&info);
    fails(
        &call(&other, &["--url", &url, "list_wallets"], None),
        3,
        &format!("the server at {url} is not the one of {}", other.display()),
    );
    // No terminal to prompt on (a new session has no controlling terminal).
    let mut command = Command::new("setsid");
    command.arg("-w").arg(env!("CARGO_BIN_EXE_keyward")).args(["call", "--data-dir"]).arg(&dir);
    command.args(["--url", &url, "open_wallet"]).env_remove("KEYWARD_TOKEN");
    fails(&run(&mut command, None, None), 2, "use --password-stdin");
    // The Unix socket has no use for a bundle.
    let bundle: PathBuf = dir.join("tls");
    let socket = dir.join("run/keyward.sock");
    let mixed =
        call(&dir, &["--unix", socket.to_str().unwrap(), "--tls-dir", bundle.to_str().unwrap(), "list_wallets"], None);
    fails(&mixed, 2, "over the Unix socket you are the client of your uid; --tls-dir is not used");
}

#[test]
fn tokens_roles_and_new_passwords() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("d");
    let (_server, info) = serve(&dir);
    let url = https(&info);
    let url_args = ["--url", url.as_str()];
    let with = |args: &[&str], stdin: Option<&str>| call(&dir, &[&url_args[..], args].concat(), stdin);

    // An empty new password needs --allow-empty-password; a wrong --words count is refused.
    fails(&with(&["--password-stdin", "create_wallet", r#"{"name":"e"}"#], Some("\n")), 2, "--allow-empty-password");
    let empty = with(&["--password-stdin", "--allow-empty-password", "create_wallet", r#"{"name":"e"}"#], Some("\n"));
    assert!(empty.status.success(), "{}", text(&empty));
    fails(&with(&["--password-stdin", "create_wallet", "--words", "13"], Some("pw\n")), 2, "12, 15, 18, 21 or 24");
    let created = with(&["--password-stdin", "--words", "12", "create_wallet", r#"{"name":"w"}"#], Some("pw\n"));
    assert!(text(&created).contains("created wallet `w`"), "{}", text(&created));
    let phrase = with(&["--password-stdin", "--raw", "get_mnemonic", r#"{"name":"w"}"#], Some("pw\n"));
    let phrase = String::from_utf8_lossy(&phrase.stdout).trim().to_owned();
    assert_eq!(phrase.split_whitespace().count(), 12);
    // A recovery phrase is never taken from the command line; --restore reads it (here from stdin).
    let argv = serde_json::json!({"name": "r", "mnemonic": phrase}).to_string();
    fails(&with(&["--password-stdin", "create_wallet", &argv], Some("pw\n")), 2, "pass --restore");
    let typed = format!("{phrase}\npw2\n");
    let restored = with(&["--password-stdin", "--restore", "create_wallet", r#"{"name":"r"}"#], Some(&typed));
    assert!(text(&restored).contains("restored wallet `r`"), "{}", text(&restored));
    let again = with(&["--password-stdin", "--raw", "get_mnemonic", r#"{"name":"r"}"#], Some("pw2\n"));
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), phrase, "the same phrase");

    // A token the server does not know: closed, or from before a restart.
    let dead = "ab".repeat(32);
    fails(
        &with(&["--token", &dead, "accounts"], None),
        1,
        "the wallet was closed or the server restarted: open it again",
    );
    // A role that does not allow the method: exit 4, with the server's JSON-RPC code under --json.
    let bundle = home.path().join("reader");
    let added = keyward()
        .args(["clients", "--data-dir"])
        .arg(&dir)
        .args(["--url", &url, "add", "viewer", "--role", "reader", "--out"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", text(&added));
    let reader = |args: &[&str]| {
        let mut command = keyward();
        command.env_remove("KEYWARD_DATA_DIR").args(["call", "--tls-dir"]).arg(&bundle).args(["--url", &url]);
        run(command.args(args), Some("pw\n"), None)
    };
    fails(
        &reader(&["--password-stdin", "get_mnemonic", r#"{"name":"w"}"#]),
        4,
        "this client may not call `get_mnemonic`",
    );
    let json = reader(&["--json", "--password-stdin", "get_mnemonic", r#"{"name":"w"}"#]);
    assert_eq!(json.status.code(), Some(4));
    let answer: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(answer["code"], -32099, "{answer}");
    let listed = reader(&["--json", "list_wallets"]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 1, "--json is one line");
    // Revoked: the server's TLS alert says so, over HTTPS and QUIC; exit 4.
    let revoked = keyward().args(["clients", "--data-dir"]).arg(&dir).args(["revoke", "viewer"]).output().unwrap();
    assert!(revoked.status.success(), "{}", text(&revoked));
    fails(&reader(&["list_wallets"]), 4, "this client was revoked");
    fails(&reader(&["--quic", info["quic"].as_str().unwrap(), "list_wallets"]), 4, "this client was revoked");
    // A certificate of the right CA that no client has: unknown, exit 4.
    let stranger = home.path().join("stranger");
    common::copy_dir(&bundle, &stranger);
    let ca = keyward::ca::Ca::load_with_key(&dir.join("tls/ca.crt"), &dir.join("tls/ca.key")).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let public = keyward::ca::ClientPublicKey::from_pem(&key.public_key_pem()).unwrap();
    std::fs::write(stranger.join("client.crt"), ca.issue("stranger", &public).unwrap().certificate_pem).unwrap();
    std::fs::write(stranger.join("client.key"), key.serialize_pem()).unwrap();
    let mut command = keyward();
    command.env_remove("KEYWARD_DATA_DIR").args(["call", "--tls-dir"]).arg(&stranger).args([
        "--url",
        &url,
        "list_wallets",
    ]);
    fails(&run(&mut command, None, None), 4, "the server does not know this client's certificate");
}

#[test]
fn a_server_on_any_port_is_found_from_its_data_directory() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("d");
    let (server, info) = serve(&dir);
    // No --url: the addresses the server wrote in DATA_DIR/run/endpoints.json.
    let found = call(&dir, &["list_wallets"], None);
    assert!(found.status.success(), "{}", text(&found));
    let bundle = home.path().join("b");
    let added = keyward()
        .args(["clients", "--data-dir"])
        .arg(&dir)
        .args(["add", "b", "--role", "reader", "--out"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", text(&added));
    // The new client's bundle names where the server really listens.
    let config = std::fs::read_to_string(bundle.join("keyward.toml")).unwrap();
    assert!(config.contains(&format!("url = \"{}\"", https(&info))), "{config}");
    let mut command = keyward();
    command.env_remove("KEYWARD_DATA_DIR").args(["call", "--tls-dir"]).arg(&bundle).arg("list_wallets");
    let listed = run(&mut command, None, None);
    assert!(listed.status.success(), "{}", text(&listed));
    drop(server);
    // A stopped server's file is gone (or its pid dead): nothing answers at the default address.
    fails(&call(&dir, &["list_wallets"], None), 3, "is `keyward serve` running?");
}

#[test]
fn wait_keeps_trying_until_the_server_is_up() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("d");
    let port = common::free_port();
    let url = format!("https://127.0.0.1:{port}/v3/owner");
    let mut command = keyward();
    command.env_remove("KEYWARD_DATA_DIR").args(["call", "--data-dir"]).arg(&dir);
    command.args(["--url", &url, "--wait", "60", "list_wallets"]);
    let waiting = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // The caller starts first; the server (on a fresh data directory) after it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut serve = keyward();
    serve.env_remove("KEYWARD_DATA_DIR").stderr(Stdio::null()).stdout(Stdio::null());
    serve.arg("serve").arg("--data-dir").arg(&dir).args(["--https", &format!("127.0.0.1:{port}"), "--quic", "off"]);
    let _server = Serve(serve.args(["--pairing", "off"]).spawn().unwrap());
    let output = waiting.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "[]");
}

/// `keyward call ARGS` at a terminal (a pseudo-terminal made by `script`), typing `typed`.
fn at_a_terminal(data_dir: &Path, args: &str, typed: &str) -> Output {
    let line = format!("{} call --data-dir {} {args}", env!("CARGO_BIN_EXE_keyward"), data_dir.display());
    let mut command = Command::new("script");
    command.args(["-qec", &line, "/dev/null"]).env_remove("KEYWARD_DATA_DIR").env_remove("KEYWARD_TOKEN");
    run(&mut command, Some(typed), None)
}

#[test]
fn a_new_password_is_asked_twice_at_a_terminal() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("d");
    let (_server, _) = serve(&dir);
    let differ = at_a_terminal(&dir, r#"create_wallet '{"name":"t"}'"#, "one\ntwo\n");
    fails(&differ, 2, "the two passwords differ: nothing was sent");
    assert!(text(&differ).contains("Repeat it:"), "{}", text(&differ));
    let created = at_a_terminal(&dir, r#"create_wallet '{"name":"t"}'"#, "one\none\n");
    assert!(created.status.success(), "{}", text(&created));
    // change_password: the current one once, the new one twice.
    let changed = at_a_terminal(&dir, r#"change_password '{"name":"t"}'"#, "one\nnew\nnew\n");
    assert!(changed.status.success(), "{}", text(&changed));
    let opened = call(&dir, &["--password-stdin", "--raw", "open_wallet", r#"{"name":"t"}"#], Some("new\n"));
    assert!(opened.status.success(), "the new password opens it: {}", text(&opened));
}

#[test]
fn a_plain_http_server_is_called_only_when_named() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("d");
    let ready = home.path().join("ready.json");
    let mut command = keyward();
    command.env_remove("KEYWARD_DATA_DIR").stderr(Stdio::null()).arg("serve").arg("--data-dir").arg(&dir);
    command.args(["--https", "off", "--quic", "off", "--http-insecure", "127.0.0.1:0", "--pairing", "off"]);
    command.arg("--ready-file").arg(&ready);
    let (_server, info) = common::serve(command, &ready);
    // Found in endpoints.json, but nothing proves who answers plain HTTP: passwords are not sent there.
    fails(&call(&dir, &["list_wallets"], None), 3, "serves plain HTTP only");
    let url = format!("http://{}/v3/owner", info["http_insecure"].as_str().unwrap());
    let named = call(&dir, &["--url", &url, "list_wallets"], None);
    assert!(named.status.success(), "{}", text(&named));
}

#[test]
fn status_exits_3_when_the_running_server_cannot_be_asked() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("d");
    let (_server, _) = serve(&dir);
    let status = |dir: &Path| {
        let mut command = keyward();
        command.env_remove("KEYWARD_DATA_DIR").arg("status").arg("--data-dir").arg(dir);
        run(&mut command, None, None)
    };
    let fine = status(&dir);
    assert!(fine.status.success(), "{}", text(&fine));
    // The file says the server listens where nothing answers (its process still runs).
    let file = dir.join("run/endpoints.json");
    let mut endpoints: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    endpoints["https"] = format!("127.0.0.1:{}", common::free_port()).into();
    std::fs::write(&file, endpoints.to_string()).unwrap();
    let failed = status(&dir);
    fails(&failed, 3, "nothing answers at");
    assert!(String::from_utf8_lossy(&failed.stdout).contains("error:"), "the report still prints: {}", text(&failed));
}
