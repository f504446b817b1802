//! Fuzz target `native_framing`: see `keyward_proptests::fuzzing::native_framing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_proptests::fuzzing::native_framing(data));
