//! `keyward serve --unix` and `keyward call --unix` as a person uses them, the peer check (a
//! process of another uid is closed without an answer, and logged, unless its uid is allowed), and
//! the connection bounds (a reader holding all it can leaves the owner served).
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

mod common;

use common::{Serve, keyward, run, text};

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The uid and gid of `nobody` on Debian and most Linux systems.
const NOBODY: u32 = 65534;

/// `keyward serve` with only the Unix socket; its log goes to `log`.
fn start(home: &Path, socket: &Path, config: Option<&Path>, log: &Path) -> Serve {
    let ready = home.join("ready.json");
    let mut command = keyward();
    command.env("HOME", home).env_remove("KEYWARD_DATA_DIR").env("RUST_LOG", "info");
    command.args(["serve", "--https", "off", "--quic", "off", "--unix"]).arg(socket).arg("--ready-file").arg(&ready);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command.stderr(std::fs::File::create(log).unwrap());
    common::serve(command, &ready).0
}

fn call(command: &mut Command, socket: &Path, args: &[&str], stdin: Option<&str>, token: Option<&str>) -> Output {
    command.arg("call").arg("--unix").arg(socket).args(args);
    run(command, stdin, token)
}

fn own_call(home: &Path, socket: &Path, args: &[&str], stdin: Option<&str>, token: Option<&str>) -> Output {
    let mut command = keyward();
    command.env("HOME", home).env_remove("KEYWARD_DATA_DIR");
    call(&mut command, socket, args, stdin, token)
}

#[test]
fn serve_and_call_over_a_unix_socket() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let socket = h.join("run").join("keyward.sock");
    let serve = start(h, &socket, None, &h.join("serve.log"));
    assert_eq!(std::fs::metadata(&socket).unwrap().mode() & 0o777, 0o600, "the socket is 0600");
    assert_eq!(std::fs::metadata(socket.parent().unwrap()).unwrap().mode() & 0o777, 0o700, "its directory 0700");

    let created = own_call(h, &socket, &["--password-stdin", "create_wallet", r#"{"name":"u"}"#], Some("pw\n"), None);
    assert!(created.status.success(), "{}", text(&created));
    let opened =
        own_call(h, &socket, &["--password-stdin", "--raw", "open_wallet", r#"{"name":"u"}"#], Some("pw\n"), None);
    assert!(opened.status.success(), "{}", text(&opened));
    let token = String::from_utf8_lossy(&opened.stdout).trim().to_owned();
    let accounts = own_call(h, &socket, &["accounts"], None, Some(&token));
    assert!(accounts.status.success(), "{}", text(&accounts));
    let accounts: serde_json::Value = serde_json::from_slice(&accounts.stdout).unwrap();
    assert_eq!(accounts, serde_json::json!([{"label": "default", "path": "0200000000000000000000000000000000"}]));
    let closed = own_call(h, &socket, &["close_wallet", r#"{"name":"u"}"#], None, None);
    assert_eq!(String::from_utf8_lossy(&closed.stdout), "null\n", "{}", text(&closed));
    let refused = own_call(h, &socket, &["accounts"], None, Some(&token));
    assert!(text(&refused).contains("Wallet has not been opened"), "{}", text(&refused));

    // A second server on the same path is refused; after a crash (SIGKILL) the stale socket is
    // replaced by the next start.
    let log = h.join("second.log");
    let second = keyward()
        .env("HOME", h)
        .env_remove("KEYWARD_DATA_DIR")
        .args(["serve", "--https", "off", "--quic", "off", "--data-dir"])
        .arg(h.join("other-data"))
        .arg("--unix")
        .arg(&socket)
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert!(!second.success());
    assert!(std::fs::read_to_string(&log).unwrap().contains("another server is listening"));
    drop(serve);
    assert!(socket.exists(), "a killed server leaves its socket behind");
    let _again = start(h, &socket, None, &h.join("again.log"));
    let listed = own_call(h, &socket, &["list_wallets"], None, None);
    assert!(listed.status.success(), "{}", text(&listed));
}

/// A copy of the keyward binary that `nobody` can run, in a directory it can reach.
fn binary_for_nobody(dir: &Path) -> PathBuf {
    let copy = dir.join("keyward");
    std::fs::copy(env!("CARGO_BIN_EXE_keyward"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

fn call_as_nobody(binary: &Path, home: &Path, socket: &Path) -> Output {
    let mut command = Command::new(binary);
    command.uid(NOBODY).gid(NOBODY).env("HOME", home).env_remove("KEYWARD_DATA_DIR");
    call(&mut command, socket, &["list_wallets"], None, None)
}

#[test]
fn another_uid_is_closed_without_an_answer_unless_allowed() {
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        let message =
            "SKIPPED another_uid_is_closed_without_an_answer_unless_allowed: needs root to run a client as nobody";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("{message}");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::set_permissions(h, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = binary_for_nobody(h);
    let socket = h.join("run").join("keyward.sock");
    let log = h.join("serve.log");
    let serve = start(h, &socket, None, &log);
    // Open the door on purpose, so that only the peer check stands between nobody and the server.
    std::fs::set_permissions(socket.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    let refused = call_as_nobody(&binary, h, &socket);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("closed the connection without an answer"), "{}", text(&refused));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logged = std::fs::read_to_string(&log).unwrap();
        if logged.contains("refusing a connection: no active client has its certificate or uid")
            && logged.contains("uid 65534")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the refusal was not logged: {logged}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let own = own_call(h, &socket, &["list_wallets"], None, None);
    assert!(own.status.success(), "the server's own uid is served: {}", text(&own));
    drop(serve);

    // A directory others can open is refused at start, naming the fix.
    let open_dir = keyward()
        .env("HOME", h)
        .args(["serve", "--https", "off", "--quic", "off", "--unix"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(!open_dir.status.success());
    assert!(text(&open_dir).contains("mode 0700"), "{}", text(&open_dir));

    // So is a 0700 directory that another user owns (they could replace the socket).
    let foreign = h.join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&foreign, Some(NOBODY), Some(NOBODY)).unwrap();
    let foreign_dir = keyward()
        .env("HOME", h)
        .args(["serve", "--https", "off", "--quic", "off", "--unix"])
        .arg(foreign.join("keyward.sock"))
        .output()
        .unwrap();
    assert!(!foreign_dir.status.success());
    assert!(text(&foreign_dir).contains("belongs to another user"), "{}", text(&foreign_dir));
    assert!(!foreign.join("keyward.sock").exists(), "the socket made before the check is removed");

    // The same client is served once its uid is listed in `unix_allowed_uids`.
    std::fs::set_permissions(socket.parent().unwrap(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = h.join("keyward.toml");
    std::fs::write(&config, format!("unix_allowed_uids = [{NOBODY}]\n")).unwrap();
    let _serve = start(h, &socket, Some(&config), &h.join("allowed.log"));
    std::fs::set_permissions(socket.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let allowed = call_as_nobody(&binary, h, &socket);
    assert!(allowed.status.success(), "{}", text(&allowed));
    assert_eq!(String::from_utf8_lossy(&allowed.stdout), "[]\n");
}

/// Opens up to `attempts` connections to the socket and sends each a message; returns the ones the
/// server answered (and so admitted), kept open.
fn hold(socket: &Path, attempts: usize) -> Vec<std::os::unix::net::UnixStream> {
    use std::io::{Read as _, Write as _};
    let mut held = Vec::new();
    for _ in 0..attempts {
        let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else { continue };
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let message = b"{}";
        let sent = stream.write_all(&(message.len() as u32).to_be_bytes()).and_then(|()| stream.write_all(message));
        let mut length = [0u8; 4];
        if sent.is_ok() && stream.read_exact(&mut length).is_ok() {
            let mut answer = vec![0u8; u32::from_be_bytes(length) as usize];
            if stream.read_exact(&mut answer).is_ok() {
                held.push(stream);
            }
        }
    }
    held
}

/// A reader (the server's own uid, registered as a reader) opens as many connections as it can
/// (more than the socket's 64): it keeps at most `[connections] per_principal` (32), and the owner
/// (`nobody`'s uid, allowed, owner) is answered at once.
#[test]
fn one_reader_holding_all_it_can_leaves_the_owner_served_over_the_unix_socket() {
    let own = std::fs::metadata("/proc/self").unwrap().uid();
    if own != 0 {
        let message = "SKIPPED one_reader_holding_all_it_can_leaves_the_owner_served_over_the_unix_socket: needs root \
                       to run a client as nobody";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("{message}");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::set_permissions(h, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = binary_for_nobody(h);
    let socket = h.join("run").join("keyward.sock");
    let config = h.join("keyward.toml");
    std::fs::write(&config, format!("unix_allowed_uids = [{NOBODY}]\n")).unwrap();
    // The first start registers both uids as owners; the server's own becomes a reader.
    drop(start(h, &socket, Some(&config), &h.join("first.log")));
    let mut demote = keyward();
    demote.env("HOME", h).env_remove("KEYWARD_DATA_DIR").args(["clients", "role", &format!("uid-{own}"), "reader"]);
    let demoted = run(&mut demote, None, None);
    assert!(demoted.status.success(), "{}", text(&demoted));
    let _serve = start(h, &socket, Some(&config), &h.join("serve.log"));
    std::fs::set_permissions(socket.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    let held = hold(&socket, 100);
    let owner = call_as_nobody(&binary, h, &socket);
    eprintln!("unix: the reader holds {} of 100 tried; the owner's call: {}", held.len(), text(&owner));
    assert!(owner.status.success(), "the owner's call was refused: {}", text(&owner));
    assert_eq!(String::from_utf8_lossy(&owner.stdout), "[]\n");
    assert!(!held.is_empty() && held.len() <= 32, "the reader kept {} connections", held.len());
}
