//! The locks and atomics the core shares between threads: std's, or shuttle's when the core is
//! built with `--cfg keyward_shuttle`. Only the schedule-exploring test (`proptests/tests/
//! concurrency.rs`) builds it so: then every lock is a point where shuttle may switch threads, and
//! it explores the interleavings of calls on one server. Nothing else changes.

#[cfg(not(keyward_shuttle))]
pub(crate) use std::sync::atomic::AtomicU64;
#[cfg(not(keyward_shuttle))]
pub(crate) use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[cfg(keyward_shuttle)]
pub(crate) use shuttle::sync::atomic::AtomicU64;
#[cfg(keyward_shuttle)]
pub(crate) use shuttle::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
