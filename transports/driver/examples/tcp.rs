//! A whole Keyward transport in a few lines: length-prefixed JSON-RPC over loopback TCP, on the
//! driver. (No authentication: a real one adds TLS or a peer check, as keyward-unix does.)
//!
//! `cargo run -p keyward-driver --example tcp` serves until Ctrl-C, with wallets in memory.

use std::time::Duration;

use keyward_core::{MemoryStore, ServerConfig};
use keyward_driver::frame::{self, FrameLimits};
use keyward_driver::{CertChain, Driver, DriverConfig, Listener, Peer, Progress, ServeLimits, SessionBinding};
use tokio::net::{TcpListener, TcpStream};

const LIMITS: FrameLimits =
    FrameLimits { max_bytes: 1 << 20, idle: Duration::from_secs(60), io: Duration::from_secs(10) };

/// The listener, as the driver's accept loop sees it.
#[derive(Debug)]
pub struct Tcp(pub TcpListener);

impl Listener for Tcp {
    type Conn = TcpStream;
    type Ready = TcpStream;
    async fn accept(&mut self) -> Option<std::io::Result<TcpStream>> {
        Some(self.0.accept().await.map(|(stream, _)| stream))
    }
    // Nothing to authenticate here; a real transport runs its TLS handshake or peer check.
    fn handshake(
        &self,
        stream: TcpStream,
        _progress: Progress,
    ) -> impl Future<Output = Option<TcpStream>> + Send + 'static {
        std::future::ready(Some(stream))
    }
}

/// Serves `driver` on `listener` until `shutdown`.
pub async fn serve(driver: Driver, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let (handshake_timeout, grace) = (Duration::from_secs(5), Duration::from_secs(5));
    let owner_reserve = driver.connection_limits().owner_reserve;
    let limits = ServeLimits { max_connections: 64, owner_reserve, max_handshakes: 64, handshake_timeout, grace };
    keyward_driver::serve(Tcp(listener), limits, shutdown, move |mut stream: TcpStream, seat| {
        let peer = stream.peer_addr().map_or(Peer::Local, |addr| Peer::Net {
            addr,
            client_key: None,
            client_chain: CertChain::default(),
        });
        // The driver admits the peer (or refuses, logs and audits it) and takes a slot of this
        // listener; the session an init makes is bound to this connection.
        let admitted = seat.admit(&driver, peer, SessionBinding::Bound);
        async move {
            if let Ok((conn, mut stopping)) = admitted {
                frame::serve_stream(&conn, &mut stream, LIMITS, &mut stopping).await;
            }
        }
    })
    .await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let driver = Driver::start(ServerConfig::default(), Box::new(MemoryStore::new()), DriverConfig::default())?;
    let listener = TcpListener::bind("127.0.0.1:3425").await?;
    eprintln!("serving on {}", listener.local_addr()?);
    serve(driver, listener, async { tokio::signal::ctrl_c().await.unwrap_or_default() }).await;
    Ok(())
}
