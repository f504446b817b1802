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
//! * Owner-role calls keep a share: one reserved thread. Calls of principals without the owner
//!   role together run on at most `threads − 1` threads, so with two threads or more one is
//!   always free for an owner-role call, which never waits for another client's call; and
//!   owner-role calls together run on at most `threads − 1` too, so the other roles keep a
//!   thread. A free thread takes a waiting owner-role call first (with one thread, an owner's
//!   call waits for at most the one running call). The last `min(threads, queue)` places of
//!   `threads + queue` are admitted to owner-role calls only, so other clients filling the queue
//!   cannot make an owner's call `Busy`. The role is the principal's when the call is admitted.
//!   Cost: on a 2-core machine two non-owner clients no longer run KDFs at the same time.

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

/// Whether a principal has the owner role (asked when its call is admitted).
pub(crate) type IsOwner = Box<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Default)]
struct Queues {
    /// Waiting calls by principal.
    waiting: HashMap<Box<str>, VecDeque<Job>>,
    /// Owner-role principals with waiting calls, in the order they are served (round robin);
    /// served before `turn`.
    owner_turn: VecDeque<Box<str>>,
    /// Other principals with waiting calls, in the order they are served (round robin).
    turn: VecDeque<Box<str>>,
    /// Calls running, by principal.
    running: HashMap<Box<str>, usize>,
    /// Calls running, by class: `[others, owner-role]`.
    class_running: [usize; 2],
    /// Calls admitted (running or waiting), by principal and in all.
    admitted: HashMap<Box<str>, usize>,
    total: usize,
    closed: bool,
}

struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
    capacity: usize,
    /// Places of `capacity` only owner-role calls may take.
    owner_places: usize,
    per_principal: usize,
    running_per_principal: usize,
    is_owner: IsOwner,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next call a free thread may run: the first owner-role principal in turn that is under
    /// its running cap, else the first other principal in turn under its cap, each while its class
    /// runs on fewer than `running_cap` threads; that principal goes to the back of its turn if it
    /// has more waiting. Returns the principal and whether its call is an owner-role one.
    fn next(queues: &mut Queues, running_cap: usize) -> Option<(Box<str>, bool, Job)> {
        let under_cap =
            |queues: &Queues, principal: &str| queues.running.get(principal).copied().unwrap_or(0) < running_cap;
        let eligible = |queues: &Queues, owner: bool| {
            let turn = if owner { &queues.owner_turn } else { &queues.turn };
            if queues.class_running[usize::from(owner)] >= running_cap {
                return None;
            }
            turn.iter().position(|principal| under_cap(queues, principal))
        };
        let (owner, position) = match eligible(queues, true) {
            Some(position) => (true, position),
            None => (false, eligible(queues, false)?),
        };
        let turn = if owner { &mut queues.owner_turn } else { &mut queues.turn };
        let principal = turn.remove(position)?;
        let waiting = queues.waiting.get_mut(&principal)?;
        let job = waiting.pop_front()?;
        if waiting.is_empty() {
            queues.waiting.remove(&principal);
        } else {
            turn.push_back(principal.clone());
        }
        *queues.running.entry(principal.clone()).or_default() += 1;
        queues.class_running[usize::from(owner)] += 1;
        Some((principal, owner, job))
    }

    fn worker(self: &Arc<Self>) {
        ON_SLOW_POOL.with(|on| on.set(true));
        let mut queues = self.lock();
        loop {
            if let Some((principal, owner, job)) = Self::next(&mut queues, self.running_per_principal) {
                drop(queues);
                // A panicking call (a bug, never peer bytes) loses only itself: its caller is
                // answered "Internal error" and the thread serves the next one.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a slow call panicked; its thread goes on");
                }
                queues = self.lock();
                queues.class_running[usize::from(owner)] -= 1;
                if let Some(running) = queues.running.get_mut(&principal) {
                    *running -= 1;
                    if *running == 0 {
                        queues.running.remove(&principal);
                    }
                }
                // A call of a principal (or class) that was at its running cap may run now.
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
    /// Whether the principal had the owner role when admitted (its call is served first).
    owner: bool,
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
    /// `threads` threads, `queue` places to wait, `per_principal` calls admitted per principal;
    /// `is_owner` tells owner-role principals, whose calls keep a share (see the module).
    pub(crate) fn new(threads: usize, queue: usize, per_principal: usize, is_owner: IsOwner) -> Self {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            ready: Condvar::new(),
            capacity: threads + queue,
            owner_places: threads.min(queue),
            per_principal: per_principal.max(1),
            running_per_principal: (threads - 1).max(1),
            is_owner,
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
    /// already (`threads + queue − min(threads, queue)` for a principal without the owner role),
    /// or `per_principal` of its own.
    pub(crate) fn admit(&self, principal: &str) -> Option<Admission> {
        // The role is read before the pool's lock is taken (it takes the registry's).
        let owner = (self.shared.is_owner)(principal);
        let capacity = if owner { self.shared.capacity } else { self.shared.capacity - self.shared.owner_places };
        let mut queues = self.shared.lock();
        let own = queues.admitted.get(principal).copied().unwrap_or(0);
        if queues.total >= capacity || own >= self.shared.per_principal {
            return None;
        }
        queues.total += 1;
        *queues.admitted.entry(principal.into()).or_default() += 1;
        Some(Admission { shared: Arc::clone(&self.shared), principal: principal.into(), owner })
    }

    fn submit(&self, principal: &str, owner: bool, job: Job) {
        let mut queues = self.shared.lock();
        let waiting = queues.waiting.entry(principal.into()).or_default();
        let first = waiting.is_empty();
        waiting.push_back(job);
        if first {
            let turn = if owner { &mut queues.owner_turn } else { &mut queues.turn };
            turn.push_back(principal.into());
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
        let (principal, owner) = (admission.principal.clone(), admission.owner);
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
        self.submit(&principal, owner, job);
        result.await.ok()
    }

    /// Runs `job` on a pool thread without waiting for it; the place is given back when it ends.
    pub(crate) fn spawn(&self, admission: Admission, job: impl FnOnce() + Send + 'static) {
        let (principal, owner) = (admission.principal.clone(), admission.owner);
        self.submit(
            &principal,
            owner,
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

    fn nobody_owns() -> IsOwner {
        Box::new(|_| false)
    }

    #[tokio::test]
    async fn a_panicking_call_loses_only_itself() {
        let pool = SlowPool::new(1, 0, 4, nobody_owns());
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
        let pool = Arc::new(SlowPool::new(2, 8, 4, Box::new(|principal| principal == "owner")));
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
        // A second non-owner client's call waits: the other thread is kept for owner-role calls.
        let admission = pool.admit("signer").expect("under the cap");
        let (signer_pool, signer_held) = (Arc::clone(&pool), Arc::clone(&held));
        flood.push(tokio::spawn(async move {
            signer_pool
                .run(admission, move || {
                    let _ = signer_held.lock().unwrap_or_else(PoisonError::into_inner).recv();
                })
                .await
        }));
        // The owner's call runs at once on the thread the flooder may not take.
        let admission = pool.admit("owner").expect("room for others");
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), pool.run(admission, || "unlocked")).await;
        assert_eq!(answer.ok().flatten(), Some("unlocked"));
        for _ in 0..5 {
            let _ = release.send(());
        }
        for call in flood {
            assert_eq!(call.await.ok().flatten(), Some(()));
        }
        assert_eq!(pool.in_flight(), 0);
    }

    /// Issue 23, item 6: other clients' waiting calls do not delay an owner-role call beyond the
    /// one running; and other clients cannot take the places kept for owners.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_owners_call_runs_before_other_clients_waiting_calls() {
        let pool = Arc::new(SlowPool::new(1, 8, 4, Box::new(|principal| principal == "owner")));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (started, running) = std::sync::mpsc::channel::<()>();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let admission = pool.admit("r0").expect("a place");
        let first = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                pool.run(admission, move || {
                    let _ = started.send(());
                    let _ = held.recv();
                })
                .await
            })
        };
        running.recv().expect("the first call runs");
        let mut calls = Vec::new();
        for principal in ["r1", "r2", "r3", "owner"] {
            let admission = pool.admit(principal).expect("a place");
            let (queued, order) = (Arc::clone(&pool), Arc::clone(&order));
            calls.push(tokio::spawn(async move {
                queued
                    .run(admission, move || order.lock().unwrap_or_else(PoisonError::into_inner).push(principal))
                    .await
            }));
            // Each call waits in the pool before the next is queued.
            while !pool.shared.lock().waiting.contains_key(principal) {
                tokio::task::yield_now().await;
            }
        }
        release.send(()).expect("the first call waits");
        assert_eq!(first.await.ok().flatten(), Some(()));
        for call in calls {
            assert_eq!(call.await.ok().flatten(), Some(()));
        }
        let order = order.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(order, ["owner", "r1", "r2", "r3"]);

        // One thread, two places to wait: one of them is kept for owner-role calls.
        let pool = SlowPool::new(1, 2, 8, Box::new(|principal| principal == "owner"));
        let held: Vec<_> = (0..2).map(|_| pool.admit("reader").expect("a place")).collect();
        assert!(pool.admit("reader").is_none() && pool.admit("signer").is_none(), "the owner's place");
        let owner = pool.admit("owner").expect("the place kept for owners");
        assert!(pool.admit("owner").is_none(), "all places taken");
        drop((held, owner));
        assert_eq!(pool.in_flight(), 0);
    }
}
