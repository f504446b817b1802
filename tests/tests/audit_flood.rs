//! No client can flush the audit log: a reader that alternates refused methods for a minute, as
//! fast as four sessions go, against a live `keyward serve` whose log keeps only 200 records, adds
//! at most 100 records, and the owner's `get_mnemonic` from before is still there and verifies.
//! (Before refusals were coalesced per class, each alternating refusal was a record: the reader
//! wrote thousands a second and pushed the owner's record out within a second.)
#![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keyward::tls;
use keyward_core::audit::{Anchor, AuditRecord, verify};
use keyward_tests::{Session, Target, runtime, start_with_config};
use serde_json::{Value, json};

const CONFIG: &str = "[kdf]\nm_cost_kib = 64\nt_cost = 1\np_cost = 1\n[audit]\nmax_records = 200\n";

/// How long the reader floods: the minute.
const FLOOD: Duration = Duration::from_secs(60);

/// The whole retained log, read page by page as the owner: anchor, head, records.
async fn read_log(owner: &mut Session) -> (Anchor, Anchor, Vec<AuditRecord>) {
    let mut records: Vec<AuditRecord> = Vec::new();
    let mut after = 0;
    loop {
        let page = owner.ok("audit_log", json!({"after": after, "limit": null})).await;
        let anchor: Anchor = serde_json::from_value(page["anchor"].clone()).unwrap();
        let head: Anchor = serde_json::from_value(page["head"].clone()).unwrap();
        let page: Vec<AuditRecord> = serde_json::from_value(page["records"].clone()).unwrap();
        match page.last() {
            Some(last) if last.seq < head.seq => {
                after = last.seq;
                records.extend(page);
            }
            _ => {
                records.extend(page.into_iter().filter(|r| r.seq <= head.seq));
                return (anchor, head, records);
            }
        }
    }
}

#[test]
fn a_reader_alternating_refusals_for_a_minute_cannot_push_the_owners_record_out() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("kw");
        let running = start_with_config(&data, CONFIG).await;
        let addr = running.https.unwrap();
        let owner_tls = tls::client_config(&keyward::serve::tls_dir(&data)).unwrap();
        let owner_target = Target::Https { addr, tls: owner_tls };
        let mut owner = Session::open(&owner_target, 1, true).await;
        let create = json!({"name": "w", "mnemonic": null, "mnemonic_length": 16, "password": "pw"});
        owner.ok("create_wallet", create).await;
        owner.ok("get_mnemonic", json!({"name": "w", "password": "pw"})).await;
        running.core.flush_audit();
        let (_, before, _) = read_log(&mut owner).await;

        let reader_tls = keyward_tests::registered_client(&running, &data, "flooder", keyward_core::Role::Reader);
        let calls = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut floods = Vec::new();
        for seed in 0..4u8 {
            let target = Target::Https { addr, tls: Arc::clone(&reader_tls) };
            let calls = Arc::clone(&calls);
            floods.push(tokio::spawn(async move {
                let mut session = Session::open(&target, 20 + seed, true).await;
                let refused = [
                    ("get_mnemonic", json!({"name": "w", "password": "x"})),
                    ("delete_wallet", json!({"name": "w", "password": "x"})),
                    ("change_password", json!({"name": "w", "old": "x", "new": "y"})),
                    ("list_clients", json!({})),
                    ("revoke_client", json!({"name": "default"})),
                    ("sign_message", json!({"token": "00", "path": "m/0", "message": "m"})),
                ];
                let mut n = usize::from(seed);
                while started.elapsed() < FLOOD {
                    let (method, params) = &refused[n % refused.len()];
                    let answer = session.call(method, params.clone()).await;
                    assert!(answer.is_err_and(|e| e.to_string().contains("Forbidden")), "{method} is refused");
                    calls.fetch_add(1, Ordering::Relaxed);
                    n += 1 + usize::from(seed);
                }
            }));
        }
        for flood in floods {
            flood.await.unwrap();
        }
        running.core.flush_audit();
        // (The owner's connection was idle for the minute: the server closed it.)
        let mut owner = Session::open(&owner_target, 2, true).await;
        let (anchor, head, records) = read_log(&mut owner).await;
        let calls = calls.load(Ordering::Relaxed);
        let added = head.seq - before.seq;
        eprintln!("{calls} refused calls in {:?} added {added} audit records", started.elapsed());
        assert!(calls > 1000, "the flood made {calls} calls");
        assert!(added <= 100, "{calls} refused calls added {added} records");
        let mnemonic = records.iter().find(|r| r.event.method == "get_mnemonic" && r.event.outcome == "ok");
        assert_eq!(mnemonic.map(|r| r.event.principal.as_str()), Some("default"), "the owner's record is kept");
        assert_eq!(verify(&records, anchor, head), Ok(records.len() as u64), "the log verifies");
        // Every refused call is counted in some record of the reader (after shutdown, the open
        // windows too).
        running.stop().await;
        let store = keyward_store::FjallStore::open(&data.join("store")).unwrap();
        let all = keyward_core::Store::read_audit(&store, 0, 10_000).unwrap();
        let counted: u64 =
            all.iter().filter(|r| r.event.principal == "flooder").map(|r| u64::from(r.event.count)).sum();
        assert_eq!(counted, calls, "every refused call is counted");
        let forbidden: Value = json!(all.iter().filter(|r| r.event.principal == "flooder").count());
        eprintln!("the reader's records: {forbidden}");
    });
}
