//! # keyward-core
//!
//! The sans-IO core of Keyward: the Owner API V3 secure session protocol (grin-wallet's wire format,
//! byte for byte), a session per client, the seed vault, and the wallet lifecycle over a [`Store`].
//!
//! No sockets, no clock reads, no OS randomness, no async runtime live here. The host (a transport,
//! a test, a fuzzer) hands in everything from outside:
//!
//! * **time** as `now_ms`, milliseconds on any monotonic clock the host picks;
//! * **randomness** as a 32-byte seed for a ChaCha20 CSPRNG (from the OS in production, a constant
//!   in tests, which makes every answer byte-identical from run to run);
//! * **storage** as a [`Store`] ([`MemoryStore`] here, fjall in `keyward-store`).
//!
//! ## Calling contract
//!
//! 1. Build one [`Server`] and share it (`Arc<Server>`); every method takes `&self`.
//! 2. For every request body, call [`Server::handle`] with an [`Incoming`]: the body, the session id
//!    the transport knows (the `Keyward-Session` header, the QUIC connection's session) or `None`,
//!    and `now_ms`. Send back [`Outgoing::body`] as is. When [`Outgoing::created_session`] is set,
//!    tell the client [`Outgoing::session`] (HTTP header) or bind it to the connection (QUIC).
//! 3. `handle` may run a KDF (about 0.1 s with the default Argon2id parameters) or a store write. A
//!    transport that keeps its I/O threads free calls [`Server::handle_step`] instead: it answers most
//!    calls at once (microseconds) and returns [`Step::Slow`] for a call the method table marks
//!    [`Speed::Slow`] (a KDF or a store write) and for an embedder's call, which the transport passes
//!    to [`Server::finish`] on a blocking thread, or to [`Server::refuse_busy`] when its bounded pool
//!    of such calls is full. The internal locks cover table look-ups and microsecond-scale crypto
//!    only, never a KDF or a store write, so calls run in parallel.
//! 4. Call [`Server::handle_timeout`] at [`Server::poll_timeout`] (or every few seconds) to expire idle
//!    sessions and tokens; `handle` expires lazily too. Call [`Server::drop_session`] when a
//!    connection that owned a session closes, and [`Server::shutdown`] on exit.
//!
//! A panic is a bug, never the result of bad input: every byte string given to `handle` gets a
//! JSON-RPC answer. Errors that reach clients carry no secrets and no file system paths.
//!
//! ## A whole round trip, in memory
//!
//! ```
//! use keyward_core::{Client, Incoming, KdfParams, MemoryStore, Server, ServerConfig};
//! use serde_json::json;
//!
//! let config = ServerConfig { kdf: KdfParams::INSECURE_FOR_TESTS, ..ServerConfig::default() };
//! let server = Server::new(config, Box::new(MemoryStore::new()), [7; 32]);
//! let mut client = Client::new([9; 32]);
//! let mut now_ms = 0;
//! let mut send = |body: Vec<u8>| {
//!     now_ms += 10;
//!     server.handle(Incoming { body: &body, session: None, recent: None, principal: &keyward_core::Principal::local(), now_ms }).body
//! };
//!
//! // init_secure_api: ECDH, then every call is encrypted under the session key.
//! let answer = send(client.init_request());
//! client.handle_init_answer(&answer)?;
//!
//! let mut call = |client: &mut Client, method: &str, params| {
//!     let (body, pending) = client.seal(method, params)?;
//!     client.open(pending, &send(body))
//! };
//! let create = json!({"name": null, "mnemonic": null, "mnemonic_length": 16, "password": "pw"});
//! call(&mut client, "create_wallet", create)?;
//! let token = call(&mut client, "open_wallet", json!({"name": null, "password": "pw"}))?;
//! let accounts = call(&mut client, "accounts", json!({"token": token}))?;
//! assert_eq!(accounts, json!([{"label": "default", "path": "0200000000000000000000000000000000"}]));
//! call(&mut client, "close_wallet", json!({"name": null}))?;
//! let refused = call(&mut client, "accounts", json!({"token": token}));
//! assert!(refused.is_err());
//! # Ok::<(), keyward_core::ClientError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The modules are private; what an embedder uses is re-exported below, by name, and
// `core/tests/api.rs` lists it: a change of the public API is a change of that list. Three
// namespaces stay modules: `store` (what a `Store` keeps and implements), `audit` (the log's records
// and their verification) and `crypto` (the primitives under the protocol).
mod admin;
pub mod audit;
mod client;
pub mod crypto;
mod envelope;
mod jsonrpc;
mod keys;
mod lifecycle;
mod methods;
mod principal;
mod secret;
mod seed_record;
mod server;
mod session;
mod state;
pub mod store;
mod sync;
mod throttle;
mod units;
mod vault;

pub use admin::{AUDIT_PAGE_MAX, client_json};
pub use client::{Client, ClientError, Pending};
pub use jsonrpc::{EnvelopeError, MethodError, error_bytes};
pub use lifecycle::MAX_DIR_DEPTH;
pub use methods::{AppCall, AppError, METHODS, Method, RegisterError, Speed, account_path, find as find_method};
pub use principal::{ClientRecord, Identity, LAUNCHER, Principal, Role, launcher_name, valid_client_name};
pub use seed_record::KdfParams;
pub use server::{
    CallContext, Host, Incoming, IssuedCertificate, Outgoing, PairingTicket, Server, ServerConfig, SlowCall, Step,
};
pub use session::{SessionId, SessionLimits};
pub use store::{MemoryStore, Store, StoreError, WalletKey};
pub use throttle::ThrottleConfig;
pub use vault::TokenLimits;
