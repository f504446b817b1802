//! Pairing a front end with a one-time code, against a real `keyward serve` over loopback sockets:
//! `keyward clients pair` makes a code, `keyward pair` uses it, and the bundle it writes works with
//! `keyward call --tls-dir DIR` with the role given (and no more). A code works once; three
//! exchanges that do not confirm void it (a guess that leaves without confirming counts too); an
//! expired code fails; a server that does not know the code gets nothing but the SPAKE2 message
//! and the client writes nothing; the pairing listener is open only while a code is live; every
//! step is in the audit log.
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{Serve, keyward, ok, refused, run, text};
use keyward_pairing::PairingCode;
use keyward_pairing::protocol::{self, Hello, Reply};
use serde_json::Value;

struct Server {
    _serve: Serve,
    data: std::path::PathBuf,
    url: String,
}

impl Server {
    fn start(data: &Path) -> Self {
        let ready = data.with_extension("ready.json");
        let mut command = keyward();
        command.env_remove("KEYWARD_DATA_DIR").arg("serve").arg("--data-dir").arg(data);
        command.args(["--https", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--pairing", "127.0.0.1:0", "--ready-file"]);
        command.arg(&ready).stderr(std::process::Stdio::null());
        let (serve, info) = common::serve(command, &ready);
        let url = format!("https://{}/v3/owner", info["https"].as_str().unwrap());
        Self { _serve: serve, data: data.to_path_buf(), url }
    }

    /// `keyward ARGS` against this server's data directory (the owner's `default` client).
    fn kw(&self, args: &[&str], stdin: Option<&str>, token: Option<&str>) -> Output {
        let mut command = keyward();
        command.env("KEYWARD_DATA_DIR", &self.data).env_remove("KEYWARD_TOKEN").args(args);
        run(&mut command, stdin, token)
    }

    /// A code for `name` with `role`: (code, pair_url).
    fn pair_code(&self, name: &str, role: &str, ttl: Option<&str>) -> (String, String) {
        let mut args = vec!["clients", "pair", "--name", name, "--role", role, "--json", "--url", &self.url];
        if let Some(ttl) = ttl {
            args.extend(["--ttl", ttl]);
        }
        let answer: Value = serde_json::from_str(&ok(&self.kw(&args, None, None))).unwrap();
        assert!(answer["expires_at"].as_str().unwrap().ends_with('Z'), "{answer}");
        (answer["code"].as_str().unwrap().to_owned(), answer["pair_url"].as_str().unwrap().to_owned())
    }

    fn audit(&self) -> String {
        ok(&self.kw(&["audit", "show", "--url", &self.url], None, None))
    }
}

/// `keyward pair` as the README shows it: the code on standard input, not the command line.
fn pair(code: &str, url: &str, out: &Path) -> Output {
    pair_as(code, url, out, None)
}

fn pair_as(code: &str, url: &str, out: &Path, name: Option<&str>) -> Output {
    let mut command = keyward();
    command.args(["pair", "--code-stdin", "--url", url, "--out"]).arg(out);
    if let Some(name) = name {
        command.args(["--name", name]);
    }
    run(&mut command, Some(&format!("{code}\n")), None)
}

fn addr(pair_url: &str) -> SocketAddr {
    keyward_pairing::parse_pair_url(pair_url).unwrap()
}

/// Waits up to 2 s for the pairing listener at `url` to close.
fn closes(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(addr(url)).is_ok() {
        assert!(Instant::now() < deadline, "the pairing listener at {url} is still open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The same id as `code`, another secret: a wrong code the server will try.
fn wrong(code: &str) -> String {
    let first = code.chars().nth(2).unwrap();
    let other = if first == 'Z' { 'Y' } else { 'Z' };
    format!("{}{other}{}", &code[..2], &code[3..])
}

#[test]
fn a_front_end_pairs_with_a_code_and_calls_with_the_role_it_was_given() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(&home.path().join("kw"));
    let owner = |args: &[&str], stdin: Option<&str>| {
        ok(&server.kw(&[&["call", "--url", &server.url], args].concat(), stdin, None))
    };
    owner(&["--password-stdin", "create_wallet", r#"{"name":"w"}"#], Some("pw\n"));

    let (code, url) = server.pair_code("phone", "reader", None);
    assert_eq!(code.len(), 11, "two groups of five: {code}");
    TcpStream::connect(addr(&url)).expect("the listener is open while the code is live");
    let bundle = home.path().join("phone");
    let paired = ok(&pair(&code.to_lowercase(), &url, &bundle));
    assert!(paired.contains("paired as client 'phone' (reader)"), "{paired}");
    let mode = |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777;
    assert_eq!(mode(&bundle), 0o700);
    assert_eq!(mode(&bundle.join("client.key")), 0o600);
    let config = std::fs::read_to_string(bundle.join("keyward.toml")).unwrap();
    assert!(config.contains(&format!("url = \"{}\"", server.url)), "{config}");

    // The bundle alone reaches the server (its keyward.toml names it), with the reader role.
    let dir = bundle.to_str().unwrap();
    let call = |args: &[&str], stdin: Option<&str>, token: Option<&str>| {
        let mut command = keyward();
        command.env_remove("KEYWARD_DATA_DIR").env_remove("KEYWARD_TOKEN").args(["call", "--tls-dir", dir]).args(args);
        run(&mut command, stdin, token)
    };
    let token = ok(&call(&["--password-stdin", "--raw", "open_wallet", r#"{"name":"w"}"#], Some("pw\n"), None));
    let accounts: Value = serde_json::from_str(&ok(&call(&["accounts"], None, Some(token.trim())))).unwrap();
    assert_eq!(accounts[0]["label"], "default", "{accounts}");
    refused(&call(&["create_account_path", r#"{"label":"x"}"#], None, Some(token.trim())), "needs the signer role");
    refused(
        &call(&["--password-stdin", "get_mnemonic", r#"{"name":"w"}"#], Some("pw\n"), None),
        "needs the owner role",
    );

    // A code on the command line works, with a warning that other users can read it there.
    let (code_on_argv, url_argv) = server.pair_code("laptop", "reader", None);
    let out = home.path().join("laptop");
    let output = run(keyward().args(["pair", &code_on_argv, "--url", &url_argv, "--out"]).arg(&out), None, None);
    assert!(text(&output).contains("other local users can read a code given on the command line"));
    ok(&output);

    // Used once: the listener closed with the last live code, and the code is gone.
    closes(&url);
    refused(&pair(&code, &url, &home.path().join("again")), "cannot reach the pairing listener");
    assert!(!home.path().join("again").exists());
    let listed = ok(&server.kw(&["clients", "list", "--url", &server.url], None, None));
    assert!(listed.lines().any(|l| l.starts_with("phone") && l.contains("reader")), "{listed}");

    // Three exchanges that do not confirm void a code: two wrong codes, and a guess that leaves
    // after the server's message. The right code is then refused and nothing is written.
    let (code, url) = server.pair_code("tablet", "signer", None);
    for _ in 0..2 {
        let out = home.path().join("wrong");
        refused(&pair(&wrong(&code), &url, &out), "did not prove it knows this code");
        assert!(!out.exists(), "nothing written on a wrong code");
    }
    let mut leaver = TcpStream::connect(addr(&url)).unwrap();
    let (_, hello) = protocol::ClientStart::new(&PairingCode::parse(&wrong(&code)).unwrap());
    send(&mut leaver, &protocol::to_bytes(&hello));
    let _reply: Reply = protocol::parse(&receive(&mut leaver)).unwrap();
    drop(leaver);
    closes(&url);
    refused(&pair(&code, &url, &home.path().join("late")), "cannot reach the pairing listener");
    assert!(!home.path().join("late").exists());

    // A directory that cannot take a bundle is refused before the code is spent; a client that
    // expects another name spends the code and gets nothing.
    let (code, url) = server.pair_code("kiosk", "reader", None);
    let taken = home.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("ca.crt"), "x").unwrap();
    refused(&pair(&code, &url, &taken), "cannot write a bundle to");
    refused(
        &pair_as(&code, &url, &home.path().join("kiosk"), Some("other")),
        "this code is for client 'kiosk', not 'other'",
    );
    closes(&url);
    assert!(!home.path().join("kiosk").exists());

    // A new code for the voided name works; while two codes are live, using one leaves the
    // listener open for the other.
    let (tablet, url) = server.pair_code("tablet", "signer", None);
    let (watch, watch_url) = server.pair_code("watch", "reader", None);
    assert_eq!(url, watch_url, "one listener for every live code");
    ok(&pair(&tablet, &url, &home.path().join("tablet")));
    TcpStream::connect(addr(&url)).expect("still open: a code is live");
    let tablet_dir = home.path().join("tablet");
    assert_eq!(
        ok(&call_with(&tablet_dir, &["list_wallets"])).trim().replace([' ', '\n'], ""),
        r#"[{"name":"w","open":false}]"#
    );
    refused(&call_with(&tablet_dir, &["list_clients"]), "needs the owner role");
    ok(&pair(&watch, &url, &home.path().join("watch")));
    closes(&url);

    let audit = server.audit();
    for (who, outcome) in [
        ("phone", "ok"),
        ("tablet", "wrong code"),
        ("tablet", "voided after 3 wrong codes"),
        ("watch", "ok"),
        ("kiosk", "expected another name"),
    ] {
        assert!(
            audit.lines().any(|l| l.contains(who) && l.contains(" pair ") && l.contains(outcome)),
            "no '{who} pair {outcome}' in the audit log:\n{audit}"
        );
    }
    assert!(audit.lines().any(|l| l.contains("pair_client") && l.contains("phone")), "{audit}");
    assert!(!audit.contains(&code) && !audit.contains(&tablet), "no code in the audit log");
}

fn call_with(bundle: &Path, args: &[&str]) -> Output {
    let mut command = keyward();
    command.env_remove("KEYWARD_DATA_DIR").env_remove("KEYWARD_TOKEN").arg("call").arg("--tls-dir").arg(bundle);
    run(command.args(args), None, None)
}

fn send(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(&u32::try_from(message.len()).unwrap().to_be_bytes()).unwrap();
    stream.write_all(message).unwrap();
}

fn receive(stream: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).unwrap();
    body
}

#[test]
fn an_expired_code_fails() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(&home.path().join("kw"));
    refused(
        &server.kw(
            &["clients", "pair", "--name", "x", "--role", "reader", "--ttl", "5", "--url", &server.url],
            None,
            None,
        ),
        "a pairing code lives 10 to 3600 seconds",
    );
    // A long code replaced by a short one: the listener follows the new expiry.
    server.pair_code("late", "reader", Some("3600"));
    let (code, url) = server.pair_code("late", "reader", Some("10"));
    // Three guesses that stall after the server's message: each spends an attempt when the
    // server gives up on it (10 s), and the third voids the code.
    let (stall, _) = server.pair_code("stall", "reader", Some("60"));
    let stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(addr(&url)).unwrap();
            let (_, hello) = protocol::ClientStart::new(&PairingCode::parse(&wrong(&stall)).unwrap());
            send(&mut stream, &protocol::to_bytes(&hello));
            let _reply: Reply = protocol::parse(&receive(&mut stream)).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_secs(11));
    drop(stalled);
    // At expiry the listener closes (the last code went); whatever the timing, pairing fails.
    let out = home.path().join("late");
    let output = pair(&code, &url, &out);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(!out.exists());
    closes(&url);
    let audit = server.audit();
    assert!(audit.lines().any(|l| l.contains("late") && l.contains(" pair ") && l.contains("expired")), "{audit}");
    assert!(audit.lines().any(|l| l.contains("late") && l.contains("replaced by a new code")), "{audit}");
    assert!(audit.lines().any(|l| l.contains("stall") && l.contains("voided after 3 wrong codes")), "{audit}");
}

/// A server that does not know the code: it takes the client's first message and answers as a
/// pairing server with a guessed code. The client must stop there, send nothing more and write
/// nothing; all the fake got is the SPAKE2 message (no key, no name).
#[test]
fn a_fake_server_without_the_code_gets_nothing_and_the_client_writes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://{}", listener.local_addr().unwrap());
    let fake = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let first = receive(&mut stream);
        let hello: Hello = protocol::parse(&first).unwrap();
        let guess = PairingCode::parse(&format!("{}00000000", hello.id)).unwrap();
        let (_, reply) = protocol::ServerExchange::new(&guess, &hello).unwrap();
        send(&mut stream, &protocol::to_bytes(&reply));
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        (first, rest)
    });
    let out = home.path().join("bundle");
    refused(&pair("7KQ2M-XR4TD", &url, &out), "did not prove it knows this code");
    assert!(!out.exists(), "the client wrote nothing");
    let (first, rest) = fake.join().unwrap();
    let hello: Hello = protocol::parse(&first).unwrap();
    assert_eq!((hello.keyward_pair, hello.id.as_str()), (1, "7K"));
    assert_eq!(hello.spake.0.len(), 33, "side byte and one group element: {:?}", hello.spake);
    assert!(rest.is_empty(), "the client sent nothing after the server failed to confirm: {} bytes", rest.len());
}

/// Eight silent sockets on the pairing port (before: `keyward pair` failed at once): a new
/// connection takes the place of the oldest silent one, so pairing goes through while they are
/// held. Eight connections that have spoken keep their places: a new one is closed at once, and
/// `keyward pair` tries again for a few seconds, so it pairs once one of them leaves. None of it
/// spent an attempt.
#[test]
fn a_flood_of_pairing_connections_is_bounded_and_passes() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(&home.path().join("kw"));
    let (code, url) = server.pair_code("phone", "reader", Some("60"));
    let mut silent: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr(&url)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    ok(&pair(&code, &url, &home.path().join("phone")));
    // The oldest silent socket gave its place; the others are still held.
    let mut byte = [0u8; 1];
    silent[0].set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(silent[0].read(&mut byte).unwrap_or(0), 0, "the oldest silent connection was closed");
    silent[7].set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(silent[7].read(&mut byte).is_err(), "the newest silent connection is still open");
    drop(silent);

    // Eight that spoke (half a frame's length prefix each) keep their places.
    let (code, url) = server.pair_code("tablet", "reader", Some("60"));
    let spoke: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = TcpStream::connect(addr(&url)).unwrap();
            stream.write_all(&[0, 0]).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut ninth = TcpStream::connect(addr(&url)).unwrap();
    ninth.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(ninth.read(&mut byte).unwrap(), 0, "the ninth connection is closed without an answer");
    // `keyward pair` now, and one of the eight leaves a second later: the retry pairs.
    let out = home.path().join("tablet");
    let pairing = std::thread::spawn(move || pair(&code, &url, &out));
    std::thread::sleep(Duration::from_secs(1));
    drop(spoke);
    ok(&pairing.join().unwrap());
}
