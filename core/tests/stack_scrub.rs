//! The stack scrub covers every call: a call's dead stack frames are overwritten before `handle`
//! returns, however deep the call went, and no secret of the call is left in them.
//!
//! A worker thread paints twice the deepest scrub's size of its stack below a marker with a pattern, has the server handle
//! one request there, and stops. The test thread then reads that stack area through
//! `/proc/self/mem` and checks, for every method of a wallet's life:
//! * the deepest bytes the call touched are the scrub's own: the zeroed area starts within a few
//!   hundred bytes (the frames of the zeroing itself) of the deepest touched byte, so no frame of the
//!   call lies below the scrubbed area. A call that went deeper than its scrub leaves its bytes there
//!   and fails this with the depth it reached;
//! * none of the wallet's secrets (BIP39 seed and entropy, BIP32 master key, mnemonic, password,
//!   token, session key) is anywhere in the area.
//!
//! Frame sizes depend on the build profile; run it with `--release` too (`.ci/run` does).
#![cfg(target_os = "linux")]
#![expect(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "a test fails by panicking, with the value in the message; a test reports what it measured"
)]

use std::io::{Read, Seek, SeekFrom};
use std::sync::mpsc;

use keyward_core::crypto::{self, SCRUB_STACK_BYTES, SCRUB_STACK_SHALLOW_BYTES};
use keyward_core::{Incoming, MemoryStore, Outgoing, Server};
use keyward_testkit::{Harness, TestClient, VECTOR_MNEMONIC};
use serde_json::{Value, json};

const PATTERN: u8 = 0xa5;
/// Twice the deepest scrub: a call that went below its scrub is seen inside the painted area.
const PAINTED: usize = 2 * SCRUB_STACK_BYTES;
/// The frames of the zeroing itself (`write_zeros`, `memset`) lie below the zeroed area.
const ZEROING_FRAMES: usize = 1024;
const PASSWORD: &str = "stack-scrub-password-7d1e";
const NEW_PASSWORD: &str = "stack-scrub-password-2-c8a0";

/// Overwrites the stack below the caller's frame with the pattern.
#[inline(never)]
fn paint() {
    let mut area = [0u8; PAINTED];
    let area = std::hint::black_box(&mut area);
    area.fill(PATTERN);
    std::hint::black_box(area);
}

/// Paints the stack below this frame, then has the server handle `body` there. Returns the answer
/// and the address of this frame's marker (the top of the area the call used).
#[inline(never)]
fn serve_on_painted_stack(server: &Server, incoming: Incoming<'_>) -> (Outgoing, usize) {
    let marker = 0u8;
    let top = std::hint::black_box(std::ptr::from_ref(&marker)).addr();
    paint();
    let answer = server.handle(incoming);
    (answer, top)
}

/// What the worker asks the reader to look at: the top of the area and the call's name.
struct Probe {
    top: usize,
    method: String,
}

/// Reads `[top - PAINTED, top)` of this process's memory.
fn read_stack(top: usize) -> Vec<u8> {
    let mut mem = std::fs::File::open("/proc/self/mem").unwrap();
    mem.seek(SeekFrom::Start(u64::try_from(top - PAINTED).unwrap())).unwrap();
    let mut bytes = vec![0u8; PAINTED];
    mem.read_exact(&mut bytes).unwrap();
    bytes
}

/// Checks one call's stack area; returns how deep (bytes below `top`) it touched the stack.
fn check(area: &[u8], method: &str, secrets: &[(&str, Vec<u8>)]) -> usize {
    let deepest = area.iter().position(|&b| b != PATTERN).unwrap_or_else(|| panic!("{method}: stack untouched"));
    assert!(deepest > 0, "{method}: touched the whole painted area; paint more");
    let depth = area.len() - deepest;
    // The scrubbed area: the first long run of zeros above the deepest touched byte.
    let run = SCRUB_STACK_SHALLOW_BYTES / 2;
    let zeroed = (deepest..area.len() - run)
        .find(|&at| area[at..at + run].iter().all(|&b| b == 0))
        .unwrap_or_else(|| panic!("{method}: no scrubbed area found ({depth} bytes of stack touched)"));
    assert!(
        zeroed - deepest <= ZEROING_FRAMES,
        "{method}: {} bytes of the call lie below the scrubbed area (stack touched to {depth} bytes below \
         the call; scrub sizes {SCRUB_STACK_SHALLOW_BYTES} and {SCRUB_STACK_BYTES})",
        zeroed - deepest
    );
    for (name, needle) in secrets {
        let finder = memchr::memmem::Finder::new(needle);
        assert!(finder.find(area).is_none(), "{method}: the {name} is left in the call's dead stack frames");
    }
    depth
}

#[test]
fn every_call_leaves_its_stack_scrubbed() {
    let entropy = crypto::entropy_of(VECTOR_MNEMONIC).unwrap();
    let master = crypto::master_key(&entropy);
    let mut bip39_seed = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(VECTOR_MNEMONIC.as_bytes(), b"mnemonic", 2048, &mut bip39_seed);
    let mut secrets: Vec<(&str, Vec<u8>)> = vec![
        ("BIP39 seed", bip39_seed.to_vec()),
        ("BIP32 master key", master.expose().to_vec()),
        ("BIP32 master secret key", master.expose()[..32].to_vec()),
        ("BIP39 entropy", entropy.expose().to_vec()),
        ("mnemonic", VECTOR_MNEMONIC.as_bytes()[..30].to_vec()),
        ("password", PASSWORD.as_bytes().to_vec()),
        ("new password", NEW_PASSWORD.as_bytes().to_vec()),
    ];

    let (probes, probed) = mpsc::sync_channel::<Probe>(0);
    let (done, checked) = mpsc::sync_channel::<()>(0);
    let (keys_out, keys_in) = mpsc::channel::<(&'static str, Vec<u8>)>();
    let worker = std::thread::Builder::new()
        .name("stack-scrub-worker".into())
        .stack_size(4 * 1024 * 1024)
        .spawn(move || {
            let mut h = Harness::new(Box::new(MemoryStore::new()));
            let served = |h: &mut Harness, c: Option<&TestClient>, method: &str, body: &[u8]| -> Outgoing {
                h.now_ms += 1;
                let session = c.and_then(|c| if c.names_session { c.session } else { None });
                let (answer, top) = serve_on_painted_stack(
                    &h.server,
                    Incoming {
                        body,
                        session,
                        recent: None,
                        principal: &keyward_core::Principal::local(),
                        now_ms: h.now_ms,
                    },
                );
                probes.send(Probe { top, method: method.to_owned() }).unwrap();
                checked.recv().unwrap();
                answer
            };
            let mut init = keyward_core::Client::new([7; 32]);
            let answer = served(&mut h, None, "init_secure_api", &init.init_request());
            init.handle_init_answer(&answer.body).unwrap();
            let mut c = TestClient { client: init, session: answer.session, names_session: false };
            keys_out.send(("session key", c.client.session_key().unwrap().expose().to_vec())).unwrap();

            let call = |h: &mut Harness, c: &mut TestClient, method: &str, params: Value| -> Value {
                let (body, pending) = c.client.seal(method, params).unwrap();
                let answer = served(h, Some(c), method, &body);
                c.client.open(pending, &answer.body).unwrap_or_else(|e| panic!("{method}: {e}"))
            };
            let create = json!({"name": "w", "mnemonic": VECTOR_MNEMONIC, "mnemonic_length": 0, "password": PASSWORD});
            call(&mut h, &mut c, "create_wallet", create);
            let token = call(&mut h, &mut c, "open_wallet", json!({"name": "w", "password": PASSWORD}));
            let token_hex = token.as_str().unwrap().to_owned();
            keys_out.send(("token (hex)", token_hex.as_bytes().to_vec())).unwrap();
            keys_out.send(("token", hex::decode(&token_hex).unwrap())).unwrap();
            let path = "m/44'/0'/0'/0/0";
            call(&mut h, &mut c, "accounts", json!({"token": token}));
            call(&mut h, &mut c, "create_account_path", json!({"token": token, "label": "savings"}));
            call(&mut h, &mut c, "accounts", json!({"token": token}));
            let public = call(&mut h, &mut c, "get_public_key", json!({"token": token, "path": path}));
            let signed = call(&mut h, &mut c, "sign_message", json!({"token": token, "path": path, "message": "m"}));
            let verify = json!({"public_key": public, "message": "m", "signature": signed["signature"]});
            assert_eq!(call(&mut h, &mut c, "verify_message", verify), json!(true));
            call(&mut h, &mut c, "get_public_key", json!({"token": token, "path": "m/1/2'/3"}));
            call(&mut h, &mut c, "sign_message", json!({"token": token, "path": "m/9", "message": "n"}));
            call(&mut h, &mut c, "get_mnemonic", json!({"name": "w", "password": PASSWORD}));
            call(&mut h, &mut c, "list_wallets", json!({}));
            let change = json!({"name": "w", "old": PASSWORD, "new": NEW_PASSWORD});
            call(&mut h, &mut c, "change_password", change);
            call(&mut h, &mut c, "close_wallet", json!({"name": "w"}));
            call(&mut h, &mut c, "open_wallet", json!({"name": "w", "password": NEW_PASSWORD}));
            call(&mut h, &mut c, "delete_wallet", json!({"name": "w", "password": NEW_PASSWORD}));
        })
        .unwrap();

    let mut calls = 0;
    let mut deepest = (0, String::new());
    for probe in probed {
        secrets.extend(keys_in.try_iter());
        let depth = check(&read_stack(probe.top), &probe.method, &secrets);
        eprintln!("{:<20} touched {depth:>6} bytes of stack (its own and the scrub's)", probe.method);
        if depth > deepest.0 {
            deepest = (depth, probe.method);
        }
        calls += 1;
        done.send(()).unwrap();
    }
    worker.join().unwrap();
    assert_eq!(calls, 17, "every call was checked");
    eprintln!("deepest: {} ({} bytes)", deepest.1, deepest.0);
}
