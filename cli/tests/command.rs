//! The `keyward` binary as a person uses it: `certs init|show|rotate`, and the README walkthrough
//! (`serve` on an embedded default, then `call` create / open / accounts / sign / close) with the
//! outputs the README shows.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

mod common;

use common::{Serve, keyward, run, text};

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn certs_init_show_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let output = keyward().args(["certs", "init", "--dir"]).arg(&certs).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    for file in ["ca.crt", "server.crt", "client.crt"] {
        assert!(certs.join(file).is_file(), "{file}");
    }
    for key in ["server.key", "client.key"] {
        assert_eq!(mode(&certs.join(key)), 0o600, "{key}");
    }
    // The CA key is kept (0600) so that the server can issue client certificates (`--no-ca-key`: not).
    assert_eq!(mode(&certs.join("ca.key")), 0o600, "ca.key");
    assert_eq!(mode(&certs), 0o700);
    // The set lives in sets/<generation>/, named by the symlink `current`; the flat names are
    // symlinks into it.
    let first_set = std::fs::read_link(certs.join("current")).unwrap();
    assert!(first_set.starts_with("sets"), "{}", first_set.display());
    assert_eq!(mode(&certs.join(&first_set)), 0o700);
    assert_eq!(std::fs::read_link(certs.join("client.key")).unwrap(), Path::new("current/client.key"));

    let show = keyward().args(["certs", "show", "--dir"]).arg(&certs).output().unwrap();
    let shown = text(&show);
    assert!(show.status.success(), "{shown}");
    assert!(shown.contains("CN=Keyward local CA"), "{shown}");
    assert!(shown.contains("serverAuth") && shown.contains("clientAuth"), "{shown}");
    let first_fingerprints: Vec<_> = shown.lines().filter(|l| l.contains("sha256")).map(str::to_owned).collect();
    assert_eq!(first_fingerprints.len(), 3);

    // The server certificate names localhost, 127.0.0.1 and ::1.
    let pem = std::fs::read(certs.join("server.crt")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = format!("{:?}", cert.subject_alternative_name().unwrap().unwrap().value);
    for name in ["localhost", "[127, 0, 0, 1]", "[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]"] {
        assert!(san.contains(name), "{name} missing from {san}");
    }

    let again = keyward().args(["certs", "init", "--dir"]).arg(&certs).output().unwrap();
    assert!(!again.status.success());
    assert!(text(&again).contains("rotate"), "{}", text(&again));

    let rotate = keyward().args(["certs", "rotate", "--keep-ca-key", "--dir"]).arg(&certs).output().unwrap();
    assert!(rotate.status.success(), "{}", text(&rotate));
    assert_eq!(mode(&certs.join("ca.key")), 0o600);
    // A new set replaced the old one whole; the old one (and its keys) is gone.
    let second_set = std::fs::read_link(certs.join("current")).unwrap();
    assert_ne!(second_set, first_set);
    assert!(!certs.join(&first_set).exists(), "the old set is removed");
    assert_eq!(std::fs::read_dir(certs.join("sets")).unwrap().count(), 1);
    let shown = text(&keyward().args(["certs", "show", "--dir"]).arg(&certs).output().unwrap());
    let second: Vec<_> = shown.lines().filter(|l| l.contains("sha256")).map(str::to_owned).collect();
    assert!(first_fingerprints.iter().all(|f| !second.contains(f)), "rotate made the same certificates");
}

fn call(home: &Path, url: &str, args: &[&str], stdin: Option<&str>, token: Option<&str>) -> Output {
    let mut command = keyward();
    command.env("HOME", home).env_remove("KEYWARD_DATA_DIR").args(["call", "--url", url]).args(args);
    run(&mut command, stdin, token)
}

#[test]
fn readme_walkthrough_prints_what_the_readme_says() {
    let home = tempfile::tempdir().unwrap();
    let ready = home.path().join("ready.json");
    // `keyward serve` on its embedded default (~/.keyward), on free ports so tests can run in parallel.
    let mut command = keyward();
    command.env("HOME", home.path()).env_remove("KEYWARD_DATA_DIR").stderr(Stdio::null());
    command.args(["serve", "--https", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--ready-file"]).arg(&ready);
    let (serve, info) = common::serve(command, &ready);
    assert!(home.path().join(".keyward/tls/client.key").is_file(), "certificates are made on first start");
    let url = format!("https://{}/v3/owner", info["https"].as_str().unwrap());
    let h = home.path();

    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let created = call(
        h,
        &url,
        &["--password-stdin", "create_wallet", r#"{"name":"demo"}"#, "--words", "24"],
        Some("pw\n"),
        None,
    );
    assert!(created.status.success(), "{}", text(&created));
    assert_eq!(String::from_utf8_lossy(&created.stdout), "null\n");
    // The backup advice, as the README shows it.
    let advice = String::from_utf8_lossy(&created.stderr);
    assert!(advice.contains("keyward call get_mnemonic '{\"name\":\"demo\"}'"), "{advice}");
    assert!(readme.contains(advice.trim_end()), "the README shows the advice as printed: {advice}");
    let phrase =
        call(h, &url, &["--password-stdin", "--raw", "get_mnemonic", r#"{"name":"demo"}"#], Some("pw\n"), None);
    assert_eq!(String::from_utf8_lossy(&phrase.stdout).split_whitespace().count(), 24, "--words 24 gives 24 words");

    let opened = call(h, &url, &["--password-stdin", "--raw", "open_wallet", r#"{"name":"demo"}"#], Some("pw\n"), None);
    assert!(opened.status.success(), "{}", text(&opened));
    let token = String::from_utf8_lossy(&opened.stdout).trim().to_owned();
    assert_eq!(token.len(), 64);

    let accounts = call(h, &url, &["accounts"], None, Some(&token));
    assert_eq!(
        String::from_utf8_lossy(&accounts.stdout),
        "[\n  {\n    \"label\": \"default\",\n    \"path\": \"0200000000000000000000000000000000\"\n  }\n]\n"
    );
    let signed =
        call(h, &url, &["sign_message", r#"{"path":"m/44h/0h/0h/0/0","message":"hello"}"#], None, Some(&token));
    let signed: serde_json::Value = serde_json::from_slice(&signed.stdout).unwrap();
    assert_eq!(signed["public_key"].as_str().map(str::len), Some(66));
    assert_eq!(signed["signature"].as_str().map(str::len), Some(128));

    // The same call over QUIC.
    let quic = info["quic"].as_str().unwrap();
    let over_quic = call(h, &url, &["--quic", quic, "accounts"], None, Some(&token));
    assert_eq!(over_quic.stdout, accounts.stdout, "{}", text(&over_quic));

    let closed = call(h, &url, &["close_wallet", r#"{"name":"demo"}"#], None, None);
    assert_eq!(String::from_utf8_lossy(&closed.stdout), "null\n");
    let refused = call(h, &url, &["accounts"], None, Some(&token));
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        said.trim_end(),
        "keyward: the wallet was closed or the server restarted: open it again (`keyward call --raw open_wallet \
         '{\"name\":\"NAME\"}'`) and set KEYWARD_TOKEN to the new token (Lifecycle: Wallet has not been opened)"
    );
    assert!(readme.contains(said.trim_end()), "the README shows it as printed");
    assert_eq!(refused.status.code(), Some(1), "a method error exits 1");
    // Passwords are never taken from the command line.
    let argv = call(h, &url, &["open_wallet", r#"{"name":"demo","password":"pw"}"#], None, None);
    assert!(!argv.status.success());
    assert!(text(&argv).contains("not taken from the command line"), "{}", text(&argv));
    drop(serve);
}

/// Runs `keyward serve` on `data_dir` (free ports) and returns its output once it exits, or `None`
/// if it is still running after `seconds` (then it is killed).
fn serve_until_exit(data_dir: &Path, seconds: u64) -> Option<Output> {
    let mut child = keyward()
        .env_remove("KEYWARD_DATA_DIR")
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--https", "127.0.0.1:0", "--quic", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn serve_refuses_private_keys_other_users_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    let tls = data.join("tls");
    let made = keyward().args(["certs", "init", "--dir"]).arg(&tls).output().unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let set = tls.join(std::fs::read_link(tls.join("current")).unwrap());
    for (key, bad) in [("server.key", 0o644), ("client.key", 0o640)] {
        let path = set.join(key);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad)).unwrap();
        let output = serve_until_exit(&data, 30).expect("keyward serve started with a readable key");
        assert!(!output.status.success());
        let expected = format!("{} is readable by other users (mode {bad:04o}); run chmod 600 on it", path.display());
        assert!(text(&output).contains(&expected), "expected {expected:?} in {}", text(&output));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[test]
fn the_ready_file_is_not_written_through_planted_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    // A symlink at every name the ready file was written through before: its temporary name and the
    // file itself, each pointing at a file the server's user owns.
    let planted = [
        (dir.path().join(".ready.json.tmp"), dir.path().join("victim-temp")),
        (ready.clone(), dir.path().join("victim-ready")),
    ];
    for (link, victim) in &planted {
        std::fs::write(victim, "precious\n").unwrap();
        std::fs::set_permissions(victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(victim, link).unwrap();
    }
    let mut serve = Serve(
        keyward()
            .env_remove("KEYWARD_DATA_DIR")
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("kw"))
            .args(["--https", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--ready-file"])
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::symlink_metadata(&ready).unwrap().file_type().is_symlink() {
        assert!(Instant::now() < deadline, "the ready file was not written (or written through the symlink)");
        assert!(serve.0.try_wait().unwrap().is_none(), "keyward serve exited");
        for (_, victim) in &planted {
            assert_eq!(std::fs::read_to_string(victim).unwrap(), "precious\n", "{} was written", victim.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    assert_eq!(info["pid"].as_u64(), Some(u64::from(serve.0.id())));
    assert!(std::fs::symlink_metadata(&ready).unwrap().is_file());
    assert_eq!(mode(&ready), 0o600);
    for (_, victim) in &planted {
        assert_eq!(std::fs::read_to_string(victim).unwrap(), "precious\n", "{} was written", victim.display());
        assert_eq!(mode(victim), 0o644, "{} was chmodded", victim.display());
    }
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.iter().filter(|n| n.to_string_lossy().ends_with(".tmp")).count(), 1, "{names:?}");
    drop(serve);
}

#[test]
fn completions_and_man_pages_come_from_the_command_line_itself() {
    for (shell, marker) in [("bash", "_keyward()"), ("zsh", "#compdef keyward"), ("fish", "complete -c keyward")] {
        let output = keyward().args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(script.contains(marker), "{shell}: {marker}");
        assert!(script.contains("--password-stdin"), "{shell} completes call's options");
    }
    let refused = keyward().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "an unknown shell is a usage error");
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let output = keyward().args(["man", "--out"]).arg(&pages).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    for page in ["keyward.1", "keyward-call.1", "keyward-serve.1", "keyward-status.1", "keyward-audit-show.1"] {
        let roff = std::fs::read_to_string(pages.join(page)).unwrap();
        assert!(roff.contains(".TH"), "{page} is a man page");
    }
    assert!(!pages.join("keyward-bench-echo.1").exists(), "hidden commands have no page");
    let call = std::fs::read_to_string(pages.join("keyward-call.1")).unwrap();
    assert!(call.contains("KEYWARD_TOKEN") && call.contains("\\-\\-words"), "the call page lists its options");
}
