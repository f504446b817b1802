//! The bounded pool that runs slow calls (a KDF, a store write) off the I/O threads.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

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

/// A fixed set of threads and a bounded queue. At most `threads + queue` calls are admitted at
/// once; a call beyond that is refused at once (the transport answers it `Busy`), so one client
/// can neither grow the server's threads nor its memory: the worst case is `threads` KDFs
/// (`threads × m_cost`, 64 MiB each by default) plus `queue` decrypted requests waiting.
pub(crate) struct SlowPool {
    sender: Mutex<mpsc::Sender<Job>>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
}

/// A place in the pool, taken before the call is handed over.
pub(crate) struct Admission {
    admitted: Arc<AtomicUsize>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SlowPool {
    pub(crate) fn new(threads: usize, queue: usize) -> Self {
        let threads = threads.max(1);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads {
            let receiver = Arc::clone(&receiver);
            let spawned = std::thread::Builder::new().name(format!("keyward-slow-{i}")).spawn(move || {
                ON_SLOW_POOL.with(|on| on.set(true));
                loop {
                    // The lock is held only while waiting for the next job, not while running it.
                    let job = receiver.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    match job {
                        // A panicking call (a bug, never peer bytes) loses only itself: its
                        // caller is answered "Internal error" and the thread serves the next one.
                        Ok(job) => {
                            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                                tracing::error!("a slow call panicked; its thread goes on");
                            }
                        }
                        Err(_) => break,
                    }
                }
            });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a slow-call thread");
            }
        }
        Self { sender: Mutex::new(sender), admitted: Arc::new(AtomicUsize::new(0)), capacity: threads + queue }
    }

    /// Takes a place, or `None` when `threads + queue` calls are already admitted.
    pub(crate) fn admit(&self) -> Option<Admission> {
        let admitted = self
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.capacity).then_some(n + 1))
            .is_ok();
        admitted.then(|| Admission { admitted: Arc::clone(&self.admitted) })
    }

    /// Runs `job` on a pool thread and waits for its result; the place is given back when it ends.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        admission: Admission,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _admission = admission;
            let _ = done.send(job());
        });
        self.sender.lock().unwrap_or_else(PoisonError::into_inner).send(job).ok()?;
        result.await.ok()
    }

    /// Calls admitted and not yet finished.
    pub(crate) fn in_flight(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_call_loses_only_itself() {
        let pool = SlowPool::new(1, 0);
        let admission = pool.admit().expect("a place");
        let lost = pool.run(admission, || -> u32 { panic!("a bug in a slow call") }).await;
        assert_eq!(lost, None);
        assert_eq!(pool.in_flight(), 0, "the place is given back");
        // The one thread still serves.
        let admission = pool.admit().expect("a place");
        assert_eq!(pool.run(admission, || 7).await, Some(7));
    }
}
