//! Server memory: idle RSS, and its growth per idle session.

use std::time::Duration;

use keyward_http::{HttpClient, HttpTarget};

use super::children::rss_kib;
use super::link::Endpoint;
use super::plan::Progress;

/// Server memory: idle RSS and growth per idle session.
#[derive(Debug, Clone)]
pub(super) struct Memory {
    pub(super) idle_kib: u64,
    pub(super) base_kib: u64,
    pub(super) points: Vec<(usize, u64, f64)>,
    pub(super) errors: u64,
}

/// Makes sessions with plaintext `init_secure_api` over one plain HTTP connection (the same request
/// each time: the client's key is not kept, the server makes a new key and session for every one).
pub(super) async fn memory(
    endpoint: &Endpoint,
    pid: u32,
    counts: &[usize],
    init: &[u8],
    progress: &Progress,
) -> Memory {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_kib = rss_kib(pid).unwrap_or(0);
    let mut result = Memory { idle_kib, base_kib: idle_kib, points: Vec::new(), errors: 0 };
    let mut http = match HttpClient::connect(endpoint.addr, &endpoint.name, HttpTarget::Plain).await {
        Ok(http) => http,
        Err(_) => {
            result.errors += 1;
            return result;
        }
    };
    let mut made = 0usize;
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
    }
    result
}

async fn make_session(http: &mut HttpClient, init: &[u8], result: &mut Memory) {
    match http.post(init.to_vec(), None).await {
        Ok(answer) if answer.status == 200 && answer.session.is_some() => {}
        _ => result.errors += 1,
    }
}
