//! The `keyward` command as a library: `serve`, `certs`, `call` (and the pieces tests reuse).

#![forbid(unsafe_code)]

pub mod call;
pub mod certs;
pub mod config;
pub mod serve;
pub mod tls;
