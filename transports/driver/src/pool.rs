//! The bounded pool that runs slow calls (a KDF, a store write) off the I/O threads, fairly
//! between principals.
//!
//! * A fixed set of `threads`; at most `threads + queue` calls admitted at once, and a call beyond
//!   that is refused at once (the transport answers it `Busy`): one client can grow neither the
//!   server's threads nor its memory. The worst case is `threads` KDFs (`threads × m_cost`, 64 MiB
//!   each by default) plus `queue` decrypted requests waiting.
//! * Per principal: at most `per_principal` calls admitted (running or waiting), and at most
//!   `threads − 1` running (one when there is one thread), so one client never holds every thread.
//! * Waiting calls are queued per principal and a free thread takes the next call of the principal
//!   that waited longest (round robin): a client that floods slow calls delays another client's
//!   call by at most the calls already running, never by its own queue.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    static ON_SLOW_POOL: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is one of a driver's slow-call threads. Every store write and every
/// KDF of a driven server runs on such a thread, never on an I/O thread (a test holds this).
pub fn on_slow_pool() -> bool {
    ON_SLOW_POOL.with(Cell::get)
}

#[derive(Default)]
struct Queues {
    /// Waiting calls by principal.
    waiting: HashMap<Box<str>, VecDeque<Job>>,
    /// Principals with waiting calls, in the order they are served (round robin).
    turn: VecDeque<Box<str>>,
    /// Calls running, by principal.
    running: HashMap<Box<str>, usize>,
    /// Calls admitted (running or waiting), by principal and in all.
    admitted: HashMap<Box<str>, usize>,
    total: usize,
    closed: bool,
}

struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
    capacity: usize,
    per_principal: usize,
    running_per_principal: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next call a free thread may run: the first principal in turn that is under its running
    /// cap; that principal goes to the back of the turn if it has more waiting.
    fn next(queues: &mut Queues, running_cap: usize) -> Option<(Box<str>, Job)> {
        let position = queues
            .turn
            .iter()
            .position(|principal| queues.running.get(principal).copied().unwrap_or(0) < running_cap)?;
        let principal = queues.turn.remove(position)?;
        let waiting = queues.waiting.get_mut(&principal)?;
        let job = waiting.pop_front()?;
        if waiting.is_empty() {
            queues.waiting.remove(&principal);
        } else {
            queues.turn.push_back(principal.clone());
        }
        *queues.running.entry(principal.clone()).or_default() += 1;
        Some((principal, job))
    }

    fn worker(self: &Arc<Self>) {
        ON_SLOW_POOL.with(|on| on.set(true));
        let mut queues = self.lock();
        loop {
            if let Some((principal, job)) = Self::next(&mut queues, self.running_per_principal) {
                drop(queues);
                // A panicking call (a bug, never peer bytes) loses only itself: its caller is
                // answered "Internal error" and the thread serves the next one.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a slow call panicked; its thread goes on");
                }
                queues = self.lock();
                if let Some(running) = queues.running.get_mut(&principal) {
                    *running -= 1;
                    if *running == 0 {
                        queues.running.remove(&principal);
                    }
                }
                // A call of a principal that was at its running cap may run now.
                self.ready.notify_one();
                continue;
            }
            if queues.closed {
                return;
            }
            queues = self.ready.wait(queues).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The pool (see the module's documentation).
pub(crate) struct SlowPool {
    shared: Arc<Shared>,
}

/// A place in the pool for one principal's call, taken before the call is handed over.
pub(crate) struct Admission {
    shared: Arc<Shared>,
    principal: Box<str>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut queues = self.shared.lock();
        queues.total -= 1;
        if let Some(admitted) = queues.admitted.get_mut(&self.principal) {
            *admitted -= 1;
            if *admitted == 0 {
                queues.admitted.remove(&self.principal);
            }
        }
    }
}

impl Drop for SlowPool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

impl SlowPool {
    /// `threads` threads, `queue` places to wait, `per_principal` calls admitted per principal.
    pub(crate) fn new(threads: usize, queue: usize, per_principal: usize) -> Self {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            ready: Condvar::new(),
            capacity: threads + queue,
            per_principal: per_principal.max(1),
            running_per_principal: (threads - 1).max(1),
        });
        for i in 0..threads {
            let worker = Arc::clone(&shared);
            let spawned = std::thread::Builder::new().name(format!("keyward-slow-{i}")).spawn(move || worker.worker());
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a slow-call thread");
            }
        }
        Self { shared }
    }

    /// Takes a place for `principal`'s call, or `None` when `threads + queue` calls are admitted
    /// already, or `per_principal` of its own.
    pub(crate) fn admit(&self, principal: &str) -> Option<Admission> {
        let mut queues = self.shared.lock();
        let own = queues.admitted.get(principal).copied().unwrap_or(0);
        if queues.total >= self.shared.capacity || own >= self.shared.per_principal {
            return None;
        }
        queues.total += 1;
        *queues.admitted.entry(principal.into()).or_default() += 1;
        Some(Admission { shared: Arc::clone(&self.shared), principal: principal.into() })
    }

    fn submit(&self, principal: &str, job: Job) {
        let mut queues = self.shared.lock();
        let waiting = queues.waiting.entry(principal.into()).or_default();
        let first = waiting.is_empty();
        waiting.push_back(job);
        if first {
            queues.turn.push_back(principal.into());
        }
        drop(queues);
        self.shared.ready.notify_one();
    }

    /// Runs `job` on a pool thread in its principal's turn and waits for its result; the place is
    /// given back when it ends (before the caller hears of it, even on a panic).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        admission: Admission,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (done, result) = oneshot::channel();
        let principal = admission.principal.clone();
        let job: Job = Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            drop(admission);
            match outcome {
                Ok(value) => {
                    let _ = done.send(value);
                }
                Err(panic) => {
                    drop(done);
                    std::panic::resume_unwind(panic);
                }
            }
        });
        self.submit(&principal, job);
        result.await.ok()
    }

    /// Runs `job` on a pool thread without waiting for it; the place is given back when it ends.
    pub(crate) fn spawn(&self, admission: Admission, job: impl FnOnce() + Send + 'static) {
        let principal = admission.principal.clone();
        self.submit(
            &principal,
            Box::new(move || {
                let _admission = admission;
                job();
            }),
        );
    }

    /// Calls admitted and not yet finished.
    pub(crate) fn in_flight(&self) -> usize {
        self.shared.lock().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_call_loses_only_itself() {
        let pool = SlowPool::new(1, 0, 4);
        let admission = pool.admit("a").expect("a place");
        let lost = pool.run(admission, || -> u32 { panic!("a bug in a slow call") }).await;
        assert_eq!(lost, None);
        assert_eq!(pool.in_flight(), 0, "the place is given back");
        // The one thread still serves.
        let admission = pool.admit("a").expect("a place");
        assert_eq!(pool.run(admission, || 7).await, Some(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_principals_flood_neither_fills_the_pool_nor_delays_another() {
        let pool = Arc::new(SlowPool::new(2, 8, 4));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        // The flooder: 4 admitted (its cap), the 5th refused; at most one runs at a time.
        let mut flood = Vec::new();
        for _ in 0..4 {
            let admission = pool.admit("reader").expect("under the cap");
            let (pool, held) = (Arc::clone(&pool), Arc::clone(&held));
            flood.push(tokio::spawn(async move {
                pool.run(admission, move || {
                    let _ = held.lock().unwrap_or_else(PoisonError::into_inner).recv();
                })
                .await
            }));
        }
        assert!(pool.admit("reader").is_none(), "a principal's own cap");
        // Another principal's call runs at once on the thread the flooder may not take.
        let admission = pool.admit("owner").expect("room for others");
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), pool.run(admission, || "unlocked")).await;
        assert_eq!(answer.ok().flatten(), Some("unlocked"));
        for _ in 0..4 {
            let _ = release.send(());
        }
        for call in flood {
            assert_eq!(call.await.ok().flatten(), Some(()));
        }
        assert_eq!(pool.in_flight(), 0);
    }
}
