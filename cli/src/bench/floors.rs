//! What the bench does in its own process: the request bodies the echo floor sends, and the two
//! floors that are not an echo (the bare KDF under `open_wallet`, one ECDSA signature under
//! `sign_message`). The core's other in-process costs are `cargo bench -p keyward-core --bench call`.

use std::time::{Duration, Instant};

use anyhow::Context;
use keyward_core::SessionLimits;
use keyward_core::crypto::Password;
use keyward_core::store::KdfParams;
use keyward_core::{Client, Incoming, MemoryStore, Server, ServerConfig, crypto};
use serde_json::{Value, json};

use super::plan::{KINDS, answer_ok, call_params};
use super::stats::median;
use super::{SIGN_MESSAGE, SIGN_PATH};

/// Request bodies the echo floor sends: real sealed requests of the two calls, and a plaintext init.
#[derive(Debug, Clone)]
pub(super) struct Bodies {
    pub(super) calls: [Vec<u8>; 2],
    pub(super) answers: [usize; 2],
    pub(super) init: Vec<u8>,
}

/// Sets up an in-process server with one open wallet and returns a client's sealed requests of the
/// two calls (checked against the server's answers), so the echo floor sends bodies of real sizes.
pub(super) fn sealed_bodies() -> anyhow::Result<Bodies> {
    let config = ServerConfig {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        sessions: SessionLimits { max_requests: u32::MAX, max_sessions: 100_000, ..SessionLimits::default() },
        ..ServerConfig::default()
    };
    let server = Server::new(config, Box::new(MemoryStore::new()), [1; 32]);
    let handle = |body: &[u8]| {
        server.handle(Incoming {
            body,
            session: None,
            recent: None,
            principal: &keyward_core::Principal::local(),
            now_ms: 1,
        })
    };
    let mut client = Client::new([2; 32]);
    let init = client.init_request();
    let answer = handle(&init);
    client.handle_init_answer(&answer.body)?;
    let session = answer.session;
    let handle_named = |body: &[u8]| {
        server.handle(Incoming { body, session, recent: None, principal: &keyward_core::Principal::local(), now_ms: 1 })
    };
    let call = |client: &mut Client, method: &str, params: Value| -> anyhow::Result<Value> {
        let (body, pending) = client.seal(method, params)?;
        Ok(client.open(pending, &handle_named(&body).body)?)
    };
    let create = json!({"name": "bench", "mnemonic": null, "mnemonic_length": 16, "password": "bench"});
    call(&mut client, "create_wallet", create)?;
    let token = call(&mut client, "open_wallet", json!({"name": "bench", "password": "bench"}))?;
    let token = token.as_str().context("open_wallet gave no token")?.to_owned();

    let mut calls: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut answers = [0usize; 2];
    for kind in 0..2 {
        let (body, pending) = client.seal(KINDS[kind], call_params(kind, &token))?;
        let answer = handle_named(&body).body;
        let value = client.open(pending, &answer)?;
        anyhow::ensure!(answer_ok(kind, &value), "in process: {} gave an unexpected answer", KINDS[kind]);
        answers[kind] = answer.len();
        calls[kind] = body;
    }
    Ok(Bodies { calls, answers, init })
}

/// One secp256k1 ECDSA signature of the signing call's message, in µs (median of 11 batches): the
/// part of `sign_message` no transport or cache removes, measured in the same run as the echo so
/// that "sign vs echo+ECDSA" is a ratio of one run.
pub(super) fn ecdsa_sign_us(quick: bool) -> anyhow::Result<f64> {
    let budget = Duration::from_millis(if quick { 40 } else { 200 });
    let master = crypto::master_from_seed(&[5; 64]);
    let path = crypto::parse_path(SIGN_PATH).map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = crypto::derive(&master, &path).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(time_us(budget, || {
        std::hint::black_box(crypto::sign(&key, std::hint::black_box(SIGN_MESSAGE.as_bytes())).ok());
    }))
}

/// The default KDF (`KdfParams::DEFAULT`), `runs` times on the blocking pool, in ms each: the floor of
/// `open_wallet`.
pub(super) async fn bare_kdf_ms(runs: usize) -> anyhow::Result<Vec<f64>> {
    let mut kdf_ms = Vec::new();
    for _ in 0..runs {
        let took = tokio::task::spawn_blocking(|| {
            let start = Instant::now();
            let key = KdfParams::DEFAULT.derive(&Password::from("keyward bench"), &[7u8; 32]);
            (start.elapsed(), key.is_ok())
        })
        .await?;
        anyhow::ensure!(took.1, "the bare KDF failed");
        kdf_ms.push(took.0.as_secs_f64() * 1e3);
    }
    Ok(kdf_ms)
}

/// Median time of `f`, in µs, over 11 batches sized to about `budget` in all.
fn time_us(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut probe = 0u32;
    while start.elapsed() < budget / 50 || probe < 1 {
        f();
        probe += 1;
    }
    let each = start.elapsed().as_secs_f64() / f64::from(probe);
    let per_batch = ((budget.as_secs_f64() / 11.0 / each) as usize).max(1);
    let times: Vec<f64> = (0..11)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            start.elapsed().as_secs_f64() * 1e6 / per_batch as f64
        })
        .collect();
    median(&times)
}
