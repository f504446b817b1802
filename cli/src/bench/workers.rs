//! Load generation: workers (one connection and session each) that call the server under test or
//! the echo floor, run in interleaved slices per transport and concurrency.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::children::cpu_time;
use super::floors::Bodies;
use super::link::{EchoConn, Endpoint, Session};
use super::plan::{KINDS, Plan, Progress, Transport, What, answer_ok, call_params};
use super::report::report_cell;
use super::stats::{Cell, Samples, Tally, add_cpu};

/// A call that takes longer than this counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One load-generating worker: a connection that makes calls of kind 0 (accounts) or 1 (sign).
trait Worker: Send + 'static {
    /// Work done before a call's timing starts (a session re-init on a running server).
    fn prepare(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// One timed call.
    fn call(&mut self, kind: usize) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Closes the connection.
    fn finish(self) -> impl Future<Output = ()> + Send;
}

/// Calls on the server under test.
struct KeywardWorker {
    session: Session,
    token: Arc<str>,
    /// Re-init the session after this many requests (a running server's `max_requests`).
    reinit_after: u64,
}

impl Worker for KeywardWorker {
    async fn prepare(&mut self) -> anyhow::Result<()> {
        if self.session.requests >= self.reinit_after {
            self.session.init().await?;
        }
        Ok(())
    }

    async fn call(&mut self, kind: usize) -> anyhow::Result<()> {
        let value = self.session.call(KINDS[kind], call_params(kind, &self.token)).await?;
        anyhow::ensure!(answer_ok(kind, &value), "{}: unexpected answer", KINDS[kind]);
        Ok(())
    }

    async fn finish(self) {
        self.session.close().await;
    }
}

/// Calls on the echo floor.
struct EchoWorker {
    conn: EchoConn,
    bodies: Arc<Bodies>,
}

impl Worker for EchoWorker {
    async fn prepare(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn call(&mut self, kind: usize) -> anyhow::Result<()> {
        self.conn.exchange(&self.bodies.calls[kind]).await
    }

    async fn finish(self) {
        self.conn.close().await;
    }
}

/// Connects `concurrency` workers in parallel; failures are counted as errors.
async fn connect_workers<W, F, Fut>(concurrency: usize, connect: F) -> (Vec<W>, Samples)
where
    W: Worker,
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<W>> + Send + 'static,
{
    let mut set = JoinSet::new();
    for _ in 0..concurrency {
        set.spawn(connect());
    }
    let mut workers = Vec::with_capacity(concurrency);
    let mut samples = Samples::default();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(worker)) => workers.push(worker),
            Ok(Err(error)) => samples.error(&error.context("connect")),
            Err(error) => samples.error(&anyhow::anyhow!("connect task failed: {error}")),
        }
    }
    (workers, samples)
}

/// Runs every worker for `ramp` (not recorded), then for `measure`: the latencies of calls started in
/// the measured window, and the CPU time the server and the load generator spent in it. Gives the
/// workers back for the next slice.
async fn run_slice<W: Worker>(
    workers: Vec<W>,
    what: What,
    (ramp, measure): (Duration, Duration),
    server_pid: Option<u32>,
    tally: Option<&mut Tally>,
) -> (Vec<W>, Samples) {
    let pattern = what.pattern();
    let start = tokio::time::Instant::now();
    let t0 = start + ramp;
    let t1 = t0 + measure;
    let mut set = JoinSet::new();
    for (index, mut worker) in workers.into_iter().enumerate() {
        set.spawn(async move {
            let mut mine = Samples::default();
            let mut turn = index;
            loop {
                let kind = pattern[turn % pattern.len()];
                turn += 1;
                if let Err(error) = worker.prepare().await {
                    mine.error(&error);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let began = tokio::time::Instant::now();
                if began >= t1 {
                    break;
                }
                let result = match tokio::time::timeout(CALL_TIMEOUT, worker.call(kind)).await {
                    Ok(result) => result,
                    Err(_) => Err(anyhow::anyhow!("no answer within {CALL_TIMEOUT:?}")),
                };
                let took = began.elapsed();
                match result {
                    Ok(()) if began >= t0 => mine.latencies[kind].push(took.as_nanos() as u64),
                    Ok(()) => {}
                    Err(error) => {
                        mine.error(&error);
                        // A broken connection fails fast; do not spin on it.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (worker, mine)
        });
    }
    tokio::time::sleep_until(t0).await;
    let server0 = server_pid.and_then(|pid| cpu_time(Some(pid)));
    let client0 = cpu_time(None);
    let window0 = tokio::time::Instant::now();
    tokio::time::sleep_until(t1).await;
    let server1 = server_pid.and_then(|pid| cpu_time(Some(pid)));
    let client1 = cpu_time(None);
    let seconds = window0.elapsed().as_secs_f64();
    let mut samples = Samples::default();
    let mut workers = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((worker, mine)) => {
                for kind in 0..2 {
                    samples.latencies[kind].extend_from_slice(&mine.latencies[kind]);
                }
                samples.errors += mine.errors;
                samples.examples.extend(mine.examples);
                workers.push(worker);
            }
            Err(error) => samples.error(&anyhow::anyhow!("worker task failed: {error}")),
        }
    }
    if let Some(tally) = tally {
        let first = tally.seconds == 0.0;
        add_cpu(&mut tally.server_cpu, server0, server1, first);
        add_cpu(&mut tally.client_cpu, client0, client1, first);
        tally.seconds += seconds;
        for kind in 0..2 {
            tally.samples.latencies[kind].append(&mut samples.latencies[kind]);
        }
        tally.samples.errors += samples.errors;
        tally.samples.examples.append(&mut samples.examples);
        samples = Samples::default();
    }
    (workers, samples)
}

/// Closes workers; QUIC closes wait for the peer, so they finish in the background.
async fn close_workers<W: Worker>(workers: Vec<W>) {
    let mut closing = JoinSet::new();
    for worker in workers {
        closing.spawn(worker.finish());
    }
    let _ =
        tokio::time::timeout(Duration::from_millis(300), async { while closing.join_next().await.is_some() {} }).await;
    closing.detach_all();
}

/// One transport at one concurrency: Keyward's two calls and the echo floor, interleaved in rounds
/// (a slice of each per round, in a rotating order), so that a change in the machine's load during
/// the run affects all three alike. Returns the cells of the targets present.
pub(super) async fn measure_level(
    keyward: Option<(&Endpoint, Arc<str>, u64, Option<u32>)>,
    echo: Option<(&Endpoint, Arc<Bodies>, u32)>,
    concurrency: usize,
    plan: &Plan,
    progress: &Progress,
) -> Vec<Cell> {
    let transport =
        keyward.as_ref().map(|k| k.0.transport).or(echo.as_ref().map(|e| e.0.transport)).unwrap_or(Transport::Tcp);
    let mut keyward_workers = None;
    let mut tallies: Vec<(What, Tally)> = Vec::new();
    if let Some((endpoint, token, reinit_after, _)) = &keyward {
        let (workers, samples) = connect_workers(concurrency, || {
            let endpoint = (*endpoint).clone();
            let token = Arc::clone(token);
            let reinit_after = *reinit_after;
            async move {
                let session = Session::open(endpoint.link().await?).await?;
                Ok(KeywardWorker { session, token, reinit_after })
            }
        })
        .await;
        keyward_workers = Some(workers);
        tallies.push((What::Accounts, Tally { samples, ..Tally::default() }));
        tallies.push((What::Sign, Tally::default()));
        tallies.retain(|(what, _)| plan.calls.contains(what));
    }
    let mut echo_workers = None;
    if let Some((endpoint, bodies, _)) = echo.as_ref().filter(|_| plan.calls.contains(&What::Echo)) {
        let (workers, samples) = connect_workers(concurrency, || {
            let endpoint = (*endpoint).clone();
            let bodies = Arc::clone(bodies);
            async move { Ok(EchoWorker { conn: endpoint.echo().await?, bodies }) }
        })
        .await;
        echo_workers = Some(workers);
        tallies.push((What::Echo, Tally { samples, ..Tally::default() }));
    }
    let rounds = plan.rounds.max(1);
    let slice = (Duration::from_millis(20), plan.measure / rounds as u32);
    let warmup = (plan.warmup / tallies.len().max(1) as u32, Duration::ZERO);
    for round in 0..=rounds {
        let count = tallies.len();
        for step in 0..count {
            let index = (round + step) % count;
            let (what, tally) = &mut tallies[index];
            let what = *what;
            // Round 0 warms every connection up; its calls are not recorded (their errors are).
            let (timing, record) = if round == 0 { (warmup, false) } else { (slice, true) };
            let tally_ref = if record { Some(&mut *tally) } else { None };
            let warm_errors = if what == What::Echo {
                let Some(workers) = echo_workers.take() else { continue };
                let pid = echo.as_ref().map(|e| e.2);
                let (workers, samples) = run_slice(workers, what, timing, pid, tally_ref).await;
                echo_workers = Some(workers);
                samples
            } else {
                let Some(workers) = keyward_workers.take() else { continue };
                let pid = keyward.as_ref().and_then(|k| k.3);
                let (workers, samples) = run_slice(workers, what, timing, pid, tally_ref).await;
                keyward_workers = Some(workers);
                samples
            };
            tally.samples.errors += warm_errors.errors;
            tally.samples.examples.extend(warm_errors.examples);
        }
    }
    if let Some(workers) = keyward_workers {
        close_workers(workers).await;
    }
    if let Some(workers) = echo_workers {
        close_workers(workers).await;
    }
    let cells: Vec<Cell> =
        tallies.into_iter().map(|(what, tally)| tally.into_cell(transport, what, concurrency)).collect();
    for cell in &cells {
        report_cell(progress, cell);
    }
    cells
}
