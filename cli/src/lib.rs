//! The `keyward` command as a library: `serve`, `certs`, `call`, `bench` (and the pieces tests reuse).

#![deny(unsafe_code)]

pub mod bench;
pub mod call;
pub mod certs;
pub mod config;
pub mod harden;
pub mod serve;
pub mod tls;
