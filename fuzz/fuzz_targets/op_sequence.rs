//! Fuzz target `op_sequence`: see `keyward_proptests::fuzzing::op_sequence`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_proptests::fuzzing::op_sequence(data));
