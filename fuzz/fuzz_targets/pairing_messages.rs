//! Fuzz target `pairing_messages`: see `keyward_proptests::fuzzing::pairing_messages`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_proptests::fuzzing::pairing_messages(data));
