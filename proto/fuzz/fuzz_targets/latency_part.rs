//! A latency part's signed bytes: claimed agent, then verified against a certificate.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opengslb_proto::fuzzing::latency(data));
