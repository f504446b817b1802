//! The V3 client (`keyward_core::client`) against a real server and against answers crafted under
//! the session key: the exact verdict of `open_raw` for every shape of answer (ids, nonces, inner
//! errors, replays, a reflected request), the remembered nonces, `is_ready`, the `Debug` texts
//! (which hold no secret), `wipe`, and that a dropped `Client` or `Pending` leaves no ECDH secret
//! key in freed memory (read back through `/proc/self/mem`, as in `freed_secrets.rs`).

#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use keyward_core::Pending;
use keyward_core::crypto::wipe_answer as wipe;
use keyward_core::crypto::{Cipher, NONCE_LEN};
use keyward_core::{Client, ClientError, Incoming, MemoryStore, Server, SessionId};
use keyward_testkit::test_config;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng as _};
use secp256k1::{PublicKey, SecretKey};
use serde_json::{Value, json};

/// A server and one client with a session on it.
struct Session {
    server: Server,
    client: Client,
    session: Option<SessionId>,
}

impl Session {
    fn new(seed: u8) -> Self {
        let server = Server::new(test_config(), Box::new(MemoryStore::new()), [3; 32]);
        let mut client = Client::new([seed; 32]);
        assert!(!client.is_ready());
        let out = server.handle(Incoming {
            body: &client.init_request(),
            session: None,
            recent: None,
            principal: &keyward_core::Principal::local(),
            now_ms: 1,
        });
        assert!(!client.is_ready(), "an init request alone makes no key");
        client.handle_init_answer(&out.body).unwrap();
        assert!(client.is_ready());
        Self { server, client, session: out.session }
    }

    /// The server's raw answer to a sealed body.
    fn send(&self, body: &[u8]) -> Vec<u8> {
        let incoming = Incoming {
            body,
            session: self.session,
            recent: None,
            principal: &keyward_core::Principal::local(),
            now_ms: 10,
        };
        self.server.handle(incoming).body
    }

    /// Seals `list_wallets`: the sealed body and its pending answer.
    fn seal(&mut self) -> (Vec<u8>, Pending) {
        self.client.seal("list_wallets", json!({})).unwrap()
    }

    /// Seals `list_wallets` and returns the server's answer to it (not opened yet).
    fn call(&mut self) -> (Vec<u8>, Pending) {
        let (body, pending) = self.seal();
        (self.send(&body), pending)
    }

    fn cipher(&self) -> Cipher {
        Cipher::new(self.client.session_key().unwrap())
    }

    /// The outer id, the nonce, the body_enc and the decrypted inner request of a sealed body.
    fn unseal(&self, body: &[u8]) -> (u64, String, String, Value) {
        let request: Value = serde_json::from_slice(body).unwrap();
        let nonce = request["params"]["nonce"].as_str().unwrap().to_owned();
        let body_enc = request["params"]["body_enc"].as_str().unwrap().to_owned();
        let plaintext = self.cipher().open(&nonce_bytes(&nonce), &body_enc).unwrap();
        (request["id"].as_u64().unwrap(), nonce, body_enc, serde_json::from_slice(&plaintext).unwrap())
    }

    /// Opens an earlier `answer` as the answer to a new call, its outer id rewritten to the new one.
    fn replay(&mut self, answer: &[u8]) -> Result<Value, ClientError> {
        let (body, pending) = self.seal();
        let (outer_id, ..) = self.unseal(&body);
        self.client.open_raw(pending, &edit(answer, |v| v["id"] = json!(outer_id)))
    }

    /// An envelope answer `{"id": outer_id, "result": {"Ok": {nonce, body_enc}}}` of `inner`,
    /// sealed under the session key with `nonce`.
    fn craft(&self, outer_id: u64, nonce: [u8; NONCE_LEN], inner: &Value) -> Vec<u8> {
        let body_enc = self.cipher().seal(&nonce, &serde_json::to_vec(inner).unwrap());
        let answer = json!({
            "jsonrpc": "2.0",
            "id": outer_id,
            "result": {"Ok": {"nonce": hex::encode(nonce), "body_enc": body_enc}},
        });
        serde_json::to_vec(&answer).unwrap()
    }
}

fn nonce_bytes(text: &str) -> [u8; NONCE_LEN] {
    hex::decode(text).unwrap().try_into().unwrap()
}

fn edit(body: &[u8], change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(body).unwrap();
    change(&mut value);
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn an_honest_call_opens() {
    let mut s = Session::new(7);
    let (answer, pending) = s.call();
    assert_eq!(s.client.open(pending, &answer), Ok(json!([])));
}

#[test]
fn is_ready_only_once_the_shared_key_exists() {
    let mut client = Client::new([5; 32]);
    assert!(!client.is_ready());
    assert_eq!(client.seal("list_wallets", json!({})).unwrap_err(), ClientError::NotInitialized);
    let _ = client.init_request();
    assert!(!client.is_ready());
    // `Session::new` checks the rest: ready after `handle_init_answer`.
    let s = Session::new(5);
    assert!(s.client.is_ready());
}

#[test]
fn debug_texts_name_the_ids_and_readiness_and_no_secret() {
    let mut client = Client::new([6; 32]);
    assert_eq!(format!("{client:?}"), "Client { ready: false, .. }");
    let mut s = Session::new(6);
    assert_eq!(format!("{:?}", s.client), "Client { ready: true, .. }");

    let (body, pending) = s.seal();
    let (outer_id, _, _, inner) = s.unseal(&body);
    let inner_id = inner["id"].as_u64().unwrap();
    assert_eq!((inner_id, outer_id), (2, 3));
    assert_eq!(format!("{pending:?}"), "Pending { outer_id: 3, inner_id: 2 }");

    // A re-keying request's pending answer holds a secret key; its Debug text is the same shape.
    let (_, rekey) = s.client.seal_reinit().unwrap();
    assert_eq!(format!("{rekey:?}"), "Pending { outer_id: 5, inner_id: 4 }");
    let key = hex::encode(s.client.session_key().unwrap().expose());
    assert!(!format!("{:?} {rekey:?} {pending:?}", s.client).contains(&key));
    let _ = client.init_request();
    assert_eq!(format!("{client:?}"), "Client { ready: false, .. }");
}

#[test]
fn an_envelope_without_nonce_or_body_enc_is_malformed_by_name() {
    let mut s = Session::new(8);
    let (answer, pending) = s.call();
    let answer = edit(&answer, |v| {
        v["result"]["Ok"].as_object_mut().unwrap().remove("nonce").unwrap();
    });
    assert_eq!(s.client.open_raw(pending, &answer), Err(ClientError::Malformed("no 'nonce'".into())));

    let (answer, pending) = s.call();
    let answer = edit(&answer, |v| {
        v["result"]["Ok"].as_object_mut().unwrap().remove("body_enc").unwrap();
    });
    assert_eq!(s.client.open_raw(pending, &answer), Err(ClientError::Malformed("no 'body_enc'".into())));

    // A body_enc that is no string is named without quotes.
    let (answer, pending) = s.call();
    let answer = edit(&answer, |v| v["result"]["Ok"]["body_enc"] = json!(5));
    assert_eq!(s.client.open_raw(pending, &answer), Err(ClientError::Malformed("body_enc".into())));
}

#[test]
fn the_general_path_checks_the_outer_id_unless_the_answer_is_an_error() {
    let mut s = Session::new(9);

    // The outer id as a string: the typed parse fails, the general path must refuse the id.
    let (answer, pending) = s.call();
    let answer = edit(&answer, |v| v["id"] = json!(v["id"].to_string()));
    assert_eq!(s.client.open_raw(pending, &answer), Err(ClientError::IdMismatch));

    // The right id but a number as nonce: past the id check, refused for the nonce.
    let (answer, pending) = s.call();
    let answer = edit(&answer, |v| v["result"]["Ok"]["nonce"] = json!(12));
    assert_eq!(s.client.open_raw(pending, &answer), Err(ClientError::Malformed("nonce".into())));

    // A plaintext error carries whatever id (here another one): it is the error that comes back.
    let (_, pending) = s.seal();
    let error = json!({"jsonrpc": "2.0", "id": 4242, "error": {"code": -32600, "message": "Invalid request"}});
    assert_eq!(
        s.client.open_raw(pending, &serde_json::to_vec(&error).unwrap()),
        Err(ClientError::Rpc { code: -32600, message: "Invalid request".into() })
    );
    let (body, pending) = s.seal();
    let (outer_id, ..) = s.unseal(&body);
    let error = json!({"jsonrpc": "2.0", "id": outer_id, "error": {"code": -32001, "message": "busy"}});
    assert_eq!(
        s.client.open_raw(pending, &serde_json::to_vec(&error).unwrap()),
        Err(ClientError::Rpc { code: -32001, message: "busy".into() })
    );

    // The untouched answers still open (nothing above was remembered or broke the session).
    let (answer, pending) = s.call();
    assert_eq!(s.client.open(pending, &answer), Ok(json!([])));
}

#[test]
fn a_replayed_answer_is_stale() {
    let mut s = Session::new(10);
    let (first, pending) = s.call();
    assert_eq!(s.client.open(pending, &first), Ok(json!([])));

    // The first answer, its outer id rewritten to the next call's.
    assert_eq!(s.replay(&first), Err(ClientError::StaleNonce));
}

#[test]
fn a_reflected_request_is_stale() {
    let mut s = Session::new(11);
    let (body, pending) = s.seal();
    let (outer_id, nonce, body_enc, inner) = s.unseal(&body);
    assert_eq!(inner["method"], "list_wallets");
    let reflection =
        json!({"jsonrpc": "2.0", "id": outer_id, "result": {"Ok": {"nonce": nonce, "body_enc": body_enc}}});
    assert_eq!(s.client.open_raw(pending, &serde_json::to_vec(&reflection).unwrap()), Err(ClientError::StaleNonce));
}

#[test]
fn the_oldest_remembered_nonce_is_still_refused() {
    let mut s = Session::new(12);
    let (first, pending) = s.call();
    assert_eq!(s.client.open(pending, &first), Ok(json!([])));
    let (second, pending) = s.call();
    assert_eq!(s.client.open(pending, &second), Ok(json!([])));

    for replayed in [&first, &second] {
        assert_eq!(s.replay(replayed), Err(ClientError::StaleNonce));
    }
}

#[test]
fn inner_answers_must_carry_the_inner_id_unless_they_are_unattributed_errors() {
    let mut s = Session::new(13);
    let mut fresh = 0xa0u8;
    let mut check = |s: &mut Session, inner: &dyn Fn(u64) -> Value| {
        let (body, pending) = s.seal();
        let (outer_id, _, _, request) = s.unseal(&body);
        let inner = inner(request["id"].as_u64().unwrap());
        fresh += 1;
        let answer = s.craft(outer_id, [fresh; NONCE_LEN], &inner);
        s.client.open_raw(pending, &answer).map(|got| {
            assert_eq!(got, inner);
            got
        })
    };

    // The crafting is right: an answer with the inner id opens.
    let ok = check(&mut s, &|id| json!({"jsonrpc": "2.0", "id": id, "result": {"Ok": "fine"}}));
    assert_eq!(ok.map(|inner| inner["result"].clone()), Ok(json!({"Ok": "fine"})));

    // A result with a null id is no error: refused.
    let null_result = check(&mut s, &|_| json!({"jsonrpc": "2.0", "id": null, "result": {"Ok": "forged"}}));
    assert_eq!(null_result, Err(ClientError::IdMismatch));

    // An error with a null id (the server could not read the id): accepted as it is.
    let error = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}});
    let unattributed = check(&mut s, &|_| error.clone());
    assert_eq!(unattributed, Ok(error.clone()));

    // An error with another call's id: refused.
    let other = check(&mut s, &|id| json!({"jsonrpc": "2.0", "id": id + 100, "error": {"code": -1, "message": "x"}}));
    assert_eq!(other, Err(ClientError::IdMismatch));

    // `open` turns the unattributed error into its error.
    let (body, pending) = s.seal();
    let (outer_id, ..) = s.unseal(&body);
    let answer = s.craft(outer_id, [0x55; NONCE_LEN], &error);
    assert_eq!(s.client.open(pending, &answer), Err(ClientError::Rpc { code: -32700, message: "Parse error".into() }));
}

#[test]
fn wipe_empties_every_string() {
    let mut value = json!({
        "mnemonic": "fat twenty mean",
        "nested": {"token": "00ff", "list": ["a", 1, {"deep": "secret"}, null, true], "n": 2.5},
        "empty": "",
    });
    wipe(&mut value);
    assert_eq!(
        value,
        json!({
            "mnemonic": "",
            "nested": {"token": "", "list": ["", 1, {"deep": ""}, null, true], "n": 2.5},
            "empty": "",
        })
    );
    let mut text = json!("alone");
    wipe(&mut text);
    assert_eq!(text, json!(""));
}

/// The secret keys a client's randomness gives, in its draw order (`Client::new_secret`).
fn next_secret(rng: &mut ChaCha20Rng) -> [u8; 32] {
    loop {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        if SecretKey::from_secret_bytes(bytes).is_ok() {
            return bytes;
        }
    }
}

fn public_hex(secret: [u8; 32]) -> String {
    hex::encode(PublicKey::from_secret_key(&SecretKey::from_secret_bytes(secret).unwrap()).serialize())
}

#[cfg(target_os = "linux")]
mod freed {
    use std::io::{Read, Seek, SeekFrom};

    /// A value with room around it, in this order: its secret lies well past the allocator's list
    /// pointers at the start of a freed block and before the next block's header at its end, and
    /// the block is larger than glibc's tcache and fastbin sizes (and far below the mmap threshold).
    #[repr(C)]
    pub struct Padded<T> {
        front: [u8; PAD],
        pub value: T,
        back: [u8; PAD],
    }

    const PAD: usize = 1024;

    impl<T> Padded<T> {
        pub fn boxed(value: T) -> Box<Self> {
            Box::new(Self { front: [0; PAD], value, back: [0; PAD] })
        }
    }

    fn offsets(block: &[u8], secret: &[u8; 32]) -> Vec<usize> {
        block.windows(secret.len()).enumerate().filter(|(_, w)| w == secret).map(|(i, _)| i).collect()
    }

    /// Where `secret` lies in the box's block while it lives, and where after the box is dropped.
    pub fn live_and_freed<T>(boxed: Box<Padded<T>>, secret: &[u8; 32]) -> (Vec<usize>, Vec<usize>) {
        let size = std::mem::size_of::<Padded<T>>();
        assert!(size > 2 * PAD);
        let mut mem = std::fs::File::open("/proc/self/mem").expect("open /proc/self/mem");
        let mut read = vec![0u8; size];
        let address = std::ptr::from_ref::<Padded<T>>(&boxed) as usize;
        let mut read_block = |into: &mut [u8]| {
            mem.seek(SeekFrom::Start(u64::try_from(address).unwrap())).unwrap();
            mem.read_exact(into).expect("the block is mapped");
        };
        read_block(&mut read);
        let live = offsets(&read, secret);
        drop(boxed);
        read_block(&mut read);
        let freed = offsets(&read, secret);
        drop(read);
        (live, freed)
    }

    /// Whether every offset lies within the padded value.
    pub fn inside_value<T>(found: &[usize]) -> bool {
        found.iter().all(|&at| at >= PAD && at + 32 <= PAD + std::mem::size_of::<T>())
    }
}

/// A client dropped between `init_request` and `handle_init_answer` erases its ECDH secret.
#[cfg(target_os = "linux")]
#[test]
fn a_dropped_client_leaves_no_init_secret() {
    let seed = [0x21; 32];
    // Built before the test draws the secret: the box is moved in from the stack with the
    // uninitialized bytes of the empty fields, which must not be old copies of the secret.
    let mut boxed = freed::Padded::boxed(Client::new(seed));
    let secret = next_secret(&mut ChaCha20Rng::from_seed(seed));
    let request: Value = serde_json::from_slice(&boxed.value.init_request()).unwrap();
    assert_eq!(request["params"]["ecdh_pubkey"], public_hex(secret), "the test draws the client's secret");

    let (live, freed) = freed::live_and_freed(boxed, &secret);
    assert_eq!(live.len(), 1, "the live client holds its secret once: {live:?}");
    assert!(freed::inside_value::<Client>(&live));
    assert_eq!(freed, Vec::<usize>::new(), "a dropped Client left its init secret in freed memory");
}

/// A re-keying request's pending answer, dropped unopened, erases its new ECDH secret.
#[cfg(target_os = "linux")]
#[test]
fn a_dropped_pending_leaves_no_rekey_secret() {
    let seed = [0x22; 32];
    let mut rng = ChaCha20Rng::from_seed(seed);
    let _init = next_secret(&mut rng);
    let secret = next_secret(&mut rng);

    let mut s = Session::new(0x22);
    let (body, pending) = s.client.seal_reinit().unwrap();
    let (_, _, _, inner) = s.unseal(&body);
    assert_eq!(inner["method"], "init_secure_api");
    assert_eq!(inner["params"]["ecdh_pubkey"], public_hex(secret), "the test draws the client's new secret");

    let (live, freed) = freed::live_and_freed(freed::Padded::boxed(pending), &secret);
    assert_eq!(live.len(), 1, "the live pending answer holds its secret once: {live:?}");
    assert!(freed::inside_value::<Pending>(&live));
    assert_eq!(freed, Vec::<usize>::new(), "a dropped Pending left its re-keying secret in freed memory");
}
