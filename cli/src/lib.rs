//! The `keyward` command as a library: `serve`, `certs`, `call`, `bench` (and the pieces tests reuse).

#![deny(unsafe_code)]

pub mod audit;
pub mod bench;
pub mod ca;
pub mod call;
pub mod certs;
pub mod clients;
pub mod config;
pub mod discover;
pub mod endpoints;
pub mod failure;
pub mod harden;
pub mod in_process;
pub mod launcher;
pub mod listing;
pub mod manual;
pub mod native_host;
pub mod pairing;
pub mod params;
pub mod principals;
pub mod serve;
pub mod status;
pub mod tls;
