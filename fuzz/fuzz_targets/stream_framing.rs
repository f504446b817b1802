//! Fuzz target `stream_framing`: see `keyward_proptests::fuzzing::stream_framing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_proptests::fuzzing::stream_framing(data));
