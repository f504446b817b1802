//! A real browser: headless Chromium loads the unpacked test extension (`tests/browser/extension/`),
//! whose service worker is a client written with `@keyward/client`'s browser entry (the package's
//! esbuild bundle of `clients/ts`: secp256k1 ECDH from `@noble/curves`, AES-256-GCM from WebCrypto)
//! that connects through `chrome.runtime.connectNative` to `keyward native-host`, which `keyward native-host install` registered as a reader and wrote the
//! host manifest for. The extension runs `init_secure_api`, `open_wallet`, `accounts`, a call a
//! reader may not make and `close_wallet`, and POSTs what happened to a listener of this test.
//! A copy of the extension with another ID, which the host manifest lets Chromium start the host
//! for but the host was not installed for, must be refused by the host itself.
//!
//! Without Chromium, node or npm the test skips with one line (`keyward_tests::browser`), or fails
//! when `KEYWARD_REQUIRE_INTEROP=1`.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keyward_tests::browser::{self, EXTENSION_ID, OTHER_ID, OTHER_KEY, ProcessGroup, Reports};
use serde_json::{Value, json};

const TEST: &str = "browser";
const WALLET: &str = "browser";
const PASSWORD: &str = "browser-test-password";
/// The registered client the native host calls as.
const CLIENT: &str = "browser-ext";
/// How long the browser gets to start, load both extensions and report.
const REPORT_WITHIN: Duration = Duration::from_secs(60);

/// `keyward serve`, killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keyward(binary: &Path, home: &Path) -> Command {
    let mut command = Command::new(binary);
    command.env("HOME", home).env_remove("KEYWARD_DATA_DIR").env_remove("KEYWARD_TOKEN");
    command
}

fn run(command: &mut Command, stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(output: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{what} failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Starts `keyward serve` on `data` (HTTPS and QUIC on free loopback ports, a cheap KDF) and waits
/// for its ready file; returns the process and the bound addresses.
fn serve(binary: &Path, home: &Path, data: &Path) -> (Serve, Value) {
    let config = home.join("keyward.toml");
    fs::write(&config, "[kdf]\nm_cost_kib = 64\nt_cost = 1\np_cost = 1\n").unwrap();
    let ready = home.join("ready.json");
    let mut command = keyward(binary, home);
    command.arg("serve").arg("--data-dir").arg(data).arg("--config").arg(&config);
    command.args(["--https", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--ready-file"]).arg(&ready);
    command.stdout(Stdio::null()).stderr(fs::File::create(home.join("serve.log")).unwrap());
    let mut server = Serve(command.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        let exited = server.0.try_wait().unwrap();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "keyward serve did not start ({exited:?}): {}",
            fs::read_to_string(home.join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = serde_json::from_slice(&fs::read(&ready).unwrap()).unwrap();
    (server, info)
}

#[test]
fn chromium_extension_speaks_v3_through_the_native_host() {
    let Some(chromium) = browser::chromium(TEST) else { return };
    let Some((package, _npm)) = keyward_tests::ts::built_package(TEST) else { return };
    let started = Instant::now();
    let binary = browser::keyward_binary();
    let built = started.elapsed();

    let temp = tempfile::tempdir().unwrap();
    let home = temp.path();
    let data = home.join("kw");
    let (server, info) = serve(&binary, home, &data);
    let url = format!("https://{}/v3/owner", info["https"].as_str().unwrap());
    let quic = info["quic"].as_str().unwrap().to_owned();
    let owner = data.join("tls");

    // The owner makes the wallet the extension opens.
    let mut create = keyward(&binary, home);
    create.args(["call", "--url", &url, "--tls-dir"]).arg(&owner);
    create.args(["--password-stdin", "create_wallet", &json!({"name": WALLET, "mnemonic_length": 16}).to_string()]);
    assert_eq!(ok(&run(&mut create, Some(&format!("{PASSWORD}\n"))), "create_wallet"), "null\n");

    // The host, registered as a reader, for the extension's ID, its manifest where Chromium started
    // with --user-data-dir=UDD looks for user-level hosts: UDD/NativeMessagingHosts.
    let udd = home.join("chromium-profile");
    let hosts = udd.join("NativeMessagingHosts");
    let mut install = keyward(&binary, home);
    install.args(["native-host", "install", "--browser", "chromium", "--extension-id", EXTENSION_ID]);
    install.args(["--role", "reader", "--name", CLIENT, "--quic", &quic, "--data-dir"]).arg(&data);
    install.arg("--manifest-dir").arg(&hosts);
    let installed = ok(&run(&mut install, None), "keyward native-host install");
    let manifest_path = hosts.join("keyward.owner.json");
    let mut manifest: Value = serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["name"], "keyward.owner", "{manifest}");
    assert_eq!(manifest["type"], "stdio", "{manifest}");
    assert_eq!(manifest["allowed_origins"], json!([format!("chrome-extension://{EXTENSION_ID}/")]), "{manifest}");
    let wrapper = PathBuf::from(manifest["path"].as_str().unwrap());
    assert!(wrapper.is_absolute() && wrapper.is_file(), "{manifest}");
    // Let Chromium start the host for the other extension too: the host must refuse it by itself.
    manifest["allowed_origins"].as_array_mut().unwrap().push(json!(format!("chrome-extension://{OTHER_ID}/")));
    fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();

    let reports = Reports::listen();
    let config = json!({"report_url": reports.url(), "host": "keyward.owner", "wallet": WALLET, "password": PASSWORD});
    let (allowed, other) = (home.join("extension"), home.join("other-extension"));
    browser::copy_extension(&allowed, &package, &config, None);
    browser::copy_extension(&other, &package, &config, Some(OTHER_KEY));

    let extensions = format!("{},{}", allowed.display(), other.display());
    let log = home.join("chromium.log");
    let mut command = Command::new(&chromium);
    command.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        // Chromium loads --load-extension as is; Google Chrome 137 and later only with this.
        "--disable-features=DisableLoadExtensionCommandLineSwitch",
    ]);
    command.arg(format!("--user-data-dir={}", udd.display()));
    command.arg(format!("--load-extension={extensions}"));
    command.arg(format!("--disable-extensions-except={extensions}"));
    command.arg("about:blank");
    command.env("HOME", home).stdin(Stdio::null()).stdout(Stdio::null()).stderr(fs::File::create(&log).unwrap());
    let browser_started = Instant::now();
    let mut chromium_process = ProcessGroup::spawn(&mut command).unwrap();
    let context = || format!("chromium's log:\n{}", browser::log_tail(&log, 40));
    let got =
        reports.wait_for(&[EXTENSION_ID, OTHER_ID], Instant::now() + REPORT_WITHIN, &mut chromium_process, context);
    let reported = browser_started.elapsed();
    drop(chromium_process);
    let (report, refused) = (&got[0], &got[1]);

    // The extension the host was installed for: the whole V3 exchange, as a reader.
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["step"], "done", "{report}");
    assert_eq!(report["init"], "ok", "init_secure_api: {report}");
    assert_eq!(report["transport"], "native", "{report}");
    assert_eq!(report["token_is_64_hex"], true, "open_wallet: {report}");
    assert_eq!(report["accounts"], json!([{"label": "default", "path": "0200000000000000000000000000000000"}]));
    let refusal = &report["create_account_path"];
    assert_eq!((&refusal["code"], &refusal["variant"]), (&json!(-32099), &json!("Forbidden")), "{report}");
    assert!(
        refusal["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Forbidden: create_account_path needs the signer role"),
        "a reader may not add accounts: {report}"
    );
    assert_eq!(report["close_wallet"], Value::Null, "{report}");

    // The other extension: Chromium started the host for it, the host refused it at the first
    // message (an error answer, or it exited: the port disconnects), and relayed nothing.
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["step"], "init_secure_api", "{refused}");
    assert!(refused.get("init").is_none(), "the host relayed for an origin it was not installed for: {refused}");
    let why = refused["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("refused") || why.contains("disconnected"),
        "the other extension was not refused by the host: {refused}"
    );

    // The server saw the extension's calls as the registered client's.
    let mut audit = keyward(&binary, home);
    audit.args(["audit", "show", "--json", "--principal", CLIENT, "--url", &url, "--data-dir"]).arg(&data);
    let records: Vec<Value> = serde_json::from_str(&ok(&run(&mut audit, None), "keyward audit show")).unwrap();
    let events: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| &r["event"])
        .map(|e| (e["principal"].as_str().unwrap(), e["method"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        events,
        [(CLIENT, "open_wallet", "ok"), (CLIENT, "create_account_path", "forbidden"), (CLIENT, "close_wallet", "ok")],
        "{records:?}"
    );

    drop(server);
    eprintln!(
        "keyward binary ready in {built:.1?}; Chromium reported in {reported:.1?} (the V3 exchange took {} ms)",
        report["elapsed_ms"]
    );
    eprintln!("install said: {}", installed.trim_end());
    eprintln!("the extension reported: {report}");
    eprintln!("the refused extension reported: {refused}");
}
