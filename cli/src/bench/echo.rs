//! `keyward bench-echo`, the echo floor the bench measures against.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use keyward_driver::{Driver, DriverConfig};
use keyward_http::{HttpLimits, HttpServer};
use keyward_quic::{QuicLimits, QuicServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::{certs, serve, tls};

/// `keyward bench-echo`: the echo floor. HTTPS, plain HTTP and QUIC echo listeners (the transports'
/// own code, the same TLS configuration and default limits as `keyward serve`) and a raw TCP echo
/// (4-byte big-endian length, then the bytes), each on an ephemeral loopback port. Writes
/// `{"pid","https","http_insecure","quic","tcp"}` to `ready_file` and serves until SIGTERM or SIGINT.
pub async fn echo_server(tls_dir: &Path, ready_file: &Path) -> anyhow::Result<()> {
    let local: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let echo = Driver::service(Arc::new(Echo), DriverConfig::default());
    let server_tls = tls::server_config(tls_dir, &echo)?;
    let https = HttpServer::bind_https(local, Arc::clone(&server_tls), echo.clone(), HttpLimits::default()).await?;
    let http = HttpServer::bind_insecure(local, echo.clone(), HttpLimits::default()).await?;
    let quic = QuicServer::bind(local, server_tls, echo, QuicLimits::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tcp = tokio::net::TcpListener::bind(local).await?;
    let ready = json!({
        "pid": std::process::id(),
        "https": https.local_addr()?.to_string(),
        "http_insecure": http.local_addr()?.to_string(),
        "quic": quic.local_addr().map_err(|e| anyhow::anyhow!("{e}"))?.to_string(),
        "tcp": tcp.local_addr()?.to_string(),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let mut tasks = JoinSet::new();
    tasks.spawn(https.run(until_stopped(stopped.clone())));
    tasks.spawn(http.run(until_stopped(stopped.clone())));
    tasks.spawn(quic.run(until_stopped(stopped.clone())));
    let tcp_stop = until_stopped(stopped.clone());
    tasks.spawn(async move {
        let mut stop = std::pin::pin!(tcp_stop);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = &mut stop => break,
                accepted = tcp.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    connections.spawn(tcp_echo(stream));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
    });
    let mut signals = serve::Signals::install();
    certs::write_file(ready_file, ready.to_string().as_bytes(), 0o600)?;
    signals.recv().await;
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Echoes length-prefixed frames (at most 1 MiB each) until the peer closes.
async fn tcp_echo(mut stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > 1024 * 1024 {
            return;
        }
        buffer.clear();
        buffer.extend_from_slice(&len);
        buffer.resize(4 + n, 0);
        if stream.read_exact(&mut buffer[4..]).await.is_err() || stream.write_all(&buffer).await.is_err() {
            return;
        }
    }
}

/// The echo floor's service: each request is answered with its own bytes, behind the transports'
/// usual listener, TLS, limits and request handling.
struct Echo;

impl keyward_driver::Service for Echo {
    fn answer(&self, request: &[u8]) -> Vec<u8> {
        request.to_vec()
    }
}
