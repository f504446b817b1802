//! The `keyward` binary as a person uses it: `certs init|show|rotate`, and the README walkthrough
//! (`serve` on an embedded default, then `call` create / open / accounts / sign / close) with the
//! outputs the README shows.
#![allow(clippy::unwrap_used)]

mod common;

use common::{keyward, run, text};

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
    assert!(!certs.join("ca.key").exists(), "the CA key is not kept unless asked for");
    assert_eq!(mode(&certs), 0o700);

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
    let shown = text(&keyward().args(["certs", "show", "--dir"]).arg(&certs).output().unwrap());
    let second: Vec<_> = shown.lines().filter(|l| l.contains("sha256")).map(str::to_owned).collect();
    assert!(first_fingerprints.iter().all(|f| !second.contains(f)), "rotate made the same certificates");
}

struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let serve = Serve(
        keyward()
            .env("HOME", home.path())
            .env_remove("KEYWARD_DATA_DIR")
            .args(["serve", "--https", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--ready-file"])
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "keyward serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(home.path().join(".keyward/tls/client.key").is_file(), "certificates are made on first start");
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    let url = format!("https://{}/v3/owner", info["https"].as_str().unwrap());
    let h = home.path();

    let created = call(
        h,
        &url,
        &["--password-stdin", "create_wallet", r#"{"name":"demo","mnemonic_length":16}"#],
        Some("pw\n"),
        None,
    );
    assert!(created.status.success(), "{}", text(&created));
    assert_eq!(String::from_utf8_lossy(&created.stdout), "null\n");

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
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim_end(),
        "keyward: accounts failed: Lifecycle: Wallet has not been opened (code -32099)"
    );
    // Passwords are never taken from the command line.
    let argv = call(h, &url, &["open_wallet", r#"{"name":"demo","password":"pw"}"#], None, None);
    assert!(!argv.status.success());
    assert!(text(&argv).contains("not taken from the command line"), "{}", text(&argv));
    drop(serve);
}
