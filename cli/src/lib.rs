//! The `keyward` command as a library: `serve`, `certs`, `call` (and the pieces tests reuse).

#![deny(unsafe_code)]

pub mod call;
pub mod certs;
pub mod config;
pub mod harden;
pub mod serve;
pub mod tls;
