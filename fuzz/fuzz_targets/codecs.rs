//! Fuzz target `codecs`: see `keyward_proptests::fuzzing::codecs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_proptests::fuzzing::codecs(data));
