//! The accept loop every transport shares: authentication (a handshake) bounded in number and
//! time, a connection limit counted only after it, a task per connection, and a graceful shutdown.
//!
//! A connection slot is taken only once the peer has authenticated, so peers that connect and say
//! nothing (or stall a TLS handshake) hold no slot: they wait in the handshake stage, which has its
//! own deadline and bound. When that bound is reached, the pending handshake that has made no
//! progress for the longest is dropped to make room: each handshake reports its steps
//! ([`Progress::made`]: a whole ClientHello read), and the one whose last step is the oldest goes
//! first: stalled (silent, a partial ClientHello, no certificate after it) for longer than any
//! other. So a flood of handshakes that stall evicts its own before one that is moving; an honest
//! client is dropped only if `max_handshakes` handshakes newer than its last step arrive during its
//! round trip.
//!
//! An authenticated connection is admitted by [`Seat::admit`] (the driver's one admission point):
//! a slot of its listener, at most [`crate::ConnectionLimits::per_principal`] per principal, and
//! the last [`crate::ConnectionLimits::owner_reserve`] slots of the listener for owners only.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};

use crate::admission::Slots;
use crate::{Connection, Driver, Peer, Refused, SessionBinding};

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
    /// refused. It runs on its own task within [`ServeLimits::handshake_timeout`], and calls
    /// `progress.made()` at each step it completes (a whole ClientHello read), so that past
    /// [`ServeLimits::max_handshakes`] a handshake that is stuck is dropped rather than it.
    fn handshake(
        &self,
        conn: Self::Conn,
        progress: Progress,
    ) -> impl Future<Output = Option<Self::Ready>> + Send + 'static;

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
    /// Most authenticated connections served at once; more are turned away. The last
    /// `owner_reserve` of them are for owner-role principals only.
    pub max_connections: usize,
    /// Slots of `max_connections` only owner-role principals may take (the driver's
    /// [`crate::ConnectionLimits::owner_reserve`]; at most `max_connections − 1`).
    pub owner_reserve: usize,
    /// Most handshakes in progress at once; one more drops the pending one that has made no
    /// progress for the longest.
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

/// A handshake's report of its steps to the accept loop. When it must drop one, the loop drops
/// the handshake whose last step (its start, a whole ClientHello read) is the oldest: the one that
/// has made no progress for the longest. Steps are ordered by a counter, not a clock.
#[derive(Debug, Clone)]
pub struct Progress {
    last: Arc<AtomicU64>,
    counter: Arc<AtomicU64>,
}

impl Progress {
    fn new(counter: &Arc<AtomicU64>) -> Self {
        let last = Arc::new(AtomicU64::new(counter.fetch_add(1, Ordering::Relaxed)));
        Self { last, counter: Arc::clone(counter) }
    }

    /// The handshake completed a step (a whole ClientHello read, ...).
    pub fn made(&self) {
        self.last.store(self.counter.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The counter's value at the last step: the smallest goes first.
    fn rank(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }
}

/// An authenticated connection's place on its listener, handed to the handler by [`serve`]:
/// [`Seat::admit`] makes its driver connection, taking one of the listener's slots. A handler must
/// admit through it (not [`Driver::connection`], which takes no slot of any listener), or the
/// listener's `max_connections` and owner's reserve do not hold for its connections.
#[derive(Debug)]
pub struct Seat {
    slots: Arc<Slots>,
    stopping: Stopping,
}

impl Seat {
    /// Admits `peer` on `driver` ([`Driver::connection`]'s checks), taking a slot of this listener
    /// that the peer's role may take (owners only among the last
    /// [`crate::ConnectionLimits::owner_reserve`]); the slot is given back when the connection
    /// drops. Also returns the signal that the server is stopping.
    pub fn admit(
        self,
        driver: &Driver,
        peer: Peer,
        binding: SessionBinding,
    ) -> Result<(Connection, Stopping), Refused> {
        let connection = Connection::new(driver.clone(), peer, binding, Some(self.slots))?;
        Ok((connection, self.stopping))
    }
}

/// Accepts connections from `listener` until `shutdown` completes: each is authenticated on its
/// own task ([`Listener::handshake`], at most [`ServeLimits::max_handshakes`] at once, each within
/// [`ServeLimits::handshake_timeout`]), then handed to `handle` on its own task with a [`Seat`],
/// whose [`Seat::admit`] takes one of [`ServeLimits::max_connections`] slots. Then it stops
/// accepting, tells every connection through its [`Stopping`], gives them [`ServeLimits::grace`]
/// to finish and aborts the rest.
pub async fn serve<L, H, F>(mut listener: L, limits: ServeLimits, shutdown: impl Future<Output = ()>, handle: H)
where
    L: Listener,
    H: Fn(L::Ready, Seat) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Slots::new(limits.max_connections, limits.owner_reserve));
    let (stop, stopping) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<L::Ready>();
    let mut handshakes = JoinSet::new();
    let steps = Arc::new(AtomicU64::new(0));
    let mut pending: Vec<(AbortHandle, Progress)> = Vec::new();
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
                if slots.full() {
                    tracing::debug!("refusing a connection: at max_connections");
                    listener.refuse(conn);
                    continue;
                }
                pending.retain(|(task, _)| !task.is_finished());
                while pending.len() >= limits.max_handshakes.max(1) {
                    // The one that is furthest behind: stuck, never one that is moving.
                    let stalest = pending.iter().enumerate().min_by_key(|(_, (_, progress))| progress.rank());
                    if let Some(index) = stalest.map(|(index, _)| index) {
                        tracing::debug!("dropping the pending handshake stalled longest: at max_handshakes");
                        pending.swap_remove(index).0.abort();
                    }
                }
                let progress = Progress::new(&steps);
                let handshake = listener.handshake(conn, progress.clone());
                let ready_tx = ready_tx.clone();
                let deadline = limits.handshake_timeout;
                let task = handshakes.spawn(async move {
                    match tokio::time::timeout(deadline, handshake).await {
                        Ok(Some(ready)) => {
                            let _ = ready_tx.send(ready);
                        }
                        Ok(None) => {}
                        Err(_) => tracing::debug!("handshake not complete within the handshake timeout"),
                    }
                });
                pending.push((task, progress));
            }
            Some(ready) = ready_rx.recv() => {
                if slots.full() {
                    tracing::debug!("turning away an authenticated connection: at max_connections");
                    listener.turn_away(ready);
                    continue;
                }
                let seat = Seat { slots: Arc::clone(&slots), stopping: Stopping(stopping.clone()) };
                connections.spawn(handle(ready, seat));
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
