//! Passive latency learning: the kernel's RTT of real client connections, per client
//! subnet, reported to overwatch for the `learned_latency` routing algorithm.

pub mod collector;
pub mod table;
