//! # keyward-testkit
//!
//! Keyward's test kit, a crate of its own (`publish = false`) so that no Cargo feature of a
//! production crate changes a type for tests:
//!
//! * a harness that drives a [`Server`](keyward_core::Server) with
//!   [`Client`](keyward_core::Client)s on a virtual clock ([`Harness`], in `harness.rs`),
//!   and the lifecycle scenario list that every [`Store`](keyward_core::store::Store) must pass
//!   ([`scenarios()`], one file per topic under `scenarios/`);
//! * [`pki`]: a throwaway certificate authority and rustls configurations for transport tests;
//! * [`WatchedStore`]: a memory store that reports every write (where and when writes happen).
//!
//! Each scenario takes a fresh, empty store and panics on failure. `keyward-core` runs them on the
//! [`MemoryStore`](keyward_core::MemoryStore); `keyward-store` runs the same list on fjall.
#![expect(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "a test fails by panicking, with the value in the message"
)]

mod harness;
pub mod pki;
mod scenarios;
mod watched_store;

pub use harness::{Harness, TestClient, assert_rpc_error, plain_error, test_config};
pub use scenarios::{Scenario, made_up_names, scenarios};
pub use watched_store::{OnWrite, WatchedStore};

/// The mnemonic of the shared vectors (24 words).
pub const VECTOR_MNEMONIC: &str = "fat twenty mean degree forget shell check candy immense awful flame next during february bulb bike sun wink theory day kiwi embrace peace lunch";
