//! The three-node overwatch cluster (design.md, "Raft cluster").
//!
//! `machine` is the replicated state machine: pure and deterministic. The Raft runtime
//! (openraft with redb storage, RPC between nodes) is built around it.

pub mod machine;
pub mod network;
pub mod node;
pub mod store;
