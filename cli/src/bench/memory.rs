//! Server memory: idle RSS, and its growth per idle session.

use std::time::Duration;

use keyward_http::{HttpClient, HttpTarget};

use super::children::rss_kib;
use super::link::Endpoint;
use super::plan::Progress;
use super::v3::{V3Client, V3Cost};

/// Server memory: idle RSS and growth per idle session.
#[derive(Debug, Clone)]
pub(super) struct Memory {
    pub(super) idle_kib: u64,
    pub(super) base_kib: u64,
    pub(super) points: Vec<(usize, u64, f64)>,
    /// An unmodified V3 client's cost with no other session, then beside each count of idle ones.
    pub(super) v3: Vec<V3Cost>,
    pub(super) errors: u64,
}

/// Makes sessions with plaintext `init_secure_api` over one plain HTTP connection (the same request
/// each time: the client's key is not kept, the server makes a new key and session for every one).
pub(super) async fn memory(
    endpoint: &Endpoint,
    pid: u32,
    counts: &[usize],
    init: &[u8],
    v3_time: Duration,
    progress: &Progress,
) -> Memory {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_kib = rss_kib(pid).unwrap_or(0);
    let mut result = Memory { idle_kib, base_kib: idle_kib, points: Vec::new(), v3: Vec::new(), errors: 0 };
    let mut http = match HttpClient::connect(endpoint.addr, &endpoint.name, HttpTarget::Plain).await {
        Ok(http) => http,
        Err(_) => {
            result.errors += 1;
            return result;
        }
    };
    let mut made = 0usize;
    let mut v3 = match V3Client::start(endpoint).await {
        Ok(v3) => Some(v3),
        Err(error) => {
            progress.line(format_args!("memory: the V3 client could not start: {error}"));
            result.errors += 1;
            None
        }
    };
    measure_v3(v3.as_mut(), pid, 0, v3_time, &mut result, progress).await;
    // One session first, so the connection's own buffers are in the baseline.
    make_session(&mut http, init, &mut result).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    result.base_kib = rss_kib(pid).unwrap_or(0);
    for &count in counts {
        while made < count {
            make_session(&mut http, init, &mut result).await;
            made += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss = rss_kib(pid).unwrap_or(0);
        let per_session = rss.saturating_sub(result.base_kib) as f64 * 1024.0 / count as f64;
        progress.line(format_args!("memory: {count} idle sessions: RSS {rss} KiB, {per_session:.0} B per session"));
        result.points.push((count, rss, per_session));
        measure_v3(v3.as_mut(), pid, count, v3_time, &mut result, progress).await;
    }
    result
}

async fn measure_v3(
    v3: Option<&mut V3Client>,
    pid: u32,
    idle: usize,
    duration: Duration,
    result: &mut Memory,
    progress: &Progress,
) {
    let Some(v3) = v3 else { return };
    match v3.measure(pid, idle, duration).await {
        Ok(cost) => {
            progress.line(format_args!(
                "V3 client (no header), {idle} idle sessions: p50 {:.0} us, server CPU {:.1} us per call",
                cost.p50_us, cost.server_cpu_us_per_call
            ));
            result.v3.push(cost);
        }
        Err(error) => {
            progress.line(format_args!("V3 client (no header) failed: {error}"));
            result.errors += 1;
        }
    }
}

async fn make_session(http: &mut HttpClient, init: &[u8], result: &mut Memory) {
    match http.post(init.to_vec(), None).await {
        Ok(answer) if answer.status == 200 && answer.session.is_some() => {}
        _ => result.errors += 1,
    }
}
