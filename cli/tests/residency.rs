//! Secret residency: a real `keyward serve` process is driven through a wallet's life over QUIC, and
//! its memory (`/proc/PID/maps` + `/proc/PID/mem`) is searched for the seed, the BIP39 entropy, the
//! mnemonic, the password, the token and the session key.
//!
//! * While the wallet is open, between calls: the unmasked seed (BIP39 seed, BIP32 master key and
//!   its secret key), the entropy and the mnemonic are nowhere in the process.
//! * After `close_wallet` and the end of the session (its QUIC connection closed): none of them, nor
//!   the password, the token or the session key.
//!
//! The wallet's life includes a batch whose answer outgrows the server's answer buffer (a
//! 200,000-character id after the mnemonic's answer): growing the buffer must not leave the mnemonic
//! behind in freed memory.
#![expect(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "a test fails by panicking, with the value in the message; a test reports what it measured"
)]

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyward_core::crypto;
use keyward_core::{Client, ClientError};
use keyward_quic::QuicClient;
use keyward_testkit::VECTOR_MNEMONIC;
use serde_json::{Value, json};

const PASSWORD: &str = "residency-password-4f9c2e71b0";

struct Server {
    child: Child,
    quic: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Server {
    let config = dir.join("keyward.toml");
    // Small Argon2id parameters keep the test quick; residency does not depend on them.
    std::fs::write(&config, "[kdf]\nm_cost_kib = 1024\nt_cost = 1\np_cost = 1\n").unwrap();
    let ready = dir.join("ready.json");
    let child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--https", "off", "--quic", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("kw"))
        .arg("--config")
        .arg(&config)
        .arg("--ready-file")
        .arg(&ready)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "keyward serve did not get ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let info: Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    Server { child, quic: info["quic"].as_str().unwrap().parse().unwrap() }
}

/// The readable memory of a process: (region description, bytes).
fn memory(pid: u32) -> Vec<(String, Vec<u8>)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("reading another process's memory");
    let mut regions = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        let name = fields.nth(3).unwrap_or("[anon]").to_owned();
        if !perms.starts_with('r') || name == "[vvar]" || name == "[vsyscall]" || name == "[vvar_vclock]" {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut bytes = vec![0u8; usize::try_from(end - start).unwrap()];
        if mem.seek(SeekFrom::Start(start)).is_ok() && mem.read_exact(&mut bytes).is_ok() {
            regions.push((format!("{range} {perms} {name}"), bytes));
        }
    }
    assert!(regions.len() > 10, "could not read the server's memory");
    regions
}

/// Names of the secrets found, with where.
fn find(pid: u32, secrets: &[(&str, Vec<u8>)]) -> Vec<String> {
    let regions = memory(pid);
    let mut found = Vec::new();
    for (name, needle) in secrets {
        let finder = memchr::memmem::Finder::new(needle);
        for (region, bytes) in &regions {
            if let Some(offset) = finder.find(bytes) {
                found.push(format!("{name} in {region} at +{offset:#x}"));
            }
        }
    }
    found
}

struct Caller {
    quic: QuicClient,
    client: Client,
}

impl Caller {
    async fn connect(addr: SocketAddr, tls_dir: &Path) -> Self {
        let quic = QuicClient::connect(addr, "127.0.0.1", keyward::tls::client_config(tls_dir).unwrap()).await.unwrap();
        let mut client = Client::new(rand_seed());
        let answer = quic.call(&client.init_request()).await.unwrap();
        client.handle_init_answer(&answer).unwrap();
        Self { quic, client }
    }

    async fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let (body, pending) = self.client.seal(method, params).unwrap();
        let answer = self.quic.call(&body).await.unwrap();
        self.client.open(pending, &answer)
    }

    /// Sends a batch (an array of requests) in one envelope; the array of answers.
    async fn batch(&mut self, requests: &Value) -> Value {
        let (body, pending) = self.client.seal_raw(&serde_json::to_vec(requests).unwrap(), 0, None).unwrap();
        let answer = self.quic.call(&body).await.unwrap();
        self.client.open_raw(pending, &answer).unwrap()
    }
}

fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    seed
}

#[test]
fn no_secret_stays_in_the_server_process() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let pid = server.child.id();
    let tls_dir = dir.path().join("kw").join("tls");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // Hardening: no core files, and the vault's block locked in memory.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core_line = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(core_line.split_whitespace().nth(4), Some("0"), "{core_line}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let locked = status.lines().find(|l| l.starts_with("VmLck:")).unwrap();
    let locked_kb: u64 = locked.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(locked_kb > 0, "the vault is not locked in memory: {locked}");

    let entropy = crypto::entropy_of(VECTOR_MNEMONIC).unwrap();
    let bip39_seed = bip39_seed(VECTOR_MNEMONIC);
    let master = crypto::master_key(&entropy);
    let seed_secrets: Vec<(&str, Vec<u8>)> = vec![
        ("BIP39 seed", bip39_seed.to_vec()),
        ("BIP32 master key", master.expose().to_vec()),
        ("BIP32 master secret key", master.expose()[..32].to_vec()),
        ("BIP39 entropy", entropy.expose().to_vec()),
        ("mnemonic", VECTOR_MNEMONIC.as_bytes().to_vec()),
        ("mnemonic's first words", VECTOR_MNEMONIC.as_bytes()[..30].to_vec()),
    ];

    let (token, session_key) = runtime.block_on(async {
        let mut caller = Caller::connect(server.quic, &tls_dir).await;
        let create =
            json!({"name": "resident", "mnemonic": VECTOR_MNEMONIC, "mnemonic_length": 0, "password": PASSWORD});
        caller.call("create_wallet", create).await.unwrap();
        let token = caller.call("open_wallet", json!({"name": "resident", "password": PASSWORD})).await.unwrap();
        caller.call("accounts", json!({"token": token})).await.unwrap();
        let signed = json!({"token": token, "path": "m/44'/0'/0'/0/0", "message": "residency"});
        caller.call("sign_message", signed).await.unwrap();
        caller.call("get_public_key", json!({"token": token, "path": "m/0"})).await.unwrap();
        let words = caller.call("get_mnemonic", json!({"name": "resident", "password": PASSWORD})).await.unwrap();
        assert_eq!(words, json!(VECTOR_MNEMONIC));
        // The mnemonic's answer first, then one with a 200,000-character id: the answer buffer
        // (4 KiB) must grow while it holds the mnemonic. The second get_mnemonic is refused (one slow
        // call per batch) but its id is echoed all the same.
        let get_mnemonic = |id: Value| {
            json!({"jsonrpc": "2.0", "id": id, "method": "get_mnemonic",
                   "params": {"name": "resident", "password": PASSWORD}})
        };
        let long_id = "i".repeat(200_000);
        let answers = caller.batch(&json!([get_mnemonic(json!(1)), get_mnemonic(json!(long_id))])).await;
        assert_eq!(answers[0]["result"]["Ok"], json!(VECTOR_MNEMONIC));
        assert_eq!(answers[1]["id"], json!(long_id));
        assert_eq!(answers[1]["error"]["code"], json!(-32099), "{}", answers[1]["error"]);

        // Open, between calls: the unmasked seed must not be anywhere.
        let open_findings = find(pid, &seed_secrets);
        eprintln!("while open, between calls: {} finding(s)", open_findings.len());
        for finding in &open_findings {
            eprintln!("  {finding}");
        }
        assert!(open_findings.is_empty(), "the unmasked seed is resident while the wallet is open: {open_findings:#?}");

        caller.call("close_wallet", json!({"name": "resident"})).await.unwrap();
        let session_key = caller.client.session_key().unwrap().expose().to_vec();
        caller.quic.close().await;
        (token, session_key)
    });
    let token_hex = token.as_str().unwrap().to_owned();
    let mut all = seed_secrets;
    all.push(("password", PASSWORD.as_bytes().to_vec()));
    all.push(("token (hex)", token_hex.as_bytes().to_vec()));
    all.push(("token (bytes)", hex::decode(&token_hex).unwrap()));
    all.push(("session key", session_key.to_vec()));
    // The server drops the session when it notices the closed connection, which takes a moment (more
    // on a loaded machine): look again until nothing is found or 10 s have passed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed_findings = loop {
        let findings = find(pid, &all);
        if findings.is_empty() || Instant::now() > deadline {
            break findings;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("after close: {} finding(s)", closed_findings.len());
    for finding in &closed_findings {
        eprintln!("  {finding}");
    }
    assert!(closed_findings.is_empty(), "secrets stay resident after close: {closed_findings:#?}");
}

fn bip39_seed(mnemonic: &str) -> [u8; 64] {
    let mut seed = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(mnemonic.as_bytes(), b"mnemonic", 2048, &mut seed);
    seed
}
