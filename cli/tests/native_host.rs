//! `keyward native-host` started exactly as a browser starts it: the manifest's `path` run with
//! the caller's origin as its argument, native-endian length-prefixed JSON on standard input, and
//! only such frames on standard output. Through it a V3 client runs init, create, open, accounts
//! and close against a real `keyward serve` (over QUIC, then HTTPS), seeing only its own
//! ciphertext pass; another extension's origin is refused; an oversized or truncated frame gets a
//! clear error and the host exits; `uninstall` revokes the client and removes its files.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

mod common;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};

use common::{Serve, keyward, ok, run};
use keyward_core::Client;
use serde_json::{Value, json};

const EXTENSION: &str = "abcdefghijklmnopabcdefghijklmnop";
const ORIGIN: &str = "chrome-extension://abcdefghijklmnopabcdefghijklmnop/";

struct Server {
    _serve: Serve,
    data: PathBuf,
    url: String,
    quic: String,
}

impl Server {
    fn start(data: &Path) -> Self {
        let ready = data.with_extension("ready.json");
        let mut command = keyward();
        command.env_remove("KEYWARD_DATA_DIR").arg("serve").arg("--data-dir").arg(data);
        command.args(["--https", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--ready-file"]);
        command.arg(&ready).stderr(Stdio::null());
        let (serve, info) = common::serve(command, &ready);
        let url = format!("https://{}/v3/owner", info["https"].as_str().unwrap());
        Self { _serve: serve, data: data.to_path_buf(), url, quic: info["quic"].as_str().unwrap().to_owned() }
    }

    fn kw(&self, args: &[&str]) -> Output {
        let mut command = keyward();
        command.env("KEYWARD_DATA_DIR", &self.data).args(args);
        run(&mut command, None, None)
    }
}

/// The manifest's `path`, started as Chromium starts a host.
struct Host {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
}

impl Host {
    fn start(manifest: &Path, args: &[&str]) -> Self {
        let manifest: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
        let path = manifest["path"].as_str().unwrap();
        let mut child = Command::new(path)
            .args(args)
            .env_remove("KEYWARD_DATA_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take().unwrap());
        Self { child, stdin, stdout }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stdin.as_mut().unwrap().write_all(bytes).unwrap();
        self.stdin.as_mut().unwrap().flush().unwrap();
    }

    fn send(&mut self, message: &[u8]) {
        let len = u32::try_from(message.len()).unwrap().to_ne_bytes();
        self.send_raw(&[&len[..], message].concat());
    }

    /// The next frame: a JSON value.
    fn receive(&mut self) -> Value {
        let mut len = [0u8; 4];
        self.stdout.read_exact(&mut len).unwrap();
        let len = u32::from_ne_bytes(len) as usize;
        assert!(len <= 1024 * 1024, "a frame above the browsers' 1 MiB: {len}");
        let mut body = vec![0u8; len];
        self.stdout.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// Closes standard input and returns the exit status, what is left on standard output (must
    /// be nothing) and standard error.
    fn finish(mut self) -> (std::process::ExitStatus, Vec<u8>, String) {
        drop(self.stdin.take());
        let mut rest = Vec::new();
        self.stdout.read_to_end(&mut rest).unwrap();
        let mut stderr = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        (self.child.wait().unwrap(), rest, stderr)
    }
}

/// A V3 client speaking through the host: init, then sealed calls; returns each call's result.
struct V3<'a> {
    host: &'a mut Host,
    client: Client,
}

impl<'a> V3<'a> {
    fn init(host: &'a mut Host) -> Self {
        let mut client = Client::new([7; 32]);
        host.send(&client.init_request());
        let answer = host.receive();
        client.handle_init_answer(answer.to_string().as_bytes()).unwrap();
        Self { host, client }
    }

    fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let (sealed, pending) = self.client.seal(method, params).unwrap();
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(text.contains("encrypted_request_v3") && !text.contains(method), "the relay sees ciphertext only");
        self.host.send(&sealed);
        let answer = self.host.receive();
        self.client.open(pending, answer.to_string().as_bytes()).map_err(|e| e.to_string())
    }
}

fn install(server: &Server, manifests: &Path, role: &str, via: &[&str]) -> String {
    let dir = manifests.to_str().unwrap();
    let args = [
        &["native-host", "install", "--browser", "chromium", "--extension-id", EXTENSION, "--role", role],
        &["--manifest-dir", dir][..],
        via,
    ]
    .concat();
    ok(&server.kw(&args))
}

#[test]
fn an_extension_runs_the_wallet_lifecycle_through_the_native_host() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(&home.path().join("kw"));
    let manifests = home.path().join("NativeMessagingHosts");
    let installed = install(&server, &manifests, "owner", &["--quic", &server.quic.clone()]);
    assert!(installed.contains("client 'ext-chromium-abcdefghijklmnopabcdefghijklmnop' (owner)"), "{installed}");
    let manifest_path = manifests.join("keyward.owner.json");
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["name"], "keyward.owner");
    assert_eq!(manifest["type"], "stdio");
    assert_eq!(manifest["allowed_origins"], json!([ORIGIN]));
    assert!(Path::new(manifest["path"].as_str().unwrap()).is_absolute());

    let mut host = Host::start(&manifest_path, &[ORIGIN]);
    let mut v3 = V3::init(&mut host);
    v3.call("create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 32, "password": "pw"})).unwrap();
    let token = v3.call("open_wallet", json!({"name": "w", "password": "pw"})).unwrap();
    let accounts = v3.call("accounts", json!({"token": token})).unwrap();
    assert_eq!(accounts[0]["label"], "default", "{accounts}");
    v3.call("close_wallet", json!({"name": "w"})).unwrap();
    // Garbage between calls gets a JSON-RPC error and the host goes on.
    host.send(b"{not json");
    assert_eq!(host.receive()["error"]["code"], -32700);
    let mut v3 = V3::init(&mut host);
    assert_eq!(v3.call("list_wallets", json!({})).unwrap(), json!([{"name": "w", "open": false}]));
    let (status, rest, stderr) = host.finish();
    assert!(status.success(), "exits cleanly when the browser closes the port: {status} {stderr}");
    assert!(rest.is_empty(), "nothing but frames on standard output");

    // The audit log names the extension's client.
    let audit = ok(&server.kw(&["audit", "show", "--url", &server.url]));
    assert!(
        audit
            .lines()
            .any(|l| l.contains("ext-chromium-abcdefghijklmnopabcdefghijklmnop") && l.contains("create_wallet")),
        "{audit}"
    );

    // Another extension is refused before anything is relayed.
    let mut other = Host::start(&manifest_path, &["chrome-extension://bbcdefghijklmnopabcdefghijklmnop/"]);
    let refusal = other.receive();
    assert!(
        refusal["error"]["message"].as_str().unwrap().contains(
            "extension chrome-extension://bbcdefghijklmnopabcdefghijklmnop/ is not the one installed for host \
             keyward.owner (chrome-extension://abcdefghijklmnopabcdefghijklmnop/)"
        ),
        "{refusal}"
    );
    let (status, rest, stderr) = other.finish();
    assert!(!status.success() && rest.is_empty());
    assert!(stderr.contains("is not the one installed for host keyward.owner"), "logged too: {stderr}");

    // Uninstall revokes the client and removes the manifest and the bundle (named after the host).
    let bundle = home.path().join("kw/native-host/keyward.owner");
    assert!(bundle.join("client.key").is_file());
    let other = "bbcdefghijklmnopabcdefghijklmnop";
    let args = ["native-host", "uninstall", "--browser", "chromium", "--extension-id", other];
    let wrong =
        server
            .kw(&[&args[..], &["--name", "ext-chromium-abcdefghijklmnopabcdefghijklmnop", "--url", &server.url]]
                .concat());
    assert!(
        !wrong.status.success()
            && String::from_utf8_lossy(&wrong.stderr).contains("was installed for chromium extension")
            && String::from_utf8_lossy(&wrong.stderr).contains("not this one: nothing changed")
    );
    assert!(manifest_path.exists() && bundle.exists(), "a refused uninstall changes nothing");
    let removed = ok(&server.kw(&[
        "native-host",
        "uninstall",
        "--browser",
        "chromium",
        "--extension-id",
        EXTENSION,
        "--url",
        &server.url,
    ]));
    assert!(removed.contains("revoked client 'ext-chromium-abcdefghijklmnopabcdefghijklmnop'"), "{removed}");
    assert!(!manifest_path.exists() && !bundle.exists(), "{removed}");
    let listed = ok(&server.kw(&["clients", "list", "--url", &server.url]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("ext-chromium-abcdefghijklmnopabcdefghijklmnop") && !l.trim_end().ends_with('-')),
        "{listed}"
    );

    // Installed again (a new name: names are never reused) as a reader over HTTPS.
    let args = ["native-host", "install", "--browser", "chromium", "--extension-id", EXTENSION, "--role", "reader"];
    let dir = manifests.to_str().unwrap();
    ok(&server.kw(&[&args[..], &["--name", "ext-2", "--manifest-dir", dir, "--url", &server.url]].concat()));
    let mut host = Host::start(&manifest_path, &[ORIGIN]);
    let mut v3 = V3::init(&mut host);
    let token = v3.call("open_wallet", json!({"name": "w", "password": "pw"})).unwrap();
    assert_eq!(v3.call("accounts", json!({"token": token})).unwrap()[0]["label"], "default");
    let refused = v3.call("get_mnemonic", json!({"name": "w", "password": "pw"})).unwrap_err();
    assert!(refused.contains("needs the owner role"), "{refused}");
    let (status, rest, _) = host.finish();
    assert!(status.success() && rest.is_empty());

    // Revoked: the host tells the extension so (the server's TLS alert certificate_revoked).
    ok(&server.kw(&["clients", "revoke", "ext-2", "--url", &server.url]));
    let mut host = Host::start(&manifest_path, &[ORIGIN]);
    host.send(&Client::new([8; 32]).init_request());
    let answer = host.receive();
    let said = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(said.contains("this client was revoked"), "{answer}");
    let (_, rest, _) = host.finish();
    assert!(rest.is_empty());
}

#[test]
fn oversized_and_truncated_frames_get_an_error_and_the_host_exits() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(&home.path().join("kw"));
    let manifests = home.path().join("hosts");
    install(&server, &manifests, "reader", &["--url", &server.url.clone()]);
    let manifest = manifests.join("keyward.owner.json");

    // A length above the host's 1 MiB: refused from the prefix alone (the body never comes).
    let mut host = Host::start(&manifest, &[ORIGIN]);
    host.send_raw(&(64u32 * 1024 * 1024).to_ne_bytes());
    let error = host.receive();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("larger than the limit of 1048576 bytes"), "{error}");
    let (status, rest, stderr) = host.finish();
    assert!(!status.success() && rest.is_empty(), "{status}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A frame cut short: the error names it and the host exits.
    let mut host = Host::start(&manifest, &[ORIGIN]);
    host.send_raw(&100u32.to_ne_bytes());
    host.send_raw(b"{\"jsonrpc\"");
    drop(host.stdin.take());
    let error = host.receive();
    assert!(
        error["error"]["message"].as_str().unwrap().contains("ended inside a message (14 of 104 bytes)"),
        "{error}"
    );
    let (status, rest, stderr) = host.finish();
    assert!(!status.success() && rest.is_empty(), "{status}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // No argument at all (not started by a browser): refused.
    let mut host = Host::start(&manifest, &[]);
    let refusal = host.receive();
    assert!(refusal["error"]["message"].as_str().unwrap().contains("no calling extension was named"), "{refusal}");
    assert!(!host.finish().0.success());
}

/// Issue 23, item 8a: relative `--data-dir` and `--manifest-dir` still give the browser an
/// absolute manifest `path` and a wrapper that names the binary and bundle by absolute paths.
#[test]
fn relative_directories_are_written_as_absolute_paths() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(&home.path().join("kw"));
    let mut command = keyward();
    command.current_dir(home.path()).env_remove("KEYWARD_DATA_DIR");
    command.args(["native-host", "install", "--browser", "chromium", "--extension-id", EXTENSION]);
    command.args(["--role", "reader", "--manifest-dir", "manifests", "--data-dir", "kw", "--url", &server.url]);
    ok(&run(&mut command, None, None));
    let manifest = home.path().join("manifests").join("keyward.owner.json");
    let body: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let path = Path::new(body["path"].as_str().unwrap());
    assert!(path.is_absolute() && path.exists(), "{body}");
    let script = std::fs::read_to_string(path).unwrap();
    let exec = script.lines().find(|line| line.starts_with("exec ")).unwrap();
    for quoted in exec.split('\'').skip(1).step_by(2) {
        assert!(Path::new(quoted).is_absolute(), "{quoted} in {exec}");
    }
    assert_eq!(exec.matches('\'').count(), 4, "the binary and the bundle: {exec}");
}

/// Issue 24: two extensions (a development and a store build) each get their own host, named
/// with --host-name: their own manifest, bundle and client; each host serves its own extension
/// only, and uninstalling one leaves the other working.
#[test]
fn two_named_hosts_serve_two_extensions_side_by_side() {
    const DEV: &str = "cbcdefghijklmnopabcdefghijklmnop";
    const DEV_ORIGIN: &str = "chrome-extension://cbcdefghijklmnopabcdefghijklmnop/";
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(&home.path().join("kw"));
    let manifests = home.path().join("hosts");
    let dir = manifests.to_str().unwrap();
    install(&server, &manifests, "owner", &["--url", &server.url.clone()]);
    let args = ["native-host", "install", "--browser", "chromium", "--extension-id", DEV, "--role", "reader"];
    let dev =
        ok(&server
            .kw(&[&args[..], &["--host-name", "keyward.dev", "--manifest-dir", dir, "--url", &server.url]].concat()));
    assert!(dev.contains("installed the native-messaging host 'keyward.dev'"), "{dev}");
    let (owner_manifest, dev_manifest) = (manifests.join("keyward.owner.json"), manifests.join("keyward.dev.json"));
    let body: Value = serde_json::from_slice(&std::fs::read(&dev_manifest).unwrap()).unwrap();
    assert_eq!((&body["name"], &body["allowed_origins"]), (&json!("keyward.dev"), &json!([DEV_ORIGIN])));
    let owner_body: Value = serde_json::from_slice(&std::fs::read(&owner_manifest).unwrap()).unwrap();
    assert_ne!(body["path"], owner_body["path"], "a wrapper and bundle each");
    assert!(home.path().join("kw/native-host/keyward.dev/client.key").is_file());
    assert!(home.path().join("kw/native-host/keyward.owner/client.key").is_file());

    // Each host serves its own extension, as its own client.
    let mut host = Host::start(&dev_manifest, &[DEV_ORIGIN]);
    let mut v3 = V3::init(&mut host);
    assert_eq!(v3.call("list_wallets", json!({})).unwrap(), json!([]));
    assert!(host.finish().0.success());
    let mut wrong = Host::start(&dev_manifest, &[ORIGIN]);
    let refusal = wrong.receive();
    let expected = format!("extension {ORIGIN} is not the one installed for host keyward.dev ({DEV_ORIGIN})");
    assert!(refusal["error"]["message"].as_str().unwrap().contains(&expected), "{refusal}");
    assert!(!wrong.finish().0.success());
    let clients = ok(&server.kw(&["clients", "list", "--url", &server.url]));
    for client in [format!("ext-chromium-{EXTENSION}"), format!("ext-chromium-{DEV}")] {
        assert!(clients.lines().any(|l| l.starts_with(&client)), "{clients}");
    }

    // A host name browsers would not accept is refused before anything is done.
    let bad = server.kw(&[&args[..], &["--host-name", "Keyward..dev", "--manifest-dir", dir]].concat());
    assert!(!bad.status.success() && common::text(&bad).contains("is not a native-messaging host name"));

    // Uninstalling the development host leaves the other one working.
    let removed = ok(&server.kw(&["native-host", "uninstall", "--host-name", "keyward.dev", "--url", &server.url]));
    assert!(removed.contains(&format!("revoked client 'ext-chromium-{DEV}'")), "{removed}");
    assert!(!dev_manifest.exists() && !home.path().join("kw/native-host/keyward.dev").exists());
    assert!(owner_manifest.exists());
    let mut host = Host::start(&owner_manifest, &[ORIGIN]);
    let mut v3 = V3::init(&mut host);
    assert_eq!(v3.call("list_wallets", json!({})).unwrap(), json!([]));
    assert!(host.finish().0.success());
    let again = server.kw(&["native-host", "uninstall", "--host-name", "keyward.dev", "--url", &server.url]);
    assert!(!again.status.success() && common::text(&again).contains("no native-messaging host 'keyward.dev'"));
}

/// An install that cannot work (no keyward store in the data directory) says so before it makes
/// anything: on a fresh HOME, no directory is left behind (no ~/.keyward, no browser folder).
#[test]
fn a_refused_install_on_a_fresh_home_leaves_nothing_behind() {
    let home = tempfile::tempdir().unwrap();
    let mut command = keyward();
    command.env("HOME", home.path()).env_remove("XDG_CONFIG_HOME").env_remove("KEYWARD_DATA_DIR");
    command.args(["native-host", "install", "--browser", "chromium", "--extension-id", EXTENSION, "--role", "owner"]);
    let output = run(&mut command, None, None);
    common::refused(&output, "holds no keyward store: start `keyward serve` on it once");
    let left: Vec<_> = std::fs::read_dir(home.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "{left:?}");
}
