//! What an unmodified V3 client costs the server: no session header, no re-key, its own
//! keep-alive connection, calling `accounts`, with no other session and then beside many idle
//! ones. Its session is found by trying keys, first the one its connection used last, so its cost
//! should not grow with other clients' sessions.

use std::time::{Duration, Instant};

use keyward_driver::{SecureSession, SessionOptions};
use keyward_http::{HttpClient, HttpTarget};
use serde_json::{Value, json};

use super::children::cpu_time;
use super::link::Endpoint;

/// One measurement.
#[derive(Debug, Clone)]
pub(super) struct V3Cost {
    pub(super) idle_sessions: usize,
    pub(super) calls: u64,
    pub(super) p50_us: f64,
    pub(super) server_cpu_us_per_call: f64,
}

/// A V3 client with an open wallet.
pub(super) struct V3Client {
    session: SecureSession<HttpClient>,
    token: Value,
}

impl V3Client {
    /// Connects over plain HTTP (as V3 clients do), makes and opens a wallet.
    pub(super) async fn start(endpoint: &Endpoint) -> anyhow::Result<Self> {
        let http = HttpClient::connect(endpoint.addr, &endpoint.name, HttpTarget::Plain).await?;
        let options = SessionOptions { names_session: false, rekey_after: 0, reinit_when_gone: false };
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        let mut session = SecureSession::open_with(http, seed, options).await?;
        let create = json!({"name": "v3", "mnemonic": null, "mnemonic_length": 16, "password": "v3"});
        session.call("create_wallet", create).await?;
        let token = session.call("open_wallet", json!({"name": "v3", "password": "v3"})).await?;
        Ok(Self { session, token })
    }

    /// Calls `accounts` for `duration`; the server's CPU time over the calls divided by their count.
    pub(super) async fn measure(
        &mut self,
        pid: u32,
        idle_sessions: usize,
        duration: Duration,
    ) -> anyhow::Result<V3Cost> {
        let mut times = Vec::new();
        let cpu_before = cpu_time(Some(pid));
        let start = Instant::now();
        while start.elapsed() < duration {
            let call = Instant::now();
            self.session.call("accounts", json!({"token": self.token})).await?;
            times.push(call.elapsed().as_secs_f64() * 1e6);
        }
        let cpu = cpu_time(Some(pid)).zip(cpu_before).map_or(0.0, |(after, before)| (after - before).as_secs_f64());
        times.sort_by(f64::total_cmp);
        let calls = times.len() as u64;
        Ok(V3Cost {
            idle_sessions,
            calls,
            p50_us: times.get(times.len() / 2).copied().unwrap_or(0.0),
            server_cpu_us_per_call: cpu * 1e6 / calls.max(1) as f64,
        })
    }
}
