//! The bodies of the fuzz targets in `fuzz/` (each target is one call into this module), kept here
//! so that `tests/regressions.rs` replays every saved crash and seed with plain `cargo test`.
//!
//! Every function panics only when keyward-core breaks a promise: a panic inside the core, an answer
//! that is not a JSON-RPC object, a codec that accepts what it must refuse or loses a round trip, or
//! (for [`op_sequence`]) any disagreement with the reference model.

use std::cell::RefCell;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keyward_core::SessionLimits;
use keyward_core::TokenLimits;
use keyward_core::crypto::{self, Cipher, Password, SharedKey, Token};
use keyward_core::store::{GrinWalletSeed, SeedRecord};
use keyward_core::{Client, ClientError};
use keyward_core::{Incoming, MemoryStore, Outgoing, Server, ServerConfig, SessionId};
use keyward_testkit::test_config;
use serde_json::{Value, json};

use crate::decode::decode_ops;
use crate::sut;

/// The fuzz targets, by name (the names of `fuzz/fuzz_targets/*.rs`).
pub const TARGETS: [&str; 9] = [
    "server_handle",
    "inner_request",
    "op_sequence",
    "seed_parsing",
    "codecs",
    "store_records",
    "native_framing",
    "stream_framing",
    "pairing_messages",
];

/// Runs the target `name` on one input.
pub fn run_target(name: &str, data: &[u8]) {
    match name {
        "server_handle" => server_handle(data),
        "inner_request" => inner_request(data),
        "op_sequence" => op_sequence(data),
        "seed_parsing" => seed_parsing(data),
        "codecs" => codecs(data),
        "store_records" => store_records(data),
        "native_framing" => native_framing(data),
        "stream_framing" => stream_framing(data),
        "pairing_messages" => pairing_messages(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// Plaintext error codes (section 12 of spec/protocol.md).
const PLAIN_CODES: [i64; 6] = [-32700, -32600, -32602, -32001, -32002, -32003];

/// Checks that an answer is one JSON-RPC object, `{"id","jsonrpc":"2.0"}` and a result or an error.
fn check_answer_shape(out: &Outgoing) -> Value {
    let answer = crate::answer::parse_answer(&out.body)
        .unwrap_or_else(|| panic!("answer is not JSON: {}", String::from_utf8_lossy(&out.body)));
    assert!(answer.is_object() && answer.get("id").is_some(), "not a JSON-RPC answer: {answer}");
    assert_eq!(answer["jsonrpc"], "2.0", "{answer}");
    let (result, error) = (answer.get("result"), answer.get("error"));
    assert!(result.is_some() != error.is_some(), "exactly one of result and error: {answer}");
    if let Some(error) = error {
        assert!(error["code"].is_i64() && error["message"].is_string(), "error object: {answer}");
    }
    answer
}

// ---------------------------------------------------------------------------------------------
// server_handle: arbitrary bodies

struct HandleFixture {
    server: Server,
    session: SessionId,
    now_ms: u64,
}

thread_local! {
    static HANDLE: RefCell<Option<HandleFixture>> = const { RefCell::new(None) };
}

fn handle_fixture() -> HandleFixture {
    let server = Server::new(test_config(), Box::new(MemoryStore::new()), [1; 32]);
    let mut client = Client::new([2; 32]);
    let out = server.handle(Incoming {
        body: &client.init_request(),
        session: None,
        recent: None,
        principal: &keyward_core::Principal::local(),
        now_ms: 1,
    });
    client.handle_init_answer(&out.body).expect("the fixture's init succeeds");
    HandleFixture { server, session: out.session.expect("a created session"), now_ms: 1 }
}

/// Target 1: any body, with no session id and with a live session's id. The answer is always one
/// JSON-RPC object; without the session key nothing but a plaintext `init_secure_api` succeeds.
pub fn server_handle(data: &[u8]) {
    HANDLE.with_borrow_mut(|fixture| {
        let fixture = fixture.get_or_insert_with(handle_fixture);
        for session in [None, Some(fixture.session)] {
            fixture.now_ms += 1;
            let out = fixture.server.handle(Incoming {
                body: data,
                session,
                recent: None,
                principal: &keyward_core::Principal::local(),
                now_ms: fixture.now_ms,
            });
            let answer = check_answer_shape(&out);
            match answer.get("error") {
                Some(error) => {
                    let code = error["code"].as_i64().unwrap_or_default();
                    assert!(PLAIN_CODES.contains(&code), "plaintext error code {code}: {answer}");
                    assert!(!out.created_session, "an error created a session");
                }
                None => {
                    // Only a plaintext init_secure_api can succeed without a session key.
                    assert!(out.created_session, "success without a session key: {answer}");
                    let key = answer["result"]["Ok"].as_str().unwrap_or_default();
                    assert!(crypto::parse_public_key(key).is_ok(), "init answer: {answer}");
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// inner_request: arbitrary inner bodies, sealed with a valid session key

/// The placeholder a fuzz input uses for the fixture's wallet token.
pub const TOKEN_PLACEHOLDER: &[u8] = b"$TOKEN";
/// The fixture wallet's name and password.
pub const FIXTURE_WALLET: (&str, &str) = ("fz", "pw");
/// Inputs after which the fixture is rebuilt (bounds the session's replay memory and the store).
const REBUILD_EVERY: u64 = 20_000;

struct InnerFixture {
    server: Server,
    client: Client,
    session: SessionId,
    token: String,
    now_ms: u64,
    inputs: u64,
}

thread_local! {
    static INNER: RefCell<Option<InnerFixture>> = const { RefCell::new(None) };
}

/// A server whose sessions and tokens live as long as the fuzzer runs.
fn long_lived_config() -> ServerConfig {
    let forever = u64::MAX / 4;
    ServerConfig {
        sessions: SessionLimits {
            max_sessions: 64,
            idle_ms: forever,
            lifetime_ms: forever,
            max_requests: 1 << 20,
            ..SessionLimits::default()
        },
        tokens: TokenLimits { idle_ms: forever, lifetime_ms: forever, ..TokenLimits::default() },
        ..test_config()
    }
}

impl InnerFixture {
    fn new() -> Self {
        let server = Server::new(long_lived_config(), Box::new(MemoryStore::new()), [3; 32]);
        let mut client = Client::new([4; 32]);
        let out = server.handle(Incoming {
            body: &client.init_request(),
            session: None,
            recent: None,
            principal: &keyward_core::Principal::local(),
            now_ms: 1,
        });
        client.handle_init_answer(&out.body).expect("the fixture's init succeeds");
        let session = out.session.expect("a created session");
        let mut fixture = Self { server, client, session, token: String::new(), now_ms: 1, inputs: 0 };
        let (name, password) = FIXTURE_WALLET;
        let create = json!({"name": name, "mnemonic": null, "mnemonic_length": 16, "password": password});
        fixture.call("create_wallet", create).expect("the fixture's wallet is created");
        assert!(fixture.reopen(), "the fixture's wallet opens");
        fixture
    }

    fn send(&mut self, body: &[u8]) -> Outgoing {
        self.now_ms += 1;
        self.server.handle(Incoming {
            body,
            session: Some(self.session),
            recent: None,
            principal: &keyward_core::Principal::local(),
            now_ms: self.now_ms,
        })
    }

    fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let (body, pending) = self.client.seal(method, params)?;
        let out = self.send(&body);
        self.client.open(pending, &out.body)
    }

    fn reopen(&mut self) -> bool {
        let (name, password) = FIXTURE_WALLET;
        match self.call("open_wallet", json!({"name": name, "password": password})) {
            Ok(Value::String(token)) => {
                self.token = token;
                true
            }
            _ => false,
        }
    }

    /// Whether the session still works and the token still opens the wallet; re-opens it if not.
    fn healthy(&mut self) -> bool {
        match self.call("accounts", json!({"token": self.token})) {
            Ok(_) => true,
            Err(ClientError::Rpc { code: -32099, .. }) => self.reopen(),
            Err(_) => false,
        }
    }
}

fn substitute(data: &[u8], token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut rest = data;
    while !rest.is_empty() {
        if rest.starts_with(TOKEN_PLACEHOLDER) {
            out.extend_from_slice(token.as_bytes());
            rest = &rest[TOKEN_PLACEHOLDER.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// Target 2: any inner body (with `$TOKEN` replaced by an open wallet's token), sealed under a live
/// session's key, so the input reaches dispatch and the lifecycle. The envelope is always accepted
/// and answered under the session key (or, for a non-JSON plaintext, with plaintext −32002).
pub fn inner_request(data: &[u8]) {
    INNER.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|f| f.inputs >= REBUILD_EVERY) {
            *slot = Some(InnerFixture::new());
        }
        let fixture = slot.as_mut().expect("just built");
        fixture.inputs += 1;
        let plaintext = substitute(data, &fixture.token);
        let (body, pending) = fixture.client.seal_raw(&plaintext, 0, None).expect("the fixture client is ready");
        let out = fixture.send(&body);
        let answer = check_answer_shape(&out);
        assert_eq!(out.session, Some(fixture.session), "answered by another session");
        match fixture.client.open_raw(pending, &out.body) {
            Ok(inner) => assert!(inner.is_object() || inner.is_array(), "inner answer {inner}"),
            Err(ClientError::IdMismatch) => {}
            // Decrypted under the session key, but an inner id outside serde_json's number range was
            // echoed verbatim (see `crate::answer`).
            Err(ClientError::Malformed(why)) if why == "inner answer is not JSON" => {}
            Err(ClientError::Rpc { code: -32002, message }) if message.contains("not UTF-8 JSON") => {}
            Err(other) => panic!("a sealed request was not answered under its key: {other}: {answer}"),
        }
        if !fixture.healthy() {
            *slot = None;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// op_sequence: the model test, driven by fuzz bytes

/// Target 3: the input decoded as a sequence of operations (see [`crate::decode`]) and run through
/// the reference model and the real server, with every check of the model test. The clients start
/// as `local`, the registered `owner` and `v3` ([`crate::model::Model::new`]); the principal ops
/// (`Become`, `Steal`, `StealReplay`) reach the other roles and the cross-principal paths.
pub fn op_sequence(data: &[u8]) {
    sut::run(&decode_ops(data));
}

// ---------------------------------------------------------------------------------------------
// seed_parsing

/// Target 4: seed records and grin `wallet.seed` files: parsing never panics, a parsed record
/// round-trips through its bytes, and opening (with cheap enough parameters) never panics.
pub fn seed_parsing(data: &[u8]) {
    if let Ok(record) = SeedRecord::from_bytes(data) {
        let again = SeedRecord::from_bytes(&record.to_bytes()).expect("a record's own bytes parse");
        assert_eq!(again, record, "a record round-trips through to_bytes");
        let kdf = record.kdf;
        // Bounded so that a record asking for a 1 GiB Argon2 run does not time the fuzzer out; the
        // bound on what a record may ask is checked in tests/codecs.rs.
        if kdf.m_cost_kib <= 1024 && kdf.t_cost <= 2 && kdf.p_cost <= 2 {
            let _ = record.open(&Password::from("pw"));
        }
    }
    if let Ok(seed) = GrinWalletSeed::from_bytes(data) {
        let _ = seed.open(&Password::from("testpass"));
    }
    if let Ok(value) = serde_json::from_slice::<Value>(data)
        && let Ok(seed) = GrinWalletSeed::from_json(&value)
    {
        let _ = seed.open(&Password::from("testpass"));
    }
}

// ---------------------------------------------------------------------------------------------
// codecs

/// Target 5: the text codecs (nonce, `body_enc`, public keys, key paths, session ids, tokens), the
/// client's answer parsing, and the AEAD round trip.
pub fn codecs(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    if let Ok(nonce) = crypto::parse_nonce(text) {
        assert!(text.len() >= 24 && text.len() <= 1024 && text.len() % 2 == 0, "nonce {text:?}");
        assert_eq!(hex::decode(&text[..24]).expect("hex").as_slice(), nonce.as_slice());
    }
    if let Ok(bytes) = crypto::decode_body(text) {
        assert_eq!(BASE64.encode(&bytes), text, "base64 is canonical");
    }
    if let Ok(key) = crypto::parse_public_key(text) {
        assert_eq!(crypto::parse_public_key(&hex::encode(key.serialize())), Ok(key));
    }
    if let Ok(path) = crypto::parse_path(text) {
        assert!(path.len() <= crypto::MAX_DEPTH);
        let mut again = String::from("m");
        for index in &path {
            let hardened = index & crypto::HARDENED != 0;
            again += &format!("/{}{}", index & !crypto::HARDENED, if hardened { "'" } else { "" });
        }
        assert_eq!(crypto::parse_path(&again), Ok(path), "{text:?}");
    }
    if let Some(id) = SessionId::parse(text) {
        assert_eq!(SessionId::parse(&id.to_string()), Some(id));
    }
    if let Some(token) = Token::from_hex(text) {
        assert_eq!(token.to_hex().as_str(), text.to_ascii_lowercase());
    }
    let mut client = Client::new([5; 32]);
    let _ = client.init_request();
    let _ = client.handle_init_answer(data);
    if data.len() >= 44 {
        let (key, rest) = data.split_at(32);
        let (nonce, plaintext) = rest.split_at(12);
        let cipher = Cipher::new(&SharedKey::from_bytes(key.try_into().expect("32 bytes")));
        let nonce: [u8; 12] = nonce.try_into().expect("12 bytes");
        let body = cipher.seal(&nonce, plaintext);
        assert_eq!(cipher.open(&nonce, &body).expect("round trip").as_slice(), plaintext);
        let mut damaged = BASE64.decode(&body).expect("base64");
        let at = usize::from(data[0]) % damaged.len();
        damaged[at] ^= 0x80;
        assert!(cipher.open_bytes(&nonce, &damaged).is_err(), "a flipped bit authenticates");
    }
}

/// The records the store keeps (`keyward-store`'s `clients` and `audit` keyspaces), read back from
/// arbitrary bytes: `ClientRecord::from_bytes` and `AuditRecord::from_bytes` never panic; whatever
/// they accept is a valid record that round-trips through `to_bytes`, and an accepted audit
/// record can be hashed (its chain checked).
pub fn store_records(data: &[u8]) {
    use keyward_core::audit::AuditRecord;
    use keyward_core::{ClientRecord, valid_client_name};
    if let Some(record) = ClientRecord::from_bytes(data) {
        assert!(valid_client_name(&record.name), "accepted an invalid client name: {:?}", record.name);
        let bytes = record.to_bytes();
        assert_eq!(ClientRecord::from_bytes(&bytes).as_ref(), Some(&record), "client record round trip");
    }
    if let Some(record) = AuditRecord::from_bytes(data) {
        let bytes = record.to_bytes();
        assert_eq!(AuditRecord::from_bytes(&bytes).as_ref(), Some(&record), "audit record round trip");
        let sealed = AuditRecord::seal(record.prev, record.seq, record.time_unix_ms, record.event.clone());
        assert_eq!(sealed.hash, sealed.expected_hash());
        assert_eq!(record.hash == record.expected_hash(), record.hash == sealed.hash);
        let _ = keyward_core::audit::verify(
            [&record],
            keyward_core::audit::Anchor::default(),
            keyward_core::audit::Anchor { seq: record.seq, hash: record.hash },
        );
    }
}

/// The browsers' native-messaging framing (`keyward native-host` reads it from standard input):
/// the input's first byte picks a limit and a chunk size, the rest arrives in such chunks. Every
/// message that comes out is what a plain reading of the stream gives, in order; the decoder never
/// asks for more than one frame's bytes; the end is clean exactly when no frame is cut.
pub fn native_framing(data: &[u8]) {
    use keyward_driver::native::{self, Decoder, NativeError, PREFIX_LEN};
    let Some((&first, stream)) = data.split_first() else { return };
    let max = usize::from(first & 0x0f) * 256;
    let chunk = usize::from(first >> 4) + 1;
    // The reference: read frames one after another.
    let mut expected = Vec::new();
    let mut at = 0;
    let mut too_large = false;
    while stream.len() - at >= PREFIX_LEN {
        let len = u32::from_ne_bytes(stream[at..at + PREFIX_LEN].try_into().unwrap_or_default()) as usize;
        if len > max {
            too_large = true;
            break;
        }
        if stream.len() - at - PREFIX_LEN < len {
            break;
        }
        expected.push(stream[at + PREFIX_LEN..at + PREFIX_LEN + len].to_vec());
        at += PREFIX_LEN + len;
    }
    let mut decoder = Decoder::new(max);
    let mut got = Vec::new();
    let mut fed = 0;
    let mut failed = false;
    'feed: while fed < stream.len() {
        let want = decoder.wanted().min(chunk);
        assert!(want >= 1, "the decoder asks for at least a byte");
        let end = (fed + want).min(stream.len());
        decoder.push(&stream[fed..end]);
        fed = end;
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    assert!(message.len() <= max, "a message above the limit came out");
                    got.push(message);
                }
                Ok(None) => break,
                Err(NativeError::TooLarge { .. }) => {
                    failed = true;
                    break 'feed;
                }
                Err(other) => panic!("next_message failed with {other:?}"),
            }
        }
    }
    assert_eq!(got, expected, "messages differ from a plain reading");
    assert_eq!(failed, too_large, "a length above the limit is refused exactly when there is one");
    if !failed {
        assert_eq!(decoder.finish().is_ok(), at == stream.len(), "a clean end exactly between frames");
    }
    for message in &got {
        if let Ok(frame) = native::encode(message) {
            assert_eq!(&frame[PREFIX_LEN..], &message[..], "encode round trip");
        }
        let _ = native::check_json(message);
    }
}

/// The driver's 4-byte big-endian framing (the Unix socket and the example TCP transport read it
/// with `frame::read_frame`): frames come out as a plain reading gives them, a length above the
/// limit is refused, a cut frame is `Truncated`, and nothing panics.
pub fn stream_framing(data: &[u8]) {
    use keyward_driver::frame::{self, FrameError, FrameLimits};
    thread_local! {
        static RUNTIME: Option<tokio::runtime::Runtime> =
            tokio::runtime::Builder::new_current_thread().enable_time().build().ok();
    }
    let Some((&first, stream)) = data.split_first() else { return };
    let max = usize::from(first) * 16;
    let limits =
        FrameLimits { max_bytes: max, idle: std::time::Duration::from_secs(5), io: std::time::Duration::from_secs(5) };
    RUNTIME.with(|runtime| {
        let Some(runtime) = runtime else { return };
        runtime.block_on(async {
            let mut reader = stream;
            let mut at = 0;
            loop {
                let result = frame::read_frame(&mut reader, limits).await;
                let left = stream.len() - at;
                match result {
                    Ok(None) => {
                        assert_eq!(left, 0, "a clean end only between frames");
                        return;
                    }
                    Ok(Some(body)) => {
                        let len = u32::from_be_bytes(stream[at..at + 4].try_into().unwrap_or_default()) as usize;
                        assert!(len <= max && body.len() == len && body == stream[at + 4..at + 4 + len]);
                        at += 4 + len;
                    }
                    Err(FrameError::TooLarge { len, .. }) => {
                        assert!(left >= 4 && len > max as u64, "refused a length within the limit");
                        return;
                    }
                    Err(FrameError::Truncated) => {
                        let cut = left < 4
                            || (u32::from_be_bytes(stream[at..at + 4].try_into().unwrap_or_default()) as usize)
                                > left - 4;
                        assert!(cut, "Truncated on a whole frame");
                        return;
                    }
                    Err(other) => panic!("read_frame failed with {other}"),
                }
            }
        });
    });
}

/// The pairing messages a server or a client reads from its peer: each parser takes any bytes;
/// a server with a fixed code answers any `Hello` it parses and checks any `Finish`, and a client
/// checks any `Reply` and opens any `Done`. With a wrong code nothing confirms.
pub fn pairing_messages(data: &[u8]) {
    use keyward_pairing::PairingCode;
    use keyward_pairing::protocol::{self, ClientStart, Done, Finish, Hello, Refusal, Reply, ServerExchange};
    let code = PairingCode::from_random([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    if let Ok(hello) = protocol::parse::<Hello>(data) {
        assert_eq!(protocol::parse::<Hello>(&protocol::to_bytes(&hello)).ok(), Some(hello.clone()), "hello round trip");
        if let Ok((server, _reply)) = ServerExchange::new(&code, &hello) {
            // A peer that only replays bytes cannot confirm.
            let forged = Finish { confirm: protocol::B64(hello.spake.0.clone()), sealed: hello.spake.clone() };
            assert!(server.request(&forged).is_err(), "a forged finish confirmed");
        }
    }
    if let Ok(reply) = protocol::parse::<Reply>(data) {
        let (client, _) = ClientStart::new(&code);
        assert!(client.confirm(&reply).is_err(), "a reply made without the client's message confirmed");
    }
    let (client, hello) = ClientStart::new(&code);
    let (server, reply) = ServerExchange::new(&code, &hello).unwrap_or_else(|_| unreachable!());
    if let Ok(finish) = protocol::parse::<Finish>(data) {
        assert!(server.request(&finish).is_err(), "an arbitrary finish confirmed");
    }
    if let Ok(done) = protocol::parse::<Done>(data) {
        let client = client.confirm(&reply).unwrap_or_else(|_| unreachable!());
        assert!(client.outcome(&done).is_err(), "an arbitrary done opened");
    }
    let _ = protocol::parse::<Refusal>(data);
    let _ = PairingCode::parse(&String::from_utf8_lossy(data));
}
