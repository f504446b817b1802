//! A whole encrypted `accounts` call in process, and the floor of its parts, in one run.
//!
//! * `call/full_round_trip`: client seal → server handle → client open.
//! * `call/server_handle`: the server's share only (requests are sealed outside the timing).
//! * `floor/aes_gcm_seal_open`: AES-256-GCM seal + open of the request and answer plaintext sizes.
//! * `floor/json_parse_serialize`: serde_json parse of the inner request + serialize of the answer.
//!
//! `cargo bench -p keyward-core --bench call`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use keyward_core::envelope::Cipher;
use keyward_core::secret::SharedKey;
use keyward_core::seed_record::KdfParams;
use keyward_core::session::SessionLimits;
use keyward_core::{Client, Incoming, MemoryStore, Server, ServerConfig};
use serde_json::{Value, json};

fn setup() -> (Server, Client, Value) {
    let config = ServerConfig {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        sessions: SessionLimits { max_requests: u32::MAX, ..SessionLimits::default() },
        ..ServerConfig::default()
    };
    let server = Server::new(config, Box::new(MemoryStore::new()), [1; 32]);
    let mut client = Client::new([2; 32]);
    let answer = server.handle(Incoming { body: &client.init_request(), session: None, now_ms: 0 });
    client.handle_init_answer(&answer.body).expect("init");
    let call = |client: &mut Client, method: &str, params: Value| {
        let (body, pending) = client.seal(method, params).expect("seal");
        let answer = server.handle(Incoming { body: &body, session: None, now_ms: 0 });
        client.open(pending, &answer.body).expect("call")
    };
    call(&mut client, "create_wallet", json!({"name": null, "mnemonic": null, "mnemonic_length": 32, "password": "p"}));
    let token = call(&mut client, "open_wallet", json!({"name": null, "password": "p"}));
    (server, client, token)
}

fn bench(c: &mut Criterion) {
    let (server, mut client, token) = setup();
    let mut group = c.benchmark_group("call");
    group.bench_function("full_round_trip", |b| {
        b.iter(|| {
            let (body, pending) = client.seal("accounts", json!({"token": token})).expect("seal");
            let answer = server.handle(Incoming { body: &body, session: None, now_ms: 0 });
            black_box(client.open(pending, &answer.body).expect("accounts"))
        })
    });
    group.bench_function("server_handle", |b| {
        b.iter_batched(
            || client.seal("accounts", json!({"token": token})).expect("seal"),
            |(body, _pending)| black_box(server.handle(Incoming { body: &body, session: None, now_ms: 0 })),
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
    floor.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
