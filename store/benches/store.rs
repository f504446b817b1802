//! The lifecycle's slow calls on the fjall store with the default Argon2id parameters, next to the
//! bare KDF, in one run; and the store's own share (no KDF) for scale.
//!
//! * `kdf/argon2id_default`: one `KdfParams::DEFAULT` derivation (m = 64 MiB, t = 3, p = 4).
//! * `fjall_lifecycle/create_wallet`: a whole encrypted `create_wallet` call (one KDF, record file
//!   + durable batch), server and client in process.
//! * `fjall_lifecycle/open_wallet`: `open_wallet` (one KDF).
//! * `fjall_lifecycle/change_password`: `change_password` (two KDFs: check the old password, seal
//!   under the new one; new record file, durable batch, old file overwritten and removed).
//! * `store_only/*`: the same store work without any KDF (fsyncs dominate).
//!
//! `cargo bench -p keyward-store --bench store`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use keyward_core::SessionLimits;
use keyward_core::crypto::Password;
use keyward_core::store::KdfParams;
use keyward_core::store::{Account, Store, StoredWallet, WalletKey};
use keyward_core::{Client, Incoming, Server, ServerConfig};
use keyward_store::FjallStore;
use serde_json::{Value, json};

struct Lifecycle {
    server: Server,
    client: Client,
    now_ms: u64,
}

impl Lifecycle {
    fn new(data: &std::path::Path) -> Self {
        let config = ServerConfig {
            kdf: KdfParams::DEFAULT,
            sessions: SessionLimits { max_requests: u32::MAX, ..SessionLimits::default() },
            ..ServerConfig::default()
        };
        let store = FjallStore::open(data).expect("open the store");
        let server = Server::new(config, Box::new(store), [1; 32]);
        let mut client = Client::new([2; 32]);
        let answer = server.handle(Incoming {
            body: &client.init_request(),
            session: None,
            recent: None,
            principal: &keyward_core::Principal::local(),
            now_ms: 1,
        });
        client.handle_init_answer(&answer.body).expect("init");
        Self { server, client, now_ms: 1 }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.now_ms += 1;
        let (body, pending) = self.client.seal(method, params).expect("seal");
        let answer = self.server.handle(Incoming {
            body: &body,
            session: None,
            recent: None,
            principal: &keyward_core::Principal::local(),
            now_ms: self.now_ms,
        });
        self.client.open(pending, &answer.body).unwrap_or_else(|e| panic!("{method}: {e}"))
    }
}

fn create_params(name: &str, password: &str) -> Value {
    json!({"name": name, "mnemonic": null, "mnemonic_length": 32, "password": password})
}

fn bench(c: &mut Criterion) {
    let temp = tempfile::tempdir().expect("tempdir");

    let mut group = c.benchmark_group("kdf");
    group.sampling_mode(SamplingMode::Flat);
    let password = Password::from("correct horse battery staple");
    group.bench_function("argon2id_default", |b| {
        b.iter(|| black_box(KdfParams::DEFAULT.derive(&password, &[7; 16]).expect("derive")))
    });
    group.finish();

    let mut lifecycle = Lifecycle::new(&temp.path().join("lifecycle"));
    lifecycle.call("create_wallet", create_params("main", "a"));
    let mut group = c.benchmark_group("fjall_lifecycle");
    group.sampling_mode(SamplingMode::Flat);
    let mut created = 0u64;
    group.bench_function("create_wallet", |b| {
        b.iter(|| {
            created += 1;
            lifecycle.call("create_wallet", create_params(&format!("w{created}"), "pw"))
        })
    });
    group.bench_function("open_wallet", |b| {
        b.iter(|| lifecycle.call("open_wallet", json!({"name": "main", "password": "a"})))
    });
    let mut current = "a";
    group.bench_function("change_password", |b| {
        b.iter(|| {
            let next = if current == "a" { "b" } else { "a" };
            lifecycle.call("change_password", json!({"name": "main", "old": current, "new": next}));
            current = next;
        })
    });
    group.finish();

    let store = FjallStore::open(&temp.path().join("store-only")).expect("open the store");
    let key = WalletKey { dir: String::new(), name: "w".into() };
    let wallet =
        StoredWallet { seed_record: vec![b'r'; 271], accounts: vec![Account { label: "default".into(), index: 0 }] };
    store.create_wallet(&key, &wallet).expect("create");
    let mut group = c.benchmark_group("store_only");
    let mut flip = false;
    group.bench_function("replace_seed_record", |b| {
        b.iter(|| {
            let (old, new) = if flip { (b'x', b'r') } else { (b'r', b'x') };
            store.replace_seed_record(&key, &[old; 271], &[new; 271]).expect("replace");
            flip = !flip;
        })
    });
    let other = WalletKey { dir: String::new(), name: "other".into() };
    group.bench_function("create_then_delete_wallet", |b| {
        b.iter(|| {
            store.create_wallet(&other, &wallet).expect("create");
            store.delete_wallet(&other).expect("delete");
        })
    });
    group.bench_function("load_wallet", |b| b.iter(|| black_box(store.load_wallet(&key).expect("load"))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
