//! The accept loop every transport shares: a connection limit, a task per connection, and a
//! graceful shutdown.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

/// What a transport accepts connections from.
pub trait Listener: Send + 'static {
    /// An accepted connection (before any handshake).
    type Conn: Send + 'static;

    /// The next connection; `None` once the listener is closed for good. An `Err` is logged and
    /// the loop goes on after a short pause (e.g. out of file descriptors).
    fn accept(&mut self) -> impl Future<Output = Option<std::io::Result<Self::Conn>>> + Send;

    /// Turns away a connection that arrived while every slot was taken ([`WhenFull::Refuse`]).
    /// By default it is dropped (closed).
    fn refuse(&mut self, conn: Self::Conn) {
        drop(conn);
    }
}

/// What to do with a connection when [`ServeLimits::max_connections`] are being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Stop accepting until a slot frees: new connections wait in the kernel's queue (TCP, Unix).
    Wait,
    /// Accept and turn them away at once (QUIC: `CONNECTION_REFUSED`).
    Refuse,
}

/// The accept loop's limits.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Most connections served at once.
    pub max_connections: usize,
    /// What happens to one more.
    pub when_full: WhenFull,
    /// On shutdown, how long connections get to finish before they are aborted.
    pub grace: Duration,
}

/// Tells a connection's task that the server is stopping: finish the message in flight, then
/// close.
#[derive(Debug, Clone)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// Completes once the server is stopping (or its accept loop is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether the server is stopping.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }
}

/// Accepts connections from `listener` until `shutdown` completes, running `handle` on its own
/// task for each one, at most [`ServeLimits::max_connections`] at a time. Then it stops accepting,
/// tells every connection through its [`Stopping`], gives them [`ServeLimits::grace`] to finish and
/// aborts the rest.
pub async fn serve<L, H, F>(mut listener: L, limits: ServeLimits, shutdown: impl Future<Output = ()>, handle: H)
where
    L: Listener,
    H: Fn(L::Conn, Stopping) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = std::sync::Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let waited: Option<OwnedSemaphorePermit> = match limits.when_full {
            WhenFull::Wait => tokio::select! {
                () = &mut shutdown => break,
                permit = std::sync::Arc::clone(&permits).acquire_owned() => permit.ok(),
            },
            WhenFull::Refuse => None,
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let conn = match accepted {
            None => break,
            Some(Ok(conn)) => conn,
            Some(Err(error)) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match waited {
            Some(permit) => permit,
            None => match std::sync::Arc::clone(&permits).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    tracing::debug!("refusing a connection: at max_connections");
                    listener.refuse(conn);
                    continue;
                }
            },
        };
        let task = handle(conn, Stopping(stopping.clone()));
        connections.spawn(async move {
            let _permit = permit;
            task.await;
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.grace, drain).await.is_err() {
        tracing::warn!("connections did not finish within the shutdown grace; aborting them");
        connections.shutdown().await;
    }
}
