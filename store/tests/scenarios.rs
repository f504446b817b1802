//! The core's lifecycle scenarios (`keyward_testkit::scenarios`), each its own test, on a
//! `FjallStore` in a fresh temporary data directory. The same list runs on the in-memory store in
//! `core/tests/scenarios.rs`.

use keyward_store::FjallStore;
use libtest_mimic::{Arguments, Trial};

fn main() {
    let trials = keyward_testkit::scenarios()
        .into_iter()
        .map(|(name, scenario)| {
            Trial::test(name, move || {
                let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
                let store = FjallStore::open(&dir.path().join("data")).map_err(|e| format!("open: {e}"))?;
                scenario(Box::new(store));
                Ok(())
            })
        })
        .collect();
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}
