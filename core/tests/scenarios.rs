//! The lifecycle scenarios of `keyward_testkit`, each its own test, on the in-memory store.

use keyward_core::MemoryStore;
use libtest_mimic::{Arguments, Trial};

fn main() {
    let trials = keyward_testkit::scenarios()
        .into_iter()
        .map(|(name, scenario)| {
            Trial::test(name, move || {
                scenario(Box::new(MemoryStore::new()));
                Ok(())
            })
        })
        .collect();
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}
