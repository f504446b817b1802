//! # keyward-proptests
//!
//! Model-based tests of `keyward-core`: a small reference [`model`] of the owner API server and a
//! driver ([`sut`]) that sends the same operations to the real [`keyward_core::Server`] and checks
//! every answer and the invariants after every step. The same model is the oracle of the
//! `op_sequence` fuzz target ([`decode`] turns fuzz bytes into operations), and [`fuzzing`] holds
//! the bodies of all fuzz targets so that `tests/regressions.rs` can replay every saved crash.
//!
//! [`exhaustive`] runs every short sequence of a small alphabet of operations through both, with
//! repeated model states pruned.
//!
//! Tests: `tests/model.rs` (the state machine, `PROPTEST_CASES` cases, 256 by default),
//! `tests/exhaustive.rs` (bounded exhaustive enumeration, `KEYWARD_EXHAUSTIVE_DEPTH`),
//! `tests/codecs.rs` (codec properties), `tests/regressions.rs` (fuzz regressions and seeds).

pub mod answer;
pub mod decode;
pub mod exhaustive;
pub mod failing_store;
pub mod fuzzing;
pub mod model;
pub mod peer;
pub mod sut;
