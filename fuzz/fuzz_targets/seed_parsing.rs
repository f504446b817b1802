//! Fuzz target `seed_parsing`: see `keyward_proptests::fuzzing::seed_parsing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_proptests::fuzzing::seed_parsing(data));
