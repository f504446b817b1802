//! Fuzz target `store_records`: see `keyward_proptests::fuzzing::store_records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_proptests::fuzzing::store_records(data));
