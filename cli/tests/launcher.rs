//! `keyward serve --launcher` as a front end's launcher meets it: one JSON line on standard output
//! with the URL and credentials made in memory, a working owner client `launcher` for this run only,
//! no certificate file on disk, and an exit when standard input closes. (The TypeScript package's
//! suite drives the same contract through `launch()`, and kills a parent with SIGKILL.)
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, Instant};

use common::{keyward, ok, text};
use serde_json::Value;

/// A launched server: its process, its stdin (closing it stops the server) and its line.
struct Launched {
    child: Child,
    stdin: Option<ChildStdin>,
    line: String,
    info: Value,
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn launch(data_dir: &Path, extra: &[&str]) -> Launched {
    let mut child = keyward()
        .args(["serve", "--launcher", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert!(line.ends_with('\n'), "one whole line: {line:?}");
    let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    Launched { child, stdin, line, info }
}

/// `keyward serve --launcher ARGS --data-dir DATA` that must fail before it is ready: what it said.
fn refused_launch(data: &Path, args: &[&str]) -> String {
    let output = keyward()
        .args(["serve", "--launcher"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "", "no line for a server that did not start");
    text(&output)
}

/// Writes the line's credentials as a bundle (outside the data directory) for `keyward call`.
fn bundle(info: &Value, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.crt"), info["ca"].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("client.crt"), info["cert"].as_str().unwrap()).unwrap();
    let key = dir.join("client.key");
    std::fs::write(&key, info["key"].as_str().unwrap()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found
}

#[test]
fn the_line_the_client_and_the_exit_on_end_of_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    let mut launched = launch(&data, &[]);
    let info = launched.info.clone();

    // The fields, in the documented order, and nothing else.
    let keys: Vec<&str> = info.as_object().unwrap().keys().map(String::as_str).collect();
    let order: Vec<usize> = ["\"keyward\"", "\"pid\"", "\"url\"", "\"quic\"", "\"ca\"", "\"cert\"", "\"key\""]
        .map(|k| launched.line.find(k).unwrap())
        .to_vec();
    assert!(order.is_sorted(), "field order in {}", launched.line);
    assert_eq!(keys.len(), 7, "{keys:?}");
    assert_eq!(info["keyward"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["pid"], launched.child.id());
    let url = info["url"].as_str().unwrap();
    assert!(url.starts_with("https://127.0.0.1:") && url.ends_with("/v3/owner"), "{url}");
    assert!(!url.contains(":0/"), "a real port: {url}");
    assert!(info["quic"].as_str().unwrap().starts_with("127.0.0.1:"), "{info}");
    assert!(info["key"].as_str().unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));

    // The credentials work as an owner's, and the client is `launcher`.
    let creds = dir.path().join("creds");
    bundle(&info, &creds);
    let listed =
        ok(&keyward().args(["call", "--tls-dir"]).arg(&creds).args(["--url", url, "list_clients"]).output().unwrap());
    let clients: Value = serde_json::from_str(&listed).unwrap();
    let launcher = clients.as_array().unwrap().iter().find(|c| c["name"] == "launcher").unwrap();
    assert_eq!(launcher["role"], "owner", "{listed}");
    // While it runs it writes no run/endpoints.json either (its parent has the line).
    assert!(!data.join("run").exists(), "a launched server writes no endpoints file");
    // The same call over QUIC.
    let quic = info["quic"].as_str().unwrap();
    ok(&keyward().args(["call", "--tls-dir"]).arg(&creds).args(["--quic", quic, "list_wallets"]).output().unwrap());
    // It issues no certificates: its CA lives for this run only.
    let refused = keyward()
        .args(["call", "--tls-dir"])
        .arg(&creds)
        .args(["--url", url, "pair_client", r#"{"name":"laptop","role":"reader","ttl_secs":300}"#])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(text(&refused).contains("issues no certificates"), "{}", text(&refused));

    // End of input stops it, gracefully, and standard output carried the one line only.
    drop(launched.stdin.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = launched.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still running 10 s after its input closed");
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!("exited {:?} after its input closed", started.elapsed());
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    launched.child.stdout.as_mut().unwrap().read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "nothing after the line on standard output");

    // No certificate or key was written: the data directory holds the store only (and the audit
    // log's kept head, a hash).
    assert!(!data.join("tls").exists());
    for file in files_under(&data) {
        assert!(file.starts_with("store/") || file == "audit.head", "{file} under the data directory");
    }
    // The launcher's client was for that run only: the registry on disk does not know it.
    let offline = ok(&keyward().args(["clients", "--data-dir"]).arg(&data).arg("list").output().unwrap());
    assert!(!offline.contains("launcher"), "{offline}");
}

#[test]
fn quic_off_and_a_data_directory_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    let launched = launch(&data, &["--quic", "off"]);
    assert_eq!(launched.info["quic"], Value::Null);

    // A second keyward on the same data directory is refused, and says so on standard error only.
    let said = refused_launch(&data, &[]);
    assert!(said.contains("in use by another keyward"), "{said}");
    drop(launched);

    // QUIC on another address than the launcher's own is refused.
    let other = refused_launch(&data, &["--quic", "127.0.0.1:5555"]);
    assert!(other.contains("--quic takes only `off`"), "{other}");
}

/// Waits up to `limit` for the process to exit; its status and how long it took.
fn exit_within(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        assert!(started.elapsed() < limit, "still running {limit:?} after it was told to stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_signal_stops_it_while_its_input_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut launched = launch(&dir.path().join("kw"), &[]);
    // SIGTERM, with the parent (this test) keeping the pipe open: a blocking read of standard input
    // must not hold the process (it did, until the pipe closed).
    let pid = launched.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let (status, took) = exit_within(&mut launched.child, Duration::from_secs(5));
    eprintln!("exited {took:?} after SIGTERM, its input still open");
    assert!(status.success(), "{status:?}");
    assert!(launched.stdin.is_some(), "the pipe was open all along");
}

#[test]
fn end_of_input_stops_it_within_a_second_even_during_a_long_call() {
    let dir = tempfile::tempdir().unwrap();
    // A KDF of several seconds: create_wallet is in flight when the parent goes.
    let config = dir.path().join("slow.toml");
    std::fs::write(&config, "[kdf]\nm_cost_kib = 131072\nt_cost = 40\np_cost = 1\n").unwrap();
    let mut launched = launch(&dir.path().join("kw"), &["--config", config.to_str().unwrap()]);
    let creds = dir.path().join("creds");
    bundle(&launched.info, &creds);
    let url = launched.info["url"].as_str().unwrap().to_owned();
    let mut create = keyward()
        .args(["call", "--tls-dir"])
        .arg(&creds)
        .args(["--url", &url, "--password-stdin", "create_wallet", r#"{"name":"w","mnemonic_length":16}"#])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(create.stdin.as_mut().unwrap(), b"pw\n").unwrap();
    drop(create.stdin.take());
    // Long enough for the call to be on the slow pool, far shorter than its KDF.
    std::thread::sleep(Duration::from_millis(700));
    assert!(create.try_wait().unwrap().is_none(), "the call was meant to be still running");
    drop(launched.stdin.take());
    let (status, took) = exit_within(&mut launched.child, Duration::from_secs(30));
    eprintln!("exited {took:?} after its input closed, a create_wallet in flight");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?} to exit (the KDF takes seconds)");
    let _ = create.kill();
    let _ = create.wait();
}

#[test]
fn plain_http_is_refused_and_the_launchers_name_is_kept_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    // Plain HTTP would let any local process call as owner `local-http`: refused, flag or file.
    let flag = refused_launch(&data, &["--http-insecure", "127.0.0.1:0"]);
    assert!(flag.contains("plain HTTP is not served"), "{flag}");
    let config = dir.path().join("plain.toml");
    std::fs::write(&config, "http_insecure = \"127.0.0.1:0\"\n").unwrap();
    let file = refused_launch(&data, &["--config", config.to_str().unwrap()]);
    assert!(file.contains("plain HTTP is not served"), "{file}");

    // No client may be registered as `launcher` to be kept (it would take the name from every run).
    drop(launch(&data, &[]));
    let add = keyward()
        .args(["clients", "--data-dir"])
        .arg(&data)
        .args(["add", "launcher", "--role", "reader", "--uid", "4242"])
        .output()
        .unwrap();
    assert!(!add.status.success());
    assert!(text(&add).contains("launched server's own client"), "{}", text(&add));

    // A store that has one from before keeps it, and the run's client takes another name.
    let store = keyward_store::FjallStore::open(&data.join("store")).unwrap();
    let record = keyward_core::ClientRecord {
        name: "launcher".into(),
        role: keyward_core::Role::Reader,
        identity: keyward_core::Identity::Uid { uid: 4242 },
        created_unix_ms: 0,
        revoked_unix_ms: None,
    };
    keyward_core::Store::save_client(&store, &record).unwrap();
    drop(store);
    let launched = launch(&data, &[]);
    let creds = dir.path().join("creds");
    bundle(&launched.info, &creds);
    let url = launched.info["url"].as_str().unwrap();
    let listed =
        ok(&keyward().args(["call", "--tls-dir"]).arg(&creds).args(["--url", url, "list_clients"]).output().unwrap());
    let clients: Value = serde_json::from_str(&listed).unwrap();
    let names: Vec<&str> = clients.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"launcher"), "{listed}");
    assert!(names.contains(&format!("launcher-{}", launched.child.id()).as_str()), "{listed}");
}
