//! The cost of a new connection: handshake, `init_secure_api` and a first call, next to the echo's
//! handshake and two exchanges of the same sizes.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::floors::Bodies;
use super::link::{Endpoint, Session};
use super::plan::{Transport, answer_ok, call_params};

/// New-connection cost: handshake, then init + first call (echo: the same two exchanges).
#[derive(Debug, Clone)]
pub(super) struct NewConnection {
    pub(super) transport: Transport,
    pub(super) keyward_handshake: Vec<f64>,
    pub(super) keyward_total: Vec<f64>,
    pub(super) echo_handshake: Vec<f64>,
    pub(super) echo_total: Vec<f64>,
    pub(super) errors: u64,
    pub(super) examples: Vec<String>,
}

pub(super) async fn new_connections(
    keyward: &Endpoint,
    echo: &Endpoint,
    token: &str,
    bodies: &Bodies,
    count: usize,
) -> NewConnection {
    let mut result = NewConnection {
        transport: keyward.transport,
        keyward_handshake: Vec::new(),
        keyward_total: Vec::new(),
        echo_handshake: Vec::new(),
        echo_total: Vec::new(),
        errors: 0,
        examples: Vec::new(),
    };
    let mut closing = JoinSet::new();
    let error = |result: &mut NewConnection, e: anyhow::Error| {
        result.errors += 1;
        if result.examples.len() < 3 {
            result.examples.push(format!("{e:#}"));
        }
    };
    for _ in 0..count {
        // Owner API: handshake, init_secure_api, accounts.
        let t0 = Instant::now();
        let attempt = async {
            let link = keyward.link().await?;
            let t1 = Instant::now();
            let mut session = Session::open(link).await?;
            let value = session.call("accounts", call_params(0, token)).await?;
            anyhow::ensure!(answer_ok(0, &value), "accounts: unexpected answer");
            Ok::<_, anyhow::Error>((t1, Instant::now(), session))
        };
        match attempt.await {
            Ok((t1, t2, session)) => {
                result.keyward_handshake.push((t1 - t0).as_secs_f64() * 1e6);
                result.keyward_total.push((t2 - t0).as_secs_f64() * 1e6);
                closing.spawn(session.close());
            }
            Err(e) => error(&mut result, e),
        }
        // Echo: handshake, an init-sized exchange, an accounts-sized exchange.
        let t0 = Instant::now();
        let attempt = async {
            let mut conn = echo.echo().await?;
            let t1 = Instant::now();
            conn.exchange(&bodies.init).await?;
            conn.exchange(&bodies.calls[0]).await?;
            Ok::<_, anyhow::Error>((t1, Instant::now(), conn))
        };
        match attempt.await {
            Ok((t1, t2, conn)) => {
                result.echo_handshake.push((t1 - t0).as_secs_f64() * 1e6);
                result.echo_total.push((t2 - t0).as_secs_f64() * 1e6);
                closing.spawn(conn.close());
            }
            Err(e) => error(&mut result, e),
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), async { while closing.join_next().await.is_some() {} }).await;
    closing.detach_all();
    result
}
