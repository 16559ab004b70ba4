//! A signed report's encoding: decoded, verified, its token proof checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opengslb_proto::fuzzing::report(data));
