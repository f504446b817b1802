//! # keyward-pairing
//!
//! Pairing a front end with a one-time code: the owner asks the running server for a code
//! (`keyward clients pair`), the front end types it (`keyward pair CODE`, or [`pair`] in its own
//! code), and both run SPAKE2 keyed by the code with key confirmation. The front end sends its
//! public key under the agreed key and gets its certificate (signed by the server's CA, registered
//! with the role the owner chose), the CA's certificate and the server's addresses: a [`Bundle`].
//! Neither a passive observer nor a side that does not know the code learns anything or gets a
//! certificate; a code is used once, expires, and dies after three wrong attempts.
//!
//! * [`code`]: the codes (10 characters of Crockford's base32, `7KQ2M-XR4TD`);
//! * [`protocol`]: the four messages and their cryptography, sans-IO;
//! * [`client`]: [`pair`], over TCP;
//! * [`server`]: [`PairingService`], the live codes and their listener, for `keyward serve`;
//! * [`bundle`]: the directory a paired client keeps.
//!
//! spec/pairing.md gives the protocol and its limits.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bundle;
pub mod client;
pub mod code;
pub mod protocol;
pub mod server;

pub use bundle::{Bundle, BundleConfig, Endpoints};
pub use client::{PairError, pair, parse_pair_url};
pub use code::PairingCode;
pub use server::{DEFAULT_TTL, Issued, MAX_ATTEMPTS, OfferError, PairingService, Registrar, Ticket};
