//! An opened message: decoded, and each kind (report, latency, challenge, proof) handled as its receiver does.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opengslb_proto::fuzzing::message(data));
