//! Fuzz target `server_handle`: see `keyward_proptests::fuzzing::server_handle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_proptests::fuzzing::server_handle(data));
