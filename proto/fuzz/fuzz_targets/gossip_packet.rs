//! A sealed gossip packet as it arrives: opened under the cluster keys, routed by kind.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opengslb_proto::fuzzing::packet(data));
