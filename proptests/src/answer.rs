//! Parsing the server's answers: every answer must be JSON that `serde_json::Value` (and so
//! Keyward's own `Client`) can hold.
//!
//! The first fuzz crash (`fuzz/regressions/server_handle/id-out-of-f64-range-echoed.json`) was an
//! answer that echoed the request id `2e2121` verbatim: valid JSON, but outside every f64, so no
//! serde-based client could read it. The server now answers such ids with `null`; this parser is
//! strict again, so the regression input fails if that ever comes back.

use serde_json::Value;

/// Parses an answer body; `None` if it is not JSON a `serde_json::Value` can hold.
pub fn parse_answer(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body).ok()
}
