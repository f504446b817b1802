//! Fuzz target `inner_request`: see `keyward_proptests::fuzzing::inner_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_proptests::fuzzing::inner_request(data));
