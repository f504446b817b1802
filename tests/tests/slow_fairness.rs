//! Issue 23, item 6, against a live `keyward serve` (in process, fjall on disk, HTTPS on
//! loopback): while four other clients (readers) flood the slow-call pool with `open_wallet`, the
//! owner's `open_wallet` takes at most 3× its time alone (medians of several calls; a ratio
//! measured within the run, so a fairness bound rather than a speed claim).
#![expect(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "a test fails by panicking, with the value in the message; a test reports what it measured"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyward_core::{ClientError, Role};
use keyward_tests::{Session, Target, registered_client, runtime, start_with_config};
use serde_json::json;

/// An Argon2id heavy enough that the KDF, not the round trip or the scheduler, is what is timed
/// (≈ 30 ms here; 4 MiB stays in cache, so two KDFs at once do not slow each other much), and the pool of a 2-core machine on any machine.
const CONFIG: &str = "[kdf]\nm_cost_kib = 4096\nt_cost = 8\np_cost = 1\n[slow_calls]\nthreads = 2\n";
/// Other clients, and the sessions each floods from at once (each its own connection).
const FLOODERS: usize = 4;
const SESSIONS_EACH: usize = 4;
/// Owner calls timed under the flood, and alone (half before the flood, half after: the machine
/// is shared, so "alone" is its pace over the whole run).
const SAMPLES: usize = 15;

async fn owner_opens(owner: &mut Session, count: usize) -> Vec<f64> {
    let mut times = Vec::new();
    for _ in 0..count {
        let started = Instant::now();
        assert!(owner.ok("open_wallet", json!({"name": "w", "password": "pw"})).await.is_string());
        times.push(started.elapsed().as_secs_f64());
    }
    times
}

/// Median and maximum.
fn summary(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() - 1])
}

#[test]
fn the_owners_open_wallet_keeps_its_pace_while_four_clients_flood_the_slow_pool() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("kw");
        let running = start_with_config(&data, CONFIG).await;
        let addr = running.https.unwrap();
        let owner_target =
            Target::Https { addr, tls: keyward::tls::client_config(&keyward::serve::tls_dir(&data)).unwrap() };
        let mut owner = Session::open(&owner_target, 1, true).await;
        owner
            .ok("create_wallet", json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"}))
            .await;
        let mut alone = owner_opens(&mut owner, SAMPLES / 2 + 1).await;

        let stop = Arc::new(AtomicBool::new(false));
        let mut flood = tokio::task::JoinSet::new();
        for f in 0..FLOODERS {
            let tls = registered_client(&running, &data, &format!("flooder{f}"), Role::Reader);
            for s in 0..SESSIONS_EACH {
                let (target, stop) = (Target::Https { addr, tls: Arc::clone(&tls) }, Arc::clone(&stop));
                flood.spawn(async move {
                    let mut session =
                        Session::open(&target, u8::try_from(10 + f * SESSIONS_EACH + s).unwrap(), true).await;
                    let (mut calls, mut busy) = (0u32, 0u32);
                    // Bounded: until the owner has measured, or 120 s.
                    let started = Instant::now();
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
                        // A made-up name costs the same KDF as a wallet and leaves nothing behind.
                        let name = format!("nobody{f}x{s}x{calls}");
                        match session.call("open_wallet", json!({"name": name, "password": "guess"})).await {
                            Err(ClientError::Rpc { message, .. }) if message.starts_with("Busy") => busy += 1,
                            Err(ClientError::Rpc { message, .. }) if message.contains("Error opening wallet") => {}
                            other => panic!("flood: {other:?}"),
                        }
                        calls += 1;
                    }
                    (calls, busy)
                });
            }
        }
        // Let the flood fill the pool.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (flooded, flooded_max) = summary(owner_opens(&mut owner, SAMPLES).await);
        stop.store(true, Ordering::Relaxed);
        let (mut calls, mut busy) = (0, 0);
        for (c, b) in flood.join_all().await {
            calls += c;
            busy += b;
        }
        alone.extend(owner_opens(&mut owner, SAMPLES / 2).await);
        let (alone, alone_max) = summary(alone);
        eprintln!(
            "owner's open_wallet, median (max) of {SAMPLES}: alone {:.0} ms ({:.0} ms), under {FLOODERS} flooders \
             {:.0} ms ({:.0} ms): {:.2}x; the flood made {calls} calls, {busy} answered Busy",
            alone * 1e3,
            alone_max * 1e3,
            flooded * 1e3,
            flooded_max * 1e3,
            flooded / alone
        );
        assert!(flooded <= 3.0 * alone, "the owner's open_wallet went from {alone:.3} s to {flooded:.3} s");
        running.stop().await;
    });
}
