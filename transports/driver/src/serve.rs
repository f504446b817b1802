//! The accept loop every transport shares: authentication (a handshake) bounded in number and
//! time, a connection limit counted only after it, a task per connection, and a graceful shutdown.
//!
//! A connection slot is taken only once the peer has authenticated, so peers that connect and say
//! nothing (or stall a TLS handshake) hold no slot: they wait in the handshake stage, which has its
//! own deadline and bound, and when that bound is reached the oldest pending handshake is dropped
//! to make room. A silent flood therefore delays an honest client by at most one handshake.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};

/// What a transport accepts connections from.
pub trait Listener: Send + 'static {
    /// An accepted connection, before any handshake.
    type Conn: Send + 'static;
    /// A connection whose peer has authenticated.
    type Ready: Send + 'static;

    /// The next connection; `None` once the listener is closed for good. An `Err` is logged and
    /// the loop goes on after a short pause (e.g. out of file descriptors).
    fn accept(&mut self) -> impl Future<Output = Option<std::io::Result<Self::Conn>>> + Send;

    /// Authenticates a connection (a TLS handshake, a peer check); `None` if it failed or was
    /// refused. It runs on its own task within [`ServeLimits::handshake_timeout`].
    fn handshake(&self, conn: Self::Conn) -> impl Future<Output = Option<Self::Ready>> + Send + 'static;

    /// Turns away a connection that arrived while every connection slot was taken, before any
    /// handshake is spent on it. By default it is dropped (closed).
    fn refuse(&mut self, conn: Self::Conn) {
        drop(conn);
    }

    /// Turns away an authenticated connection for which no slot is left (slots filled during its
    /// handshake). By default it is dropped (closed).
    fn turn_away(&mut self, ready: Self::Ready) {
        drop(ready);
    }
}

/// The accept loop's limits.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Most authenticated connections served at once; more are turned away.
    pub max_connections: usize,
    /// Most handshakes in progress at once; one more drops the oldest pending one.
    pub max_handshakes: usize,
    /// A handshake must complete within this long.
    pub handshake_timeout: Duration,
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

/// Accepts connections from `listener` until `shutdown` completes: each is authenticated on its
/// own task ([`Listener::handshake`], at most [`ServeLimits::max_handshakes`] at once, each within
/// [`ServeLimits::handshake_timeout`]), then served by `handle` on its own task while it holds one
/// of [`ServeLimits::max_connections`] slots. Then it stops accepting, tells every connection
/// through its [`Stopping`], gives them [`ServeLimits::grace`] to finish and aborts the rest.
pub async fn serve<L, H, F>(mut listener: L, limits: ServeLimits, shutdown: impl Future<Output = ()>, handle: H)
where
    L: Listener,
    H: Fn(L::Ready, Stopping) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<L::Ready>();
    let mut handshakes = JoinSet::new();
    let mut pending: VecDeque<AbortHandle> = VecDeque::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let conn = match accepted {
                    None => break,
                    Some(Ok(conn)) => conn,
                    Some(Err(error)) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if slots.available_permits() == 0 {
                    tracing::debug!("refusing a connection: at max_connections");
                    listener.refuse(conn);
                    continue;
                }
                pending.retain(|task| !task.is_finished());
                while pending.len() >= limits.max_handshakes.max(1) {
                    if let Some(oldest) = pending.pop_front() {
                        tracing::debug!("dropping the oldest pending handshake: at max_handshakes");
                        oldest.abort();
                    }
                }
                let handshake = listener.handshake(conn);
                let ready_tx = ready_tx.clone();
                let deadline = limits.handshake_timeout;
                pending.push_back(handshakes.spawn(async move {
                    match tokio::time::timeout(deadline, handshake).await {
                        Ok(Some(ready)) => {
                            let _ = ready_tx.send(ready);
                        }
                        Ok(None) => {}
                        Err(_) => tracing::debug!("handshake not complete within the handshake timeout"),
                    }
                }));
            }
            Some(ready) = ready_rx.recv() => {
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::debug!("turning away an authenticated connection: at max_connections");
                    listener.turn_away(ready);
                    continue;
                };
                let task = handle(ready, Stopping(stopping.clone()));
                connections.spawn(async move {
                    let _slot = slot;
                    task.await;
                });
            }
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    handshakes.shutdown().await;
    let _ = stop.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.grace, drain).await.is_err() {
        tracing::warn!("connections did not finish within the shutdown grace; aborting them");
        connections.shutdown().await;
    }
}
