//! The core's hot path in process, and the floor of its parts, in one run.
//!
//! * `call/full_round_trip`: client seal → server handle → client open of `accounts`.
//! * `call/server_handle`: the server's share of `accounts` (requests are sealed outside the timing).
//! * `call/server_handle_registered`: `call/server_handle` by a registered client (`dashboard`,
//!   owner) instead of the built-in `local`: the registry look-ups of its role (the role check and
//!   the principal binding cost the same for both).
//! * `call/server_handle_sign`: the server's share of `sign_message` at `m/44h/0h/0h/0/0`.
//! * `call/server_handle_init`: a plaintext `init_secure_api` (key pair + ECDH + a new session).
//! * `client/seal`, `client/open`: the client's two halves of `accounts`.
//! * `floor/aes_gcm_seal_open`: AES-256-GCM seal + open of the request and answer plaintext sizes.
//! * `floor/json_parse_serialize`: serde_json parse of the inner request + serialize of the answer.
//! * `floor/ecdsa_sign`: one secp256k1 ECDSA signature, the part of `sign_message` no cache removes.
//! * `floor/derive_sign_uncached`: BIP32 derivation of the path + signature + public key, nothing cached.
//!
//! `cargo bench -p keyward-core --bench call`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use keyward_core::SessionLimits;
use keyward_core::crypto;
use keyward_core::crypto::Cipher;
use keyward_core::crypto::SharedKey;
use keyward_core::store::KdfParams;
use keyward_core::{Client, Incoming, MemoryStore, Server, ServerConfig};
use serde_json::{Value, json};

const SIGN_PATH: &str = "m/44h/0h/0h/0/0";

fn setup() -> (Server, Client, Value) {
    let config = ServerConfig {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        sessions: SessionLimits { max_requests: u32::MAX, max_sessions: 1 << 20, ..SessionLimits::default() },
        ..ServerConfig::default()
    };
    let server = Server::new(config, Box::new(MemoryStore::new()), [1; 32]);
    let mut client = Client::new([2; 32]);
    let answer = server.handle(Incoming {
        body: &client.init_request(),
        session: None,
        recent: None,
        principal: &keyward_core::Principal::local(),
        now_ms: 0,
    });
    client.handle_init_answer(&answer.body).expect("init");
    let call = |client: &mut Client, method: &str, params: Value| {
        let (body, pending) = client.seal(method, params).expect("seal");
        let answer = server.handle(Incoming {
            body: &body,
            session: None,
            recent: None,
            principal: &keyward_core::Principal::local(),
            now_ms: 0,
        });
        client.open(pending, &answer.body).expect("call")
    };
    call(&mut client, "create_wallet", json!({"name": null, "mnemonic": null, "mnemonic_length": 32, "password": "p"}));
    let token = call(&mut client, "open_wallet", json!({"name": null, "password": "p"}));
    (server, client, token)
}

fn bench(c: &mut Criterion) {
    let (server, mut client, token) = setup();
    let sign_params = json!({"token": token, "path": SIGN_PATH, "message": "a message of the length people sign"});
    let mut group = c.benchmark_group("call");
    group.bench_function("full_round_trip", |b| {
        b.iter(|| {
            let (body, pending) = client.seal("accounts", json!({"token": token})).expect("seal");
            let answer = server.handle(Incoming {
                body: &body,
                session: None,
                recent: None,
                principal: &keyward_core::Principal::local(),
                now_ms: 0,
            });
            black_box(client.open(pending, &answer.body).expect("accounts"))
        })
    });
    group.bench_function("server_handle", |b| {
        b.iter_batched(
            || client.seal("accounts", json!({"token": token})).expect("seal"),
            |(body, _pending)| {
                black_box(server.handle(Incoming {
                    body: &body,
                    session: None,
                    recent: None,
                    principal: &keyward_core::Principal::local(),
                    now_ms: 0,
                }))
            },
            BatchSize::SmallInput,
        )
    });
    let mut registered = Client::new([4; 32]);
    let record = keyward_core::ClientRecord {
        name: "dashboard".into(),
        role: keyward_core::Role::Owner,
        identity: keyward_core::Identity::Uid { uid: 1000 },
        created_unix_ms: 0,
        revoked_unix_ms: None,
    };
    server.add_client(record).expect("registered");
    let as_registered = |body: &[u8]| {
        server.handle(Incoming {
            body,
            session: None,
            recent: None,
            principal: &keyward_core::Principal::new("dashboard"),
            now_ms: 0,
        })
    };
    let init = registered.init_request();
    registered.handle_init_answer(&as_registered(&init).body).expect("init");
    let (body, pending) = registered.seal("open_wallet", json!({"name": null, "password": "p"})).expect("seal");
    let own_token = registered.open(pending, &as_registered(&body).body).expect("open_wallet");
    group.bench_function("server_handle_registered", |b| {
        b.iter_batched(
            || registered.seal("accounts", json!({"token": own_token})).expect("seal"),
            |(body, _pending)| black_box(as_registered(&body)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("server_handle_sign", |b| {
        b.iter_batched(
            || client.seal("sign_message", sign_params.clone()).expect("seal"),
            |(body, _pending)| {
                black_box(server.handle(Incoming {
                    body: &body,
                    session: None,
                    recent: None,
                    principal: &keyward_core::Principal::local(),
                    now_ms: 0,
                }))
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("server_handle_init", |b| {
        b.iter_batched(
            || Client::new([3; 32]).init_request(),
            |body| {
                let answer = server.handle(Incoming {
                    body: &body,
                    session: None,
                    recent: None,
                    principal: &keyward_core::Principal::local(),
                    now_ms: 0,
                });
                if let Some(id) = answer.session {
                    server.drop_session(&id);
                }
                black_box(answer)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("client");
    group.bench_function("seal", |b| {
        b.iter(|| black_box(client.seal("accounts", json!({"token": token})).expect("seal")))
    });
    let shared = std::cell::RefCell::new(&mut client);
    group.bench_function("open", |b| {
        b.iter_batched(
            || {
                let (body, pending) = shared.borrow_mut().seal("accounts", json!({"token": token})).expect("seal");
                (
                    pending,
                    server
                        .handle(Incoming {
                            body: &body,
                            session: None,
                            recent: None,
                            principal: &keyward_core::Principal::local(),
                            now_ms: 0,
                        })
                        .body,
                )
            },
            |(pending, answer)| black_box(shared.borrow_mut().open(pending, &answer).expect("accounts")),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    // The same sizes as the call above: the inner request and the inner answer.
    let request =
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "method": "accounts", "id": 1, "params": {"token": token}}))
            .expect("json");
    let answer = serde_json::to_vec(&json!({"id": 1, "jsonrpc": "2.0", "result": {"Ok": [{"label": "default", "path": "0200000000000000000000000000000000"}]}}))
        .expect("json");
    let answer_value: Value = serde_json::from_slice(&answer).expect("json");
    let cipher = Cipher::new(&SharedKey::from_bytes([7; 32]));
    let master = crypto::master_from_seed(&[5; 64]);
    let path = crypto::parse_path(SIGN_PATH).expect("path");
    let key = crypto::derive(&master, &path).expect("derive");
    let mut floor = c.benchmark_group("floor");
    floor.bench_function("aes_gcm_seal_open", |b| {
        b.iter(|| {
            let nonce = [3; 12];
            let sealed_request = cipher.seal(&nonce, black_box(&request));
            let opened = cipher.open(&nonce, &sealed_request).expect("opens");
            let sealed_answer = cipher.seal(&nonce, black_box(&answer));
            black_box((opened, cipher.open(&nonce, &sealed_answer).expect("opens")))
        })
    });
    floor.bench_function("json_parse_serialize", |b| {
        b.iter(|| {
            let parsed: Value = serde_json::from_slice(black_box(&request)).expect("json");
            let written = serde_json::to_vec(black_box(&answer_value)).expect("json");
            black_box((parsed, written))
        })
    });
    floor.bench_function("ecdsa_sign", |b| {
        b.iter(|| black_box(crypto::sign(&key, black_box(b"message")).expect("sign")))
    });
    floor.bench_function("derive_sign_uncached", |b| {
        b.iter(|| {
            let key = crypto::derive(&master, black_box(&path)).expect("derive");
            black_box((crypto::sign(&key, b"message").expect("sign"), crypto::public_key(&key).expect("public")))
        })
    });
    floor.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
