//! How the limits structs read the units people write in a config file: seconds for times the core
//! keeps in milliseconds (`idle_secs = 900` is `idle_ms: 900_000`).

use serde::{Deserialize, Deserializer};

/// Seconds in the file, milliseconds in the struct (saturating).
pub(crate) fn ms_from_secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(u64::deserialize(deserializer)?.saturating_mul(1000))
}
